"""Chapter 00 hot model: E3PointNet forward+backward on a batch of point sets, vs DeepSets."""
import torch
from _timing import time_ms


def _step_ms(model, x, reps=20):
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)

    def step():
        opt.zero_grad()
        out = model(x)
        (out[0] if isinstance(out, tuple) else out).pow(2).mean().backward()
        opt.step()

    return time_ms(step, reps, warmup=3)


def run(scale: str = "quick") -> list[dict]:
    from symviz.nn.primer import DeepSets, E3PointNet

    torch.manual_seed(0)
    x = torch.randn(64, 8, 3)
    return [{"chapter": "00_symmetry_primer", "what": f"{name} train step (batch 64, 8 points)",
             "value": _step_ms(m, x), "unit": "ms"} for name, m in [("E3PointNet", E3PointNet()), ("DeepSets", DeepSets())]]
