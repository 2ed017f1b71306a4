"""The exercise checks of chapter 00 (the symmetry primer): each takes the learner's implementation,
compares it with the tested reference on random inputs, prints a verdict and returns a
:class:`symviz.checks.CheckResult` (truthy when correct). A wrong answer never raises."""
from __future__ import annotations

from symviz.checks import CheckResult, verdict

__all__ = ['check_permutation_equivariant_layer']


def check_permutation_equivariant_layer(make_layer, d_in: int = 3, d_out: int = 4, n: int = 6, trials: int = 5) -> CheckResult:
    """Chapter 00 exercise: ``make_layer(d_in, d_out)`` must return a module mapping ``h: (batch, n, d_in)``
    to ``(batch, n, d_out)`` that is permutation-equivariant (``f(h[:, p]) == f(h)[:, p]``) and not
    trivially so (it must mix information across nodes, as a DeepSets layer does)."""
    import torch

    from symviz.equivariance import check_equivariance

    try:
        layer = make_layer(d_in, d_out).double()
        h = torch.randn(2, n, d_in, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        out = layer(h)
    except Exception as err:  # the learner's code failed: say how
        return verdict(False, "", f"calling your layer failed: {type(err).__name__}: {err}")
    if tuple(out.shape) != (2, n, d_out):
        return verdict(False, "", f"expected output shape (batch, n, d_out) = (2, {n}, {d_out}), got {tuple(out.shape)}")
    rep = check_equivariance(layer, (h,), ("node_scalar",), "node_scalar", group="S_n", trials=trials)
    if rep.max_error > 1e-9:
        return verdict(False, "", f"not permutation-equivariant: relative error {rep.max_error:.2e} "
                                  "(permuting the nodes of the input must permute the output rows the same way)")
    h2 = h.clone()
    h2[:, 1:] += 1.0  # change every node but node 0
    with torch.no_grad():
        mixes = float((layer(h2)[:, 0] - out[:, 0]).abs().max()) > 1e-9
    if not mixes:
        return verdict(False, "", "equivariant, but node 0's output ignores the other nodes: add a pooled term "
                                  "(e.g. B · mean_j h_j) so that nodes can exchange information")
    return verdict(True, f"permutation-equivariant (error {rep.max_error:.1e}) and mixes information across nodes. Well done!", "")
