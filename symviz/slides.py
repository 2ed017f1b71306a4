"""Lecture mode: tag a chapter's cells for slides (RISE / JupyterLab RISE / ``nbconvert --to slides``).

    python -m symviz.slides notebooks/*.ipynb            # write the tags (idempotent)
    python -m symviz.slides --check notebooks/*.ipynb    # exit 1 if a notebook's tags are missing or stale

Every cell gets ``metadata.slideshow.slide_type``, the key that RISE, the ``jupyterlab-rise`` extension
and ``jupyter nbconvert --to slides`` read. The rule is deterministic, computed from the cell's content
only, so running the tool twice changes nothing the second time:

* ``slide``: a markdown cell starting with ``# `` (the title) or ``## `` (a section), any markdown cell
  that opens the notebook, and the Result cell (code calling ``report.start``) unless the markdown
  right before it already starts a slide;
* ``subslide``: a markdown cell starting with ``### `` (a sub-section);
* ``skip``: the ``parameters`` cell and set-up code before the first section, "Solution(s)" headings
  and the solution cells hidden in the notebook (``jupyter.source_hidden``);
* ``fragment``: any other markdown (the sentence interpreting a figure appears on the next key press);
* ``-`` (stays on the current slide): any other code cell.

The notebook also gets ``metadata.rise = {"scroll": true}`` so that long cells scroll on a slide.
Only ``slideshow`` and ``rise`` metadata are touched; sources and outputs are never changed.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Iterable, Sequence

__all__ = ["slide_type", "tag_notebook", "tag_file", "main", "SLIDE_TYPES", "RISE_METADATA"]

SLIDE_TYPES = ("slide", "subslide", "fragment", "skip", "notes", "-")
RISE_METADATA = {"scroll": True}

_HEADING = re.compile(r"^\s*(#{1,6})\s+(.*)")


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def _heading(cell) -> tuple[int, str] | None:
    """(level, text) of a markdown cell's first non-empty line when it is a heading, else None."""
    if cell.get("cell_type") != "markdown":
        return None
    for line in _source(cell).splitlines():
        if line.strip():
            m = _HEADING.match(line)
            return (len(m.group(1)), m.group(2).strip()) if m else None
    return None


def _hidden(cell) -> bool:
    return bool(cell.get("metadata", {}).get("jupyter", {}).get("source_hidden"))


def _is_result(cell) -> bool:
    return cell.get("cell_type") == "code" and "report.start(" in _source(cell)


def slide_type(cells: Sequence[dict], i: int) -> str:
    """The slide type of ``cells[i]`` under the module's rule (see the table in the module docstring).

    >>> md = lambda s: {"cell_type": "markdown", "source": s, "metadata": {}}
    >>> code = lambda s, **m: {"cell_type": "code", "source": s, "metadata": m}
    >>> cells = [md("# Title"), code("SCALE = 'quick'", tags=["parameters"]), code("import torch"),
    ...          md("## 1. Idea"), code("plot()"), md("The plot shows..."), md("### Solution"),
    ...          code("answer()", jupyter={"source_hidden": True}), code("report.start('00', None)")]
    >>> [slide_type(cells, i) for i in range(len(cells))]
    ['slide', 'skip', 'skip', 'slide', '-', 'fragment', 'skip', 'skip', 'slide']
    """
    if not 0 <= i < len(cells):
        raise IndexError(f"cell index i={i} out of range for {len(cells)} cells")
    cell = cells[i]
    kind = cell.get("cell_type")
    h = _heading(cell)
    if h is not None:
        level, text = h
        if text.lower().rstrip(":").startswith("solution"):
            return "skip"
        if level <= 2:
            return "slide"
        if level == 3:
            return "subslide"
        return "fragment"
    if _hidden(cell):
        return "skip"
    if kind == "markdown":
        return "slide" if i == 0 else "fragment"  # whatever opens the notebook opens the deck
    if kind != "code":  # raw cells
        return "skip"
    if "parameters" in cell.get("metadata", {}).get("tags", []):
        return "skip"
    first_section = next((j for j, c in enumerate(cells) if (_heading(c) or (9, ""))[0] == 2), len(cells))
    if i < first_section:
        return "skip"  # imports and setup: not lecture material
    if _is_result(cell):
        prev = cells[i - 1] if i > 0 else None
        return "-" if prev is not None and (_heading(prev) or (9, ""))[0] <= 2 else "slide"
    return "-"


def tag_notebook(nb) -> int:
    """Set ``slideshow.slide_type`` on every cell of ``nb`` (a notebook dict / NotebookNode) in place.

    Returns the number of cells whose slide type changed (0 when the notebook was already tagged).
    """
    cells = nb.get("cells") if hasattr(nb, "get") else None
    if not isinstance(cells, list):
        raise TypeError(f"nb must be a notebook (a dict with a 'cells' list), got {type(nb).__name__}")
    changed = 0
    for i, cell in enumerate(cells):
        want = slide_type(cells, i)
        meta = cell.setdefault("metadata", {})
        if meta.get("slideshow", {}).get("slide_type") != want:
            meta.setdefault("slideshow", {})["slide_type"] = want
            changed += 1
    rise = nb.setdefault("metadata", {}).setdefault("rise", {})
    for k, v in RISE_METADATA.items():
        if rise.get(k) != v:
            rise[k] = v
            changed += 1
    return changed


def tag_file(path: str | Path, check: bool = False) -> int:
    """Tag the notebook at ``path`` (or, with ``check=True``, only count what would change).

    The file is rewritten only when something changed, with nbformat's usual layout (indent 1).
    """
    import nbformat

    path = Path(path)
    if path.suffix != ".ipynb" or not path.is_file():
        raise FileNotFoundError(f"path must be an existing .ipynb file, got {str(path)!r}")
    nb = nbformat.read(path, as_version=4)
    changed = tag_notebook(nb)
    if changed and not check:
        nbformat.write(nb, path)
    return changed


def main(argv: Iterable[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m symviz.slides",
                                description="Add RISE-compatible slide metadata to chapter notebooks.")
    p.add_argument("notebooks", nargs="+", help="notebook files (.ipynb)")
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if any notebook needs tagging")
    a = p.parse_args(list(sys.argv[1:] if argv is None else argv))
    stale = []
    for nbp in a.notebooks:
        try:
            n = tag_file(nbp, check=a.check)
        except (FileNotFoundError, ValueError) as err:
            print(f"symviz.slides: error: {err}", file=sys.stderr)
            return 2
        if n:
            stale.append(nbp)
        verb = "needs" if a.check else "tagged"
        print(f"{nbp}: {verb} {n} change(s)" if n else f"{nbp}: up to date")
    if a.check and stale:
        print(f"{len(stale)} notebook(s) need `python -m symviz.slides`: {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
