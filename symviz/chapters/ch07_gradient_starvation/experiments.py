"""Models and measurement tools for chapter 07 (gradient starvation and spectral decoupling).

Pezeshki, Kaba, Bengio, Courville, Precup, Lajoie, "Gradient Starvation: A Learning Proclivity in
Neural Networks", NeurIPS 2021 (arXiv 2011.09468).

* :class:`MLP` -- the ReLU MLPs of the paper (2-layer for two moons, 3-layer for Colored MNIST).
* :func:`train_full_batch` -- full-batch training with cross-entropy or spectral decoupling, with
  snapshots of the decision function over training (for the animations).
* :func:`train_colored_recipe` -- the paper's Colored-MNIST schedule (Adam; plain cross-entropy,
  then the whole loss multiplied by ``c``), with switches that isolate why it works.
* :func:`decision_grid`, :func:`boundary_points`, :func:`decision_margin` -- the decision boundary
  of a 2-D classifier and the smallest distance from a training point to it.
* :func:`linear_feature_dynamics`, :func:`feature_responses` -- the linearised view: a model that
  is linear in fixed features ``phi`` (the NTK regime), its feature responses ``z = S V^T theta``
  over gradient descent, with cross-entropy or spectral decoupling; :func:`coupling_toy` runs it on
  the two-feature task of the notebook (cheap enough for a slider).
* :func:`ntk_features` -- the empirical NTK features (parameter Jacobian) of a network.
* :class:`GroupAveraged`, :func:`train_swap_invariant` -- the other cure for a spurious colour when its
  symmetry is known: a model made invariant to the colour swap, by group averaging (exact) or by
  augmentation (approximate); :func:`swap_sensitivity` measures how much a model's prediction moves
  when the colours are swapped.
* :class:`ColourSplitInput` -- a fixed batch of coloured images arranged so that an MLP's first layer reads
  only the channel holding each picture (the same function, fewer multiply-adds; used by
  :func:`train_colored_branches`).

Labels are {0, 1} for the networks (``binary_cross_entropy_with_logits``) and the margins are
``y_pm * logit`` with ``y_pm = 2 y - 1``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from symviz.losses import spectral_decoupling_loss
from symviz.train import fused_adam, smoke_steps

__all__ = ["MLP", "TrainResult", "train_full_batch", "train_colored_recipe", "train_colored_branches", "BRANCHES", "decision_grid", "boundary_points",
           "decision_margin", "linear_feature_dynamics", "coupling_toy", "feature_responses", "ntk_features", "binary_accuracy",
           "GroupAveraged", "train_swap_invariant", "swap_sensitivity", "INVARIANCE_METHODS", "ColourSplitInput"]


class MLP(nn.Module):
    """ReLU MLP ``in_dim -> hidden (x depth) -> out_dim``.

    ``depth=1`` is the paper's 2-layer network for two moons (500 hidden units, PyTorch default
    init); ``depth=2`` with ``init="xavier"`` is its Colored-MNIST network (300 hidden units,
    Xavier-uniform weights and zero biases). Input ``(batch, *)`` is flattened; output
    ``(batch,)`` when ``out_dim == 1`` else ``(batch, out_dim)``.

        >>> MLP(2, 8)(torch.zeros(5, 2)).shape
        torch.Size([5])
    """

    def __init__(self, in_dim: int, hidden: int = 500, out_dim: int = 1, depth: int = 1, init: str = "default"):
        super().__init__()
        for name, v in (("in_dim", in_dim), ("hidden", hidden), ("out_dim", out_dim), ("depth", depth)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if init not in ("default", "xavier"):
            raise ValueError(f"init must be 'default' or 'xavier', got {init!r}")
        dims = [in_dim] + [hidden] * depth + [out_dim]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            lin = nn.Linear(a, b)
            if init == "xavier":
                nn.init.xavier_uniform_(lin.weight)
                nn.init.zeros_(lin.bias)
            layers.append(lin)
            if i < len(dims) - 2:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)
        self.in_dim, self.out_dim = in_dim, out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], -1)
        if x.shape[1] != self.in_dim:
            raise ValueError(f"MLP expected inputs with {self.in_dim} features, got {x.shape[1]}")
        out = self.net(x)
        return out[:, 0] if self.out_dim == 1 else out


def _check_binary(x: torch.Tensor, y: torch.Tensor) -> None:
    if not torch.is_tensor(x) or not torch.is_tensor(y):
        raise TypeError("x and y must be torch tensors")
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"y must have shape ({len(x)},) to match x, got {tuple(y.shape)}")
    if not bool(((y == 0) | (y == 1)).all()):
        raise ValueError("y must hold binary labels in {0, 1}")


def binary_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of ``sign(logit) == 2y - 1`` (``x: (N, ...)``, ``y: (N,)`` in {0, 1})."""
    with torch.no_grad():
        return float(((model(x) > 0).to(y.dtype) == y).float().mean())


@dataclass
class TrainResult:
    """What :func:`train_full_batch` / :func:`train_colored_recipe` return."""

    model: nn.Module
    history: "object"                              # pandas DataFrame: step, loss, train_acc, (test_acc)
    snapshots: list = field(default_factory=list)  # [(step, (G, G) logits on the grid)]
    seconds: float = 0.0


def train_full_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, lam: float = 0.0, steps: int = 1000,
                     lr: float = 1e-2, momentum: float = 0.9, optimizer: str = "sgd", seed: int | None = 0,
                     snapshot_every: int = 0, grid: torch.Tensor | None = None, log_every: int = 50,
                     loss_fn=None, forward=None) -> TrainResult:
    """Full-batch training of a binary classifier with cross-entropy plus spectral decoupling.

    Minimises ``loss_fn(f(x), y, lam)``, by default :func:`symviz.losses.spectral_decoupling_loss`:
    ``mean softplus(-y_pm * f(x)) + (lam / 2) * mean f(x)^2`` (``lam = 0``: plain cross-entropy), the
    loss of the paper's two-moons experiment (SGD lr 1e-2, momentum 0.9, 1,000 full-batch epochs).
    Chapter 07 passes the learner's loss as ``loss_fn``. A plain loop rather than :func:`symviz.train.fit` because the
    animations need the decision function at intermediate steps of one optimizer run.

    Args:
        x: ``(N, d)`` inputs; y: ``(N,)`` labels in {0, 1}.
        snapshot_every: when > 0, evaluate the model on ``grid`` (``(G*G, d)``) every that many
            steps (and at the end); the snapshots are ``(step, (G*G,) logits)``.
        forward: ``model -> logits`` of the training inputs computed another way (the same function, e.g.
            through a :class:`ColourSplitInput`); ``y`` in the order of its outputs. Default: ``model(x)``.
    """
    import time

    import pandas as pd

    _check_binary(x, y)
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if snapshot_every and grid is None:
        raise ValueError("snapshot_every needs a grid (G*G, d) to evaluate the model on")
    if loss_fn is not None and not callable(loss_fn):
        raise TypeError(f"loss_fn must be a function (logits, y, lam) -> loss, got {type(loss_fn).__name__}")
    loss_fn = loss_fn or spectral_decoupling_loss
    if forward is not None and not callable(forward):
        raise TypeError(f"forward must be a function model -> logits, got {type(forward).__name__}")
    if forward is None:
        def forward(m):
            return m(x)
    if smoke_steps() is not None:  # `symviz run --smoke`: a few steps only
        steps = min(steps, smoke_steps())
    if seed is not None:
        torch.manual_seed(seed)
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    elif optimizer == "adam":
        opt = fused_adam(model, lr, device=None)
    else:
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
    y = y.float()
    rows, snaps = [], []
    t0 = time.perf_counter()
    for step in range(steps + 1):
        if snapshot_every and (step % snapshot_every == 0 or step == steps):
            with torch.no_grad():
                snaps.append((step, model(grid).detach().clone()))
        logits = forward(model)
        ce = F.binary_cross_entropy_with_logits(logits, y)
        if step % log_every == 0 or step == steps:
            rows.append({"step": step, "ce": float(ce.detach()), "train_acc": float(((logits.detach() > 0).float() == y).float().mean())})
        if step == steps:
            break
        loss = loss_fn(logits, y, lam)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return TrainResult(model=model, history=pd.DataFrame(rows), snapshots=snaps, seconds=time.perf_counter() - t0)


def train_colored_recipe(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor | None = None,
                         y_test: torch.Tensor | None = None, *, method: str = "sd", steps: int = 2001, lr: float = 1e-4,
                         anneal: int = 450, coef: float = 2e-5, sd_weight: float = 1.0, l2: float = 0.0,
                         eps: float = 1e-8, reset_optimizer: bool = False, log_every: int = 50) -> TrainResult:
    """The Colored-MNIST schedule of the paper's code (``Figure_4_and_table_1``), full batch, Adam.

    ``method="erm"``: loss ``nll + l2 * ||w||^2`` for ``steps`` steps (the paper's ERM: lr 1e-4,
    l2 1e-3, 1,001 steps). ``method="sd"``: for ``step < anneal`` the loss is
    ``nll + coef * sd_weight * mean(logit^2)``, from then on ``coef * (nll + sd_weight * mean(logit^2))``
    (the paper: lr 1e-4, anneal 450, coef 2e-5, 2,001 steps, hidden 300). ``sd_weight=0`` keeps the
    same schedule without the penalty (a control: only the rescaling remains).

    Why the recipe is subtle: Adam's step is ``lr * m / (sqrt(v) + eps)``; multiplying the loss by
    ``coef`` multiplies the new gradients by 2e-5 while ``v`` still remembers the unscaled gradients
    of the first ``anneal`` steps (it forgets at rate ``beta2 = 0.999``, i.e. over thousands of
    steps). The steps after the switch are therefore tiny and rescaled per parameter by the old
    gradient sizes. ``reset_optimizer=True`` starts a fresh Adam at the switch (then, up to ``eps``,
    Adam does not see ``coef`` at all). A plain loop: the Adam state must survive the loss switch.

    Args:
        x: ``(N, ...)`` inputs; y: ``(N,)`` in {0, 1}; x_test, y_test: optional, logged.
    """
    import time

    import pandas as pd

    _check_binary(x, y)
    if method not in ("erm", "sd"):
        raise ValueError(f"method must be 'erm' or 'sd', got {method!r}")
    for name, v in (("coef", coef), ("lr", lr), ("eps", eps)):
        if not isinstance(v, (int, float)) or not v > 0:
            raise ValueError(f"{name} must be a positive number, got {v!r}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if smoke_steps() is not None:  # `symviz run --smoke`: a few steps on each side of the switch
        anneal, steps = min(anneal, smoke_steps()), min(anneal, smoke_steps()) + smoke_steps()
    y = y.float()
    opt = fused_adam(model, lr, device=None, eps=eps)
    rows = []
    t0 = time.perf_counter()

    def log(step, logits, nll):
        row = {"step": step, "nll": float(nll), "train_acc": float(((logits > 0).float() == y).float().mean()),
               "mean_abs_logit": float(logits.abs().mean())}
        if x_test is not None:
            row["test_acc"] = binary_accuracy(model, x_test, y_test.float())
        rows.append(row)

    for step in range(steps):
        logits = model(x)
        nll = F.binary_cross_entropy_with_logits(logits, y)
        if method == "erm":
            loss = nll + l2 * sum((p ** 2).sum() for p in model.parameters()) if l2 > 0 else nll
        else:
            sd = sd_weight * (logits ** 2).mean()
            if step < anneal:
                loss = nll + coef * sd
            else:
                if step == anneal and reset_optimizer:
                    opt = fused_adam(model, lr, device=None, eps=eps)
                loss = coef * (nll + sd)
        if step % log_every == 0:
            log(step, logits.detach(), nll.detach())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        logits = model(x)
        log(steps, logits, F.binary_cross_entropy_with_logits(logits, y))
    return TrainResult(model=model, history=pd.DataFrame(rows), seconds=time.perf_counter() - t0)


BRANCHES = {
    "erm": "keep minimising the plain cross-entropy (no switch)",
    "sd": "the paper's switch: loss c * (nll + mean(logit^2)), same Adam",
    "rescaled_ce": "control: loss c * nll, same Adam (only the rescaling, no penalty)",
    "sd_fresh_adam": "control: loss c * (nll + mean(logit^2)) with a fresh Adam at the switch",
    "sd_gd": "control: plain gradient descent (lr gd_lr) on nll + mean(logit^2) from the switch",
}


class ColourSplitInput:
    """A fixed batch of coloured images, ready for an :class:`MLP`'s first layer to read only the channel that holds
    each picture: ``split(model)`` is ``model(x[split.order])``, the same function to float rounding.

    In a coloured image (:func:`symviz.data.starvation.colored_images`) the picture sits in one channel and the
    other is zero, so half of the first layer's input is known zeros: ``W x_n = W_c img_n`` with ``W_c`` the
    block of ``W`` that reads channel ``c``. Grouping the images by their channel (``order``) turns the first
    layer's two largest matrix products per training step (forward, and the weight gradient) into two half-size
    products each. Only the arithmetic changes; the model is the plain :class:`MLP`, with the same weights and
    gradients (up to the order of float additions) for every image of ``x``.

    Labels and everything else per image must be taken in ``order`` too (``y[split.order]``); means over the batch
    (losses, accuracies) do not depend on it. :meth:`applies` says whether a batch qualifies (an image with
    pictures in both channels does not); callers then fall back to ``model(x)``.

        >>> from symviz.data.starvation import colored_images
        >>> env = colored_images(torch.rand(6, 28, 28), torch.arange(6), 0.5, size=7)
        >>> m, split = MLP(98, 4, depth=2), ColourSplitInput(env.x)
        >>> bool(torch.allclose(split(m), m(env.x)[split.order], atol=1e-6))
        True
    """

    def __init__(self, x: torch.Tensor):
        if not self.applies(x):
            raise ValueError("ColourSplitInput needs coloured images (N, 2, H, W) with each picture in one channel "
                             f"and the other channel zero, got {tuple(x.shape) if torch.is_tensor(x) else type(x)}")
        x = x.detach()
        in_second = x[:, 1].flatten(1).ne(0).any(1)                      # (N,) the picture sits in channel 1
        self.order = torch.cat([(~in_second).nonzero()[:, 0], in_second.nonzero()[:, 0]])
        n_first = int((~in_second).sum())
        pics = x[self.order]
        self.first = pics[:n_first, 0].flatten(1).contiguous()           # (n0, H*W)
        self.second = pics[n_first:, 1].flatten(1).contiguous()          # (n1, H*W)
        self.pixels = self.first.shape[1]

    @classmethod
    def for_model(cls, model: nn.Module, x: torch.Tensor) -> "ColourSplitInput | None":
        """The split of ``x`` when ``model`` is an :class:`MLP` reading ``x``'s images and :meth:`applies` holds,
        else None (the caller then runs ``model(x)``)."""
        if isinstance(model, MLP) and torch.is_tensor(x) and model.in_dim == x[0].numel() and cls.applies(x):
            return cls(x)
        return None

    @staticmethod
    def applies(x) -> bool:
        """True when ``x`` is a batch of ``(N, 2, H, W)`` images with at most one non-zero channel per image."""
        if not torch.is_tensor(x) or x.ndim != 4 or x.shape[1] != 2 or x.shape[0] == 0:
            return False
        used = x.detach().flatten(2).ne(0).any(2)                         # (N, 2)
        return bool((used.sum(1) <= 1).all())

    def __call__(self, model: nn.Module) -> torch.Tensor:
        """``model(x[order])`` for an :class:`MLP` built for ``2 H W`` inputs."""
        if not isinstance(model, MLP) or model.in_dim != 2 * self.pixels:
            raise TypeError(f"ColourSplitInput runs an MLP with {2 * self.pixels} inputs, got {type(model).__name__}"
                            + (f" with {model.in_dim}" if isinstance(model, MLP) else ""))
        layers = list(model.net)
        first, w, P = layers[0], layers[0].weight, self.pixels
        h = torch.cat([F.linear(self.first, w[:, :P], first.bias), F.linear(self.second, w[:, P:], first.bias)])
        for layer in layers[1:]:
            h = layer(h)
        return h[:, 0] if model.out_dim == 1 else h


def train_colored_branches(make_model, x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor, *,
                           branches: Sequence[str] = ("erm", "sd"), steps: int = 2001, anneal: int = 450, lr: float = 1e-4,
                           coef: float = 2e-5, eps: float = 1e-8, gd_lr: float = 1e-3, log_every: int = 50,
                           seed: int = 0, sd_loss=None) -> dict:
    """Train once up to the switch, then continue each branch from the same weights and Adam state.

    Phase 1 (``step < anneal``) minimises ``nll + coef * mean(logit^2)`` with Adam (as the paper's
    spectral decoupling run does). Each branch in ``branches`` (keys of :data:`BRANCHES`) then
    continues from a copy of the model *and* of the optimizer state up to ``steps``: ``"erm"`` keeps
    the plain cross-entropy, ``"sd"`` is the paper's recipe, ``"rescaled_ce"`` and ``"sd_fresh_adam"``
    are the controls that isolate what the recipe does. Sharing phase 1 makes the comparison exact
    and saves compute. A plain loop (not :func:`symviz.train.fit`): the optimizer state is copied.

    The paper's code writes its loss as ``nll + mean(logit^2)``: the spectral decoupling loss
    ``sd_loss(logits, y, lam)`` (default :func:`symviz.losses.spectral_decoupling_loss`,
    ``nll + (lam / 2) mean(logit^2)``) with ``lam = 2``; phase 1 is ``sd_loss`` with ``lam = 2 coef``.
    Chapter 07 passes the learner's loss as ``sd_loss``. When the model is an :class:`MLP` and ``x`` coloured
    images (one channel zero per image), the training forward passes go through :class:`ColourSplitInput`: the
    same function, fewer multiply-adds (the training images grouped by channel; the logged means do not depend
    on the order).

    Args:
        make_model: ``() -> nn.Module`` (called once, after seeding with ``seed``).
        x, x_test: ``(N, ...)`` inputs; y, y_test: ``(N,)`` in {0, 1}.
    Returns:
        ``{branch: TrainResult}``; every history starts at step 0 (phase 1 is shared) and logs
        ``step, nll, train_acc, test_acc, mean_abs_logit, step_size`` (mean ``|delta theta|`` of that step).
    """
    import copy
    import time

    import pandas as pd

    _check_binary(x, y)
    _check_binary(x_test, y_test)
    unknown = [b for b in branches if b not in BRANCHES]
    if unknown or not branches:
        raise ValueError(f"branches must be a non-empty list of {sorted(BRANCHES)}, got {list(branches)!r}")
    if not (isinstance(anneal, int) and isinstance(steps, int) and 0 <= anneal < steps):
        raise ValueError(f"need integers 0 <= anneal < steps, got anneal={anneal!r}, steps={steps!r}")
    for name, v in (("coef", coef), ("lr", lr), ("eps", eps), ("gd_lr", gd_lr)):
        if not isinstance(v, (int, float)) or not v > 0:
            raise ValueError(f"{name} must be a positive number, got {v!r}")
    if sd_loss is not None and not callable(sd_loss):
        raise TypeError(f"sd_loss must be a function (logits, y, lam) -> loss, got {type(sd_loss).__name__}")
    sd = sd_loss or spectral_decoupling_loss
    if smoke_steps() is not None:  # `symviz run --smoke`: a few steps on each side of the switch
        anneal = min(anneal, smoke_steps())
        steps = anneal + smoke_steps()
    y, y_test = y.float(), y_test.float()
    torch.manual_seed(seed)
    model = make_model()
    opt = fused_adam(model, lr, device=None, eps=eps)
    # coloured images into an MLP: the first layer reads only the channel holding each picture (the same function,
    # about 40% fewer multiply-adds per step at the chapter's sizes); the images, and so the labels, are taken grouped by channel
    split = ColourSplitInput.for_model(model, x)
    if split is not None:
        y, forward = y[split.order], split
    else:
        def forward(m):
            return m(x)

    def row(m, step, logits, nll):
        return {"step": step, "nll": float(nll), "train_acc": float(((logits > 0).float() == y).float().mean()),
                "test_acc": binary_accuracy(m, x_test, y_test), "mean_abs_logit": float(logits.abs().mean())}

    def flat(m):
        return torch.cat([p.detach().reshape(-1) for p in m.parameters()])

    def run(m, o, start, stop, loss_of, rows):
        for step in range(start, stop):
            logits = forward(m)
            nll = F.binary_cross_entropy_with_logits(logits, y)
            logged = step % log_every == 0
            if logged:
                rows.append(row(m, step, logits.detach(), nll.detach()))
                before = flat(m)
            loss = loss_of(nll, logits)
            o.zero_grad(set_to_none=True)
            loss.backward()
            o.step()
            if logged:   # the size of this step: how far the optimizer actually moves the weights
                rows[-1]["step_size"] = float((flat(m) - before).abs().mean())

    t0 = time.perf_counter()
    shared: list = []
    run(model, opt, 0, anneal, lambda nll, z: sd(z, y, 2 * coef), shared)
    t_shared = time.perf_counter() - t0
    out = {}
    for b in branches:
        t1 = time.perf_counter()
        m = copy.deepcopy(model)
        if b == "sd_gd":
            o = torch.optim.SGD(m.parameters(), lr=gd_lr)
        else:
            o = fused_adam(m, lr, device=None, eps=eps)
        if b not in ("sd_fresh_adam", "sd_gd"):
            o.load_state_dict(copy.deepcopy(opt.state_dict()))
        loss_of = {"erm": lambda nll, z: nll,
                   "sd": lambda nll, z: coef * sd(z, y, 2.0),            # c * (nll + mean(logit^2))
                   "rescaled_ce": lambda nll, z: coef * nll,
                   "sd_fresh_adam": lambda nll, z: coef * sd(z, y, 2.0),
                   "sd_gd": lambda nll, z: sd(z, y, 2.0)}[b]
        rows = list(shared)
        run(m, o, anneal, steps, loss_of, rows)
        with torch.no_grad():
            logits = forward(m)
            rows.append(row(m, steps, logits, F.binary_cross_entropy_with_logits(logits, y)))
        out[b] = TrainResult(model=m, history=pd.DataFrame(rows), seconds=t_shared + time.perf_counter() - t1)
    return out


def decision_grid(model: nn.Module, lim: float = 2.0, n: int = 100) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Evaluate a 2-D classifier on an ``n x n`` grid over ``[-lim, lim]^2``.

    Returns ``(xx, yy, logits)``, each ``(n, n)``; ``xx[i, j]`` is the first coordinate.
    """
    if not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be an integer >= 2, got {n!r}")
    if not lim > 0:
        raise ValueError(f"lim must be positive, got {lim!r}")
    t = torch.linspace(-lim, lim, n)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    pts = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)
    # in chunks of 2,048 points: their hidden activations (4 MB through 500 units) stay in the CPU's cache, where
    # 16,384-point chunks (32 MB) ran 5-10x slower and the whole 400 x 400 grid at once would need ~0.6 GB
    with torch.no_grad():
        z = torch.cat([model(c) for c in pts.split(2048)]).reshape(n, n)
    return xx, yy, z


def boundary_points(xx: torch.Tensor, yy: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Points ``(K, 2)`` on the zero level set of ``z`` on a grid, by linear interpolation on grid edges.

        >>> t = torch.linspace(-1, 1, 5); yy, xx = torch.meshgrid(t, t, indexing="ij")
        >>> p = boundary_points(xx, yy, xx - 0.25)
        >>> bool(torch.allclose(p[:, 0], torch.full((len(p),), 0.25)))
        True
    """
    if not (xx.shape == yy.shape == z.shape) or z.ndim != 2:
        raise ValueError(f"xx, yy, z must be (n, n) grids of the same shape, got {xx.shape}, {yy.shape}, {z.shape}")
    pts = []
    for axis in (0, 1):
        a = [slice(None), slice(None)]
        b = [slice(None), slice(None)]
        a[axis], b[axis] = slice(None, -1), slice(1, None)
        za, zb = z[tuple(a)], z[tuple(b)]
        cross = (za * zb < 0) | ((za == 0) & (zb != 0))
        t = za[cross] / (za[cross] - zb[cross])
        px = xx[tuple(a)][cross] + t * (xx[tuple(b)][cross] - xx[tuple(a)][cross])
        py = yy[tuple(a)][cross] + t * (yy[tuple(b)][cross] - yy[tuple(a)][cross])
        pts.append(torch.stack([px, py], 1))
    return torch.cat(pts)


def decision_margin(model: nn.Module, x: torch.Tensor, y: torch.Tensor, lim: float = 2.0, n: int = 400) -> float:
    """Smallest Euclidean distance from a correctly classified training point to the decision boundary.

    The boundary ``{f = 0}`` is located on an ``n x n`` grid over ``[-lim, lim]^2`` (resolution
    ``2 lim / (n - 1)``, linear interpolation in between). Returns ``0.0`` when a training point is
    misclassified (it sits on the wrong side: no positive margin) and ``inf`` with no boundary.

    Args:
        x: ``(N, 2)``; y: ``(N,)`` in {0, 1}.
    """
    _check_binary(x, y)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"decision_margin works on 2-D inputs x of shape (N, 2), got {tuple(x.shape)}")
    with torch.no_grad():
        pred = (model(x) > 0).to(y.dtype)
    if bool((pred != y).any()):
        return 0.0
    pts = boundary_points(*decision_grid(model, lim, n))
    if len(pts) == 0:
        return math.inf
    return float(torch.cdist(x.float(), pts.float()).min())


def feature_responses(yphi: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Feature responses ``z = S V^T theta`` of a model linear in features (paper, Sec. 3).

    With ``diag(y_pm) Phi = U S V^T`` (thin SVD), the margins are ``y_pm * (Phi theta) = U z``: the
    ``j``-th feature (singular direction) has strength ``s_j`` and response ``z_j``.

    Args:
        yphi: ``(N, P)`` features multiplied by the +-1 labels; theta: ``(P,)`` or ``(T, P)``.
    Returns:
        ``(k,)`` or ``(T, k)`` with ``k = min(N, P)``.
    """
    _, s, vh = torch.linalg.svd(yphi, full_matrices=False)
    return (theta @ vh.T) * s


def linear_feature_dynamics(yphi: torch.Tensor, *, lam: float = 0.0, weight_decay: float = 0.0, lr: float = 0.1,
                            steps: int = 1000, record_every: int = 10) -> dict:
    """Gradient descent on a model linear in fixed features (the NTK regime), from ``theta = 0``.

    Minimises ``L(theta) = mean_i softplus(-m_i) + (lam / 2) mean_i m_i^2 + (weight_decay / 2) ||theta||^2``
    with margins ``m = yphi @ theta`` (``m_i = y_i f(x_i)``, so ``m_i^2 = f(x_i)^2``: the ``lam`` term
    is spectral decoupling). In feature responses ``z = S V^T theta`` gradient flow reads
    ``dz/dt = -S^2 dL/dz``: with cross-entropy alone the growth of one response lowers the
    gradient ``sigma(-m)`` that every other feature sees (coupling, "starvation"); the spectral
    decoupling term adds ``-lam S^2 z`` per feature, and its fixed point does not depend on ``S``.

    Args:
        yphi: ``(N, P)`` label-signed features.
    Returns:
        dict with ``steps (T,)``, ``theta (T, P)``, ``z (T, k)`` feature responses,
        ``strengths (k,)`` singular values, ``margins (T, N)``.
    """
    if not torch.is_tensor(yphi) or yphi.ndim != 2:
        raise ValueError(f"yphi must be a (N, P) tensor, got {getattr(yphi, 'shape', type(yphi))}")
    for name, v in (("lam", lam), ("weight_decay", weight_decay)):
        if not isinstance(v, (int, float)) or v < 0 or not math.isfinite(v):
            raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    yphi = yphi.double()
    n = yphi.shape[0]
    # The loop runs in NumPy: thousands of steps of a (N, P) product with P = 2 cost a few microseconds each there,
    # several times less than torch's per-operation overhead (the sliders re-run it). Same float64 arithmetic.
    a = yphi.detach().cpu().numpy()
    a_t = np.ascontiguousarray(a.T)
    theta = np.zeros(a.shape[1])
    rec_t, rec = [], []
    for step in range(steps + 1):
        if step % record_every == 0 or step == steps:
            rec_t.append(step)
            rec.append(theta.copy())
        if step == steps:
            break
        m = a @ theta
        # d/dm [softplus(-m)] = -sigmoid(-m) = -(1 - tanh(m / 2)) / 2 (no overflow); d/dm [(lam/2) m^2] = lam m
        grad_m = (lam * m - 0.5 * (1.0 - np.tanh(0.5 * m))) / n
        theta = theta - lr * (a_t @ grad_m + weight_decay * theta)
    thetas = torch.from_numpy(np.stack(rec))
    _, s, _ = torch.linalg.svd(yphi, full_matrices=False)
    return {"steps": torch.tensor(rec_t), "theta": thetas, "z": feature_responses(yphi, thetas),
            "strengths": s, "margins": thetas @ yphi.T}


def coupling_toy(s1: float, *, lam: float = 0.0, weight_decay: float = 0.0, s2: float = 1.0, n: int = 100,
                 only: tuple[float, float] = (0.3, 0.1), lr: float = 0.02, steps: int = 6000,
                 record_every: int = 60) -> dict:
    """The two-feature coupling toy of chapter 07: a linear model on two predictive features of strengths
    ``(s1, s2)`` (:func:`symviz.data.starvation.two_feature_task`; a fraction ``only[0]`` of the examples
    carries only feature 1, ``only[1]`` only feature 2), trained from 0 by :func:`linear_feature_dynamics`.

    Returns ``{"steps": (T,), "w": (T, 2)}`` with ``w_j = s_j theta_j``, the response to feature ``j`` in its own
    units. Under cross-entropy ``w2`` falls as ``s1`` grows (starvation); with spectral decoupling it does not.

        >>> out = coupling_toy(2.0, lam=0.1, steps=10, record_every=5)
        >>> out["w"].shape
        torch.Size([3, 2])
    """
    from symviz.data.starvation import two_feature_task

    if not (isinstance(s1, (int, float)) and s1 > 0 and isinstance(s2, (int, float)) and s2 > 0):
        raise ValueError(f"s1 and s2 (the feature strengths) must be positive numbers, got {s1!r}, {s2!r}")
    yphi, _ = two_feature_task(n, strengths=(float(s1), float(s2)), only=only)
    out = linear_feature_dynamics(yphi, lam=lam, weight_decay=weight_decay, lr=lr, steps=steps,
                                  record_every=record_every)
    return {"steps": out["steps"], "w": out["theta"] * torch.tensor([float(s1), float(s2)], dtype=torch.float64)}


def ntk_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Empirical NTK features: the Jacobian ``(N, P)`` of the scalar output w.r.t. all parameters.

    Around the current weights ``w0`` the network is ``f(x; w) ~ f(x; w0) + J(x) (w - w0)``: a linear
    model in the features ``J(x)``; ``J J^T`` is the empirical neural tangent kernel.
    """
    params = {k: v.detach() for k, v in model.named_parameters()}

    def f(p, xi):
        return torch.func.functional_call(model, p, (xi[None],))[0]

    jac = torch.func.vmap(torch.func.jacrev(f), in_dims=(None, 0))(params, x)
    return torch.cat([j.reshape(len(x), -1) for j in jac.values()], 1)


class GroupAveraged(nn.Module):
    """The Reynolds operator applied to a model: ``f_bar(x) = 1/|G| sum_{g in G} f(g x)``.

    ``group`` lists the group's elements as functions on a batch (the identity included, e.g.
    ``[lambda x: x, swap_colors]`` for ``{id, swap}``). When ``group`` is closed under composition,
    ``f_bar(h x) = 1/|G| sum_g f(g h x) = f_bar(x)`` for every ``h`` in ``G`` (``g -> g h`` only reorders the
    sum): the averaged model is exactly invariant, whatever ``model`` is, and an invariant ``model`` is left
    unchanged. All ``|G|`` copies of the batch go through ``model`` in one call. Input ``(N, ...)``, output
    ``model``'s output for ``N`` inputs.

        >>> from symviz.data.starvation import swap_colors
        >>> f = GroupAveraged(MLP(8, 4), [lambda x: x, swap_colors])
        >>> x = torch.randn(3, 2, 2, 2)
        >>> bool(torch.allclose(f(x), f(swap_colors(x))))
        True
    """

    def __init__(self, model: nn.Module, group: Sequence):
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        group = list(group)
        if not group or not all(callable(g) for g in group):
            raise ValueError("group must be a non-empty list of functions x -> g x, one per group element "
                             "(the identity included)")
        self.model, self.group = model, group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        out = self.model(torch.cat([g(x) for g in self.group]))
        return out.reshape(len(self.group), n, *out.shape[1:]).mean(0)


INVARIANCE_METHODS = {
    "group_avg": "group averaging: f_bar(x) = (f(x) + f(swap x)) / 2, exactly invariant",
    "augment": "augmentation: train f on every image and its colour-swapped copy (invariant only approximately)",
}


def _identity(t: torch.Tensor) -> torch.Tensor:
    """The identity element of the colour-swap group, as a function (a lambda would make the model unpicklable)."""
    return t


def train_swap_invariant(make_model, x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor, *,
                         method: str = "group_avg", steps: int = 150, lr: float = 1e-4, seed: int = 0,
                         loss_fn=None) -> TrainResult:
    """Train a colour-swap-invariant classifier with plain cross-entropy (ERM): the cure when the nuisance symmetry
    (the colour swap, :func:`symviz.data.starvation.swap_colors`) is known.

    ``method="group_avg"``: :class:`GroupAveraged` over ``{id, swap}`` (exact invariance);
    ``method="augment"``: the plain model trained on ``x`` and its colour-swapped copy, same labels. Full batch,
    Adam with ``lr`` for ``steps`` steps (:func:`train_full_batch` with ``lam = 0``; ``loss_fn`` as there, e.g.
    the learner's loss). Returns the :class:`TrainResult` of the model to evaluate (for ``"group_avg"``, the
    averaged model), its history with ``test_acc`` added at the end. An :class:`MLP` trains through a
    :class:`ColourSplitInput` of the images and their swaps (the same function, fewer multiply-adds).

    Args:
        make_model: ``() -> nn.Module`` (called once, after seeding with ``seed``).
        x, x_test: ``(N, 2, H, W)`` coloured images; y, y_test: ``(N,)`` in {0, 1}.
    """
    from symviz.data.starvation import swap_colors

    if method not in INVARIANCE_METHODS:
        raise ValueError(f"method must be one of {sorted(INVARIANCE_METHODS)}, got {method!r}")
    _check_binary(x, y)
    _check_binary(x_test, y_test)
    swap_colors(x)                        # validates the image shape (N, 2, H, W)
    torch.manual_seed(seed)
    model = make_model()
    both = torch.cat([x, swap_colors(x)])                 # both methods evaluate f on every image and its swap
    split = ColourSplitInput.for_model(model, both)       # the first layer on the coloured channel only
    forward = None
    if method == "group_avg":
        inner = model
        model = GroupAveraged(model, [_identity, swap_colors])   # module-level functions: the model pickles
        xt, yt = x, y
        if split is not None:                             # GroupAveraged's forward, with f through the split
            back = torch.empty_like(split.order)
            back[split.order] = torch.arange(len(split.order), device=back.device)

            def forward(m):
                out = split(inner)[back]                  # f(x), f(swap x) in GroupAveraged's order
                return out.reshape(2, -1, *out.shape[1:]).mean(0)
    else:
        xt, yt = both, torch.cat([y, y])
        if split is not None:
            yt, forward = yt[split.order], split
    res = train_full_batch(model, xt, yt, lam=0.0, steps=steps, lr=lr, optimizer="adam", seed=seed,
                           log_every=max(steps, 1), loss_fn=loss_fn, forward=forward)
    res.history.loc[res.history.index[-1], "test_acc"] = binary_accuracy(model, x_test, y_test.float())
    return res


def swap_sensitivity(model, x: torch.Tensor) -> float:
    """How much a classifier's answer depends on the colour: the mean change of its predicted probability,
    ``mean_i |sigmoid f(x_i) - sigmoid f(swap x_i)|`` (0: colour-blind; 1: decided by the colour alone).

    ``x: (N, 2, H, W)`` coloured images; ``model`` returns one logit per image.
    """
    from symviz.data.starvation import swap_colors

    if not callable(model):
        raise TypeError(f"model must be callable, got {type(model).__name__}")
    xs = swap_colors(x)
    with torch.no_grad():
        return float((torch.sigmoid(model(x)) - torch.sigmoid(model(xs))).abs().mean())
