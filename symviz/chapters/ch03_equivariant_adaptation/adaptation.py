"""Equivariant adaptation of a pretrained model with a canonicalization prior (chapter 03).

Mondal, Panigrahi, Kaba, Rajeswar, Ravanbakhsh, "Equivariant Adaptation of Large Pretrained Models",
NeurIPS 2023 (arXiv 2310.01647). A pretrained, non-invariant backbone ``p`` is made exactly invariant
to a group G by a learned, G-equivariant canonicalizer ``h`` (Kaba et al., ICML 2023):

    f(x) = p(h(x)^{-1} · x)

and both are fine-tuned on the task with the loss

    L = task_weight · CE(f(x), y) + prior_weight · L_prior(h, x),

where the canonicalization prior :func:`symviz.losses.canonicalization_prior` pulls ``h`` towards the
identity on the (upright) training images, so that the canonical orientation is the one the backbone
was pretrained on. :func:`identity_metric` measures how often that happens.

The canonicalizers and :class:`~symviz.nn.canonical.CanonicalizedModel` come from
:mod:`symviz.nn.canonical` (chapter 02); this module adds the fine-tuning recipe and the
evaluation on rotated test sets (the exact C4 invariance of the result is measured by
:func:`symviz.equivariance.rot90_invariance_error`).

    >>> import torch
    >>> from symviz.nn.canonical import C4ImageCanonicalizer
    >>> from symviz.chapters.ch03_equivariant_adaptation.pretrained import ResNetBackbone
    >>> model = AdaptedModel(C4ImageCanonicalizer(hidden=4, pool=2), ResNetBackbone(hidden=4, blocks=(1,)))
    >>> x = torch.rand(3, 28, 28)
    >>> bool(torch.allclose(model(x), model(torch.rot90(x, 1, dims=(-2, -1)))))
    True
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Sequence

import torch
from torch import nn

from symviz.losses import canonicalization_prior
from symviz.nn.canonical import C4ImageCanonicalizer, CanonicalizationResult, CanonicalizedModel

__all__ = ["AdaptedModel", "AdaptationResult", "adapt", "adaptation_objective", "adaptation_step", "identity_metric",
           "element_histogram", "evaluate_adapted", "rotate_test_set", "evaluate_rotations", "rotation_angles",
           "ADAPTATION_RECIPES"]

#: Fine-tuning recipes. Learning rates (1e-3 for both networks), the optimizer (AdamW) and prior weight
#: 100 follow the authors' equiadapt example configuration (``examples/images/classification``); the
#: canonicalizer there is a 3-layer C4-equivariant CNN with 5x5 kernels. "quick" is sized for 2 CPU
#: cores (128 steps): its canonicalizer learns at 3e-3 so that it converges in that budget, and the
#: pretrained backbone is fine-tuned gently (3e-4) so that 2,000 images do not wash out what
#: pretraining gave it; "full" is for a GPU and takes the authors' rotated-MNIST configuration
#: (``configs/group_equivariant/rotmnist.yaml``): batch 256, up to 100 epochs, early stopping after 20
#: epochs without improvement of the validation loss (``patience``; needs ``x_val``).
ADAPTATION_RECIPES: dict[str, dict] = {
    "quick": dict(n_train=2000, epochs=4, lr=3e-3, backbone_lr=3e-4, batch_size=64, hidden=8, pool=2, patience=None),
    "full": dict(n_train=60000, epochs=100, lr=1e-3, backbone_lr=1e-3, batch_size=256, hidden=32, pool=1, patience=20),
}


def _as_images(x: torch.Tensor, who: str) -> torch.Tensor:
    """``(B, H, W)`` -> ``(B, 1, H, W)``; ``(B, C, H, W)`` passes; anything else raises."""
    if not torch.is_tensor(x):
        raise ValueError(f"{who}: x must be a tensor of images (B, H, W) or (B, C, H, W), got {type(x).__name__}")
    if x.ndim == 3:
        return x.unsqueeze(1)
    if x.ndim == 4:
        return x
    raise ValueError(f"{who}: x must be images (B, H, W) or (B, C, H, W), got shape {tuple(x.shape)}")


class AdaptedModel(CanonicalizedModel):
    """``f(x) = p(h(x)^{-1}·x)``: a :class:`CanonicalizedModel` for image classifiers.

    Accepts ``(B, H, W)`` or ``(B, C, H, W)`` images and returns logits ``(B, classes)``. With
    ``freeze_backbone=True`` the backbone's weights get no gradient and it stays in eval mode (its
    BatchNorm statistics are those of pretraining) even while the canonicalizer trains.
    """

    def __init__(self, canonicalizer: nn.Module, backbone: nn.Module, freeze_backbone: bool = False):
        super().__init__(canonicalizer, backbone, output="invariant")
        self.freeze_backbone = bool(freeze_backbone)
        for p in self.backbone.parameters():
            p.requires_grad_(not self.freeze_backbone)
        self.train(self.training)

    def train(self, mode: bool = True) -> "AdaptedModel":
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()
        return self

    def forward_with_details(self, x: torch.Tensor) -> tuple[torch.Tensor, CanonicalizationResult]:
        return super().forward_with_details(_as_images(x, type(self).__name__))


def _smoke_batch(batch_size: int) -> int:
    """``batch_size``, or at most :data:`symviz.train.SMOKE_BATCH` in a smoke run: full mode's canonicalizer (32
    channels at full resolution, four rotated copies) and ResNet make each image costly on a CPU."""
    from symviz.train import SMOKE_BATCH, smoke_steps

    return batch_size if smoke_steps() is None else min(batch_size, SMOKE_BATCH)


def _smoke_subset(x: torch.Tensor, *rest: torch.Tensor, batch_size: int = 1000):
    """In a smoke run (`symviz run --smoke`) evaluations see the same code path on a few small batches:
    ``(batch_size, x, *rest)`` cut to :func:`symviz.train.smoke_steps` batches of at most ``SMOKE_BATCH``;
    else unchanged."""
    from symviz.train import smoke_steps

    steps = smoke_steps()
    if steps is None:
        return (batch_size, x, *rest)
    batch_size = _smoke_batch(batch_size)
    return (batch_size, *(t[:steps * batch_size] for t in (x, *rest)))


@torch.no_grad()
def identity_metric(canonicalizer: nn.Module, x: torch.Tensor, batch_size: int = 1000, tol: float = 1e-3) -> float:
    """Fraction of (upright) images that the canonicalizer maps to the identity element.

    Discrete groups: ``mean_i [h(x_i) == 0]``; continuous (``element`` a matrix ``(B, d, d)``):
    ``mean_i [||h(x_i) - I||_F < tol]``. Mondal et al. (2023) report this as the share of upright
    images left unchanged by the canonicalizer; a canonicalizer aligned with the pretraining data has it
    near 1.

    Args:
        x: upright images ``(N, H, W)`` or ``(N, C, H, W)``.
    """
    x = _as_images(x, "identity_metric")
    if len(x) == 0:
        raise ValueError("identity_metric: x holds no images")
    batch_size, x = _smoke_subset(x, batch_size=batch_size)
    was = canonicalizer.training
    canonicalizer.eval()
    hits = 0
    for i in range(0, len(x), batch_size):
        el = canonicalizer(x[i:i + batch_size]).element
        if el.ndim == 1:
            hits += int((el == 0).sum())
        else:
            eye = torch.eye(el.shape[-1], dtype=el.dtype, device=el.device)
            hits += int(((el - eye).flatten(1).norm(dim=1) < tol).sum())
    canonicalizer.train(was)
    return hits / len(x)


@torch.no_grad()
def element_histogram(canonicalizer: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Counts ``(n,)`` of the group elements (rotations) a discrete canonicalizer picks for ``x``."""
    x = _as_images(x, "element_histogram")
    n = getattr(canonicalizer, "n", None)
    if n is None:
        raise ValueError("element_histogram needs a discrete canonicalizer (with attribute n)")
    batch_size, x = _smoke_subset(x, batch_size=batch_size)
    was = canonicalizer.training
    canonicalizer.eval()
    counts = torch.zeros(n, dtype=torch.long)
    for i in range(0, len(x), batch_size):
        counts += torch.bincount(canonicalizer(x[i:i + batch_size]).element.cpu(), minlength=n)
    canonicalizer.train(was)
    return counts


def rotation_angles(kind: str = "C4", n_continuous: int = 12) -> list[float]:
    """Test angles in degrees: ``"C4"`` (0, 90, 180, 270), ``"C8"`` (multiples of 45) or
    ``"continuous"`` (``n_continuous`` evenly spaced angles, offset by half a step from C4's).

    >>> rotation_angles("C8")[:3]
    [0.0, 45.0, 90.0]
    """
    if kind == "C4":
        return [0.0, 90.0, 180.0, 270.0]
    if kind == "C8":
        return [45.0 * k for k in range(8)]
    if kind == "continuous":
        if not isinstance(n_continuous, int) or n_continuous < 1:
            raise ValueError(f"n_continuous must be a positive integer, got {n_continuous!r}")
        step = 360.0 / n_continuous
        return [step * (k + 0.5) for k in range(n_continuous)]
    raise ValueError(f"kind must be 'C4', 'C8' or 'continuous', got {kind!r}")


def rotate_test_set(x: torch.Tensor, angle_deg: float) -> torch.Tensor:
    """Rotate all images ``(N, H, W)`` or ``(N, C, H, W)`` counter-clockwise by ``angle_deg``.

    Multiples of 90° are exact (``rot90``); other angles interpolate bilinearly (zeros outside).
    """
    from symviz.groups import rot90_image, rotate_image

    if not torch.is_tensor(x) or x.ndim < 3:
        raise ValueError(f"rotate_test_set: x must be images (N, H, W) or (N, C, H, W), got {getattr(x, 'shape', type(x))}")
    a = float(angle_deg) % 360.0
    if abs(a / 90.0 - round(a / 90.0)) < 1e-9:
        return rot90_image(x, int(round(a / 90.0)) % 4)
    return rotate_image(x, math.radians(a))


@torch.no_grad()
def evaluate_rotations(model: nn.Module, x: torch.Tensor, y: torch.Tensor, angles: Sequence[float] | str = "C4",
                       batch_size: int = 1000, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Accuracy of ``model`` on the test set rotated by each angle.

    Args:
        x: upright test images ``(N, H, W)``; y: labels ``(N,)``.
        angles: degrees, or ``"C4"`` / ``"C8"`` / ``"continuous"`` (see :func:`rotation_angles`).
    Returns:
        ``{"upright": acc at 0° (computed even if 0 is not listed), "per_angle": {angle: acc},
        "rotated": mean accuracy over the listed angles}``.
    """
    from symviz.chapters.ch03_equivariant_adaptation.pretrained import accuracy

    if isinstance(angles, str):
        angles = rotation_angles(angles)
    angles = [float(a) for a in angles]
    if not angles:
        raise ValueError("evaluate_rotations: angles is empty")
    if not torch.is_tensor(y) or y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"evaluate_rotations: y must be labels (N,) with N = len(x) = {len(x)}")
    batch_size, x, y = _smoke_subset(x, y, batch_size=batch_size)
    per = {a: accuracy(model, rotate_test_set(x, a), y, batch_size, device) for a in angles}
    upright = per.get(0.0, None)
    if upright is None:
        upright = accuracy(model, x, y, batch_size, device)
    return {"upright": upright, "per_angle": per, "rotated": sum(per.values()) / len(per)}


@torch.no_grad()
def evaluate_adapted(model: AdaptedModel, x: torch.Tensor, y: torch.Tensor, seed: int = 0,
                     batch_size: int = 1000, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Upright and C4-rotated accuracy of an adapted model, and what its canonicalizer picks, in two passes.

    The rotated test set turns every image by its own random multiple of 90° (``rot90``, exact; drawn
    with ``seed``), the protocol of rotated-image benchmarks. The upright pass also records the group
    element ``h(x)`` of every image, so the identity metric and the histogram need no extra pass.

    Args:
        x: upright test images ``(N, H, W)`` or ``(N, C, H, W)``; y: labels ``(N,)``.
    Returns:
        ``{"upright", "rotated": accuracies, "identity": share of h(x) = 0 on upright images,
        "histogram": counts (n,) of h(x) on upright images}``.
    """
    from symviz.data.rotated_images import random_rot90

    x = _as_images(x, "evaluate_adapted")
    if not torch.is_tensor(y) or y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"evaluate_adapted: y must be labels (N,) with N = len(x) = {len(x)}")
    if not isinstance(model, CanonicalizedModel) or getattr(model.canonicalizer, "n", None) is None:
        raise ValueError("evaluate_adapted needs a canonicalized model with a discrete canonicalizer (attribute n)")
    from symviz.train import resolve_device

    batch_size, x, y = _smoke_subset(x, y, batch_size=batch_size)
    dev = resolve_device(device)
    home = next(model.parameters()).device
    was = model.training
    model.eval().to(dev)
    rotated, _ = random_rot90(x, torch.Generator().manual_seed(seed))
    hits_up = hits_rot = 0
    elements = []
    for i in range(0, len(x), batch_size):
        yb = y[i:i + batch_size].to(dev)
        logits, res = model.forward_with_details(x[i:i + batch_size].to(dev))
        hits_up += int((logits.argmax(-1) == yb).sum())
        elements.append(res.element.cpu())
        hits_rot += int((model(rotated[i:i + batch_size].to(dev)).argmax(-1) == yb).sum())
    model.train(was).to(home)
    counts = torch.bincount(torch.cat(elements).cpu(), minlength=model.canonicalizer.n)
    return {"upright": hits_up / len(x), "rotated": hits_rot / len(x), "identity": float(counts[0]) / len(x),
            "histogram": counts}


def adaptation_objective(logits: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor, prior_weight: float,
                         task_weight: float = 1.0) -> torch.Tensor:
    """The adaptation loss of Mondal et al. (2023, Sec. 4): ``task_weight · CE(logits, labels) + β · L_prior(scores)``.

    Args:
        logits: ``(B, classes)`` the backbone's output on the canonical inputs; labels: ``(B,)``.
        scores: what the canonicalizer predicted: ``(B, |G|)`` logits over a discrete group (the prior is the
            cross-entropy towards the identity, element 0) or ``(B, d, d)`` matrices of a continuous one (the
            squared distance to the identity matrix); see :func:`symviz.losses.canonicalization_prior`.
        prior_weight: β (100 in the authors' configurations); 0 drops the prior (the "no prior" ablation).

    >>> logits, labels = torch.zeros(2, 3), torch.tensor([0, 1])
    >>> round(float(adaptation_objective(logits, labels, torch.zeros(2, 4), 0.0)), 4)   # CE of uniform logits: log 3
    1.0986
    >>> round(float(adaptation_objective(logits, labels, torch.zeros(2, 4), 2.0)), 4)   # + 2 · log 4
    3.8712
    """
    import torch.nn.functional as F

    loss = task_weight * F.cross_entropy(logits, labels)
    if prior_weight > 0:   # β = 0: the prior is not even computed (its term would be exactly 0)
        loss = loss + prior_weight * canonicalization_prior(scores)
    return loss


def adaptation_step(model: CanonicalizedModel, batch, optimizer: torch.optim.Optimizer, objective,
                    prior_weight: float) -> torch.Tensor:
    """One training step of the adaptation (the reference of chapter 03's exercise); returns the loss (detached).

    Forward through canonicalizer and backbone (``model.forward_with_details``), the loss
    ``objective(logits, labels, scores, prior_weight)`` (``scores``: the canonicalizer's logits over a discrete
    group, else its predicted matrices), then ``zero_grad``, ``backward`` and ``optimizer.step()``.
    """
    x, y = batch
    logits, result = model.forward_with_details(x)
    loss = objective(logits, y, result.scores if result.scores is not None else result.element, prior_weight)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def _fit_with_step(model: AdaptedModel, step, objective, prior_weight: float, loader, val_loader, *,
                   optimizer: torch.optim.Optimizer, **fit_kwargs):
    """Train with :func:`symviz.train.fit`'s loop (seeding, validation loss and metrics after each epoch, the best
    epoch's weights kept, early stopping) and ``step(model, batch, optimizer, objective, prior_weight)`` as the
    training step (``fit(step=)``); validation batches (model in eval mode) compute ``objective``. With
    :func:`adaptation_step` this is exactly ``fit(model, loss, ..., optimizer=optimizer)``. Returns fit's
    ``FitResult``."""
    from symviz.train import fit

    def val_loss(m: AdaptedModel, batch) -> torch.Tensor:
        logits, res = m.forward_with_details(batch[0])
        return objective(logits, batch[1], res.scores if res.scores is not None else res.element, prior_weight)

    return fit(model, val_loss, loader, val_loader, optimizer=optimizer,
               step=lambda m, batch, opt: step(m, batch, opt, objective, prior_weight), **fit_kwargs)


@dataclass
class AdaptationResult:
    """What :func:`adapt` returns: the adapted model (eval mode, CPU), its history and timing."""

    model: AdaptedModel
    history: Any  # pandas.DataFrame: epoch, train_loss, (val_loss, val_identity, val_accuracy), seconds
    seconds: float
    config: dict = field(default_factory=dict)


def adapt(backbone: nn.Module, x: torch.Tensor, y: torch.Tensor, *, prior_weight: float = 100.0,
          task_weight: float = 1.0, canonicalizer: nn.Module | None = None, freeze_backbone: bool = False,
          scale: str = "quick", x_val: torch.Tensor | None = None, y_val: torch.Tensor | None = None,
          seed: int = 0, device: str | torch.device = "auto", progress: bool = False,
          objective=None, step=None, **overrides) -> AdaptationResult:
    """Fine-tune ``canonicalizer`` (and the backbone unless frozen) on upright data ``(x, y)``.

    Loss per batch (Mondal et al. 2023, Sec. 4), :func:`adaptation_objective`:
    ``task_weight · CE(p(h(x)^{-1} x), y) + prior_weight · canonicalization_prior(scores(x))``.
    ``prior_weight = 0`` is the "no prior" ablation (canonicalization trained for the task alone).

    The loop: for each epoch, ``step(model, batch, optimizer, objective, prior_weight)`` on every batch
    (:func:`adaptation_step`: forward, loss, ``zero_grad``, ``backward``, ``optimizer.step()``), then the
    validation loss and metrics; the best epoch's weights are kept.

    Args:
        backbone: the pretrained classifier (deep-copied: the caller's model is not changed).
        x: upright training images ``(N, H, W)``; y: labels ``(N,)``.
        canonicalizer: a module returning :class:`CanonicalizationResult`: ``scores`` over a discrete
            group, or (``scores=None``) ``element`` matrices ``(B, d, d)`` of a continuous one, for
            which the prior is the distance to the identity matrix. Default:
            ``C4ImageCanonicalizer(hidden, pool)`` from the recipe, seeded by ``seed``.
        scale: ``"quick"`` or ``"full"`` (:data:`ADAPTATION_RECIPES`); ``overrides`` change entries
            (``epochs``, ``lr``, ``backbone_lr``, ``batch_size``, ``hidden``, ``pool``, ``patience``; ``n_train``
            is only used by callers).
        x_val, y_val: optional upright validation data; adds ``val_loss``, ``val_identity`` and
            ``val_accuracy`` to the history, and the weights of the epoch with the lowest validation loss are
            kept.
        objective: ``(logits, labels, scores, prior_weight) -> loss``; default :func:`adaptation_objective` (with
            ``task_weight``). Chapter 03 passes the learner's.
        step: ``(model, batch, optimizer, objective, prior_weight) -> loss``; default :func:`adaptation_step`.
            Chapter 03 passes the learner's.
    """
    import copy

    from symviz.train import TensorBatches, resolve_device

    if scale not in ADAPTATION_RECIPES:
        raise ValueError(f"adapt: scale must be one of {sorted(ADAPTATION_RECIPES)}, got {scale!r}")
    unknown = set(overrides) - set(ADAPTATION_RECIPES[scale])
    if unknown:
        raise ValueError(f"adapt: unknown recipe keys {sorted(unknown)}; expected some of {sorted(ADAPTATION_RECIPES[scale])}")
    cfg = {**ADAPTATION_RECIPES[scale], **overrides}
    for name, v in (("prior_weight", prior_weight), ("task_weight", task_weight)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v >= 0) or math.isinf(v):
            raise ValueError(f"adapt: {name} must be a finite number >= 0, got {v!r}")
    if not isinstance(backbone, nn.Module):
        raise TypeError(f"adapt: backbone must be a torch.nn.Module, got {type(backbone).__name__}")
    x = _as_images(x, "adapt")
    if not torch.is_tensor(y) or y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"adapt: y must be integer labels (N,) with N = len(x) = {len(x)}, got {getattr(y, 'shape', type(y))}")
    if (x_val is None) != (y_val is None):
        raise ValueError("adapt: give both x_val and y_val, or neither")
    for name, fn in (("objective", objective), ("step", step)):
        if fn is not None and not callable(fn):
            raise TypeError(f"adapt: {name} must be a function, got {type(fn).__name__}")
    if objective is not None and task_weight != 1.0:
        raise ValueError("adapt: task_weight applies to the reference objective; a custom objective weighs its own "
                         "task loss (pass task_weight=1.0)")
    if objective is None:
        objective = partial(adaptation_objective, task_weight=task_weight)
    step = adaptation_step if step is None else step

    torch.manual_seed(seed)
    if canonicalizer is None:
        canonicalizer = C4ImageCanonicalizer(in_channels=x.shape[1], hidden=cfg["hidden"], pool=cfg["pool"])
    model = AdaptedModel(canonicalizer, copy.deepcopy(backbone).cpu(), freeze_backbone=freeze_backbone)
    groups = [{"params": list(model.canonicalizer.parameters()), "lr": cfg["lr"]}]
    if not freeze_backbone:
        groups.append({"params": list(model.backbone.parameters()), "lr": cfg["backbone_lr"]})
    # AdamW (default weight decay 0.01), one learning rate per network: what the authors' example code
    # uses for (rotated) MNIST-type data (examples/images/classification/model.py, configure_optimizers)
    opt = torch.optim.AdamW(groups)

    def identity_share(m: AdaptedModel, b) -> torch.Tensor:
        el = m.canonicalizer(b[0]).element
        if el.ndim == 1:
            return (el == 0).float().mean()
        eye = torch.eye(el.shape[-1], dtype=el.dtype, device=el.device)
        return ((el - eye).flatten(1).norm(dim=1) < 1e-3).float().mean()

    metrics = None
    val_loader = None
    if x_val is not None:
        xv = _as_images(x_val, "adapt(x_val)")
        vb = _smoke_batch(500)
        val_loader = [(xv[i:i + vb], y_val[i:i + vb]) for i in range(0, len(xv), vb)]
        metrics = {
            "val_identity": identity_share,
            "val_accuracy": lambda m, b: (m(b[0]).argmax(-1) == b[1]).float().mean(),
        }
    loader = TensorBatches(x, y, batch_size=cfg["batch_size"], seed=seed)   # at most SMOKE_BATCH in a smoke run
    t0 = time.perf_counter()
    res = _fit_with_step(model, step, objective, prior_weight, loader, val_loader, optimizer=opt, epochs=cfg["epochs"],
                         patience=cfg["patience"] if val_loader is not None else None, device=resolve_device(device),
                         seed=seed, progress=progress, metrics=metrics, desc=f"adapt (prior weight {prior_weight:g})")
    model = res.model.cpu().eval()
    return AdaptationResult(model=model, history=res.history, seconds=time.perf_counter() - t0,
                            config={**cfg, "prior_weight": prior_weight, "task_weight": task_weight,
                                    "freeze_backbone": freeze_backbone, "seed": seed})
