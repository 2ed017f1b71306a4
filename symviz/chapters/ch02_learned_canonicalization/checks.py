"""The exercise checks of chapter 02 (learned canonicalization): each takes the learner's implementation,
compares it with the tested reference on random inputs, prints a verdict and returns a
:class:`symviz.checks.CheckResult` (truthy when correct). A wrong answer never raises."""
from __future__ import annotations

from symviz.checks import CheckResult, verdict

__all__ = ['check_gram_schmidt_frame']


def check_gram_schmidt_frame(frame_fn) -> "CheckResult":
    """Check a learner's ``frame_fn(v1, v2) -> (B, 3, 3)`` SO(3) frame from two vectors ``(B, 3)``.

    Expected (Kaba et al., ICML 2023, §3.3): Gram-Schmidt with the axes as *columns*:
    ``e1 = v1/|v1|``, ``e2 = normalize(v2 − ⟨v2,e1⟩e1)``, ``e3 = e1 × e2``. Checks, in float64, that the
    frames are orthonormal with det +1, equal the reference :func:`symviz.nn.canonical.gram_schmidt`,
    and are equivariant: ``frame_fn(v1 Qᵀ, v2 Qᵀ) = Q · frame_fn(v1, v2)`` for random rotations ``Q``
    (vectors are row vectors, rotated as ``v @ Q.T``; the frames' columns rotate as points with 3
    channels, :func:`symviz.equivariance.check_equivariance`'s ``"point_channels"``), relative error
    below 1e-8.
    """
    import torch

    from symviz.equivariance import check_equivariance
    from symviz.nn.canonical import gram_schmidt

    g = torch.Generator().manual_seed(7)
    v1 = torch.randn(16, 3, dtype=torch.float64, generator=g)
    v2 = torch.randn(16, 3, dtype=torch.float64, generator=g)
    try:
        F = frame_fn(v1, v2)
    except Exception as exc:  # the learner's code may fail in any way: report it, never raise
        return verdict(False, "", f"your function raised {type(exc).__name__}: {exc}")
    if not torch.is_tensor(F) or tuple(F.shape) != (16, 3, 3):
        return verdict(False, "", f"expected frames of shape (B, 3, 3) = (16, 3, 3), got "
                                  f"{tuple(F.shape) if torch.is_tensor(F) else type(F).__name__}")
    F = F.to(torch.float64)
    eye = torch.eye(3, dtype=torch.float64)
    if not torch.allclose(F.transpose(-1, -2) @ F, eye.expand(16, 3, 3), atol=1e-8):
        return verdict(False, "", "your frames are not orthonormal (Fᵀ F ≠ I): normalise each axis and remove "
                                  "from e2 its component along e1")
    det = torch.det(F)
    if not torch.allclose(det, torch.ones_like(det), atol=1e-8):
        return verdict(False, "", f"some frames have det = {float(det.min()):+.3f}: for SO(3) take e3 = e1 × e2")
    want = gram_schmidt(v1, v2)
    if not torch.allclose(F, want, atol=1e-8):
        if torch.allclose(F.transpose(-1, -2), want, atol=1e-8):
            return verdict(False, "", "your axes are the rows of the matrix: stack them as columns (dim=-1)")
        return verdict(False, "", "orthonormal with det +1, but not the Gram-Schmidt frame of (v1, v2): e1 must "
                                  "point along v1 and e2 lie in the plane of v1 and v2, on v2's side")
    try:
        worst = check_equivariance(frame_fn, (v1, v2), ("vector", "vector"), "point_channels", group="SO(3)",
                                   trials=5, seed=7).max_error
    except Exception as exc:
        return verdict(False, "", f"your function raised {type(exc).__name__} on rotated vectors: {exc}")
    if not worst <= 1e-8:
        return verdict(False, "", f"not equivariant: frame_fn(v Qᵀ) differs from Q·frame_fn(v) by {worst:.2e} "
                                  "(relative error, worst of 5 random rotations Q)")
    return verdict(True, f"your Gram-Schmidt frame is orthonormal, has det +1, matches the reference and is "
                         f"SO(3)-equivariant (max error {worst:.1e}).", "")
