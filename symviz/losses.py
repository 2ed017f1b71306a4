"""Small, tested, cited loss functions (canonicalization prior, spectral decoupling, ...).

Each function states the equation it implements and the paper it comes from.
"""
from __future__ import annotations

import torch

__all__: list[str] = []
