"""Chapter 04 benchmark: (MC-)EGNN train-step time on both paths vs a straightforward edge-list EGNN,
parameter counts, and the charged N-body simulator's throughput.

The train step is forward + backward (no optimizer step: Adam costs the same for every model), at the
issue's size: 5 particles, batch 100, hidden 64, 4 layers. Models are timed *interleaved* (round-robin,
median per model) so that load from other processes hits all of them alike; the ratio column compares
each model with the straightforward EGNN measured in the same rounds.

    python benchmarks/bench_04_multichannel_egnn.py [quick|full]
"""
from __future__ import annotations

import statistics
import sys
import time

import torch

CHAPTER = "04_multichannel_egnn"


def _step_fn(model, device, batch=100, n=5, seed=0):
    from symviz.models.egnn import nbody_inputs

    g = torch.Generator().manual_seed(seed)
    loc, vel = torch.randn(batch, n, 3, generator=g), torch.randn(batch, n, 3, generator=g)
    q = torch.randint(0, 2, (batch, n, 1), generator=g).float() * 2 - 1
    h, x, v, ea = (t.to(device) for t in nbody_inputs(loc, vel, q))
    target = torch.randn(batch, n, 3, generator=g).to(device)
    model = model.to(device)

    def step():
        out = model(h, x, v, ea)
        out = out.x if hasattr(out, "x") else out
        ((out - target) ** 2).mean().backward()
        model.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return step


def _interleaved(steps: dict, rounds: int, per_round: int) -> dict:
    for s in steps.values():          # warm-up (allocations, first-call overheads)
        s(); s()
    times = {k: [] for k in steps}
    for _ in range(rounds):
        for k, s in steps.items():
            t0 = time.perf_counter()
            for _ in range(per_round):
                s()
            times[k].append((time.perf_counter() - t0) / per_round * 1000)
    return {k: statistics.median(v) for k, v in times.items()}


def run(scale: str = "quick") -> list[dict]:
    from symviz.data.nbody import simulate_charged
    from symviz.models.egnn import MCEGNN, NaiveEGNN, count_parameters
    from symviz.train import resolve_device

    if scale not in ("quick", "full"):
        raise ValueError(f"scale must be 'quick' or 'full', got {scale!r}")
    dev = resolve_device("auto")
    threads = torch.get_num_threads()
    if dev.type == "cpu":
        torch.set_num_threads(1)   # at 5 particles one thread beats two (no sync cost); restored at the end
    rounds, per_round = (5, 3) if scale == "quick" else (15, 10)
    channels = (1, 2, 3, 4)
    torch.manual_seed(0)
    models = {"straightforward edge-list EGNN": NaiveEGNN(1, 64, 4, edge_nf=1)}
    for C in channels:
        for path in ("dense", "edges"):
            models[f"MC-EGNN C={C} {path}"] = MCEGNN(1, 64, 4, C, edge_nf=1, path=path)
    if scale == "full":                # torch.compile where it pays: compile is slow on CPU, so full mode only
        try:
            models["MC-EGNN C=2 dense compiled"] = torch.compile(MCEGNN(1, 64, 4, 2, edge_nf=1, path="dense"))
            models["straightforward EGNN compiled"] = torch.compile(NaiveEGNN(1, 64, 4, edge_nf=1))
        except Exception as exc:  # no compiler toolchain: eager numbers only
            print(f"torch.compile unavailable ({type(exc).__name__}: {exc}); eager only")
    steps = {k: _step_fn(m, dev) for k, m in models.items()}
    ms = _interleaved(steps, rounds, per_round)
    base = ms["straightforward edge-list EGNN"]
    rows = []
    for k, t in ms.items():
        rows.append({"chapter": CHAPTER, "what": f"train step (fwd+bwd), batch 100, 5 particles, hidden 64, 4 layers: {k} [{dev.type}{', 1 thread' if dev.type == 'cpu' else ''}]",
                     "value": round(t, 3), "unit": "ms"})
        if k != "straightforward edge-list EGNN":
            rows.append({"chapter": CHAPTER, "what": f"speed-up of {k} over the straightforward edge-list EGNN [{dev.type}]",
                         "value": round(base / t, 3), "unit": "x"})
    for C in channels:
        rows.append({"chapter": CHAPTER, "what": f"parameters MC-EGNN C={C} (hidden 64, 4 layers)",
                     "value": count_parameters(models[f"MC-EGNN C={C} dense"]), "unit": "count"})
    rows.append({"chapter": CHAPTER, "what": "parameters straightforward EGNN (hidden 64, 4 layers)",
                 "value": count_parameters(models["straightforward edge-list EGNN"]), "unit": "count"})
    n_sims = 200 if scale == "quick" else 2000
    t0 = time.perf_counter()
    simulate_charged(n_sims, n_frames=11, seed=0)
    dt = time.perf_counter() - t0
    rows.append({"chapter": CHAPTER, "what": f"charged N-body simulator throughput ({n_sims} systems x 1000 leapfrog steps)",
                 "value": round(n_sims * 1000 / dt, 1), "unit": "system-steps/s"})
    torch.set_num_threads(threads)
    return rows


if __name__ == "__main__":
    for row in run(sys.argv[1] if len(sys.argv) > 1 else "quick"):
        print(f"{row['value']:>12} {row['unit']:<16} {row['what']}")
