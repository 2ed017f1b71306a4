"""The exercise checks of chapter 00 (the symmetry primer): each takes the learner's implementation,
compares it with the tested reference on random inputs, prints a verdict and returns a
:class:`symviz.checks.CheckResult` (truthy when correct). A wrong answer never raises."""
from __future__ import annotations

from symviz.checks import CheckResult, verdict

__all__ = ['check_permutation_equivariant_layer', 'check_equivariant_basis']


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


def _basis_cases():
    """(description, rep_in, rep_out) for :func:`check_equivariant_basis`: permutation and matrix representations,
    square and rectangular maps, groups with two generators."""
    from symviz.groups import DihedralGroup, SymmetricGroup
    from symviz.reps import Representation

    S4, D6, D4 = SymmetricGroup(4), DihedralGroup(6), DihedralGroup(4)
    s4_nodes = Representation.from_group_vertices(S4, name="S4 permuting 4 nodes")
    d6_nodes = Representation.from_group_vertices(D6, name="D6 permuting the hexagon's 6 nodes")
    return [
        ("S4: 4 nodes -> 4 nodes", s4_nodes, s4_nodes),
        ("D6: the hexagon's 6 nodes -> 6 nodes", d6_nodes, d6_nodes),
        ("S4: 4 nodes -> one invariant number", s4_nodes, Representation.trivial(S4)),
        ("D4: the plane R^2 (rotation/reflection matrices) -> the square's 4 corners", Representation(D4, D4.matrices()),
         Representation.from_group_vertices(D4)),
    ]


def check_equivariant_basis(solve, tol: float = 1e-8) -> CheckResult:
    """Chapter 00 exercise: ``solve(gens_in, gens_out)`` must return an orthonormal basis ``(K, d_out, d_in)`` of the
    equivariant linear maps ``{W : ρ_out(g) W = W ρ_in(g) for every g}``, given the matrices ``ρ_in(s)``
    ``(d_in, d_in)`` and ``ρ_out(s)`` ``(d_out, d_out)`` of the group's generators ``s`` (two lists, same order).

    Convention: ``W`` maps column vectors, ``y = W x``, so ``W`` has shape ``(d_out, d_in)``; orthonormal means
    ``Σ_ij B_k[i, j] B_l[i, j] = δ_kl``. Checked on S4 and D6 permuting nodes, S4 into one invariant and D4
    from the plane to a square's corners, against :func:`symviz.reps.equivariant_basis`: every basis matrix must
    commute with the action of EVERY group element (not only the generators), the basis must be orthonormal and
    have as many elements as there are independent equivariant maps.
    """
    import torch

    from symviz.chapters.ch00_symmetry_primer.experiments import generator_matrices
    from symviz.reps import equivariant_basis

    counts = []
    for name, rep_in, rep_out in _basis_cases():
        gens_in, gens_out = generator_matrices(rep_in, rep_out)
        do, di = rep_out.dim, rep_in.dim
        try:
            B = torch.as_tensor(solve([g.clone() for g in gens_in], [g.clone() for g in gens_out])).to(torch.float64)
        except Exception as err:  # the learner's code failed: say how
            return verdict(False, "", f"{name}: calling your function failed: {type(err).__name__}: {err}")
        if B.ndim != 3 or tuple(B.shape[1:]) != (do, di):
            return verdict(False, "", f"{name}: expected a basis of shape (K, d_out, d_in) = (K, {do}, {di}), got "
                                      f"{tuple(B.shape)}. W maps column vectors (y = W x), so it has d_out rows.")
        if not bool(torch.isfinite(B).all()):
            return verdict(False, "", f"{name}: your basis contains NaN or inf")
        G = rep_in.group
        for k, W in enumerate(B):
            scale = max(float(W.norm()), 1e-12)
            for g in G.elements:
                err = float((rep_out(g) @ W - W @ rep_in(g)).norm()) / scale
                if err > tol:
                    perm = getattr(rep_in, "perms", None)
                    what = f"element {g} of {G.name}" + ("" if perm is None else f" (input permutation {perm[g].tolist()})")
                    return verdict(False, "", f"{name}: basis matrix {k} is not equivariant under {what}: "
                                              f"‖ρ_out(g) W − W ρ_in(g)‖ / ‖W‖ = {err:.2g}. Every element of the group must "
                                              "commute with W; impose the constraint of every generator, and check the "
                                              "transposes in your Kronecker products (row-major vec: vec(W B) = (I ⊗ Bᵀ) vec W).")
        gram = B.reshape(B.shape[0], -1) @ B.reshape(B.shape[0], -1).T
        dev = float((gram - torch.eye(B.shape[0], dtype=torch.float64)).abs().max()) if B.shape[0] else 0.0
        if dev > 1e-6:
            return verdict(False, "", f"{name}: your basis is not orthonormal: the Gram matrix Σ_ij B_k[i,j] B_l[i,j] "
                                      f"differs from the identity by {dev:.2g}. The null space from an SVD (rows of Vᵀ) "
                                      "is orthonormal; do not rescale or combine its vectors.")
        want = equivariant_basis(rep_in, rep_out).shape[0]
        if B.shape[0] != want:
            missing = equivariant_basis(rep_in, rep_out)
            flat = B.reshape(B.shape[0], -1)
            resid = [float((m.reshape(-1) - flat.T @ (flat @ m.reshape(-1))).norm()) for m in missing]
            example = missing[int(torch.tensor(resid).argmax())]
            return verdict(False, "", f"{name}: there are {want} independent equivariant maps, your basis has "
                                      f"{B.shape[0]}. For example this equivariant W is not in your span:\n"
                                      f"{example.numpy().round(3)}\nKeep every singular vector whose singular value "
                                      "is zero up to rounding (compare with a small fraction of the largest one); torch.linalg.svd "
                                      "returns min(rows, columns) singular values, and rows of Vᵀ beyond them (full_matrices=True) "
                                      "are in the null space too.")
        counts.append(f"{want}")
    return verdict(True, f"orthonormal bases of every equivariant map, equivariant under every group element "
                         f"({', '.join(counts)} maps in the four cases). Well done!", "")
