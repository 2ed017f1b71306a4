"""Figures for chapter 07 (gradient starvation): decision boundaries, their animation over training,
a spectral-decoupling strength widget, the live coupling toy (sliders for s₁, λ and weight decay),
coloured images and accuracy curves. Nothing here trains a network: the coupling widget calls the
simulation it is given.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from symviz.viz.widgets import show, slider_grid

__all__ = ["plot_boundary", "boundary_animation", "lambda_widget", "draw_coupling", "coupling_widget",
           "plot_colored_examples", "plot_accuracy_curves", "plot_invariance_comparison"]

_RED, _BLUE = "#C82506", "#0365C0"


def _np(t):
    return t.detach().cpu().numpy() if torch.is_tensor(t) else np.asarray(t)


def plot_boundary(ax, xx, yy, z, x, y, title: str = "", margin: float | None = None):
    """Draw ``tanh(logits)`` on the grid, the decision boundary ``f = 0`` and the data on ``ax``.

    Args:
        xx, yy, z: ``(n, n)`` grids from :func:`symviz.chapters.ch07_gradient_starvation.experiments.decision_grid`.
        x: ``(N, 2)``; y: ``(N,)`` in {0, 1}.
    """
    xx, yy, z, x, y = map(_np, (xx, yy, z, x, y))
    ax.contourf(xx, yy, np.tanh(z), levels=np.linspace(-1, 1, 11), cmap="RdBu", alpha=0.75)
    if z.min() < 0 < z.max():
        ax.contour(xx, yy, z, levels=[0.0], colors="k", linewidths=1.5)
    ax.scatter(x[:, 0], x[:, 1], c=np.where(y > 0.5, _BLUE, _RED), edgecolors="k", s=14, linewidths=0.4)
    ax.axvline(0, ls="--", lw=0.7, color="k", alpha=0.5)
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_aspect("equal")
    label = title + (f"\nmargin {margin:.3f}" if margin is not None else "")
    if label:
        ax.set_title(label, fontsize=9)
    return ax


def boundary_animation(snapshots: Mapping[str, Sequence], xx, yy, x, y, title: str = "Decision boundary over training"):
    """A plotly figure with one panel per loss and a slider (and play button) over training steps.

    Args:
        snapshots: ``{name: [(step, logits (n*n,) or (n, n)), ...]}``; every entry has the same steps.
        xx, yy: ``(n, n)`` grid; x: ``(N, 2)``; y: ``(N,)`` in {0, 1}.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names = list(snapshots)
    if not names:
        raise ValueError("snapshots must hold at least one named run")
    steps = [s for s, _ in snapshots[names[0]]]
    for n in names:
        if [s for s, _ in snapshots[n]] != steps:
            raise ValueError("every run in snapshots must have the same snapshot steps")
    xx, yy, x, y = map(_np, (xx, yy, x, y))
    gx, gy = xx[0], yy[:, 0]
    shape = xx.shape
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=names, horizontal_spacing=0.04)

    def traces(k):
        out = []
        for j, n in enumerate(names):
            z = np.tanh(_np(snapshots[n][k][1]).reshape(shape))
            out.append(go.Contour(x=gx, y=gy, z=z, zmin=-1, zmax=1, colorscale="RdBu", showscale=False,
                                  contours=dict(start=-1, end=1, size=0.2), line=dict(width=0.3), opacity=0.8,
                                  showlegend=False))
            # a "constraint" contour draws exactly the level set f = 0 (the decision boundary)
            out.append(go.Contour(x=gx, y=gy, z=z, contours=dict(type="constraint", operation="=", value=0.0),
                                  line=dict(width=2.5, color="black"), fillcolor="rgba(0,0,0,0)", showscale=False,
                                  showlegend=False, hoverinfo="skip"))
        return out

    pts = [go.Scatter(x=x[:, 0], y=x[:, 1], mode="markers", showlegend=False,
                      marker=dict(size=5, color=np.where(y > 0.5, _BLUE, _RED), line=dict(width=0.5, color="black")))
           for _ in names]
    first = traces(0)
    for j in range(len(names)):
        fig.add_trace(first[2 * j], row=1, col=j + 1)
        fig.add_trace(first[2 * j + 1], row=1, col=j + 1)
    for j in range(len(names)):
        fig.add_trace(pts[j], row=1, col=j + 1)
    n_dyn = 2 * len(names)
    fig.frames = [go.Frame(data=traces(k), traces=list(range(n_dyn)), name=str(s)) for k, s in enumerate(steps)]
    fig.update_layout(
        title=title, height=440, width=360 * len(names) + 40, margin=dict(l=10, r=10, t=70, b=10), showlegend=False,
        sliders=[dict(active=0, currentvalue=dict(prefix="step "), pad=dict(t=30),
                      steps=[dict(label=str(s), method="animate",
                                  args=[[str(s)], dict(mode="immediate", frame=dict(duration=0, redraw=True),
                                                       transition=dict(duration=0))]) for s in steps])],
        updatemenus=[dict(type="buttons", showactive=False, x=1.0, y=1.16, xanchor="right", yanchor="top",
                          buttons=[dict(label="play", method="animate",
                                        args=[None, dict(frame=dict(duration=250, redraw=True), fromcurrent=True)])])])
    for j in range(len(names)):
        fig.update_xaxes(showticklabels=False, row=1, col=j + 1)
        fig.update_yaxes(showticklabels=False, row=1, col=j + 1)
    return fig


def lambda_widget(grids: Mapping[float, tuple], x, y, margins: Mapping[float, float] | None = None):
    """A slider over the spectral decoupling strengths ``lam`` that were trained; redraws the boundary.

    Args:
        grids: ``{lam: (xx, yy, logits)}`` (each ``(n, n)``), sorted by ``lam``.
        margins: optional ``{lam: measured margin}`` shown in the title.
    Without a widget frontend, shows the boundaries for every ``lam`` side by side.
    """
    import matplotlib.pyplot as plt

    lams = sorted(grids)
    if not lams:
        raise ValueError("grids must hold at least one lam")
    margins = margins or {}

    def draw(ax, lam):
        plot_boundary(ax, *grids[lam], x, y, title=f"λ = {lam:g}" if lam else "cross-entropy (λ = 0)",
                      margin=margins.get(lam))

    def widget():
        import ipywidgets as W

        out = W.Output()
        slider = W.SelectionSlider(options=[(f"{v:g}", v) for v in lams], value=lams[0],
                                   description="SD strength λ", continuous_update=True,
                                   style={"description_width": "initial"}, layout=W.Layout(width="60%"))

        def redraw(change=None):
            with out:
                out.clear_output(wait=True)
                fig, ax = plt.subplots(figsize=(4.2, 4.2))
                draw(ax, slider.value)
                plt.show()

        slider.observe(redraw, names="value")
        redraw()
        return W.VBox([slider, out])

    return show(widget, lambda: slider_grid(draw, lams))


def draw_coupling(ax, run: Mapping, reference: Mapping | None = None, title: str = ""):
    """Draw the responses ``w1`` (feature 1) and ``w2`` (feature 2) over training on ``ax``.

    Args:
        run: ``{"steps": (T,), "w": (T, 2)}`` (what
            :func:`symviz.chapters.ch07_gradient_starvation.experiments.coupling_toy` returns);
        reference: the same for ``s1 = 1`` (dashed), to see how much a stronger feature 1 changes ``w2``.
    """
    t, w = _np(run["steps"]), _np(run["w"])
    if w.ndim != 2 or w.shape[1] != 2 or len(t) != len(w):
        raise ValueError(f"run['w'] must be (T, 2) with T = len(run['steps']), got {w.shape} and {t.shape}")
    ax.plot(t, w[:, 0], color="#4C72B0", label="w1 (feature 1)")
    ax.plot(t, w[:, 1], color="#C44E52", label="w2 (feature 2)")
    if reference is not None:
        tr, wr = _np(reference["steps"]), _np(reference["w"])
        ax.plot(tr, wr[:, 1], color="#C44E52", ls="--", lw=1, label="w2 if s1 = 1")
    ax.set_xlabel("step"), ax.set_ylabel("response (feature units)")
    ax.legend(fontsize=7, loc="lower right")
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def coupling_widget(simulate, s1: float = 8.0, lam: float = 0.1, weight_decay: float = 0.0):
    """Sliders for the strength ``s1`` of feature 1, the spectral decoupling strength ``lam`` and the weight decay;
    each move re-runs ``simulate(s1, lam=..., weight_decay=...)`` (a cheap linear model, e.g.
    :func:`symviz.chapters.ch07_gradient_starvation.experiments.coupling_toy`) and redraws ``w1``, ``w2``, with
    ``w2`` for ``s1 = 1`` dashed. Without a widget frontend: the figure at the given values."""
    import matplotlib.pyplot as plt

    refs: dict = {}

    def draw(ax, s1_, lam_, wd_):
        key = (round(lam_, 6), round(wd_, 6))
        if key not in refs:   # the s1 = 1 curve depends on lam and weight decay only: compute it once per setting
            refs[key] = simulate(1.0, lam=lam_, weight_decay=wd_)
        run = simulate(s1_, lam=lam_, weight_decay=wd_)
        w2, w2_ref = float(_np(run["w"])[-1, 1]), float(_np(refs[key]["w"])[-1, 1])
        draw_coupling(ax, run, refs[key], title=f"s1 = {s1_:g}, λ = {lam_:g}, weight decay = {wd_:g}\n"
                                                f"final w2 = {w2:.3f} (s1 = 1: {w2_ref:.3f})")

    def static():
        fig, ax = plt.subplots(figsize=(6, 3.4))
        draw(ax, s1, lam, weight_decay)
        fig.tight_layout()
        return fig

    def widget():
        import ipywidgets as W

        out = W.Output()
        style = {"description_width": "initial"}
        s1_slider = W.FloatSlider(value=s1, min=1.0, max=8.0, step=0.5, description="strength s1",
                                  continuous_update=False, style=style)
        lam_slider = W.FloatSlider(value=lam, min=0.0, max=0.3, step=0.01, description="SD λ",
                                   continuous_update=False, style=style)
        wd_slider = W.FloatSlider(value=weight_decay, min=0.0, max=0.3, step=0.01, description="weight decay",
                                  continuous_update=False, style=style)

        def redraw(change=None):
            with out:
                out.clear_output(wait=True)
                fig, ax = plt.subplots(figsize=(6, 3.4))
                draw(ax, s1_slider.value, lam_slider.value, wd_slider.value)
                fig.tight_layout()
                plt.show()

        for sl in (s1_slider, lam_slider, wd_slider):
            sl.observe(redraw, names="value")
        redraw()
        return W.VBox([W.HBox([s1_slider, lam_slider, wd_slider]), out])

    return show(widget, static)


def plot_colored_examples(x: torch.Tensor, y: torch.Tensor, n: int = 8, title: str = ""):
    """Show ``n`` two-channel images (``(N, 2, H, W)``) as red/green pictures with their labels."""
    import matplotlib.pyplot as plt

    if x.ndim != 4 or x.shape[1] != 2:
        raise ValueError(f"x must be (N, 2, H, W), got {tuple(x.shape)}")
    n = min(n, len(x))
    fig, axes = plt.subplots(1, n, figsize=(1.3 * n, 1.6))
    for i, ax in enumerate(np.atleast_1d(axes)):
        img = np.zeros((*x.shape[2:], 3))
        img[..., 0], img[..., 1] = _np(x[i, 0]), _np(x[i, 1])
        ax.imshow(img / max(img.max(), 1e-8))
        ax.set_title(f"y={int(y[i])}", fontsize=8)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_accuracy_curves(histories: Mapping[str, "object"], anneal: int | None = None, title: str = ""):
    """Train (dashed) and test (solid) accuracy over steps for each named history (pandas frames)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.0, 3.4))
    for i, (name, h) in enumerate(histories.items()):
        c = f"C{i}"
        ax.plot(h["step"], h["test_acc"], color=c, label=f"{name} test")
        ax.plot(h["step"], h["train_acc"], color=c, ls="--", alpha=0.7, label=f"{name} train")
    if anneal:
        ax.axvline(anneal, color="k", lw=0.8, ls=":")
        ax.text(anneal, 0.02, " switch", fontsize=8)
    ax.axhline(0.5, color="gray", lw=0.5)
    ax.set_xlabel("step"), ax.set_ylabel("accuracy"), ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_invariance_comparison(colour, sensitivity: Mapping[str, float], methods: Sequence[str],
                               test_color_agreement: float | None = None, title: str = ""):
    """Two panels: test accuracy of each method on every seed (dots; bar = mean), and how much each method's
    prediction moves when the colours are swapped (:func:`~symviz.chapters.ch07_gradient_starvation.experiments.swap_sensitivity`,
    first seed). Returns the matplotlib figure.

    Args:
        colour: DataFrame with columns ``seed, method, test_acc``; methods: the methods to show, in order;
        sensitivity: ``{method: value}`` (methods missing from it get no bar);
        test_color_agreement: drawn as a dashed line (the accuracy of predicting by colour alone at test).
    """
    import matplotlib.pyplot as plt

    if not {"seed", "method", "test_acc"} <= set(getattr(colour, "columns", ())):
        raise ValueError("colour must be a DataFrame with the columns 'seed', 'method' and 'test_acc'")
    missing = [m for m in methods if m not in set(colour["method"])]
    if missing:
        raise ValueError(f"no rows for the methods {missing} in colour (it has {sorted(set(colour['method']))})")
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 3.6))
    cmap = plt.get_cmap("tab10")
    for k, m in enumerate(methods):
        acc = colour[colour["method"] == m]["test_acc"].to_numpy(dtype=float)
        ax.scatter(np.full(len(acc), k), acc, color=cmap(k), s=30, zorder=3)
        ax.hlines(acc.mean(), k - 0.3, k + 0.3, color="k")
    if test_color_agreement is not None:
        ax.axhline(test_color_agreement, color="gray", ls="--", lw=0.8, label="predict by colour alone")
        ax.legend(fontsize=8, loc="upper left")
    ax.set_xticks(range(len(methods)), methods, rotation=20, fontsize=8)
    ax.set(ylabel="test accuracy (colour flipped)", ylim=(0, 1), title="OOD test accuracy, every seed")
    names = [m for m in methods if m in sensitivity]
    bx.bar(range(len(names)), [sensitivity[m] for m in names], color=[cmap(methods.index(m)) for m in names])
    bx.set_xticks(range(len(names)), names, rotation=20, fontsize=8)
    bx.set(ylabel="mean |p(x) - p(swap x)|", title="how much the colour swap moves the prediction")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
