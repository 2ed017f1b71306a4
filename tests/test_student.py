"""Student versions: solutions stripped between nbgrader markers; a stripped chapter still runs on the reference."""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from symviz.student import BEGIN, END, strip_solutions, student_notebook, write_student_versions

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_strip_keeps_everything_outside_the_markers():
    src = ("import math\n\ndef area(r):\n    \"\"\"Area of a disc.\"\"\"\n    " + BEGIN + "\n    return math.pi * r ** 2\n"
           "    " + END + "\n\nclass Layer:\n    def forward(self, x):\n        " + BEGIN + "\n        y = x\n"
           "        return y\n        " + END + "\n")
    out = strip_solutions(src)
    assert "math.pi" not in out and "y = x" not in out and BEGIN not in out and END not in out
    assert out.count('raise NotImplementedError("your solution here")') == 2
    assert '    raise NotImplementedError' in out and '        raise NotImplementedError' in out
    assert out.startswith("import math\n\ndef area(r):\n    \"\"\"Area of a disc.\"\"\"\n")
    compile(out, "<student>", "exec")


@pytest.mark.parametrize("bad, msg", [
    (f"x = 1\n{BEGIN}\nx = 2\n", "unbalanced"),
    (f"{END}\nx = 2\n{BEGIN}\n", "out of order"),
])
def test_strip_rejects_broken_markers(bad, msg):
    with pytest.raises(ValueError, match=msg):
        strip_solutions(bad)


def test_student_notebook_clears_outputs_and_never_overwrites(tmp_path):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(f"def f():\n    {BEGIN}\n    return 1\n    {END}\n")
    cell.outputs = [nbformat.v4.new_output("stream", text="1")]
    nb.cells = [nbformat.v4.new_markdown_cell("# x"), cell]
    src = tmp_path / "01_x.ipynb"
    nbformat.write(nb, src)
    stripped, n = student_notebook(json.loads(src.read_text()))
    assert n == 1 and stripped["cells"][1]["outputs"] == [] and "return 1" not in "".join(stripped["cells"][1]["source"])
    with pytest.raises(ValueError, match="would overwrite the source"):
        write_student_versions([src], tmp_path)
    (written,) = write_student_versions([src], tmp_path / "student")
    assert written.parent.name == "student" and "return 1" in src.read_text()


_CELLS = [
    'SCALE = "quick"\nDEVICE = "auto"\nSEED = 0\nREPORT_PATH = None',
    "from symviz import report\nfrom symviz.checks import verdict\n\n"
    "def check_double(fn):\n    return verdict(all(fn(k) == 2 * k for k in range(5)), 'doubles', 'does not double')",
    'def double(x):\n    raise NotImplementedError("write double")',
    f"def double_solution(x):\n    {BEGIN}\n    return x + x\n    {END}",
    "double = report.accept('double', double, check_double, reference=lambda x: 2 * x, solution=double_solution)",
    "report.start('10_exercise', REPORT_PATH)\nreport.claim('double(21) is 42', double(21) == 42, value=double(21))\n"
    "report.check()",
]


@pytest.mark.parametrize("student, source", [(False, "solution"), (True, "reference")])
def test_run_uses_the_solution_and_the_student_version_falls_back(tmp_path, student, source):
    from symviz.run import run_chapters

    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(c) for c in _CELLS]
    nb.cells[0].metadata["tags"] = ["parameters"]
    nbformat.write(nb, nbdir / "10_exercise.ipynb")
    summary = run_chapters(out=tmp_path / "build", notebooks=nbdir, html=False, verbose=False, student=student)
    (r,) = summary["chapters"]
    assert r["status"] == "ok", r["error"]
    assert r["exercises"] == [dict(r["exercises"][0], name="double", source=source, used_downstream=True)]
    assert summary["student"] is student
    assert BEGIN in (nbdir / "10_exercise.ipynb").read_text()          # the source is never touched


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_student_version_of_each_chapter_runs_on_the_references(path, tmp_path):
    """A learner who solved nothing: every exercise falls back to the reference and the chapter finishes."""
    from symviz.run import run_chapters

    assert BEGIN in path.read_text(), f"{path.name} has no solution between nbgrader markers"
    summary = run_chapters([path.stem], out=tmp_path, html=False, verbose=False, student=True)
    (r,) = summary["chapters"]
    assert r["status"] == "ok", r["error"]
    assert r["exercises"], f"{path.stem} recorded no exercise (report.accept)"
    assert all(e["source"] == "reference" for e in r["exercises"]), r["exercises"]
    assert any(e["used_downstream"] for e in r["exercises"]), r["exercises"]
