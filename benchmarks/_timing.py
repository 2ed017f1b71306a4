"""The helpers every benchmark uses: one timer and one check of the ``scale`` argument."""
from __future__ import annotations

import time
from typing import Callable


def time_ms(fn: Callable[[], object], reps: int, warmup: int = 1) -> float:
    """Mean wall time of ``fn()`` in milliseconds over ``reps`` calls, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps * 1e3


def check_scale(scale: str) -> None:
    """Every ``bench_*.run(scale)`` accepts the chapters' two scales only."""
    if scale not in ("quick", "full"):
        raise ValueError(f"scale must be 'quick' or 'full', got {scale!r}")
