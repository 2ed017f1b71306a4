"""The helpers every benchmark uses: one timer, one check of the ``scale`` argument, and the CPU model that
every table of times names (machines of this project differ up to 3.5x in speed)."""
from __future__ import annotations

import os
import platform
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


def cpu_model(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> str:
    """The CPU's marketing name, e.g. ``AMD EPYC 7B13``: the first ``model name`` in ``cpuinfo`` (Linux), else
    ``platform.processor()``, else the architecture (``x86_64``), else ``"unknown CPU"``."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip().lower() == "model name" and value.strip():
                    return " ".join(value.split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_info() -> dict:
    """What a table of times must name: CPU model, logical cores, GPU (or "no GPU") and torch version."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "gpu": gpu, "torch": torch.__version__}
