"""Metrics and claims that a chapter records for ``symviz run``.

A chapter's Result cell calls::

    report.start("04_multichannel_egnn", REPORT_PATH)     # REPORT_PATH is a papermill parameter
    report.metric("mse_egnn", 0.0123)
    report.claim("MC-EGNN test MSE below EGNN", mc < single, value={"mc": mc, "egnn": single})
    report.check()                                         # raises if any claim does not hold

When ``symviz run`` executes a chapter it passes ``REPORT_PATH`` (a JSON file); the file is rewritten
after every call, so a chapter that fails half way still leaves what it measured. Run by hand
(``REPORT_PATH = None``) the calls only print.

    >>> r = Report("demo")
    >>> r.metric("accuracy", 0.91)
    >>> r.claim("accuracy above chance", 0.91 > 0.1, value=0.91)
    [holds] accuracy above chance  (0.91)
    True
    >>> r.holds
    True
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

__all__ = ["Report", "start", "metric", "claim", "check", "current", "ClaimFailed"]


class ClaimFailed(AssertionError):
    """Raised by :func:`check` when a chapter's claim does not hold on the numbers it computed."""


def _jsonable(value: Any) -> Any:
    """Convert numpy/torch scalars and containers into plain JSON values."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:  # numpy / torch scalar
        return _jsonable(value.item())
    if hasattr(value, "tolist"):
        return _jsonable(value.tolist())
    return str(value)


class Report:
    """What one chapter run measured (``metrics``) and asserted (``claims``)."""

    def __init__(self, chapter: str, path: str | os.PathLike | None = None, verbose: bool = True):
        if not isinstance(chapter, str) or not chapter:
            raise ValueError(f"chapter must be a non-empty string, got {chapter!r}")
        self.chapter = chapter
        self.path = Path(path) if path else None
        self.verbose = verbose
        self.metrics: dict[str, Any] = {}
        self.claims: list[dict[str, Any]] = []
        try:  # the threads a claim was measured with are part of its setting (`make robustness` varies them)
            import torch
            self.metrics["torch_threads"] = torch.get_num_threads()
        except ImportError:  # pragma: no cover - torch is a dependency
            pass
        self._write()

    def metric(self, name: str, value: Any) -> None:
        """Record a measured number (or small table) under ``name``."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"metric name must be a non-empty string, got {name!r}")
        self.metrics[name] = _jsonable(value)
        self._write()

    def claim(self, text: str, holds: Any, value: Any = None) -> bool:
        """Record whether the chapter's claim ``text`` holds on this run's numbers; returns it."""
        if not isinstance(text, str) or not text:
            raise ValueError(f"claim text must be a non-empty string, got {text!r}")
        ok = bool(holds)
        self.claims.append({"text": text, "value": _jsonable(value), "holds": ok})
        if self.verbose:
            print(f"[{'holds' if ok else 'FAILS'}] {text}" + ("" if value is None else f"  ({_short(value)})"))
        self._write()
        return ok

    @property
    def holds(self) -> bool:
        return all(c["holds"] for c in self.claims)

    def check(self) -> None:
        """Raise :class:`ClaimFailed` naming every claim that does not hold."""
        if not self.claims:
            raise ClaimFailed(f"{self.chapter}: no claims were recorded; a Result cell must state its claims")
        failed = [c["text"] for c in self.claims if not c["holds"]]
        if failed:
            raise ClaimFailed(f"{self.chapter}: claims that do not hold: " + "; ".join(failed))

    def to_dict(self) -> dict[str, Any]:
        return {"chapter": self.chapter, "metrics": self.metrics, "claims": self.claims}

    def _write(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2))
        tmp.replace(self.path)


def _short(value: Any) -> str:
    text = json.dumps(_jsonable(value))
    return text if len(text) < 120 else text[:117] + "..."


_current: Report | None = None


def start(chapter: str, path: str | os.PathLike | None = None, verbose: bool = True) -> Report:
    """Begin recording for ``chapter``; ``path`` is the ``REPORT_PATH`` papermill parameter (or None)."""
    global _current
    _current = Report(chapter, path, verbose=verbose)
    return _current


def current() -> Report:
    if _current is None:
        raise RuntimeError("no report started: call symviz.report.start(CHAPTER, REPORT_PATH) first")
    return _current


def metric(name: str, value: Any) -> None:
    current().metric(name, value)


def claim(text: str, holds: Any, value: Any = None) -> bool:
    return current().claim(text, holds, value)


def check() -> None:
    current().check()
