"""Benchmark for chapter 03: step times of the backbone and of the adapted (canonicalized) model.

``run(scale)`` returns rows ``{"chapter", "what", "value", "unit"}``; the runner adds the notebook's
quick-mode wall time and peak memory itself.
"""
from __future__ import annotations

import time

import torch
from _timing import check_scale, time_ms

CHAPTER = "03_equivariant_adaptation"


def _step_ms(model: torch.nn.Module, loss_fn, x: torch.Tensor, y: torch.Tensor, repeats: int) -> float:
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()

    def step():
        loss = loss_fn(model, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return time_ms(step, repeats, warmup=1)  # the first step warms up allocations


def run(scale: str = "quick") -> list[dict]:
    from symviz.chapters.ch03_equivariant_adaptation.adaptation import (ADAPTATION_RECIPES, AdaptedModel,
                                                                       adaptation_objective, adaptation_step)
    from symviz.nn.canonical import C4ImageCanonicalizer
    from symviz.chapters.ch03_equivariant_adaptation.pretrained import BACKBONE_RECIPES, ResNetBackbone

    check_scale(scale)
    repeats = 5 if scale == "quick" else 20
    torch.manual_seed(0)
    bb_cfg, ad_cfg = BACKBONE_RECIPES[scale], ADAPTATION_RECIPES[scale]
    backbone = ResNetBackbone(hidden=bb_cfg["hidden"], blocks=bb_cfg["blocks"], stem_stride=bb_cfg["stem_stride"])
    B1, B2 = bb_cfg["batch_size"], ad_cfg["batch_size"]
    x1, y1 = torch.rand(B1, 1, 28, 28), torch.randint(0, 10, (B1,))
    x2, y2 = torch.rand(B2, 1, 28, 28), torch.randint(0, 10, (B2,))

    ce = lambda m, x, y: torch.nn.functional.cross_entropy(m(x), y)  # noqa: E731
    rows = [{"chapter": CHAPTER, "what": f"backbone pretraining step (batch {B1}, {scale})",
             "value": _step_ms(backbone, ce, x1, y1, repeats), "unit": "ms"}]

    model = AdaptedModel(C4ImageCanonicalizer(hidden=ad_cfg["hidden"], pool=ad_cfg["pool"]), backbone).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    # the step the chapter trains with (the exercise's reference): forward, task loss + 100 x prior, backward, update
    step = lambda: adaptation_step(model, (x2, y2), opt, adaptation_objective, 100.0)  # noqa: E731
    rows.append({"chapter": CHAPTER, "what": f"adaptation step, canonicalizer + backbone + prior (batch {B2}, {scale})",
                 "value": time_ms(step, repeats, warmup=1), "unit": "ms"})
    model.eval()
    with torch.no_grad():
        xe = torch.rand(1000, 1, 28, 28)
        model(xe[:10])
        t0 = time.perf_counter()
        model(xe)
        rows.append({"chapter": CHAPTER, "what": f"adapted model inference (1000 images, {scale})",
                     "value": (time.perf_counter() - t0) * 1000, "unit": "ms"})
    return rows


if __name__ == "__main__":
    for row in run("quick"):
        print(row)
