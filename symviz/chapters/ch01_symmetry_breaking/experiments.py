"""Chapter 01's experiment: equivariant vs relaxed-equivariant vs noise-injection E-MLPs on
symmetry-breaking tasks (Kaba & Ravanbakhsh, "Symmetry Breaking and Equivariant Neural Networks",
arXiv:2312.09016).

Three models with the same E-MLP body (:mod:`symviz.nn.emlp`):

* ``"equivariant"``: ``F(x)``, an E-MLP on the input representation;
* ``"relaxed"``: ``F(x, e_{k(x)})``, the E-MLP also reads the one-hot of a canonicalizing element;
* ``"noise"``: ``F(x, z)``, the same E-MLP fed Gaussian noise ``z`` instead.

:func:`train_model` trains one with :func:`symviz.train.fit`, :func:`measure` computes (in float64)
the loss on symmetric and generic inputs, the relaxed-equivariance violation, the ordinary
equivariance error and how symmetric the outputs are, and :func:`compare` does it over seeds.

    >>> from symviz.data.symbreak import spin_ring
    >>> task = spin_ring(n=4, n_train=32, n_test=8)
    >>> r = train_model(task, "relaxed", seed=0, epochs=2, hidden=2, device="cpu")
    >>> m = measure(r.model, "relaxed", task)
    >>> m["relaxed_violation"] < 1e-12, m["floor"] > m["optimum"]
    (True, True)
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import torch

from symviz.equivariance import relative_error
from symviz.nn.emlp import (EMLP, NoiseEMLP, RelaxedEMLP, equivariance_violation, relaxed_equivariance_violation, stabilizer_elements)
from symviz.reps import as_sumrep

__all__ = ["MODEL_KINDS", "make_model", "TrainedModel", "train_model", "measure", "compare",
           "output_symmetry_error", "frozen"]

MODEL_KINDS = ("equivariant", "relaxed", "noise")


def make_model(kind: str, task, hidden: int = 8, depth: int = 2, out_gain: float = 0.1) -> torch.nn.Module:
    """The ``kind`` (one of :data:`MODEL_KINDS`) of E-MLP for ``task`` (a :class:`SymBreakTask`)."""
    if kind == "equivariant":
        return EMLP(task.rep_in, task.rep_out, hidden, depth, out_gain=out_gain)
    if kind == "relaxed":
        return RelaxedEMLP(task.rep_in, task.rep_out, hidden, depth, out_gain=out_gain)
    if kind == "noise":
        return NoiseEMLP(task.rep_in, task.rep_out, hidden, depth, out_gain=out_gain)
    raise ValueError(f"kind must be one of {', '.join(MODEL_KINDS)}, got {kind!r}")


def frozen(model: torch.nn.Module, kind: str, seed: int = 0):
    """``model`` as a deterministic function ``x -> out``: the noise model with a fixed noise draw
    (the same ``seed`` on every call, so ``f(g·x)`` and ``f(x)`` see the same ``z``)."""
    if kind == "noise":
        return lambda x: model(x, generator=torch.Generator().manual_seed(seed))
    return model


@dataclass
class TrainedModel:
    """A trained model and its training history (``pandas.DataFrame``, one row per epoch)."""

    kind: str
    seed: int
    model: torch.nn.Module
    history: object
    seconds: float


def train_model(task, kind: str, seed: int = 0, epochs: int = 40, hidden: int = 8, depth: int = 2,
                lr: float = 3e-3, batch_size: int = 128, device: str = "auto", out_gain: float = 0.1) -> TrainedModel:
    """Train a ``kind`` model on ``task.x_train`` by minimising ``task.loss`` with Adam (via ``fit``)."""
    from torch.utils.data import DataLoader, TensorDataset

    from symviz.train import fit, seed_everything

    if kind not in MODEL_KINDS:
        raise ValueError(f"kind must be one of {', '.join(MODEL_KINDS)}, got {kind!r}")
    seed_everything(seed)
    model = make_model(kind, task, hidden, depth, out_gain)
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(TensorDataset(task.x_train.float()), batch_size=batch_size, shuffle=True, generator=gen)
    res = fit(model, lambda m, b: task.loss(m(b[0]), b[0]).mean(), loader, epochs=epochs, lr=lr, seed=seed,
              device=device, progress=False, desc=f"{task.name}/{kind}", amp=False)  # tiny models: fp32 throughout
    return TrainedModel(kind, seed, res.model, res.history, res.seconds)


def output_symmetry_error(f, x: torch.Tensor, rep_in, rep_out, tol: float = 1e-6, scale: float | None = None) -> float:
    """``max_{x, h ∈ G_x} ‖ρ_out(h) f(x) − f(x)‖ / ‖f(x)‖`` on ``x: (B, d_in)``: zero when every output
    is at least as symmetric as its input (``G_x ⊆ G_{f(x)}``, what an equivariant ``f`` must do).

    Normalised by :func:`symviz.equivariance.relative_error`, one item per input, its floor taken from
    ``scale``: a typical output norm (e.g. on generic inputs), or the largest ``‖f(x)‖`` here if that is
    larger. Norms below ``1e-3 · scale`` are raised to it, so that an output that should be exactly 0
    (an equivariant decoder at ``z = 0``) and is 1e-15 does not count as a relative error of order one.
    """
    rep_in, rep_out = as_sumrep(rep_in), as_sumrep(rep_out)
    worst = 0.0
    with torch.no_grad():
        y = f(x).to(torch.float64)
        ref = y.norm(dim=-1).max()
        ref = ref if scale is None else torch.clamp(ref, min=float(scale))
        for xb, yb in zip(x, y):
            for h in stabilizer_elements(xb, rep_in, tol):
                worst = max(worst, float(relative_error(rep_out.act(h, yb) - yb, yb, scale=ref)))
    return worst


def measure(model: torch.nn.Module, kind: str, task, n_check: int = 6, noise_draws: int = 4) -> dict:
    """Float64 measurements of a trained model on ``task``.

    Returns ``loss_sym`` (mean over ``x_sym``; the noise model averaged over ``noise_draws`` draws),
    ``loss_generic``, ``floor`` and ``optimum`` (means over ``x_sym``), ``relaxed_violation`` and
    ``equivariance_error`` (max over all group elements and ``n_check`` symmetric plus ``n_check``
    generic inputs; the noise model with a frozen draw), ``output_symmetry_error`` on the symmetric
    inputs (relative to the typical output size on generic inputs).
    """
    m = copy.deepcopy(model).double().eval()  # float64 on the model's device (a GPU does float64 fast)
    dev = next(m.parameters()).device
    f = frozen(m, kind)
    x_sym, x_gen = task.x_sym.to(dev), task.x_generic.to(dev)
    with torch.no_grad():
        draws = noise_draws if kind == "noise" else 1
        loss_sym = sum(float(task.loss(m(x_sym), x_sym).mean()) for _ in range(draws)) / draws
        loss_gen = sum(float(task.loss(m(x_gen), x_gen).mean()) for _ in range(draws)) / draws
    xv = torch.cat([x_sym[:n_check], x_gen[:n_check]])
    with torch.no_grad():
        typical = float(f(x_gen[:n_check]).to(torch.float64).norm(dim=-1).mean())
    return {
        "equivariance_error": equivariance_violation(f, xv, task.rep_in, task.rep_out),
        "loss_generic": loss_gen,
        "loss_sym": loss_sym,
        "floor": float(task.floor.mean()),
        "optimum": float(task.optimum.mean()),
        "relaxed_violation": relaxed_equivariance_violation(f, xv, task.rep_in, task.rep_out),
        "output_symmetry_error": output_symmetry_error(f, x_sym[:n_check], task.rep_in, task.rep_out, scale=typical),
    }


def compare(task, seeds: Sequence[int] = (0, 1, 2), kinds: Sequence[str] = MODEL_KINDS,
            per_kind: dict | None = None, **train_kwargs):
    """Train and measure every ``kind`` for every seed. Returns ``(table, trained)``: a pandas table
    with one row per (kind, seed) and the :class:`TrainedModel` s keyed by ``(kind, seed)``.

    ``train_kwargs`` go to :func:`train_model`; ``per_kind`` (``kind -> dict``) overrides them for one
    kind of model."""
    import pandas as pd

    per_kind = per_kind or {}
    unknown = set(per_kind) - set(MODEL_KINDS)
    if unknown:
        raise ValueError(f"per_kind keys must be model kinds ({', '.join(MODEL_KINDS)}), got {sorted(unknown)}")
    rows, trained = [], {}
    for kind in kinds:
        for seed in seeds:
            t = train_model(task, kind, seed, **{**train_kwargs, **per_kind.get(kind, {})})
            trained[(kind, seed)] = t
            rows.append({"task": task.name, "model": kind, "seed": seed, **measure(t.model, kind, task),
                         "train_seconds": t.seconds})
    return pd.DataFrame(rows), trained
