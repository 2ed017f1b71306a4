"""Benchmark for chapter 07 (gradient starvation): the hot training steps and measurements.

``run(scale)`` returns rows ``{"chapter", "what", "value", "unit"}``; the runner adds the chapter's
quick-mode wall time and peak memory itself.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from _timing import check_scale, time_ms

CHAPTER = "07_gradient_starvation"


def run(scale: str = "quick") -> list[dict]:
    """Time one full-batch step of each experiment at the chapter's ``scale`` ("quick" or "full")."""
    check_scale(scale)
    from symviz.data.starvation import two_moons_with_margin
    from symviz.losses import spectral_decoupling
    from symviz.chapters.ch07_gradient_starvation.experiments import MLP, coupling_toy, decision_margin

    torch.manual_seed(0)
    reps = 20 if scale == "quick" else 100
    rows = []

    x, y = two_moons_with_margin(300, seed=0)
    net = MLP(2, 500)
    opt = torch.optim.SGD(net.parameters(), lr=1e-2, momentum=0.9)

    def moons_step():
        z = net(x)
        loss = F.binary_cross_entropy_with_logits(z, y.float()) + spectral_decoupling(z, 0.006)
        opt.zero_grad()
        loss.backward()
        opt.step()

    rows.append({"what": "two moons SD train step (300 points, MLP 500 hidden, full batch)",
                 "value": time_ms(moons_step, reps, warmup=3), "unit": "ms"})

    n, hidden = (2000, 64) if scale == "quick" else (50000, 300)
    xc = torch.rand(n, 2 * 14 * 14)
    yc = (torch.rand(n) > 0.5).float()
    cnet = MLP(2 * 14 * 14, hidden, depth=2, init="xavier")
    copt = torch.optim.Adam(cnet.parameters(), lr=1e-4)

    def colour_step():
        z = cnet(xc)
        loss = 2e-5 * (F.binary_cross_entropy_with_logits(z, yc) + (z ** 2).mean())
        copt.zero_grad()
        loss.backward()
        copt.step()

    rows.append({"what": f"coloured images SD train step ({n} images 2x14x14, MLP 2x{hidden}, full batch)",
                 "value": time_ms(colour_step, max(3, reps // 4), warmup=3), "unit": "ms"})
    from symviz.chapters.ch07_gradient_starvation.experiments import GroupAveraged
    from symviz.data.starvation import swap_colors

    n_c = 1500 if scale == "quick" else 50000            # section 6 trains on the colour task's training set
    xg = torch.rand(n_c, 2, 14, 14)
    yg = (torch.rand(n_c) > 0.5).float()
    gnet = GroupAveraged(MLP(2 * 14 * 14, hidden, depth=2, init="xavier"), [lambda t: t, swap_colors])
    gopt = torch.optim.Adam(gnet.parameters(), lr=1e-4)

    def group_avg_step():
        loss = F.binary_cross_entropy_with_logits(gnet(xg), yg)
        gopt.zero_grad()
        loss.backward()
        gopt.step()

    rows.append({"what": f"group-averaged (colour swap) ERM train step ({n_c} images 2x14x14, MLP 2x{hidden}, full batch)",
                 "value": time_ms(group_avg_step, max(3, reps // 4), warmup=3), "unit": "ms"})
    rows.append({"what": "decision margin on a 400x400 grid (two moons)",
                 "value": time_ms(lambda: decision_margin(net, x, y), 3, warmup=1), "unit": "ms"})
    rows.append({"what": "coupling toy, one slider move (linear model, 100 examples, 6,000 steps)",
                 "value": time_ms(lambda: coupling_toy(8.0, lam=0.1, weight_decay=0.05), 3, warmup=1), "unit": "ms"})
    for r in rows:
        r["chapter"] = CHAPTER
    return rows


if __name__ == "__main__":
    for row in run("quick"):
        print(row)
