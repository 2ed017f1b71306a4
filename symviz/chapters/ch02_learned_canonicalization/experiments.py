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
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from symviz.data.rotated_images import random_rot90
from symviz.train import TensorBatches, accuracy, fit
from symviz.nn.canonical import (C4ImageCanonicalizer, CanonicalizedModel, MomentImageCanonicalizer, PCAFrameCanonicalizer,
                        PointFrameCanonicalizer, PointNetClassifier)
from symviz.nn.gcnn import P4CNN, SmallCNN

__all__ = ["IMAGE_MODELS", "POINTSET_MODELS", "make_image_model", "make_pointset_model", "train_classifier", "TensorBatches",
           "accuracy", "rot90_augment", "se3_invariance_error"]

IMAGE_MODELS = ("cnn", "cnn_augmented", "moments", "learned", "p4cnn")
"""Names of the image classifiers, in the order the chapter shows them."""

POINTSET_MODELS = ("pointnet", "pca", "learned")


def rot90_augment(x: torch.Tensor) -> torch.Tensor:
    """Rotate each image of a batch ``(B, C, H, W)`` by a fresh random multiple of 90° (augmentation)."""
    return random_rot90(x)[0]


def _plain(fn: Callable | None) -> Callable | None:
    """``fn`` behind a plain function: a model holding it can be deep-copied (:func:`se3_invariance_error` copies
    the model) whatever ``fn`` is (the notebook passes a ``symviz.report.Accepted`` wrapper)."""
    if fn is None:
        return None
    return lambda *args: fn(*args)


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

    return fit(model, loss_fn, loader, epochs=epochs, lr=lr, seed=seed, device=device, progress=progress,
               desc=type(model).__name__)


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
