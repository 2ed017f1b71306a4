import os

import pytest

os.environ.setdefault("SYMVIZ_STATIC", "1")      # tests never have a widget frontend
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    try:
        import matplotlib.pyplot as plt
        plt.close("all")
    except ImportError:  # pragma: no cover
        pass


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    """A private symviz cache folder, so tests never touch ~/.cache/symviz."""
    monkeypatch.setenv("SYMVIZ_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def one_torch_thread():
    """Tiny models: one torch thread is as fast, and far faster on a busy machine (no spin-waiting)."""
    from symviz.train import torch_threads

    with torch_threads(1):
        yield
