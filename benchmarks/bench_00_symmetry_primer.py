"""Chapter 00 hot model: E3PointNet forward+backward on a batch of point sets, vs DeepSets."""
import time

import torch


def _step_ms(model, x, reps=20):
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    for _ in range(3):
        out = model(x)
        (out[0] if isinstance(out, tuple) else out).sum().backward()
    t0 = time.perf_counter()
    for _ in range(reps):
        opt.zero_grad()
        out = model(x)
        (out[0] if isinstance(out, tuple) else out).pow(2).mean().backward()
        opt.step()
    return (time.perf_counter() - t0) / reps * 1e3


def run(scale: str = "quick") -> list[dict]:
    from symviz.models.primer import DeepSets, E3PointNet

    torch.manual_seed(0)
    x = torch.randn(64, 8, 3)
    return [{"chapter": "00_symmetry_primer", "what": f"{name} train step (batch 64, 8 points)",
             "value": _step_ms(m, x), "unit": "ms"} for name, m in [("E3PointNet", E3PointNet()), ("DeepSets", DeepSets())]]
