"""The exercise checks of chapter 03 (equivariant adaptation of a pretrained model): each takes the learner's implementation,
compares it with the tested reference on random inputs, prints a verdict and returns a
:class:`symviz.checks.CheckResult` (truthy when correct). A wrong answer never raises."""
from __future__ import annotations

from symviz.checks import CheckResult, verdict

__all__ = ['check_canonicalization_prior']


def check_canonicalization_prior(prior_fn, check_continuous: bool = True) -> CheckResult:
    """Check the learner's ``prior_fn(scores) -> scalar`` against :func:`symviz.losses.canonicalization_prior`.

    Discrete case: ``scores: (B, n)`` logits, the mean cross-entropy towards element 0 (the identity),
    value and gradient. Continuous case (when ``check_continuous``): ``scores: (B, d, d)`` matrices,
    the mean squared Frobenius distance to the identity matrix.
    """
    import torch

    from symviz.losses import canonicalization_prior

    g = torch.Generator().manual_seed(3)
    cases = [("C4 logits (8, 4)", torch.randn(8, 4, generator=g, dtype=torch.float64) * 3),
             ("C8 logits (5, 8)", torch.randn(5, 8, generator=g, dtype=torch.float64))]
    if check_continuous:
        cases.append(("2x2 matrices (6, 2, 2)", torch.randn(6, 2, 2, generator=g, dtype=torch.float64)))
        cases.append(("3x3 matrices (4, 3, 3)", torch.randn(4, 3, 3, generator=g, dtype=torch.float64)))
    for name, s in cases:
        want = canonicalization_prior(s)
        s1 = s.clone().requires_grad_(True)
        try:
            got = prior_fn(s1)
        except Exception as exc:  # the learner's code may fail in any way: report it, never raise
            return verdict(False, "", f"on {name} your function raised {type(exc).__name__}: {exc}")
        if not torch.is_tensor(got) or got.numel() != 1:
            return verdict(False, "", f"on {name}: expected a scalar tensor (the batch mean), got "
                                      f"{tuple(got.shape) if torch.is_tensor(got) else type(got).__name__}")
        if not torch.allclose(got.reshape(()).to(torch.float64), want, rtol=1e-6, atol=1e-8):
            hint = ("cross-entropy of softmax(scores) towards index 0, averaged over the batch"
                    if s.ndim == 2 else "||R - I||_F^2 (squared, summed over entries), averaged over the batch")
            return verdict(False, "", f"on {name}: got {float(got.detach()):.6f}, expected {float(want):.6f}. "
                                      f"Hint: {hint}.")
        if not got.requires_grad:
            return verdict(False, "", f"on {name}: the value is right but carries no gradient; keep it a torch "
                                      "expression of scores (no .item(), numpy or argmax)")
        (grad,) = torch.autograd.grad(got.reshape(()), s1)
        s2 = s.clone().requires_grad_(True)
        (want_grad,) = torch.autograd.grad(canonicalization_prior(s2), s2)
        if not torch.allclose(grad.to(torch.float64), want_grad, rtol=1e-6, atol=1e-9):
            return verdict(False, "", f"on {name}: right value but wrong gradient (max diff "
                                      f"{float((grad - want_grad).abs().max()):.2e})")
    what = "discrete (cross-entropy to the identity) and continuous (distance to I)" if check_continuous else \
        "discrete (cross-entropy to the identity)"
    return verdict(True, f"your canonicalization prior matches the reference in value and gradient, {what}.", "")
