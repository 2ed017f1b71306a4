"""The comparisons of chapter 02 (learned canonicalization), as functions the notebook, tests and
benchmark share.

* :func:`make_image_model` builds one of the image classifiers compared on C4-rotated test images:
  a plain CNN, the same CNN trained with rotation augmentation, the CNN behind the image-moment
  heuristic, the CNN behind a learned C4 canonicalizer (Kaba et al., ICML 2023) and a P4 G-CNN
  (Cohen & Welling, ICML 2016).
* :func:`make_pointset_model` builds PointNet, PointNet behind PCA frames, and PointNet behind a
  learned SO(3) frame.
* :func:`train_classifier` trains any of them with :func:`symviz.train.fit` (cross-entropy, Adam).
* :func:`accuracy` (:func:`symviz.train.accuracy`, re-exported here) evaluates in batches without gradients.
* :func:`make_nbody_model`, :func:`train_nbody_model`, :func:`nbody_test_mse`, :func:`nbody_equivariance_error`: the
  paper's N-body experiment (Kaba et al. 2023, Sec. 7.2) on the charged systems of :mod:`symviz.data.nbody`: one
  non-equivariant GNN backbone plain, behind PCA frame averaging (Puny et al. 2022) and behind a learned frame,
  with EGNN (Satorras et al. 2021) as the equivariant reference, all trained alike.
* :func:`symmetric_path_frames`, :func:`symmetric_path_elements`: canonicalizers along an input path that passes
  through a symmetric input (where every canonicalization must jump).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from symviz.data.rotated_images import random_rot90
from symviz.train import CallRef, TensorBatches, accuracy, fit
from symviz.nn.canonical import (C4ImageCanonicalizer, CanonicalizedModel, MomentImageCanonicalizer, PCAFrameCanonicalizer,
                        PointFrameCanonicalizer, PointNetClassifier)
from symviz.nn.canonical import (CanonicalizedNBodyModel, FrameAveragedNBodyModel, NBodyFrameCanonicalizer, NBodyGNN,
                                PCANBodyCanonicalizer)
from symviz.nn.egnn import MCEGNN, predict_nbody
from symviz.nn.gcnn import P4CNN, SmallCNN

__all__ = ["IMAGE_MODELS", "POINTSET_MODELS", "NBODY_MODELS", "TRAINING_COST", "make_image_model", "make_pointset_model", "train_classifier",
           "TensorBatches", "accuracy", "rot90_augment", "se3_invariance_error", "EGNNPositions", "make_nbody_model",
           "train_nbody_model", "nbody_test_mse", "nbody_equivariance_error", "symmetric_path_frames",
           "symmetric_path_elements"]

IMAGE_MODELS = ("cnn", "cnn_augmented", "moments", "learned", "p4cnn")
"""Names of the image classifiers, in the order the chapter shows them."""

TRAINING_COST = {"image": {"cnn": 1.0, "cnn_augmented": 1.0, "moments": 1.2, "learned": 1.8, "p4cnn": 1.5},
                 "nbody": {"gnn": 0.6, "pca_gnn": 0.8, "fa_gnn": 1.3, "learned": 2.1, "egnn": 1.0}}
"""Relative run time of one quick-mode training of each model (measured: seconds at one thread on an AMD EPYC, Zen 4),
so that :func:`symviz.train.parallel_runs` starts the longest first (its ``cost``)."""

POINTSET_MODELS = ("pointnet", "pca", "learned")

NBODY_MODELS = ("gnn", "pca_gnn", "fa_gnn", "learned", "egnn")
"""The N-body predictors: the plain GNN, the GNN behind one PCA frame, the GNN averaged over the PCA frames (frame
averaging), the GNN behind a learned frame, and EGNN."""


def rot90_augment(x: torch.Tensor) -> torch.Tensor:
    """Rotate each image of a batch ``(B, C, H, W)`` by a fresh random multiple of 90° (augmentation)."""
    return random_rot90(x)[0]


def _plain(fn: Callable | None) -> Callable | None:
    """``fn`` held like a plain function (:class:`symviz.train.CallRef`): a model holding it can be deep-copied
    (:func:`se3_invariance_error` copies the model) and pickled (:func:`symviz.train.parallel_runs`), whatever
    ``fn`` is (the notebook passes a ``symviz.report.Accepted`` wrapper)."""
    return None if fn is None else CallRef(fn)


def make_image_model(kind: str, n_classes: int = 10, hidden: int = 16, canon_hidden: int = 8,
                     canon_pool: int = 1, canonicalize: Callable | None = None) -> nn.Module:
    """One of :data:`IMAGE_MODELS`. ``cnn_augmented`` is the plain CNN (augmentation happens in training).

    ``hidden`` is the CNN's channel count (the P4CNN gets ``hidden // 2`` per rotation, a similar
    parameter count); ``canon_hidden`` and ``canon_pool`` size the learned canonicalizer, and ``canonicalize``
    is its forward pass (``(x, score, n, tau) -> CanonicalizationResult``; default
    :func:`symviz.nn.canonical.canonicalize_cn`): the notebook passes the learner's; the other kinds ignore it.
    """
    if kind not in IMAGE_MODELS:
        raise ValueError(f"kind must be one of {', '.join(IMAGE_MODELS)}, got {kind!r}")
    if kind in ("cnn", "cnn_augmented"):
        return SmallCNN(1, n_classes, hidden)
    if kind == "moments":
        return CanonicalizedModel(MomentImageCanonicalizer(4, method="axis"), SmallCNN(1, n_classes, hidden))
    if kind == "learned":
        return CanonicalizedModel(C4ImageCanonicalizer(1, hidden=canon_hidden, pool=canon_pool, canonicalize=_plain(canonicalize)),
                                  SmallCNN(1, n_classes, hidden))
    return P4CNN(1, n_classes, max(hidden // 2, 2))


def make_pointset_model(kind: str, n_classes: int, hidden: int = 64, canon_hidden: int = 16,
                        frame: Callable | None = None) -> nn.Module:
    """One of :data:`POINTSET_MODELS`: plain PointNet, PointNet behind PCA frames, or behind a learned SO(3) frame.

    ``frame`` is the learned canonicalizer's Gram-Schmidt step (``(v1, v2) -> (B, 3, 3)``; default
    :func:`symviz.nn.canonical.gram_schmidt`): the notebook passes the learner's; the other kinds ignore it."""
    if kind not in POINTSET_MODELS:
        raise ValueError(f"kind must be one of {', '.join(POINTSET_MODELS)}, got {kind!r}")
    backbone = PointNetClassifier(n_classes, hidden)
    if kind == "pointnet":
        return backbone
    if kind == "pca":
        return CanonicalizedModel(PCAFrameCanonicalizer("SO(3)"), backbone)
    return CanonicalizedModel(PointFrameCanonicalizer(canon_hidden, "SO(3)", frame=_plain(frame)), backbone)


def train_classifier(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int = 20, lr: float = 3e-3,
                     batch_size: int = 64, seed: int = 0, device: str = "auto",
                     augment: Callable[[torch.Tensor], torch.Tensor] | None = None, progress: bool = False):
    """Train ``model`` on ``(x, y)`` with cross-entropy through :func:`symviz.train.fit`; returns the FitResult.

    ``augment`` (e.g. :func:`rot90_augment`) transforms every training batch.
    """
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
    loader = TensorBatches(x, y, batch_size=batch_size, seed=seed)

    def loss_fn(m, batch):
        xb, yb = batch
        if augment is not None:
            xb = augment(xb)
        return F.cross_entropy(m(xb), yb)

    return fit(model, loss_fn, loader, epochs=epochs, optimizer="adam", lr=lr, seed=seed, device=device,
               progress=progress, desc=type(model).__name__)


def se3_invariance_error(model: nn.Module, x: torch.Tensor, trials: int = 5, seed: int = 0) -> float:
    """Worst relative change of ``model``'s outputs on point sets ``x: (B, N, 3)`` under random rotations,
    translations and point permutations, computed in float64 on a copy of the model."""
    import copy

    from symviz.equivariance import check_equivariance

    if not torch.is_tensor(x) or x.ndim != 3 or x.shape[-1] != 3:
        raise ValueError(f"x must be point sets (B, N, 3), got {getattr(x, 'shape', type(x))}")
    m = copy.deepcopy(model).double().eval()
    return check_equivariance(m, (x.double(),), ("point",), "scalar", group="SE(3)xS_n", trials=trials,
                              seed=seed).max_error


# ----------------------------------------------------------------------------------------------
# N-body dynamics (Kaba et al. 2023, Sec. 7.2)
# ----------------------------------------------------------------------------------------------

class EGNNPositions(nn.Module):
    """EGNN (:class:`symviz.nn.egnn.MCEGNN` with one channel) behind the ``(loc, vel, charges) -> positions``
    call of the other N-body models, with EGNN's own featurisation (:func:`symviz.nn.egnn.predict_nbody`:
    ``h_i = |v_i|``, edge attribute ``q_i q_j``)."""

    def __init__(self, hidden: int = 64, n_layers: int = 4):
        super().__init__()
        self.egnn = MCEGNN(1, hidden, n_layers, 1, edge_nf=1, velocity=True)

    def forward(self, loc: torch.Tensor, vel: torch.Tensor, charges: torch.Tensor) -> torch.Tensor:
        return predict_nbody(self.egnn, loc, vel, charges)


def make_nbody_model(kind: str, hidden: int = 64, n_layers: int = 4, canon_hidden: int = 16, canon_layers: int = 2,
                     group: str = "O(3)", residual: bool = True, frame: Callable | None = None) -> nn.Module:
    """One of :data:`NBODY_MODELS`, each a ``(loc, vel, charges) -> (B, n, 3)`` position predictor.

    ``gnn``: :class:`symviz.nn.canonical.NBodyGNN` (``hidden``, ``n_layers``, ``residual``) on raw coordinates;
    ``pca_gnn``: the same GNN behind one PCA frame (:class:`symviz.nn.canonical.PCANBodyCanonicalizer`);
    ``fa_gnn``: the same GNN averaged over the PCA frames of ``group`` (8 for O(3), 4 for SO(3));
    ``learned``: the same GNN behind :class:`symviz.nn.canonical.NBodyFrameCanonicalizer` (``canon_hidden``,
    ``canon_layers``, ``group``; ``frame`` replaces its Gram-Schmidt step); ``egnn``: :class:`EGNNPositions`.
    """
    if kind not in NBODY_MODELS:
        raise ValueError(f"kind must be one of {', '.join(NBODY_MODELS)}, got {kind!r}")
    if group not in ("SO(3)", "O(3)"):
        raise ValueError(f"group must be 'SO(3)' or 'O(3)', got {group!r}")
    if kind == "egnn":
        return EGNNPositions(hidden, n_layers)
    backbone = NBodyGNN(hidden, n_layers, residual)
    if kind == "gnn":
        return backbone
    if kind == "fa_gnn":
        return FrameAveragedNBodyModel(backbone, group)
    if kind == "pca_gnn":
        return CanonicalizedNBodyModel(PCANBodyCanonicalizer(group), backbone)
    return CanonicalizedNBodyModel(NBodyFrameCanonicalizer(canon_hidden, canon_layers, group, frame=_plain(frame)), backbone)


_NBODY_KEYS = ("loc", "vel", "charges", "target")


def _nbody_split(split, name: str = "split") -> tuple[torch.Tensor, ...]:
    if not isinstance(split, dict) or any(k not in split for k in _NBODY_KEYS):
        raise ValueError(f"{name} must be a dict with keys {', '.join(_NBODY_KEYS)} (a split of "
                         "symviz.data.nbody.charged_splits), got " + (f"keys {sorted(split)}" if isinstance(split, dict)
                                                                      else type(split).__name__))
    return tuple(split[k] for k in _NBODY_KEYS)


def _position_mse(model, batch):
    loc, vel, charges, target = batch
    return ((model(loc, vel, charges) - target) ** 2).mean()


def train_nbody_model(model: nn.Module, train: dict, *, epochs: int = 20, lr: float = 1e-3, batch_size: int = 100,
                      weight_decay: float = 1e-12, seed: int = 0, device: str = "auto", progress: bool = False):
    """Train an N-body position predictor on a :func:`symviz.data.nbody.charged_splits` split with the position
    MSE through :func:`symviz.train.fit` (Adam, cosine-decayed learning rate); returns the FitResult.

    Every model of :data:`NBODY_MODELS` gets this same recipe (the paper's Adam with learning rate 1e-3, batch 100
    and weight decay 1e-12, here with a cosine schedule over ``epochs`` in place of its long plateau schedule).
    """
    tensors = _nbody_split(train, "train")
    loader = TensorBatches(*tensors, batch_size=batch_size, seed=seed)
    return fit(model, _position_mse, loader, epochs=epochs, optimizer="adam", lr=lr, weight_decay=weight_decay,
               scheduler="cosine", seed=seed, device=device, progress=progress, desc=type(model).__name__)


@torch.no_grad()
def nbody_test_mse(model: nn.Module, split: dict, batch_size: int = 500) -> float:
    """Position MSE of ``model`` on a split (mean over particles, coordinates and systems), without gradients."""
    loc, vel, charges, target = _nbody_split(split)
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    total = 0.0
    for k in range(0, len(loc), batch_size):
        sl = slice(k, k + batch_size)
        pred = model(loc[sl].to(dev), vel[sl].to(dev), charges[sl].to(dev))
        total += float(((pred - target[sl].to(dev)) ** 2).sum())
    model.train(was)
    return total / target.numel()


def nbody_equivariance_error(model: nn.Module, split: dict, n: int = 32, trials: int = 5, seed: int = 0,
                             group: str = "E(3)xS_n") -> float:
    """Worst relative equivariance error of an N-body predictor on the first ``n`` systems of ``split`` under random
    elements of ``group`` (default: rotations, reflections, translations and particle permutations): positions
    transform as points, velocities as vectors, charges are permuted, the output as points. Float64, on a CPU copy."""
    import copy

    from symviz.equivariance import check_equivariance

    loc, vel, charges, _ = _nbody_split(split)
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    m = copy.deepcopy(model).cpu().double().eval()
    return check_equivariance(m, (loc[:n], vel[:n], charges[:n]), ("point", "node_vector", "node_scalar"), "point",
                              group=group, trials=trials, seed=seed).max_error


# ----------------------------------------------------------------------------------------------
# Symmetric inputs: every canonicalizer jumps
# ----------------------------------------------------------------------------------------------

_HALF_TURN_Z = torch.tensor([[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]])


def half_turn_path(x: torch.Tensor, ts) -> torch.Tensor:
    """A straight path from ``Q·x`` (``t = -1``) through a C2-symmetric input (``t = 0``) to ``x`` (``t = 1``).

    ``Q`` is the half turn: ``rot90(·, 2)`` for an image ``x: (C, H, W)``; the rotation by 180° about the z axis for
    a point set ``x: (N, 3)`` (row vectors, ``N`` even). The path is ``x_t = m + t·d`` with ``Q·m = m`` and
    ``Q·d = -d``, so ``x_{-t} = Q·x_t`` exactly (for point sets up to the order of the points, which a
    permutation-invariant canonicalizer ignores):

    * images: ``m = (x + Q x)/2``, ``d = (x − Q x)/2``;
    * point sets, split into halves ``x = [a, b]``: ``m = [p, Q p]`` and ``d = [e, −Q e]`` with ``p = (a + Q b)/2``,
      ``e = (a − Q b)/2``, so that ``x_1 = x`` and ``x_{-1} = [Q b, Q a]``, the points of ``Q x``.

    An equivariant canonicalizer then satisfies ``h(x_{-t}) = Q h(x_t)``: just left and just right of ``t = 0`` its
    choices differ by a half turn, however small ``t`` is. Returns ``(T, *x.shape)`` for the values ``ts``.
    """
    ts = torch.as_tensor(ts, dtype=x.dtype if torch.is_tensor(x) and x.is_floating_point() else torch.float64)
    if ts.ndim != 1 or len(ts) < 1:
        raise ValueError(f"ts must be a 1-D sequence of path parameters, got shape {tuple(ts.shape)}")
    if not torch.is_tensor(x) or not x.is_floating_point():
        raise ValueError(f"x must be a float tensor: an image (C, H, W) or a point set (N, 3), got {type(x).__name__}")
    if x.ndim == 3:
        if x.shape[-1] != x.shape[-2]:
            raise ValueError(f"half_turn_path: images must be square, got (C, H, W) = {tuple(x.shape)}")
        q = torch.rot90(x, 2, dims=(-2, -1))
        m, d = (x + q) / 2, (x - q) / 2
    elif x.ndim == 2 and x.shape[-1] == 3:
        if x.shape[0] % 2:
            raise ValueError(f"half_turn_path: a point set needs an even number of points (paired by the half turn), "
                             f"got N = {x.shape[0]}")
        Q = _HALF_TURN_Z.to(x)
        a, b = x[: len(x) // 2], x[len(x) // 2:]
        p, e = (a + b @ Q.T) / 2, (a - b @ Q.T) / 2
        m, d = torch.cat([p, p @ Q.T]), torch.cat([e, -(e @ Q.T)])
    else:
        raise ValueError(f"x must be an image (C, H, W) or a point set (N, 3), got shape {tuple(x.shape)}")
    return m[None] + ts.to(x).reshape(-1, *([1] * x.ndim)) * d[None]


@torch.no_grad()
def symmetric_path_elements(canonicalizer: nn.Module, path: torch.Tensor) -> torch.Tensor:
    """The group element each input of ``path`` gets: ``(T,)`` C_n indices for an image canonicalizer and
    ``path: (T, C, H, W)``, or ``(T, 3, 3)`` frames (float64, on a copy of the canonicalizer) for a point-set
    canonicalizer and ``path: (T, N, 3)`` (e.g. from :func:`half_turn_path`)."""
    import copy

    if not torch.is_tensor(path) or path.ndim not in (3, 4):
        raise ValueError(f"path must be images (T, C, H, W) or point sets (T, N, 3), got {getattr(path, 'shape', type(path))}")
    if path.ndim == 4:
        return canonicalizer(path).element
    if path.shape[-1] != 3:
        raise ValueError(f"point-set paths must be (T, N, 3), got {tuple(path.shape)}")
    c = copy.deepcopy(canonicalizer).cpu().double().eval()
    return c(path.double()).element


def symmetric_path_frames(canonicalizer: nn.Module, x: torch.Tensor, ts) -> torch.Tensor:
    """``(T, 3, 3)`` frames of a point-set canonicalizer along :func:`half_turn_path` of ``x: (N, 3)`` (float64)."""
    return symmetric_path_elements(canonicalizer, half_turn_path(x.double(), ts))
