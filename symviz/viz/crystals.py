"""Pictures for chapter 05: supercells coloured by orbit or by a per-site quantity, the "apply a symmetry
operation" widget, and learning curves. Nothing here trains anything.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from symviz.viz.scenes import cell_edges
from symviz.viz.widgets import show

__all__ = ["orbit_colors", "site_figure", "draw_sites", "symmetry_operation_widget", "learning_curve_figure"]

_PALETTE = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C",
            "#CCB974", "#64B5CD", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]


def orbit_colors(labels: Sequence[int]) -> list[str]:
    """One hex colour per site from integer orbit labels (cycling through 16 colours).

    >>> orbit_colors([0, 1, 0])
    ['#4C72B0', '#DD8452', '#4C72B0']
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"orbit_colors: labels must be a 1-D array of ints, got {labels.dtype} {labels.shape}")
    return [_PALETTE[int(v) % len(_PALETTE)] for v in labels]


def draw_sites(ax, positions: np.ndarray, values: Sequence[float] | None = None, colors: Sequence | None = None,
               cmap: str = "coolwarm", vmin: float | None = None, vmax: float | None = None, title: str | None = None,
               cell: np.ndarray | None = None, size: float = 60.0):
    """Scatter ``positions: (n, 3)`` on a 3-D matplotlib axis, coloured by ``values`` (a colormap) or ``colors``."""
    pos = np.asarray(positions, dtype=float)
    if pos.ndim != 2 or pos.shape[1] != 3:
        raise ValueError(f"draw_sites: positions must be (n, 3), got {pos.shape}")
    kw = {}
    if values is not None:
        kw = dict(c=np.asarray(values, dtype=float), cmap=cmap, vmin=vmin, vmax=vmax)
    elif colors is not None:
        kw = dict(c=list(colors))
    sc = ax.scatter(pos[:, 0], pos[:, 1], pos[:, 2], s=size, edgecolors="k", linewidths=0.4, depthshade=False, **kw)
    if cell is not None:
        for a, b in cell_edges(np.asarray(cell, dtype=float)):
            ax.plot(*zip(a, b), color="#999", lw=0.6)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    return sc


def site_figure(atoms: Any, values: Sequence[float] | None = None, colors: Sequence | None = None,
                title: str | None = None, cmap: str = "coolwarm"):
    """A 3-D picture of a supercell (ase ``Atoms``) coloured by ``values`` or ``colors``."""
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(4.0, 4.0))
    ax = fig.add_subplot(projection="3d")
    sc = draw_sites(ax, atoms.get_positions(), values=values, colors=colors, title=title, cell=atoms.cell[:], cmap=cmap)
    if values is not None:
        fig.colorbar(sc, ax=ax, shrink=0.6)
    return fig


def symmetry_operation_widget(atoms: Any, occupancy: np.ndarray, perms: Any, predict_site: Callable[[np.ndarray], np.ndarray],
                              ops: Sequence[int] | None = None, static_ops: Sequence[int] | None = None,
                              describe: Callable[[int], str] | None = None):
    """Apply a space-group operation to a configuration and watch the predicted per-site energies follow.

    Args:
        atoms: the supercell (ase ``Atoms``; only positions and cell are used).
        occupancy: ``(n,)`` 0/1 configuration.
        perms: ``(m, n)`` site permutations (``x -> x[p_g]``).
        predict_site: ``(n,)`` occupancy -> ``(n,)`` per-site predictions (the model).
        ops: operation indices the slider walks through (default: all).
        static_ops: the few shown side by side without a widget frontend.
        describe: optional ``g -> str`` for the panel titles.
    Left: the transformed configuration ``g·x``; middle: ``f(g·x)``; right: ``g·f(x)``. For an
    equivariant ``f`` the middle and right panels are identical for every ``g``.
    """
    import matplotlib.pyplot as plt

    p = np.asarray(perms.detach().cpu() if hasattr(perms, "detach") else perms)
    x = np.asarray(occupancy, dtype=float)
    if p.ndim != 2 or p.shape[1] != len(x) or len(x) != len(atoms):
        raise ValueError(f"symmetry_operation_widget: need perms (m, n) and occupancy (n,) with n = {len(atoms)} "
                         f"sites; got {p.shape} and {x.shape}")
    ops = list(range(len(p))) if ops is None else [int(g) for g in ops]
    static_ops = list(static_ops) if static_ops is not None else ops[:3]
    pos, cell = atoms.get_positions(), atoms.cell[:]
    base = np.asarray(predict_site(x), dtype=float)
    span = float(np.abs(base).max()) or 1.0

    def draw(fig, g):
        xg = x[p[g]]
        fx = np.asarray(predict_site(xg), dtype=float)
        gf = base[p[g]]
        axes = [fig.add_subplot(1, 3, k + 1, projection="3d") for k in range(3)]
        name = describe(g) if describe else f"operation {g}"
        draw_sites(axes[0], pos, colors=np.where(xg > 0.5, "#F2C14E", "#B87333"), cell=cell, title=f"g·x  ({name})")
        draw_sites(axes[1], pos, values=fx, vmin=-span, vmax=span, cell=cell, title="model on g·x:  f(g·x)")
        draw_sites(axes[2], pos, values=gf, vmin=-span, vmax=span, cell=cell,
                   title=f"moved output: g·f(x)\nmax diff {np.abs(fx - gf).max():.1e}")

    def static():
        fig = plt.figure(figsize=(10, 3.2 * len(static_ops)))
        subs = fig.subfigures(len(static_ops), 1)
        for sf, g in zip(np.atleast_1d(subs), static_ops):
            draw(sf, g)
        return fig

    def widget():
        import ipywidgets as W

        out = W.Output()
        slider = W.SelectionSlider(options=[(str(g), g) for g in ops], value=ops[0], description="operation g",
                                   continuous_update=False, layout=W.Layout(width="70%"))

        def redraw(change=None):
            with out:
                out.clear_output(wait=True)
                fig = plt.figure(figsize=(10, 3.4))
                draw(fig, slider.value)
                plt.show()

        slider.observe(redraw, names="value")
        redraw()
        return W.VBox([slider, out])

    return show(widget, static)


def learning_curve_figure(table: Any, x: str = "n_train", y: str = "test_mae_meV", model: str = "model",
                          title: str | None = None):
    """Test error vs training-set size (log-log), mean ± std over seeds, one line per model.

    ``table``: a pandas DataFrame with one row per (model, size, seed).
    """
    import matplotlib.pyplot as plt

    for col in (x, y, model):
        if col not in table:
            raise ValueError(f"learning_curve_figure: table has no column {col!r} (columns: {list(table.columns)})")
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for k, (name, part) in enumerate(table.groupby(model, sort=False)):
        stats = part.groupby(x)[y].agg(["mean", "std"]).reset_index()
        ax.errorbar(stats[x], stats["mean"], yerr=stats["std"].fillna(0), marker="o", capsize=3, label=name,
                    color=_PALETTE[k % len(_PALETTE)])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training configurations")
    ax.set_ylabel("test MAE (meV / site)")
    if title:
        ax.set_title(title)
    ax.legend(frameon=False)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return fig
