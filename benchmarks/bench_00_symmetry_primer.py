"""Chapter 00 hot model: E3PointNet forward+backward on a batch of point sets, vs DeepSets (per-point φ, and φ built
from the solved S_8 basis as the notebook trains it), and the exercise's null-space solve."""
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
    from symviz.chapters.ch00_symmetry_primer.experiments import equivariant_basis_from_generators, permutation_generators
    from symviz.nn.primer import DeepSets, E3PointNet

    torch.manual_seed(0)
    x = torch.randn(64, 8, 3)
    gens = permutation_generators(8)
    basis = equivariant_basis_from_generators(gens, gens)
    models = [("E3PointNet", E3PointNet()), ("DeepSets", DeepSets()),
              ("DeepSets from the solved S8 basis", DeepSets(node_basis=basis))]
    rows = [{"chapter": "00_symmetry_primer", "what": f"{name} train step (batch 64, 8 points)",
             "value": _step_ms(m, x), "unit": "ms"} for name, m in models]
    rows.append({"chapter": "00_symmetry_primer", "what": "null-space solve of the S8 equivariant maps (64 unknowns)",
                 "value": time_ms(lambda: equivariant_basis_from_generators(gens, gens), 20, warmup=2), "unit": "ms"})
    return rows
