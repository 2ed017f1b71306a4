"""The exercise checks of chapter 07 (gradient starvation and spectral decoupling): each takes the learner's implementation,
compares it with the tested reference on random inputs, prints a verdict and returns a
:class:`symviz.checks.CheckResult` (truthy when correct). A wrong answer never raises."""
from __future__ import annotations

from symviz.checks import CheckResult, verdict

__all__ = ["check_spectral_decoupling_loss"]


def _cases():
    import torch

    g = torch.Generator().manual_seed(7)
    y = lambda n: (torch.rand(n, generator=g) > 0.5).double()
    return [(torch.randn(16, generator=g, dtype=torch.float64), y(16), 0.5),
            (3.0 * torch.randn(9, generator=g, dtype=torch.float64), y(9), 2.0),
            (torch.randn(5, generator=g, dtype=torch.float64), y(5), 0.0),
            (0.3 * torch.randn(40, generator=g, dtype=torch.float64), y(40), 0.006)]


def _wrong_answers(logits, y, lam):
    """What plausible wrong answers give on these inputs, to name the mistake in the verdict."""
    import torch
    import torch.nn.functional as F

    ce = F.binary_cross_entropy_with_logits(logits, y)
    sq = logits ** 2
    return {
        "the penalty is λ · mean(ŷ²): the factor is λ/2 (its gradient is then λ ŷ / B)": ce + lam * sq.mean(),
        "the penalty sums over the batch: average it (a sum grows with the batch size)": ce + 0.5 * lam * sq.sum(),
        "the penalty acts on probabilities σ(ŷ): spectral decoupling penalises the logits ŷ themselves":
            ce + 0.5 * lam * torch.sigmoid(logits).pow(2).mean(),
        "the cross-entropy term is missing: the loss is cross-entropy plus the penalty": 0.5 * lam * sq.mean(),
        "the penalty is subtracted: it must be added (it pulls the logits towards 0)": ce - 0.5 * lam * sq.mean(),
        "the cross-entropy is summed over the batch: average it": F.binary_cross_entropy_with_logits(
            logits, y, reduction="sum") + 0.5 * lam * sq.mean(),
        "the penalty is (λ/2) · mean(|ŷ|): square the logits": ce + 0.5 * lam * logits.abs().mean(),
    }


def check_spectral_decoupling_loss(loss_fn) -> CheckResult:
    """Check a learner's ``loss_fn(logits, targets, lam)`` against :func:`symviz.losses.spectral_decoupling_loss`.

    Expected, for binary logits ``(batch,)`` and targets ``(batch,)`` in {0, 1} (floats): the mean binary
    cross-entropy plus ``(lam / 2) * mean over the batch of logits²`` (Pezeshki et al., NeurIPS 2021), a
    differentiable scalar; compared in value and gradient (float64) for several batch sizes and ``lam``,
    including ``lam = 0`` (plain cross-entropy).
    """
    import torch

    from symviz.losses import spectral_decoupling_loss

    for logits, y, lam in _cases():
        want = spectral_decoupling_loss(logits, y, lam)
        z = logits.clone().requires_grad_(True)
        where = f"for {len(logits)} logits and lam={lam}"
        try:
            got = loss_fn(z, y.clone(), lam)
        except Exception as exc:  # the learner's code may fail in any way: report it, never raise
            return verdict(False, "", f"{where} your function raised {type(exc).__name__}: {exc}")
        if not torch.is_tensor(got) or got.numel() != 1:
            return verdict(False, "", f"{where}: expected a scalar tensor, got {type(got).__name__} "
                                      f"{tuple(got.shape) if torch.is_tensor(got) else ''}")
        if not torch.allclose(got.detach().double().reshape(()), want, rtol=1e-6, atol=1e-9):
            hint = ""
            for name, wrong in _wrong_answers(logits, y, lam).items():
                if abs(float(wrong) - float(want)) > 1e-9 and abs(float(got.detach()) - float(wrong)) <= 1e-6 * max(1.0, abs(float(wrong))):
                    hint = f" It looks like {name}."
                    break
            return verdict(False, "", f"{where} the loss is {float(want):.6g}, you returned "
                                      f"{float(got.detach()):.6g}.{hint}")
        if not got.requires_grad:
            return verdict(False, "", "your loss is not differentiable: keep it a torch expression of the logits "
                                      "(no .item(), numpy or detach)")
        (grad,) = torch.autograd.grad(got.reshape(()), z)
        want_grad = _ref_grad(logits, y, lam)
        if not torch.allclose(grad.double(), want_grad, rtol=1e-6, atol=1e-12):
            return verdict(False, "", f"{where} the value is right but the gradient is not (σ(ŷ) - y + λ ŷ) / batch")
    return verdict(True, "your loss matches cross-entropy + (λ/2)·mean(ŷ²) in value and gradient, for several "
                         "batch sizes and λ (λ = 0 gives the plain cross-entropy). The two-moons and colour runs "
                         "below train with it.", "")


def _ref_grad(logits, y, lam):
    """The gradient of the reference loss with respect to the logits: ``(σ(ŷ) - y + λ ŷ) / B``."""
    import torch

    return (torch.sigmoid(logits) - y + lam * logits) / logits.shape[0]
