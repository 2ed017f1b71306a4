"""The chapter protocol of symviz.report: claim kinds, strict vs interactive check, and accept() for exercises."""
from __future__ import annotations

import json
import sys
import warnings

import pytest

from symviz import report
from symviz.checks import CheckResult


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    monkeypatch.delenv("SYMVIZ_STRICT", raising=False)
    monkeypatch.delenv("SYMVIZ_SOLUTIONS", raising=False)
    report._exercises.clear()
    yield
    report._exercises.clear()


def is_square(fn) -> CheckResult:
    ok = all(fn(k) == k * k for k in range(-3, 4))
    return CheckResult(ok, "squares every integer" if ok else f"fn(3) = {fn(3)}, expected 9")


def test_claim_kinds_recorded_and_validated(tmp_path):
    r = report.start("demo", tmp_path / "r.json", verbose=False)
    r.claim("the paper's effect", True, kind="paper")
    r.claim("exact invariance", True, kind="sanity")
    data = json.loads((tmp_path / "r.json").read_text())
    assert [c["kind"] for c in data["claims"]] == ["paper", "sanity"]
    with pytest.raises(ValueError, match="claim kind must be one of paper, sanity"):
        r.claim("x", True, kind="empirical")


def test_check_is_strict_under_symviz_run(tmp_path):
    r = report.start("demo", tmp_path / "r.json", verbose=False)
    r.claim("holds", True)
    r.claim("does not hold", False)
    with pytest.raises(report.ClaimFailed, match="does not hold"):
        r.check()


def test_check_warns_and_goes_on_interactively():
    r = report.start("demo", None, verbose=False)
    r.claim("holds", True)
    r.claim("the effect is there", False)
    with pytest.warns(report.ClaimWarning, match="1 of 2 claims do not hold on this run: the effect is there"):
        assert r.check() is None
    assert r.failed == ["the effect is there"]


def test_check_strict_by_environment(monkeypatch):
    monkeypatch.setenv("SYMVIZ_STRICT", "1")
    r = report.start("demo", None, verbose=False)
    r.claim("no", False)
    with pytest.raises(report.ClaimFailed):
        r.check()


def test_check_all_holding_is_silent():
    r = report.start("demo", None, verbose=False)
    r.claim("yes", True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert r.check() is None and r.failed == []


def test_accept_uses_a_correct_learner_function_and_records_its_use(tmp_path):
    def mine(k):
        return k * k

    fn = report.accept("square", mine, is_square, reference=lambda k: k ** 2)
    assert fn.source == "learner" and fn.passed and fn.__wrapped__ is mine
    rec = report.exercises()[0]
    assert rec["used_downstream"] is False
    assert fn(5) == 25
    r = report.start("demo", tmp_path / "r.json", verbose=False)
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["exercises"] == [{"name": "square", "source": "learner", "passed": True, "used_downstream": True,
                                  "message": "squares every integer"}]
    assert r.exercises[0]["used_downstream"]


@pytest.mark.parametrize("wrong", [lambda k: 2 * k, lambda k: -k * k, lambda k: k * abs(k)])
def test_accept_falls_back_to_the_reference_on_a_wrong_answer(wrong, capsys):
    ref = lambda k: k ** 2  # noqa: E731
    fn = report.accept("square", wrong, is_square, reference=ref)
    assert fn.source == "reference" and not fn.passed and fn.__wrapped__ is ref
    out = capsys.readouterr().out
    assert "uses the tested reference" in out and "your code is unchanged" in out
    assert fn(4) == 16


def test_accept_survives_the_unfilled_template(capsys):
    def template(k):
        raise NotImplementedError("write the square")

    fn = report.accept("square", template, is_square, reference=lambda k: k ** 2)
    assert fn.source == "reference" and fn(3) == 9
    assert "NotImplementedError: write the square" in capsys.readouterr().out
    assert report.exercises()[0]["message"].startswith("NotImplementedError")


def test_accept_takes_the_solution_under_symviz_run(monkeypatch):
    def template(k):
        raise NotImplementedError

    def solution(k):
        return k * k

    fn = report.accept("square", template, is_square, reference=lambda k: k ** 2, solution=solution)
    assert fn.source == "reference"              # interactive: the learner's (unfilled) code is what is checked
    monkeypatch.setenv("SYMVIZ_SOLUTIONS", "1")
    fn = report.accept("square", template, is_square, reference=lambda k: k ** 2, solution=solution)
    assert fn.source == "solution" and fn.__wrapped__ is solution
    assert len(report.exercises()) == 1           # re-running the cell replaces the record


def test_accept_rejects_bad_arguments():
    with pytest.raises(ValueError, match="exercise name"):
        report.accept("", abs, is_square, abs)
    with pytest.raises(TypeError, match="check and reference must be callable"):
        report.accept("x", abs, None, abs)


def test_accepted_survives_deepcopy_and_pickle_probes():
    import copy

    fn = report.accept("square", lambda k: k * k, is_square, reference=lambda k: k ** 2)
    clone = copy.deepcopy(fn)
    assert clone(3) == 9 and clone.source == "learner"


def _square(k):
    return k * k


class _Holder:
    """Stands for a trained model that keeps the learner's function."""

    def __init__(self, fn):
        self.fn = fn


def _train_with(fn):
    fn(2)                   # the exercise is used inside the worker process
    return _Holder(fn)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parallel_runs forks on Linux only")
def test_an_exercise_used_in_a_worker_process_counts_as_used_here():
    import functools

    from symviz.train import parallel_runs

    fn = report.accept("square", _square, is_square, reference=_square)
    assert report.exercises()[0]["used_downstream"] is False
    held = parallel_runs([functools.partial(_train_with, fn), functools.partial(_train_with, fn)], workers=2)
    assert report.exercises()[0]["used_downstream"] is True
    back = held[0].fn
    assert back._record is report._exercises[0] and back(3) == 9 and back.source == "learner"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forks")
def test_processes_writing_one_report_at_once_never_collide(tmp_path):
    """parallel_runs' workers and the kernel may write the same report at the same moment: each writes through a
    temporary file of its own, so no writer finds its file moved away by another."""
    import json
    import os

    r = report.start("demo", tmp_path / "r.json", verbose=False)
    r.metric("x", list(range(200)))
    pids = []
    for _ in range(3):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                for _ in range(300):
                    r._write()
            except BaseException:   # noqa: BLE001
                code = 1
            os._exit(code)
        pids.append(pid)
    for _ in range(300):
        r._write()
    assert [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids] == [0, 0, 0]
    assert json.loads((tmp_path / "r.json").read_text())["metrics"]["x"] == list(range(200))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]      # no temporary file left behind


def test_an_unpickled_exercise_without_a_registration_keeps_its_own_record():
    import pickle

    fn = report.accept("square", _square, is_square, reference=_square)
    data = pickle.dumps(fn)
    report._exercises.clear()
    back = pickle.loads(data)
    assert back(4) == 16 and back._record["name"] == "square" and back._record["used_downstream"]
    assert report.exercises() == []


def _use_and_forget(fn):
    fn(3)                   # used inside the worker, and nothing that holds it comes back
    return 9


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parallel_runs forks on Linux only")
def test_an_exercise_used_in_a_worker_counts_even_when_the_result_does_not_hold_it():
    import functools

    from symviz.train import parallel_runs

    fn = report.accept("square", _square, is_square, reference=_square)
    other = report.accept("cube", lambda k: k ** 3, lambda f: True, reference=lambda k: k ** 3)
    assert parallel_runs([functools.partial(_use_and_forget, fn)] * 2, workers=2) == [9, 9]
    used = {e["name"]: e["used_downstream"] for e in report.exercises()}
    assert used == {"square": True, "cube": False}, "only the exercise the workers called"
    assert other(2) == 8
