"""Lecture mode: slide tags (symviz.slides) and the static site (symviz.site) written by `symviz run`."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import pytest

from symviz import slides
from symviz.site import build_site, chapter_title, index_html, render_chapter

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def md(src, **meta):
    return nbformat.v4.new_markdown_cell(src, metadata=meta)


def code(src, **meta):
    return nbformat.v4.new_code_cell(src, metadata=meta)


def toy_notebook():
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [md("# 42 · Toy chapter\nWhat you will learn."), code('SCALE = "quick"', tags=["parameters"]),
                code("import torch"), md("## 1. Intuition"), code("x = 1"), md("The figure shows x."),
                md("### 1.1 Detail"), code("y = 2"), md("### Solution"), code("z = 3", jupyter={"source_hidden": True}),
                md("## Result"), code("report.start('42_toy', REPORT_PATH)"), md("## Exercises"),
                md("#### A small note")]
    return nb


# --- slides -------------------------------------------------------------------------------------------------

def test_slide_rule_on_a_toy_chapter():
    nb = toy_notebook()
    assert [slides.slide_type(nb.cells, i) for i in range(len(nb.cells))] == [
        "slide", "skip", "skip", "slide", "-", "fragment", "subslide", "-", "skip", "skip", "slide", "-", "slide",
        "fragment"]


def test_result_cell_starts_a_slide_without_a_heading_before_it():
    cells = [md("# T"), md("## A"), code("a = 1"), code("report.start('x', None)")]
    assert slides.slide_type(cells, 3) == "slide"


def test_tag_notebook_is_idempotent_and_touches_only_slide_metadata():
    nb = toy_notebook()
    before = [(c.cell_type, c.source, c.get("outputs")) for c in nb.cells]
    assert slides.tag_notebook(nb) == len(nb.cells) + 1  # every cell plus the notebook's rise metadata
    assert slides.tag_notebook(nb) == 0
    assert [(c.cell_type, c.source, c.get("outputs")) for c in nb.cells] == before
    assert nb.metadata["rise"] == {"scroll": True}
    assert all(c.metadata["slideshow"]["slide_type"] in slides.SLIDE_TYPES for c in nb.cells)
    assert nb.cells[9].metadata["jupyter"] == {"source_hidden": True}  # other metadata kept


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_every_chapter_can_be_tagged_on_a_copy(chapter, tmp_path):
    copy = tmp_path / chapter.name
    shutil.copy(chapter, copy)
    original = chapter.read_bytes()
    assert slides.main([str(copy)]) == 0
    assert slides.main(["--check", str(copy)]) == 0  # idempotent: nothing left to do
    assert chapter.read_bytes() == original  # the source notebook is never touched
    nb = nbformat.read(copy, as_version=4)
    nbformat.validate(nb)
    kinds = [c.metadata["slideshow"]["slide_type"] for c in nb.cells]
    assert kinds[0] == "slide", "the title cell opens the deck"
    assert kinds.count("slide") >= 3
    params = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert params and kinds[params[0]] == "skip"
    results = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "report.start(" in c.source]
    if results:  # the Result cell is on its own slide (or right under the "## Result" heading)
        i = results[0]
        assert kinds[i] == "slide" or (kinds[i] == "-" and kinds[i - 1] == "slide")
    # the original sources are kept exactly
    orig = nbformat.reads(original.decode(), as_version=4)
    assert [c.source for c in orig.cells] == [c.source for c in nb.cells]


def test_check_mode_reports_untagged_notebooks_and_changes_nothing(tmp_path, capsys):
    p = tmp_path / "42_toy.ipynb"
    nbformat.write(toy_notebook(), p)
    text = p.read_text()
    assert slides.main(["--check", str(p)]) == 1
    assert p.read_text() == text
    assert "needs" in capsys.readouterr().out
    assert slides.main([str(p)]) == 0
    assert slides.main(["--check", str(p)]) == 0


def test_slides_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="existing .ipynb"):
        slides.tag_file(tmp_path / "missing.ipynb")
    with pytest.raises(TypeError, match="cells"):
        slides.tag_notebook({"metadata": {}})
    with pytest.raises(IndexError, match="out of range"):
        slides.slide_type([md("# a")], 3)
    assert slides.main([str(tmp_path / "missing.ipynb")]) == 2


# --- site ---------------------------------------------------------------------------------------------------

def _executed(out: Path, name: str, with_plotly: bool = False) -> Path:
    nb = toy_notebook()
    nb.cells[0].source = f"# {name} · Toy title <b>\nintro"
    out_cell = nbformat.v4.new_output("display_data", data={"text/plain": "a figure", "text/html": "<p id='fig'>fig</p>"})
    nb.cells[4].outputs = [out_cell]
    nb.cells[4].execution_count = 1
    path = out / "notebooks" / f"{name}.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def _result(name, status="ok", error=None):
    return {"name": name, "status": status, "seconds": 12.34, "peak_rss_mb": 456.7, "device": "cpu", "scale": "quick",
            "metrics": {"mse": 0.0123456, "n": 3}, "claims": [{"text": "a < b <script>", "value": 0.5, "holds": status == "ok"}],
            "error": error}


def test_build_site_lists_chapters_links_pages_and_escapes_text(tmp_path):
    _executed(tmp_path, "00_toy")
    results = [_result("00_toy"), _result("01_broken", "failed", "cell 3: ValueError: <bad>")]
    index = build_site(tmp_path, results)
    assert index == tmp_path / "html" / "index.html"
    page = index.read_text()
    assert "href='00_toy.html'" in page and "01_broken.html" not in page
    assert "a &lt; b &lt;script&gt;" in page and "<script>" not in page
    assert "cell 3: ValueError: &lt;bad&gt;" in page
    assert "mse = 0.01235" in page and "457" in page
    assert results[0]["html"] == "00_toy.html" and results[0]["title"] == "00_toy · Toy title <b>"
    chapter = (tmp_path / "html" / "00_toy.html").read_text()
    assert "id='fig'" in chapter or 'id="fig"' in chapter
    assert "href='index.html'" in chapter
    saved = json.loads((tmp_path / "html" / "results.json").read_text())
    assert [c["name"] for c in saved["chapters"]] == ["00_toy", "01_broken"]


def test_a_chapter_whose_html_fails_keeps_its_result(tmp_path):
    bad = tmp_path / "notebooks" / "03_bad.ipynb"
    bad.parent.mkdir(parents=True)
    bad.write_text("{not json")
    results = [_result("03_bad")]
    page = build_site(tmp_path, results).read_text()
    assert "html_error" in results[0] and "03_bad" in page and "HTML:" in page


def test_run_html_delegates_to_the_site(tmp_path):
    from symviz.run import _html

    _executed(tmp_path, "00_toy")
    results = [_result("00_toy")]
    _html(tmp_path, results)
    assert (tmp_path / "html" / "index.html").is_file() and results[0]["html"] == "00_toy.html"


def test_site_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(TypeError, match="list of dicts"):
        build_site(tmp_path, [{"status": "ok"}])
    with pytest.raises(TypeError, match="list of dicts"):
        build_site(tmp_path, "00_toy")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        render_chapter(tmp_path / "nope.ipynb", tmp_path / "x.html")
    assert chapter_title({"cells": []}) == ""
    assert "0 chapter(s)" in index_html([])


# --- the files lecture mode and the browser tests rely on ------------------------------------------------

def test_teaching_doc_and_make_targets_exist():
    doc = (ROOT / "docs" / "teaching.md").read_text()
    for key in ("Binder", "JupyterHub", "python -m symviz.slides", "symviz run", "peak", "RISE"):
        assert key in doc, f"docs/teaching.md should cover {key!r}"
    make = (ROOT / "Makefile").read_text()
    assert "browser-test:" in make and "tests/test_browser.py" in make
    assert "chromium" in (ROOT / ".ci" / "run").read_text()
