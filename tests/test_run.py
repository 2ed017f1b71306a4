"""`symviz run`: bad arguments, a deliberately failing chapter, results.json, sources untouched, --seed and
--threads reaching the kernel, progress lines (start/end; a live cell line only on a terminal); the
robustness table (benchmarks/robustness.py, on fake results) and the CPU-model helper (benchmarks/_timing.py)."""
import hashlib
import importlib.util
import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from symviz import run


def _chapter(folder: Path, name: str, body: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell('SCALE = "quick"\nDEVICE = "auto"\nSEED = 0\nREPORT_PATH = None')
    params.metadata.tags = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("x = 41"), nbformat.v4.new_code_cell(body)]
    path = folder / f"{name}.ipynb"
    nbformat.write(nb, path)
    return path


OK = ("from symviz import report\nreport.start('10_ok', REPORT_PATH)\nreport.metric('answer', x + 1)\n"
      "report.metric('scale', SCALE)\nreport.metric('seed', SEED)\n"
      "report.claim('the answer is 42', x + 1 == 42, value=x + 1)\nreport.check()")
# like every real chapter: torch.set_num_threads(1) in the first code cell; --threads N must win over it
THREADS = ("import os, torch\ntorch.set_num_threads(1)\nfrom symviz import report\nreport.start('13_threads', REPORT_PATH)\n"
           "report.metric('omp', os.environ.get('OMP_NUM_THREADS'))\nreport.metric('torch', torch.get_num_threads())\n"
           "report.metric('seed', SEED)\nreport.claim('runs', True)")
BAD = "raise RuntimeError('deliberate failure for the test')"
FALSE_CLAIM = "from symviz import report\nreport.start('12_false', REPORT_PATH)\nreport.claim('x is 0', x == 0, value=x)"


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    root = tmp_path_factory.mktemp("runner")
    nbs = root / "notebooks"
    nbs.mkdir()
    for name, body in [("10_ok", OK), ("11_broken", BAD), ("12_false", FALSE_CLAIM), ("13_threads", THREADS)]:
        _chapter(nbs, name, body)
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in nbs.iterdir()}
    # stdout is a pipe here, as in CI: no live progress line
    proc = subprocess.run([sys.executable, "-m", "symviz", "run", "--notebooks", str(nbs), "--out", str(root / "build"),
                           "--jobs", "2", "--seed", "7", "--threads", "2"], capture_output=True, text=True, timeout=600)
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in nbs.iterdir()}
    return root, proc, before, after


def test_results_json_has_the_documented_shape(executed):
    root, proc, _, _ = executed
    data = json.loads((root / "build" / "results.json").read_text())
    by = {c["name"]: c for c in data["chapters"]}
    assert set(by) == {"10_ok", "11_broken", "12_false", "13_threads"}
    assert (data["seed"], data["threads"], data["scale"], data["device"]) == (7, 2, "quick", "cpu")
    assert data["complete"] is True and data["smoke"] is False and data["student"] is False
    ok = by["10_ok"]
    for key in ("name", "status", "seconds", "peak_rss_mb", "device", "scale", "seed", "threads", "torch_threads",
                "metrics", "claims", "exercises", "error"):
        assert key in ok
    assert ok["status"] == "ok" and ok["error"] is None and ok["scale"] == "quick" and ok["device"] == "cpu"
    assert {k: ok["metrics"].get(k) for k in ("answer", "scale", "seed")} == {"answer": 42, "scale": "quick", "seed": 7}
    assert all(c["seed"] == 7 and c["threads"] == 2 for c in data["chapters"])
    assert ok["claims"] == [{"text": "the answer is 42", "value": 42, "holds": True, "kind": "paper"}]
    assert ok["exercises"] == []
    assert ok["peak_rss_mb"] > 10 and ok["seconds"] > 0


def test_a_failing_chapter_is_named_with_its_cell(executed):
    root, proc, _, _ = executed
    assert proc.returncode == 1
    data = {c["name"]: c for c in json.loads((root / "build" / "results.json").read_text())["chapters"]}
    assert data["11_broken"]["status"] == "failed"
    assert data["11_broken"]["error"].startswith("cell 3: RuntimeError: deliberate failure")
    assert data["12_false"]["status"] == "failed" and "x is 0" in data["12_false"]["error"]
    assert "FAILED: 11_broken, 12_false" in proc.stdout


def test_sources_are_never_written_and_outputs_go_to_build(executed):
    root, _, before, after = executed
    assert before == after
    assert (root / "build" / "notebooks" / "10_ok.ipynb").exists()
    assert (root / "build" / "html" / "index.html").read_text().count("<tr>") == 5
    assert (root / "build" / "html" / "10_ok.html").exists()


@pytest.mark.parametrize("args, message", [
    (["no_such_chapter"], "unknown chapter 'no_such_chapter'; valid chapters: 10_ok"),
    (["--scale", "huge"], "unknown scale 'huge'; valid scales: quick, full"),
    (["--device", "tpu"], "unknown device 'tpu'; valid devices: auto, cpu, cuda, mps"),
])
def test_bad_arguments_exit_2_with_one_line(tmp_path, capsys, args, message):
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    _chapter(nbs, "10_ok", OK)
    assert run.main(["run", "--notebooks", str(nbs), "--out", str(tmp_path / "b")] + args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err


def test_chapter_names_resolve_by_number_stem_and_topic(tmp_path):
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    a = _chapter(nbs, "04_multichannel_egnn", OK)
    b = _chapter(nbs, "05_crystal_equivariance", OK)
    avail = run.discover_chapters(nbs)
    assert run.resolve_chapters(["4", "05", "multichannel_egnn"], avail) == [a, b]
    assert run.resolve_chapters([], avail) == [a, b]


def test_out_inside_notebooks_is_refused(tmp_path):
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    _chapter(nbs, "10_ok", OK)
    with pytest.raises(run.UsageError, match="never go there"):
        run.run_chapters(notebooks=nbs, out=nbs / "build", verbose=False)


# --- fewer writes of the output notebook ----------------------------------------------------------------------

def test_engine_writes_the_output_at_start_end_and_every_autosave_interval(tmp_path, monkeypatch):
    """papermill writes the whole notebook before and after every cell; symviz's engine at the start, at most
    every AUTOSAVE_S seconds, and at the end, with the same outputs and per-cell metadata."""
    import papermill as pm
    import papermill.engines as engines

    nb = nbformat.v4.new_notebook()
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell("# title")] + [nbformat.v4.new_code_cell(f"print({k})") for k in range(4)]
    nb.cells.append(nbformat.v4.new_code_cell("import time; time.sleep(0.6); print('slow')"))
    nb.cells.append(nbformat.v4.new_code_cell("print('after')"))
    src, dest = tmp_path / "six.ipynb", tmp_path / "out" / "six.ipynb"
    dest.parent.mkdir()
    nbformat.write(nb, src)
    writes = []
    real = engines.write_ipynb

    def counting(nb_node, path):
        writes.append(len([c for c in nb_node.cells if c.get("outputs")]))
        real(nb_node, path)

    monkeypatch.setattr(engines, "write_ipynb", counting)
    monkeypatch.setattr(run, "AUTOSAVE_S", 0.5)
    pm.execute_notebook(str(src), str(dest), kernel_name="python3", progress_bar=False,
                        engine_name=run._register_engine())
    # the start (nothing run yet), the end, and in between only where 0.5 s had passed since the last write: after
    # the slow cell, perhaps also at the first cell (the kernel's start-up), never 2 per cell (papermill: 16 writes)
    assert writes[0] == 0 and writes[-1] == 6 and 5 in writes and len(writes) <= 4, writes
    out = nbformat.read(dest, as_version=4)
    code = [c for c in out.cells if c.cell_type == "code"]
    assert [c.outputs[0]["text"].strip() for c in code] == ["0", "1", "2", "3", "slow", "after"]
    assert all(c.metadata.papermill["duration"] is not None for c in code)
    assert code[4].metadata.papermill["duration"] >= 0.6


IMPORTS = ("import sys\nimport nbformat, jsonschema\nimport plotly.graph_objects as go\n"
           "go.Figure(go.Scatter(x=[0, 1], y=[1, 0])).show()\n"
           "nbformat.validate(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell('x = 1')]))\n"
           "from symviz import report\nreport.start('14_imports', REPORT_PATH)\n"
           "report.claim('rfc3987_syntax skipped', 'rfc3987_syntax' in sys.modules and sys.modules['rfc3987_syntax'] is None)\n"
           "report.claim('no iri checker', 'iri' not in jsonschema.FormatChecker.checkers)")


def test_batch_runs_skip_the_slow_optional_import_and_notebooks_still_validate(tmp_path):
    """symviz run's kernel (and child) skip rfc3987_syntax (1.1-1.4 s at jsonschema's import, which nbformat and
    plotly's notebook renderer trigger); a plotly figure still shows and nbformat still validates notebooks."""
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    _chapter(nbs, "14_imports", IMPORTS)
    assert run.main(["run", "--notebooks", str(nbs), "--out", str(tmp_path / "b"), "--no-html"]) == 0
    chapter = json.loads((tmp_path / "b" / "results.json").read_text())["chapters"][0]
    assert chapter["status"] == "ok" and all(c["holds"] for c in chapter["claims"]), chapter


# --- --seed and --threads reach the kernel ------------------------------------------------------------------

def test_seed_and_threads_reach_the_kernel(executed):
    root, _, _, _ = executed
    by = {c["name"]: c for c in json.loads((root / "build" / "results.json").read_text())["chapters"]}
    t = by["13_threads"]
    assert t["status"] == "ok", t["error"]
    # the kernel inherits OMP_NUM_THREADS, and the chapter's own torch.set_num_threads(1) does not undo --threads
    assert {k: t["metrics"].get(k) for k in ("omp", "torch", "seed")} == {"omp": "2", "torch": 2, "seed": 7}
    assert t["threads"] == 2 and t["torch_threads"] == 2
    assert all(c["torch_threads"] == 2 for c in by.values())  # every kernel, pinned at start
    executed_nb = nbformat.read(root / "build" / "notebooks" / "10_ok.ipynb", as_version=4)
    injected = [c for c in executed_nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert "SEED = 7" in injected[0].source


# --- progress -------------------------------------------------------------------------------------------------

def test_each_chapter_prints_a_start_line_and_no_live_line_without_a_terminal(executed):
    _, proc, _, _ = executed
    lines = proc.stdout.split("\n\n")[0].splitlines()  # the progress log, above the summary table
    assert "seed=7, threads=2" in lines[0]
    for name in ("10_ok", "11_broken", "12_false", "13_threads"):
        start = [i for i, l in enumerate(lines) if l.split() == [name, "started"]]
        end = [i for i, l in enumerate(lines) if l.split()[:2] in ([name, "ok"], [name, "failed"])]
        assert len(start) == 1 and len(end) == 1 and start[0] < end[0], proc.stdout
    # not a terminal (a pipe, as in CI): no carriage returns, escape codes or cell counters in the log
    assert "\r" not in proc.stdout and "\x1b" not in proc.stdout and "cell 1/" not in proc.stdout


def _run_on_a_terminal(cmd, timeout=300):
    """Run ``cmd`` with stdout on a pseudo-terminal; return what it wrote there and its exit status."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(cmd, stdout=slave, stderr=subprocess.PIPE, env={**os.environ, "COLUMNS": "150"})
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the last writer closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    return b"".join(chunks).decode(errors="replace"), proc.returncode


def test_on_a_terminal_a_cell_progress_line_is_redrawn_in_place(tmp_path):
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    _chapter(nbs, "10_ok", OK)
    text, rc = _run_on_a_terminal([sys.executable, "-m", "symviz", "run", "--notebooks", str(nbs),
                                   "--out", str(tmp_path / "build"), "--no-html"])
    assert rc == 0, text
    assert "10_ok" in text and "started" in text
    # 3 code cells + the injected parameters: "cell k/4", each redraw erasing the line first
    assert "cell 4/4" in text and "\r\x1b[2K" in text, text
    data = json.loads((tmp_path / "build" / "results.json").read_text())
    # defaults: seed 0, threads left to torch and the chapter (recorded as "default", with what torch reported)
    assert (data["seed"], data["threads"]) == (0, "default")
    ch = data["chapters"][0]
    assert ch["metrics"]["seed"] == 0 and ch["threads"] == "default"
    assert ch["torch_threads"] is None or ch["torch_threads"] >= 1


# --- argument checks ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--seed", "-1"], "--seed must be a non-negative integer, got -1"),
    (["--seed=-1"], "--seed must be a non-negative integer, got -1"),
    (["--seed", "1.5"], "--seed must be a non-negative integer, got '1.5'"),
    (["--seed", "abc"], "--seed must be a non-negative integer, got 'abc'"),
    (["--threads", "0"], "--threads must be a positive integer, got 0"),
    (["--threads", "two"], "--threads must be a positive integer, got 'two'"),
    (["--timeout", "0"], "--timeout must be a positive number of seconds, got 0.0"),
    (["--timeout", "-5"], "--timeout must be a positive number of seconds, got -5.0"),
    (["--timeout", "nan"], "--timeout must be a positive number of seconds, got nan"),
    (["--timeout", "soon"], "--timeout must be a positive number of seconds, got 'soon'"),
    (["--jobs", "0"], "--jobs must be a positive integer, got 0"),
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
])
def test_bad_numbers_exit_2_with_one_line_before_anything_runs(tmp_path, capsys, args, message):
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    _chapter(nbs, "10_ok", OK)
    assert run.main(["run", "--notebooks", str(nbs), "--out", str(tmp_path / "b")] + args) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.count("\n") == 0 and err == f"symviz run: error: {message}"
    assert captured.out == "" and not (tmp_path / "b").exists()


@pytest.mark.parametrize("kwargs, message", [
    ({"timeout": 0}, "--timeout must be a positive number"),
    ({"timeout": -5}, "--timeout must be a positive number"),
    ({"timeout": float("inf")}, "--timeout must be a positive number"),
    ({"timeout": True}, "--timeout must be a positive number"),
    ({"timeout": "10"}, None),
    ({"seed": -1}, "--seed must be a non-negative integer"),
    ({"seed": 1.0}, "--seed must be a non-negative integer"),
    ({"seed": True}, "--seed must be a non-negative integer"),
    ({"threads": 0}, "--threads must be a positive integer"),
    ({"threads": 2.5}, "--threads must be a positive integer"),
    ({"jobs": 0}, "--jobs must be a positive integer"),
])
def test_python_api_validates_numbers(tmp_path, kwargs, message):
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    _chapter(nbs, "10_ok", OK)
    if message is None:  # a string of a positive number is fine (the command line passes strings); only check
        assert run._check_timeout(kwargs["timeout"]) == 10.0
        return
    with pytest.raises(run.UsageError, match=message):
        run.run_chapters(notebooks=nbs, out=tmp_path / "b", verbose=False, html=False, **kwargs)
    assert not (tmp_path / "b").exists()


# --- benchmarks: the robustness table and the CPU model ----------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def _module(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    saved = list(sys.path)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path[:] = saved  # the benchmarks folder stays off the path of the other tests
    return mod


@pytest.fixture(scope="module")
def robustness():
    return _module("robustness")


def _summary(seed, threads, *chapters):
    return {"seed": seed, "threads": threads, "chapters": list(chapters)}


def _result(name, claims, status=None, seconds=10.0, error=None):
    status = status or ("ok" if all(h for _, h, _ in claims) and error is None else "failed")
    return {"name": name, "status": status, "seconds": seconds, "peak_rss_mb": 300.0, "torch_threads": 1,
            "claims": [{"text": t, "holds": h, "value": v} for t, h, v in claims], "error": error}


META = {"cpu": "AMD EPYC 7B13", "cores": 2, "torch": "2.13.0+cpu"}


def _fake_store(rob):
    store = {"chapters": {}}
    for seed in (0, 1000, 2000):
        for threads in (1, 2):
            fails = seed == 1000 and threads == 2
            ch04 = _result("04_multichannel_egnn", [("multichannel MSE below single-channel | MSE", not fails, 0.012345),
                                                   ("equivariance error below 1e-5", True, {"big": list(range(30))})],
                           seconds=40.0 + seed / 1000 + threads)
            ch05 = (_result("05_crystal", [], error="cell 7: RuntimeError: boom", seconds=3.0) if seed == 2000 and threads == 1
                    else _result("05_crystal", [("site orbits respected", True, "yes")], seconds=20.0))
            rob.merge(store, _summary(seed, threads, ch04, ch05), seed, threads, {**META, "date": "2026-11-30 04:00 UTC"})
    return store


def test_robustness_table_has_a_row_per_claim_and_a_column_per_setting(robustness):
    store = _fake_store(robustness)
    md = robustness.build_table(store, {**META, "date": "2026-11-30 04:10 UTC"})
    assert "Machine: AMD EPYC 7B13, 2 cores, torch 2.13.0+cpu. Written 2026-11-30 04:10 UTC." in md
    lines = md.splitlines()
    header = next(l for l in lines if l.startswith("| chapter | claim |"))
    labels = ["seed 0, 1 thr", "seed 0, 2 thr", "seed 1000, 1 thr", "seed 1000, 2 thr", "seed 2000, 1 thr", "seed 2000, 2 thr"]
    assert [c.strip() for c in header.strip("|").split("|")][2:] == labels
    row = next(l for l in lines if "multichannel MSE" in l)
    cells = [c.strip() for c in row.replace("\\|", "/").strip("|").split("|")]
    assert cells[0] == "04_multichannel_egnn" and "single-channel / MSE" in cells[1]
    assert cells[2:] == ["holds (0.0123)"] * 3 + ["**FAILS** (0.0123)"] + ["holds (0.0123)"] * 2
    long_value = next(l for l in lines if "equivariance error" in l)
    assert "holds |" in long_value and "range" not in long_value and "[" not in long_value.split("|", 3)[3]
    row05 = next(l for l in lines if "site orbits" in l)
    assert [c.strip() for c in row05.strip("|").split("|")][2:] == (["holds (yes)"] * 4 + ["chapter FAILED", "holds (yes)"])
    times = next(l for l in lines if l.startswith("| 04_multichannel_egnn |") and "41.0" in l)
    assert "41.0 | 42.0 | 42.0 | 43.0 | 43.0 | 44.0 | 2026-11-30" in times
    assert "FAILED (3 s)" in next(l for l in lines if l.startswith("| 05_crystal |") and "FAILED (" in l)
    assert "- 05_crystal, seed 2000, 1 thr: cell 7: RuntimeError: boom" in md
    assert "**2 failure(s)** in this table." in md
    assert robustness.failures(store) == [
        "04_multichannel_egnn [seed 1000, 2 thr]: claim FAILS: multichannel MSE below single-channel | MSE",
        "05_crystal [seed 2000, 1 thr]: chapter failed: cell 7: RuntimeError: boom"]


def test_robustness_rerun_of_one_chapter_keeps_the_other_rows(robustness):
    store = _fake_store(robustness)
    before05 = json.dumps(store["chapters"]["05_crystal"], sort_keys=True)
    fixed = _result("04_multichannel_egnn", [("multichannel MSE below single-channel | MSE", True, 0.01),
                                             ("a new claim", True, 3)], seconds=30.0)
    robustness.merge(store, _summary(1000, 2, fixed), 1000, 2, {**META, "date": "2026-12-01 09:00 UTC"})
    assert json.dumps(store["chapters"]["05_crystal"], sort_keys=True) == before05
    assert store["chapters"]["04_multichannel_egnn"]["seed1000-threads2"]["claims"][0]["holds"] is True
    assert store["chapters"]["04_multichannel_egnn"]["seed0-threads1"]["seconds"] == 41.0  # other settings kept
    md = robustness.build_table(store, {**META, "date": "2026-12-01 09:00 UTC"})
    new = next(l for l in md.splitlines() if "a new claim" in l)
    assert new.count("not recorded") == 5 and "holds (3)" in new
    assert "2026-11-30 .. 2026-12-01" in md
    assert robustness.failures(store) == ["05_crystal [seed 2000, 1 thr]: chapter failed: cell 7: RuntimeError: boom"]


def test_robustness_main_merges_runs_and_exits_1_listing_failures(robustness, tmp_path, monkeypatch, capsys):
    """main() with symviz run replaced by fake summaries: store and .md written, --only merges, exit status."""
    runs = []

    def fake_run_setting(seed, threads, args, prefix, isa="native"):
        runs.append((seed, threads, tuple(args.only)))
        ch = [_result("04_multichannel_egnn", [("claim A", not (seed == 1000 and threads == 2), 1.5)])]
        if not args.only:
            ch.append(_result("05_crystal", [("claim B", True, None)]))
        return _summary(seed, threads, *ch)

    monkeypatch.setattr(robustness, "run_setting", fake_run_setting)
    monkeypatch.setattr(robustness, "machine_info", lambda: {**META, "gpu": "no GPU"})
    out, md = tmp_path / "rob", tmp_path / "robustness.md"
    assert robustness.main(["--out", str(out), "--md", str(md)]) == 1
    assert len(runs) == 6 and "FAILED:\n  04_multichannel_egnn [seed 1000, 2 thr]: claim FAILS: claim A" in capsys.readouterr().out
    store = json.loads((out / "robustness.json").read_text())
    assert set(store["chapters"]) == {"04_multichannel_egnn", "05_crystal"}
    assert len(store["chapters"]["05_crystal"]) == 6
    runs.clear()
    assert robustness.main(["--out", str(out), "--md", str(md), "--only", "04", "--seeds", "0", "--threads", "1"]) == 0
    assert runs == [(0, 1, ("04",))]
    out_text = capsys.readouterr().out
    assert "failures kept from earlier runs" in out_text and "claim A" in out_text
    text = md.read_text()
    assert "| 05_crystal | claim B |" in text and text.count("| 04_multichannel_egnn | claim A |") == 1
    with pytest.raises(SystemExit) as exc:
        robustness.main(["--out", str(out), "--seeds", "-1"])
    assert exc.value.code == 2


def test_robustness_isa_settings_have_their_own_columns_and_environment(robustness, tmp_path, monkeypatch):
    """--isa avx2: its own setting key, label and column; the environment limits torch, MKL and oneDNN; a CPU
    where torch reports another capability is refused before anything runs."""
    assert robustness.setting_key(1000, 1) == "seed1000-threads1"
    assert robustness.setting_key(1000, 1, "avx2") == "seed1000-threads1-avx2"
    assert robustness._label("seed1000-threads1-avx2") == "seed 1000, 1 thr, AVX2"
    keys = ["seed0-threads1-avx2", "seed1000-threads2", "seed0-threads2", "seed0-threads1"]
    assert sorted(keys, key=robustness._setting_order) == ["seed0-threads1", "seed0-threads2", "seed1000-threads2",
                                                           "seed0-threads1-avx2"], "native columns first"
    env = robustness.isa_env("avx2")
    assert env["ATEN_CPU_CAPABILITY"] == "avx2" and env["MKL_ENABLE_INSTRUCTIONS"] == "AVX2" and "ONEDNN_MAX_CPU_ISA" in env
    assert robustness.isa_env("native") == {}
    with pytest.raises(ValueError, match="unknown instruction set"):
        robustness.isa_env("avx9")

    class Done:
        def __init__(self, out):
            self.stdout = out

    monkeypatch.setattr(robustness.subprocess, "run", lambda *a, **k: Done("AVX512\n"))
    with pytest.raises(RuntimeError, match="not 'AVX2'"):
        robustness.check_isa("avx2")
    robustness.check_isa("native")  # nothing to check
    assert robustness.main(["--out", str(tmp_path / "o"), "--md", str(tmp_path / "r.md"), "--isa", "avx2"]) == 2

    monkeypatch.setattr(robustness.subprocess, "run", lambda *a, **k: Done("AVX2\n"))
    runs = []

    def fake_run_setting(seed, threads, args, prefix, isa="native"):
        runs.append((seed, threads, isa))
        return _summary(seed, threads, _result("04_multichannel_egnn", [("claim A", True, 1.5)]))

    monkeypatch.setattr(robustness, "run_setting", fake_run_setting)
    monkeypatch.setattr(robustness, "machine_info", lambda: {**META, "gpu": "no GPU"})
    md = tmp_path / "r.md"
    assert robustness.main(["--out", str(tmp_path / "o"), "--md", str(md), "--seeds", "0", "--threads", "1",
                            "--isa", "native", "avx2"]) == 0
    assert runs == [(0, 1, "native"), (0, 1, "avx2")]
    store = json.loads((tmp_path / "o" / "robustness.json").read_text())
    assert set(store["chapters"]["04_multichannel_egnn"]) == {"seed0-threads1", "seed0-threads1-avx2"}
    assert store["chapters"]["04_multichannel_egnn"]["seed0-threads1-avx2"]["isa"] == "avx2"
    assert "| chapter | claim | seed 0, 1 thr | seed 0, 1 thr, AVX2 |" in md.read_text()


@pytest.mark.parametrize("value, text", [(0.012345, "0.0123"), (3, "3"), (True, "True"), ("yes", "yes"),
                                         ([1.0, 2.5], "1, 2.5"), ({"multi": 0.1, "single": 0.3}, "multi 0.1, single 0.3"),
                                         ("a much too long string for one cell", ""), ([[1, 2]], ""), (None, "")])
def test_robustness_short_value(robustness, value, text):
    assert robustness.short_value(value) == text


def test_cpu_model_reads_proc_cpuinfo_and_falls_back(tmp_path, monkeypatch):
    timing = _module("_timing")
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC  7B13 64-Core Processor\n"
                    "processor\t: 1\nmodel name\t: AMD EPYC 7B13 64-Core Processor\n")
    assert timing.cpu_model(info) == "AMD EPYC 7B13 64-Core Processor"
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nBogoMIPS\t: 50.00\nCPU part\t: 0xd0c\n")  # no "model name" on many ARM boards
    monkeypatch.setattr(timing.platform, "processor", lambda: "arm")
    assert timing.cpu_model(arm) == "arm"
    monkeypatch.setattr(timing.platform, "processor", lambda: "")
    monkeypatch.setattr(timing.platform, "machine", lambda: "aarch64")
    assert timing.cpu_model(tmp_path / "missing") == "aarch64"
    monkeypatch.setattr(timing.platform, "machine", lambda: "")
    assert timing.cpu_model(tmp_path / "missing") == "unknown CPU"


def test_benchmark_tables_name_the_cpu_model():
    timing = _module("_timing")
    bench = _module("run")
    saved = list(sys.path)
    sys.path.insert(0, str(ROOT / "benchmarks"))  # machine() imports _timing as the script does
    try:
        text = bench.machine()
    finally:
        sys.path[:] = saved
    assert text.startswith(f"{timing.cpu_model()}, {os.cpu_count()} cores, ") and "torch " in text
