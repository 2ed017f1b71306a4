"""The Result cell of chapter 03 (equivariant adaptation): record what the run measured and state its claims.

:func:`conclude` takes the adaptation runs of the notebook (with and without the canonicalization prior, several
seeds), the backbone's own evaluation and the adapted models, records metrics through :mod:`symviz.report`
(``report.start`` must have been called), states the claims (kind ``"paper"``: Mondal et al.'s empirical claims,
measured against the backbone and the no-prior ablation of the same run, on every seed or beyond the seed spread;
kind ``"sanity"``: exact C4 invariance, which holds by construction) and returns them as a small table.
"""
from __future__ import annotations

import json
from typing import Mapping, Sequence

import numpy as np

__all__ = ["conclude", "CONFIGS"]

CONFIGS = ("no prior", "prior")
"""The two adaptation configurations, as named in the notebook's ``runs`` table."""


def _rounded(value):
    """Floats rounded to 3 significant digits, recursively (for the table's ``numbers`` column)."""
    if isinstance(value, Mapping):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_rounded(v) for v in value]
    return float(f"{float(value):.3g}")


def conclude(runs, ev_backbone: Mapping, adapted: Sequence, backbone, x_inv, *, seeds: Sequence[int], source: str,
             backbone_from_cache: bool, c8_mean: Mapping[str, float], wall_seconds: float):
    """Record chapter 03's metrics and claims; print this run's headline numbers; return the claims as a table.

    Args:
        runs: pandas table, one row per (config, seed) with columns ``config`` (:data:`CONFIGS`), ``seed``,
            ``upright``, ``rotated`` (accuracy on the C4-rotated test set) and ``identity`` (identity metric).
        ev_backbone: :func:`~symviz.chapters.ch03_equivariant_adaptation.adaptation.evaluate_rotations` of the
            backbone alone on the C4 angles (``upright``, ``rotated``, ``per_angle``).
        adapted: every adapted model of the run; backbone: the pretrained backbone; x_inv: test images on which
            the C4 invariance of both is measured (:func:`symviz.equivariance.rot90_invariance_error`).
        seeds, source, backbone_from_cache, c8_mean, wall_seconds: recorded as metrics.
    """
    import pandas as pd

    from symviz import report
    from symviz.equivariance import rot90_invariance_error

    missing = {"config", "seed", "upright", "rotated", "identity"} - set(runs.columns)
    if missing:
        raise ValueError(f"conclude: runs lacks the columns {sorted(missing)}")
    if not adapted:
        raise ValueError("conclude: adapted holds no model")
    acc = {c: runs[runs.config == c].rotated.to_numpy() for c in CONFIGS}
    idm = {c: runs[runs.config == c].identity.to_numpy() for c in CONFIGS}
    if any(len(acc[c]) != len(seeds) for c in CONFIGS):
        raise ValueError(f"conclude: runs needs one row per seed ({len(seeds)}) for each of {CONFIGS}")
    from symviz.chapters.ch03_equivariant_adaptation.adaptation import _smoke_subset

    _, x_inv = _smoke_subset(x_inv, batch_size=len(x_inv))  # a smoke run measures a few images
    inv_adapted = max(rot90_invariance_error(m, x_inv) for m in adapted)
    inv_backbone = rot90_invariance_error(backbone, x_inv)
    bb_up, bb_rot = ev_backbone["upright"], ev_backbone["rotated"]
    gap_recovered = (acc["prior"].mean() - bb_rot) / max(bb_up - bb_rot, 1e-9)
    gap_recovered_per_seed = (acc["prior"] - bb_rot) / max(bb_up - bb_rot, 1e-9)

    report.metric("data", source)
    report.metric("seeds", list(seeds))
    report.metric("backbone_upright_acc", bb_up)
    report.metric("backbone_c4_rotated_acc", bb_rot)
    report.metric("backbone_per_angle_acc", {f"{a:g}": v for a, v in ev_backbone["per_angle"].items()})
    for c in CONFIGS:
        key = c.replace(" ", "_")
        report.metric(f"{key}_c4_rotated_acc_per_seed", acc[c])
        report.metric(f"{key}_upright_acc_per_seed", runs[runs.config == c].upright.to_numpy())
        report.metric(f"{key}_identity_metric_per_seed", idm[c])
    report.metric("invariance_error_adapted", inv_adapted)
    report.metric("invariance_error_backbone", inv_backbone)
    report.metric("prior_gap_recovered", gap_recovered)
    report.metric("backbone_from_cache", backbone_from_cache)
    report.metric("c8_mean_acc_seed0_models", dict(c8_mean))

    claims = [
        ("the backbone alone loses much accuracy on C4-rotated test images (rotated < 0.75 x upright)", "paper",
         bb_rot < 0.75 * bb_up, {"upright": bb_up, "c4_rotated": bb_rot}),
        # relative change of the logits under rot90: float32 rounding is ~1e-7, a model that is not invariant
        # changes its logits by a sizeable fraction of their norm
        ("canonicalizer + backbone is exactly C4-invariant (relative logit change < 1e-6, float32 rounding; "
         "backbone alone > 0.1)", "sanity",
         inv_adapted < 1e-6 and inv_backbone > 0.1, {"adapted": inv_adapted, "backbone": inv_backbone}),
        ("with the prior, C4-rotated accuracy recovers >= 80% of the backbone's upright-vs-rotated gap, on every seed",
         "paper", gap_recovered_per_seed.min() >= 0.80,
         {"prior_rotated": acc["prior"], "backbone_upright": bb_up, "backbone_c4_rotated": bb_rot,
          "gap_recovered_per_seed": gap_recovered_per_seed}),
        ("the prior's canonicalizer maps more upright images to the identity than without prior, on every seed",
         "paper", idm["prior"].min() > idm["no prior"].max(), {"prior": idm["prior"], "no_prior": idm["no prior"]}),
    ]
    diff = acc["prior"].mean() - acc["no prior"].mean()
    spread = max(acc["prior"].std(), acc["no prior"].std(), 1e-12) if len(seeds) > 1 else float("inf")
    report.metric("accuracy_prior_minus_no_prior", diff)
    report.metric("accuracy_seed_spread", spread)
    if abs(diff) > spread:
        claims.append(("rotated accuracy: prior >= no prior (the gap exceeds the seed spread, so its sign is asserted)",
                       "paper", diff > 0, {"diff": diff, "spread": spread}))
    rows = []
    for text, kind, holds, value in claims:
        report.claim(text, holds, value=value, kind=kind)
        rows.append({"claim": text, "kind": kind, "numbers": json.dumps(_rounded(value), ensure_ascii=False)[1:-1],
                     "holds": bool(holds)})
    if abs(diff) <= spread:
        print(f"accuracy gap prior - no prior = {diff:+.3f} is within the seed spread ({spread:.3f}): reported, not asserted")
    report.metric("wall_seconds", wall_seconds)
    print(f"this run ({len(seeds)} seeds): identity metric without prior {idm['no prior'].mean():.2f}, "
          f"with prior {idm['prior'].mean():.2f}; C4-rotated accuracy without prior {acc['no prior'].mean():.3f}, "
          f"with prior {acc['prior'].mean():.3f}; the prior recovers {gap_recovered:.0%} of the backbone's gap "
          f"({bb_up:.3f} upright, {bb_rot:.3f} C4-rotated)")
    return pd.DataFrame(rows)
