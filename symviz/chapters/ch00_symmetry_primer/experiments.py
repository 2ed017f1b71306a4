"""Chapter 00's pieces that the notebook, its tests and its benchmark share: the generators of ``S_n`` as
matrices, the reference solver of ``ρ_out(g) W = W ρ_in(g)`` from generator matrices (what the learner builds),
and :func:`conclude`, the Result cell's bookkeeping (metrics, claims, the table the notebook shows).

Convention: a permutation ``p`` acts on a vector as ``(P x)[i] = x[p[i]]``, i.e. ``P[i, p[i]] = 1`` (the gather
convention of :mod:`symviz.groups`); a linear map is a matrix ``W: (d_out, d_in)`` acting on column vectors.

    >>> gens = permutation_generators(4)
    >>> equivariant_basis_from_generators(gens, gens).shape      # span{I, 11ᵀ}: the DeepSets layer
    torch.Size([2, 4, 4])
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

__all__ = ["permutation_generators", "equivariant_basis_from_generators", "generator_matrices",
           "squared_errors", "conclude"]


def permutation_generators(n: int) -> list[torch.Tensor]:
    """The two generators of ``S_n`` that :class:`symviz.groups.SymmetricGroup` uses, as ``(n, n)`` float64
    permutation matrices: the transposition ``(0 1)`` and the ``n``-cycle ``i -> i + 1``. Works for any ``n ≥ 2``
    (``SymmetricGroup`` itself stops at 7 because it stores the ``n! × n!`` Cayley table)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"n must be an integer >= 2 (S_n on n points), got {n!r}")
    swap = [1, 0] + list(range(2, n))
    cycle = [(i + 1) % n for i in range(n)]
    eye = torch.eye(n, dtype=torch.float64)
    return [eye[swap], eye[cycle]]     # row i of eye[p] is e_{p[i]}: (P x)[i] = x[p[i]]


def generator_matrices(rep_in, rep_out) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``([ρ_in(s)], [ρ_out(s)])`` over a generating set ``s`` of the group (:func:`symviz.reps.generators`)."""
    from symviz.reps import generators

    if rep_in.group is not rep_out.group:
        raise ValueError("rep_in and rep_out must represent the same group object")
    gens = generators(rep_in.group) or [0]
    return [rep_in(s).clone() for s in gens], [rep_out(s).clone() for s in gens]


def _as_generator_list(name: str, gens) -> list[np.ndarray]:
    if isinstance(gens, (torch.Tensor, np.ndarray)) and np.ndim(gens) == 2:
        raise ValueError(f"{name} must be a list of square matrices, one per generator (got one matrix: wrap it in a list)")
    mats = [np.asarray(torch.as_tensor(g, dtype=torch.float64)) for g in gens]
    if not mats:
        raise ValueError(f"{name} must hold at least one generator matrix")
    d = mats[0].shape[0]
    for m in mats:
        if m.ndim != 2 or m.shape != (d, d):
            raise ValueError(f"{name}: every generator must be a ({d}, {d}) matrix, got shape {m.shape}")
    return mats


def equivariant_basis_from_generators(gens_in: Sequence, gens_out: Sequence, tol: float = 1e-9) -> torch.Tensor:
    """An orthonormal basis ``(K, d_out, d_in)`` (Frobenius inner product) of ``{W : ρ_out(s) W = W ρ_in(s)}``.

    ``gens_in``: ``(d_in, d_in)`` matrices ``ρ_in(s)``, ``gens_out``: ``(d_out, d_out)`` matrices ``ρ_out(s)``, one
    per generator ``s`` in the same order. With ``W`` flattened row by row, ``vec(AW) = (A ⊗ I) vec W`` and
    ``vec(WB) = (I ⊗ Bᵀ) vec W``, so the solutions are the null space of the stacked
    ``(ρ_out(s) ⊗ I − I ⊗ ρ_in(s)ᵀ)`` (Finzi, Welling & Wilson, ICML 2021, arXiv:2104.09459), here from
    :func:`scipy.linalg.null_space` (singular values below ``tol`` × the largest count as zero). The reference
    for chapter 00's exercise; :func:`symviz.reps.equivariant_basis` solves the same equations from a
    :class:`~symviz.reps.Representation` (it needs the whole group, which for ``S_8`` has 40320 elements).
    """
    import scipy.linalg

    A_list, B_list = _as_generator_list("gens_out", gens_out), _as_generator_list("gens_in", gens_in)
    if len(A_list) != len(B_list):
        raise ValueError(f"gens_in and gens_out must list the same generators: got {len(B_list)} and {len(A_list)} matrices")
    do, di = A_list[0].shape[0], B_list[0].shape[0]
    C = np.concatenate([np.kron(A, np.eye(di)) - np.kron(np.eye(do), B.T) for A, B in zip(A_list, B_list)])
    null = scipy.linalg.null_space(C, rcond=tol)            # (do·di, K), orthonormal columns
    return torch.from_numpy(np.ascontiguousarray(null.T)).reshape(-1, do, di)


def squared_errors(model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-set squared error ``(model(x) − y)²: (n_sets,)`` of a scalar-output model (E3PointNet: its scalar)."""
    with torch.no_grad():
        out = model(x)
        out = out[0] if isinstance(out, tuple) else out
        return (out.reshape(len(y)) - y) ** 2


def _paired(worse: torch.Tensor, better: torch.Tensor) -> dict:
    """Mean and standard error of the paired difference ``worse − better`` over test sets."""
    d = (worse - better).double()
    return {"difference": float(d.mean()), "standard_error": float(d.std() / len(d) ** 0.5)}


def _numbers(value) -> str:
    """A claim's value as one short line for the Result table."""
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_numbers(v)}" for k, v in value.items())
    if isinstance(value, list):   # the stabilizer rows: |G_x| -> |G_f(x)| per input
        return ", ".join(f"{r['input']} {r['|G_x|']}→{r['|G_f(x)|']}" for r in value)
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def conclude(errors, vec_error: float, wigner_error: float, stab_rows: list, results, trained: dict,
             test_sets: tuple, x_check: torch.Tensor):
    """The Result cell of chapter 00: record the metrics and claims through :mod:`symviz.report` (started by the
    caller) and return the table the notebook shows (claim, kind, the numbers behind it, holds).

    ``errors``: the invariance-error table of section 2 (rows SetMLP/DeepSets/E3PointNet, columns groups);
    ``results``: the trained models' MSE table; ``trained``: name -> trained model; ``test_sets``:
    ``(x_aligned, y, x_rotated_permuted)``; ``x_check: (n, 3)``: the point set on which the trained DeepSets (built
    from the solved basis) is checked for permutation invariance, in float64.
    """
    import copy

    import pandas as pd

    from symviz import report
    from symviz.equivariance import check_equivariance

    ds64 = copy.deepcopy(trained["DeepSets"]).double()
    deepsets_invariance = check_equivariance(ds64, (x_check.double(),), ("point",), "scalar", group="S_n", trials=8).max_error

    for name in errors.index:
        report.metric(f"invariance_error_E3xSn_{name}", errors.loc[name, "E(3)xS_n"])
    report.metric("e3pointnet_vector_equivariance_error", vec_error)
    report.metric("wigner_homomorphism_error", wigner_error)
    for name in results.index:
        report.metric(f"mse_rotated_{name}", results.loc[name, "MSE rotated+permuted test"])
        report.metric(f"mse_aligned_{name}", results.loc[name, "MSE aligned test"])
    report.metric("deepsets_solved_basis_invariance_error", deepsets_invariance)

    rows = []

    def claim(text, holds, value, kind):
        rows.append({"claim": text, "kind": kind, "numbers": _numbers(value),
                     "holds": report.claim(text, holds, value=value, kind=kind)})

    claim("DeepSets is permutation-invariant (error < 1e-9) while the flattening MLP is not (error > 1e-3)",
          errors.loc["DeepSets", "S_n"] < 1e-9 and errors.loc["SetMLP", "S_n"] > 1e-3,
          {"DeepSets": errors.loc["DeepSets", "S_n"], "SetMLP": errors.loc["SetMLP", "S_n"]}, "sanity")
    claim("E3PointNet is E(3)×S_n-invariant/equivariant to 1e-6 while DeepSets is not rotation-invariant (> 1e-3)",
          errors.loc["E3PointNet", "E(3)xS_n"] < 1e-6 and vec_error < 1e-6 and errors.loc["DeepSets", "SO(3)"] > 1e-3,
          {"E3 scalar": errors.loc["E3PointNet", "E(3)xS_n"], "E3 vector": vec_error,
           "DeepSets SO(3)": errors.loc["DeepSets", "SO(3)"]}, "sanity")
    claim("Wigner D matrices compose like rotations (homomorphism error < 1e-10 in float64)",
          wigner_error < 1e-10, wigner_error, "sanity")
    claim("an equivariant layer never loses symmetry: G_x ⊆ G_f(x) for every input",
          all(r["G_x ⊆ G_f(x)"] for r in stab_rows), stab_rows, "sanity")
    claim("the DeepSets built from the solved basis stays permutation-invariant after training (error < 1e-9)",
          deepsets_invariance < 1e-9, deepsets_invariance, "sanity")
    rot = results["MSE rotated+permuted test"]
    worst_other = min(rot["SetMLP"], rot["DeepSets"])
    claim("on rotated+permuted test sets the invariant E3PointNet beats both non-invariant models trained on aligned data",
          rot["E3PointNet"] < worst_other, rot.to_dict(), "paper")
    x_al, y, x_rot = test_sets
    drops = {name: _paired(squared_errors(trained[name], x_rot, y), squared_errors(trained[name], x_al, y))
             for name in ("SetMLP", "DeepSets")}
    claim("trained on aligned sets only, SetMLP and DeepSets do worse on the same sets rotated and permuted "
          "(MSE difference > 3 standard errors, paired over the test sets)",
          all(d["difference"] > 3 * d["standard_error"] for d in drops.values()), drops, "paper")
    rel_change = abs(results.loc["E3PointNet", "MSE rotated+permuted test"] / results.loc["E3PointNet", "MSE aligned test"] - 1)
    claim("E3PointNet's test error is unchanged by rotating and permuting the test sets (relative change < 1e-3)",
          rel_change < 1e-3, results.loc["E3PointNet"].to_dict(), "sanity")
    return pd.DataFrame(rows).set_index("claim")
