"""Plotly 3-D scenes: point sets, vectors, trajectories with a time slider, unit cells.

Every function returns a ``plotly.graph_objects.Figure`` (display it, or ``fig.show()``); plotly figures
render in JupyterLab, in VS Code and in the HTML that ``symviz run`` writes.

    >>> import torch
    >>> fig = points_figure(torch.randn(5, 3), labels=["a", "b", "c", "d", "e"])
    >>> len(fig.data)
    1
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["points_figure", "add_vectors", "trajectory_figure", "unit_cell_figure", "cell_edges", "PALETTE"]

PALETTE = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C", "#CCB974", "#64B5CD")


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=float)


def _check_points(x, name: str = "points") -> np.ndarray:
    x = _np(x)
    if x.ndim != 2 or x.shape[1] != 3:
        raise ValueError(f"{name} must have shape (n, 3), got {x.shape}")
    return x


def _layout(fig, title: str | None, height: int = 480):
    fig.update_layout(title=title, height=height, margin=dict(l=0, r=0, t=40 if title else 10, b=0),
                      scene=dict(aspectmode="data", xaxis_title="x", yaxis_title="y", zaxis_title="z"),
                      legend=dict(itemsizing="constant"))
    return fig


def points_figure(points, colors=None, labels: Sequence[str] | None = None, size: float = 6.0,
                  name: str = "points", title: str | None = None, fig=None):
    """A 3-D scatter of ``points: (n, 3)``, coloured by ``colors`` (n values or one colour)."""
    import plotly.graph_objects as go

    x = _check_points(points)
    fig = fig or go.Figure()
    marker = dict(size=size, color=colors if colors is not None else PALETTE[len(fig.data) % len(PALETTE)],
                  line=dict(width=0.5, color="#333"))
    if colors is not None and not isinstance(colors, str) and np.issubdtype(np.asarray(_np(colors) if hasattr(colors, "detach") else colors).dtype, np.number):
        marker.update(colorscale="Viridis", showscale=True, color=_np(colors))
    fig.add_trace(go.Scatter3d(x=x[:, 0], y=x[:, 1], z=x[:, 2], mode="markers+text" if labels else "markers",
                               text=list(labels) if labels else None, marker=marker, name=name))
    return _layout(fig, title)


def add_vectors(fig, origins, vectors, color: str = "#C44E52", name: str = "vectors", scale: float = 1.0):
    """Add arrows ``origins: (n, 3)`` -> ``origins + scale·vectors`` (lines plus cones for the heads)."""
    import plotly.graph_objects as go

    o, v = _check_points(origins, "origins"), _check_points(vectors, "vectors") * scale
    if o.shape != v.shape:
        raise ValueError(f"origins {o.shape} and vectors {v.shape} must have the same shape")
    xs, ys, zs = [], [], []
    for a, b in zip(o, o + v):
        xs += [a[0], b[0], None]
        ys += [a[1], b[1], None]
        zs += [a[2], b[2], None]
    fig.add_trace(go.Scatter3d(x=xs, y=ys, z=zs, mode="lines", line=dict(color=color, width=5), name=name))
    tip = o + v
    fig.add_trace(go.Cone(x=tip[:, 0], y=tip[:, 1], z=tip[:, 2], u=v[:, 0], v=v[:, 1], w=v[:, 2], sizemode="absolute",
                          sizeref=max(float(np.linalg.norm(v, axis=1).max()) * 0.25, 1e-6), anchor="tip",
                          colorscale=[[0, color], [1, color]], showscale=False, name=name, showlegend=False))
    return fig


def trajectory_figure(trajectories: dict, node_labels: Sequence[str] | None = None, title: str | None = None,
                      frame_ms: int = 80, tail: bool = True, height: int = 520):
    """Animate one or more trajectories ``{name: (T, n, 3)}`` with a time slider and play button.

    All trajectories must have the same ``T`` and ``n`` (e.g. ``{"true": x_true, "EGNN": x_pred}``); the first
    is drawn with circles, the others with diamonds, each node keeping its colour. ``tail`` draws each
    node's full path faintly.
    """
    import plotly.graph_objects as go

    if not isinstance(trajectories, dict) or not trajectories:
        raise ValueError("trajectories must be a non-empty dict {name: array (T, n, 3)}")
    arrs = {k: _np(v) for k, v in trajectories.items()}
    shapes = {v.shape for v in arrs.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3 or next(iter(shapes))[2] != 3:
        raise ValueError(f"every trajectory must have the same shape (T, n, 3); got {[v.shape for v in arrs.values()]}")
    T, n, _ = next(iter(shapes))
    colors = [PALETTE[i % len(PALETTE)] for i in range(n)]
    symbols = ["circle", "diamond", "square", "cross", "x"]

    def frame_traces(t):
        out = []
        for j, (k, a) in enumerate(arrs.items()):
            out.append(go.Scatter3d(x=a[t, :, 0], y=a[t, :, 1], z=a[t, :, 2], mode="markers",
                                    marker=dict(size=7 if j == 0 else 5, color=colors, symbol=symbols[j % len(symbols)],
                                                line=dict(width=1, color="#222")),
                                    text=list(node_labels) if node_labels else None, name=k))
        return out

    static = []
    if tail:
        for j, (k, a) in enumerate(arrs.items()):
            for i in range(n):
                static.append(go.Scatter3d(x=a[:, i, 0], y=a[:, i, 1], z=a[:, i, 2], mode="lines",
                                           line=dict(color=colors[i], width=2, dash="solid" if j == 0 else "dot"),
                                           opacity=0.35, showlegend=False, hoverinfo="skip"))
    fig = go.Figure(data=static + frame_traces(0))
    idx = list(range(len(static), len(static) + len(arrs)))
    fig.frames = [go.Frame(data=frame_traces(t), traces=idx, name=str(t)) for t in range(T)]
    allpts = np.concatenate([a.reshape(-1, 3) for a in arrs.values()])
    lo, hi = allpts.min(0), allpts.max(0)
    pad = 0.05 * (hi - lo).max() + 1e-9
    fig.update_layout(
        scene=dict(xaxis=dict(range=[lo[0] - pad, hi[0] + pad]), yaxis=dict(range=[lo[1] - pad, hi[1] + pad]),
                   zaxis=dict(range=[lo[2] - pad, hi[2] + pad]), aspectmode="cube"),
        updatemenus=[dict(type="buttons", showactive=False, x=0.05, y=0.05, xanchor="left", yanchor="bottom", buttons=[
            dict(label="▶ play", method="animate", args=[None, dict(frame=dict(duration=frame_ms, redraw=True), fromcurrent=True)]),
            dict(label="❚❚", method="animate", args=[[None], dict(mode="immediate", frame=dict(duration=0, redraw=False))]),
        ])],
        sliders=[dict(active=0, currentvalue=dict(prefix="step "), pad=dict(t=30),
                      steps=[dict(method="animate", label=str(t), args=[[str(t)], dict(mode="immediate", frame=dict(duration=0, redraw=True))])
                             for t in range(T)])],
        title=title, height=height, margin=dict(l=0, r=0, t=40 if title else 10, b=0))
    return fig


def cell_edges(lattice) -> list[tuple[np.ndarray, np.ndarray]]:
    """The 12 edges ``(start, end)`` of the parallelepiped spanned by the rows of ``lattice: (3, 3)``.

    >>> len(cell_edges(np.eye(3)))
    12
    """
    L = _np(lattice)
    if L.shape != (3, 3):
        raise ValueError(f"lattice must be (3, 3) with the cell vectors as rows, got {L.shape}")
    corners = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=float) @ L
    return [(corners[a], corners[b]) for a in range(8) for b in range(a + 1, 8) if bin(a ^ b).count("1") == 1]


def unit_cell_figure(lattice, frac_coords=None, species: Sequence[str] | None = None, colors=None, fig=None,
                     title: str | None = None):
    """Draw the unit cell spanned by the rows of ``lattice: (3, 3)`` and optional sites (fractional coords)."""
    import plotly.graph_objects as go

    edges = cell_edges(lattice)
    L = _np(lattice)
    fig = fig or go.Figure()
    xs, ys, zs = [], [], []
    for a, b in edges:
        xs += [a[0], b[0], None]
        ys += [a[1], b[1], None]
        zs += [a[2], b[2], None]
    fig.add_trace(go.Scatter3d(x=xs, y=ys, z=zs, mode="lines", line=dict(color="#555", width=3), name="cell", hoverinfo="skip"))
    if frac_coords is not None:
        cart = _np(frac_coords) @ L
        if colors is None and species is not None:
            uniq = sorted(set(species))
            colors = [PALETTE[uniq.index(s) % len(PALETTE)] for s in species]
        points_figure(cart, colors=colors, labels=list(species) if species is not None else None, fig=fig, name="sites", size=8)
    return _layout(fig, title)
