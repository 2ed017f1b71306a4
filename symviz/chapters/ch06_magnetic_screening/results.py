"""The Result cell of chapter 06: record what the screening run measured and state the chapter's claims.

:func:`conclude` records the metrics and claims through :mod:`symviz.report` (started by the notebook) and returns
the conclusion as a small table: each claim, its kind, the numbers behind it and whether it holds.

Kinds (see :mod:`symviz.report`): Kaba et al.'s findings are ``"paper"`` claims, measured against baselines of the
same run (the graph network, random picking, a shuffled pairing); that both learned models beat the training-mean
predictor is a floor any working regressor clears, so it guards the pipeline (``"sanity"``) rather than
reproducing a finding of the paper.

The two-stage screen on a held-out pool (``two_stage=``) adds Kaba et al.'s pipeline claims, each against a baseline
of the same run and gated on its noise (a bootstrap over the held-out crystals, or a permutation test): the screen's
precision beats random picking, each family's stage 1 beats the majority class, and their spread ranks the actual
error. Whether the families are *comparable* (Kaba et al.'s finding) is recorded as each family's ROC AUC gap to the
best one with its bootstrap bound; at quick-mode size the MEGNet-style network is sometimes significantly behind, so
that is reported, not asserted. That the graph networks do not depend on the choice of unit cell or on the
order of the sites holds by construction (``"sanity"``).
"""
from __future__ import annotations

from typing import Any

__all__ = ["conclude"]


def _numbers(value: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in value.items())


def conclude(*, maes: dict[str, float], recall: dict[str, float], recall_random: float, k: int, n: int, rho: float,
             p_value: float, chgnet_literature: dict[str, float], chgnet_mp: dict[str, Any], pool: dict[str, Any],
             timings: dict[str, float], two_stage: dict[str, Any] | None = None):
    """Record the metrics and claims of chapter 06; return the claims as a DataFrame (claim, kind, numbers, holds).

    Args:
        maes: model name -> out-of-fold MAE (μB/atom); recall: model name -> recall@k; recall_random: ``k / n``;
        rho, p_value: Spearman correlation of the RF–CGCNN disagreement with the actual error and its permutation
        p-value; chgnet_literature, chgnet_mp, pool, timings: recorded as metrics.
        two_stage: optional, the held-out two-stage screen: ``screen`` (``precision``, ``precision_lower`` (its
        bootstrap 5% bound), ``base_rate``, ...), ``stage1`` (``accuracy``, ``majority``, ``gain_lower``: model ->
        bootstrap 5% bound of its paired accuracy gain over the majority class, for each family and the ensemble;
        ``auc_gaps`` is recorded), ``spread``
        (``spearman``, ``p_value``, coverage ...), ``cell_choice`` (model -> :func:`~symviz.chapters.
        ch06_magnetic_screening.screening.cell_choice_errors`), and anything else to record (MAEs, sizes).
    """
    import pandas as pd

    from symviz import report

    for name in ("mean baseline", "random forest", "CGCNN", "RF + CGCNN average"):
        if name not in maes or name not in recall:
            raise ValueError(f"conclude: maes and recall need an entry for {name!r}; got {sorted(maes)}")
    for name, value in maes.items():
        report.metric(f"mae_{name.replace(' ', '_').replace('+', 'and')}", value)
    report.metric("recall_at_k", {"k": k, "n": n, **recall, "random": recall_random})
    report.metric("disagreement_vs_error", {"spearman": rho, "p_value": p_value})
    report.metric("chgnet_vs_literature", chgnet_literature)
    report.metric("chgnet_vs_mp_dft_real_structures", chgnet_mp)
    report.metric("pool", pool)
    report.metric("timings_s", timings)

    base = maes["mean baseline"]
    claims = [
        ("random forest and CGCNN both beat the mean baseline's MAE by at least 40%", "sanity",
         maes["random forest"] < 0.6 * base and maes["CGCNN"] < 0.6 * base,
         {"rf": maes["random forest"], "cgcnn": maes["CGCNN"], "mean_baseline": base}),
        ("random forest MAE within a factor 1.5 of the graph network's", "paper",
         maes["random forest"] <= 1.5 * maes["CGCNN"],
         {"ratio_rf_over_cgcnn": maes["random forest"] / maes["CGCNN"]}),
        (f"recall@{k} of the averaged models at least 3x random selection", "paper",
         recall["RF + CGCNN average"] >= 3 * recall_random,
         {"recall": recall["RF + CGCNN average"], "random": recall_random}),
        ("RF-CGCNN disagreement correlates with the actual error (Spearman > 0, permutation p < 0.05)", "paper",
         rho > 0 and p_value < 0.05, {"spearman": rho, "p_value": p_value}),
    ]
    if two_stage is not None:
        claims += _two_stage_claims(two_stage)
    rows = []
    for text, kind, holds, value in claims:
        report.claim(text, holds, value=value, kind=kind)
        rows.append({"claim": text, "kind": kind, "numbers": _numbers(value), "holds": bool(holds)})
    return pd.DataFrame(rows)


CELL_TOL = 1e-6  # float64 relative error below which a prediction is "unchanged" by the cell choice


def _two_stage_claims(ts: dict[str, Any]) -> list[tuple[str, str, bool, dict]]:
    from symviz import report

    for key in ("screen", "stage1", "spread", "cell_choice"):
        if key not in ts:
            raise ValueError(f"conclude: two_stage needs an entry {key!r}; got {sorted(ts)}")
    for key, value in ts.items():
        report.metric(f"two_stage_{key}", value)
    sc, s1, sp = ts["screen"], ts["stage1"], ts["spread"]
    gains = dict(s1["gain_lower"])
    cell = max(v for errs in ts["cell_choice"].values() for v in errs.values())
    return [
        ("two-stage screen of held-out chemical systems: precision for large moments above random picking "
         "(bootstrap 5% bound > base rate)", "paper", sc["precision_lower"] > sc["base_rate"],
         {"precision": sc["precision"], "lower_5pct": sc["precision_lower"], "random": sc["base_rate"]}),
        ("stage 1 (magnetic or not): each family and their ensemble beat the majority class (bootstrap 5% bound of "
         "each accuracy gain > 0)", "paper", min(gains.values()) > 0,
         {"accuracy_ensemble": s1["accuracy"], "majority": s1["majority"],
          **{f"gain_lower_5pct_{k}": v for k, v in gains.items()}}),
        ("three-model spread correlates with the actual error on the held-out crystals (Spearman > 0, permutation "
         "p < 0.05)", "paper", sp["spearman"] > 0 and sp["p_value"] < 0.05,
         {"spearman": sp["spearman"], "p_value": sp["p_value"]}),
        (f"trained CGCNN and MEGNet: per-atom features repeat in a supercell and follow permuted sites, the "
         f"crystal's prediction is unchanged (relative error < {CELL_TOL:g}, float64)", "sanity", cell < CELL_TOL,
         {"max_relative_error": cell}),
    ]
