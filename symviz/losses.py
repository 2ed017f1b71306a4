"""Small, tested, cited loss functions (canonicalization prior, spectral decoupling, ...).

Each function states the equation it implements and the paper it comes from.
"""
from __future__ import annotations

import torch

__all__: list[str] = []


# --- chapter 07: spectral decoupling (Pezeshki et al., NeurIPS 2021, arXiv 2011.09468) -------------

def _sd_check(logits: torch.Tensor, lam: float) -> torch.Tensor:
    if not torch.is_tensor(logits) or logits.ndim not in (1, 2) or logits.shape[0] == 0:
        raise ValueError(f"logits must be a non-empty tensor of shape (batch,) or (batch, classes), "
                         f"got {getattr(logits, 'shape', type(logits))}")
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not lam >= 0 or lam == float("inf"):
        raise ValueError(f"lam (the spectral decoupling strength) must be a finite number >= 0, got {lam!r}")
    return logits if logits.ndim == 2 else logits[:, None]


def spectral_decoupling(logits: torch.Tensor, lam: float) -> torch.Tensor:
    """Spectral decoupling penalty ``(lam / 2) * mean_i ||logits_i||^2``.

    Pezeshki et al., "Gradient Starvation", NeurIPS 2021, Eq. (SD): added to the cross-entropy,
    ``L = CE + (lam / 2) ||y_hat||^2`` replaces weight decay's ``||theta||^2`` by the network's
    outputs, which decouples the feature dynamics in the linearised (NTK) regime.

    Args:
        logits: ``(batch,)`` (binary) or ``(batch, classes)``.
        lam: ``lam >= 0``.

        >>> spectral_decoupling(torch.tensor([1.0, -3.0]), lam=0.5)
        tensor(1.2500)
    """
    z = _sd_check(logits, lam)
    return 0.5 * lam * (z ** 2).sum(dim=1).mean()


def spectral_decoupling_centred(logits: torch.Tensor, targets: torch.Tensor, lam: float, gamma) -> torch.Tensor:
    """Class-centred spectral decoupling ``(lam / 2) * mean_i ||logits_i - gamma_{y_i}||^2``.

    The variant of Pezeshki et al. (2021, Sec. 4 and App.) that pulls the outputs towards a
    per-class target ``gamma`` instead of towards 0 (used with per-class ``lam, gamma`` on CelebA).

    Args:
        logits: ``(batch,)`` binary logits or ``(batch, classes)``.
        targets: ``(batch,)`` integer classes (``{0, 1}`` for binary logits).
        gamma: binary: a number ``g`` (centres ``-g`` for class 0, ``+g`` for class 1) or a length-2
            sequence of centres; multi-class: a number ``g`` (centre ``g * onehot(y)``) or a
            ``(classes, classes)`` tensor whose row ``c`` is the centre of class ``c``.

        >>> spectral_decoupling_centred(torch.tensor([1.0, -1.0]), torch.tensor([1, 0]), 2.0, gamma=1.0)
        tensor(0.)
    """
    z = _sd_check(logits, lam)
    if not torch.is_tensor(targets) or targets.shape != logits.shape[:1]:
        raise ValueError(f"targets must be a tensor of shape ({logits.shape[0]},), got {getattr(targets, 'shape', type(targets))}")
    t = targets.long()
    classes = 2 if logits.ndim == 1 else logits.shape[1]
    if bool(((t < 0) | (t >= classes)).any()):
        raise ValueError(f"targets must be integer classes in [0, {classes - 1}]")
    if logits.ndim == 1:
        g = torch.as_tensor(gamma, dtype=z.dtype, device=z.device)
        if g.ndim == 0:
            g = torch.stack([-g, g])
        if g.shape != (2,):
            raise ValueError(f"gamma for binary logits must be a number or 2 centres, got shape {tuple(g.shape)}")
        centre = g[t][:, None]
    else:
        g = torch.as_tensor(gamma, dtype=z.dtype, device=z.device)
        if g.ndim == 0:
            centre = g * torch.nn.functional.one_hot(t, classes).to(z.dtype)
        elif g.shape == (classes, classes):
            centre = g[t]
        else:
            raise ValueError(f"gamma must be a number or a ({classes}, {classes}) tensor of centres, got shape {tuple(g.shape)}")
    return 0.5 * lam * ((z - centre) ** 2).sum(dim=1).mean()


def spectral_decoupling_loss(logits: torch.Tensor, targets: torch.Tensor, lam: float) -> torch.Tensor:
    """Cross-entropy plus spectral decoupling, ``CE(logits, targets) + (lam / 2) mean ||logits||^2``.

    Binary ``(batch,)`` logits with ``{0, 1}`` targets use the logistic loss; ``(batch, classes)``
    logits use softmax cross-entropy. Pezeshki et al. (2021).

        >>> float(spectral_decoupling_loss(torch.zeros(4), torch.tensor([0., 1., 1., 0.]), lam=1.0))  # log 2
        0.6931471824645996
    """
    z = _sd_check(logits, lam)
    if not torch.is_tensor(targets) or targets.shape != logits.shape[:1]:
        raise ValueError(f"targets must be a tensor of shape ({logits.shape[0]},), got {getattr(targets, 'shape', type(targets))}")
    if logits.ndim == 1:
        ce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype))
    else:
        ce = torch.nn.functional.cross_entropy(logits, targets.long())
    return ce + spectral_decoupling(z, lam)


__all__ += ["spectral_decoupling", "spectral_decoupling_centred", "spectral_decoupling_loss"]


# --- chapter 03: canonicalization prior (Mondal et al., NeurIPS 2023, arXiv 2310.01647) ------------

def canonicalization_prior(scores: torch.Tensor, identity: int = 0, reduction: str = "mean") -> torch.Tensor:
    """Prior that pulls a canonicalizer towards the identity on (upright) training data.

    Mondal, Panigrahi, Kaba, Rajeswar, Ravanbakhsh, "Equivariant Adaptation of Large Pretrained
    Models", NeurIPS 2023, Sec. 4 ("canonicalization prior"): training images are already in the
    orientation the pretrained model knows, so the canonicalizer should pick the identity for them.

    * Discrete group, ``scores: (B, |G|)`` logits over group elements:
      ``L = -(1/B) sum_i log softmax(scores_i)[identity]`` (cross-entropy towards the identity).
    * Continuous group, ``scores: (B, d, d)`` predicted matrices ``R_i``:
      ``L = (1/B) sum_i ||R_i - I||_F^2`` (squared Frobenius distance to the identity matrix).

    Args:
        identity: index of the identity element in the discrete case (0 in symviz's groups).
        reduction: ``"mean"`` (a scalar) or ``"none"`` (one value per example, ``(B,)``).

        >>> canonicalization_prior(torch.zeros(2, 4))  # uniform scores over C4: log 4
        tensor(1.3863)
        >>> canonicalization_prior(torch.eye(2).expand(3, 2, 2))
        tensor(0.)
    """
    if not torch.is_tensor(scores) or not scores.is_floating_point():
        raise ValueError(f"scores must be a float tensor: (batch, group_order) logits or (batch, d, d) "
                         f"matrices, got {getattr(scores, 'dtype', type(scores))}")
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    if scores.ndim == 2:
        n = scores.shape[1]
        if scores.shape[0] == 0 or n < 1:
            raise ValueError(f"scores must be a non-empty (batch, group_order) tensor, got shape {tuple(scores.shape)}")
        if isinstance(identity, bool) or not isinstance(identity, int) or not 0 <= identity < n:
            raise ValueError(f"identity must be an element index in [0, {n - 1}], got {identity!r}")
        per = -torch.log_softmax(scores, dim=1)[:, identity]
    elif scores.ndim == 3 and scores.shape[1] == scores.shape[2] and scores.shape[0] > 0:
        eye = torch.eye(scores.shape[1], dtype=scores.dtype, device=scores.device)
        per = ((scores - eye) ** 2).sum(dim=(1, 2))
    else:
        raise ValueError(f"scores must be (batch, group_order) logits (discrete group) or (batch, d, d) "
                         f"matrices (continuous group), got shape {tuple(scores.shape)}")
    return per.mean() if reduction == "mean" else per


__all__ += ["canonicalization_prior"]
