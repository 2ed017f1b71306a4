"""The Result cell of chapter 07: record what the run measured and state the chapter's claims.

:func:`conclude` records the metrics and claims through :mod:`symviz.report` (started by the notebook) and returns
the conclusion as small tables: the accuracies per method, and each claim with its kind, the numbers behind it and
whether it holds.

Kinds (see :mod:`symviz.report`): the colour and two-moons claims are measured against a baseline trained in the same
run, on every seed, so they are ``"paper"`` claims (the rescaled-loss control is our addition that explains the
paper's recipe, and it is just as empirical). The coupling toy is a deterministic linear model without any seed:
that ``w2`` does not depend on ``s1`` under spectral decoupling is the fixed-point equation of section 2 checked
numerically, so it is a ``"sanity"`` claim. The colour-swap comparison (section 6) is again against methods trained in
the same run, on every seed and beyond the seed spread (``"paper"``); the exact swap invariance of the group-averaged
model holds by construction (``"sanity"``).
"""
from __future__ import annotations

from typing import Any, Sequence

__all__ = ["conclude"]


def _numbers(value: dict[str, Any]) -> str:
    def fmt(v):
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(fmt(x) for x in v) + "]"
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    return ", ".join(f"{k} {fmt(v)}" for k, v in value.items())


def _beats(piv, better: str, worse: str) -> tuple[bool, dict]:
    """``better`` above ``worse`` on every seed (paired), and beyond the seed spread: the worst seed of ``better``
    above the best seed of ``worse`` (the two ranges over seeds do not overlap). The mean gap and the larger seed
    std are returned with the numbers."""
    gap = piv[better] - piv[worse]
    spread = float(max(piv[better].std(), piv[worse].std()))
    holds = bool((gap > 0).all() and piv[better].min() > piv[worse].max())
    return holds, {better: float(piv[better].mean()), worse: float(piv[worse].mean()), "gaps": [float(g) for g in gap],
                   f"{better}_worst": float(piv[better].min()), f"{worse}_best": float(piv[worse].max()),
                   "seed_std": spread}


def conclude(colour, moons, ce_w2: Sequence[float], sd_w2: Sequence[float], *, scale: str,
             data_measured: dict | None = None, wall_seconds: float | None = None, invariance: dict | None = None):
    """Record chapter 07's metrics and claims; return ``(accuracies, margins, claims)`` DataFrames.

    Args:
        colour: DataFrame with columns ``seed, method, train_acc, test_acc`` (methods ``erm``, ``sd``,
            ``rescaled_ce``, ...); moons: DataFrame with ``seed, loss, margin`` (losses ``cross-entropy`` and
            ``spectral decoupling``); ce_w2, sd_w2: the coupling toy's ``w2`` for increasing ``s1`` under
            cross-entropy and spectral decoupling.
        invariance: section 6, or None: ``{"group_avg_error": relative swap-invariance error of the group-averaged
            model, "augment_error": the same for the augmented one, "sensitivity": {method: swap_sensitivity}}``;
            ``colour`` then also has rows for the methods ``group_avg`` and ``augment``.
    """
    import numpy as np
    import pandas as pd

    from symviz import report

    for col in ("seed", "method", "train_acc", "test_acc"):
        if col not in colour:
            raise ValueError(f"conclude: colour needs a column {col!r}, has {list(colour.columns)}")
    missing = {"erm", "sd", "rescaled_ce"} - set(colour["method"])
    if missing:
        raise ValueError(f"conclude: colour has no rows for {sorted(missing)}")
    if {"cross-entropy", "spectral decoupling"} - set(moons["loss"]):
        raise ValueError("conclude: moons needs rows for 'cross-entropy' and 'spectral decoupling'")
    if invariance is not None:
        missing = {"group_avg", "augment"} - set(colour["method"])
        if missing:
            raise ValueError(f"conclude: with invariance, colour needs rows for {sorted(missing)}")
        if not {"group_avg_error", "augment_error", "sensitivity"} <= set(invariance):
            raise ValueError("conclude: invariance needs 'group_avg_error', 'augment_error' and 'sensitivity'")
    ce_w2, sd_w2 = np.asarray(ce_w2, dtype=float), np.asarray(sd_w2, dtype=float)
    if ce_w2.size < 2 or sd_w2.size < 2:
        raise ValueError("conclude: ce_w2 and sd_w2 need w2 for at least two strengths s1")

    piv = colour.pivot(index="seed", columns="method", values="test_acc")
    piv_tr = colour.pivot(index="seed", columns="method", values="train_acc")
    mg = moons.pivot(index="seed", columns="loss", values="margin")
    sd_test, erm_test = piv["sd"].mean(), piv["erm"].mean()
    accuracies = pd.DataFrame({
        "train_acc (mean)": colour.groupby("method")["train_acc"].mean(),
        "test_acc (mean)": colour.groupby("method")["test_acc"].mean(),
        "test_acc (min over seeds)": colour.groupby("method")["test_acc"].min(),
    }).round(3)
    report.metric("scale", scale)
    report.metric("colour_seeds", list(piv.index))
    report.metric("colour_test_acc", {m: float(piv[m].mean()) for m in piv.columns})
    report.metric("colour_train_acc", {m: float(piv_tr[m].mean()) for m in piv_tr.columns})
    report.metric("colour_test_acc_per_seed", {m: [float(v) for v in piv[m].dropna()] for m in piv.columns})
    report.metric("moons_margin_mean", {m: float(mg[m].mean()) for m in mg.columns})
    report.metric("moons_margin_per_seed", {m: [float(v) for v in mg[m]] for m in mg.columns})
    report.metric("coupling_w2_ce_s1_1_to_8", [float(ce_w2[0]), float(ce_w2[-1])])
    report.metric("coupling_w2_sd_s1_1_to_8", [float(sd_w2[0]), float(sd_w2[-1])])
    if data_measured is not None:
        report.metric("data_measured", data_measured)
    if wall_seconds is not None:
        report.metric("wall_seconds", wall_seconds)

    gap = piv["sd"] - piv["erm"]
    ce_change, sd_change = abs(ce_w2[-1] / ce_w2[0] - 1), abs(sd_w2[-1] / sd_w2[0] - 1)
    claims = [
        ("colour: SD (paper's recipe) test accuracy above ERM's on every seed, by at least 0.15 on average", "paper",
         bool((gap > 0).all() and gap.mean() >= 0.15), {"sd": sd_test, "erm": erm_test, "gaps": list(gap)}),
        ("colour: ERM's training accuracy above SD's (mean over seeds)", "paper",
         bool(piv_tr["erm"].mean() > piv_tr["sd"].mean()), {"erm": piv_tr["erm"].mean(), "sd": piv_tr["sd"].mean()}),
        ("colour control: the rescaled loss without the penalty stays below SD on every seed (the penalty does the work)",
         "paper", bool((piv["rescaled_ce"] < piv["sd"]).all()),
         {"rescaled_ce": list(piv["rescaled_ce"]), "sd": list(piv["sd"])}),
        ("two moons: SD margin larger than cross-entropy's on every seed", "paper",
         bool((mg["spectral decoupling"] > mg["cross-entropy"]).all()),
         {"sd": list(mg["spectral decoupling"]), "ce": list(mg["cross-entropy"])}),
        ("coupling toy: raising s1 from 1 to 8 lowers w2 under cross-entropy, and changes it at least 10x less under SD",
         "sanity", bool(ce_w2[-1] < ce_w2[0] and sd_change < 0.1 * ce_change),
         {"ce": [ce_w2[0], ce_w2[-1]], "sd": [sd_w2[0], sd_w2[-1]]}),
    ]
    if invariance is not None:
        report.metric("colour_swap_invariance_error", {"group_avg": invariance["group_avg_error"],
                                                       "augment": invariance["augment_error"]})
        report.metric("colour_swap_sensitivity_first_seed", invariance["sensitivity"])
        for method, name in (("group_avg", "group averaging over {id, swap}"), ("augment", "colour-swap augmentation")):
            holds, value = _beats(piv, method, "sd")
            claims.append((f"colour, symmetry known: {name} beats SD at test on every seed, its worst seed above SD's "
                           "best", "paper", holds, value))
        claims.append(("colour: the group-averaged model is swap-invariant to float rounding (relative error < 1e-6)",
                       "sanity", invariance["group_avg_error"] < 1e-6, {"error": float(invariance["group_avg_error"])}))
    rows = []
    for text, kind, holds, value in claims:
        report.claim(text, holds, value=value, kind=kind)
        rows.append({"claim": text, "kind": kind, "numbers": _numbers(value), "holds": bool(holds)})
    return accuracies, mg.round(4), pd.DataFrame(rows)
