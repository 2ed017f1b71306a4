"""Pictures for chapter 01 (symmetry breaking): spin rings, node choices, cuts, decoded arrows, and
the widget that moves a symmetric input by a group element and shows what three models answer.

Nothing here trains; the models come in as callables ``x: (B, d_in) -> out: (B, d_out)``.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping

import numpy as np
import torch

__all__ = ["element_label", "draw_answer", "draw_input", "compare_figure", "symmetry_breaking_widget",
           "plot_training", "plot_violations", "plot_answer_distributions", "MODEL_COLORS"]

MODEL_COLORS = {"equivariant": "#4c72b0", "relaxed": "#55a868", "noise": "#dd8452"}


def element_label(group, g: int) -> str:
    """A readable name of element ``g`` (rotations and mirrors for a dihedral group)."""
    n = getattr(group, "n", None)
    if group.name.startswith("D") and n and group.order == 2 * n:
        return f"rotate {360 * g / n:g}°" if g < n else f"mirror #{g - n}"
    if group.name.startswith("C") and n:
        return f"rotate {360 * g / n:g}°"
    return f"element {g}"


def _ring_xy(n: int) -> np.ndarray:
    ang = 2 * np.pi * np.arange(n) / n
    return np.stack([np.cos(ang), np.sin(ang)], -1)


def _petersen_xy() -> np.ndarray:
    outer = [(math.cos(math.pi / 2 + 2 * math.pi * k / 5), math.sin(math.pi / 2 + 2 * math.pi * k / 5)) for k in range(5)]
    inner = [(0.5 * x, 0.5 * y) for x, y in outer]
    return np.array(outer + inner)


def _node_xy(task) -> np.ndarray:
    if task.name == "max_cut":
        n = task.rep_out.dim
        if task.meta.get("graph") == "petersen":
            return _petersen_xy()
        return _ring_xy(n)
    return _ring_xy(task.rep_in.dim)


def _edges(task) -> list[tuple[int, int]]:
    if task.name == "max_cut":
        return [tuple(e) for e in task.meta["edges"].tolist()]
    n = task.rep_in.dim
    return [(i, (i + 1) % n) for i in range(n)]


def draw_input(ax, task, x: torch.Tensor, title: str = "input") -> None:
    """Draw one input ``x: (d_in,)`` of ``task`` on ``ax``."""
    x = x.detach().cpu().double()
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title, fontsize=9)
    if task.name == "decoding":
        ax.set_xlim(-1.3, 1.3)
        ax.set_ylim(-1.3, 1.3)
        n = task.meta["n"]
        for k in range(n):  # the mirror axes of D_n
            a = math.pi * k / n
            ax.plot([-1.2 * math.cos(a), 1.2 * math.cos(a)], [-1.2 * math.sin(a), 1.2 * math.sin(a)], color="0.9", lw=0.8)
        if float(x.norm()) < 1e-9:
            ax.plot([0], [0], "o", color="k")
            ax.text(0, -0.25, "z = 0", ha="center", fontsize=8)
        else:
            ax.annotate("", xy=x.numpy(), xytext=(0, 0), arrowprops=dict(arrowstyle="->", lw=2))
        return
    xy = _node_xy(task)
    edges = _edges(task)
    if task.name == "max_cut":
        w = x.numpy()
        for e, (u, v) in enumerate(edges):
            ax.plot(*xy[[u, v]].T, color="0.3", lw=0.8 + 2.5 * (w[e] - 0.5), zorder=1)
        ax.scatter(*xy.T, s=80, color="0.85", edgecolor="k", zorder=2)
        return
    for u, v in edges:
        ax.plot(*xy[[u, v]].T, color="0.7", lw=1, zorder=1)
    vals = x.numpy()
    lim = max(1e-9, float(np.abs(vals).max()))
    ax.scatter(*xy.T, s=260, c=vals, cmap="PuOr", vmin=-lim, vmax=lim, edgecolor="k", zorder=2)
    for (px, py), v in zip(xy, vals):
        ax.text(px * 1.35, py * 1.35, f"{v:+.2f}", ha="center", va="center", fontsize=7)
    ax.set_xlim(-1.6, 1.6)
    ax.set_ylim(-1.6, 1.6)


def draw_answer(ax, task, out: torch.Tensor, title: str = "", color: str = "k") -> None:
    """Draw one raw model output ``out: (d_out,)`` as the task's answer (spins, node probabilities,
    a cut, an arrow)."""
    out = out.detach().cpu().double()
    ans = task.decode(out.unsqueeze(0))[0].numpy()
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title, fontsize=9, color=color)
    if task.name == "decoding":
        ax.set_xlim(-1.3, 1.3)
        ax.set_ylim(-1.3, 1.3)
        ax.add_patch(__import__("matplotlib").patches.Polygon(ans[[0, 1, 3, 2]], closed=True, alpha=0.35, color=color))
        ax.scatter(*ans.T, color=color, s=18, zorder=3)
        ax.plot([0], [0], "+", color="0.5")
        return
    xy = _node_xy(task)
    edges = _edges(task)
    if task.name in ("spin_ring", "max_cut"):
        for u, v in edges:
            cut = ans[u] * ans[v] < 0
            ax.plot(*xy[[u, v]].T, color="crimson" if (cut and task.name == "max_cut") else "0.7",
                    lw=2 if (cut and task.name == "max_cut") else 1, zorder=1)
        ax.scatter(*xy.T, s=220, c=ans, cmap="coolwarm", vmin=-1, vmax=1, edgecolor="k", zorder=2)
        if task.name == "spin_ring":
            for (px, py), s in zip(xy, ans):  # arrows up/down with the spin's sign and size
                ax.annotate("", xy=(px, py + 0.22 * s), xytext=(px, py - 0.22 * s),
                            arrowprops=dict(arrowstyle="->", lw=1.2), zorder=3)
    else:  # node_pick: probabilities
        for u, v in edges:
            ax.plot(*xy[[u, v]].T, color="0.7", lw=1, zorder=1)
        ax.scatter(*xy.T, s=60 + 700 * ans, c=ans, cmap="Greens", vmin=0, vmax=1, edgecolor="k", zorder=2)
        for (px, py), p in zip(xy, ans):
            ax.text(px * 1.4, py * 1.4, f"{p:.2f}", ha="center", va="center", fontsize=7)
    lim = 1.6 if task.name != "max_cut" else 1.3
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)


def compare_figure(task, models: Mapping[str, Callable], x: torch.Tensor, g: int = 0, fig=None):
    """Input ``g·x`` and the answers of each model side by side (one row). ``x: (d_in,)``."""
    import matplotlib.pyplot as plt

    gx = task.rep_in.act(g, x.double())
    cols = 1 + len(models)
    if fig is None:
        fig = plt.figure(figsize=(2.4 * cols, 2.6))
    axes = fig.subplots(1, cols)
    draw_input(axes[0], task, gx, f"input, {element_label(task.group, g)}")
    for ax, (kind, f) in zip(axes[1:], models.items()):
        with torch.no_grad():
            out = f(gx.unsqueeze(0))[0]
            loss = float(task.loss(out.unsqueeze(0), gx.unsqueeze(0))[0])
        draw_answer(ax, task, out, f"{kind}\nloss {loss:.3f}", MODEL_COLORS.get(kind, "k"))
    return fig


def symmetry_breaking_widget(cases: Mapping[str, tuple], static_elements=(0, 1)):
    """Pick a symmetric input and a group element; see the moved input and each model's answer.

    ``cases``: ``name -> (task, models, x)`` with ``models`` a mapping ``kind -> callable`` and
    ``x: (d_in,)``. Equivariant answers move with the input and stay as symmetric as it; relaxed ones
    move too (up to a symmetry of the input) while breaking its symmetry; noisy ones jump around.
    Without a widget frontend (``SYMVIZ_STATIC=1``) a static figure shows every case under
    ``static_elements``.
    """
    import matplotlib.pyplot as plt

    from symviz.viz.widgets import show

    names = list(cases)
    if not names:
        raise ValueError("cases must hold at least one (task, models, x)")
    for name, case in cases.items():
        if not (isinstance(case, tuple) and len(case) == 3):
            raise ValueError(f"cases[{name!r}] must be a tuple (task, models, x)")

    def static():
        rows = [(name, g) for name in names for g in static_elements]
        ncols = 1 + max(len(cases[name][1]) for name in names)
        fig = plt.figure(figsize=(2.4 * ncols, 2.7 * len(rows)))
        subs = fig.subfigures(len(rows), 1) if len(rows) > 1 else [fig]
        for sf, (name, g) in zip(subs, rows):
            task, models, x = cases[name]
            compare_figure(task, models, x, g, fig=sf)
            sf.suptitle(name, fontsize=9, x=0.02, ha="left")
        return fig

    def widget():
        import ipywidgets as W

        pick = W.Dropdown(options=names, description="input", layout=W.Layout(width="320px"))
        elem = W.Dropdown(description="apply g")
        out = W.Output()

        def set_elements():
            group = cases[pick.value][0].group
            elem.options = [(element_label(group, g), g) for g in group.elements]
            elem.value = 0

        def redraw(change=None):
            task, models, x = cases[pick.value]
            with out:
                out.clear_output(wait=True)
                fig = compare_figure(task, models, x, elem.value if elem.value is not None else 0)
                plt.show()
                plt.close(fig)

        def on_pick(change):
            elem.unobserve(redraw, names="value")
            set_elements()
            elem.observe(redraw, names="value")
            redraw()

        set_elements()
        pick.observe(on_pick, names="value")
        elem.observe(redraw, names="value")
        redraw()
        return W.VBox([W.HBox([pick, elem]), out])

    return show(widget, static)


def plot_training(histories: Mapping[str, list], floor: float, optimum: float, ax=None, title: str = ""):
    """Training loss curves per model kind (``kind -> list of pandas histories``, one per seed), with
    the equivariant floor and the optimum as horizontal lines."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 3))
    for kind, hs in histories.items():
        for i, h in enumerate(hs):
            ax.plot(h["epoch"], h["train_loss"], color=MODEL_COLORS.get(kind, "k"), alpha=0.8,
                    label=kind if i == 0 else None)
    ax.axhline(floor, color="k", ls="--", lw=1, label="equivariant floor (symmetric inputs)")
    ax.axhline(optimum, color="k", ls=":", lw=1, label="optimum (symmetric inputs)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (all inputs)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    return ax


def plot_violations(table, ax=None, column: str = "relaxed_violation", floor_value: float = 1e-17):
    """Bar chart (log scale) of a violation column per task and model kind, averaged over seeds."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3))
    tasks = list(dict.fromkeys(table["task"]))
    kinds = list(dict.fromkeys(table["model"]))
    width = 0.8 / len(kinds)
    for j, kind in enumerate(kinds):
        vals = [max(float(table[(table.task == t) & (table.model == kind)][column].max()), floor_value) for t in tasks]
        ax.bar(np.arange(len(tasks)) + j * width, vals, width, color=MODEL_COLORS.get(kind, "k"), label=kind)
    ax.set_yscale("log")
    ax.set_xticks(np.arange(len(tasks)) + 0.4 - width / 2)
    ax.set_xticklabels(tasks)
    ax.set_ylabel(f"{column.replace('_', ' ')} (max over seeds)")
    ax.legend(fontsize=7)
    return ax


def plot_answer_distributions(dist, task, g: int = 1, ax=None, title: str = ""):
    """Bars of answer probabilities on one symmetric input, from
    :func:`symviz.chapters.ch01_symmetry_breaking.experiments.outcome_distributions`: the noise model at ``x`` and at
    ``g·x`` (answers moved back by ``g⁻¹``), each over its own noise draws, and the relaxed model with ``k`` over
    ``K(x)``. Equal bars mean the answer distribution moves with the input; the whisker on the noise bars spans the
    smallest and largest probability over every ``g ∈ G``."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3))
    answers = list(dict.fromkeys(dist["answer"]))
    pos = np.arange(len(answers))
    table = {m: part.pivot(index="g", columns="answer", values="probability")[answers] for m, part in dist.groupby("model")}
    noise = table["noise"]
    bars = [("noise, at x", noise.loc[0], MODEL_COLORS["noise"], None),
            (f"noise, at g·x moved back ({element_label(task.group, g)})", noise.loc[g], "none", MODEL_COLORS["noise"]),
            ("relaxed, k uniform over K(x)", table["relaxed"].loc[0], MODEL_COLORS["relaxed"], None)]
    width = 0.27
    for j, (label, values, face, edge) in enumerate(bars):
        ax.bar(pos + (j - 1) * width, values.to_numpy(), width, color=face, edgecolor=edge or face, hatch="//" if edge else None,
               label=label)
    lo, hi = noise.min().to_numpy(), noise.max().to_numpy()
    mid = noise.loc[0].to_numpy()
    ax.errorbar(pos - width, mid, yerr=[mid - lo, hi - mid], fmt="none", ecolor="k", capsize=2, lw=0.8,
                label="noise: range over every g")
    ax.set_xticks(pos)
    ax.set_xticklabels(answers, fontsize=7)
    ax.set_ylabel("probability")
    ax.set_ylim(0, 1.45 * float(max(hi.max(), table["relaxed"].to_numpy().max())))   # room for the legend on top
    ax.set_title(title or task.name, fontsize=10)
    ax.legend(fontsize=7, loc="upper center", ncol=2)
    return ax
