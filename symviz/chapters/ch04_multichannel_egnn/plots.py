"""Figures only chapter 04 draws: the position channels of a trained MC-EGNN in 3D."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from symviz.viz.scenes import PALETTE, add_vectors

__all__ = ["channel_points_figure", "dimer_figure"]


def _np(t) -> np.ndarray:
    return np.asarray(t.detach().cpu() if hasattr(t, "detach") else t, dtype=float)


def channel_points_figure(loc, channels, target, charges: Sequence[float] | None = None, particle: int | None = None,
                          title: str | None = None, height: int = 520):
    """What MC-EGNN's channels carry, for one system, as a rotatable plotly 3D scene.

    Every particle ``i`` ends with ``C`` position channels (points, small markers coloured by channel); the
    prediction is their mean (diamond), the true future a cross, the input position a circle. For the highlighted
    ``particle`` (default: the one whose channels spread most) arrows go from its prediction to each channel
    point: the ``C`` extra vectors the network carries beside the single position of an EGNN.

    Args:
        loc: ``(n, 3)`` input positions; channels: ``(n, 3, C)`` output position channels; target: ``(n, 3)``;
        charges: ``n`` values (circles red for +, blue for -), or None.
    Returns a ``plotly.graph_objects.Figure``.
    """
    import plotly.graph_objects as go

    loc, X, target = _np(loc), _np(channels), _np(target)
    if loc.ndim != 2 or loc.shape[1] != 3:
        raise ValueError(f"loc must have shape (n, 3), got {loc.shape}")
    n = loc.shape[0]
    if X.ndim != 3 or X.shape[:2] != (n, 3):
        raise ValueError(f"channels must have shape ({n}, 3, C), got {X.shape}")
    if target.shape != loc.shape:
        raise ValueError(f"target must have shape {loc.shape}, got {target.shape}")
    C = X.shape[2]
    pred = X.mean(-1)
    spread = np.linalg.norm(X - pred[..., None], axis=1).mean(-1)          # (n,) mean channel distance from the mean
    if particle is None:
        particle = int(spread.argmax())
    if not (isinstance(particle, (int, np.integer)) and 0 <= particle < n):
        raise ValueError(f"particle must be an index in [0, {n}), got {particle!r}")
    colors = ["#8C8C8C"] * n if charges is None else ["#C44E52" if q > 0 else "#4C72B0" for q in _np(charges).ravel()]

    fig = go.Figure()

    def points(p, name, symbol, size, color, opacity=1.0):
        fig.add_trace(go.Scatter3d(x=p[:, 0], y=p[:, 1], z=p[:, 2], mode="markers", name=name, opacity=opacity,
                                   marker=dict(size=size, symbol=symbol, color=color, line=dict(width=1, color="#333"))))

    points(loc, "input position", "circle", 6, colors, 0.6)
    points(target, "true future", "x", 5, colors)
    points(pred, "prediction = mean of the channels", "diamond", 6, colors)
    for c in range(C):
        points(X[:, :, c], f"channel {c + 1}", "circle", 4, PALETTE[(c + 2) % len(PALETTE)])
    xs, ys, zs = [], [], []                                                 # each particle's move: input -> prediction
    for a, b in zip(loc, pred):
        xs += [a[0], b[0], None]
        ys += [a[1], b[1], None]
        zs += [a[2], b[2], None]
    fig.add_trace(go.Scatter3d(x=xs, y=ys, z=zs, mode="lines", line=dict(color="#999", width=2, dash="dot"),
                               name="input → prediction"))
    k = particle
    add_vectors(fig, np.repeat(pred[k:k + 1], C, 0), (X[k] - pred[k][:, None]).T, color="#333",
                name=f"particle {k}: prediction → its {C} channels")
    fig.update_layout(title=title or f"MC-EGNN's {C} position channels per particle (arrows: particle {k})",
                      height=height, margin=dict(l=0, r=0, t=40, b=0), legend=dict(itemsizing="constant"),
                      scene=dict(aspectmode="data", xaxis_title="x", yaxis_title="y", zaxis_title="z"))
    return fig


def _plane_coords(target, vectors):
    """Coordinates of ``vectors (3, K)`` in an orthonormal basis of the plane spanned by ``target (3, 2)``."""
    Q, _ = np.linalg.qr(target)
    return Q.T @ vectors


def dimer_figure(table, floor: float, target, predictions: dict, title: str | None = None):
    """Chapter 04's toy at a glance (matplotlib): test MSE per seed of each channel count against the one-channel
    floor (left), and for one particle the two target vectors next to each model's two output vectors, drawn in
    the plane of the target vectors (one panel per model).

    Args:
        table: DataFrame with columns ``channels``, ``seed``, ``test_mse``;
        floor: :func:`~symviz.chapters.ch04_multichannel_egnn.dimer.rank_one_floor` of the test set;
        target: ``(3, 2)``, the particle's ``[displacement, velocity]``;
        predictions: ``{label: (3, 2)}``, each model's two vectors for that particle.
    Returns the ``matplotlib`` figure.
    """
    import matplotlib.pyplot as plt

    if not {"channels", "seed", "test_mse"} <= set(getattr(table, "columns", ())):
        raise ValueError("table must be a DataFrame with the columns 'channels', 'seed' and 'test_mse'")
    T = _np(target)
    if T.shape != (3, 2):
        raise ValueError(f"target must have shape (3, 2) (displacement and velocity as columns), got {T.shape}")
    preds = {k: _np(v) for k, v in predictions.items()}
    for k, P in preds.items():
        if P.shape != (3, 2):
            raise ValueError(f"predictions[{k!r}] must have shape (3, 2), got {P.shape}")
    fig, axes = plt.subplots(1, 1 + len(preds), figsize=(4.2 * (1 + len(preds)), 3.8))
    ax = axes[0]
    chans = sorted(table["channels"].unique())
    for k, C in enumerate(chans):
        vals = table[table["channels"] == C]["test_mse"].to_numpy()
        ax.scatter(np.full(len(vals), k), vals, s=40, color=PALETTE[k % len(PALETTE)], zorder=3)
        ax.hlines(np.exp(np.log(vals).mean()), k - 0.2, k + 0.2, color="k")
    ax.axhline(floor, color="#C44E52", ls="--", label="floor of any 1-channel model")
    ax.set(yscale="log", xticks=range(len(chans)), xticklabels=[f"C={C}" for C in chans], xlim=(-0.6, len(chans) - 0.4),
           ylabel="test MSE (log)", title="spring dimer: test MSE per seed")
    ax.legend(fontsize=8, loc="center right")
    lim = 1.15 * max(np.abs(_plane_coords(T, M)).max() for M in [T, *preds.values()])
    for ax, (label, P) in zip(axes[1:], preds.items()):
        for M, style, tag in ((T, dict(color="#333", alpha=0.35, width=0.012), "target"),
                              (P, dict(color="#DD8452", width=0.006), label)):
            xy = _plane_coords(T, M)
            for c, name in enumerate(("displacement", "velocity")):
                ax.quiver(0, 0, xy[0, c], xy[1, c], angles="xy", scale_units="xy", scale=1, **style)
                ax.annotate(f"{name} ({'target' if M is T else 'model'})", xy[:2, c], fontsize=7,
                            color=style["color"])
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), title=label)
        ax.set_aspect("equal")
        ax.axhline(0, color="#ddd", lw=0.8)
        ax.axvline(0, color="#ddd", lw=0.8)
    fig.suptitle(title or "one particle: grey = target vectors, orange = the model's two outputs", fontsize=10)
    fig.tight_layout()
    return fig
