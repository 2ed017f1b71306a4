"""symviz: the tested code behind the symviz notebooks on symmetry in deep learning.

Submodules are imported lazily so that ``import symviz`` stays fast and a chapter only pays for
what it uses::

    >>> import symviz
    >>> symviz.groups.CyclicGroup(4).order
    4
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = ("groups", "reps", "equivariance", "report", "train", "checks", "losses", "data", "nn", "viz", "chapters", "run")

__all__ = list(_SUBMODULES) + ["fit", "resolve_device", "__version__"]


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"symviz.{name}")
    if name in ("fit", "resolve_device"):
        return getattr(importlib.import_module("symviz.train"), name)
    raise AttributeError(f"module 'symviz' has no attribute {name!r}")
