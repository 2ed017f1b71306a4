"""The exercise checks of chapter 01 (symmetry breaking and relaxed equivariance): each takes the learner's implementation,
compares it with the tested reference on random inputs, prints a verdict and returns a
:class:`symviz.checks.CheckResult` (truthy when correct). A wrong answer never raises."""
from __future__ import annotations

from symviz.checks import CheckResult, verdict

__all__ = ['check_stabilizer', 'check_relaxed_violation', 'check_breaking_object']


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


def _breaking_cases():
    """(description, rep, base inputs) for :func:`check_breaking_object`: node permutations of the hexagon (D6)
    and the ring of 8 spins (D8), and D5 rotating the plane by matrices (where ``g·x`` is rounded)."""
    import torch

    from symviz.groups import DihedralGroup
    from symviz.reps import Representation, as_sumrep

    D6, nodes, xs = _ch01_cases()
    D8, D5 = DihedralGroup(8), DihedralGroup(5)
    ring = Representation.from_group_vertices(D8)
    g = torch.Generator().manual_seed(0)
    spins = [torch.full((8,), 0.5, dtype=torch.float64), torch.tensor([0.3, -0.3] * 4, dtype=torch.float64),
             torch.randn(8, generator=g, dtype=torch.float64)]
    plane = as_sumrep(Representation(D5, D5.matrices(), name="plane"))
    points = [torch.tensor([1.0, 0.0], dtype=torch.float64), torch.tensor([0.0, 0.0], dtype=torch.float64)] + \
        list(torch.randn(4, 2, generator=g, dtype=torch.float64))
    return [("D6 permuting the hexagon's nodes", nodes, xs), ("D8 permuting a ring of 8 spins", ring, spins),
            ("D5 rotating and reflecting the plane", plane, points)]


def check_breaking_object(breaking_fn, tol: float = 1e-6) -> CheckResult:
    """Chapter 01 exercise: ``breaking_fn(x, rep) -> (k, b)``, the symmetry-breaking object of a relaxed E-MLP.

    ``x: (B, d)`` a batch of inputs, ``rep`` how the group acts on them (``rep.group``, ``rep.act(g, x)`` applies
    ``ρ(g)`` to every row). ``k: (B,)`` integer group elements whose inverse maps each input to its orbit's
    canonical representative: ``c = ρ(k(x))⁻¹ x`` must be the SAME for every ``g·x`` of the orbit (any member of
    ``K(x) = G_x·k(x)`` will do: the stabilizer breaks ties); ``b: (B, |G|)`` the one-hot ``e_k``. Checked on the
    orbits of inputs with stabilizers of many sizes (D6 on the hexagon, D8 on a spin ring, D5 on the plane), and
    then inside :class:`symviz.nn.emlp.RelaxedEMLP`, which must come out relaxed-equivariant.
    """
    import torch

    from symviz.nn.emlp import RelaxedEMLP, relaxed_equivariance_violation

    for name, rep, bases in _breaking_cases():
        G = rep.group
        inv_mats = torch.stack([rep.matrix(G.inverse(g)) if hasattr(rep, "matrix") else rep(G.inverse(g)) for g in G.elements])
        for x in bases:
            orbit = torch.stack([rep.act(g, x) for g in G.elements])            # row g: g·x
            try:
                out = breaking_fn(orbit.clone(), rep)
                k, b = out
                k = torch.as_tensor(k)
                b = torch.as_tensor(b)
            except Exception as exc:  # the learner's code may fail in any way: report it, do not raise
                return verdict(False, "", f"{name}: your function raised {type(exc).__name__}: {exc} "
                                          "(it must return a pair (k, b))")
            n = len(G.elements)
            if k.shape != (n,) or k.is_floating_point() or bool(((k < 0) | (k >= n)).any()):
                return verdict(False, "", f"{name}: k must be a ({n},) tensor of group elements (integers 0..{n - 1}), "
                                          f"got {tuple(k.shape)} {k.dtype}: {k.tolist()[:6]}...")
            if tuple(b.shape) != (n, G.order):
                return verdict(False, "", f"{name}: b must be (batch, |G|) = ({n}, {G.order}), one one-hot per input, "
                                          f"got shape {tuple(b.shape)}")
            want_b = torch.nn.functional.one_hot(k.long(), G.order).to(torch.float64)
            if not torch.allclose(b.to(torch.float64), want_b):
                i = int((b.to(torch.float64) - want_b).abs().sum(-1).argmax())
                return verdict(False, "", f"{name}: b must be the one-hot e_k of k (a 1 at position k, 0 elsewhere): "
                                          f"for k = {int(k[i])} you returned {b[i].tolist()}")
            canon = torch.einsum("bij,bj->bi", inv_mats[k.long()], orbit)     # ρ(k)⁻¹ (g·x), row g
            scale = max(float(x.norm()), 1.0)
            dev = (canon - canon[:1]).norm(dim=-1) / scale
            if float(dev.max()) > tol:
                g = int(dev.argmax())
                hint = ""
                flipped = torch.einsum("bij,bj->bi", torch.linalg.inv(inv_mats[k.long()]), orbit)
                if float((flipped - flipped[:1]).norm(dim=-1).max()) / scale <= tol:
                    hint = (" Your k maps each input to the canonical one with ρ(k), not ρ(k)⁻¹: return the inverse "
                            "element (G.inverse).")
                return verdict(False, "", f"{name}: x = {x.numpy().round(3).tolist()} and g·x = "
                                          f"{orbit[g].numpy().round(3).tolist()} (g = {g}) are in the same orbit, but "
                                          f"ρ(k(x))⁻¹ x = {canon[0].numpy().round(3).tolist()} while ρ(k(g·x))⁻¹ (g·x) = "
                                          f"{canon[g].numpy().round(3).tolist()}. The canonical input must be the same "
                                          f"for the whole orbit (compare whole vectors in a fixed order, after rounding)."
                                          + hint)
    torch.manual_seed(0)
    _, nodes, xs = _ch01_cases()
    model = RelaxedEMLP(nodes, nodes, hidden=2, depth=1, breaking_object=breaking_fn).double()
    try:
        viol = relaxed_equivariance_violation(model, torch.stack(xs), nodes, nodes)
    except Exception as exc:
        return verdict(False, "", f"a RelaxedEMLP using your function failed: {type(exc).__name__}: {exc}")
    if viol > 1e-9:
        return verdict(False, "", f"a RelaxedEMLP fed your (k, b) is not relaxed-equivariant (violation {viol:.2g})")
    return verdict(True, "your canonicalizing elements give one canonical input per orbit (stabilizers of every size, "
                         f"permutations and plane rotations), b is their one-hot, and a relaxed E-MLP fed them is "
                         f"relaxed-equivariant (violation {viol:.1e}).", "")
