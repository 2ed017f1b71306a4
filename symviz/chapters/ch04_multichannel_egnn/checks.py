"""The exercise checks of chapter 04 (the multichannel EGNN): each takes the learner's implementation,
compares it with the tested reference on random inputs, prints a verdict and returns a
:class:`symviz.checks.CheckResult` (truthy when correct). A wrong answer never raises."""
from __future__ import annotations

from symviz.checks import CheckResult, verdict

__all__ = ['check_mc_coord_update']


def _permute_pairs(T, w):
    """How the mixing matrices ``w (B, n, n, C, C)`` transform: invariant under E(3), and a node
    permutation reorders both node axes (``w_ij`` belongs to the pair ``(i, j)``)."""
    return w if T.perm is None else w[:, T.perm][:, :, T.perm]


# the symmetries checked, in order, each with what breaking it says about the learner's update
_SYMMETRIES = (
    ("O(3)", "rotating or reflecting x does not rotate or reflect the output the same way",
     "multiply (x_i - x_j) by w_ij on the right only, a (3, C) @ (C, C) product, and never mix the 3 coordinates."),
    ("E(3)", "translating x does not translate the output by the same vector",
     "use only differences x_i - x_j, never x_j alone, and keep the residual: x_i plus the mean over j."),
    ("S_n", "relabelling the nodes does not relabel the output the same way",
     "treat every node alike: sum over all j != i, with nothing that depends on a node's index."),
)


def _diagnose(got, x, w, want) -> str:
    """Name the plausible mistake that ``got`` reproduces (equivariant but not the reference), else a general hint."""
    import torch

    from symviz.nn.egnn import multichannel_coord_update

    n = x.shape[1]
    mistakes = (
        ("you summed over j without dividing by n - 1: the update is a mean over the n - 1 neighbours",
         x + (want - x) * (n - 1)),
        ("you divided by n, but a node has n - 1 neighbours j != i", x + (want - x) * (n - 1) / n),
        ("you used w_ji (w[:, j, i]) where the edge (i, j) needs its own matrix w_ij (w[:, i, j])",
         multichannel_coord_update(x, w.transpose(1, 2))),
        ("you mixed the channels with w_ij transposed: the product is (x_i - x_j) @ w_ij, (3, C) times (C, C)",
         multichannel_coord_update(x, w.transpose(-1, -2))),
    )
    for message, wrong in mistakes:
        if torch.allclose(got, wrong, rtol=1e-6, atol=1e-9):
            return message
    return ("compute x_i + 1/(n - 1) * sum over j != i of (x_i - x_j) @ w_ij, the (3, C) difference times the "
            "(C, C) matrix of the edge (i, j)")


def check_mc_coord_update(coord_update_fn) -> CheckResult:
    """Check a learner's multichannel coordinate update ``coord_update_fn(x, w) -> x'`` (chapter 04).

    ``x: (B, n, 3, C)`` position channels (points are row vectors; a rotation acts as ``R @ x_i``
    on each ``3 x C`` block), ``w: (B, n, n, C, C)`` invariant mixing matrices. It must equal
    ``x_i + 1/(n-1) sum_{j != i} (x_i - x_j) w_ij`` (:func:`symviz.nn.egnn.multichannel_coord_update`)
    and be E(3)- and permutation-equivariant, measured by :func:`symviz.equivariance.check_equivariance`
    (``x`` transforms as ``"point_channels"``); the verdict names the symmetry that broke.
    """
    import torch

    from symviz.equivariance import check_equivariance
    from symviz.nn.egnn import multichannel_coord_update

    gen = torch.Generator().manual_seed(4)
    for B, n, C in ((2, 5, 1), (3, 4, 3)):
        x = torch.randn(B, n, 3, C, dtype=torch.float64, generator=gen)
        w = torch.randn(B, n, n, C, C, dtype=torch.float64, generator=gen)
        want = multichannel_coord_update(x, w)
        try:
            got = coord_update_fn(x.clone(), w.clone())
        except Exception as exc:  # the learner's code may fail in any way: report it, never raise
            return verdict(False, "", f"with C={C} channels your function raised {type(exc).__name__}: {exc}")
        if not torch.is_tensor(got) or got.shape != want.shape:
            return verdict(False, "", f"with C={C}: expected a tensor of shape {tuple(want.shape)} (B, n, 3, C), "
                                      f"got {getattr(got, 'shape', type(got).__name__)}")
        got = got.to(torch.float64)
        if torch.allclose(got, x):
            return verdict(False, "", "your function returns x unchanged: add the sum over neighbours j of (x_i - x_j) @ w_ij.")
        for group, broken, hint in _SYMMETRIES:
            try:
                rep = check_equivariance(lambda x, w: coord_update_fn(x.clone(), w.clone()), (x, w),
                                         ("point_channels", _permute_pairs), "point_channels", group=group,
                                         trials=2, seed=C)
                err = rep.max_error
            except Exception as exc:
                return verdict(False, "", f"with C={C}, on transformed inputs ({group}) your function raised "
                                          f"{type(exc).__name__}: {exc}")
            if not err <= 1e-8:
                return verdict(False, "", f"with C={C} the update is not {group}-equivariant: {broken} "
                                          f"(relative error {err:.2g}). Hint: {hint}")
        err = float((got - want).norm() / want.norm())
        if err > 1e-8:
            return verdict(False, "", f"equivariant, but with C={C} it differs from the reference by {err:.2g} "
                                      f"(relative): {_diagnose(got, x, w, want)}.")
    return verdict(True, "your multichannel update matches the reference and is E(3)- and permutation-equivariant "
                         "for C = 1 and C = 3.", "")
