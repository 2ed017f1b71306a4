"""``symviz run``: execute chapters with papermill into ``build/`` and summarise what they measured.

    symviz run [CHAPTER ...] [--scale quick|full] [--device auto|cpu|cuda|mps] [--seed N] [--threads N]
               [--out build] [--jobs N] [--timeout S] [--no-html] [--notebooks DIR] [--student] [--smoke]

A chapter is named by its file stem (``04_multichannel_egnn``), its number (``04`` or ``4``) or its
topic (``multichannel_egnn``). Each chapter runs in its own process (so its peak memory is its own),
gets the papermill parameters ``SCALE``, ``DEVICE``, ``SEED`` and ``REPORT_PATH``, and is written to
``<out>/notebooks/``; HTML goes to ``<out>/html/`` and the summary to ``<out>/results.json``::

    {"seed": 0, "threads": "default"|N, "scale", "device", "student", "smoke", "complete": true|false,
     "chapters": [{"name", "status": "ok"|"failed", "seconds", "peak_rss_mb", "device", "scale",
                   "seed", "threads": "default"|N, "torch_threads": int|null,
                   "metrics": {...}, "claims": [{"text", "value", "holds", "kind": "paper"|"sanity"}],
                   "exercises": [{"name", "source": "learner"|"solution"|"reference", "passed",
                                  "used_downstream", "message"}], "error": null|"cell N: ..."}]}

``--seed N`` (default 0) is the chapters' base seed: a chapter uses SEED, SEED+1, ... ``--threads N`` gives
torch N intra-op threads in every chapter's kernel: ``SYMVIZ_THREADS`` (read by
:func:`symviz.train.chapter_threads`), ``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS`` are set for the kernel and
torch is pinned to N threads when the kernel starts, so no ``torch.set_num_threads(...)`` in a chapter changes
it. Without ``--threads`` the chapter and torch decide (recorded as ``"default"``).
``torch_threads`` is what ``torch.get_num_threads()`` reported in the kernel after the last executed cell
(null when the chapter never imported torch); with ``--threads N`` a chapter where it is not N fails.

Progress: a line when each chapter starts and one when it ends. When stdout is a terminal, a status line
below them is redrawn in place with each running chapter's current code cell (``cell k/n``) and time; when
it is not (CI, pipes, files) there is no status line, so logs stay clean.

The exit status is 0 when every chapter ran and every claim holds, 1 otherwise, 2 for bad arguments.
Source notebooks are never written to.
"""
from __future__ import annotations

import argparse
import json
import math
import numbers
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence, TextIO

__all__ = ["main", "run_chapters", "discover_chapters", "resolve_chapters", "UsageError"]

SCALES = ("quick", "full")
DEVICES = ("auto", "cpu", "cuda", "mps")
_CELL = "@symviz-cell "          # child -> parent progress line: "@symviz-cell k n"
_THREADS_ENV = "SYMVIZ_TORCH_THREADS"        # kernel: pin torch to this many threads
SMOKE_STEPS = 2                              # optimizer steps per training in `symviz run --smoke`
_KERNEL_REPORT_ENV = "SYMVIZ_KERNEL_REPORT"  # kernel: write {"torch_threads": n} here after each cell


class UsageError(ValueError):
    """Bad arguments to ``symviz run`` (unknown chapter, scale or device, bad seed, threads, jobs or timeout)."""


def default_notebooks_dir() -> Path:
    here = Path.cwd() / "notebooks"
    if here.is_dir():
        return here
    return Path(__file__).resolve().parents[1] / "notebooks"


def discover_chapters(notebooks: Path) -> list[Path]:
    """Chapter notebooks ``NN_topic.ipynb`` in ``notebooks``, sorted by number."""
    if not notebooks.is_dir():
        raise UsageError(f"notebooks folder {str(notebooks)!r} does not exist; run from the repository root or pass --notebooks")
    return sorted(p for p in notebooks.glob("[0-9][0-9]_*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def resolve_chapters(names: Sequence[str], available: Sequence[Path]) -> list[Path]:
    """Map user-given names to chapter paths; raise :class:`UsageError` listing the valid choices."""
    if not names:
        return list(available)
    by = {}
    for p in available:
        stem = p.stem
        num, _, topic = stem.partition("_")
        for key in (stem, num, str(int(num)), topic):
            by.setdefault(key, p)
    out = []
    for n in names:
        key = n[:-6] if n.endswith(".ipynb") else n
        key = Path(key).name
        if key not in by:
            valid = ", ".join(p.stem for p in available) or "(none found)"
            raise UsageError(f"unknown chapter {n!r}; valid chapters: {valid}")
        if by[key] not in out:
            out.append(by[key])
    return out


# --- argument checks (one message for the command line and the Python API) -------------------------------

def _check_int(option: str, value, minimum: int) -> int:
    """``value`` as an int >= ``minimum``; strings from the command line are parsed here too."""
    what = "a non-negative integer" if minimum == 0 else "a positive integer"
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise UsageError(f"{option} must be {what}, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise UsageError(f"{option} must be {what}, got {value!r}")
    return int(value)


def _check_timeout(value) -> float | None:
    """Seconds per cell: a positive finite number, or None for no limit."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise UsageError(f"--timeout must be a positive number of seconds, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise UsageError(f"--timeout must be a positive number of seconds, got {value!r}")
    return float(value)


# jsonschema, which nbformat imports (papermill does in every chapter's child process, and plotly's notebook
# renderer in the kernel at a chapter's first figure), loads the optional package ``rfc3987_syntax`` at import
# for its "iri" format checks, and that package builds a grammar parser: 1.1-1.4 s of every chapter on this
# project's CPUs. Notebook validation never checks that format (nbformat's schemas use no "format" keyword), so
# a batch run tells Python the package is absent; jsonschema then simply has no "iri" checker. Interactive
# sessions (JupyterLab) are left alone.
SKIPPED_OPTIONAL_IMPORTS = ("rfc3987_syntax",)


def _skip_slow_optional_imports() -> None:
    for name in SKIPPED_OPTIONAL_IMPORTS:
        sys.modules.setdefault(name, None)   # `import name` now raises ImportError, which jsonschema expects


# --- inside the kernel ---------------------------------------------------------------------------------

def load_ipython_extension(ipython) -> None:
    """Loaded into every chapter's kernel by ``symviz run`` (``--ext=symviz.run``).

    With ``SYMVIZ_TORCH_THREADS=N`` torch gets N intra-op threads and keeps them: the chapter's own
    ``torch.set_num_threads`` calls are ignored, so ``--threads`` means what it says. With
    ``SYMVIZ_KERNEL_REPORT=path`` the thread count torch reports is written there after every cell. Optional
    imports that only cost time (:data:`SKIPPED_OPTIONAL_IMPORTS`) are skipped.
    """
    _skip_slow_optional_imports()
    pinned = os.environ.get(_THREADS_ENV)
    if pinned:
        import torch

        n = int(pinned)
        torch.set_num_threads(n)
        real = torch.set_num_threads

        def set_num_threads(k: int) -> None:
            """Ignored: ``symviz run --threads`` pinned torch's intra-op threads for this kernel."""

        set_num_threads.__wrapped__ = real
        torch.set_num_threads = set_num_threads
    report = os.environ.get(_KERNEL_REPORT_ENV)
    if report:
        last = [object()]

        def write_threads(*_args) -> None:
            torch = sys.modules.get("torch")
            n = torch.get_num_threads() if torch is not None and hasattr(torch, "get_num_threads") else None
            if n != last[0]:
                last[0] = n
                Path(report).write_text(json.dumps({"torch_threads": n}))

        write_threads()
        ipython.events.register("post_run_cell", write_threads)


# --- the child process: one chapter ----------------------------------------------------------------------

def _code_cells(nb: Path) -> int:
    import nbformat

    cells = nbformat.read(nb, as_version=4).cells
    return sum(c.cell_type == "code" and bool(c.source.strip()) for c in cells)


_ENGINE = "symviz"   # papermill engine name registered by _register_engine()
AUTOSAVE_S = 30      # seconds between writes of the output notebook while a chapter runs


def _register_engine() -> str:
    """Register papermill's nbclient engine with fewer writes of the output notebook; return its name.

    Papermill rewrites the whole output notebook before and after every cell (markdown ones too): ~90
    writes of a notebook that grows to several MB of figures, 1-2 s of a chapter on this project's CPUs
    (``benchmarks/profile.md``). This engine writes it when the run starts, at most every
    ``AUTOSAVE_S`` seconds while it runs (so a long cell's progress still reaches the disk) and when it
    ends, failed or not; the cells, their outputs and their metadata (papermill's per-cell durations) are
    the same.
    """
    from datetime import timedelta

    from papermill.engines import NBClientEngine, NotebookExecutionManager, papermill_engines

    class FewerSaves(NotebookExecutionManager):
        final = False

        def save(self, force: bool = False, **kwargs) -> None:
            due = self.now() - self.last_save_time >= timedelta(seconds=self.autosave_cell_every)
            if force or self.final or due:
                super().save(**kwargs)

        def notebook_start(self, **kwargs) -> None:
            super().notebook_start(**kwargs)
            self.save(force=True)

        def notebook_complete(self, **kwargs) -> None:
            self.final = True
            super().notebook_complete(**kwargs)

    class Engine(NBClientEngine):
        @classmethod
        def execute_notebook(cls, nb, kernel_name, output_path=None, progress_bar=True, log_output=False,
                             autosave_cell_every=None, **kwargs):
            # papermill's Engine.execute_notebook with our execution manager
            every = AUTOSAVE_S if autosave_cell_every is None else autosave_cell_every
            nb_man = FewerSaves(nb, output_path=output_path, progress_bar=progress_bar, log_output=log_output,
                                autosave_cell_every=every)
            nb_man.notebook_start()
            try:
                cls.execute_managed_notebook(nb_man, kernel_name, log_output=log_output, **kwargs)
            finally:
                nb_man.cleanup_pbar()
                nb_man.notebook_complete()
            return nb_man.nb

    papermill_engines.register(_ENGINE, Engine)
    return _ENGINE


def _one(nb: Path, out: Path, scale: str, device: str, timeout: float | None, seed: int = 0,
         threads: int | None = None, progress: TextIO | None = None) -> dict:
    """Execute one chapter (runs in a child process so that its peak memory is measured alone).

    ``progress``: where ``@symviz-cell k n`` lines go as code cells start (None: nowhere).
    """
    import warnings

    warnings.filterwarnings("ignore")
    import papermill as pm

    name = nb.stem
    report_path = out / "reports" / f"{name}.json"
    kernel_report = out / "reports" / f"{name}.kernel.json"
    report_path.parent.mkdir(parents=True, exist_ok=True)
    for stale in (report_path, kernel_report):
        if stale.exists():
            stale.unlink()
    os.environ[_KERNEL_REPORT_ENV] = str(kernel_report.resolve())  # the kernel inherits this environment
    dest = out / "notebooks" / nb.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    hooks = {}
    if progress is not None:
        total = _code_cells(nb) + 1  # papermill adds the injected-parameters cell
        started = [0]

        def on_cell_execute(**_kw) -> None:
            started[0] += 1
            progress.write(f"{_CELL}{started[0]} {max(total, started[0])}\n")
            progress.flush()

        hooks["on_cell_execute"] = on_cell_execute
    error = None
    t0 = time.perf_counter()
    try:
        pm.execute_notebook(
            str(nb), str(dest),
            parameters={"SCALE": scale, "DEVICE": device, "SEED": seed, "REPORT_PATH": str(report_path.resolve())},
            cwd=str(nb.parent), kernel_name="python3", progress_bar=False, log_output=False,
            execution_timeout=timeout, request_save_on_cell_execute=False,
            extra_arguments=["--ext=symviz.run"], engine_name=_register_engine(), **hooks,
        )
    except pm.PapermillExecutionError as err:
        # papermill inserts one "injected-parameters" cell: count cells as the learner sees them
        src_cell = err.cell_index if err.cell_index is not None else -1
        try:
            import nbformat
            cells = [c for c in nbformat.read(dest, as_version=4).cells
                     if "papermill-error-cell-tag" not in c.metadata.get("tags", [])]
            injected = [i for i, c in enumerate(cells) if "injected-parameters" in c.metadata.get("tags", [])]
            if injected and injected[0] < src_cell:
                src_cell -= 1
        except Exception:
            pass
        msg = str(err.evalue).strip().splitlines()[0] if str(err.evalue).strip() else ""
        error = f"cell {src_cell + 1}: {err.ename}: {msg}"
    except Exception as err:  # kernel died, timeout, missing kernel...
        error = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0  # KiB on Linux
    metrics, claims, exercises = {}, [], []
    if report_path.exists():
        try:
            rep = json.loads(report_path.read_text())
            metrics, claims, exercises = rep.get("metrics", {}), rep.get("claims", []), rep.get("exercises", [])
        except json.JSONDecodeError:
            error = error or "report file is not valid JSON"
    torch_threads = None
    try:
        torch_threads = json.loads(kernel_report.read_text()).get("torch_threads")
        kernel_report.unlink()
    except (OSError, ValueError):
        pass
    if error is None and threads is not None and torch_threads != threads:
        error = (f"--threads {threads} asked for {threads} torch threads but the kernel reported {torch_threads} "
                 "(is symviz importable by the python3 kernel?)")
    if error is None and not claims:
        error = "the chapter recorded no claims (its Result cell must call symviz.report.claim)"
    smoke = os.environ.get("SYMVIZ_SMOKE", "").strip() not in ("", "0")
    if error is None and not smoke and not all(c.get("holds") for c in claims):
        error = "claims that do not hold: " + "; ".join(c["text"] for c in claims if not c.get("holds"))
    return {"name": name, "status": "ok" if error is None else "failed", "seconds": round(seconds, 1),
            "peak_rss_mb": round(peak, 1), "device": device, "scale": scale, "seed": seed,
            "threads": "default" if threads is None else threads, "torch_threads": torch_threads,
            "metrics": metrics, "claims": claims, "exercises": exercises, "error": error}


def _resolved_device(device: str) -> str:
    if device != "auto":
        return device
    try:
        from symviz.train import resolve_device
        return resolve_device("auto").type
    except Exception:  # torch missing: the chapter will say so itself
        return "cpu"


# --- the parent: progress on the terminal ----------------------------------------------------------------

class _Progress:
    """Start and end lines for every chapter; on a terminal also one status line redrawn in place.

    Several chapters may run at once (``--jobs``): every permanent line names its chapter, and the status
    line shows all running chapters. Not a terminal: no status line and no carriage returns at all.
    """

    def __init__(self, stream: TextIO, enabled: bool, live: bool):
        self.stream, self.enabled, self.live = stream, enabled, live and enabled
        self.lock = threading.Lock()
        self.running: dict[str, list] = {}  # name -> [cell, cells, t0]
        self.drawn = False
        self._stop = threading.Event()
        self._ticker = None
        if self.live:  # the elapsed time keeps moving during a long cell
            self._ticker = threading.Thread(target=self._tick, daemon=True)
            self._ticker.start()

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            with self.lock:
                self._draw()

    def close(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        with self.lock:
            self._clear()

    def _clear(self) -> None:
        if self.drawn:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self.drawn = False

    def _draw(self) -> None:
        if not self.live or not self.running:
            self._clear()
            return
        now = time.perf_counter()
        parts = []
        for name, (k, n, t0) in self.running.items():
            cells = f"cell {k}/{n}" if n else "kernel starting"
            if len(self.running) == 1 and n:
                filled = int(20 * k / n)
                parts.append(f"  {name} [{'#' * filled}{'.' * (20 - filled)}] {cells} {now - t0:4.0f} s")
            else:
                parts.append(f"{name} {cells} {now - t0:.0f} s")
        text = parts[0] if parts[0].startswith("  ") else "  " + " | ".join(parts)
        width = shutil.get_terminal_size((100, 24)).columns - 1
        self.stream.write("\r\x1b[2K" + text[:width])
        self.stream.flush()
        self.drawn = True

    def line(self, text: str) -> None:
        if not self.enabled:
            return
        with self.lock:
            self._clear()
            self.stream.write(text + "\n")
            self._draw()
            self.stream.flush()

    def start(self, name: str) -> None:
        with self.lock:
            self.running[name] = [0, 0, time.perf_counter()]
        self.line(f"  {name:<32} started")

    def cell(self, name: str, k: int, n: int) -> None:
        with self.lock:
            if name in self.running:
                self.running[name][:2] = [k, n]
                self._draw()

    def done(self, r: dict) -> None:
        with self.lock:
            self.running.pop(r["name"], None)
        self.line(f"  {r['name']:<32} {r['status']:<7} {r['seconds']:>7.1f} s" + (f"   {r['error']}" if r["error"] else ""))


def _failed(nb: Path, t0: float, device: str, scale: str, seed: int, threads: int | None, error: str) -> dict:
    return {"name": nb.stem, "status": "failed", "seconds": round(time.perf_counter() - t0, 1), "peak_rss_mb": None,
            "device": device, "scale": scale, "seed": seed, "threads": "default" if threads is None else threads,
            "torch_threads": None, "metrics": {}, "claims": [], "exercises": [], "error": error}


def _run_child(nb: Path, out: Path, scale: str, device: str, timeout: float | None, seed: int = 0,
               threads: int | None = None, on_cell=None, smoke: bool = False) -> dict:
    """Run :func:`_one` in a fresh process. Its stdout carries only ``@symviz-cell k n`` lines (passed to
    ``on_cell(k, n)``) and the result as one JSON line; the kernel's own output goes to its stderr."""
    env = dict(os.environ)
    env["SYMVIZ_STATIC"] = "1"
    if smoke:
        env["SYMVIZ_SMOKE"] = str(SMOKE_STEPS)
    else:
        env.pop("SYMVIZ_SMOKE", None)
    env.setdefault("SYMVIZ_SOLUTIONS", "1")  # report.accept() checks and uses each exercise's solution (0: the learner's)
    env.setdefault("PLOTLY_RENDERER", "plotly_mimetype+notebook")
    env.setdefault("PYTHONWARNINGS", "ignore")
    env.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    env.pop(_THREADS_ENV, None)
    if threads is not None:  # SYMVIZ_THREADS: what symviz.train.chapter_threads reads inside the chapter
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "SYMVIZ_THREADS", _THREADS_ENV):
            env[var] = str(threads)
    cmd = [sys.executable, "-m", "symviz.run", "--_one", str(nb), "--out", str(out), "--scale", scale,
           "--device", device, "--seed", str(seed)]
    cmd += (["--timeout", str(timeout)] if timeout else []) + (["--threads", str(threads)] if threads else [])
    cmd += ["--progress"] if on_cell is not None else []
    t0 = time.perf_counter()
    timed_out = threading.Event()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, text=True)

        def kill() -> None:
            timed_out.set()
            proc.kill()

        timer = threading.Timer(timeout * 4 + 120, kill) if timeout else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        results = []
        try:
            for line in proc.stdout:
                if line.startswith(_CELL):
                    if on_cell is not None:
                        try:
                            k, n = map(int, line[len(_CELL):].split())
                            on_cell(k, n)
                        except ValueError:
                            pass
                elif line.startswith("{"):
                    results.append(line)
            proc.wait()
        finally:
            if timer is not None:
                timer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if timed_out.is_set():
            return _failed(nb, t0, device, scale, seed, threads, "timed out")
        if proc.returncode != 0 or not results:
            err.seek(0)
            tail = [l for l in err.read().strip().splitlines() if l.strip()][-1:] or ["no output"]
            return _failed(nb, t0, device, scale, seed, threads, f"runner crashed: {tail[0]}")
    return json.loads(results[-1])


def _html(out: Path, results: list[dict]) -> None:
    """Render executed chapters to HTML and write the lecture index page (see :mod:`symviz.site`)."""
    from symviz.site import build_site

    build_site(out, results)


def run_chapters(chapters: Sequence[str] = (), scale: str = "quick", device: str = "auto", out: str | Path = "build",
                 jobs: int = 1, timeout: float | None = 1800, html: bool = True,
                 notebooks: str | Path | None = None, verbose: bool = True, seed: int = 0,
                 threads: int | None = None, progress: bool | None = None, student: bool = False,
                 smoke: bool = False) -> dict:
    """Python API of ``symviz run``; returns the ``results.json`` dictionary.

    ``student``: execute the student versions (:mod:`symviz.student`: every solution replaced by
    ``raise NotImplementedError``, written to ``<out>/student_src/``), as a learner who solved no exercise gets them;
    each exercise then falls back to the tested reference and the chapter must still finish.
    ``smoke``: every training stops after :data:`SMOKE_STEPS` optimizer steps (``SYMVIZ_SMOKE`` in the kernels, read by
    :func:`symviz.train.smoke_steps`); the chapters take their code paths for ``scale`` (full data, full model sizes)
    and their claims are recorded but not asserted: a smoke run fails only on an exception.

    ``seed``: base seed (papermill parameter ``SEED``), a non-negative integer. ``threads``: torch intra-op
    threads pinned in every chapter's kernel, or None to leave them to torch and the chapter. ``timeout``:
    seconds per cell (positive) or None. ``progress``: the in-place status line (None: when stdout is a
    terminal; only with ``verbose``).
    """
    if scale not in SCALES:
        raise UsageError(f"unknown scale {scale!r}; valid scales: {', '.join(SCALES)}")
    if device not in DEVICES:
        raise UsageError(f"unknown device {device!r}; valid devices: {', '.join(DEVICES)}")
    jobs = _check_int("--jobs", jobs, 1)
    seed = _check_int("--seed", seed, 0)
    threads = None if threads is None else _check_int("--threads", threads, 1)
    timeout = _check_timeout(timeout)
    nb_dir = Path(notebooks) if notebooks else default_notebooks_dir()
    selected = resolve_chapters(list(chapters), discover_chapters(nb_dir))
    if not selected:
        raise UsageError(f"no chapter notebooks (NN_topic.ipynb) found in {nb_dir}")
    out = Path(out)
    if out.resolve() == nb_dir.resolve() or nb_dir.resolve() in out.resolve().parents:
        raise UsageError(f"--out {out} is inside the notebooks folder: executed notebooks never go there")
    out.mkdir(parents=True, exist_ok=True)
    if student:
        from symviz.student import write_student_versions

        selected = write_student_versions(selected, out / "student_src")
    dev = _resolved_device(device)
    threads_label = "default" if threads is None else threads
    if progress is None:
        progress = sys.stdout.isatty()
    bar = _Progress(sys.stdout, enabled=verbose, live=bool(progress))
    bar.line(f"symviz run: {len(selected)} chapter(s){' (student versions)' if student else ''}"
             f"{f' (smoke: {SMOKE_STEPS} steps per training, claims not asserted)' if smoke else ''}, scale={scale}, "
             f"device={dev}, seed={seed}, threads={threads_label}, out={out}")

    head = {"seed": seed, "threads": threads_label, "scale": scale, "device": dev, "student": student, "smoke": smoke}
    done: dict[str, dict] = {}
    lock = threading.Lock()

    def go(nb: Path) -> dict:
        bar.start(nb.stem)
        on_cell = (lambda k, n: bar.cell(nb.stem, k, n)) if bar.live else None
        r = _run_child(nb, out, scale, dev, timeout, seed, threads, on_cell, smoke=smoke)
        bar.done(r)
        with lock:  # results.json after every chapter: a run stopped half way still says what finished
            done[nb.stem] = r
            partial = [done[p.stem] for p in selected if p.stem in done]
            (out / "results.json").write_text(json.dumps({**head, "complete": False, "chapters": partial}, indent=2))
        return r

    try:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            results = list(pool.map(go, selected))
    finally:
        bar.close()
    if html:
        _html(out, results)
    summary = {**head, "complete": True, "chapters": results}
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    if verbose:
        print_summary(summary)
    return summary


def print_summary(summary: dict) -> None:
    rows = summary["chapters"]
    print()
    if "seed" in summary:
        print(f"seed {summary['seed']}, torch threads {summary.get('threads', 'default')}")
    print(f"{'chapter':<32} {'status':<7} {'seconds':>8} {'peak MB':>8}  claims")
    print("-" * 78)
    for r in rows:
        n_ok = sum(c["holds"] for c in r["claims"])
        peak = "-" if r["peak_rss_mb"] is None else f"{r['peak_rss_mb']:.0f}"
        print(f"{r['name']:<32} {r['status']:<7} {r['seconds']:>8.1f} {peak:>8}  {n_ok}/{len(r['claims'])} hold")
        for kind in ("paper", "sanity"):
            for c in (c for c in r["claims"] if c.get("kind", "paper") == kind):
                print(f"    [{'holds' if c['holds'] else 'FAILS'}] ({kind}) {c['text']}")
        for e in r.get("exercises") or []:
            print(f"    exercise {e['name']!r}: {e['source']}'s implementation"
                  + (", used downstream" if e.get("used_downstream") else ", NOT used downstream"))
        if r["error"]:
            print(f"    error: {r['error']}")
    failed = [r["name"] for r in rows if r["status"] != "ok"]
    print("-" * 78)
    print("all chapters ok" if not failed else f"FAILED: {', '.join(failed)}")


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is a :class:`UsageError` (one line, exit 2) like every other."""

    def error(self, message: str):
        raise UsageError(message)


def _child_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--_one", dest="nb")
    p.add_argument("--out")
    p.add_argument("--scale")
    p.add_argument("--device")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--timeout", type=float)
    p.add_argument("--progress", action="store_true")
    a = p.parse_args(argv)
    _skip_slow_optional_imports()
    # fd 1 is the channel to the parent: keep a private copy of it and send everything else that writes to
    # fd 1 (the kernel inherits it, C libraries print to it) to stderr instead
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    sys.stdout.flush()
    os.dup2(2, 1)
    result = _one(Path(a.nb), Path(a.out), a.scale, a.device, a.timeout, a.seed, a.threads,
                  channel if a.progress else None)
    channel.write(json.dumps(result) + "\n")
    channel.flush()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--_one":  # internal: the per-chapter child process
        return _child_main(argv)
    if argv and argv[0] == "run":
        argv = argv[1:]
    p = _Parser(prog="symviz run", description="Execute symviz chapters into build/ and summarise their results.")
    p.add_argument("chapters", nargs="*", help="chapter names or numbers (default: all)")
    p.add_argument("--scale", default="quick", help="quick (about a minute per chapter on a laptop) or full (paper scale)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument("--seed", default="0", help="base seed, a non-negative integer: chapters use SEED, SEED+1, ... (default 0)")
    p.add_argument("--threads", default=None,
                   help="torch intra-op threads in every chapter's kernel, pinned (default: as torch and the chapter choose)")
    p.add_argument("--out", default="build", help="output folder (default build/)")
    p.add_argument("--jobs", default="1", help="chapters executed in parallel")
    p.add_argument("--timeout", default="1800", help="seconds allowed per cell (default 1800)")
    p.add_argument("--html", dest="html", action="store_true", default=True, help="render HTML into <out>/html (default)")
    p.add_argument("--no-html", dest="html", action="store_false", help="skip the HTML rendering")
    p.add_argument("--notebooks", default=None, help="folder holding the chapter notebooks (default notebooks/)")
    p.add_argument("--smoke", action="store_true",
                   help=f"stop every training after {SMOKE_STEPS} steps; claims recorded, not asserted (with --scale full: "
                        "a quick check that full mode runs)")
    p.add_argument("--student", action="store_true",
                   help="run the student versions (solutions stripped): every exercise falls back to the reference")
    try:
        a = p.parse_args(argv)
        summary = run_chapters(a.chapters, a.scale, a.device, a.out, a.jobs, a.timeout, a.html, a.notebooks,
                               seed=a.seed, threads=a.threads, student=a.student, smoke=a.smoke)
    except UsageError as err:
        print(f"symviz run: error: {err}", file=sys.stderr)
        return 2
    return 0 if all(r["status"] == "ok" for r in summary["chapters"]) else 1


if __name__ == "__main__":
    sys.exit(main())
