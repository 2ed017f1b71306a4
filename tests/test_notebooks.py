"""Every chapter in notebooks/: committed without outputs, follows the parameter contract, and runs in
quick mode through `symviz run` with its claims holding. Chapter 00 also runs with the network off."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
IDS = [p.stem for p in NOTEBOOKS]


def test_there_are_chapters():
    assert NOTEBOOKS and NOTEBOOKS[0].stem == "00_symmetry_primer"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert not cell.outputs, f"{path.name} cell {i + 1} has outputs: clear them before committing"
            assert cell.execution_count is None, f"{path.name} cell {i + 1} has an execution count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_parameters_cell_and_kernelspec(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", "JupyterLab asks for a kernel without kernelspec"
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "exactly one cell tagged 'parameters'"
    for name in ("SCALE", "DEVICE", "SEED", "REPORT_PATH"):
        assert f"{name} =" in params[0].source, f"the parameters cell must define {name}"
    text = "\n".join(c.source for c in nb.cells)
    assert "report.start(" in text and "report.check()" in text, "a Result cell records and checks claims"
    assert any(c.metadata.get("jupyter", {}).get("source_hidden") for c in nb.cells), "solutions live in collapsed cells"


def _run(names, out, env=None, prefix=()):
    cmd = list(prefix) + [sys.executable, "-m", "symviz", "run", *names, "--scale", "quick", "--out", str(out), "--no-html"]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=3600)


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_chapter_runs_in_quick_mode_and_its_claims_hold(path, tmp_path):
    proc = _run([path.stem], tmp_path)
    data = json.loads((tmp_path / "results.json").read_text())["chapters"][0]
    assert data["status"] == "ok", f"{path.stem}: {data['error']}\n{proc.stdout[-3000:]}"
    assert data["claims"] and all(c["holds"] for c in data["claims"])
    paper = [c for c in data["claims"] if c.get("kind") == "paper"]
    assert len(paper) >= 2, f"{path.stem}: {len(paper)} claims of kind 'paper' (the chapter contract asks for two)"
    used = [e for e in data["exercises"] if e["used_downstream"] and e["source"] == "solution"]
    assert used, f"{path.stem}: no exercise whose solution the chapter used downstream: {data['exercises']}"
    assert_each_output_shown_once(tmp_path / "notebooks" / path.name)
    print(f"{path.stem}: {data['seconds']} s, peak {data['peak_rss_mb']} MB")


def _payloads(output) -> list[str]:
    """The rich payloads of one cell output (images, widget views, HTML, plotly JSON), as comparable strings."""
    data = output.get("data", {}) if output.get("output_type") in ("display_data", "execute_result") else {}
    return [json.dumps(v, sort_keys=True) if not isinstance(v, str) else v
            for k, v in data.items() if k != "text/plain" and (k.startswith("image/") or "widget" in k
                                                                or k in ("text/html", "application/vnd.plotly.v1+json"))]


def assert_each_output_shown_once(executed: Path) -> None:
    """No code cell shows the same figure or widget twice (a helper that displays *and* returns what it showed
    made chapter 01's explorer appear twice in JupyterLab)."""
    nb = nbformat.read(executed, as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        seen = [p for out in cell.get("outputs", []) for p in _payloads(out)]
        dup = {p[:80] for p in seen if seen.count(p) > 1}
        assert not dup, f"{executed.name} cell {i + 1} shows the same output twice: {sorted(dup)[:2]}"


def test_the_duplicate_output_check_can_fail(tmp_path):
    nb = nbformat.v4.new_notebook()
    fig = {"output_type": "display_data", "data": {"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"}, "metadata": {}}
    again = dict(fig, output_type="execute_result", execution_count=1)
    nb.cells = [nbformat.v4.new_code_cell("show(...)", outputs=[nbformat.from_dict(fig), nbformat.from_dict(again)])]
    nbformat.write(nb, tmp_path / "x.ipynb")
    with pytest.raises(AssertionError, match="shows the same output twice"):
        assert_each_output_shown_once(tmp_path / "x.ipynb")
    nb.cells[0].outputs = [nbformat.from_dict(fig)]
    nbformat.write(nb, tmp_path / "x.ipynb")
    assert_each_output_shown_once(tmp_path / "x.ipynb")


def test_display_helpers_show_once_and_return_a_silent_handle(monkeypatch):
    """A cell ending in a display helper renders nothing more: the handle has an empty IPython display."""
    from symviz.viz import widgets

    shown = []
    monkeypatch.setattr(widgets, "_display", lambda obj: shown.append(obj))
    monkeypatch.setenv("SYMVIZ_STATIC", "1")
    import matplotlib.pyplot as plt

    handle = widgets.show(lambda: None, lambda: plt.figure())
    assert len(shown) == 1 and handle.obj is shown[0] and handle.kind == "static"
    assert handle._ipython_display_() is None and not hasattr(handle, "_repr_png_")
    assert handle.axes == shown[0].axes          # attribute access reaches the figure


def _can_unshare() -> tuple[bool, str]:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False, "unshare/ip not installed"
    if os.geteuid() != 0:
        return False, "needs root for a private network namespace (unshare -n)"
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    if probe.returncode != 0:
        return False, f"unshare -n not permitted here: {probe.stderr.decode().strip()}"
    return True, ""


@pytest.mark.notebook
def test_chapter_00_runs_with_the_network_off(tmp_path):
    ok, why = _can_unshare()
    if not ok:
        pytest.skip(f"offline check skipped: {why}")
    # a private network namespace with only loopback up (the kernel talks to papermill over 127.0.0.1)
    script = f"ip link set lo up && exec {sys.executable} -m symviz run 00 --scale quick --out {tmp_path} --no-html"
    proc = subprocess.run(["unshare", "-n", "sh", "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=1800)
    data = json.loads((tmp_path / "results.json").read_text())["chapters"][0]
    assert data["status"] == "ok", f"chapter 00 failed offline: {data['error']}\n{proc.stdout[-2000:]}"


def test_chapters_carry_slide_metadata_for_lecture_mode():
    from symviz import slides

    assert slides.main(["--check", *map(str, NOTEBOOKS)]) == 0, "run `python -m symviz.slides notebooks/*.ipynb`"
