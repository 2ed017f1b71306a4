"""``symviz run``: execute chapters with papermill into ``build/`` and summarise what they measured.

    symviz run [CHAPTER ...] [--scale quick|full] [--device auto|cpu|cuda|mps] [--out build]
               [--jobs N] [--timeout S] [--no-html] [--notebooks DIR]

A chapter is named by its file stem (``04_multichannel_egnn``), its number (``04`` or ``4``) or its
topic (``multichannel_egnn``). Each chapter runs in its own process (so its peak memory is its own),
gets the papermill parameters ``SCALE``, ``DEVICE`` and ``REPORT_PATH``, and is written to
``<out>/notebooks/``; HTML goes to ``<out>/html/`` and the summary to ``<out>/results.json``::

    {"chapters": [{"name", "status": "ok"|"failed", "seconds", "peak_rss_mb", "device", "scale",
                   "metrics": {...}, "claims": [{"text", "value", "holds"}], "error": null|"cell N: ..."}]}

The exit status is 0 when every chapter ran and every claim holds, 1 otherwise, 2 for bad arguments.
Source notebooks are never written to.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

__all__ = ["main", "run_chapters", "discover_chapters", "resolve_chapters", "UsageError"]

SCALES = ("quick", "full")
DEVICES = ("auto", "cpu", "cuda", "mps")


class UsageError(ValueError):
    """Bad arguments to ``symviz run`` (unknown chapter, scale or device)."""


def default_notebooks_dir() -> Path:
    here = Path.cwd() / "notebooks"
    if here.is_dir():
        return here
    return Path(__file__).resolve().parents[1] / "notebooks"


def discover_chapters(notebooks: Path) -> list[Path]:
    """Chapter notebooks ``NN_topic.ipynb`` in ``notebooks``, sorted by number."""
    if not notebooks.is_dir():
        raise UsageError(f"notebooks folder {str(notebooks)!r} does not exist; run from the repository root or pass --notebooks")
    return sorted(p for p in notebooks.glob("[0-9][0-9]_*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def resolve_chapters(names: Sequence[str], available: Sequence[Path]) -> list[Path]:
    """Map user-given names to chapter paths; raise :class:`UsageError` listing the valid choices."""
    if not names:
        return list(available)
    by = {}
    for p in available:
        stem = p.stem
        num, _, topic = stem.partition("_")
        for key in (stem, num, str(int(num)), topic):
            by.setdefault(key, p)
    out = []
    for n in names:
        key = n[:-6] if n.endswith(".ipynb") else n
        key = Path(key).name
        if key not in by:
            valid = ", ".join(p.stem for p in available) or "(none found)"
            raise UsageError(f"unknown chapter {n!r}; valid chapters: {valid}")
        if by[key] not in out:
            out.append(by[key])
    return out


def _one(nb: Path, out: Path, scale: str, device: str, timeout: float | None) -> dict:
    """Execute one chapter (runs in a child process so that its peak memory is measured alone)."""
    import warnings

    warnings.filterwarnings("ignore")
    import papermill as pm

    name = nb.stem
    report_path = out / "reports" / f"{name}.json"
    report_path.parent.mkdir(parents=True, exist_ok=True)
    if report_path.exists():
        report_path.unlink()
    dest = out / "notebooks" / nb.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    error = None
    t0 = time.perf_counter()
    try:
        pm.execute_notebook(
            str(nb), str(dest), parameters={"SCALE": scale, "DEVICE": device, "REPORT_PATH": str(report_path.resolve())},
            cwd=str(nb.parent), kernel_name="python3", progress_bar=False, log_output=False,
            execution_timeout=timeout, request_save_on_cell_execute=False,
        )
    except pm.PapermillExecutionError as err:
        # papermill inserts one "injected-parameters" cell: count cells as the learner sees them
        src_cell = err.cell_index if err.cell_index is not None else -1
        try:
            import nbformat
            cells = [c for c in nbformat.read(dest, as_version=4).cells
                     if "papermill-error-cell-tag" not in c.metadata.get("tags", [])]
            injected = [i for i, c in enumerate(cells) if "injected-parameters" in c.metadata.get("tags", [])]
            if injected and injected[0] < src_cell:
                src_cell -= 1
        except Exception:
            pass
        msg = str(err.evalue).strip().splitlines()[0] if str(err.evalue).strip() else ""
        error = f"cell {src_cell + 1}: {err.ename}: {msg}"
    except Exception as err:  # kernel died, timeout, missing kernel...
        error = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0  # KiB on Linux
    metrics, claims = {}, []
    if report_path.exists():
        try:
            rep = json.loads(report_path.read_text())
            metrics, claims = rep.get("metrics", {}), rep.get("claims", [])
        except json.JSONDecodeError:
            error = error or "report file is not valid JSON"
    if error is None and not claims:
        error = "the chapter recorded no claims (its Result cell must call symviz.report.claim)"
    if error is None and not all(c.get("holds") for c in claims):
        error = "claims that do not hold: " + "; ".join(c["text"] for c in claims if not c.get("holds"))
    return {"name": name, "status": "ok" if error is None else "failed", "seconds": round(seconds, 1),
            "peak_rss_mb": round(peak, 1), "device": device, "scale": scale, "metrics": metrics,
            "claims": claims, "error": error}


def _resolved_device(device: str) -> str:
    if device != "auto":
        return device
    try:
        from .train import resolve_device
        return resolve_device("auto").type
    except Exception:  # torch missing: the chapter will say so itself
        return "cpu"


def _run_child(nb: Path, out: Path, scale: str, device: str, timeout: float | None) -> dict:
    env = dict(os.environ)
    env["SYMVIZ_STATIC"] = "1"
    env.setdefault("PLOTLY_RENDERER", "plotly_mimetype+notebook")
    env.setdefault("PYTHONWARNINGS", "ignore")
    env.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    cmd = [sys.executable, "-m", "symviz.run", "--_one", str(nb), "--out", str(out), "--scale", scale,
           "--device", device] + (["--timeout", str(timeout)] if timeout else [])
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                              timeout=(timeout * 4 + 120) if timeout else None)
    except subprocess.TimeoutExpired:
        return {"name": nb.stem, "status": "failed", "seconds": round(time.perf_counter() - t0, 1), "peak_rss_mb": None,
                "device": device, "scale": scale, "metrics": {}, "claims": [], "error": "timed out"}
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"name": nb.stem, "status": "failed", "seconds": round(time.perf_counter() - t0, 1), "peak_rss_mb": None,
                "device": device, "scale": scale, "metrics": {}, "claims": [], "error": f"runner crashed: {tail[0]}"}
    return json.loads(lines[-1])


def _html(out: Path, results: list[dict]) -> None:
    """Render executed chapters to HTML and write the lecture index page (see :mod:`symviz.site`)."""
    from .site import build_site

    build_site(out, results)


def run_chapters(chapters: Sequence[str] = (), scale: str = "quick", device: str = "auto", out: str | Path = "build",
                 jobs: int = 1, timeout: float | None = 1800, html: bool = True,
                 notebooks: str | Path | None = None, verbose: bool = True) -> dict:
    """Python API of ``symviz run``; returns the ``results.json`` dictionary."""
    if scale not in SCALES:
        raise UsageError(f"unknown scale {scale!r}; valid scales: {', '.join(SCALES)}")
    if device not in DEVICES:
        raise UsageError(f"unknown device {device!r}; valid devices: {', '.join(DEVICES)}")
    if not isinstance(jobs, int) or jobs < 1:
        raise UsageError(f"--jobs must be a positive integer, got {jobs!r}")
    nb_dir = Path(notebooks) if notebooks else default_notebooks_dir()
    selected = resolve_chapters(list(chapters), discover_chapters(nb_dir))
    if not selected:
        raise UsageError(f"no chapter notebooks (NN_topic.ipynb) found in {nb_dir}")
    out = Path(out)
    if out.resolve() == nb_dir.resolve() or nb_dir.resolve() in out.resolve().parents:
        raise UsageError(f"--out {out} is inside the notebooks folder: executed notebooks never go there")
    out.mkdir(parents=True, exist_ok=True)
    dev = _resolved_device(device)
    if verbose:
        print(f"symviz run: {len(selected)} chapter(s), scale={scale}, device={dev}, out={out}", flush=True)
    def go(nb: Path) -> dict:
        r = _run_child(nb, out, scale, dev, timeout)
        if verbose:
            print(f"  {r['name']:<32} {r['status']:<7} {r['seconds']:>7.1f} s" + (f"   {r['error']}" if r["error"] else ""), flush=True)
        return r
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        results = list(pool.map(go, selected))
    if html:
        _html(out, results)
    summary = {"chapters": results}
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    if verbose:
        print_summary(summary)
    return summary


def print_summary(summary: dict) -> None:
    rows = summary["chapters"]
    print()
    print(f"{'chapter':<32} {'status':<7} {'seconds':>8} {'peak MB':>8}  claims")
    print("-" * 78)
    for r in rows:
        n_ok = sum(c["holds"] for c in r["claims"])
        peak = "-" if r["peak_rss_mb"] is None else f"{r['peak_rss_mb']:.0f}"
        print(f"{r['name']:<32} {r['status']:<7} {r['seconds']:>8.1f} {peak:>8}  {n_ok}/{len(r['claims'])} hold")
        for c in r["claims"]:
            print(f"    [{'holds' if c['holds'] else 'FAILS'}] {c['text']}")
        if r["error"]:
            print(f"    error: {r['error']}")
    failed = [r["name"] for r in rows if r["status"] != "ok"]
    print("-" * 78)
    print("all chapters ok" if not failed else f"FAILED: {', '.join(failed)}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--_one":  # internal: the per-chapter child process
        p = argparse.ArgumentParser()
        p.add_argument("--_one", dest="nb")
        p.add_argument("--out")
        p.add_argument("--scale")
        p.add_argument("--device")
        p.add_argument("--timeout", type=float)
        a = p.parse_args(argv)
        print(json.dumps(_one(Path(a.nb), Path(a.out), a.scale, a.device, a.timeout)), flush=True)
        return 0
    if argv and argv[0] == "run":
        argv = argv[1:]
    p = argparse.ArgumentParser(prog="symviz run", description="Execute symviz chapters into build/ and summarise their results.")
    p.add_argument("chapters", nargs="*", help="chapter names or numbers (default: all)")
    p.add_argument("--scale", default="quick", help="quick (about a minute per chapter on a laptop) or full (paper scale)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument("--out", default="build", help="output folder (default build/)")
    p.add_argument("--jobs", type=int, default=1, help="chapters executed in parallel")
    p.add_argument("--timeout", type=float, default=1800, help="seconds allowed per cell")
    p.add_argument("--html", dest="html", action="store_true", default=True, help="render HTML into <out>/html (default)")
    p.add_argument("--no-html", dest="html", action="store_false", help="skip the HTML rendering")
    p.add_argument("--notebooks", default=None, help="folder holding the chapter notebooks (default notebooks/)")
    a = p.parse_args(argv)
    try:
        summary = run_chapters(a.chapters, a.scale, a.device, a.out, a.jobs, a.timeout, a.html, a.notebooks)
    except UsageError as err:
        print(f"symviz run: error: {err}", file=sys.stderr)
        return 2
    return 0 if all(r["status"] == "ok" for r in summary["chapters"]) else 1


if __name__ == "__main__":
    sys.exit(main())
