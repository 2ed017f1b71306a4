"""symviz.train.parallel_runs: independent, self-seeding trainings in forked worker processes."""
from __future__ import annotations

import functools
import os
import signal
import sys
import time
import warnings

import pytest
import torch

from symviz import train
from symviz.train import fit, parallel_runs, run_workers

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers are forked on Linux only")


def _train(seed: int, steps: int = 40):
    """A seeded training: the result depends on nothing but ``seed``."""
    g = torch.Generator().manual_seed(100 + seed)
    x = torch.randn(128, 4, generator=g)
    y = torch.sin(x.sum(-1, keepdim=True))
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    loader = train.TensorBatches(x, y, batch_size=32, shuffle=True, seed=seed)
    res = fit(model, lambda m, b: ((m(b[0]) - b[1]) ** 2).mean(), loader, epochs=steps // 4, lr=1e-2,
              optimizer="adam", seed=seed, progress=False)
    return res.model, res.history["train_loss"].tolist()


def _where(k: int):
    print(f"job {k} says hello")
    if k == 1:
        warnings.warn("job 1 warns", RuntimeWarning)
    return k, os.getpid()


@linux_only
def test_results_come_back_in_order_bit_identical_to_running_here():
    with train.torch_threads(1):
        here = [_train(s) for s in range(3)]
        there = parallel_runs([functools.partial(_train, s) for s in range(3)], workers=2)
    for (m1, h1), (m2, h2) in zip(here, there):
        assert h1 == h2
        for p1, p2 in zip(m1.parameters(), m2.parameters()):
            assert torch.equal(p1, p2)


@linux_only
def test_jobs_run_in_other_processes_and_their_output_and_warnings_arrive_here_in_order(capsys):
    with pytest.warns(RuntimeWarning, match="job 1 warns"):
        out = parallel_runs([functools.partial(_where, k) for k in range(3)], workers=2)
    assert [k for k, _ in out] == [0, 1, 2]
    assert all(pid != os.getpid() for _, pid in out), "each job ran in a worker"
    assert capsys.readouterr().out == "job 0 says hello\njob 1 says hello\njob 2 says hello\n"


def test_one_worker_runs_the_jobs_here():
    out = parallel_runs([functools.partial(_where, k) for k in (0, 2)], workers=1)
    assert [pid for _, pid in out] == [os.getpid()] * 2


class LearnerBug(Exception):
    pass


def _buggy():
    raise LearnerBug("index out of range in my_update")


@linux_only
def test_an_error_in_a_job_is_raised_here_with_its_own_type():
    with pytest.raises(LearnerBug, match="my_update"):
        parallel_runs([functools.partial(_where, 0), _buggy], workers=2)


def _unpicklable():
    return lambda: 1


@linux_only
def test_a_result_that_cannot_travel_back_is_computed_here_and_says_why():
    with pytest.warns(RuntimeWarning, match="did not come back"):
        out = parallel_runs([_unpicklable, functools.partial(_where, 2)], workers=2)
    assert callable(out[0]) and out[0]() == 1 and out[1][0] == 2


def _dies_in_a_worker():
    if train._IN_WORKER:
        os.kill(os.getpid(), signal.SIGKILL)   # as the out-of-memory killer would
    return "computed here"


@linux_only
def test_a_worker_killed_before_its_result_is_replaced_by_a_run_here():
    with pytest.warns(RuntimeWarning, match="ended without a result: killed by SIGKILL, e.g. for memory, 0 bytes"):
        out = parallel_runs([_dies_in_a_worker, functools.partial(_where, 2)], workers=2)
    assert out[0] == "computed here" and out[1][0] == 2


def _refuse_to_load():
    raise ValueError("this result cannot be rebuilt here")


class _LoadsBadly:
    """Pickles fine in the worker; rebuilding it in the parent raises."""

    def __reduce__(self):
        return _refuse_to_load, ()


@linux_only
def test_a_result_that_cannot_be_unpickled_here_says_why_and_is_computed_here():
    with pytest.warns(RuntimeWarning, match=r"exit status 0, \d+ bytes received, which could not be unpickled here "
                                            r"\(ValueError: this result cannot be rebuilt here\)"):
        out = parallel_runs([_LoadsBadly, functools.partial(_where, 2)], workers=2)
    assert isinstance(out[0], _LoadsBadly) and out[1][0] == 2


def _broken_bookkeeping():
    raise RuntimeError("bookkeeping broke")


@linux_only
def test_a_worker_that_fails_outside_its_job_says_so_and_the_job_runs_here(monkeypatch, capfd):
    """An error in the worker's own code (not the job's) leaves no result: the parent names the exit status, the
    worker's traceback is on the real stderr, and the job still runs here."""
    from symviz import report

    monkeypatch.setattr(report, "used_exercises", _broken_bookkeeping)   # the worker calls it before the job
    with pytest.warns(RuntimeWarning, match="exit status 1: it failed outside its job"):
        out = parallel_runs([functools.partial(_where, 3), functools.partial(_where, 4)], workers=2)
    assert [k for k, _ in out] == [3, 4] and all(pid == os.getpid() for _, pid in out)
    err = capfd.readouterr().err
    assert "failed outside its job" in err and "bookkeeping broke" in err


def _nested(k: int):
    return [pid for _, pid in parallel_runs([functools.partial(_where, j) for j in (0, 2)], workers=2)], os.getpid()


@linux_only
def test_a_worker_runs_nested_jobs_itself():
    (pids, worker), = parallel_runs([functools.partial(_nested, 0), functools.partial(_where, 9)], workers=2)[:1]
    assert pids == [worker, worker]


def test_workers_follow_the_free_cores_and_the_environment(monkeypatch):
    monkeypatch.delenv(train.WORKERS_ENV, raising=False)
    monkeypatch.setattr(train, "usable_cores", lambda: 4)
    with train.torch_threads(1):
        assert run_workers() == 4
    with train.torch_threads(2):
        assert run_workers() == 2, "two threads per training on four cores: two trainings at once"
    with train.torch_threads(8):
        assert run_workers() == 1
    monkeypatch.setenv(train.WORKERS_ENV, "1")
    assert run_workers() == 1
    monkeypatch.setenv(train.WORKERS_ENV, "zero")
    with pytest.raises(ValueError, match="SYMVIZ_WORKERS"):
        run_workers()


def test_bad_arguments_are_refused():
    with pytest.raises(TypeError, match="job 1 is a int"):
        parallel_runs([_unpicklable, 3])
    with pytest.raises(ValueError, match="workers must be a positive integer"):
        parallel_runs([_unpicklable], workers=0)
    assert parallel_runs([]) == []


def _span(seconds: float):
    start = time.monotonic()   # CLOCK_MONOTONIC: one clock for every process on the machine
    time.sleep(seconds)
    return start, time.monotonic()


@linux_only
def test_cost_starts_the_longest_jobs_first_and_keeps_the_results_in_job_order():
    # two workers, three jobs: the job not in the first wave starts only once a first-wave job has ended
    durations = [0.05, 0.05, 0.3]
    plain = parallel_runs([functools.partial(_span, d) for d in durations], workers=2)
    assert plain[2][0] >= min(plain[0][1], plain[1][1]), "without cost, jobs start in job order"
    ranked = parallel_runs([functools.partial(_span, d) for d in durations], workers=2, cost=durations)
    assert ranked[1][0] >= min(ranked[0][1], ranked[2][1]), "the long job 2 and job 0 start first, job 1 waits"
    assert ranked[2][0] < ranked[1][0]
    assert [b - a >= d for (a, b), d in zip(ranked, durations)] == [True] * 3, "results come back in job order"


@pytest.mark.parametrize("cost", [[1, 2], [1, 2, float("nan")], [1, -1, 2], [1, True, 2], "abc"])
def test_cost_must_be_one_non_negative_number_per_job(cost):
    with pytest.raises(ValueError, match="cost must hold one finite, non-negative number per job"):
        parallel_runs([functools.partial(pow, 2, k) for k in range(3)], workers=2, cost=cost)
