"""`symviz run`: bad arguments, a deliberately failing chapter, results.json, sources untouched."""
import hashlib
import json
import subprocess
import sys
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
      "report.metric('scale', SCALE)\nreport.claim('the answer is 42', x + 1 == 42, value=x + 1)\nreport.check()")
BAD = "raise RuntimeError('deliberate failure for the test')"
FALSE_CLAIM = "from symviz import report\nreport.start('12_false', REPORT_PATH)\nreport.claim('x is 0', x == 0, value=x)"


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    root = tmp_path_factory.mktemp("runner")
    nbs = root / "notebooks"
    nbs.mkdir()
    for name, body in [("10_ok", OK), ("11_broken", BAD), ("12_false", FALSE_CLAIM)]:
        _chapter(nbs, name, body)
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in nbs.iterdir()}
    proc = subprocess.run([sys.executable, "-m", "symviz", "run", "--notebooks", str(nbs), "--out", str(root / "build"),
                           "--jobs", "2"], capture_output=True, text=True, timeout=600)
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in nbs.iterdir()}
    return root, proc, before, after


def test_results_json_has_the_documented_shape(executed):
    root, proc, _, _ = executed
    data = json.loads((root / "build" / "results.json").read_text())
    by = {c["name"]: c for c in data["chapters"]}
    assert set(by) == {"10_ok", "11_broken", "12_false"}
    ok = by["10_ok"]
    for key in ("name", "status", "seconds", "peak_rss_mb", "device", "scale", "metrics", "claims", "error"):
        assert key in ok
    assert ok["status"] == "ok" and ok["error"] is None and ok["scale"] == "quick" and ok["device"] == "cpu"
    assert ok["metrics"] == {"answer": 42, "scale": "quick"}
    assert ok["claims"] == [{"text": "the answer is 42", "value": 42, "holds": True}]
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
    assert (root / "build" / "html" / "index.html").read_text().count("<tr>") == 4
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
