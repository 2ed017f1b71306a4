"""Figures for chapter 06 (screening for large magnetic moments). Nothing here trains a model.

* :func:`parity_plots`: predicted vs true moment, one panel per model (matplotlib).
* :func:`importance_chart`: the descriptors kept by stochastic selection (matplotlib).
* :func:`candidates_scatter`: the screened pool, random forest vs graph network, coloured by their
  disagreement (plotly, hover for the formula).
* :func:`candidate_explorer`: choose a top candidate and see its crystal with sites coloured by their
  magnetic moment (ipywidgets + nglview; a static figure under ``SYMVIZ_STATIC=1``).
* :func:`screening_explorer`: move the screen size ``k`` and the disagreement threshold and see what the screen
  finds and which candidates it flags (ipywidgets; a static figure under ``SYMVIZ_STATIC=1``).
* :func:`two_stage_figure`: the held-out two-stage screen: stage 1's probabilities, the three-model spread
  against the actual error, and how often the error bar covers the truth (matplotlib).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from symviz.viz.widgets import show

__all__ = ["parity_plots", "importance_chart", "candidates_scatter", "moment_colors", "candidate_explorer",
           "draw_screening", "screening_explorer", "two_stage_figure"]


def parity_plots(y_true: Sequence[float], predictions: dict[str, Sequence[float]], unit: str = "μB/atom",
                 size: float = 3.0):
    """One parity panel per model: predicted vs true, the diagonal, and the MAE in the title."""
    import matplotlib.pyplot as plt

    y = np.asarray(y_true, dtype=float)
    if not predictions:
        raise ValueError("parity_plots: predictions must map model name -> predicted values")
    fig, axes = plt.subplots(1, len(predictions), figsize=(size * len(predictions), size), squeeze=False,
                             sharex=True, sharey=True)
    hi = max(float(y.max()), max(float(np.max(p)) for p in predictions.values())) * 1.05
    for ax, (name, p) in zip(axes[0], predictions.items()):
        p = np.asarray(p, dtype=float)
        if p.shape != y.shape:
            raise ValueError(f"parity_plots: {name} has {p.size} predictions for {y.size} labels")
        ax.plot([0, hi], [0, hi], color="#999", lw=1)
        ax.scatter(y, p, s=10, alpha=0.6)
        ax.set_title(f"{name}\nMAE {np.mean(np.abs(p - y)):.3f} {unit}", fontsize=9)
        ax.set_xlabel(f"CHGNet moment ({unit})", fontsize=8)
        ax.set_xlim(0, hi), ax.set_ylim(0, hi)
    axes[0, 0].set_ylabel(f"predicted ({unit})", fontsize=8)
    fig.tight_layout()
    return fig


def importance_chart(names: Sequence[str], scores: Sequence[float], top: int = 20, title: str | None = None):
    """Horizontal bar chart of the ``top`` descriptors by score."""
    import matplotlib.pyplot as plt

    names, scores = list(names)[:top], np.asarray(scores, dtype=float)[:top]
    fig, ax = plt.subplots(figsize=(6, 0.25 * len(names) + 1))
    ax.barh(range(len(names))[::-1], scores, color="#4C72B0")
    ax.set_yticks(range(len(names))[::-1], names, fontsize=8)
    ax.set_xlabel("selection score (importance × how well its subsets predicted)")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def candidates_scatter(table, x: str = "random forest", y: str = "CGCNN", color: str = "disagreement",
                       hover: Sequence[str] = ("id", "formula", "truth"), top: int | None = None):
    """A plotly scatter of the screened pool: two models' predictions, coloured by their disagreement.

    ``table`` is a DataFrame (e.g. from :func:`symviz.chapters.ch06_magnetic_screening.screening.rank_candidates` with a
    ``formula`` column added); the ``top`` rows (ranked) are drawn as stars.
    """
    import plotly.graph_objects as go

    for col in (x, y, color):
        if col not in table:
            raise ValueError(f"candidates_scatter: table has no column {col!r}; columns: {list(table.columns)}")
    hover = [h for h in hover if h in table]
    text = ["<br>".join(f"{h}: {row[h]:.2f}" if isinstance(row[h], float) else f"{h}: {row[h]}" for h in hover)
            for _, row in table.iterrows()]
    symbols = ["star" if (top is not None and i < top) else "circle" for i in range(len(table))]
    fig = go.Figure(go.Scatter(
        x=table[x], y=table[y], mode="markers", text=text, hoverinfo="text", showlegend=False,
        marker=dict(color=table[color], colorscale="Viridis", showscale=True, size=9, symbol=symbols,
                    colorbar=dict(title=color), line=dict(width=0.5, color="#333"))))
    hi = float(max(table[x].max(), table[y].max())) * 1.05
    fig.add_trace(go.Scatter(x=[0, hi], y=[0, hi], mode="lines", line=dict(color="#aaa", dash="dot"),
                             hoverinfo="skip", showlegend=False))
    fig.update_layout(xaxis_title=f"{x} prediction (μB/atom)", yaxis_title=f"{y} prediction (μB/atom)",
                      height=460, width=620, margin=dict(l=40, r=20, t=40, b=40),
                      title="Screened pool (stars: top candidates)")
    return fig


def moment_colors(moments: Sequence[float], vmax: float | None = None, cmap: str = "viridis") -> list[str]:
    """Hex colours for site moments (0 -> dark, ``vmax`` -> bright).

    >>> moment_colors([0.0, 2.0], vmax=2.0)
    ['#440154', '#fde725']
    """
    import matplotlib

    m = np.abs(np.asarray(moments, dtype=float))
    vmax = float(vmax if vmax is not None else max(m.max(), 1e-9))
    cm = matplotlib.colormaps[cmap]
    return [matplotlib.colors.to_hex(cm(min(v / vmax, 1.0))) for v in m]


def candidate_explorer(table, structures: dict, site_moments: dict, vmax: float | None = None):
    """Choose a candidate from ``table`` (ranked DataFrame with ``id``) and view it, sites coloured by moment.

    ``structures`` and ``site_moments`` map id -> pymatgen Structure / per-site moments (μB).
    Without a widget frontend: a static picture of the top candidate.
    """
    from symviz.viz.molecules import static_atoms_figure, to_atoms

    ids = list(table["id"])
    if not ids:
        raise ValueError("candidate_explorer: the table is empty")
    for i in ids:
        if i not in structures or i not in site_moments:
            raise ValueError(f"candidate_explorer: no structure or site moments for candidate {i!r}")
    vmax = vmax or max(float(np.max(site_moments[i])) for i in ids)

    def label(i):
        row = table[table["id"] == i].iloc[0]
        f = structures[i].composition.reduced_formula
        return f"{f}: predicted {row['mean_prediction']:.2f} ± {row['disagreement']:.2f} μB/atom"

    def static():
        i = ids[0]
        return static_atoms_figure(to_atoms(structures[i]), moment_colors(site_moments[i], vmax), title=label(i))

    def widget():
        import ipywidgets as W

        from symviz.viz.molecules import view_structure

        out = W.Output()
        pick = W.Dropdown(options=[(label(i), i) for i in ids], description="candidate",
                          layout=W.Layout(width="90%"))

        def redraw(change=None):
            with out:
                out.clear_output(wait=True)
                i = pick.value
                m = np.asarray(site_moments[i], dtype=float)
                print("site moments (μB):", ", ".join(f"{s.specie.symbol} {v:.2f}" for s, v in zip(structures[i], m)))
                view_structure(structures[i], colors=moment_colors(m, vmax), supercell=(2, 2, 2))

        pick.observe(redraw, names="value")
        redraw()
        return W.VBox([pick, out])

    return show(widget, static)


def draw_screening(fig, y_true, predictions: dict, disagreement, k: int, threshold: float, ranked_by: str,
                   curves: dict | None = None):
    """Draw the screening decision on ``fig`` (cleared): left, recall@k against ``k`` for each model and for random
    picking, with the chosen ``k`` marked; right, the candidates ranked by ``ranked_by``: true vs predicted moment,
    the top ``k`` highlighted and those whose ``disagreement`` exceeds ``threshold`` flagged (the candidates to
    distrust, or to compute first). Returns what the right panel shows, as a dict of numbers."""
    from symviz.chapters.ch06_magnetic_screening.screening import recall_curve

    y = np.asarray(y_true, dtype=float)
    dis = np.asarray(disagreement, dtype=float)
    n = y.size
    if ranked_by not in predictions:
        raise ValueError(f"draw_screening: ranked_by must be one of {list(predictions)}, got {ranked_by!r}")
    if dis.shape != y.shape:
        raise ValueError(f"draw_screening: disagreement has {dis.size} values for {n} materials")
    if not (isinstance(k, (int, np.integer)) and 1 <= k <= n):
        raise ValueError(f"draw_screening: k must be an int in 1..{n}, got {k!r}")
    ks = np.arange(1, n + 1)
    curves = curves if curves is not None else {name: recall_curve(y, p) for name, p in predictions.items()}
    fig.clear()
    left, right = fig.subplots(1, 2)
    for name, c in curves.items():
        left.plot(ks, c, lw=1.8 if name == ranked_by else 1.0, label=name)
    left.plot(ks, ks / n, color="#999", ls="--", label="random")
    left.axvline(k, color="k", lw=0.8)
    left.set_xlabel("screen size k"), left.set_ylabel("recall@k"), left.set_ylim(0, 1.02)
    left.legend(fontsize=7, loc="lower right")
    p = np.asarray(predictions[ranked_by], dtype=float)
    top = np.argsort(-p, kind="stable")[:k]
    found = np.isin(top, np.argsort(-y, kind="stable")[:k])
    flagged = dis[top] > threshold
    err = np.abs(p[top] - y[top])
    right.scatter(y, p, s=8, color="#ccc", label="pool")
    right.scatter(y[top][~flagged], p[top][~flagged], s=18, color="#4C72B0", label="top k, models agree")
    right.scatter(y[top][flagged], p[top][flagged], s=30, marker="x", color="#C44E52",
                  label=f"top k, disagreement > {threshold:.2f}")
    hi = max(y.max(), p.max()) * 1.05
    right.plot([0, hi], [0, hi], color="#999", lw=0.8)
    right.set_xlabel("true moment (μB/atom)"), right.set_ylabel(f"{ranked_by} (μB/atom)")
    right.legend(fontsize=7, loc="upper left")
    info = {"k": int(k), "found": int(found.sum()), "flagged": int(flagged.sum()),
            "error_flagged": float(err[flagged].mean()) if flagged.any() else float("nan"),
            "error_kept": float(err[~flagged].mean()) if (~flagged).any() else float("nan")}
    right.set_title(f"top {k}: {info['found']} truly in the top {k}; {info['flagged']} flagged\n"
                    f"mean error flagged {info['error_flagged']:.2f}, kept {info['error_kept']:.2f} μB/atom", fontsize=9)
    fig.tight_layout()
    return info


def screening_explorer(y_true, predictions: dict, disagreement, k: int, threshold: float | None = None,
                       ranked_by: str = "RF + CGCNN average"):
    """Sliders for the screen size ``k`` and the disagreement threshold; redraws :func:`draw_screening` (no model
    is retrained: the out-of-fold predictions are re-ranked). Without a widget frontend: the figure at ``k`` and
    ``threshold`` (default: the 75th percentile of the disagreement)."""
    import matplotlib.pyplot as plt

    from symviz.chapters.ch06_magnetic_screening.screening import recall_curve

    y = np.asarray(y_true, dtype=float)
    dis = np.asarray(disagreement, dtype=float)
    threshold = float(np.quantile(dis, 0.75)) if threshold is None else float(threshold)
    curves = {name: recall_curve(y, p) for name, p in predictions.items()}   # once: the sliders only re-draw

    def static():
        fig = plt.figure(figsize=(10, 3.8))
        draw_screening(fig, y, predictions, dis, k, threshold, ranked_by, curves)
        return fig

    def widget():
        import ipywidgets as W

        out = W.Output()
        k_slider = W.IntSlider(value=k, min=1, max=max(2, y.size // 2), description="screen size k",
                               continuous_update=False, style={"description_width": "initial"})
        t_slider = W.FloatSlider(value=threshold, min=0.0, max=float(np.round(dis.max(), 2)), step=0.01,
                                 description="flag disagreement above", continuous_update=False,
                                 style={"description_width": "initial"}, layout=W.Layout(width="50%"))

        def redraw(change=None):
            with out:
                out.clear_output(wait=True)
                fig = plt.figure(figsize=(10, 3.8))
                draw_screening(fig, y, predictions, dis, k_slider.value, t_slider.value, ranked_by, curves)
                plt.show()

        k_slider.observe(redraw, names="value")
        t_slider.observe(redraw, names="value")
        redraw()
        return W.VBox([W.HBox([k_slider, t_slider]), out])

    return show(widget, static)


def two_stage_figure(y_true: Sequence[float], p_magnetic: Sequence[float], moment: Sequence[float],
                     spread: Sequence[float], selected: Sequence[int], threshold: float, large: float,
                     ks: Sequence[float] = (0.5, 1, 1.5, 2, 2.5, 3)):
    """Four panels on a held-out pool: (a) stage 1, P(magnetic) against the true moment; (b) stage 2, the
    predicted moment with its three-model error bar against the truth, the screened candidates in red; (c) the
    spread against the actual error, every held-out crystal; (d) the fraction of stage-1 candidates whose true
    moment lies within k spreads, against a Gaussian error bar of the right size.
    """
    import matplotlib.pyplot as plt
    from math import erf, sqrt

    y, p, m, s = (np.asarray(v, dtype=float).reshape(-1) for v in (y_true, p_magnetic, moment, spread))
    if not (y.shape == p.shape == m.shape == s.shape):
        raise ValueError(f"two_stage_figure: y_true, p_magnetic, moment and spread need the same length, got "
                         f"{y.size}, {p.size}, {m.size}, {s.size}")
    sel = np.asarray(selected, dtype=int).reshape(-1)
    if sel.size and (sel.min() < 0 or sel.max() >= y.size):
        raise ValueError(f"two_stage_figure: selected holds indices outside 0..{y.size - 1}")
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.4))
    ax = axes[0]
    mag = y > threshold
    ax.scatter(y[mag], p[mag], s=12, alpha=0.6, label="magnetic (label)", color="#4C72B0")
    ax.scatter(y[~mag], p[~mag], s=12, alpha=0.8, label="not magnetic (label)", color="#C44E52", marker="x")
    ax.axhline(0.5, color="#999", lw=1, ls="--")
    ax.set_xscale("symlog", linthresh=0.1)
    ax.set_xlabel("true moment (μB/atom)"), ax.set_ylabel("P(magnetic), mean of 3 models")
    ax.set_title("stage 1: is it magnetic?", fontsize=9), ax.legend(fontsize=7, loc="lower right")
    ax = axes[1]
    cand = p >= 0.5
    hi = max(float(y.max()), float((m + s).max())) * 1.05
    ax.plot([0, hi], [0, hi], color="#999", lw=1)
    ax.axhline(large, color="#DD8452", lw=1, ls=":"), ax.axvline(large, color="#DD8452", lw=1, ls=":")
    ax.errorbar(y[cand], m[cand], yerr=s[cand], fmt="o", ms=3, alpha=0.5, color="#4C72B0", elinewidth=0.8,
                label="passed stage 1 (± spread)")
    if sel.size:
        ax.errorbar(y[sel], m[sel], yerr=s[sel], fmt="o", ms=4, color="#C44E52", elinewidth=1, label="screened top k")
    ax.set_xlabel("true moment (μB/atom)"), ax.set_ylabel("predicted moment (mean of 3)")
    ax.set_title("stage 2: how large? (dotted: 'large')", fontsize=9), ax.legend(fontsize=7, loc="upper left")
    ax = axes[2]
    err_all = np.abs(y - m)
    ax.scatter(s[cand], err_all[cand], s=10, alpha=0.6, color="#4C72B0", label="passed stage 1")
    ax.scatter(s[~cand], err_all[~cand], s=12, alpha=0.8, color="#C44E52", marker="x", label="rejected by stage 1")
    top = float(max(s.max(), err_all.max(), 1e-3)) * 1.05
    ax.plot([0, top], [0, top], color="#999", lw=1, ls="--")
    ax.set_xlabel("spread of the 3 models (μB/atom)"), ax.set_ylabel("actual error of their mean")
    ax.set_title("does the spread rank the error? (dashed: error = spread)", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    ax = axes[3]
    err = np.abs(y[cand] - m[cand])
    got = [float(np.mean(err <= k * s[cand])) if cand.any() else 0.0 for k in ks]
    ideal = [erf(k / sqrt(2)) for k in ks]
    ax.plot(ks, ideal, "k--", lw=1, label="Gaussian error bar of the right size")
    ax.plot(ks, got, "o-", color="#55A868", label="three-model spread")
    ax.set_ylim(0, 1.02), ax.set_xlabel("k (error bar = k × spread)"), ax.set_ylabel("fraction covered")
    ax.set_title("is the spread an honest error bar?", fontsize=9), ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig
