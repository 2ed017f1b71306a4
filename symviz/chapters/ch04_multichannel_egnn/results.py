"""Chapter 04's conclusion: :func:`conclude` records the run's metrics and claims through :mod:`symviz.report`
and returns the table the Result cell shows (claim, kind, the numbers behind it, holds).

Claims of kind ``"paper"`` are Levy et al.'s empirical claims against baselines trained in the same run (EGNN,
the constant-velocity guess); ``"sanity"`` claims hold by construction (equivariance, parameter counts, the
learner's update computing the built-in one) or guard the code (step time, the QM9 model learning anything).
"""
from __future__ import annotations

import json
from typing import Any

import pandas as pd

from symviz import report

__all__ = ["gap_stats", "conclude"]


def gap_stats(table: pd.DataFrame, col: str) -> tuple[float, float, float]:
    """``(mean of the first model, mean of the second, largest per-model seed std)`` of a runs table with a
    ``model`` column (EGNN first, MC-EGNN second, as the notebook builds it) and the error column ``col``."""
    if "model" not in table or col not in table:
        raise ValueError(f"gap_stats: the table needs the columns 'model' and {col!r}, got {list(table.columns)}")
    g = table.groupby("model")[col]
    names = list(table["model"].unique())
    if len(names) != 2:
        raise ValueError(f"gap_stats: expected two models (EGNN, MC-EGNN), got {names}")
    e, m = g.mean()[names[0]], g.mean()[names[1]]
    spread = max(g.std().fillna(0).max(), 1e-12)
    return float(e), float(m), float(spread)


def _numbers(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items())
    return _fmt(value)


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else json.dumps(v) if isinstance(v, (dict, list)) else str(v)


def conclude(*, channels: int, n_seeds: int, nb_table: pd.DataFrame, so_table: pd.DataFrame, qm_table: pd.DataFrame,
             linear_mse: float, qm_mean_baseline: float, eq_errors: dict, cost: pd.DataFrame,
             plugged_error: float | None, wall_seconds: float) -> pd.DataFrame:
    """Record chapter 04's metrics and claims in the current report (:func:`symviz.report.start` first) and
    return one row per claim: ``claim``, ``kind``, ``numbers``, ``holds``.

    ``plugged_error``: relative difference between the predictions of the MC-EGNN trained with the accepted
    coordinate update and the same weights run with the built-in update (None: no such run, no claim).
    """
    rep = report.current()
    first = len(rep.claims)
    nb_e, nb_m, nb_sd = gap_stats(nb_table, "test_mse")
    so_e, so_m, so_sd = gap_stats(so_table, "test_mse")
    qm_e, qm_m, qm_sd = gap_stats(qm_table, "test_mae")
    cost_e = cost[(cost.channels == 1) & (cost.path == "dense")].iloc[0]
    cost_m = cost[(cost.channels == channels) & (cost.path == "dense")].iloc[0]

    report.metric("nbody_test_mse", nb_table.to_dict("records"))
    report.metric("solar_test_mse", so_table.to_dict("records"))
    report.metric("qm9_gap_test_mae_eV", qm_table.to_dict("records"))
    report.metric("nbody_constant_velocity_mse", linear_mse)
    report.metric("equivariance_max_rel_error_float32", eq_errors)
    report.metric("cost_table", cost.round(4).to_dict("records"))
    report.metric("params", {"EGNN": int(cost_e.params), f"MC-EGNN C={channels}": int(cost_m.params)})
    report.metric("wall_seconds", wall_seconds)

    report.claim(f"N-body: MC-EGNN (C={channels}) test MSE below EGNN, mean over {n_seeds} seeds",
                 nb_m < nb_e, value={"egnn": nb_e, "mc_egnn": nb_m, "seed_std": nb_sd}, kind="paper")
    report.claim("N-body: both models beat the constant-velocity guess on every seed",
                 bool((nb_table["test_mse"] < linear_mse).all()),
                 value={"worst": float(nb_table["test_mse"].max()), "linear": linear_mse}, kind="paper")
    report.claim("Both models E(3)xS_n-equivariant to 1e-5 (float32, relative)",
                 max(eq_errors.values()) < 1e-5, value=eq_errors, kind="sanity")
    report.claim("MC-EGNN has at most 5% more parameters than EGNN",
                 cost_m.params <= 1.05 * cost_e.params, value={"egnn": int(cost_e.params), "mc": int(cost_m.params)},
                 kind="sanity")
    report.claim("MC-EGNN train step within 3x of EGNN's (same path, same run)",
                 cost_m.step_ms <= 3 * cost_e.step_ms,
                 value={"egnn_ms": float(cost_e.step_ms), "mc_ms": float(cost_m.step_ms)}, kind="sanity")
    report.claim("QM9: both models beat predicting the training mean, on every seed",
                 bool((qm_table["test_mae"] < qm_mean_baseline).all()),
                 value={"worst": float(qm_table["test_mae"].max()), "mean_baseline": qm_mean_baseline}, kind="sanity")
    for name, e, m, sd in (("solar system", so_e, so_m, so_sd), ("QM9 gap", qm_e, qm_m, qm_sd)):
        if abs(e - m) > 2 * sd:  # asserted only where the gap clearly exceeds the seed spread (2 std of one model)
            report.claim(f"{name}: MC-EGNN better than EGNN (gap exceeds twice the seed spread)", m < e,
                         value={"egnn": e, "mc": m, "std": sd}, kind="paper")
        else:
            report.metric(f"{name}: gap within seed spread (reported, not asserted)", {"egnn": e, "mc": m, "std": sd})
    if plugged_error is not None:
        report.claim("the MC-EGNN trained with the exercise's coordinate update computes the built-in update's "
                     "predictions (same weights, float32, relative < 1e-5)",
                     plugged_error < 1e-5, value=plugged_error, kind="sanity")
    return pd.DataFrame([{"claim": c["text"], "kind": c["kind"], "numbers": _numbers(c["value"]), "holds": c["holds"]}
                         for c in rep.claims[first:]])
