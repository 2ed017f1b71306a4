"""The exercise checks of chapter 01 (symmetry breaking and relaxed equivariance): each takes the learner's implementation,
compares it with the tested reference on random inputs, prints a verdict and returns a
:class:`symviz.checks.CheckResult` (truthy when correct). A wrong answer never raises."""
from __future__ import annotations

from symviz.checks import CheckResult, verdict

__all__ = ['check_stabilizer', 'check_relaxed_violation']


def _ch01_cases():
    """Inputs for the chapter 01 checks: D6 on the hexagon's nodes, with several stabilizers."""
    import torch

    from symviz.groups import DihedralGroup
    from symviz.reps import Representation

    D6 = DihedralGroup(6)
    nodes = Representation.from_group_vertices(D6)
    xs = [torch.ones(6, dtype=torch.float64),                                      # stabilizer: all of D6
          torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 0.0], dtype=torch.float64),       # order 6
          torch.tensor([2.0, 0.0, 0.0, 2.0, 0.0, 0.0], dtype=torch.float64),       # order 4
          torch.tensor([3.0, 1.0, 0.0, 0.0, 0.0, 1.0], dtype=torch.float64),       # a mirror through node 0
          torch.tensor([0.3, -1.2, 0.5, 2.0, 0.1, -0.4], dtype=torch.float64)]     # trivial
    return D6, nodes, xs


def check_stabilizer(stabilizer_fn) -> CheckResult:
    """Check ``stabilizer_fn(x, rep) -> list of group elements g with rep.act(g, x) == x``.

    ``x: (d,)`` one input, ``rep`` a :class:`symviz.nn.emlp.Representation` (``rep.group.elements``,
    ``rep.act(g, x)``), compared with :func:`symviz.nn.emlp.stabilizer_elements` on inputs of the
    hexagon (D6) with stabilizers of order 12, 6, 4, 2 and 1.
    """
    from symviz.nn.emlp import stabilizer_elements

    _, nodes, xs = _ch01_cases()
    for x in xs:
        want = sorted(stabilizer_elements(x, nodes))
        try:
            got = sorted(int(g) for g in stabilizer_fn(x.clone(), nodes))
        except Exception as exc:  # the learner's code may fail in any way: report it, do not raise
            return verdict(False, "", f"your function raised {type(exc).__name__}: {exc}")
        if got != want:
            return verdict(False, "", f"for x = {x.tolist()} the stabilizer is {want} ({len(want)} elements), "
                                      f"you returned {got}. Keep every g with rep.act(g, x) equal to x (use torch.allclose).")
    return verdict(True, "your stabilizers match on inputs with stabilizers of order 12, 6, 4, 2 and 1.", "")


def check_relaxed_violation(violation_fn) -> CheckResult:
    """Check ``violation_fn(f, x, rep_in, rep_out) -> float``, the relaxed-equivariance violation

    ``max_g min_{h ∈ G_x} ‖f(g·x) − ρ_out(g·h) f(x)‖ / ‖f(x)‖`` of ``f: (B, d_in) -> (B, d_out)`` at
    one input ``x: (d_in,)`` (row layout: ``rep.act(g, v)`` applies ``ρ(g)``). Compared with
    :func:`symviz.nn.emlp.relaxed_equivariance_violation` on an equivariant E-MLP (0), a
    relaxed-equivariant canonicalized model (0 although it is not equivariant) and a plain linear map
    (not relaxed-equivariant).
    """
    import torch

    from symviz.nn.emlp import EMLP, CanonicalRelaxed, equivariance_violation, relaxed_equivariance_violation

    _, nodes, xs = _ch01_cases()
    torch.manual_seed(0)
    emlp = EMLP(nodes, nodes, hidden=2, depth=1).double()
    with torch.no_grad():  # non-zero biases, so that the outputs are never exactly zero
        for b in emlp.parameters():
            if b.ndim == 2:
                b.normal_()
    models = {
        "an equivariant E-MLP": emlp,
        "a relaxed-equivariant canonicalized model": CanonicalRelaxed(torch.nn.Linear(6, 6).double(), nodes, nodes),
        "a plain (non-equivariant) linear layer": torch.nn.Linear(6, 6).double(),
    }
    for name, f in models.items():
        for x in xs[:4]:
            want = relaxed_equivariance_violation(f, x[None], nodes, nodes)
            try:
                got = float(violation_fn(f, x.clone(), nodes, nodes))
            except Exception as exc:
                return verdict(False, "", f"your function raised {type(exc).__name__}: {exc}")
            zero_ok = (got < 1e-6) == (want < 1e-6)
            if not zero_ok or (want >= 1e-6 and abs(got - want) > 0.05 * want):
                hint = ""
                if got > 1e-6 > want and equivariance_violation(f, x[None], nodes, nodes) > 1e-6:
                    hint = (" This model breaks the symmetry of x in an allowed way: f(g·x) only has to equal "
                            "ρ_out(g·h) f(x) for SOME h in the stabilizer G_x. Take the minimum over h.")
                elif got < 1e-6 <= want:
                    hint = " Your function misses a real violation: compare f(g·x) with ρ_out(g·h) f(x) for every g."
                return verdict(False, "", f"on {name} at x = {x.tolist()} the relaxed violation is {want:.3g}, "
                                          f"you returned {got:.3g}.{hint}")
    return verdict(True, "your relaxed-equivariance violation matches on equivariant, relaxed-equivariant and "
                         "non-equivariant models.", "")
