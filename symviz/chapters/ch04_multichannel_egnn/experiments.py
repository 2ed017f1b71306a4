"""Chapter 04's experiments: train EGNN and MC-EGNN on charged N-body, the solar system and QM9.

Training runs in float32 without bf16 autocast (``amp=False``): positions are regressed to ~1e-3 and
the coordinate updates are products of differences, which bf16's 8-bit mantissa would blur.

Each ``train_*`` function builds a model with :mod:`symviz.nn.egnn`, trains it with
:func:`symviz.train.fit` and returns a :class:`RunResult` with the test error measured on held-out
data. The notebook calls them once per (channels, seed); tests call them on tiny sizes.
"""
from __future__ import annotations

import statistics
import time
import warnings
from dataclasses import dataclass, field

import torch

from symviz.train import TensorBatches, evaluate, fit, fused_adam, resolve_device
from symviz.data.nbody import prediction_horizon
from symviz.nn.egnn import MCEGNN, MCEGNNRegressor, count_parameters, nbody_inputs, nbody_mse, predict_nbody

__all__ = ["RunResult", "TensorBatches", "training_cost", "training_spikes", "train_nbody", "train_solar", "train_qm9", "solar_mse", "linear_baseline_mse",
           "step_time_ms", "step_times_ms", "make_train_step", "sliding_predictions", "builtin_update_error",
           "channel_points"]


@dataclass
class RunResult:
    """One trained model: ``test`` error (MSE, or MAE for QM9), ``history`` DataFrame, ``params``, ``seconds``."""

    model: torch.nn.Module
    channels: int
    seed: int
    test: float
    history: object
    params: int
    seconds: float
    extra: dict = field(default_factory=dict)


def _loader(tensors, batch_size, shuffle, seed, drop_last=False):
    tensors = tuple(tensors)
    drop_last = drop_last and int(tensors[0].shape[0]) >= batch_size      # never an empty epoch
    return TensorBatches(*tensors, batch_size=batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last)


def training_cost(channels: int, learner_update: bool = False) -> float:
    """A training's rough run time in relative units, so that :func:`symviz.train.parallel_runs` starts the longest
    first (its ``cost``; the results do not depend on the order). Measured in quick mode at one thread on an Intel
    Xeon (Ice Lake): N-body EGNN 4.0-4.1 s, MC-EGNN (C=2) 4.6-4.7 s, and 6.3 s on the edge-list path that a learner's
    coordinate update takes; the solar-system and QM9 trainings scale alike (C=2: 1.1-1.2x). Each channel beyond the
    first adds ~14%; the learner's path ~35% more.

        >>> training_cost(1), round(training_cost(2), 2), round(training_cost(2, learner_update=True), 2)
        (1.0, 1.14, 1.54)
    """
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise ValueError(f"training_cost: channels must be a positive integer, got {channels!r}")
    return (1.0 + 0.14 * (channels - 1)) * (1.35 if learner_update else 1.0)


def training_spikes(history, factor: float = 10.0) -> list[int]:
    """Epochs whose mean training loss exceeds ``factor`` times the best one before them.

    ``fit`` restores the weights of the best validation epoch, so a run that blew up in between can still
    report a fair test error: this makes such instabilities visible (the trainers below warn about them
    and keep the list in ``RunResult.extra["loss_spikes"]``).

    >>> import pandas as pd
    >>> training_spikes(pd.DataFrame({"epoch": [1, 2, 3, 4], "train_loss": [1.0, 0.1, 5.0, 0.09]}))
    [3]
    """
    loss = history["train_loss"]
    best_before = loss.cummin().shift(1)
    return [int(e) for e, bad in zip(history["epoch"], loss > factor * best_before) if bad]


def _result(model, channels, seed, test, history, params, seconds, desc, extra=None) -> RunResult:
    spikes = training_spikes(history)
    if spikes:
        warnings.warn(f"{desc}: the training loss jumped more than 10x above its best value at epoch(s) {spikes}; "
                      "the reported test error comes from the best validation epoch", RuntimeWarning, stacklevel=3)
    return RunResult(model, channels, seed, test, history, params, seconds, extra={**(extra or {}), "loss_spikes": spikes})


def _nbody_tensors(split):
    return split["loc"], split["vel"], split["charges"], split["target"]


def train_nbody(splits: dict, channels: int = 1, seed: int = 0, hidden: int = 64, n_layers: int = 4,
                epochs: int = 100, lr: float = 5e-4, batch_size: int = 100, weight_decay: float = 1e-12,
                device: str = "auto", patience: int | None = None, progress: bool = False,
                compile: bool = False, coord_update=None) -> RunResult:
    """Train an (MC-)EGNN on :func:`symviz.data.nbody.charged_splits` output; ``test`` is the test MSE.

    Defaults follow the EGNN reference setup for N-body (Satorras et al. 2021: hidden 64, 4 layers,
    Adam lr 5e-4, batch 100, weight decay 1e-12). ``compile=True`` trains through ``torch.compile``
    with an eager fallback (:class:`symviz.train.CompileOrEager`): worth it for long runs only.
    ``coord_update``: a coordinate-update function (the learner's, with the signature of
    :func:`symviz.nn.egnn.multichannel_coord_update`) used by every layer instead of the built-in one; the
    model then trains on the edge-list path (same function, same initial weights for the same seed).
    """
    torch.manual_seed(seed)
    model = MCEGNN(1, hidden, n_layers, channels, edge_nf=1, velocity=True, coord_update=coord_update)
    tr = _loader(_nbody_tensors(splits["train"]), batch_size, True, seed, drop_last=True)   # as main_nbody.py
    va = _loader(_nbody_tensors(splits["val"]), 500, False, seed)
    te = _loader(_nbody_tensors(splits["test"]), 500, False, seed)
    t0 = time.perf_counter()
    res = fit(model, nbody_mse, tr, va, epochs=epochs, optimizer=fused_adam(model, lr, weight_decay, device), seed=seed,
              device=device, amp=False, patience=patience, progress=progress, desc=f"N-body C={channels} seed={seed}",
              compile=compile)
    with torch.no_grad():   # (the edge-list path would otherwise build autograd graphs it never uses)
        test = evaluate(res.model, nbody_mse, te, device)
    return _result(res.model, channels, seed, test, res.history, count_parameters(model), time.perf_counter() - t0,
                   f"N-body C={channels} seed={seed}")


def linear_baseline_mse(split: dict) -> float:
    """MSE of the constant-velocity guess ``x + v * horizon`` on a :func:`symviz.data.nbody.charged_splits`
    split, with the horizon the split carries (:func:`symviz.data.nbody.prediction_horizon`:
    ``(frame_out - frame_in) * sample_every * dt``, 1.0 time unit in the benchmark)."""
    horizon = prediction_horizon(split)
    return float(((split["loc"] + split["vel"] * horizon - split["target"]) ** 2).mean())


def _solar_predict(model, loc, vel, mass):
    h = torch.cat([mass, vel.norm(dim=-1, keepdim=True)], -1)
    return model(h, loc, vel).x


def solar_mse(model, batch) -> torch.Tensor:
    """Position MSE (AU^2) on ``(loc, vel, mass, target)`` batches of :func:`symviz.data.solar.solar_dataset`."""
    loc, vel, mass, target = batch
    return ((_solar_predict(model, loc, vel, mass) - target) ** 2).mean()


def train_solar(train: dict, test: dict, channels: int = 1, seed: int = 0, hidden: int = 64,
                n_layers: int = 4, epochs: int = 100, lr: float = 1e-3, batch_size: int = 100,
                device: str = "auto", progress: bool = False, scheduler: str | None = None) -> RunResult:
    """Train an (MC-)EGNN on solar-system states (node features: log mass, |v|); ``test`` is the test MSE.

    The last 20% of ``train`` (by date) is the validation set used to pick the best epoch;
    ``scheduler="cosine"`` decays the learning rate to zero over ``epochs`` (:func:`symviz.train.fit`).
    """
    torch.manual_seed(seed)
    model = MCEGNN(2, hidden, n_layers, channels, edge_nf=0, velocity=True)
    keys = ("loc", "vel", "mass", "target")
    n = train["loc"].shape[0]
    cut = int(0.8 * n)
    tr = _loader([train[k][:cut] for k in keys], batch_size, True, seed)
    va = _loader([train[k][cut:] for k in keys], 1000, False, seed)
    te = _loader([test[k] for k in keys], 1000, False, seed)
    t0 = time.perf_counter()
    res = fit(model, solar_mse, tr, va, epochs=epochs, optimizer=fused_adam(model, lr, 0.0, device), seed=seed,
              device=device, amp=False, progress=progress, scheduler=scheduler,
              desc=f"solar C={channels} seed={seed}")
    test_mse = evaluate(res.model, solar_mse, te, device)
    return _result(res.model, channels, seed, test_mse, res.history, count_parameters(model), time.perf_counter() - t0,
                   f"solar C={channels} seed={seed}")


def train_qm9(splits: dict, channels: int = 1, seed: int = 0, hidden: int = 64, n_layers: int = 4,
              epochs: int = 50, lr: float = 1e-3, batch_size: int = 96, target_index: int = 0,
              device: str = "auto", progress: bool = False) -> RunResult:
    """Train an invariant (MC-)EGNN regressor on :func:`symviz.data.qm9.qm9_splits` output.

    The target is standardised with the training mean and std; ``test`` is the test MAE in the
    target's unit (as QM9 results are reported); the best epoch is the one with the lowest validation MSE.
    """
    tr_y = splits["train"]["y"][:, target_index]
    mu, sd = float(tr_y.mean()), float(tr_y.std())

    def tensors(s):
        return s["onehot"], s["pos"], s["mask"], (s["y"][:, target_index] - mu) / sd

    def trim(batch):   # atoms come first, padding last: drop the columns no molecule of the batch uses
        h, x, mask, y = batch
        n = int(mask.sum(1).max())
        return h[:, :n], x[:, :n], mask[:, :n], y

    def loss(model, batch):
        h, x, mask, y = trim(batch)
        return ((model(h, x, mask=mask).squeeze(-1) - y) ** 2).mean()

    def mae(model, batch):
        h, x, mask, y = trim(batch)
        return (model(h, x, mask=mask).squeeze(-1) - y).abs().mean() * sd

    torch.manual_seed(seed)
    model = MCEGNNRegressor(len(splits["train"]["onehot"][0, 0]), hidden, n_layers, channels)
    tr = _loader(tensors(splits["train"]), batch_size, True, seed)
    va = _loader(tensors(splits["val"]), 500, False, seed)
    te = _loader(tensors(splits["test"]), 500, False, seed)
    t0 = time.perf_counter()
    res = fit(model, loss, tr, va, epochs=epochs, optimizer=fused_adam(model, lr, 0.0, device), seed=seed,
              device=device, amp=False, progress=progress,
              scheduler="cosine", desc=f"QM9 C={channels} seed={seed}")
    test_mae = evaluate(res.model, mae, te, device)
    return _result(res.model, channels, seed, test_mae, res.history, count_parameters(model), time.perf_counter() - t0,
                   f"QM9 C={channels} seed={seed}", extra={"target_mean": mu, "target_std": sd})


def make_train_step(model: torch.nn.Module, batch_size: int = 100, n_nodes: int = 5, device: str = "cpu",
                    optimizer_step: bool = False, seed: int = 0):
    """A closure running one train step (forward + backward of the position MSE; + an Adam step if
    asked) on fixed random N-body-shaped inputs. ``model`` takes ``(h, x, v, edge_attr)`` with
    ``in_node_nf = 1`` and ``edge_nf = 1`` and returns :class:`symviz.nn.egnn.EGNNOutput`
    (:class:`~symviz.nn.egnn.MCEGNN`, the reference :class:`~symviz.nn.egnn.EGNN`, or either wrapped in
    :class:`symviz.train.CompileOrEager`)."""
    dev = resolve_device(device)
    model = model.to(dev)
    g = torch.Generator().manual_seed(seed)
    loc, vel = torch.randn(batch_size, n_nodes, 3, generator=g), torch.randn(batch_size, n_nodes, 3, generator=g)
    q = torch.randint(0, 2, (batch_size, n_nodes, 1), generator=g).float() * 2 - 1
    h, x, v, ea = (t.to(dev) for t in nbody_inputs(loc, vel, q))
    target = torch.randn(batch_size, n_nodes, 3, generator=g).to(dev)
    opt = torch.optim.Adam(model.parameters(), 1e-4) if optimizer_step else None

    def step():
        loss = ((model(h, x, v, ea).x - target) ** 2).mean()
        loss.backward()
        if opt is not None:
            opt.step()
        model.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize()
    return step


def step_times_ms(steps: dict, rounds: int = 5, per_round: int = 3, warmup: int = 2) -> dict:
    """Median wall time (ms) per call of each closure in ``steps`` (e.g. from :func:`make_train_step`),
    timed *interleaved*: every round runs each closure ``per_round`` times in turn, so that load from
    other processes or a CPU clocking down hits all of them alike and their ratios stay fair."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    times = {k: [] for k in steps}
    for _ in range(rounds):
        for k, step in steps.items():
            t0 = time.perf_counter()
            for _ in range(per_round):
                step()
            times[k].append((time.perf_counter() - t0) / per_round * 1000)
    return {k: statistics.median(v) for k, v in times.items()}


def step_time_ms(model: torch.nn.Module, batch_size: int = 100, n_nodes: int = 5, repeats: int = 5,
                 device: str = "cpu", optimizer_step: bool = False, seed: int = 0) -> float:
    """Median wall time (ms) of one train step of one model, after two warm-up steps (see
    :func:`make_train_step`; compare several models with :func:`step_times_ms`)."""
    step = make_train_step(model, batch_size, n_nodes, device, optimizer_step, seed)
    return step_times_ms({"model": step}, rounds=repeats, per_round=1)["model"]


@torch.no_grad()
def sliding_predictions(model: MCEGNN, positions, velocities, mass, lag: int) -> torch.Tensor:
    """Predicted trajectory of a :func:`train_solar` model: frame ``t`` predicted from the *true* state at
    frame ``t - lag``, with the node features the model was trained on (log-mass, speed).

    Args:
        positions: ``(T, n, 3)`` true frames (AU); velocities: ``(T, n, 3)`` in the model's unit, AU per
            horizon (as :func:`symviz.data.solar.solar_dataset` gives them); mass: ``(n, 1)``, the ``mass``
            feature of :func:`~symviz.data.solar.solar_dataset`; lag: the model's horizon in frames.
    Returns:
        ``(T - lag, n, 3)`` predictions for frames ``lag .. T-1``.
    """
    pos = torch.as_tensor(positions, dtype=torch.float32)
    vel = torch.as_tensor(velocities, dtype=torch.float32)
    mass = torch.as_tensor(mass, dtype=torch.float32)
    if pos.ndim != 3 or pos.shape[-1] != 3 or pos.shape != vel.shape or not 0 < lag < pos.shape[0]:
        raise ValueError(f"positions and velocities must be (T, n, 3) with T > lag={lag}, got {tuple(pos.shape)}, {tuple(vel.shape)}")
    if mass.shape != (pos.shape[1], 1):
        raise ValueError(f"mass must have shape ({pos.shape[1]}, 1), got {tuple(mass.shape)}")
    model.eval()
    T = pos.shape[0] - lag
    return _solar_predict(model, pos[:T], vel[:T], mass.expand(T, -1, -1))


@torch.no_grad()
def builtin_update_error(model: MCEGNN, split: dict, n: int = 100) -> float:
    """How far an N-body :class:`~symviz.nn.egnn.MCEGNN` built with ``coord_update=`` (e.g. the learner's update)
    is from the same weights run with the built-in update (the default fast path): the relative difference
    ``||f_plugged - f_builtin|| / ||f_builtin||`` of the predicted positions on the first ``n`` systems of ``split``
    (a :func:`symviz.data.nbody.charged_splits` split), in the model's dtype."""
    if not isinstance(model, MCEGNN):
        raise TypeError(f"model must be a symviz.nn.egnn.MCEGNN, got {type(model).__name__}")
    dev = model.embedding.weight.device
    twin = MCEGNN(model.in_node_nf, model.hidden, model.n_layers, model.channels, model.edge_nf, model.velocity,
                  model.update_coords).to(model.embedding.weight)
    twin.load_state_dict(model.state_dict())
    was = model.training
    model.eval()
    twin.eval()
    loc, vel, charges = (split[k][:n].to(dev) for k in ("loc", "vel", "charges"))
    got, want = predict_nbody(model, loc, vel, charges), predict_nbody(twin, loc, vel, charges)
    model.train(was)
    return float((got - want).norm() / want.norm().clamp(min=1e-12))


@torch.no_grad()
def channel_points(model: MCEGNN, loc: torch.Tensor, vel: torch.Tensor, charges: torch.Tensor) -> torch.Tensor:
    """The ``C`` output position channels ``(B, n, 3, C)`` of an N-body (MC-)EGNN for ``loc, vel (B,n,3)`` and
    ``charges (B,n,1)``: every channel is a point; the prediction is their mean."""
    was = model.training
    model.eval()
    out = model(*nbody_inputs(loc, vel, charges)).x_channels
    model.train(was)
    return out
