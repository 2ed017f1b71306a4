"""Metrics and claims that a chapter records for ``symviz run``.

A chapter's Result cell calls::

    report.start("04_multichannel_egnn", REPORT_PATH)     # REPORT_PATH is a papermill parameter
    report.metric("mse_egnn", 0.0123)
    report.claim("MC-EGNN test MSE below EGNN", mc < single, value={"mc": mc, "egnn": single}, kind="paper")
    report.claim("both models E(3)-equivariant to 1e-5", err < 1e-5, value=err, kind="sanity")
    report.check()            # under `symviz run`: raises if a claim fails; by hand: a visible warning

Claims have a **kind**: ``"paper"`` is the paper's empirical claim, measured against a baseline trained in the
same run; ``"sanity"`` holds by construction (exact invariance, a parameter count) and guards the code.

When ``symviz run`` executes a chapter it passes ``REPORT_PATH`` (a JSON file); the file is rewritten
after every call, so a chapter that fails half way still leaves what it measured, and :func:`check` is
strict (a failing claim raises :class:`ClaimFailed`, which fails the chapter). Run by hand
(``REPORT_PATH = None``) the calls only print, and a failing claim shows a warning and lets Run All go on
(``SYMVIZ_STRICT=1`` makes it strict there too).

Exercises: :func:`accept` runs a chapter's check on the learner's implementation and returns it when it
passes, otherwise the tested reference (the learner's code is never overwritten); the returned callable
records whether the rest of the chapter used it (``"exercises"`` in the report).

    >>> r = Report("demo")
    >>> r.metric("accuracy", 0.91)
    >>> r.claim("accuracy above chance", 0.91 > 0.1, value=0.91)
    [holds] (paper) accuracy above chance  (0.91)
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

__all__ = ["Report", "start", "metric", "claim", "check", "current", "ClaimFailed", "ClaimWarning", "accept",
           "Accepted", "CLAIM_KINDS", "exercises"]

CLAIM_KINDS = ("paper", "sanity")
_STRICT_ENV = "SYMVIZ_STRICT"          # "1": check() raises even without a REPORT_PATH
_SOLUTIONS_ENV = "SYMVIZ_SOLUTIONS"    # "1" (set by `symviz run`): accept() takes the notebook's solution


class ClaimFailed(AssertionError):
    """Raised by :func:`check` when a chapter's claim does not hold on the numbers it computed."""


class ClaimWarning(UserWarning):
    """Warned by :func:`check` in an interactive session when a claim does not hold (execution goes on)."""


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
        self.exercises: list[dict[str, Any]] = _exercises  # shared with accept(): exercises come before the Result cell
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

    def claim(self, text: str, holds: Any, value: Any = None, kind: str = "paper") -> bool:
        """Record whether the chapter's claim ``text`` holds on this run's numbers; returns it.

        ``kind``: ``"paper"`` (the paper's empirical claim, against a baseline of the same run) or ``"sanity"``
        (holds by construction)."""
        if not isinstance(text, str) or not text:
            raise ValueError(f"claim text must be a non-empty string, got {text!r}")
        if kind not in CLAIM_KINDS:
            raise ValueError(f"claim kind must be one of {', '.join(CLAIM_KINDS)}, got {kind!r}")
        ok = bool(holds)
        self.claims.append({"text": text, "value": _jsonable(value), "holds": ok, "kind": kind})
        if self.verbose:
            print(f"[{'holds' if ok else 'FAILS'}] ({kind}) {text}" + ("" if value is None else f"  ({_short(value)})"))
        self._write()
        return ok

    @property
    def strict(self) -> bool:
        """True under ``symviz run`` (a report file) or with ``SYMVIZ_STRICT=1``: :meth:`check` raises."""
        return self.path is not None or os.environ.get(_STRICT_ENV, "") == "1"

    @property
    def holds(self) -> bool:
        return all(c["holds"] for c in self.claims)

    @property
    def failed(self) -> list[str]:
        """The texts of the claims that do not hold."""
        return [c["text"] for c in self.claims if not c["holds"]]

    def check(self) -> None:
        """Strict (:attr:`strict`): raise :class:`ClaimFailed` naming the claims that do not hold. Interactive:
        show a visible warning naming them, so Run All goes on (they stay in :attr:`failed`). A report without
        any claim raises in both modes (the chapter is broken, not the run). Returns None, so a Result cell
        ending in ``report.check()`` shows nothing more."""
        if not self.claims:  # a chapter's own defect, not something a learner caused: always an error
            raise ClaimFailed(f"{self.chapter}: no claims were recorded; a Result cell must state its claims")
        failed = self.failed
        if os.environ.get("SYMVIZ_SMOKE", "").strip() not in ("", "0"):  # `symviz run --smoke`: nothing is asserted
            print(f"smoke run: {len(self.claims)} claims recorded, not asserted (each training stopped after a few steps)")
            return None
        if failed and self.strict:
            raise ClaimFailed(f"{self.chapter}: claims that do not hold: " + "; ".join(failed))
        if failed:
            _warn(f"{self.chapter}: {len(failed)} of {len(self.claims)} claims do not hold on this run: "
                  + "; ".join(failed) + ". If you changed a parameter or an exercise, that may be why; "
                  "under `symviz run` this fails the chapter.")
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"chapter": self.chapter, "metrics": self.metrics, "claims": self.claims, "exercises": self.exercises}

    def _write(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # a temporary file of this process's own: the worker processes of symviz.train.parallel_runs (and the kernel,
        # as it takes their results back) may write the same report at once; with one shared temporary name, one
        # writer's replace could find the file already moved by another (FileNotFoundError)
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(self.to_dict(), indent=2))
            tmp.replace(self.path)
        finally:
            tmp.unlink(missing_ok=True)


def _warn(message: str) -> None:
    """A warning a learner sees: a :class:`ClaimWarning` (a notebook front end shows it in a highlighted box;
    the core draws nothing itself) and the same text on stderr, so it is in the cell output whatever the
    warning filters say."""
    import sys
    import warnings

    print(f"WARNING (claim check): {message}", file=sys.stderr)
    warnings.warn(message, ClaimWarning, stacklevel=3)


def _short(value: Any) -> str:
    text = json.dumps(_jsonable(value))
    return text if len(text) < 120 else text[:117] + "..."


_current: Report | None = None
_exercises: list[dict[str, Any]] = []


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


def claim(text: str, holds: Any, value: Any = None, kind: str = "paper") -> bool:
    return current().claim(text, holds, value, kind=kind)


def check() -> None:
    current().check()


def exercises() -> list[dict[str, Any]]:
    """The exercises :func:`accept` has recorded in this session (a copy)."""
    return [dict(e) for e in _exercises]


def used_exercises() -> set[tuple[str, str]]:
    """``(name, source)`` of every recorded exercise marked ``used_downstream`` in this process."""
    return {(e["name"], e["source"]) for e in _exercises if e["used_downstream"]}


def mark_used(keys: Any) -> None:
    """Mark the recorded exercises ``(name, source)`` in ``keys`` as used downstream (a worker process of
    :func:`symviz.train.parallel_runs` used them: its calls never reach this process's record otherwise)."""
    changed = False
    for e in _exercises:
        if (e["name"], e["source"]) in keys and not e["used_downstream"]:
            e["used_downstream"] = changed = True
    if changed and _current is not None:
        _current._write()


class Accepted:
    """What :func:`accept` returns: calls (and attribute access) go to the implementation in use, and the first
    call marks the exercise ``used_downstream``.

    ``source`` is ``"learner"``, ``"solution"`` or ``"reference"``; ``passed`` whether the checked implementation
    passed; ``result`` the check's :class:`symviz.checks.CheckResult` (or the error it raised)."""

    def __init__(self, fn: Any, record: dict[str, Any], result: Any):
        self.__wrapped__ = fn
        self._record, self.result = record, result
        self.__doc__ = getattr(fn, "__doc__", None)
        self.__name__ = getattr(fn, "__name__", record["name"])

    @property
    def source(self) -> str:
        return self._record["source"]

    @property
    def passed(self) -> bool:
        return self._record["passed"]

    def __call__(self, *args, **kwargs):
        if not self._record["used_downstream"]:
            self._record["used_downstream"] = True
            if _current is not None:
                _current._write()
        return self.__wrapped__(*args, **kwargs)

    def __getattr__(self, name: str):
        if name.startswith("__") or name in ("_record", "result"):  # copy/pickle probe dunders before __init__ ran
            raise AttributeError(name)
        return getattr(self.__dict__["__wrapped__"], name)

    def __repr__(self) -> str:
        return f"<accepted {self._record['name']!r}: the {self.source}'s implementation>"

    def __reduce__(self):
        # a trained model that holds this comes back pickled from a worker process (symviz.train.parallel_runs):
        # unpickled where the exercise is registered, it joins that registration, with the worker's use counted
        return _restore_accepted, (self.__wrapped__, dict(self._record), self.result)


def _restore_accepted(fn: Any, record: dict[str, Any], result: Any) -> Accepted:
    """Unpickle an :class:`Accepted`: share this process's record of the same exercise (a call made in a worker
    process marks it ``used_downstream`` here too), or keep the pickled record where none is registered."""
    live = next((e for e in _exercises if e["name"] == record["name"] and e["source"] == record["source"]), None)
    if live is None:
        return Accepted(fn, record, result)
    if record["used_downstream"] and not live["used_downstream"]:
        live["used_downstream"] = True
        if _current is not None:
            _current._write()
    return Accepted(fn, live, result)


def accept(name: str, candidate: Any, check: Any, reference: Any, *, solution: Any = None) -> Accepted:
    """Use the learner's ``candidate`` when ``check(candidate)`` passes, otherwise ``reference``.

    The check (a chapter's ``check_*`` function, returning a truthy :class:`symviz.checks.CheckResult`) prints
    what it verified or what failed, with a counterexample; an exception inside the learner's code (e.g. the
    template's ``NotImplementedError``) counts as not passed. The learner's code is never changed: the return
    value is a new name bound by the notebook (``my_fn = report.accept("...", my_fn, check_fn, reference)``).

    ``solution``: the notebook's own solution (under its own name). Under ``symviz run`` (``SYMVIZ_SOLUTIONS=1``)
    it is checked and used instead of ``candidate``, so the executed chapter trains what the exercise builds; in a
    student version (solutions stripped) it fails the check and the reference takes over.

    The exercise is recorded (``name``, ``source``, ``passed``, ``used_downstream``, ``message``) in the report.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"exercise name must be a non-empty string, got {name!r}")
    if not callable(check) or not callable(reference):
        raise TypeError("accept(name, candidate, check, reference): check and reference must be callable")
    use_solution = solution is not None and os.environ.get(_SOLUTIONS_ENV, "") == "1"
    tried, source = (solution, "solution") if use_solution else (candidate, "learner")
    try:
        result = check(tried)
        passed = bool(result)
        message = getattr(result, "message", str(result))
    except Exception as err:  # the learner's code raised: not passed, and say so
        result, passed = err, False
        message = f"{type(err).__name__}: {err}"
        print(f"NOT YET: your implementation raised {message}")
    if not passed:
        source = "reference"
        print(f"The rest of the chapter uses the tested reference ({getattr(reference, '__qualname__', reference)!s}); "
              "your code is unchanged: fix it and run this cell again.")
    record = {"name": name, "source": source, "passed": passed, "used_downstream": False, "message": message}
    for i, old in enumerate(_exercises):  # re-running the cell replaces the exercise's record
        if old["name"] == name:
            _exercises[i] = record
            break
    else:
        _exercises.append(record)
    if _current is not None:
        _current._write()
    return Accepted(tried if passed else reference, record, result)
