"""Chapter 04's toy: why channels help. A state of two vectors per node, which one channel cannot hold.

Two unit masses joined by a spring (rest length 0, stiffness ``k``). From positions and velocities now, each
particle must report its *state* a time ``horizon`` later: its displacement ``x_i(t) - x_i(0)`` and its
velocity ``v_i(t)``, two vectors, as the ``3 x 2`` matrix ``T_i``. The motion is solved exactly: with
``r = x_1 - x_2``, ``u = v_1 - v_2``, ``V = (v_1 + v_2) / 2`` and ``omega = sqrt(2k)``::

    r(t)  = r cos(omega t) + u sin(omega t) / omega,      r'(t) = -r omega sin(omega t) + u cos(omega t)
    x_1,2(t) - x_1,2(0) = V t +- (r(t) - r) / 2,          v_1,2(t) = V +- r'(t) / 2

Why one channel cannot: an EGNN node carries one vector (its position's displacement ``y_i``, beside
invariant features). Any rotation about the axis of ``y_i`` leaves the node's state unchanged, so an
equivariant read-out must leave each of its output vectors unchanged too: each lies on that axis. Both
reported vectors are multiples of ``y_i``, the ``3 x 2`` output ``y_i a^T`` has rank <= 1, and by
Eckart–Young its squared error is at least the square of ``T_i``'s second singular value
(:func:`rank_one_floor`). Two channels hold two vectors: ``T_i`` is reachable exactly (two layers suffice).
"""
from __future__ import annotations

import math
import time

import torch

from symviz.nn.egnn import MCEGNNVectors, count_parameters
from symviz.train import TensorBatches, evaluate, fit, fused_adam

from .experiments import RunResult, _result

__all__ = ["spring_dimer", "rank_one_floor", "dimer_mse", "predict_dimer", "train_dimer"]


def _positive(name: str, value, kind=float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int) or not value > 0:
        what = "a positive number" if kind is float else "a positive integer"
        raise ValueError(f"{name} must be {what}, got {value!r}")


def spring_dimer(n_samples: int, horizon: float = 1.0, stiffness: float = 1.0, seed: int = 0) -> dict:
    """``n_samples`` spring dimers and their exact state after ``horizon`` time units.

    Positions and velocities are standard normal (``(n_samples, 2, 3)``, row vectors), masses 1, the spring
    has rest length 0 and stiffness ``stiffness`` (angular frequency of the bond ``sqrt(2 * stiffness)``).

    Returns a dict of float32 tensors: ``loc``, ``vel`` ``(N, 2, 3)`` and ``target`` ``(N, 2, 3, 2)``, whose
    last axis holds ``[x_i(t) - x_i(0), v_i(t)]`` (see the module docstring for the formulas).

    >>> d = spring_dimer(4, seed=0)
    >>> tuple(d["target"].shape), bool(torch.allclose(d["target"][..., 1].sum(1), d["vel"].sum(1), atol=1e-5))
    ((4, 2, 3, 2), True)
    """
    _positive("n_samples", n_samples, int)
    _positive("horizon", horizon)
    _positive("stiffness", stiffness)
    g = torch.Generator().manual_seed(seed)
    loc = torch.randn(n_samples, 2, 3, generator=g, dtype=torch.float64)
    vel = torch.randn(n_samples, 2, 3, generator=g, dtype=torch.float64)
    w, t = math.sqrt(2.0 * stiffness), float(horizon)
    r, u, V = loc[:, 0] - loc[:, 1], vel[:, 0] - vel[:, 1], vel.mean(1)
    r_t = r * math.cos(w * t) + u * (math.sin(w * t) / w)
    rdot_t = -r * (w * math.sin(w * t)) + u * math.cos(w * t)
    disp = torch.stack([V * t + (r_t - r) / 2, V * t - (r_t - r) / 2], 1)
    vel_t = torch.stack([V + rdot_t / 2, V - rdot_t / 2], 1)
    target = torch.stack([disp, vel_t], -1)
    return {"loc": loc.float(), "vel": vel.float(), "target": target.float(), "horizon": t, "stiffness": float(stiffness)}


def rank_one_floor(target: torch.Tensor) -> float:
    """The smallest mean squared error any output of rank <= 1 per node can reach on ``target (..., 3, K)``.

    Eckart–Young: the best rank-1 approximation of a matrix leaves the squares of all but its largest
    singular value; averaged over nodes and over the ``3 K`` entries, as an MSE. A one-channel
    :class:`~symviz.nn.egnn.MCEGNNVectors` cannot go below it, whatever its weights.

    >>> rank_one_floor(torch.tensor([[[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]]]))     # singular values 2 and 1
    0.16666666666666666
    """
    if not torch.is_tensor(target) or target.ndim < 2 or target.shape[-2] != 3 or target.shape[-1] < 1:
        raise ValueError("target must be a tensor of shape (..., 3, K): K vectors per node as columns, got "
                         f"{tuple(target.shape) if torch.is_tensor(target) else type(target).__name__}")
    s = torch.linalg.svdvals(target.double())
    return float((s[..., 1:] ** 2).sum(-1).mean() / (3 * target.shape[-1]))


def predict_dimer(model: MCEGNNVectors, loc: torch.Tensor, vel: torch.Tensor) -> torch.Tensor:
    """The model's two vectors per particle ``(B, 2, 3, 2)``; node feature: the speed ``|v_i|``."""
    return model(vel.norm(dim=-1, keepdim=True), loc, vel)


def dimer_mse(model: MCEGNNVectors, batch) -> torch.Tensor:
    """The loss for :func:`symviz.train.fit` on ``(loc, vel, target)`` batches: MSE over all entries."""
    loc, vel, target = batch
    return ((predict_dimer(model, loc, vel) - target) ** 2).mean()


def train_dimer(train: dict, val: dict, test: dict, channels: int = 1, seed: int = 0, hidden: int = 32,
                n_layers: int = 2, epochs: int = 30, lr: float = 3e-3, batch_size: int = 100,
                device: str = "auto") -> RunResult:
    """Train :class:`~symviz.nn.egnn.MCEGNNVectors` (``channels`` channels, two output vectors) on
    :func:`spring_dimer` data; ``test`` is the test MSE, ``extra["floor"]`` the test set's :func:`rank_one_floor`."""
    for name, d in (("train", train), ("val", val), ("test", test)):
        if not isinstance(d, dict) or not {"loc", "vel", "target"} <= set(d):
            raise ValueError(f"{name} must be a spring_dimer(...) dict with 'loc', 'vel' and 'target'")
    torch.manual_seed(seed)
    model = MCEGNNVectors(1, hidden, n_layers, channels, n_vectors=2, edge_nf=0, velocity=True)
    keys = ("loc", "vel", "target")
    tr = TensorBatches(*(train[k] for k in keys), batch_size=batch_size, shuffle=True, seed=seed)
    va = TensorBatches(*(val[k] for k in keys), batch_size=1000, shuffle=False)
    te = TensorBatches(*(test[k] for k in keys), batch_size=1000, shuffle=False)
    t0 = time.perf_counter()
    res = fit(model, dimer_mse, tr, va, epochs=epochs, optimizer=fused_adam(model, lr, 0.0, device), seed=seed,
              device=device, amp=False, progress=False, desc=f"dimer C={channels} seed={seed}")
    with torch.no_grad():
        test_mse = evaluate(res.model, dimer_mse, te, device)
    return _result(res.model, channels, seed, test_mse, res.history, count_parameters(model),
                   time.perf_counter() - t0, f"dimer C={channels} seed={seed}",
                   extra={"floor": rank_one_floor(test["target"])})
