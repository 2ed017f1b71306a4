"""The exercise checks of chapter 07 (gradient starvation and spectral decoupling): each takes the learner's implementation,
compares it with the tested reference on random inputs, prints a verdict and returns a
:class:`symviz.checks.CheckResult` (truthy when correct). A wrong answer never raises."""
from __future__ import annotations

from symviz.checks import CheckResult, verdict

__all__ = ['check_spectral_decoupling']


def check_spectral_decoupling(sd_fn) -> CheckResult:
    """Check a learner's ``sd_fn(logits, lam)`` against :func:`symviz.losses.spectral_decoupling`.

    Expected: ``(lam / 2) * mean over the batch of ||logits_i||^2`` for ``(batch,)`` and
    ``(batch, classes)`` logits, differentiable (compared value and gradient, float64).
    """
    import torch

    from symviz.losses import spectral_decoupling

    g = torch.Generator().manual_seed(7)
    cases = [(torch.randn(16, generator=g, dtype=torch.float64), 0.5),
             (torch.randn(9, 3, generator=g, dtype=torch.float64), 0.1),
             (3.0 * torch.randn(5, 10, generator=g, dtype=torch.float64), 2.0),
             (torch.randn(8, generator=g, dtype=torch.float64), 0.0)]
    for logits, lam in cases:
        want = spectral_decoupling(logits, lam)
        z = logits.clone().requires_grad_(True)
        try:
            got = sd_fn(z, lam)
        except Exception as exc:  # the learner's code may fail in any way: report it, never raise
            return verdict(False, "", f"your function raised {type(exc).__name__}: {exc}")
        if not torch.is_tensor(got) or got.numel() != 1:
            return verdict(False, "", f"expected a scalar tensor, got {type(got).__name__} "
                                      f"{tuple(got.shape) if torch.is_tensor(got) else ''}")
        shape = tuple(logits.shape)
        if not torch.allclose(got.double().reshape(()), want, rtol=1e-6, atol=1e-9):
            ratio = float(got.detach()) / float(want) if float(want) != 0 else float("nan")
            hint = ""
            if abs(ratio - 2.0) < 1e-6:
                hint = " It is twice the expected value: did you forget the 1/2 in (lam / 2)?"
            elif logits.ndim == 2 and abs(ratio - 1.0 / shape[1]) < 1e-6:
                hint = " For (batch, classes) logits, sum over classes and average over the batch."
            elif lam == 0.0:
                hint = " With lam = 0 the penalty must be 0."
            return verdict(False, "", f"for logits of shape {shape} and lam={lam} the penalty is {float(want):.6g}, "
                                      f"you returned {float(got.detach()):.6g}.{hint}")
        if not got.requires_grad:
            return verdict(False, "", "your penalty is not differentiable: keep it a torch expression of logits "
                                      "(no .item(), numpy or detach)")
        (grad,) = torch.autograd.grad(got, z)
        if not torch.allclose(grad.double(), lam * logits / logits.shape[0], rtol=1e-6, atol=1e-12):
            return verdict(False, "", f"the value is right but the gradient for shape {shape} is not lam * logits / batch")
    return verdict(True, "your spectral decoupling penalty matches (lam/2)·mean ||ŷ||² in value and gradient, "
                         "for binary and multi-class logits.", "")
