"""Chapter 02 hot models: train steps of canonicalized classifiers vs their baselines.

Images: CNN behind a learned C4 canonicalizer vs plain CNN vs P4 G-CNN (batch 64).
Point sets: PointNet behind a learned SO(3) frame vs PCA frames vs plain PointNet (batch 64, 16 points).
N-body: the GNN plain, behind a learned O(3) frame and averaged over the 8 PCA frames, and EGNN (batch 50, 5 particles).
"""
import torch
from torch.nn import functional as F

from _timing import check_scale, time_ms


def _step_ms(model, x, y, reps):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    return time_ms(step, reps, warmup=2)


def run(scale: str = "quick") -> list[dict]:
    from symviz.chapters.ch02_learned_canonicalization.experiments import make_image_model, make_pointset_model

    check_scale(scale)
    size, hidden, canon_hidden, pool, reps = (12, 16, 8, 1, 10) if scale == "quick" else (24, 32, 16, 2, 30)
    torch.manual_seed(0)
    rows = []
    x, y = torch.rand(64, 1, size, size), torch.randint(0, 10, (64,))
    for kind in ("cnn", "learned", "moments", "p4cnn"):
        m = make_image_model(kind, 10, hidden, canon_hidden, pool)
        rows.append({"chapter": "02_learned_canonicalization",
                     "what": f"{kind} image classifier train step (batch 64, {size}x{size})",
                     "value": _step_ms(m, x, y, reps), "unit": "ms"})
    p, q = torch.randn(64, 16, 3), torch.randint(0, 5, (64,))
    for kind in ("pointnet", "pca", "learned"):
        m = make_pointset_model(kind, 5, 64, 16 if scale == "quick" else 32)
        rows.append({"chapter": "02_learned_canonicalization",
                     "what": f"{kind} point-set classifier train step (batch 64, 16 points)",
                     "value": _step_ms(m, p, q, reps), "unit": "ms"})
    from symviz.chapters.ch02_learned_canonicalization.experiments import make_nbody_model

    hidden, n_layers, bs = (32, 3, 50) if scale == "quick" else (64, 4, 100)
    loc, vel = torch.randn(bs, 5, 3), torch.randn(bs, 5, 3)
    charges, target = torch.randint(0, 2, (bs, 5, 1)).float() * 2 - 1, torch.randn(bs, 5, 3)
    for kind in ("gnn", "learned", "fa_gnn", "egnn"):
        m = make_nbody_model(kind, hidden, n_layers, canon_hidden=16, canon_layers=2 if scale == "quick" else 4)
        opt = torch.optim.Adam(m.parameters(), lr=1e-3)

        def step(m=m, opt=opt):
            opt.zero_grad(set_to_none=True)
            ((m(loc, vel, charges) - target) ** 2).mean().backward()
            opt.step()

        rows.append({"chapter": "02_learned_canonicalization",
                     "what": f"{kind} N-body train step (batch {bs}, 5 particles, hidden {hidden})",
                     "value": time_ms(step, reps, warmup=2), "unit": "ms"})
    return rows


if __name__ == "__main__":
    for row in run():
        print(f"{row['what']:<70} {row['value']:8.2f} {row['unit']}")
