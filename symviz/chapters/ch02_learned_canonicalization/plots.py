"""Figures and widgets of chapter 02 (learned canonicalization). Nothing here trains.

* :func:`canonical_gallery`: images, their four rotations, and the canonical image each
  canonicalizer returns (static matplotlib).
* :func:`image_rotation_widget`: a slider rotates an image; the chosen group element turns with it,
  the canonical image stays put (exactly at multiples of 90°).
* :func:`pose_overlay_figure`: plotly 3D, canonical poses of many samples of one class overlaid
  (learned frames align them; PCA frames on isotropic shapes scatter them).
* :func:`pointset_rotation_widget`: a slider rotates a point set with its predicted frame; the
  canonical point set stays put.
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import torch

__all__ = ["canonical_gallery", "image_rotation_widget", "pose_overlay_figure", "pointset_rotation_widget",
           "accuracy_bars"]


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
