"""The Result cell of chapter 06: record what the screening run measured and state the chapter's claims.

:func:`conclude` records the metrics and claims through :mod:`symviz.report` (started by the notebook) and returns
the conclusion as a small table: each claim, its kind, the numbers behind it and whether it holds.

Kinds (see :mod:`symviz.report`): Kaba et al.'s findings are ``"paper"`` claims, measured against baselines of the
same run (the graph network, random picking, a shuffled pairing); that both learned models beat the training-mean
predictor is a floor any working regressor clears, so it guards the pipeline (``"sanity"``) rather than
reproducing a finding of the paper.
"""
from __future__ import annotations

from typing import Any

__all__ = ["conclude"]


def _numbers(value: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in value.items())


def conclude(*, maes: dict[str, float], recall: dict[str, float], recall_random: float, k: int, n: int, rho: float,
             p_value: float, chgnet_literature: dict[str, float], chgnet_mp: dict[str, Any], pool: dict[str, Any],
             timings: dict[str, float]):
    """Record the metrics and claims of chapter 06; return the claims as a DataFrame (claim, kind, numbers, holds).

    Args:
        maes: model name -> out-of-fold MAE (μB/atom); recall: model name -> recall@k; recall_random: ``k / n``;
        rho, p_value: Spearman correlation of the RF–CGCNN disagreement with the actual error and its permutation
        p-value; chgnet_literature, chgnet_mp, pool, timings: recorded as metrics.
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
    rows = []
    for text, kind, holds, value in claims:
        report.claim(text, holds, value=value, kind=kind)
        rows.append({"claim": text, "kind": kind, "numbers": _numbers(value), "holds": bool(holds)})
    return pd.DataFrame(rows)
