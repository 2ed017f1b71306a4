"""Where a chapter spends its time: per-cell wall times of executed notebooks (papermill's metadata).

    python benchmarks/cell_times.py build/notebooks/*.ipynb [--top 6] [--md benchmarks/profile.md]

Each executed cell's ``metadata.papermill.duration`` is read; a cell is named by its first code line, or by
the nearest markdown heading above it. Prints (or writes as markdown) each chapter's total and its slowest
cells, so a speed-up starts where the time goes.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat


def cell_times(path: str | Path) -> tuple[float, list[tuple[float, str, int]]]:
    """``(total seconds, [(seconds, label, cell number), ...])`` for an executed notebook, slowest first."""
    nb = nbformat.read(str(path), as_version=4)
    heading, rows, total = "", [], 0.0
    for i, cell in enumerate(nb.cells, 1):
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    heading = line.lstrip("#").strip()
                    break
            continue
        if cell.cell_type != "code":
            continue
        dur = cell.metadata.get("papermill", {}).get("duration")
        if dur is None:
            continue
        total += float(dur)
        first = next((l.strip() for l in cell.source.splitlines() if l.strip() and not l.strip().startswith("#")), "")
        rows.append((float(dur), f"{heading[:40]} — {first[:60]}" if heading else first[:80], i))
    if not rows:
        raise ValueError(f"{path} has no papermill cell durations: pass notebooks executed by `symviz run` or papermill")
    return total, sorted(rows, reverse=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("notebooks", nargs="+")
    p.add_argument("--top", type=int, default=6, help="slowest cells shown per chapter")
    p.add_argument("--md", default=None, help="write a markdown table here instead of printing")
    a = p.parse_args(argv)
    if a.top < 1:
        p.error(f"--top must be a positive integer, got {a.top}")
    missing = [n for n in a.notebooks if not Path(n).is_file()]
    if missing:
        p.error(f"no such notebook: {', '.join(missing)} (pass executed notebooks, e.g. build/notebooks/*.ipynb "
                "after `make run`, or build/robustness/<setting>/notebooks/*.ipynb)")
    lines = []
    for path in a.notebooks:
        try:
            total, rows = cell_times(path)
        except ValueError as err:
            p.error(str(err))
        lines += [f"### {Path(path).stem}: {total:.1f} s in code cells", "", "| s | share | cell | what |", "|---:|---:|---:|---|"]
        lines += [f"| {d:.1f} | {d / total:.0%} | {i} | {label.replace('|', '/')} |" for d, label, i in rows[:a.top]]
        lines.append("")
    text = "\n".join(lines)
    if a.md:
        Path(a.md).write_text(text + "\n")
        print(f"wrote {a.md}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
