"""Robustness: do the chapters' claims hold for seed bases 0, 1000, 2000 and with 1 or 2 torch threads?

    python benchmarks/robustness.py [--only 04 05] [--seeds 0 1000 2000] [--threads 1 2] [--isa native avx2]
                                    [--jobs 1] [--out build/robustness] [--scale quick] [--device auto] [--table-only]

Every setting (seed base S, T torch threads) is one ``symviz run --seed S --threads T --no-html`` into
``<out>/seedS-threadsT/`` (chapters one after another, so their wall times mean something; ``--jobs`` runs that
many settings at once, which on a 2-core machine distorts the times). Each chapter's result per setting is
merged into ``<out>/robustness.json`` and ``benchmarks/robustness.md`` is rewritten from that store: a
claim x setting table (holds / FAILS and the claim's value when it is short), every chapter's wall time per
setting, and the machine (CPU model, cores, torch version) and date.

Thread counts change float reductions only where torch splits an operation (tensors above its grain size), so
small models compute the same numbers at 1 and 2 threads. ``--isa avx2`` (or ``default``: no SIMD) runs a setting
with the instruction set of another CPU instead: torch's own kernels (``ATEN_CPU_CAPABILITY``), MKL
(``MKL_ENABLE_INSTRUCTIONS``) and oneDNN (``ONEDNN_MAX_CPU_ISA``) are limited to it, so the numbers are those of,
e.g., an AVX2-only CPU (AMD Zen 2/3, older Intel) on this one. ``native`` (the default) uses what the CPU has.
``make robustness ISA="native avx2"`` adds the AVX2 columns.

Re-running some chapters (``--only 04``) or some settings (``--seeds 1000``) replaces only those results
and keeps every other row, so a table can be completed chapter by chapter. The store lives in build/ (not
committed); only the .md is. ``--table-only`` rewrites the .md from the store without running anything.

Exit status: 0 when every chapter run now finished and all its claims held in every setting run now, 1
otherwise (the failures are listed), 2 for bad arguments.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(HERE) not in sys.path:  # _timing, as for every benchmark script
    sys.path.insert(0, str(HERE))

from _timing import machine_info  # noqa: E402

SEEDS = (0, 1000, 2000)
THREADS = (1, 2)
# --isa: the environment that limits torch (ATen), MKL and oneDNN to an instruction set, and the name
# torch.backends.cpu.get_cpu_capability() must then report
ISAS = {
    "avx2": ({"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}, "AVX2"),
    "default": ({"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "ONEDNN_MAX_CPU_ISA": "SSE41"},
                "DEFAULT"),
}
MD = HERE / "robustness.md"
STORE = "robustness.json"


def setting_key(seed: int, threads: int, isa: str = "native") -> str:
    """``seed1000-threads2`` (``seed1000-threads1-avx2`` with ``--isa avx2``): a setting's name in the store and its
    run folder."""
    return f"seed{seed}-threads{threads}" + ("" if isa == "native" else f"-{isa}")


def _setting_order(key: str) -> tuple:
    try:
        seed, rest = key[4:].split("-threads")
        threads, _, isa = rest.partition("-")
        return (0, bool(isa), isa, int(seed), int(threads))
    except ValueError:
        return (1, key)


def _label(key: str) -> str:
    order = _setting_order(key)
    if order[0]:
        return key
    return f"seed {order[3]}, {order[4]} thr" + (f", {order[2].upper()}" if order[2] else "")


def isa_env(isa: str) -> dict:
    """The environment variables that make torch, MKL and oneDNN use only ``isa`` (``{}`` for ``native``)."""
    if isa == "native":
        return {}
    if isa not in ISAS:
        raise ValueError(f"unknown instruction set {isa!r}: use native, {', '.join(ISAS)}")
    return dict(ISAS[isa][0])


def check_isa(isa: str) -> None:
    """Raise RuntimeError unless torch reports ``isa``'s capability under :func:`isa_env` (a CPU that lacks an
    instruction set makes torch fall back silently, and the setting would not be what its name says)."""
    if isa == "native":
        return
    env = {**os.environ, **isa_env(isa)}
    got = subprocess.run([sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
                         env=env, capture_output=True, text=True).stdout.strip()
    if got != ISAS[isa][1]:
        raise RuntimeError(f"--isa {isa}: torch reports CPU capability {got or '(none)'!r}, not {ISAS[isa][1]!r}; "
                           "this CPU or torch build cannot run that setting")


def now_utc() -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


# --- the store ---------------------------------------------------------------------------------------------

def load_store(path: Path) -> dict:
    if path.exists():
        try:
            data = json.loads(path.read_text())
            if isinstance(data.get("chapters"), dict):
                return data
        except (json.JSONDecodeError, AttributeError):
            pass
        print(f"warning: {path} is not a robustness store; starting a new one", file=sys.stderr)
    return {"chapters": {}}


def merge(store: dict, summary: dict, seed: int, threads: int, meta: dict, isa: str = "native") -> dict:
    """Put one ``symviz run`` summary (its results.json) into ``store`` under setting (seed, threads, isa).

    Only the chapters in ``summary`` are replaced, and only for this setting. ``meta``: machine and date.
    """
    key = setting_key(seed, threads, isa)
    for c in summary["chapters"]:
        store["chapters"].setdefault(c["name"], {})[key] = {
            "seed": seed, "threads": threads, "isa": isa, "status": c["status"], "seconds": c.get("seconds"),
            "peak_rss_mb": c.get("peak_rss_mb"), "torch_threads": c.get("torch_threads"), "error": c.get("error"),
            "claims": [{"text": k["text"], "value": k.get("value"), "holds": bool(k.get("holds"))}
                       for k in c.get("claims", [])],
            **meta,
        }
    return store


def failures(store: dict, chapters=None, settings=None) -> list[str]:
    """One line per failed chapter run and per failing claim (optionally only some chapters / settings)."""
    out = []
    for name in sorted(store["chapters"]):
        if chapters is not None and name not in chapters:
            continue
        runs = store["chapters"][name]
        for key in sorted(runs, key=_setting_order):
            if settings is not None and key not in settings:
                continue
            r = runs[key]
            for c in r["claims"]:
                if not c["holds"]:
                    out.append(f"{name} [{_label(key)}]: claim FAILS: {c['text']}")
            if r["status"] != "ok" and all(c["holds"] for c in r["claims"]):
                out.append(f"{name} [{_label(key)}]: chapter failed: {r['error']}")
    return out


# --- the table ---------------------------------------------------------------------------------------------

def short_value(value, limit: int = 24) -> str:
    """A claim's value if it is short enough for a table cell, else ''."""
    def num(v) -> str:
        if isinstance(v, bool):
            return str(v)
        if isinstance(v, int):
            return str(v)
        if isinstance(v, float):
            return f"{v:.3g}"
        return str(v)

    if value is None:
        return ""
    if isinstance(value, (bool, int, float, str)):
        text = num(value)
    elif isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) for v in value):
        text = ", ".join(num(v) for v in value)
    elif isinstance(value, dict) and all(isinstance(v, (int, float, str)) for v in value.values()):
        text = ", ".join(f"{k} {num(v)}" for k, v in value.items())
    else:
        return ""
    text = " ".join(text.split())
    return text if len(text) <= limit else ""


def _md(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _measured(runs: dict, header_cpu: str) -> str:
    dates = sorted({r.get("date", "?")[:10] for r in runs.values()})
    cpus = sorted({r.get("cpu", "?") for r in runs.values()} - {header_cpu})
    text = dates[0] if len(dates) == 1 else f"{dates[0]} .. {dates[-1]}"
    return text + (f" on {', '.join(cpus)}" if cpus else "")


def build_table(store: dict, meta: dict) -> str:
    """The markdown of benchmarks/robustness.md from a store; ``meta``: cpu, cores, torch, date of this write."""
    chapters = sorted(store["chapters"])
    keys = sorted({k for name in chapters for k in store["chapters"][name]}, key=_setting_order)
    scales = sorted({r.get("scale", "quick") for name in chapters for r in store["chapters"][name].values()})
    lines = [
        "# Robustness of the chapters' claims",
        "",
        "Every chapter's claims for each seed base and torch thread count (`make robustness`, "
        "`benchmarks/robustness.py`): a claim is a property of the method, not of one seed or thread count "
        "(see the chapter contract). A setting is a seed base (`symviz run --seed`) and the torch threads pinned "
        "in each chapter's kernel (`--threads`); columns marked AVX2 ran with torch, MKL and oneDNN limited to AVX2 "
        "(`--isa avx2`), the arithmetic of a CPU without AVX-512, because small models compute the same numbers at "
        "1 and 2 threads.",
        "",
        f"Machine: {meta['cpu']}, {meta['cores']} cores, torch {meta['torch']}. Written {meta['date']}. "
        f"Mode: {', '.join(scales) or 'quick'}. OpenMP wait policy: {meta.get('omp_wait') or 'default'} (it changes "
        "CPU use and 2-thread wall times on a busy machine, never the numbers).",
        "",
        "## Claims",
        "",
        "| chapter | claim | " + " | ".join(_label(k) for k in keys) + " |",
        "|---|---|" + "---|" * len(keys),
    ]
    for name in chapters:
        runs = store["chapters"][name]
        texts: list[str] = []
        for key in keys:
            for c in runs.get(key, {}).get("claims", []):
                if c["text"] not in texts:
                    texts.append(c["text"])
        if not texts:
            texts = [None]
        for text in texts:
            cells = []
            for key in keys:
                r = runs.get(key)
                if r is None:
                    cells.append("-")
                    continue
                found = [c for c in r["claims"] if c["text"] == text]
                if not found:
                    cells.append("chapter FAILED" if r["status"] != "ok" else "not recorded")
                    continue
                c = found[0]
                value = short_value(c["value"])
                cell = "holds" if c["holds"] else "**FAILS**"
                cells.append(cell + (f" ({_md(value)})" if value else ""))
            claim = "(no claims recorded)" if text is None else _md(text)
            lines.append(f"| {name} | {claim} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Wall time per chapter (s)",
        "",
        "| chapter | " + " | ".join(_label(k) for k in keys) + " | measured |",
        "|---|" + "---:|" * len(keys) + "---|",
    ]
    notes = []
    for name in chapters:
        runs = store["chapters"][name]
        cells = []
        for key in keys:
            r = runs.get(key)
            if r is None:
                cells.append("-")
            elif r["status"] != "ok" and all(c["holds"] for c in r["claims"]):
                cells.append(f"FAILED ({r['seconds']:.0f} s)" if r.get("seconds") is not None else "FAILED")
                notes.append(f"- {name}, {_label(key)}: {_md(r['error'])}")
            else:
                cells.append("-" if r.get("seconds") is None else f"{r['seconds']:.1f}")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {_measured(runs, meta['cpu'])} |")
    if notes:
        lines += ["", "Chapters that failed:", ""] + notes
    bad = failures(store)
    lines += ["", f"**{len(bad)} failure(s)** in this table." if bad else "All claims hold in every setting above."]
    return "\n".join(lines) + "\n"


# --- running the settings ---------------------------------------------------------------------------------

def run_setting(seed: int, threads: int, args, prefix: bool, isa: str = "native") -> dict:
    """One ``symviz run`` for a setting; returns its results.json (raises RuntimeError when it wrote none)."""
    folder = Path(args.out) / setting_key(seed, threads, isa)
    results = folder / "results.json"
    if results.exists():
        results.unlink()
    cmd = [sys.executable, "-m", "symviz", "run", *args.only, "--scale", args.scale, "--device", args.device,
           "--seed", str(seed), "--threads", str(threads), "--timeout", str(args.timeout), "--no-html",
           "--out", str(folder)]
    tag = f"[{_label(setting_key(seed, threads, isa))}] "
    env = {**os.environ, **isa_env(isa)}
    print(f"{tag}{' '.join(cmd[1:])}", flush=True)
    if prefix:  # settings run in parallel: prefix every line with its setting
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            print(tag + line.rstrip("\n"), flush=True)
        rc = proc.wait()
    else:
        rc = subprocess.run(cmd, cwd=ROOT, env=env).returncode
    if rc == 2 or not results.exists():
        raise RuntimeError(f"symviz run {tag.strip()} wrote no results (exit {rc})")
    return json.loads(results.read_text())


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="*", default=[], help="chapters (numbers or names), e.g. 04 05 (default: all)")
    p.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS), help="seed bases (default 0 1000 2000)")
    p.add_argument("--threads", nargs="+", type=int, default=list(THREADS), help="torch threads (default 1 2)")
    p.add_argument("--isa", nargs="+", default=["native"], choices=["native", *ISAS],
                   help="instruction sets: native (default), avx2, default (no SIMD)")
    p.add_argument("--jobs", type=int, default=1, help="settings run at once (default 1)")
    p.add_argument("--out", default=str(ROOT / "build" / "robustness"), help="raw results (default build/robustness)")
    p.add_argument("--md", default=str(MD), help="the table written (default benchmarks/robustness.md)")
    p.add_argument("--scale", default="quick", choices=["quick", "full"])
    p.add_argument("--device", default="auto")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per cell")
    p.add_argument("--table-only", action="store_true", help="rewrite the table from the store, run nothing")
    a = p.parse_args(argv)
    if any(s < 0 for s in a.seeds):
        p.error(f"--seeds must be non-negative integers, got {a.seeds}")
    if any(t < 1 for t in a.threads):
        p.error(f"--threads must be positive integers, got {a.threads}")
    if a.jobs < 1:
        p.error(f"--jobs must be a positive integer, got {a.jobs}")
    return a


def main(argv=None) -> int:
    a = _parse(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    store_path = out / STORE
    store = load_store(store_path)
    m = machine_info()
    meta = {"cpu": m["cpu"], "cores": m["cores"], "torch": m["torch"], "omp_wait": os.environ.get("OMP_WAIT_POLICY")}
    if a.table_only:
        Path(a.md).write_text(build_table(store, {**meta, "date": now_utc()}))
        print(f"wrote {a.md} from {store_path}")
        return 0
    try:
        for isa in a.isa:
            check_isa(isa)
    except RuntimeError as err:
        print(f"robustness.py: {err}", file=sys.stderr)
        return 2
    settings = [(s, t, isa) for isa in a.isa for s in a.seeds for t in a.threads]
    lock = threading.Lock()
    run_now: dict[str, set] = {}
    errors = []
    t0 = time.perf_counter()

    def go(setting):
        seed, threads, isa = setting
        key = setting_key(seed, threads, isa)
        t = time.perf_counter()
        try:
            summary = run_setting(seed, threads, a, prefix=a.jobs > 1, isa=isa)
        except RuntimeError as err:
            with lock:
                errors.append(str(err))
            return
        with lock:  # merge and save after every setting: an interrupted run keeps what it measured
            merge(store, summary, seed, threads, {**meta, "date": now_utc(), "scale": a.scale}, isa=isa)
            for c in summary["chapters"]:
                run_now.setdefault(c["name"], set()).add(key)
            store_path.write_text(json.dumps(store, indent=1))
            Path(a.md).write_text(build_table(store, {**meta, "date": now_utc()}))
        print(f"[{_label(key)}] done in {time.perf_counter() - t:.0f} s", flush=True)

    with ThreadPoolExecutor(max_workers=a.jobs) as pool:
        list(pool.map(go, settings))
    Path(a.md).write_text(build_table(store, {**meta, "date": now_utc()}))
    print(f"\nwrote {a.md} ({len(settings)} setting(s), {time.perf_counter() - t0:.0f} s); raw results in {store_path}")
    bad = errors + [f for name, keys in sorted(run_now.items()) for f in failures(store, {name}, keys)]
    earlier = [f for f in failures(store) if f not in bad]
    if earlier:
        print("failures kept from earlier runs (not re-run now):\n  " + "\n  ".join(earlier))
    if bad:
        print("FAILED:\n  " + "\n  ".join(bad))
        return 1
    print("all claims hold in every setting run now")
    return 0


if __name__ == "__main__":
    sys.exit(main())
