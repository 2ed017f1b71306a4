"""Benchmarks: each chapter's quick-mode wall time and peak memory (through `symviz run`), and the hot models'
step times (each `benchmarks/bench_*.py` exposes `run(scale) -> list[dict]`). Writes `benchmarks/results.md`.

    python benchmarks/run.py [--scale quick] [--device auto] [--only 04] [--skip-chapters]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def machine() -> str:
    """``AMD EPYC 7B13, 2 cores, no GPU, torch 2.13.0+cpu``: the CPU model, because machines differ 3.5x."""
    from _timing import machine_info

    m = machine_info()
    return f"{m['cpu']}, {m['cores']} cores, {m['gpu']}, torch {m['torch']}"


def chapter_rows(scale: str, device: str, only: list[str]) -> list[dict]:
    from symviz.run import run_chapters

    with tempfile.TemporaryDirectory() as tmp:
        summary = run_chapters(only, scale=scale, device=device, out=tmp, html=False, verbose=True)
    return [{"chapter": c["name"], "what": f"{scale}-mode run (wall)", "value": c["seconds"], "unit": "s",
             "status": c["status"]} for c in summary["chapters"]] + \
           [{"chapter": c["name"], "what": f"{scale}-mode peak RSS", "value": c["peak_rss_mb"], "unit": "MB",
             "status": c["status"]} for c in summary["chapters"]]


def model_rows(scale: str, only: list[str]) -> list[dict]:
    rows = []
    for path in sorted(HERE.glob("bench_*.py")):
        if only and not any(path.stem.startswith(f"bench_{o}") for o in only):
            continue
        spec = importlib.util.spec_from_file_location(path.stem, path)
        mod = importlib.util.module_from_spec(spec)
        t0 = time.perf_counter()
        try:
            spec.loader.exec_module(mod)
            got = mod.run(scale)
            for r in got:
                r.setdefault("status", "ok")
            rows += got
        except Exception as err:  # one broken benchmark must not hide the others
            rows.append({"chapter": path.stem[6:], "what": "benchmark failed", "value": None, "unit": "",
                         "status": f"{type(err).__name__}: {err}"})
        print(f"  {path.name}: {time.perf_counter() - t0:.1f} s", flush=True)
    return rows


def _notes(path: Path) -> str:
    """The hand-written ``## `` sections of ``path`` (everything from its first level-2 heading on): ``make bench``
    rewrites the table above them and keeps them."""
    if not path.exists():
        return ""
    text = path.read_text()
    at = text.find("\n## ")
    return "" if at < 0 else text[at + 1:]


def write(rows: list[dict], scale: str) -> Path:
    lines = [f"# symviz benchmarks ({scale} mode)", "", f"Machine: {machine()}. Written by `make bench` "
             f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}).", "",
             "| chapter | what | value | unit | status |", "|---|---|---:|---|---|"]
    for r in rows:
        v = r["value"]
        v = "-" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v))
        lines.append(f"| {r['chapter']} | {r['what']} | {v} | {r['unit']} | {r.get('status', 'ok')} |")
    out = HERE / "results.md"
    kept = _notes(out)
    out.write_text("\n".join(lines) + "\n" + ("\n" + kept if kept else ""))
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / f"{scale}.json").write_text(json.dumps(rows, indent=1))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", default="quick", choices=["quick", "full"])
    p.add_argument("--device", default="auto")
    p.add_argument("--only", nargs="*", default=[], help="chapter numbers, e.g. 04 05")
    p.add_argument("--skip-chapters", action="store_true", help="only the model micro-benchmarks")
    a = p.parse_args()
    sys.path[:0] = [str(ROOT), str(HERE)]  # symviz, and benchmarks/_timing.py for the bench_* modules
    rows = [] if a.skip_chapters else chapter_rows(a.scale, a.device, a.only)
    rows += model_rows(a.scale, a.only)
    print(f"wrote {write(rows, a.scale)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
