"""Figures and widgets of chapter 02 (learned canonicalization). Nothing here trains.

* :func:`canonical_gallery`: images, their four rotations, and the canonical image each
  canonicalizer returns (static matplotlib).
* :func:`image_rotation_widget`: a slider rotates an image; the chosen group element turns with it,
  the canonical image stays put (exactly at multiples of 90°).
* :func:`pose_overlay_figure`: plotly 3D, canonical poses of many samples of one class overlaid
  (learned frames align them; PCA frames on isotropic shapes scatter them).
* :func:`pointset_rotation_widget`: a slider rotates a point set with its predicted frame; the
  canonical point set stays put.
* :func:`nbody_system_figure`: one charged system now and later, and the same system rotated (the future rotates too).
* :func:`nbody_mse_bars`: test MSE of the N-body predictors in this run, beside the numbers the papers report.
* :func:`symmetric_path_figure`: what canonicalizers choose along a path through a symmetric input (they jump).
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import torch

__all__ = ["canonical_gallery", "image_rotation_widget", "pose_overlay_figure", "pointset_rotation_widget",
           "accuracy_bars", "nbody_mse_bars", "symmetric_path_figure", "nbody_system_figure"]


def _img(ax, im: torch.Tensor, title: str | None = None):
    ax.imshow(im.detach().cpu().reshape(im.shape[-2], im.shape[-1]).numpy(), cmap="gray_r", vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


@torch.no_grad()
def canonical_gallery(x: torch.Tensor, canonicalizers: Mapping[str, torch.nn.Module], size: float = 1.3):
    """Rows: images ``x: (B, 1, H, W)``. Columns: the image rotated by 0/90/180/270°, then for each
    canonicalizer the canonical image of the *rotated* inputs (four, identical when it is equivariant)."""
    import matplotlib.pyplot as plt

    if not torch.is_tensor(x) or x.ndim != 4:
        raise ValueError(f"x must be images (B, C, H, W), got {getattr(x, 'shape', type(x))}")
    names = list(canonicalizers)
    ncols = 4 + 4 * len(names)
    fig, axes = plt.subplots(len(x), ncols, figsize=(size * ncols, size * len(x)), squeeze=False)
    for i, im in enumerate(x):
        rots = torch.stack([torch.rot90(im, k, dims=(-2, -1)) for k in range(4)])
        for k in range(4):
            _img(axes[i, k], rots[k], f"input {90 * k}°" if i == 0 else None)
        for c, name in enumerate(names):
            res = canonicalizers[name](rots)
            for k in range(4):
                _img(axes[i, 4 + 4 * c + k], res.canonical[k],
                     f"{name}\n(h={int(res.element[k])})" if i == 0 and k == 0 else f"h={int(res.element[k])}")
    fig.tight_layout()
    return fig


def image_rotation_widget(x: torch.Tensor, canonicalizer: torch.nn.Module, name: str = "learned", step: float = 15.0):
    """Slider: rotate ``x: (1, H, W)`` or ``(H, W)`` by any angle; show input, scores and canonical image.

    Angles that are multiples of 90° use ``rot90`` (exact); other angles interpolate (C4 says nothing
    about them, and the canonical image may jump there). Static fallback: 0, 90, 180, 270°.
    """
    from symviz.groups import rotate_image
    from symviz.viz.widgets import rotate_input_widget

    x = torch.as_tensor(x).reshape(1, 1, x.shape[-2], x.shape[-1]).float()

    @torch.no_grad()
    def draw(fig, angle):
        if abs(angle / 90 - round(angle / 90)) < 1e-9:
            xr = torch.rot90(x, int(round(angle / 90)) % 4, dims=(-2, -1))
        else:
            xr = rotate_image(x, math.radians(angle))
        res = canonicalizer(xr)
        a1, a2, a3 = fig.subplots(1, 3)
        _img(a1, xr[0], "input")
        scores = res.scores[0].cpu().numpy()
        a2.bar([f"{90 * j}°" for j in range(len(scores))], scores,
               color=["#C44E52" if j == int(res.element[0]) else "#4C72B0" for j in range(len(scores))])
        a2.set_title("scores", fontsize=8)
        a2.set_xlabel(f"h(x) = {90 * int(res.element[0])}° (red)", fontsize=8)
        a2.tick_params(labelsize=7)
        _img(a3, res.canonical[0], "canonical h(x)⁻¹·x")

    return rotate_input_widget(draw, step=step, title=f"{name} canonicalization", figsize=(7.5, 2.4))


def pose_overlay_figure(canonical: Mapping[str, torch.Tensor], max_sets: int = 12, title: str | None = None):
    """Plotly 3D: for each method, overlay ``max_sets`` canonical point sets ``(M, N, 3)`` of ONE class.

    Aligned poses make a tight, recognisable cloud; unstable frames smear it out.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from symviz.viz.scenes import PALETTE

    names = list(canonical)
    fig = make_subplots(rows=1, cols=len(names), specs=[[{"type": "scene"}] * len(names)], subplot_titles=names)
    for c, name in enumerate(names):
        sets = canonical[name][:max_sets].detach().cpu().numpy()
        for m, pts in enumerate(sets):
            fig.add_trace(go.Scatter3d(x=pts[:, 0], y=pts[:, 1], z=pts[:, 2], mode="markers", showlegend=False,
                                       marker=dict(size=3, color=PALETTE[m % len(PALETTE)], opacity=0.8),
                                       name=f"{name} sample {m}"), row=1, col=c + 1)
    fig.update_layout(height=420, margin=dict(l=0, r=0, t=50, b=0), title=title)
    for c in range(len(names)):
        fig.layout[f"scene{'' if c == 0 else c + 1}"].aspectmode = "cube"
    return fig


def pointset_rotation_widget(x: torch.Tensor, canonicalizers: Mapping[str, torch.nn.Module],
                             axis: tuple[float, float, float] = (0.3, 1.0, 0.2), step: float = 15.0):
    """Slider: rotate the point set ``x: (N, 3)`` about ``axis``; draw it with each predicted frame
    (arrows e1, e2, e3) and each canonical point set (which stays put for an equivariant frame)."""
    from symviz.viz.widgets import rotate_input_widget

    x = torch.as_tensor(x).reshape(-1, 3).float()
    n = torch.tensor(axis, dtype=torch.float64)
    n = n / n.norm()
    K = torch.tensor([[0, -n[2], n[1]], [n[2], 0, -n[0]], [-n[1], n[0], 0]], dtype=torch.float64)
    names = list(canonicalizers)
    colors = ("#C44E52", "#55A868", "#4C72B0")
    color_names = ("red", "green", "blue")

    @torch.no_grad()
    def draw(fig, angle):
        t = math.radians(angle)
        R = (torch.eye(3, dtype=torch.float64) + math.sin(t) * K + (1 - math.cos(t)) * K @ K).float()
        xr = x @ R.T
        axes = fig.subplots(1, 1 + len(names), subplot_kw={"projection": "3d"})
        ax = axes[0]
        p = xr.numpy()
        ax.scatter(p[:, 0], p[:, 1], p[:, 2], s=8, c="#333")
        for c, name in enumerate(names):
            F = canonicalizers[name](xr[None]).element[0].numpy()
            ax.quiver(*np.zeros(3), *F[:, 0] * 2, color=colors[c % 3], lw=2)
            ax.quiver(*np.zeros(3), *F[:, 1] * 1.3, color=colors[c % 3], lw=1)
        legend = ", ".join(f"{name} {color_names[c % 3]}" for c, name in enumerate(names))
        ax.set_title(f"input; frames e1 (long), e2: {legend}", fontsize=8)
        for c, name in enumerate(names):
            q = canonicalizers[name](xr[None]).canonical[0].numpy()
            axes[c + 1].scatter(q[:, 0], q[:, 1], q[:, 2], s=8, c=colors[c % 3])
            axes[c + 1].set_title(f"canonical ({name})", fontsize=8)
        for a in axes:
            a.set_xlim(-2.5, 2.5), a.set_ylim(-2.5, 2.5), a.set_zlim(-2.5, 2.5)
            a.set_xticklabels([]), a.set_yticklabels([]), a.set_zticklabels([])

    return rotate_input_widget(draw, angles=[0.0, 60.0, 150.0], step=step, title="rotate the point set",
                               figsize=(3 * (1 + len(names)), 3.0))


def accuracy_bars(results: Mapping[str, list[float]], title: str = "", ax=None):
    """Bar chart of mean accuracy per model with the seed spread (std) as error bars and the seeds as dots."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(1.2 * len(results) + 1.5, 3))
    names = list(results)
    means = [float(np.mean(results[k])) for k in names]
    stds = [float(np.std(results[k])) for k in names]
    ax.bar(names, means, yerr=stds, capsize=4, color="#4C72B0", alpha=0.8)
    for i, k in enumerate(names):
        ax.scatter([i] * len(results[k]), results[k], color="#333", s=10, zorder=3)
    ax.set_ylabel("test accuracy (rotated)")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=10)
    ax.tick_params(axis="x", labelsize=8, rotation=20)
    return ax.figure


def nbody_mse_bars(mse: Mapping[str, list[float]], paper: Mapping[str, float] | None = None, title: str = ""):
    """Left: mean test MSE per model of this run (bars, log scale) with the seeds as dots. Right (when ``paper`` is
    given): the MSE the papers report for the same kinds of model, at their much larger training budget."""
    import matplotlib.pyplot as plt

    if not mse:
        raise ValueError("mse must map at least one model name to its per-seed test MSEs")
    ncols = 2 if paper else 1
    fig, axes = plt.subplots(1, ncols, figsize=(5.2 * ncols, 3.2), squeeze=False)
    ax = axes[0, 0]
    names = list(mse)
    ax.bar(names, [float(np.mean(mse[k])) for k in names], color="#4C72B0", alpha=0.8)
    for i, k in enumerate(names):
        ax.scatter([i] * len(mse[k]), mse[k], color="#333", s=10, zorder=3)
    ax.set_yscale("log")
    ax.set_ylabel("test MSE (positions)")
    ax.set_title(title or "this run", fontsize=10)
    ax.tick_params(axis="x", labelsize=8, rotation=20)
    if paper:
        ax2 = axes[0, 1]
        pn = list(paper)
        ax2.bar(pn, [paper[k] for k in pn], color="#DD8452", alpha=0.8)
        ax2.set_yscale("log")
        ax2.set_title("reported in the papers (3,000 training systems, long training)", fontsize=9)
        ax2.tick_params(axis="x", labelsize=8, rotation=20)
    fig.tight_layout()
    return fig


def symmetric_path_figure(ts, image_path: torch.Tensor, image_elements: Mapping[str, torch.Tensor],
                          frames: Mapping[str, torch.Tensor], n_thumbs: int = 5):
    """What canonicalizers choose along a path ``x_t`` through a C2-symmetric input at ``t = 0``.

    Top: ``n_thumbs`` images of ``image_path: (T, 1, H, W)``. Bottom left: the C4 element (in degrees) each image
    canonicalizer in ``image_elements`` (name -> ``(T,)`` indices) picks. Bottom right: how far each point-set
    frame in ``frames`` (name -> ``(T, 3, 3)``) turns between consecutive points of its path.
    """
    import matplotlib.pyplot as plt

    from symviz.nn.canonical import rotation_angle

    ts = np.asarray(torch.as_tensor(ts, dtype=torch.float64))
    if image_path.ndim != 4 or len(image_path) != len(ts):
        raise ValueError(f"image_path must be (T, C, H, W) with T = len(ts) = {len(ts)}, got {tuple(image_path.shape)}")
    fig = plt.figure(figsize=(10, 5.6))
    grid = fig.add_gridspec(2, max(n_thumbs, 2), height_ratios=[1, 1.5])
    for k, i in enumerate(np.linspace(0, len(ts) - 1, n_thumbs).round().astype(int)):
        _img(fig.add_subplot(grid[0, k]), image_path[i], f"t = {ts[i]:+.2f}")
    half = max(n_thumbs, 2) // 2
    ax = fig.add_subplot(grid[1, :half])
    for name, el in image_elements.items():
        ax.step(ts, 90 * np.asarray(el.cpu()), where="mid", label=name)
    ax.axvline(0, color="#999", lw=0.8, ls="--")
    ax.set_yticks([0, 90, 180, 270])
    ax.set_xlabel("t (t = 0: the image is symmetric under a half turn)")
    ax.set_ylabel("chosen rotation h(x_t) (°)")
    ax.set_title("images, C4 canonicalizers", fontsize=10)
    ax.legend(fontsize=8)
    ax = fig.add_subplot(grid[1, half:])
    mid = (ts[1:] + ts[:-1]) / 2
    for name, F in frames.items():
        ax.plot(mid, np.asarray(rotation_angle(F[1:], F[:-1]).cpu()), marker=".", ms=3, label=name)
    ax.axvline(0, color="#999", lw=0.8, ls="--")
    ax.set_xlabel("t (t = 0: the shape is symmetric under a half turn)")
    ax.set_ylabel("frame turn per step of t (°)")
    ax.set_title("3D shapes, SO(3) frames", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def nbody_system_figure(loc: torch.Tensor, vel: torch.Tensor, charges: torch.Tensor, target: torch.Tensor,
                        angle: float = 90.0):
    """One N-body system (``loc, vel, target: (n, 3)``, ``charges: (n, 1)``) seen from above (x, y): particles now
    (filled, red +1 / blue -1) with their velocities, and where they are later (hollow). Right: the same system
    rotated by ``angle`` degrees about z: the future is the rotated future."""
    import matplotlib.pyplot as plt

    if loc.ndim != 2 or loc.shape[-1] != 3 or vel.shape != loc.shape or target.shape != loc.shape:
        raise ValueError(f"loc, vel, target must be (n, 3), got {tuple(loc.shape)}, {tuple(vel.shape)}, {tuple(target.shape)}")
    a = math.radians(angle)
    R = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]], dtype=loc.dtype)
    colors = ["#C44E52" if float(q) > 0 else "#4C72B0" for q in charges.reshape(-1)]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.8))
    for ax, M, title in ((axes[0], torch.eye(3, dtype=loc.dtype), "a charged system"),
                         (axes[1], R, f"the same system turned by {angle:.0f}°")):
        x, v, y = (t @ M.T for t in (loc, vel, target))
        for i in range(len(x)):
            ax.plot([x[i, 0], y[i, 0]], [x[i, 1], y[i, 1]], color=colors[i], lw=0.6, ls=":")
        ax.scatter(x[:, 0], x[:, 1], c=colors, s=40, zorder=3, label="now")
        ax.quiver(x[:, 0], x[:, 1], v[:, 0], v[:, 1], color=colors, angles="xy", scale_units="xy", scale=1, width=0.006)
        ax.scatter(y[:, 0], y[:, 1], facecolors="none", edgecolors=colors, s=40, zorder=3, label="later (target)")
        ax.set_aspect("equal")
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig
