"""Chapter 04's conclusion: :func:`conclude` records the run's metrics and claims through :mod:`symviz.report`
and returns the table the Result cell shows (claim, kind, the numbers behind it, holds).

Claims of kind ``"paper"`` are Levy et al.'s empirical claims against baselines trained in the same run (EGNN,
the constant-velocity guess); ``"sanity"`` claims hold by construction (equivariance, parameter counts, the
learner's update computing the built-in one) or guard the code (step time, the QM9 model learning anything).
"""
from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from symviz import report

__all__ = ["gap_stats", "dimer_stats", "conclude"]


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


def dimer_stats(table: pd.DataFrame) -> dict:
    """Summary of the toy's runs table (columns ``channels``, ``seed``, ``test_mse``; channels 1 and more):
    per channel count the worst, best and geometric-mean test MSE, and the seed spread of ``log10`` MSE
    (the errors differ by orders of magnitude, so they are compared on a log scale)."""
    if not {"channels", "seed", "test_mse"} <= set(table.columns):
        raise ValueError(f"dimer_stats: the table needs the columns 'channels', 'seed' and 'test_mse', got {list(table.columns)}")
    chans = sorted(table["channels"].unique())
    if len(chans) != 2 or chans[0] != 1:
        raise ValueError(f"dimer_stats: expected one-channel runs and one multichannel count, got channels {chans}")
    if not (table["test_mse"] > 0).all():
        raise ValueError("dimer_stats: test MSEs must be positive (they are compared on a log scale)")
    out = {}
    for C in chans:
        lg = table[table["channels"] == C]["test_mse"].map(math.log10)
        out[C] = {"max": float(10 ** lg.max()), "min": float(10 ** lg.min()), "geo_mean": float(10 ** lg.mean()),
                  "log10_mean": float(lg.mean()), "log10_std": float(lg.std()) if len(lg) > 1 else 0.0}
    return out


def _numbers(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items())
    return _fmt(value)


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else json.dumps(v) if isinstance(v, (dict, list)) else str(v)


def conclude(*, channels: int, n_seeds: int, nb_table: pd.DataFrame, so_table: pd.DataFrame, qm_table: pd.DataFrame,
             linear_mse: float, qm_mean_baseline: float, eq_errors: dict, cost: pd.DataFrame,
             plugged_error: float | None, wall_seconds: float, dimer_table: pd.DataFrame | None = None,
             dimer_floor: float | None = None, dimer_eq_errors: dict | None = None) -> pd.DataFrame:
    """Record chapter 04's metrics and claims in the current report (:func:`symviz.report.start` first) and
    return one row per claim: ``claim``, ``kind``, ``numbers``, ``holds``.

    ``plugged_error``: relative difference between the predictions of the MC-EGNN trained with the accepted
    coordinate update and the same weights run with the built-in update (None: no such run, no claim).

    The toy (``dimer_table``: columns ``channels``, ``seed``, ``test_mse``; ``dimer_floor``: the test set's
    :func:`~symviz.chapters.ch04_multichannel_egnn.dimer.rank_one_floor`; ``dimer_eq_errors``: relative
    equivariance errors of its models): the multichannel model must beat the floor on every seed and beat the
    one-channel model by more than twice the seed spread of log10 MSE (paper); every one-channel run must sit on or
    above the floor (sanity: a theorem, so a failure means broken code).
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
    if dimer_table is not None:
        if dimer_floor is None or dimer_eq_errors is None:
            raise ValueError("conclude: dimer_table needs dimer_floor and dimer_eq_errors")
        st = dimer_stats(dimer_table)
        one, (C, many) = st[1], [(c, v) for c, v in st.items() if c != 1][0]
        spread = max(one["log10_std"], many["log10_std"], 1e-12)
        report.metric("dimer_test_mse", dimer_table.to_dict("records"))
        report.metric("dimer_rank_one_floor", dimer_floor)
        report.metric("dimer_equivariance_max_rel_error_float32", dimer_eq_errors)
        report.claim(f"spring dimer: MC-EGNN (C={C}) below the floor no one-channel model can cross, on every seed",
                     many["max"] < dimer_floor, value={"mc_worst": many["max"], "floor": dimer_floor}, kind="paper")
        report.claim(f"spring dimer: MC-EGNN (C={C}) far below EGNN: log10 test-MSE gap exceeds twice the seed spread",
                     one["log10_mean"] - many["log10_mean"] > 2 * spread,
                     value={"egnn_geo_mean": one["geo_mean"], "mc_geo_mean": many["geo_mean"],
                            "log10_gap": one["log10_mean"] - many["log10_mean"], "log10_std": spread}, kind="paper")
        report.claim("spring dimer: every one-channel run on or above the rank-1 floor (Eckart-Young)",
                     one["min"] >= dimer_floor * (1 - 1e-4), value={"egnn_best": one["min"], "floor": dimer_floor},
                     kind="sanity")
        report.claim("spring dimer: both models E(3)xS_n-equivariant to 1e-5 (float32, relative)",
                     max(dimer_eq_errors.values()) < 1e-5, value=dimer_eq_errors, kind="sanity")
    if plugged_error is not None:
        report.claim("the MC-EGNN trained with the exercise's coordinate update computes the built-in update's "
                     "predictions (same weights, float32, relative < 1e-5)",
                     plugged_error < 1e-5, value=plugged_error, kind="sanity")
    return pd.DataFrame([{"claim": c["text"], "kind": c["kind"], "numbers": _numbers(c["value"]), "holds": c["holds"]}
                         for c in rep.claims[first:]])
