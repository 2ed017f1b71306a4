"""The CUDA-only paths (issue 18): they run where a GPU is present (benchmarks/gpu.sh) and skip, with the reason,
everywhere else. CPU counterparts of each are tested in the chapter and train tests."""
from __future__ import annotations

import pytest
import torch

from symviz import train
from symviz.nn.egnn import MCEGNN, nbody_inputs

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (benchmarks/gpu.sh runs these)")]


def _nbody_batch(dtype, n=5, batch=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    loc, vel = torch.randn(batch, n, 3, generator=g), torch.randn(batch, n, 3, generator=g)
    q = torch.randint(0, 2, (batch, n, 1), generator=g).to(loc) * 2 - 1
    return [t.to("cuda", dtype) for t in nbody_inputs(loc, vel, q)]


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 2e-4)])
@pytest.mark.parametrize("channels", [1, 3])
def test_dense_backward_matches_the_edge_path_on_cuda(dtype, tol, channels):
    """The dense path's hand-written backward gives the autograd gradients of the edge-list path, on the GPU."""
    torch.manual_seed(0)
    dense = MCEGNN(1, hidden=16, n_layers=3, channels=channels, edge_nf=1, path="dense").to("cuda", dtype)
    edges = MCEGNN(1, hidden=16, n_layers=3, channels=channels, edge_nf=1, path="edges").to("cuda", dtype)
    edges.load_state_dict(dense.state_dict())
    h, x, v, ea = _nbody_batch(dtype)
    outs = []
    for m in (dense, edges):
        m.zero_grad()
        xx = x.clone().requires_grad_(True)
        out = m(h, xx, v, ea).x
        (out ** 2).sum().backward()
        outs.append((out.detach(), xx.grad, [torch.zeros_like(p) if p.grad is None else p.grad.clone()
                                             for p in m.parameters()]))
    (od, gd, pd), (oe, ge, pe) = outs
    scale = lambda t: float(t.abs().max()) + 1e-30  # noqa: E731
    assert float((od - oe).abs().max()) <= tol * scale(oe)
    assert float((gd - ge).abs().max()) <= tol * scale(ge)
    for a, b in zip(pd, pe):
        assert float((a - b).abs().max()) <= tol * scale(b) + 1e-12


def test_compile_or_eager_on_cuda_matches_eager():
    torch.manual_seed(0)
    model = MCEGNN(1, hidden=16, n_layers=2, channels=2, edge_nf=1, path="dense").cuda()
    wrapped = train.CompileOrEager(model)
    h, x, v, ea = _nbody_batch(torch.float32)
    with torch.no_grad():
        eager = model(h, x, v, ea).x
        compiled = wrapped(h, x, v, ea).x
    assert torch.allclose(eager, compiled, rtol=1e-4, atol=1e-5), (wrapped.fallback_reason, (eager - compiled).abs().max())


@pytest.mark.skipif(torch.cuda.is_available() and not torch.cuda.is_bf16_supported(), reason="GPU without bfloat16")
def test_bf16_autocast_trains_and_stays_close_to_float32():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.SiLU(), torch.nn.Linear(64, 1))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(512, 8, generator=g)
    y = (x[:, :1] * 2 - x[:, 1:2]).clone()
    loader = train.TensorBatches(x, y, batch_size=64, seed=0)
    res = train.fit(model, lambda m, b: ((m(b[0]) - b[1]) ** 2).mean(), loader, epochs=30, lr=3e-3, device="cuda",
                    amp=True, seed=0, progress=False)
    hist = res.history["train_loss"]
    assert hist.iloc[-1] < 0.2 * hist.iloc[0]
    xb = x[:128].cuda()
    with torch.no_grad():
        fp32 = res.model(xb)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            bf16 = res.model(xb).float()
    assert float((bf16 - fp32).abs().max()) <= 0.05 * float(fp32.abs().max())


def test_accuracy_and_evaluate_run_on_the_models_cuda_device():
    model = torch.nn.Linear(4, 3).cuda()
    x, y = torch.randn(50, 4), torch.randint(0, 3, (50,))
    acc = train.accuracy(model, x, y, batch_size=16)
    model_cpu = model.cpu()
    assert acc == train.accuracy(model_cpu, x, y)
