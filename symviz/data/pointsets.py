"""3D point-set classification data whose second moments are useless for canonicalization.

Each class is a fixed random *template* of ``n_points`` points (drawn from a Gaussian with a seed),
centred and **whitened** so that its covariance is exactly the identity. A sample is its class
template plus Gaussian jitter, with its points shuffled and (by default) a Haar-random SO(3)
rotation applied. The shapes are not symmetric (a learned canonicalizer can find a stable frame from
their higher-order structure), but their covariance is isotropic: a PCA frame is decided by the
jitter alone, so it changes arbitrarily from sample to sample. ``whiten=False`` gives the same
shapes with anisotropic covariance, where PCA frames are stable up to their sign flips.

Synthetic data written for symviz (no external source); it makes the failure mode of PCA frames
discussed by Kaba et al. (ICML 2023, §4) measurable.

    >>> data = make_pointsets(40, n_classes=4, n_points=12, seed=0)
    >>> tuple(data.x.shape), tuple(data.y.shape), data.n_classes
    ((40, 12, 3), (40,), 4)
    >>> cov = data.templates[0].T @ data.templates[0] / 12            # whitened: identity covariance
    >>> bool(torch.allclose(cov, torch.eye(3, dtype=cov.dtype), atol=1e-5))
    True
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from symviz.groups import random_rotation

__all__ = ["PointSets", "make_templates", "make_pointsets", "covariance_anisotropy"]


@dataclass
class PointSets:
    """``x: (M, N, 3)`` float32 points (row vectors), ``y: (M,)`` int64 labels,
    ``templates: (C, N, 3)`` the class templates, ``rotations: (M, 3, 3)`` the applied rotations."""

    x: torch.Tensor
    y: torch.Tensor
    templates: torch.Tensor
    rotations: torch.Tensor

    @property
    def n_classes(self) -> int:
        return int(self.templates.shape[0])

    def __len__(self) -> int:
        return int(self.y.shape[0])


def _whiten(t: torch.Tensor) -> torch.Tensor:
    """Centre ``t: (N, 3)`` and map its covariance to the identity (symmetric whitening Σ^{-1/2})."""
    t = t - t.mean(0)
    cov = t.T @ t / t.shape[0]
    evals, evecs = torch.linalg.eigh(cov)
    return t @ (evecs @ torch.diag(evals.rsqrt()) @ evecs.T)


def make_templates(n_classes: int = 5, n_points: int = 16, whiten: bool = True, seed: int = 0,
                   anisotropy: tuple[float, float, float] = (1.6, 1.0, 0.5)) -> torch.Tensor:
    """``(n_classes, n_points, 3)`` float64 class templates, centred.

    ``whiten=True``: covariance exactly the identity. ``whiten=False``: whitened, then scaled along
    x, y, z by ``anisotropy`` (distinct principal variances, a well-defined PCA frame up to signs).
    """
    if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2:
        raise ValueError(f"n_classes must be an integer >= 2, got {n_classes!r}")
    if isinstance(n_points, bool) or not isinstance(n_points, int) or n_points < 4:
        raise ValueError(f"n_points must be an integer >= 4 (a 3D shape), got {n_points!r}")
    if len(anisotropy) != 3 or min(anisotropy) <= 0:
        raise ValueError(f"anisotropy must be three positive scales, got {anisotropy!r}")
    g = torch.Generator().manual_seed(int(seed))
    out = []
    for _ in range(n_classes):
        t = _whiten(torch.randn(n_points, 3, dtype=torch.float64, generator=g))
        if not whiten:
            t = t * torch.tensor(anisotropy, dtype=torch.float64)
        out.append(t)
    return torch.stack(out)


def make_pointsets(n_samples: int, n_classes: int = 5, n_points: int = 16, noise: float = 0.05,
                   rotate: bool = True, whiten: bool = True, seed: int = 0, template_seed: int = 1234) -> PointSets:
    """``n_samples`` jittered, shuffled, randomly rotated copies of ``n_classes`` templates (balanced).

    Args:
        noise: standard deviation of the Gaussian jitter per coordinate (templates have unit variance).
        rotate: apply a Haar-random SO(3) rotation to each sample (``x @ R.T``).
        whiten: isotropic template covariance (PCA frames ambiguous) or anisotropic (PCA stable).
        seed: seeds the sampling (jitter, order, rotations, labels).
        template_seed: seeds the templates; keep it fixed so train and test share the classes.
    """
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0, got {noise!r}")
    templates = make_templates(n_classes, n_points, whiten, template_seed)
    g = torch.Generator().manual_seed(int(seed))
    y = torch.arange(n_samples) % n_classes
    y = y[torch.randperm(n_samples, generator=g)]
    x = templates[y] + noise * torch.randn(n_samples, n_points, 3, dtype=torch.float64, generator=g)
    order = torch.argsort(torch.rand(n_samples, n_points, generator=g), dim=1)
    x = torch.gather(x, 1, order[..., None].expand(-1, -1, 3))
    if rotate:
        R = random_rotation(n_samples, dtype=torch.float64, generator=g)
        x = x @ R.transpose(-1, -2)
    else:
        R = torch.eye(3, dtype=torch.float64).expand(n_samples, 3, 3).clone()
    return PointSets(x=x.float(), y=y, templates=templates, rotations=R)


def covariance_anisotropy(x: torch.Tensor) -> torch.Tensor:
    """``(B,)`` the smallest relative gap between the covariance eigenvalues of each point set
    ``x: (B, N, 3)``: ``min_i (λ_{i+1} − λ_i) / λ_max``. Near 0: the PCA frame is ill-defined."""
    if not torch.is_tensor(x) or x.ndim != 3 or x.shape[-1] != 3:
        raise ValueError(f"x must be point sets (B, N, 3), got {getattr(x, 'shape', type(x))}")
    r = x - x.mean(1, keepdim=True)
    evals = torch.linalg.eigvalsh(r.transpose(-1, -2) @ r / x.shape[1])
    return (evals[:, 1:] - evals[:, :-1]).min(-1).values / evals[:, -1]
