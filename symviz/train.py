"""``fit``: one training loop for every chapter (device, seeding, progress, history, early stopping),
and ``accuracy``, the one classification accuracy every chapter measures with.

    >>> import torch
    >>> from torch.utils.data import TensorDataset, DataLoader
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(64, 3, generator=g); y = x @ torch.tensor([1.0, -2.0, 0.5])
    >>> loader = DataLoader(TensorDataset(x, y), batch_size=16)
    >>> model = torch.nn.Linear(3, 1)
    >>> loss = lambda m, b: ((m(b[0]).squeeze(-1) - b[1]) ** 2).mean()
    >>> result = fit(model, loss, loader, epochs=30, lr=0.1, progress=False, seed=0)
    >>> bool(result.history["train_loss"].iloc[-1] < 1e-3)
    True
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib
import io
import math
import os
import pickle
import random
import select
import signal
import sys
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

__all__ = ["usable_cores", "resolve_device", "seed_everything", "fused_adam", "to_device", "fit", "FitResult", "cache_dir", "evaluate", "accuracy",
           "save_checkpoint", "load_checkpoint", "torch_threads", "chapter_threads", "TensorBatches", "CompileOrEager",
           "smoke_steps", "smoke_cap", "SMOKE_ENV", "SMOKE_BATCH", "parallel_runs", "run_workers", "WORKERS_ENV", "CallRef"]

SMOKE_ENV = "SYMVIZ_SMOKE"
"""Set by ``symviz run --smoke`` to the number of optimizer steps each training may take (see :func:`smoke_steps`)."""

VALID_DEVICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` picks cuda, then mps, then cpu; an explicit device is checked to exist.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if isinstance(device, torch.device):
        device = str(device)
    if device is None:
        device = "auto"
    if not isinstance(device, str) or device.split(":")[0] not in VALID_DEVICES:
        raise ValueError(f"device must be one of {', '.join(VALID_DEVICES)} (optionally 'cuda:N'), got {device!r}")
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but torch sees no CUDA GPU; use device='auto' or 'cpu'")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device='mps' was requested but MPS is not available; use device='auto' or 'cpu'")
    return torch.device(device)


def fused_adam(model: torch.nn.Module, lr: float, weight_decay: float = 0.0,
               device: str | torch.device = "auto", *, eps: float = 1e-8) -> torch.optim.Optimizer:
    """Adam (the original, L2 weight decay) with PyTorch's fused kernel where the device has one: one kernel per
    parameter tensor instead of a dozen small operations, which is most of an optimizer step for the small models of
    chapters 04, 05 and 07 (measured on a CPU: 0.94 -> 0.45 ms per step for chapter 05's CGCNN). The same update rule as
    ``torch.optim.Adam``; its rounding differs in the last bits, so a run is reproducible with it, not bit-identical
    to the multi-tensor one. Moves ``model`` to ``device`` first (the kernel is chosen by the parameters' device);
    falls back to the plain Adam on a torch or device without the fused kernel. Pass it to :func:`fit` as
    ``optimizer=``; ``device=None`` keeps the model where it is.
    """
    if device is not None:
        model.to(resolve_device(device))
    try:
        return torch.optim.Adam(model.parameters(), lr=lr, eps=eps, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):   # no fused kernel here (a bad lr or eps is raised again below)
        return torch.optim.Adam(model.parameters(), lr=lr, eps=eps, weight_decay=weight_decay)


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a torch Generator seeded the same way."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    random.seed(int(seed))
    np.random.seed(int(seed) % 2**32)
    torch.manual_seed(int(seed))
    return torch.Generator().manual_seed(int(seed))


def to_device(batch: Any, device: torch.device) -> Any:
    """Move tensors inside (nested) tuples, lists and dicts to ``device``."""
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        moved = [to_device(v, device) for v in batch]
        return type(batch)(*moved) if hasattr(batch, "_fields") else type(batch)(moved)
    return batch


@contextlib.contextmanager
def torch_threads(n: int):
    """Run a block with ``n`` torch intra-op threads, restoring the previous count afterwards.

    Tiny models gain nothing from a second thread, and on a busy machine its spin-waiting can make
    each step many times slower.

    >>> with torch_threads(1):
    ...     torch.get_num_threads()
    1
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"torch_threads(n): n must be a positive integer, got {n!r}")
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


SMOKE_BATCH = 16
"""Largest batch of :class:`TensorBatches` (and of chapters' own evaluation loops) in a smoke run."""


class TensorBatches:
    """Mini-batches ``tuple(t[idx] for t in tensors)`` of in-memory tensors, one gather per batch.

    Does what ``DataLoader(TensorDataset(*tensors), batch_size, shuffle=shuffle, generator=g)`` does for
    tensors that fit in memory, without a ``__getitem__`` and a collate per example (which cost as much as
    the step of a tiny model). With ``shuffle`` every pass draws a new permutation from a generator seeded
    with ``seed``, so runs repeat exactly. Iterate it once per epoch. In a smoke run (`symviz run --smoke`) batches
    hold at most :data:`SMOKE_BATCH` examples: full mode's code path, not its per-step cost on a CPU.

    >>> b = TensorBatches(torch.arange(5.0), torch.arange(5), batch_size=2, seed=0)
    >>> [len(xb) for xb, _ in b], len(b)
    ([2, 2, 1], 3)
    >>> [t[0].tolist() for t in TensorBatches(torch.arange(5), batch_size=2, shuffle=False)]
    [[0, 1], [2, 3], [4]]
    """

    def __init__(self, *tensors: torch.Tensor, batch_size: int = 64, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False):
        if not tensors or any(not torch.is_tensor(t) for t in tensors):
            raise ValueError("TensorBatches needs one or more tensors")
        n = int(tensors[0].shape[0])
        if any(int(t.shape[0]) != n for t in tensors):
            raise ValueError("TensorBatches: all tensors need the same first dimension (the same length), got "
                             f"{[tuple(t.shape) for t in tensors]}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if smoke_steps() is not None:
            batch_size = min(batch_size, SMOKE_BATCH)
        self.tensors, self.batch_size, self.shuffle, self.drop_last, self.n = tensors, batch_size, shuffle, drop_last, n
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def __iter__(self):
        order = torch.randperm(self.n, generator=self.generator) if self.shuffle else None
        for k in range(len(self)):
            sl = slice(k * self.batch_size, (k + 1) * self.batch_size)
            yield tuple(t[sl] if order is None else t[order[sl]] for t in self.tensors)


THREADS_ENV = ("SYMVIZ_THREADS", "OMP_NUM_THREADS")


def usable_cores(cgroup_root: str | Path = "/sys/fs/cgroup") -> int:
    """CPU cores this process may really use: the CPUs it is allowed to run on, capped by a cgroup CPU quota.

    A container (Binder, CI, Docker ``--cpus``) often shows every core of its host but may only use one or two;
    a thread per visible core then fights for a fraction of a core. Reads ``os.sched_getaffinity`` where it
    exists (else ``os.cpu_count()``) and the quota in ``<cgroup_root>/cpu.max`` (cgroup v2) or
    ``<cgroup_root>/cpu/cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (v1), rounded up. At least 1.

    >>> usable_cores() >= 1
    True
    """
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota, root = None, Path(cgroup_root)
    try:
        parts = (root / "cpu.max").read_text().split()
        if len(parts) == 2 and parts[0] != "max":
            quota = float(parts[0]) / float(parts[1])
    except (OSError, ValueError, ZeroDivisionError):
        try:
            q = float((root / "cpu" / "cpu.cfs_quota_us").read_text())
            period = float((root / "cpu" / "cpu.cfs_period_us").read_text())
            if q > 0 and period > 0:
                quota = q / period
        except (OSError, ValueError):
            pass
    if quota is not None and quota > 0:
        n = min(n, max(1, int(-(-quota // 1))))
    return max(1, n)


def chapter_threads(scale: str, quick_default: int | None = 1) -> int:
    """Set a chapter's torch intra-op threads and return how many it uses.

    An explicit choice wins: ``$SYMVIZ_THREADS`` (set by ``symviz run --threads N``), else ``$OMP_NUM_THREADS``.
    Without one, quick mode uses ``quick_default`` threads, never more than :func:`usable_cores` (1 for small
    models: a second thread that spin-waits on a busy machine can make each step slower; 2 for chapters
    whose convolutions or matrix products gain from it, measured in ``benchmarks/robustness.md``; ``None``
    keeps torch's default, one per core) and full mode keeps torch's default.
    ``make robustness`` runs every chapter with 1 and with 2 threads through this switch.

    >>> import os
    >>> before = torch.get_num_threads()
    >>> os.environ["SYMVIZ_THREADS"] = "1"; chapter_threads("full")
    1
    >>> del os.environ["SYMVIZ_THREADS"]; torch.set_num_threads(before)
    """
    if scale not in ("quick", "full"):
        raise ValueError(f"scale must be 'quick' or 'full', got {scale!r}")
    for name in THREADS_ENV:
        raw = os.environ.get(name, "").strip()
        if raw:
            n = _positive_int(raw, f"${name}={raw!r}: expected a positive number of threads, e.g. {name}=2")
            torch.set_num_threads(n)
            return n
    if quick_default is not None and (isinstance(quick_default, bool) or not isinstance(quick_default, int)
                                      or quick_default < 1):
        raise ValueError(f"quick_default must be a positive int or None, got {quick_default!r}")
    if scale == "quick" and quick_default is not None:
        torch.set_num_threads(min(quick_default, usable_cores()))
    return torch.get_num_threads()


WORKERS_ENV = "SYMVIZ_WORKERS"
"""Overrides how many processes :func:`parallel_runs` uses (``1``: run the jobs one after another)."""

_IN_WORKER = False   # set in a worker process: a job that calls parallel_runs again runs its jobs in sequence


def run_workers() -> int:
    """How many processes :func:`parallel_runs` uses: ``$SYMVIZ_WORKERS`` if set, else one per free core,
    ``usable_cores() // torch.get_num_threads()`` (so 1 on a one-core Binder, and 1 when the chapter already
    gives every core to torch's threads).

    >>> import os
    >>> os.environ[WORKERS_ENV] = "3"; run_workers()
    3
    >>> del os.environ[WORKERS_ENV]; run_workers() >= 1
    True
    """
    raw = os.environ.get(WORKERS_ENV, "").strip()
    if raw:
        return _positive_int(raw, f"${WORKERS_ENV}={raw!r}: expected a positive number of worker processes, "
                                  f"e.g. {WORKERS_ENV}=1 to run trainings one after another")
    return max(1, usable_cores() // max(1, torch.get_num_threads()))


class CallRef:
    """A function a model holds (a learner's exercise, usually a ``symviz.report.Accepted``), held so that it
    behaves like a plain function: ``copy.deepcopy`` of the model keeps the same target (a deep copy of a callable
    object would detach a copy of it, and of its exercise record), and pickling the model (what
    :func:`parallel_runs` does to bring a trained model back) pickles the target, where a lambda could not be.

    >>> import copy, pickle, operator
    >>> ref = CallRef(operator.add)
    >>> ref(2, 3), copy.deepcopy(ref) is ref, pickle.loads(pickle.dumps(ref))(2, 3)
    (5, True, 5)
    """

    def __init__(self, fn: Callable):
        if not callable(fn):
            raise TypeError(f"CallRef needs a callable, got {type(fn).__name__}")
        self.fn = fn

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    def __deepcopy__(self, memo):
        return self

    def __repr__(self) -> str:
        return f"CallRef({self.fn!r})"


def _can_fork() -> tuple[bool, str]:
    if _IN_WORKER:
        return False, "already in a worker"
    if not sys.platform.startswith("linux") or not hasattr(os, "fork"):
        return False, f"no safe fork on {sys.platform}"
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return False, "CUDA is initialised (a forked process cannot use it)"
    return True, ""


def _run_in_child(job: Callable[[], Any], write_fd: int, threads: int) -> None:
    """Body of a forked worker: run ``job`` with its output captured, send the pickled outcome, exit."""
    from symviz import report

    global _IN_WORKER
    _IN_WORKER = True
    status = 1
    try:
        out = io.StringIO()
        used_before = report.used_exercises()
        try:
            getattr(torch.set_num_threads, "__wrapped__", torch.set_num_threads)(threads)
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out), \
                    warnings.catch_warnings(record=True) as caught:
                result = job()
        except BaseException:   # noqa: BLE001 - the parent runs the job again, so the error surfaces there
            payload = pickle.dumps(("error", traceback.format_exc(), "", [], set()), pickle.HIGHEST_PROTOCOL)
        else:
            # the learner's exercises this job called: the parent marks them used (the calls happened here)
            used = report.used_exercises() - used_before
            try:
                payload = pickle.dumps(("ok", result, out.getvalue(), [(str(w.message), w.category) for w in caught],
                                        used), pickle.HIGHEST_PROTOCOL)
            except Exception as err:   # noqa: BLE001 - e.g. a model holding a lambda
                payload = pickle.dumps(("unpicklable", f"{type(err).__name__}: {err}", "", [], set()),
                                       pickle.HIGHEST_PROTOCOL)
        with os.fdopen(write_fd, "wb") as pipe:
            pipe.write(payload)
        status = 0
    except BaseException:   # noqa: BLE001 - outside the job (setting up, sending): say why on the real stderr
        with contextlib.suppress(BaseException):
            os.write(2, ("parallel_runs: a worker process failed outside its job:\n" + traceback.format_exc()).encode())
    finally:
        os._exit(status)   # never return into the parent's code (a kernel, a test runner) in the child


def _exit_description(wait_status: int) -> str:
    """How a worker process ended, from ``os.waitpid``'s status: ``"killed by SIGKILL"``, ``"exit status 1"``."""
    if os.WIFSIGNALED(wait_status):
        sig = os.WTERMSIG(wait_status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return f"killed by {name}" + (", e.g. for memory" if sig == signal.SIGKILL else "")
    if os.WIFEXITED(wait_status):
        code = os.WEXITSTATUS(wait_status)
        return f"exit status {code}" + (": it failed outside its job, see the traceback on stderr" if code == 1 else "")
    return f"wait status {wait_status}"


def parallel_runs(jobs: Iterable[Callable[[], Any]], workers: int | None = None,
                  cost: Sequence[float] | None = None) -> list:
    """Run independent jobs (zero-argument callables, e.g. ``functools.partial(train, seed=s)``) in forked
    worker processes, one per free core, and return their results in order.

    Small models use one core fully and gain nothing from a second torch thread (the synchronisation costs
    what the split saves), so a 2-core machine trains two of them at once in two processes instead: the
    three seeds x two models of a comparison take about half the time. Each job must seed itself (every
    trainer here does), so its result is bit-identical to running it in this process with the same thread
    count; only this process's global random state differs afterwards (the jobs drew from the workers').

    Each worker keeps this process's torch thread count; what a job prints is printed here, in job order,
    after it finishes, and its warnings are re-issued here. Results travel back pickled (trained models
    included). The jobs run one after another in this process when one worker is asked for or free
    (:func:`run_workers`, ``$SYMVIZ_WORKERS``), on systems without a safe ``fork`` (macOS, Windows), once
    CUDA is initialised, and inside a worker. A job that fails in a worker (an error in it, a result that
    cannot be pickled, a worker killed for memory) is run again here, so its error surfaces with a normal
    traceback.

    ``cost``: an estimate of each job's run time, in any unit (e.g. steps x batch size x a factor per
    model). The workers then start the longest jobs first, so the batch ends with short jobs on every core
    instead of one long job running alone while the other cores idle (two workers and jobs of 1, 2, 2, 2,
    2 and 5 s: 9 s in job order, 7 s longest first); results still come back in job order. Without it, the
    jobs start in job order.

    >>> import functools
    >>> parallel_runs([functools.partial(pow, 2, k) for k in range(4)], workers=2)
    [1, 2, 4, 8]
    """
    from symviz import report

    jobs = list(jobs)
    for k, job in enumerate(jobs):
        if not callable(job):
            raise TypeError(f"parallel_runs: job {k} is a {type(job).__name__}, not a callable; pass zero-argument "
                            "callables, e.g. functools.partial(train, seed=0)")
    if cost is not None:
        cost = list(cost)
        if len(cost) != len(jobs) or not all(
                isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c) and c >= 0 for c in cost):
            raise ValueError(f"parallel_runs: cost must hold one finite, non-negative number per job ({len(jobs)} jobs), "
                             f"got {cost!r}")
    n = run_workers() if workers is None else workers
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"parallel_runs: workers must be a positive integer, got {n!r}")
    n = min(n, len(jobs))
    can_fork, _reason = _can_fork()
    if n <= 1 or not can_fork:
        return [job() for job in jobs]

    threads = torch.get_num_threads()
    # the first torch.optim optimizer imports torch._dynamo (1-1.5 s): import it once here, not once per worker
    importlib.import_module("torch._dynamo")
    outcomes: dict[int, tuple] = {}
    running: dict[int, tuple[int, int, bytearray]] = {}   # read fd -> (job index, pid, bytes so far)
    # longest first when costs are given (a stable sort: equal costs keep job order)
    pending = list(range(len(jobs))) if cost is None else sorted(range(len(jobs)), key=lambda k: -cost[k])
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()   # a forked copy of unflushed output would be printed twice
    try:
        while pending or running:
            while pending and len(running) < n:
                k = pending.pop(0)
                read_fd, write_fd = os.pipe()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)   # Python 3.12+: fork with threads alive
                    pid = os.fork()
                if pid == 0:
                    os.close(read_fd)
                    _run_in_child(jobs[k], write_fd, threads)
                os.close(write_fd)
                running[read_fd] = (k, pid, bytearray())
            ready, _, _ = select.select(list(running), [], [])
            for fd in ready:
                chunk = os.read(fd, 1 << 20)
                if chunk:
                    running[fd][2].extend(chunk)
                    continue
                k, pid, data = running.pop(fd)
                os.close(fd)
                _, wait_status = os.waitpid(pid, 0)
                try:
                    outcomes[k] = pickle.loads(bytes(data))
                except Exception as err:   # noqa: BLE001 - the worker died before sending its result (e.g. out of
                    # memory), or the result it sent cannot be rebuilt here
                    why = (f"{len(data)} bytes received, which could not be unpickled here ({type(err).__name__}: {err})"
                           if data else "0 bytes received")
                    outcomes[k] = ("lost", f"the worker process ended without a result: {_exit_description(wait_status)}"
                                           f", {why}", "", [], set())
    finally:
        for fd, (_k, pid, _data) in running.items():   # interrupted: stop the workers still running
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            with contextlib.suppress(OSError):
                os.close(fd)

    results = []
    for k, job in enumerate(jobs):
        status, value, printed, caught, used = outcomes[k]
        report.mark_used(used)
        if printed:
            print(printed, end="")
        for message, category in caught:
            warnings.warn(message, category, stacklevel=2)
        if status == "ok":
            results.append(value)
            continue
        if status != "error":   # the job itself worked: say why it costs a second run
            warnings.warn(f"parallel_runs: job {k} ran in a worker but its result did not come back ({value}); "
                          "running it again in this process", RuntimeWarning, stacklevel=2)
        results.append(job())   # the same result (each job seeds itself), or the job's own error, raised here
    return results


def _compiler_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "the compiler could not build this", as opposed to an error in the user's code."""
    errs: list[type[BaseException]] = []
    for mod, names in (("torch._dynamo.exc", ("BackendCompilerFailed",)),
                       ("torch._inductor.exc", ("InductorError", "CppCompileError"))):
        try:
            m = __import__(mod, fromlist=list(names))
        except ImportError:
            continue
        errs += [getattr(m, n) for n in names if isinstance(getattr(m, n, None), type)]
    return tuple(errs)


class CompileOrEager(torch.nn.Module):
    """``torch.compile(module)`` where it works, the eager module where it does not.

    The first call compiles (tens of seconds on a CPU; cached on disk by inductor for later processes).
    If the compiler cannot build the model (no C++ toolchain, an unsupported platform or operation), a
    :class:`RuntimeWarning` says why, :attr:`fallback_reason` keeps the message and every call runs the
    eager module: same parameters, same function. Errors in the caller's inputs (wrong shapes, ...) are
    raised as usual, not hidden by the fallback.

    Parameters and ``state_dict`` are those of ``module`` (under the prefix ``module.``); save
    ``wrapper.module`` to get the plain model's keys. Keyword arguments go to :func:`torch.compile`;
    with the default inductor backend the host code is generated in C++ too (``cpp_wrapper``), which
    cuts the per-kernel Python overhead that dominates small models (measured step times of compiled and
    eager models are in ``benchmarks/results.md``).

    >>> w = CompileOrEager(torch.nn.Linear(2, 1), backend="eager")
    >>> w(torch.ones(3, 2)).shape, w.is_compiled
    (torch.Size([3, 1]), True)
    """

    def __init__(self, module: torch.nn.Module, **compile_kwargs):
        super().__init__()
        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"CompileOrEager wraps a torch.nn.Module, got {type(module).__name__}")
        self.module = module
        self.fallback_reason: str | None = None
        if compile_kwargs.get("backend", "inductor") == "inductor" and "mode" not in compile_kwargs:
            compile_kwargs.setdefault("options", {"cpp_wrapper": True})
        try:
            compiled = torch.compile(module, **compile_kwargs)
        except Exception as err:  # torch.compile refuses this platform or Python up front
            compiled = None
            self._fall_back(err)
        self.__dict__["_compiled"] = compiled   # a plain attribute: not a second copy of the submodule

    def _fall_back(self, err: BaseException) -> None:
        message = " ".join(str(err).split())          # one line: the compiler's messages span many
        self.fallback_reason = f"{type(err).__name__}: {message[:300]}{'...' if len(message) > 300 else ''}"
        self.__dict__["_compiled"] = None
        warnings.warn(f"torch.compile could not build {type(self.module).__name__} ({self.fallback_reason}); "
                      "running it eagerly (same function, slower)", RuntimeWarning, stacklevel=3)

    @property
    def is_compiled(self) -> bool:
        """False once the model fell back to eager."""
        return self.__dict__.get("_compiled") is not None

    def forward(self, *args, **kwargs):
        compiled = self.__dict__.get("_compiled")
        if compiled is not None:
            try:
                return compiled(*args, **kwargs)
            except _compiler_errors() as err:
                self._fall_back(err)
        return self.module(*args, **kwargs)


def cache_dir() -> Path:
    """Where checkpoints and derived data are cached: ``$SYMVIZ_CACHE`` or ``~/.cache/symviz``."""
    path = Path(os.environ.get("SYMVIZ_CACHE", Path.home() / ".cache" / "symviz"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class FitResult:
    """What :func:`fit` returns: the trained model (best weights restored), history and timings."""

    model: torch.nn.Module
    history: "Any"  # pandas.DataFrame, one row per epoch
    best_epoch: int
    seconds: float
    device: torch.device
    checkpoint: Path | None = None
    extra: dict = field(default_factory=dict)

    @property
    def best_val_loss(self) -> float:
        if "val_loss" not in self.history:
            return float("nan")
        return float(self.history["val_loss"].min())


LossFn = Callable[[torch.nn.Module, Any], torch.Tensor]


def smoke_cap(n: int | None, cap: int) -> int | None:
    """How many items (systems, molecules, structures, images) a loader takes: ``n`` (None: all), or at most
    ``cap`` in a smoke run (`symviz run --smoke`), where full mode's code path matters, not its data's size.

    >>> import os; os.environ.pop("SYMVIZ_SMOKE", None) and None; smoke_cap(5000, 64), smoke_cap(None, 64)
    (5000, None)
    """
    if smoke_steps() is None:
        return n
    return cap if n is None else min(n, cap)


def smoke_steps() -> int | None:
    """How many steps a training may take in a smoke run (``symviz run --smoke`` sets ``SYMVIZ_SMOKE``), else None.

    A smoke run takes every code path of a chapter (its full-mode data, model sizes and hyperparameters) but stops
    each training after this many optimizer steps, so that shape, dtype, device and memory errors surface in
    minutes; :func:`fit` obeys it, and chapters with their own training loops ask it. Its claims are not asserted.

    >>> import os; os.environ.pop("SYMVIZ_SMOKE", None) and None; smoke_steps() is None
    True
    """
    raw = os.environ.get(SMOKE_ENV, "").strip()
    if raw in ("", "0"):
        return None
    return _positive_int(raw, f"{SMOKE_ENV} must be a positive number of steps (or unset), got {raw!r}")


def _positive_int(raw: str, message: str) -> int:
    """``int(raw)`` when it is a positive integer, else ``ValueError(message)``."""
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(message)
    return n


def evaluate(model: torch.nn.Module, loss_fn: LossFn, loader: Iterable, device: str | torch.device = "auto",
             max_batches: int | None = None) -> float:
    """Mean of ``loss_fn(model, batch)`` over ``loader`` (weighted by batch size), in eval mode; at most
    ``max_batches`` batches (default: all, or :func:`smoke_steps` in a smoke run)."""
    dev = resolve_device(device)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    limit = max_batches if max_batches is not None else smoke_steps()
    with torch.no_grad():  # a validation loss needs no graph (a loss that differentiates inside uses enable_grad)
        for k, batch in enumerate(loader):
            if limit is not None and k >= limit:
                break
            batch = to_device(batch, dev)
            n = _batch_size(batch)
            total += float(loss_fn(model, batch)) * n
            count += n
    model.train(was_training)
    if count == 0:
        raise ValueError("evaluate: the loader yielded no batches")
    return total / count


def _model_device(model: torch.nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (else first buffer); CPU for a model without tensors."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500,
             device: str | torch.device | None = None) -> float:
    """Top-1 accuracy: the fraction of ``x`` for which ``model(x).argmax(-1)`` equals the label in ``y``.

    ``x: (N, ...)`` inputs in the shape the model takes (images ``(N, H, W)`` or ``(N, C, H, W)``, point sets
    ``(N, P, 3)``, ...), ``y: (N,)`` integer labels; the model maps a batch to logits ``(B, classes)``.

    Device rule: the model runs where it is (the device of its first parameter, CPU for a model without
    any) unless ``device`` is given (``"auto"``, ``"cpu"``, ``"cuda"``, ...); then it is moved there and
    back to where it was afterwards. Batches of ``x`` and ``y`` are moved to that device, so they may live
    anywhere. It runs in eval mode without gradients, ``batch_size`` examples at a time (the result does
    not depend on it), and restores the model's train/eval mode afterwards.

    >>> model = torch.nn.Linear(2, 2, bias=False)
    >>> with torch.no_grad():
    ...     _ = model.weight.copy_(torch.eye(2))
    >>> accuracy(model, torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0]]), torch.tensor([0, 1, 1]))
    0.6666666666666666
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"accuracy: model must be a torch.nn.Module, got {type(model).__name__}")
    if not torch.is_tensor(x) or not torch.is_tensor(y):
        raise ValueError(f"accuracy: x and y must be tensors, got {type(x).__name__} and {type(y).__name__}")
    if y.ndim != 1:
        raise ValueError(f"accuracy: y must be labels of shape (N,), got shape {tuple(y.shape)}")
    if len(x) != len(y):
        raise ValueError(f"accuracy: x and y must have the same length, got {len(x)} and {len(y)}")
    if len(y) == 0:
        raise ValueError("accuracy: no examples given (x and y are empty)")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"accuracy: batch_size must be a positive integer, got {batch_size!r}")
    home = _model_device(model)
    dev = home if device is None else resolve_device(device)
    was_training = model.training
    model.eval()
    if dev != home:
        model.to(dev)
    correct, seen = 0, 0
    limit = smoke_steps()  # a smoke run (`symviz run --smoke`) scores only a few batches
    try:
        with torch.no_grad():
            for k, i in enumerate(range(0, len(y), batch_size)):
                if limit is not None and k >= limit:
                    break
                pred = model(x[i:i + batch_size].to(dev)).argmax(-1)
                correct += int((pred == y[i:i + batch_size].to(dev)).sum())
                seen += len(pred)
    finally:
        model.train(was_training)
        if dev != home:
            model.to(home)
    return correct / seen


def _batch_size(batch: Any) -> int:
    if torch.is_tensor(batch):
        return int(batch.shape[0]) if batch.ndim else 1
    if isinstance(batch, dict):
        batch = list(batch.values())
    if isinstance(batch, (list, tuple)) and batch:
        return _batch_size(batch[0])
    return 1


def fit(
    model: torch.nn.Module,
    loss_fn: LossFn,
    train_loader: Iterable,
    val_loader: Iterable | None = None,
    *,
    epochs: int = 10,
    lr: float | None = None,
    weight_decay: float | None = None,
    optimizer: str | torch.optim.Optimizer = "adam",
    scheduler: str | None = None,
    device: str | torch.device = "auto",
    seed: int | None = None,
    patience: int | None = None,
    grad_clip: float | None = None,
    amp: bool = False,
    checkpoint: str | None = None,
    progress: bool = True,
    metrics: dict[str, Callable[[torch.nn.Module, Any], torch.Tensor]] | None = None,
    desc: str = "fit",
    compile: bool = False,
    step: Callable[[torch.nn.Module, Any, torch.optim.Optimizer], torch.Tensor] | None = None,
) -> FitResult:
    """Train ``model`` by minimising ``loss_fn(model, batch)`` over ``train_loader``.

    Args:
        loss_fn: ``(model, batch) -> scalar tensor``; the batch is already on the device.
        val_loader: optional; enables ``val_loss``, early stopping (``patience`` epochs) and
            restoring the best weights at the end.
        lr, weight_decay: for an optimizer given by name; default ``1e-3`` and ``0``.
        optimizer: ``"adam"``, ``"adamw"``, ``"sgd"`` (momentum 0.9; all three with the multi-tensor update on a
            CPU, bit-identical to PyTorch's default there; it saved time on chapter 02's models, none measurable on
            chapter 05's) or a ready optimizer, which carries its
            own learning rate and weight decay: passing ``lr`` or ``weight_decay`` with one is a ValueError.
        scheduler: ``None`` or ``"cosine"`` (cosine decay over ``epochs``).
        device: ``"auto"`` (cuda, then mps, then cpu), ``"cpu"``, ``"cuda"``, ``"mps"``.
        seed: ``None`` (default): ``fit`` leaves the global random state (python, numpy, torch) alone;
            the caller seeds (``seed_everything(n)``) before building the model, whose initial weights
            ``fit`` never redraws. An integer ``n`` calls ``seed_everything(n)`` before the first epoch,
            which seeds the data order of loaders that draw from the global generators (a ``DataLoader``
            shuffling without its own ``generator``; a :class:`TensorBatches` keeps its own seed) and the
            training randomness (dropout, random augmentation inside ``loss_fn``).
        amp: opt-in bf16 autocast of the forward pass and the loss (default ``False``: float32). It needs a
            CUDA device that supports bfloat16 (``torch.cuda.is_bf16_supported()``); on any other device (CPU,
            MPS) ``amp=True`` raises a ValueError rather than silently training in float32.
        checkpoint: a name; the best weights are saved to ``cache_dir()/checkpoints/<name>.pt``.
        metrics: extra validation metrics ``name -> (model, batch) -> tensor`` (batch means).
        compile: train through :class:`CompileOrEager` (``torch.compile`` with an eager fallback); it pays
            for long runs (the first batch compiles for tens of seconds on a CPU). Validation runs eagerly,
            and each new training batch shape compiles once more, so prefer a batch size that divides
            the training set.
        step: a training step of your own, ``(model, batch, optimizer) -> loss``: it computes the loss, calls
            ``backward`` and ``optimizer.step()`` itself (e.g. a learner's step in chapter 03), and ``fit`` logs
            the loss it returns; ``loss_fn`` then serves validation only. Not with ``grad_clip``.
    Returns:
        :class:`FitResult` with a pandas history (``epoch``, ``train_loss``, ``val_loss``, metrics,
        ``seconds``).
    """
    import pandas as pd
    from tqdm.auto import tqdm

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise TypeError("loss_fn must be callable as loss_fn(model, batch) -> scalar tensor")
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if isinstance(optimizer, torch.optim.Optimizer):
        given = [f"{name}={value!r}" for name, value in (("lr", lr), ("weight_decay", weight_decay)) if value is not None]
        if given:
            raise ValueError(f"fit: got a ready optimizer ({type(optimizer).__name__}) and {' and '.join(given)}; a ready "
                             "optimizer carries its own learning rate and weight decay, so these would be ignored. "
                             f"Set them when building the optimizer (e.g. torch.optim.{type(optimizer).__name__}"
                             "(model.parameters(), lr=..., weight_decay=...)) and drop them from fit(...), or pass "
                             "the optimizer by name (optimizer='adam') together with lr and weight_decay")
    else:
        lr = 1e-3 if lr is None else lr
        weight_decay = 0.0 if weight_decay is None else weight_decay
        if isinstance(lr, bool) or not (isinstance(lr, (int, float)) and lr > 0):
            raise ValueError(f"lr must be a positive number, got {lr!r}")
        if isinstance(weight_decay, bool) or not (isinstance(weight_decay, (int, float)) and weight_decay >= 0):
            raise ValueError(f"weight_decay must be a number >= 0, got {weight_decay!r}")
    if not isinstance(amp, bool):
        raise ValueError(f"amp must be True (bf16 autocast on a CUDA GPU) or False (float32, the default), got {amp!r}")
    if step is not None and not callable(step):
        raise TypeError(f"step must be a function (model, batch, optimizer) -> loss, got {type(step).__name__}")
    if step is not None and grad_clip:
        raise ValueError("grad_clip clips inside fit's own step: with step=, clip in your step before optimizer.step()")
    if patience is not None and val_loader is None:
        raise ValueError("patience (early stopping) needs a val_loader")
    if scheduler not in (None, "cosine"):
        raise ValueError(f"scheduler must be None or 'cosine', got {scheduler!r}")

    dev = resolve_device(device)
    if amp and not (dev.type == "cuda" and torch.cuda.is_bf16_supported()):
        raise ValueError(f"amp=True (bf16 autocast) needs a CUDA GPU with bfloat16 support; this run trains on "
                         f"{dev}{' (no bfloat16 on this GPU)' if dev.type == 'cuda' else ''}. Pass amp=False (the "
                         "default, float32) or train on such a GPU")
    if seed is not None:
        seed_everything(seed)
    model.to(dev)

    # the multi-tensor ("foreach") update on a CPU too, where PyTorch defaults to one tensor at a time: the same
    # arithmetic, bit for bit (tested), with fewer Python-dispatched operations per parameter tensor and step (a
    # measured gain on chapter 02's models; none measurable on chapter 05's, whose steps are elementwise-bound).
    # Elsewhere PyTorch's own default (foreach on CUDA).
    foreach = True if dev.type == "cpu" else None
    if isinstance(optimizer, torch.optim.Optimizer):
        opt = optimizer
    elif optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay, foreach=foreach)
    elif optimizer == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, foreach=foreach)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay, foreach=foreach)
    else:
        raise ValueError(f"optimizer must be 'adam', 'adamw', 'sgd' or a torch optimizer, got {optimizer!r}")
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs) if scheduler == "cosine" else None
    step_model = CompileOrEager(model, dynamic=False) if compile else model

    smoke = smoke_steps()
    if smoke is not None:  # `symviz run --smoke`: one epoch of `smoke` steps, nothing written to the cache
        epochs, checkpoint = 1, None
    rows, best, best_state, best_epoch, bad = [], float("inf"), None, 0, 0
    t0 = time.perf_counter()
    bar = tqdm(range(1, epochs + 1), desc=desc, disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        total, count = 0.0, 0
        for k, batch in enumerate(train_loader):
            if smoke is not None and k >= smoke:
                break
            batch = to_device(batch, dev)
            with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=amp):
                loss = loss_fn(step_model, batch) if step is None else torch.as_tensor(step(step_model, batch, opt))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"fit: loss became {loss.item()} at epoch {epoch}; lower lr or check the data")
            if step is None:
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                opt.step()
            n = _batch_size(batch)
            total += float(loss.detach()) * n
            count += n
        if count == 0:
            raise ValueError("fit: train_loader yielded no batches")
        if sched is not None:
            sched.step()
        row = {"epoch": epoch, "train_loss": total / count}
        if val_loader is not None:
            row["val_loss"] = evaluate(model, loss_fn, val_loader, dev)
            for name, fn in (metrics or {}).items():
                row[name] = evaluate(model, fn, val_loader, dev)
            if row["val_loss"] < best:
                best, best_epoch, bad = row["val_loss"], epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                bad += 1
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k.endswith("loss")})
        if patience is not None and bad >= patience:
            break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        best_epoch = rows[-1]["epoch"]
    path = None
    if checkpoint:
        path = save_checkpoint(model, checkpoint)
    return FitResult(model=model, history=pd.DataFrame(rows), best_epoch=best_epoch,
                     seconds=time.perf_counter() - t0, device=dev, checkpoint=path)


def _fingerprint(model: torch.nn.Module) -> str:
    shapes = ";".join(f"{k}:{tuple(v.shape)}" for k, v in model.state_dict().items())
    return hashlib.sha256((type(model).__name__ + shapes).encode()).hexdigest()[:16]


def _checkpoint_dir() -> Path:
    """``cache_dir()/checkpoints``; in a smoke run ``cache_dir()/smoke-checkpoints``, so that weights trained for two
    steps never stand in for real ones and a smoke run never loads real weights instead of training."""
    return cache_dir() / ("smoke-checkpoints" if smoke_steps() is not None else "checkpoints")


def save_checkpoint(model: torch.nn.Module, name: str, meta: dict | None = None) -> Path:
    """Save ``model``'s weights with a fingerprint of its architecture to the cache."""
    if not name or "/" in name or "\\" in name:
        raise ValueError(f"checkpoint name must be a plain file name, got {name!r}")
    path = _checkpoint_dir() / f"{name}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"fingerprint": _fingerprint(model), "meta": meta or {},
                "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(model: torch.nn.Module, name: str, meta: dict | None = None) -> bool:
    """Load cached weights into ``model``; False (never an exception) when missing, corrupt or mismatched.

    A mismatch is a different architecture fingerprint or different ``meta`` (e.g. data/recipe).
    """
    path = _checkpoint_dir() / f"{name}.pt"
    if not path.exists():
        return False
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if blob.get("fingerprint") != _fingerprint(model) or blob.get("meta", {}) != (meta or {}):
            return False
        model.load_state_dict(blob["state_dict"])
        return True
    except Exception:  # corrupt file: the caller retrains and overwrites it
        return False
