"""Student versions of the chapters: every solution replaced by ``raise NotImplementedError``.

A solution sits between the lines ``### BEGIN SOLUTION`` and ``### END SOLUTION`` (nbgrader's markers, so an
instructor can also use nbgrader). :func:`strip_solutions` replaces each marked block, markers included, by one
``raise NotImplementedError(...)`` at the markers' indentation; code outside the markers is kept. The chapters'
``report.accept`` then falls back to the tested reference, so a student version still runs to the end.

    python -m symviz.student notebooks/*.ipynb --out build/student      # never over the sources

``symviz run --student`` executes the student versions (tests do, to prove the fallback).

    >>> strip_solutions("def f(x):\\n    ### BEGIN SOLUTION\\n    return 2 * x\\n    ### END SOLUTION\\n")
    'def f(x):\\n    raise NotImplementedError("your solution here")\\n'
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Sequence

__all__ = ["BEGIN", "END", "strip_solutions", "student_notebook", "write_student_versions", "main"]

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
_BLOCK = re.compile(r"^([ \t]*)" + re.escape(BEGIN) + r"[^\n]*\n.*?^[ \t]*" + re.escape(END) + r"[^\n]*(\n|$)",
                    re.M | re.S)


def strip_solutions(source: str) -> str:
    """``source`` with every marked solution block replaced by ``raise NotImplementedError``.

    Raises ``ValueError`` for unbalanced markers (a BEGIN without END or the reverse), naming the problem."""
    n_begin, n_end = source.count(BEGIN), source.count(END)
    if n_begin != n_end:
        raise ValueError(f"unbalanced solution markers: {n_begin} '{BEGIN}' and {n_end} '{END}'")
    out = _BLOCK.sub(lambda m: f'{m.group(1)}raise NotImplementedError("your solution here"){m.group(2)}', source)
    if BEGIN in out or END in out:
        raise ValueError(f"solution markers out of order or nested: every '{BEGIN}' needs an '{END}' after it")
    return out


def student_notebook(nb: dict) -> tuple[dict, int]:
    """A copy of the notebook JSON ``nb`` with its solutions stripped and outputs cleared; returns it and the
    number of code cells that held a solution."""
    nb = json.loads(json.dumps(nb))
    changed = 0
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        src = "".join(cell.get("source", []))
        new = strip_solutions(src)
        if new != src:
            changed += 1
            cell["source"] = new.splitlines(keepends=True)
        cell["outputs"], cell["execution_count"] = [], None
    return nb, changed


def write_student_versions(notebooks: Sequence[str | Path], out: str | Path) -> list[Path]:
    """Write the student version of each notebook into ``out`` (same file names); never over a source."""
    out = Path(out)
    written = []
    for src in map(Path, notebooks):
        if not src.is_file():
            raise FileNotFoundError(f"no notebook {src}")
        dest = out / src.name
        if dest.resolve() == src.resolve():
            raise ValueError(f"--out {out} would overwrite the source {src}: choose another folder (e.g. build/student)")
        nb, _ = student_notebook(json.loads(src.read_text()))
        out.mkdir(parents=True, exist_ok=True)
        dest.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
        written.append(dest)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m symviz.student", description=__doc__.split("\n\n")[0])
    p.add_argument("notebooks", nargs="+")
    p.add_argument("--out", default="build/student")
    a = p.parse_args(argv)
    try:
        for path in write_student_versions(a.notebooks, a.out):
            print(path)
    except (ValueError, FileNotFoundError) as err:
        print(f"symviz.student: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
