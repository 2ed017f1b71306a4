"""Chapter 04 benchmark: (MC-)EGNN train-step time vs the reference edge-list EGNN, eager and compiled,
parameter counts, and the charged N-body simulator's throughput.

The train step is forward + backward of the position MSE (no optimizer step: Adam costs the same for
every model), at the issue's size: 5 particles, batch 100, hidden 64, 4 layers. On a CPU it runs at
2 threads (the goal's "2 CPU cores") and at 1 thread. Models are timed *interleaved* (round-robin, median
per model) so that load from other processes hits all of them alike; every speed-up compares with the
reference EGNN (:class:`symviz.nn.egnn.EGNN`: the paper's equations on an edge list, eager) measured in the
same rounds.
Compiled models go through :class:`symviz.train.CompileOrEager`; their one-off compile time is reported
(inductor caches it on disk, so a second process compiles in seconds).

    python benchmarks/bench_04_multichannel_egnn.py [quick|full]
"""
from __future__ import annotations

import os
import sys
import time

import torch
from _timing import check_scale

CHAPTER = "04_multichannel_egnn"
BASE = "reference edge-list EGNN"
PLUGGED_C = 2   # the chapter's default CHANNELS


def _models(channels, compiled_channels):
    """Eager models, plus compiled ones with their compile seconds (compiling = the first train step)."""
    from symviz.nn.egnn import EGNN, MCEGNN
    from symviz.train import CompileOrEager

    from symviz.nn.egnn import multichannel_coord_update

    torch.manual_seed(0)
    eager = {BASE: EGNN(1, 64, 4, edge_nf=1)}
    for C in channels:
        for path in ("dense", "edges"):
            eager[f"MC-EGNN C={C} {path}"] = MCEGNN(1, 64, 4, C, edge_nf=1, path=path)
    # the chapter's exercise path: the coordinate update as a plugged-in function (a learner's), dense einsum form
    eager[f"MC-EGNN C={PLUGGED_C} edges, coord_update=multichannel_coord_update"] = MCEGNN(
        1, 64, 4, PLUGGED_C, edge_nf=1, coord_update=multichannel_coord_update)
    compiled = {f"{BASE}, compiled": CompileOrEager(EGNN(1, 64, 4, edge_nf=1), dynamic=False)}
    for C in compiled_channels:
        compiled[f"MC-EGNN C={C} dense, compiled"] = CompileOrEager(MCEGNN(1, 64, 4, C, edge_nf=1, path="dense"),
                                                                     dynamic=False)
    return eager, compiled


def run(scale: str = "quick") -> list[dict]:
    from symviz.data.nbody import simulate_charged
    from symviz.nn.egnn import count_parameters
    from symviz.chapters.ch04_multichannel_egnn.experiments import make_train_step, step_times_ms
    from symviz.train import resolve_device

    check_scale(scale)
    dev = resolve_device("auto")
    threads_before = torch.get_num_threads()
    rounds, per_round = (7, 5) if scale == "quick" else (15, 10)
    channels = (1, 2, 3, 4)
    eager, compiled = _models(channels, (1, 2))
    rows = []
    settings = [min(2, os.cpu_count() or 1), 1] if dev.type == "cpu" else [threads_before]
    try:
        for threads in dict.fromkeys(settings):
            torch.set_num_threads(threads)
            tag = f"{dev.type}, {threads} thread{'s' if threads > 1 else ''}" if dev.type == "cpu" else dev.type
            steps = {k: make_train_step(m, device=dev.type) for k, m in eager.items()}
            for k, m in compiled.items():
                step = make_train_step(m, device=dev.type)
                t0 = time.perf_counter()
                step()                                     # compiles (or falls back to eager) here
                if threads == settings[0]:
                    rows.append({"chapter": CHAPTER, "what": f"compile time of {k} (first step, cold cache)" if m.is_compiled
                                 else f"{k}: torch.compile failed, eager fallback ({m.fallback_reason})",
                                 "value": round(time.perf_counter() - t0, 1), "unit": "s"})
                steps[k] = step
            ms = step_times_ms(steps, rounds, per_round)
            base = ms[BASE]
            for k, t in ms.items():
                rows.append({"chapter": CHAPTER, "what": f"train step (fwd+bwd), batch 100, 5 particles, hidden 64, "
                             f"4 layers: {k} [{tag}]", "value": round(t, 3), "unit": "ms"})
                if k != BASE:
                    rows.append({"chapter": CHAPTER, "what": f"speed-up of {k} over the {BASE} (eager) [{tag}]",
                                 "value": round(base / t, 3), "unit": "x"})
    finally:
        torch.set_num_threads(threads_before)
    for C in channels:
        rows.append({"chapter": CHAPTER, "what": f"parameters MC-EGNN C={C} (hidden 64, 4 layers)",
                     "value": count_parameters(eager[f"MC-EGNN C={C} dense"]), "unit": "count"})
    rows.append({"chapter": CHAPTER, "what": "parameters reference EGNN (hidden 64, 4 layers)",
                 "value": count_parameters(eager[BASE]), "unit": "count"})
    from symviz.chapters.ch04_multichannel_egnn.dimer import spring_dimer, dimer_mse
    from symviz.nn.egnn import MCEGNNVectors

    d = spring_dimer(100, seed=0)                       # the toy's batch: 100 spring dimers
    batch = (d["loc"], d["vel"], d["target"])
    for C in (1, 2):
        torch.manual_seed(0)
        toy = MCEGNNVectors(1, 32, 2, C, n_vectors=2)
        opt = torch.optim.Adam(toy.parameters(), lr=3e-3)

        def toy_step(toy=toy, opt=opt):
            loss = dimer_mse(toy, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        toy_ms = step_times_ms({"toy": toy_step}, rounds, per_round)["toy"]
        rows.append({"chapter": CHAPTER, "what": f"spring-dimer toy train step (Adam), batch 100, 2 particles, hidden 32, "
                     f"2 layers, C={C} [{dev.type}, {torch.get_num_threads()} thread(s)]", "value": round(toy_ms, 3), "unit": "ms"})
    n_sims = 200 if scale == "quick" else 2000
    t0 = time.perf_counter()
    simulate_charged(n_sims, n_frames=11, seed=0)
    dt = time.perf_counter() - t0
    rows.append({"chapter": CHAPTER, "what": f"charged N-body simulator throughput ({n_sims} systems x 1000 leapfrog steps)",
                 "value": round(n_sims * 1000 / dt, 1), "unit": "system-steps/s"})
    return rows


if __name__ == "__main__":
    sys.path[:0] = [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
    for row in run(sys.argv[1] if len(sys.argv) > 1 else "quick"):
        print(f"{row['value']:>12} {row['unit']:<16} {row['what']}")
