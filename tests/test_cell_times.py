"""benchmarks/cell_times.py: per-cell profile of executed notebooks."""
import importlib.util
from pathlib import Path

import nbformat
import pytest

spec = importlib.util.spec_from_file_location("cell_times", Path(__file__).resolve().parents[1] / "benchmarks" / "cell_times.py")
cell_times = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cell_times)


def _nb(tmp_path, durations):
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_markdown_cell("## Train the models"))
    for k, d in enumerate(durations):
        c = nbformat.v4.new_code_cell(f"# comment\nstep_{k}()")
        if d is not None:
            c.metadata["papermill"] = {"duration": d}
        nb.cells.append(c)
    path = tmp_path / "x.ipynb"
    nbformat.write(nb, str(path))
    return path


def test_slowest_cells_first_with_heading_and_first_code_line(tmp_path):
    total, rows = cell_times.cell_times(_nb(tmp_path, [1.0, 5.0, None, 2.0]))
    assert total == pytest.approx(8.0)
    assert [r[0] for r in rows] == [5.0, 2.0, 1.0]
    assert rows[0][1] == "Train the models — step_1()" and rows[0][2] == 3


def test_markdown_output_and_errors(tmp_path, capsys):
    path = _nb(tmp_path, [1.0, 3.0])
    out = tmp_path / "p.md"
    assert cell_times.main([str(path), "--top", "1", "--md", str(out)]) == 0
    text = out.read_text()
    assert "4.0 s in code cells" in text and "| 3.0 | 75% |" in text and "step_0" not in text
    with pytest.raises(ValueError, match="no papermill cell durations"):
        cell_times.cell_times(_nb(tmp_path, [None]))
    with pytest.raises(SystemExit):
        cell_times.main([str(path), "--top", "0"])
