"""The Result cell of chapter 02 (learned canonicalization): record what the run measured and state its claims.

:func:`conclude` takes the per-seed numbers the notebook computed, records them as metrics through
:mod:`symviz.report` (``report.start`` must have been called), states the chapter's claims (kind ``"paper"``:
the paper's empirical claims, against baselines trained in the same run, on every seed or on the mean over seeds;
kind ``"sanity"``: exact invariance, which holds by construction) and returns the claims as a small table.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

__all__ = ["conclude"]


def _numbers(value) -> str:
    """A claim's value as a short line: ``name: x`` per entry, lists of per-seed numbers rounded."""
    def fmt(v):
        if isinstance(v, (list, tuple, np.ndarray)):
            return "[" + ", ".join(fmt(u) for u in v) + "]"
        v = float(v)
        return f"{v:.3g}" if abs(v) < 1e-3 and v != 0 else f"{v:.3f}"
    if isinstance(value, Mapping):
        return "; ".join(f"{k}: {fmt(v)}" for k, v in value.items())
    return fmt(value)


def _beats(low: Sequence[float], high: Sequence[float]) -> bool:
    """``low`` below ``high`` on every seed, and the mean gap larger than the two seed spreads (std) together."""
    low, high = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    return bool(len(low) == len(high) > 0 and (low < high).all() and high.mean() - low.mean() > low.std() + high.std())


def _conclude_nbody(nbody_mse, nbody_equiv, nbody_seeds, group, paper_mse):
    """Metrics and claims of the N-body section; returns the claims as (text, kind, holds, value) tuples."""
    from symviz import report

    needed = ("gnn", "pca_gnn", "fa_gnn", "learned", "egnn")
    missing = [k for k in needed if k not in nbody_mse]
    if missing:
        raise ValueError(f"conclude: nbody_mse lacks {missing}")
    if any(len(nbody_mse[k]) != len(nbody_seeds) for k in nbody_mse):
        raise ValueError(f"conclude: every N-body model needs one test MSE per seed ({len(nbody_seeds)} seeds)")
    if any(k not in nbody_equiv for k in ("gnn", "learned")):
        raise ValueError("conclude: nbody_equiv needs the equivariance errors of 'gnn' and 'learned'")
    for k, v in nbody_mse.items():
        report.metric(f"nbody_mse_{k}_per_seed", list(map(float, v)))
        report.metric(f"nbody_mse_{k}_mean", float(np.mean(v)))
    for k, v in nbody_equiv.items():
        report.metric(f"nbody_equivariance_error_{k}", float(v))
    report.metric("nbody_seeds", list(nbody_seeds))
    report.metric("nbody_group", group)
    if paper_mse:
        report.metric("nbody_paper_mse_reference", dict(paper_mse))
    m = {k: list(map(float, v)) for k, v in nbody_mse.items()}
    gate = "on every seed, by more than the seed spread"
    claims = [
        (f"N-body: the learned {group} canonicalization makes the GNN exactly {'E' if group == 'O(3)' else 'SE'}(3)xS_n-"
         "equivariant (float64) while the plain GNN is not", "sanity",
         nbody_equiv["learned"] <= 1e-9 and nbody_equiv["gnn"] > 1e3 * max(nbody_equiv["learned"], 1e-12),
         {"learned": nbody_equiv["learned"], "gnn": nbody_equiv["gnn"]}),
        (f"N-body: frame averaging over PCA frames (the heuristic) beats the plain GNN {gate}", "paper",
         _beats(m["fa_gnn"], m["gnn"]), {"fa_gnn": m["fa_gnn"], "gnn": m["gnn"]}),
        (f"N-body: EGNN (equivariant by design) beats the plain GNN {gate}", "paper",
         _beats(m["egnn"], m["gnn"]), {"egnn": m["egnn"], "gnn": m["gnn"]}),
    ]
    # the paper's headline (learned < frame averaging and < plain GNN) is measured and printed, asserted only where it holds
    for base in ("fa_gnn", "gnn", "pca_gnn"):
        holds = _beats(m["learned"], m[base])
        report.metric(f"nbody_learned_beats_{base}", holds)
        wins = sum(a < b for a, b in zip(m["learned"], m[base]))
        print(f"N-body, learned vs {base} (reported, not asserted): test MSE {np.mean(m['learned']):.4f} vs "
              f"{np.mean(m[base]):.4f}; learned lower on {wins} of {len(m['learned'])} seeds"
              f"{', beyond the seed spread' if holds else ''}")
    return claims


def conclude(image_acc: Mapping[str, Sequence[float]], image_inv: Mapping[str, Sequence[float]],
             pts_acc: Mapping[str, Sequence[float]], pts_inv: Mapping[str, Sequence[float]],
             spread: Mapping[str, float], *, seeds: Sequence[int], dataset: str,
             nbody_mse: Mapping[str, Sequence[float]] | None = None, nbody_equiv: Mapping[str, float] | None = None,
             nbody_seeds: Sequence[int] | None = None, nbody_group: str = "O(3)",
             paper_mse: Mapping[str, float] | None = None, jumps: Mapping[str, float] | None = None):
    """Record chapter 02's metrics and claims; return the claims as a table (claim, kind, numbers, holds).

    Args:
        image_acc, image_inv: per image model (``cnn``, ``cnn_augmented``, ``moments``, ``learned``, ``p4cnn``)
            the rotated-test accuracy and the relative C4 invariance error, one entry per seed.
        pts_acc, pts_inv: per point-set model (``pointnet``, ``pca``, ``learned``) the accuracy and the float64
            SE(3)xS_n invariance error, one entry per seed.
        spread: pose spread (degrees) of one class's samples behind the ``learned`` and ``PCA`` frames.
        seeds: the seeds of the runs; dataset: the image data's name.
        nbody_mse: per N-body model (``gnn``, ``pca_gnn``, ``fa_gnn``, ``learned``, ``egnn``) the test MSE per seed of
            ``nbody_seeds``; nbody_equiv: the float64 equivariance error of each (``gnn`` and ``learned`` at least);
            nbody_group: the frames' group; paper_mse: the MSEs the papers report (recorded, never compared).
        jumps: ``image_c4_jump_deg`` and ``frame_jump_deg``: how far the learned canonicalizers' choices move between
            the two inputs just left and right of a symmetric input on a half-turn path.
    """
    import pandas as pd

    from symviz import report

    needed = {"image_acc": (image_acc, ("cnn", "cnn_augmented", "moments", "learned")),
              "image_inv": (image_inv, ("cnn", "learned")), "pts_acc": (pts_acc, ("pointnet", "pca", "learned")),
              "pts_inv": (pts_inv, ("pointnet", "learned")), "spread": (spread, ("learned", "PCA"))}
    for name, (table, keys) in needed.items():
        missing = [k for k in keys if k not in table]
        if missing:
            raise ValueError(f"conclude: {name} lacks {missing}")
    if any(len(image_acc[k]) != len(seeds) for k in image_acc) or any(len(pts_acc[k]) != len(seeds) for k in pts_acc):
        raise ValueError(f"conclude: every model needs one accuracy per seed ({len(seeds)} seeds)")

    mean = lambda v: float(np.mean(v))  # noqa: E731
    for k in image_acc:
        report.metric(f"img_acc_{k}_mean", mean(image_acc[k]))
        report.metric(f"img_acc_{k}_std", float(np.std(image_acc[k])))
        report.metric(f"img_acc_{k}_per_seed", list(image_acc[k]))
        report.metric(f"img_c4_invariance_error_{k}", max(image_inv[k]))
    for k in pts_acc:
        report.metric(f"pts_acc_{k}_mean", mean(pts_acc[k]))
        report.metric(f"pts_acc_{k}_per_seed", list(pts_acc[k]))
        report.metric(f"pts_invariance_error_{k}", max(pts_inv[k]))
    report.metric("pts_pose_spread_deg", dict(spread))
    report.metric("seeds", list(seeds))
    report.metric("dataset", dataset)
    diff = np.array(image_acc["learned"]) - np.array(image_acc["moments"])
    report.metric("img_learned_minus_moments_per_seed", diff.tolist())

    claims = [
        ("learned C4 canonicalization is invariant to rot90 (float32) while the plain CNN is not", "sanity",
         max(image_inv["learned"]) <= 1e-6 and min(image_inv["cnn"]) > 1e3 * max(max(image_inv["learned"]), 1e-9),
         {"learned": max(image_inv["learned"]), "cnn": min(image_inv["cnn"])}),
        ("learned SO(3) canonicalization is SE(3)xS_n-invariant in float64 while PointNet is not", "sanity",
         max(pts_inv["learned"]) <= 1e-8 and min(pts_inv["pointnet"]) > 1e3 * max(max(pts_inv["learned"]), 1e-12),
         {"learned": max(pts_inv["learned"]), "pointnet": min(pts_inv["pointnet"])}),
        ("images: learned canonicalization beats the plain CNN on rotated test images on every seed", "paper",
         all(a > b for a, b in zip(image_acc["learned"], image_acc["cnn"])),
         {"learned": list(image_acc["learned"]), "cnn": list(image_acc["cnn"])}),
        ("3D: learned canonicalization beats PCA frames and plain PointNet on every seed", "paper",
         all(a > max(p, q) for a, p, q in zip(pts_acc["learned"], pts_acc["pca"], pts_acc["pointnet"])),
         {"learned": list(pts_acc["learned"]), "pca": list(pts_acc["pca"]), "pointnet": list(pts_acc["pointnet"])}),
        ("3D: learned frames pose samples of one class more consistently than PCA frames", "paper",
         spread["learned"] < spread["PCA"], dict(spread)),
        ("images: learned canonicalization beats the plain CNN with rotation augmentation on average over seeds",
         "paper", mean(image_acc["learned"]) > mean(image_acc["cnn_augmented"]),
         {"learned": mean(image_acc["learned"]), "cnn_augmented": mean(image_acc["cnn_augmented"])}),
    ]
    if nbody_mse is not None:
        if nbody_equiv is None or nbody_seeds is None:
            raise ValueError("conclude: nbody_mse needs nbody_equiv and nbody_seeds as well")
        claims += _conclude_nbody(nbody_mse, nbody_equiv, nbody_seeds, nbody_group, paper_mse)
    if jumps is not None:
        missing = [k for k in ("image_c4_jump_deg", "frame_jump_deg") if k not in jumps]
        if missing:
            raise ValueError(f"conclude: jumps lacks {missing}")
        for k, v in jumps.items():
            report.metric(f"symmetric_input_{k}", float(v))
        claims.append(("symmetric inputs: crossing an input with a half-turn symmetry, the learned canonicalizers' "
                       "choices jump by a half turn (C4 images: 180°; SO(3) frames: > 179°)", "sanity",
                       abs(jumps["image_c4_jump_deg"] - 180.0) < 1e-9 and jumps["frame_jump_deg"] > 179.0, dict(jumps)))
    rows = []
    for text, kind, holds, value in claims:
        report.claim(text, holds, value=value, kind=kind)
        rows.append({"claim": text, "kind": kind, "numbers": _numbers(value), "holds": bool(holds)})
    # learned vs the image-moment heuristic is not decided on images at these sizes: measured, not asserted
    wins = int((diff > 0).sum())
    print(f"images, learned minus moments heuristic (reported, not asserted): {diff.mean():+.3f} ± {diff.std():.3f} "
          f"(learned ahead on {wins} of {len(diff)} seeds)")
    return pd.DataFrame(rows)
