"""Learned canonicalization: make any backbone exactly invariant or equivariant.

Kaba, Mondal, Zhang, Bengio, Ravanbakhsh, "Equivariance with Learned Canonicalization Functions",
ICML 2023 (arXiv 2211.06489).

An *equivariant canonicalization function* ``h(x) ∈ G`` satisfies ``h(g·x) = g·h(x)``. The input is
brought to a canonical pose ``h(x)⁻¹·x`` and an unconstrained backbone ``p`` predicts

* invariant tasks:   ``f(x) = p(h(x)⁻¹·x)``
* equivariant tasks: ``f(x) = h(x)·p(h(x)⁻¹·x)``

``f`` is exactly invariant/equivariant whatever ``p`` is, because ``h(g·x)⁻¹·(g·x) = h(x)⁻¹·x``.

What is here:

* :class:`CanonicalizationResult`: what a canonicalizer computed (group element, scores, canonical
  input), returned rather than stored on the module.
* :class:`CnImageCanonicalizer` / :class:`C4ImageCanonicalizer`: a C_n-equivariant image network that
  scores the n rotations; straight-through argmax keeps gradients flowing to the scores. Their forward
  pass is :func:`canonicalize_cn` (score every rotation, straight-through argmax, un-rotate), replaceable
  by the ``canonicalize`` argument.
* :class:`MomentImageCanonicalizer`: the image-moment heuristic (rotate the intensity centroid to a
  fixed direction).
* :class:`PointFrameCanonicalizer`: an O(3)-equivariant point-set network predicting vectors that
  Gram-Schmidt turns into a frame (SO(3) or O(3)); :class:`PCAFrameCanonicalizer`: the PCA heuristic.
* :class:`CanonicalizedModel`: wraps canonicalizer + backbone.

Conventions: images are ``(B, C, H, W)``, element ``k`` of C_n rotates counter-clockwise by
``2πk/n`` (``torch.rot90`` for multiples of 90°). Points are row vectors ``(B, N, 3)`` and a
rotation ``R`` acts as ``x @ R.T``; a frame ``R`` has the frame axes as its *columns*.

    >>> import torch
    >>> torch.manual_seed(0) and None
    >>> canon = C4ImageCanonicalizer(in_channels=1, hidden=4)
    >>> x = torch.rand(2, 1, 12, 12)
    >>> r1, r2 = canon(x), canon(torch.rot90(x, 1, dims=(-2, -1)))
    >>> ((r2.element - r1.element) % 4).tolist()                # h(g·x) = g·h(x)
    [1, 1]
    >>> torch.equal(r1.canonical, r2.canonical)                 # the canonical input does not move
    True
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal

import torch
from torch import nn

from symviz.groups import rot90_image, rotate_image
from symviz.nn.gcnn import MaxPool2d

__all__ = [
    "CanonicalizationResult", "straight_through_onehot", "rotate_images_cn", "canonicalize_cn", "CnImageCanonicalizer",
    "C4ImageCanonicalizer", "MomentImageCanonicalizer", "gram_schmidt", "PointFrameCanonicalizer",
    "PCAFrameCanonicalizer", "CanonicalizedModel", "canonical_frame_consistency", "PointNetClassifier",
    "rotation_angle", "pose_spread", "pca_frames", "NBodyFrameCanonicalizer", "PCANBodyCanonicalizer", "NBodyGNN",
    "CanonicalizedNBodyModel", "FrameAveragedNBodyModel",
]


@dataclass
class CanonicalizationResult:
    """What a canonicalizer computed for a batch.

    Attributes:
        element: the group element ``h(x)``: a LongTensor ``(B,)`` of indices ``0..n-1`` for C_n, or
            rotation/orthogonal matrices ``(B, 3, 3)`` (frame axes as columns) for SO(3)/O(3).
        scores: ``(B, n)`` logits over the group elements (discrete groups), else ``None``.
        canonical: the canonicalized input ``h(x)⁻¹·x`` (same shape as the input).
        weights: ``(B, n)`` straight-through one-hot of ``element`` (forward value exactly one-hot,
            gradient of the softmax); ``None`` for continuous groups and heuristics.
        origin: ``(B, 3)`` the translation removed before canonicalizing point sets, else ``None``.
    """

    element: torch.Tensor
    scores: torch.Tensor | None
    canonical: torch.Tensor
    weights: torch.Tensor | None = None
    origin: torch.Tensor | None = None


def straight_through_onehot(scores: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """Straight-through argmax: forward ``onehot(argmax s)``, backward ``∂ softmax(s/τ)``.

    ``w = onehot + (softmax(s/τ) − stopgrad(softmax(s/τ)))`` (Bengio et al. 2013; used for discrete
    groups by Kaba et al. 2023). The forward value is *exactly* one-hot.

    Args:
        scores: ``(B, n)`` logits.
        tau: softmax temperature (> 0).

    >>> s = torch.tensor([[0.1, 2.0, -1.0]], requires_grad=True)
    >>> w = straight_through_onehot(s)
    >>> w.tolist()
    [[0.0, 1.0, 0.0]]
    >>> (w * torch.tensor([[1.0, 2.0, 3.0]])).sum().backward(); bool(s.grad.abs().sum() > 0)
    True
    """
    if not torch.is_tensor(scores) or scores.ndim != 2:
        raise ValueError(f"scores must be a (batch, n) tensor, got {getattr(scores, 'shape', type(scores))}")
    if not tau > 0:
        raise ValueError(f"tau must be positive, got {tau!r}")
    soft = torch.softmax(scores / tau, dim=-1)
    hard = torch.nn.functional.one_hot(scores.argmax(-1), scores.shape[-1]).to(soft)
    return hard + (soft - soft.detach())  # the bracket is exactly 0 in the forward pass


def rotate_images_cn(x: torch.Tensor, k, n: int) -> torch.Tensor:
    """Rotate images ``x: (..., H, W)`` by ``2πk/n`` counter-clockwise.

    ``k`` is an int (same rotation for all) or a LongTensor ``(B,)`` (one per image, ``x: (B, ...)``).
    Exact (``rot90``) when the angle is a multiple of 90°, bilinear interpolation otherwise.
    """
    if torch.is_tensor(k) and k.ndim == 1:
        if k.shape[0] != x.shape[0]:
            raise ValueError(f"k has {k.shape[0]} entries for a batch of {x.shape[0]} images")
        every = torch.stack([rotate_images_cn(x, j, n) for j in range(n)], dim=1)   # (B, n, ...)
        return every[torch.arange(x.shape[0], device=x.device), k.to(x.device) % n]
    k = int(k) % n
    if (4 * k) % n == 0:
        return rot90_image(x, 4 * k // n)
    return rotate_image(x, 2 * math.pi * k / n)


def _check_images(x: torch.Tensor, in_channels: int | None, who: str) -> None:
    if not torch.is_tensor(x) or x.ndim != 4:
        raise ValueError(f"{who}: x must be images of shape (B, C, H, W), got {getattr(x, 'shape', type(x))}")
    if in_channels is not None and x.shape[1] != in_channels:
        raise ValueError(f"{who}: expected {in_channels} channel(s), got x of shape {tuple(x.shape)}")
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"{who}: rotations by 90° need square images, got H, W = {tuple(x.shape[-2:])}")


class _ImageCanonicalizerBase(nn.Module):
    """Shared C_n machinery: scores -> element -> canonical input, and mapping outputs back."""

    n: int
    tau: float

    def _result(self, x: torch.Tensor, scores: torch.Tensor) -> CanonicalizationResult:
        """A hard (not differentiable) choice ``h(x) = argmax scores`` and the canonical input ``r^{-h(x)}·x``
        (heuristics; the learned canonicalizers use :func:`canonicalize_cn`)."""
        rotated = torch.stack([rotate_images_cn(x, -j, self.n) for j in range(self.n)], dim=1)  # (B, n, C, H, W)
        idx = scores.argmax(-1)
        canonical = rotated[torch.arange(x.shape[0], device=x.device), idx]
        return CanonicalizationResult(element=idx, scores=scores, canonical=canonical)

    def group_action(self, y: torch.Tensor, result: CanonicalizationResult) -> torch.Tensor:
        """Map a backbone output from the canonical frame back: ``h(x)·y`` for images ``y: (B, C, H, W)``.

        Uses the straight-through weights when present so gradients reach the scores.
        """
        _check_images(y, None, f"{type(self).__name__}.group_action")
        rotated = torch.stack([rotate_images_cn(y, j, self.n) for j in range(self.n)], dim=1)
        if result.weights is not None:
            return torch.einsum("bn,bnchw->bchw", result.weights, rotated)
        return rotated[torch.arange(y.shape[0], device=y.device), result.element]


class CnImageCanonicalizer(_ImageCanonicalizerBase):
    """A C_n-equivariant scoring network for images, with straight-through argmax.

    Scores ``s_j(x) = φ(r^{-j}·x)`` for ``j = 0..n-1``, where ``r`` is the rotation by ``2π/n`` and
    ``φ`` is a small CNN whose last layer is a 1x1 convolution; the score is the mean of that last
    feature map over channels and positions, as in the canonicalization networks of Kaba et al.
    (``CanonizationNetwork``) and of equiadapt (``group_activations = mean over channels, H, W``).
    Initialisation as in Kaba et al.'s code: weights at PyTorch's default scale (their
    ``kaiming_uniform_(a=√5)``), **all biases zero**. (The 1x1 convolution commutes with the spatial
    mean, so it is computed on the pooled features.) Running ``φ`` on rotated copies of the input is
    a G-CNN whose lifting layer rotates the filters and whose later layers do not mix the rotation
    fibres: a readable, small member of the family the papers use. Then
    ``s(r^k·x)_j = s(x)_{j-k}``: the scores shift cyclically with the input (a lifting of ``φ`` to
    the group), so ``h(x) = argmax_j s_j(x)`` satisfies ``h(r^k·x) = h(x) + k``. Exact for n ∈ {1, 2, 4}
    (``rot90``); for other n the rotations interpolate pixels and equivariance is approximate.

    ``forward(x: (B, C, H, W)) -> CanonicalizationResult`` with ``canonical = r^{-h(x)}·x`` computed
    as the straight-through one-hot mixture of the n rotated copies (exact forward value, gradients
    to the scores): :func:`canonicalize_cn` with this module's scoring network :meth:`score_images`.

    Args:
        n: order of the rotation group.
        in_channels: image channels C.
        hidden: channels of ``φ``'s convolutions.
        tau: temperature of the straight-through softmax.
        pool: average-pool the input by this factor first (a cheap, low-resolution canonicalizer;
            still exact for C4 when H is divisible by ``pool``, since pooling commutes with rot90).
        canonicalize: the forward pass, ``canonicalize(x, score, n, tau) -> CanonicalizationResult`` with
            ``score = self.score_images``; default :func:`canonicalize_cn` (the reference). A chapter passes a
            learner's implementation here, so the model it trains runs the learner's code.
    """

    def __init__(self, n: int = 4, in_channels: int = 1, hidden: int = 16, kernel_size: int = 5, tau: float = 1.0,
                 pool: int = 1, canonicalize: Callable | None = None):
        super().__init__()
        if canonicalize is not None and not callable(canonicalize):
            raise TypeError(f"canonicalize must be a function (x, score, n, tau) -> CanonicalizationResult, "
                            f"got {type(canonicalize).__name__}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer (the order of C_n), got {n!r}")
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels must be a positive integer, got {in_channels!r}")
        if not tau > 0:
            raise ValueError(f"tau must be positive, got {tau!r}")
        if not isinstance(pool, int) or pool < 1:
            raise ValueError(f"pool must be a positive integer (average-pooling factor), got {pool!r}")
        self.n, self.in_channels, self.tau, self.pool = n, in_channels, float(tau), pool
        self.canonicalize = canonicalize if canonicalize is not None else canonicalize_cn
        pad = kernel_size // 2
        self.phi = nn.Sequential(
            nn.AvgPool2d(pool) if pool > 1 else nn.Identity(),
            nn.Conv2d(in_channels, hidden, kernel_size, padding=pad), nn.ReLU(), MaxPool2d(2),
            nn.Conv2d(hidden, hidden, kernel_size, padding=pad), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(hidden, hidden),   # the last 1x1 convolution, applied after the (commuting) spatial mean
        )
        for m in self.phi:
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.zeros_(m.bias)   # Kaba et al. and equiadapt start every bias at zero

    def _rotated_copies(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, n, C, H, W)``: ``r^{-j}·x`` for ``j = 0..n-1``."""
        return torch.stack([rotate_images_cn(x, -j, self.n) for j in range(self.n)], dim=1)

    def score_images(self, images: torch.Tensor) -> torch.Tensor:
        """``(N,)``: the score ``φ(image)`` of each image of ``images: (N, C, H, W)`` (one number per image;
        not equivariant by itself: the lifting to C_n is scoring every rotated copy)."""
        return self.phi(images).mean(-1)

    def _scores_of(self, rotated: torch.Tensor) -> torch.Tensor:
        B = rotated.shape[0]
        return self.score_images(rotated.flatten(0, 1)).reshape(B, self.n)

    def _check(self, x: torch.Tensor) -> None:
        _check_images(x, self.in_channels, type(self).__name__)
        if x.shape[-1] % self.pool:
            raise ValueError(f"{type(self).__name__}: image size {x.shape[-1]} is not divisible by pool={self.pool}")

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, n)`` logits ``s_j = φ(r^{-j}·x)``."""
        self._check(x)
        return self._scores_of(self._rotated_copies(x))

    def forward(self, x: torch.Tensor) -> CanonicalizationResult:
        self._check(x)
        result = self.canonicalize(x, self.score_images, self.n, self.tau)
        if not isinstance(result, CanonicalizationResult):
            raise TypeError(f"{type(self).__name__}: canonicalize must return a CanonicalizationResult, "
                            f"got {type(result).__name__}")
        return result


class C4ImageCanonicalizer(CnImageCanonicalizer):
    """:class:`CnImageCanonicalizer` with ``n = 4``: exactly C4-equivariant (``rot90``)."""

    def __init__(self, in_channels: int = 1, hidden: int = 16, kernel_size: int = 5, tau: float = 1.0, pool: int = 1,
                 canonicalize: Callable | None = None):
        super().__init__(4, in_channels, hidden, kernel_size, tau, pool, canonicalize)


def canonicalize_cn(x: torch.Tensor, score: Callable[[torch.Tensor], torch.Tensor], n: int,
                    tau: float = 1.0) -> CanonicalizationResult:
    """The forward pass of a C_n image canonicalizer (Kaba et al., ICML 2023): score, pick, un-rotate.

    1. the rotated copies ``r^{-j}·x`` for ``j = 0..n-1`` (:func:`rotate_images_cn`), ``(B, n, C, H, W)``;
    2. their scores ``s_j(x) = score(r^{-j}·x)``, ``(B, n)``: a lifting of ``score`` to C_n, so
       ``s(r^k·x)_j = s(x)_{j-k}`` and ``h(x) = argmax_j s_j(x)`` is equivariant;
    3. the straight-through one-hot ``w`` of the argmax (:func:`straight_through_onehot`, temperature ``tau``);
    4. the canonical input ``Σ_j w_j r^{-j}·x = r^{-h(x)}·x`` (exactly, in the forward pass; softmax
       gradients reach the scores).

    Args:
        x: images ``(B, C, H, W)``.
        score: ``(N, C, H, W) -> (N,)``, one score per image (e.g. :meth:`CnImageCanonicalizer.score_images`).
        n: the order of the rotation group.

    >>> s = lambda im: im[:, 0, 0, 0]          # score: the top-left pixel
    >>> x = torch.zeros(1, 1, 2, 2); x[0, 0, 1, 1] = 1.0          # a bright bottom-right pixel
    >>> r = canonicalize_cn(x, s, 4)
    >>> int(r.element), r.canonical[0, 0].tolist()                # rotated by 180° to put it top-left
    (2, [[1.0, 0.0], [0.0, 0.0]])
    """
    B = x.shape[0]
    rotated = torch.stack([rotate_images_cn(x, -j, n) for j in range(n)], dim=1)   # (B, n, C, H, W)
    scores = score(rotated.flatten(0, 1)).reshape(B, n)
    weights = straight_through_onehot(scores, tau)
    canonical = torch.einsum("bn,bnchw->bchw", weights, rotated)
    return CanonicalizationResult(element=scores.argmax(-1), scores=scores, canonical=canonical, weights=weights)


class MomentImageCanonicalizer(_ImageCanonicalizerBase):
    """Heuristic: rotate the image so that a direction computed from its moments points along +x.

    Pixel coordinates ``u`` (right) and ``v`` (up) are measured from the image centre, intensities
    ``I`` act as masses.

    * ``method="centroid"``: the direction is the intensity centroid ``c = Σ I·(u, v) / Σ I``.
    * ``method="axis"``: the principal axis of the second moments (angle
      ``θ = ½ atan2(2μ₁₁, μ₂₀ − μ₀₂)``), its sign chosen so that the third moment along it is positive:
      the 2-D analogue of a PCA frame.

    The scores ``s_j = ⟨d, e_j⟩`` (``e_j`` the unit vector at angle ``2πj/n``) shift cyclically with
    the input, exactly so for C4. Both are ambiguous on near-symmetric images (centroid at the
    centre, equal second moments, zero skewness): tiny pixel changes then flip the chosen rotation.
    No parameters; nothing to train.
    """

    def __init__(self, n: int = 4, method: Literal["centroid", "axis"] = "axis"):
        super().__init__()
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        if method not in ("centroid", "axis"):
            raise ValueError(f"method must be 'centroid' or 'axis', got {method!r}")
        self.n, self.tau, self.method = n, 1.0, method

    def _moments(self, x: torch.Tensor):
        _check_images(x, None, type(self).__name__)
        H = x.shape[-1]
        coords = torch.arange(H, dtype=x.dtype, device=x.device) - (H - 1) / 2
        I = x.sum(1)                                                  # (B, H, W)
        mass = I.sum((-2, -1)).clamp_min(1e-12)
        U = coords[None, :].expand(H, H)                              # column -> right
        V = (-coords)[:, None].expand(H, H)                           # row -> up
        cu = (I * U).sum((-2, -1)) / mass
        cv = (I * V).sum((-2, -1)) / mass
        du, dv = U - cu[:, None, None], V - cv[:, None, None]
        mu20, mu02, mu11 = ((I * du * du).sum((-2, -1)), (I * dv * dv).sum((-2, -1)), (I * du * dv).sum((-2, -1)))
        return I, cu, cv, du, dv, mu20, mu02, mu11

    def direction(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 2)`` the heuristic direction ``d`` (not normalised) in (right, up) coordinates."""
        I, cu, cv, du, dv, mu20, mu02, mu11 = self._moments(x)
        if self.method == "centroid":
            return torch.stack([cu, cv], -1)
        theta = 0.5 * torch.atan2(2 * mu11, mu20 - mu02)
        axis = torch.stack([torch.cos(theta), torch.sin(theta)], -1)  # (B, 2)
        proj = du * axis[:, 0, None, None] + dv * axis[:, 1, None, None]
        skew = (I * proj ** 3).sum((-2, -1))
        return axis * torch.where(skew >= 0, 1.0, -1.0).to(x)[:, None]

    def anisotropy(self, x: torch.Tensor) -> torch.Tensor:
        """``(B,)`` in [0, 1]: ``√((μ₂₀ − μ₀₂)² + 4μ₁₁²) / (μ₂₀ + μ₀₂)``, the relative gap between the two
        principal second moments. Near 0 the principal axis (``method="axis"``) is ill-defined."""
        _, _, _, _, _, mu20, mu02, mu11 = self._moments(x)
        return ((mu20 - mu02) ** 2 + 4 * mu11 ** 2).sqrt() / (mu20 + mu02).clamp_min(1e-12)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        d = self.direction(x)
        ang = 2 * math.pi * torch.arange(self.n, dtype=torch.float64) / self.n
        cos, sin = torch.cos(ang), torch.sin(ang)
        if 4 % self.n == 0:  # exact 0/±1 so that rot90 permutes the scores exactly
            cos, sin = torch.round(cos), torch.round(sin)
        return d[:, :1] * cos.to(x) + d[:, 1:] * sin.to(x)

    def forward(self, x: torch.Tensor) -> CanonicalizationResult:
        return self._result(x, self.scores(x))


# ----------------------------------------------------------------------------------------------
# Point sets: frames from equivariant vectors
# ----------------------------------------------------------------------------------------------

def gram_schmidt(v1: torch.Tensor, v2: torch.Tensor, v3: torch.Tensor | None = None, eps: float = 1e-9) -> torch.Tensor:
    """Orthonormal frames ``(B, 3, 3)`` (axes as columns) from vectors ``v1, v2 (, v3): (B, 3)``.

    ``e1 = v1/|v1|``, ``e2 = normalize(v2 − ⟨v2,e1⟩e1)``, and ``e3 = e1 × e2`` when ``v3`` is None
    (det = +1: an SO(3) frame, equivariant under rotations) or ``e3 = normalize(v3 − ⟨v3,e1⟩e1 −
    ⟨v3,e2⟩e2)`` (an O(3) frame, equivariant under rotations and reflections).
    Equivariance: ``gram_schmidt(v Qᵀ) = Q · gram_schmidt(v)`` for row vectors ``v``.

    >>> F = gram_schmidt(torch.tensor([[2.0, 0, 0]]), torch.tensor([[1.0, 1, 0]]))
    >>> F[0].tolist()
    [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    """
    for name, v in (("v1", v1), ("v2", v2), ("v3", v3)):
        if v is not None and (not torch.is_tensor(v) or v.ndim != 2 or v.shape[-1] != 3):
            raise ValueError(f"gram_schmidt: {name} must be (batch, 3) vectors, got {getattr(v, 'shape', type(v))}")
    if v1.shape != v2.shape or (v3 is not None and v3.shape != v1.shape):
        raise ValueError("gram_schmidt: v1, v2 (and v3) must have the same shape (batch, 3)")

    def normalize(v):
        return v / v.norm(dim=-1, keepdim=True).clamp_min(eps)

    e1 = normalize(v1)
    e2 = normalize(v2 - (v2 * e1).sum(-1, keepdim=True) * e1)
    if v3 is None:
        e3 = torch.linalg.cross(e1, e2, dim=-1)
    else:
        e3 = normalize(v3 - (v3 * e1).sum(-1, keepdim=True) * e1 - (v3 * e2).sum(-1, keepdim=True) * e2)
    return torch.stack([e1, e2, e3], dim=-1)


def _check_points(x: torch.Tensor, who: str) -> None:
    if not torch.is_tensor(x) or x.ndim != 3 or x.shape[-1] != 3:
        raise ValueError(f"{who}: x must be point sets of shape (B, N, 3) (row vectors), got {getattr(x, 'shape', type(x))}")
    if x.shape[1] < 3:
        raise ValueError(f"{who}: a frame needs at least 3 points per set, got N = {x.shape[1]}")


class _PointCanonicalizerBase(nn.Module):
    group: str

    def _finish(self, x: torch.Tensor, centre: torch.Tensor, frame: torch.Tensor) -> CanonicalizationResult:
        # h(x)⁻¹·x for row vectors: (x - c) @ (R⁻¹)ᵀ = (x - c) @ R
        canonical = (x - centre[:, None, :]) @ frame
        return CanonicalizationResult(element=frame, scores=None, canonical=canonical, origin=centre)

    def group_action(self, y: torch.Tensor, result: CanonicalizationResult, kind: str = "vector") -> torch.Tensor:
        """Map a backbone output back from the canonical frame: ``y @ Rᵀ`` for vectors ``y: (B, ..., 3)``;
        ``kind="point"`` also adds back the removed origin."""
        if kind not in ("vector", "point"):
            raise ValueError(f"kind must be 'vector' or 'point', got {kind!r}")
        if not torch.is_tensor(y) or y.shape[0] != result.element.shape[0] or y.shape[-1] != 3:
            raise ValueError(f"group_action: y must be (B, ..., 3) with B = {result.element.shape[0]}, got {getattr(y, 'shape', None)}")
        R = result.element
        out = (y.reshape(y.shape[0], -1, 3) @ R.transpose(-1, -2)).reshape(y.shape)
        if kind == "point":
            out = out + result.origin.reshape(y.shape[0], *([1] * (y.ndim - 2)), 3)
        return out


class PointFrameCanonicalizer(_PointCanonicalizerBase):
    """An O(3)-equivariant, permutation-invariant network that predicts a frame for a point set.

    For centred points ``r_i = x_i − x̄`` it computes invariant features per point from the distances
    ``|r_i|``, ``|r_j|``, ``|x_i − x_j|`` and ``⟨r_i, r_j⟩`` (an invariant message passing step,
    as in EGNN, Satorras et al. 2021), then ``m`` equivariant vectors ``v_k = (1/N) Σ_i a_k(h_i) r_i``
    (weights ``a_k`` from an MLP on the invariants). Rotating or reflecting the input rotates every
    ``v_k``; :func:`gram_schmidt` turns ``v_1, v_2 (, v_3)`` into the frame ``h(x)``.

    ``group="SO(3)"`` gives det = +1 frames (``e3 = e1 × e2``, equivariant to rotations);
    ``group="O(3)"`` uses a third vector (equivariant to rotations and reflections).
    Input ``x: (B, N, 3)``; ``forward`` returns :class:`CanonicalizationResult` with ``element`` the
    ``(B, 3, 3)`` frame, ``canonical = (x − x̄) @ R`` and ``origin = x̄``.

    ``frame``: the Gram-Schmidt step, ``frame(v1, v2) -> (B, 3, 3)`` for SO(3) or ``frame(v1, v2, v3)`` for
    O(3) (axes as columns); default :func:`gram_schmidt`. A chapter passes a learner's implementation here.
    """

    def __init__(self, hidden: int = 32, group: Literal["SO(3)", "O(3)"] = "SO(3)", frame: Callable | None = None):
        super().__init__()
        if group not in ("SO(3)", "O(3)"):
            raise ValueError(f"group must be 'SO(3)' or 'O(3)', got {group!r}")
        if frame is not None and not callable(frame):
            raise TypeError(f"frame must be a function (v1, v2[, v3]) -> (B, 3, 3) frames, got {type(frame).__name__}")
        self.frame = frame if frame is not None else gram_schmidt
        if not isinstance(hidden, int) or hidden < 1:
            raise ValueError(f"hidden must be a positive integer, got {hidden!r}")
        self.group = group
        n_vec = 2 if group == "SO(3)" else 3
        self.edge = nn.Sequential(nn.Linear(4, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
        self.node = nn.Sequential(nn.Linear(hidden + 1, hidden), nn.SiLU(), nn.Linear(hidden, n_vec))

    def vectors(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(vectors (B, m, 3), centre (B, 3))`` with ``m`` = 2 (SO(3)) or 3 (O(3))."""
        _check_points(x, type(self).__name__)
        centre = x.mean(1)
        r = x - centre[:, None, :]                                    # (B, N, 3)
        norm = r.norm(dim=-1)                                         # (B, N)
        dist = torch.cdist(x, x)                                      # (B, N, N)
        dot = r @ r.transpose(-1, -2)
        N = x.shape[1]
        feats = torch.stack([norm[:, :, None].expand(-1, -1, N), norm[:, None, :].expand(-1, N, -1), dist, dot], -1)
        h = self.edge(feats).mean(2)                                  # (B, N, hidden)
        a = self.node(torch.cat([h, norm[..., None]], -1))            # (B, N, m)
        return torch.einsum("bnk,bnd->bkd", a, r) / N, centre

    def forward(self, x: torch.Tensor) -> CanonicalizationResult:
        v, centre = self.vectors(x)
        frame = self.frame(v[:, 0], v[:, 1], v[:, 2]) if self.group == "O(3)" else self.frame(v[:, 0], v[:, 1])
        return self._finish(x, centre, frame)


class PCAFrameCanonicalizer(_PointCanonicalizerBase):
    """Heuristic: the principal axes of the point set, signs fixed by the third moment.

    ``Σ = (1/N) Σ_i r_i r_iᵀ``; axes = eigenvectors by decreasing eigenvalue; the sign of axis ``e``
    makes ``Σ_i ⟨r_i, e⟩³ ≥ 0``. For SO(3) the third axis is ``e1 × e2``. Equivariant only where the
    eigenvalues are distinct and the skewness non-zero; near-degenerate inputs (e.g. isotropic
    covariance) get an arbitrary, unstable frame. Nothing to train.
    """

    def __init__(self, group: Literal["SO(3)", "O(3)"] = "SO(3)"):
        super().__init__()
        if group not in ("SO(3)", "O(3)"):
            raise ValueError(f"group must be 'SO(3)' or 'O(3)', got {group!r}")
        self.group = group

    def forward(self, x: torch.Tensor) -> CanonicalizationResult:
        _check_points(x, type(self).__name__)
        centre = x.mean(1)
        r = x - centre[:, None, :]
        cov = r.transpose(-1, -2) @ r / x.shape[1]
        _, vecs = torch.linalg.eigh(cov)                            # ascending eigenvalues
        axes = vecs.flip(-1)                                          # (B, 3, 3), columns by decreasing variance
        skew = ((r @ axes) ** 3).sum(1)                               # (B, 3)
        sign = torch.where(skew >= 0, 1.0, -1.0).to(x)
        axes = axes * sign[:, None, :]
        if self.group == "SO(3)":
            axes = torch.stack([axes[..., 0], axes[..., 1], torch.linalg.cross(axes[..., 0], axes[..., 1], dim=-1)], -1)
        return self._finish(x, centre, axes)


def canonical_frame_consistency(canonicalizer: nn.Module, x: torch.Tensor, trials: int = 8, seed: int = 0) -> torch.Tensor:
    """How far each point set's canonical input moves when the input is rotated (0 = perfectly stable).

    Returns ``(B,)``: the mean over ``trials`` random rotations ``Q`` of ``‖c(x Qᵀ) − c(x)‖ / ‖c(x)‖``
    where ``c`` is the canonical input. Large for PCA on near-isotropic shapes.
    """
    from symviz.groups import random_rotation

    _check_points(x, "canonical_frame_consistency")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        base = canonicalizer(x).canonical
        errs = []
        for Q in random_rotation(trials, dtype=x.dtype, generator=gen):
            moved = canonicalizer(x @ Q.T).canonical
            errs.append((moved - base).flatten(1).norm(dim=1) / (base.flatten(1).norm(dim=1) + 1e-12))
    return torch.stack(errs).mean(0)


def rotation_angle(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """Angle in degrees of the rotation taking frame ``B`` to frame ``A``: ``arccos((tr(AᵀB) − 1)/2)``,
    batched over leading axes of ``A, B: (..., 3, 3)``."""
    if A.shape[-2:] != (3, 3) or B.shape[-2:] != (3, 3):
        raise ValueError(f"rotation_angle: expected (..., 3, 3) matrices, got {tuple(A.shape)} and {tuple(B.shape)}")
    tr = (A * B).sum((-2, -1))
    return torch.rad2deg(torch.arccos(((tr - 1) / 2).clamp(-1.0, 1.0)))


def pose_spread(frames: torch.Tensor, rotations: torch.Tensor) -> float:
    """How differently a canonicalizer poses samples of the *same* shape, in degrees (0 = all aligned).

    A sample ``x_i = t·R_iᵀ`` (template ``t``, known rotation ``R_i``) is canonicalized to
    ``x_i·F_i = t·(R_iᵀF_i)``: the template seen under ``M_i = R_iᵀF_i``. Returns the median over
    pairs ``i < j`` of the angle between ``M_i`` and ``M_j``. Random frames give about 126°.

    Args:
        frames: ``(M, 3, 3)`` predicted frames ``F_i`` (axes as columns).
        rotations: ``(M, 3, 3)`` the rotations ``R_i`` applied to the template.
    """
    if frames.shape != rotations.shape or frames.ndim != 3 or frames.shape[-2:] != (3, 3) or frames.shape[0] < 2:
        raise ValueError(f"frames and rotations must both be (M >= 2, 3, 3), got {tuple(frames.shape)} and {tuple(rotations.shape)}")
    M = rotations.transpose(-1, -2).to(torch.float64) @ frames.to(torch.float64)
    i, j = torch.triu_indices(len(M), len(M), 1)
    return float(rotation_angle(M[i], M[j]).median())


# ----------------------------------------------------------------------------------------------
# The wrapper
# ----------------------------------------------------------------------------------------------

class CanonicalizedModel(nn.Module):
    """``f(x) = p(h(x)⁻¹·x)`` (invariant) or ``h(x)·p(h(x)⁻¹·x)`` (equivariant), Kaba et al. (2023).

    Args:
        canonicalizer: a module returning :class:`CanonicalizationResult` (any in this module).
        backbone: any ``nn.Module`` taking the canonical input.
        output: ``"invariant"`` (e.g. class logits) or ``"equivariant"`` (the output transforms like the
            input; mapped back with ``canonicalizer.group_action``).
        output_kind: for point-set canonicalizers and equivariant outputs: ``"vector"`` or ``"point"``.

    No state is stored between calls: :meth:`forward_with_details` returns the result object.

    >>> model = CanonicalizedModel(C4ImageCanonicalizer(hidden=4), nn.Sequential(nn.Flatten(), nn.Linear(64, 3)))
    >>> x = torch.rand(5, 1, 8, 8)
    >>> torch.allclose(model(x), model(torch.rot90(x, 3, dims=(-2, -1))))
    True
    """

    def __init__(self, canonicalizer: nn.Module, backbone: nn.Module,
                 output: Literal["invariant", "equivariant"] = "invariant", output_kind: str = "vector"):
        super().__init__()
        if output not in ("invariant", "equivariant"):
            raise ValueError(f"output must be 'invariant' or 'equivariant', got {output!r}")
        if not isinstance(canonicalizer, nn.Module) or not isinstance(backbone, nn.Module):
            raise TypeError("canonicalizer and backbone must be torch.nn.Module instances")
        if output == "equivariant" and not hasattr(canonicalizer, "group_action"):
            raise ValueError(f"{type(canonicalizer).__name__} cannot map outputs back (no group_action): use output='invariant'")
        self.canonicalizer, self.backbone = canonicalizer, backbone
        self.output, self.output_kind = output, output_kind

    def forward_with_details(self, x: torch.Tensor) -> tuple[torch.Tensor, CanonicalizationResult]:
        """``(output, CanonicalizationResult)``."""
        result = self.canonicalizer(x)
        y = self.backbone(result.canonical)
        if self.output == "equivariant":
            if isinstance(self.canonicalizer, _PointCanonicalizerBase):
                y = self.canonicalizer.group_action(y, result, kind=self.output_kind)
            else:
                y = self.canonicalizer.group_action(y, result)
        return y, result

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_details(x)[0]


class PointNetClassifier(nn.Module):
    """An unconstrained point-set classifier (PointNet, Qi et al., CVPR 2017), a backbone to canonicalize.

    ``logits = MLP₂(max_i MLP₁(x_i))`` for ``x: (B, N, 3) -> (B, n_classes)``: invariant to the order
    of the points, *not* to rotations (it sees raw coordinates).
    """

    def __init__(self, n_classes: int, hidden: int = 64):
        super().__init__()
        if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2:
            raise ValueError(f"n_classes must be an integer >= 2, got {n_classes!r}")
        self.point = nn.Sequential(nn.Linear(3, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                   nn.Linear(hidden, 2 * hidden))
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(x) or x.ndim != 3 or x.shape[-1] != 3:
            raise ValueError(f"PointNetClassifier: x must be (B, N, 3), got {getattr(x, 'shape', type(x))}")
        return self.head(self.point(x).amax(1))


# ----------------------------------------------------------------------------------------------
# N-body systems: E(3)-equivariant prediction with any backbone (Kaba et al. 2023, Sec. 7.2)
# ----------------------------------------------------------------------------------------------
#
# An N-body state is positions ``loc (B, n, 3)`` (points: rotated and translated), velocities
# ``vel (B, n, 3)`` (vectors: rotated only) and charges ``charges (B, n, 1)`` (invariant); the target,
# the positions some time later, is a point set again. A frame ``(F, c)`` (axes as columns, origin c)
# maps a state into canonical coordinates ``((loc − c) F, vel F, charges)`` and a canonical prediction
# ``y`` back to ``y Fᵀ + c``. With an equivariant frame, ``F(Q·x) = Q F(x)``, ``c(Q·x + t) = Q c(x) + t``,
# the model ``x ↦ p(canonical x) Fᵀ + c`` is E(3)-equivariant whatever ``p`` is.

def _check_nbody(loc, vel, charges, who: str) -> None:
    for name, t in (("loc", loc), ("vel", vel)):
        if not torch.is_tensor(t) or t.ndim != 3 or t.shape[-1] != 3:
            raise ValueError(f"{who}: {name} must be (B, n, 3) row vectors, got {getattr(t, 'shape', type(t))}")
    if vel.shape != loc.shape:
        raise ValueError(f"{who}: loc and vel must have the same shape, got {tuple(loc.shape)} and {tuple(vel.shape)}")
    if not torch.is_tensor(charges) or tuple(charges.shape) != tuple(loc.shape[:2]) + (1,):
        raise ValueError(f"{who}: charges must be (B, n, 1) = {tuple(loc.shape[:2]) + (1,)}, "
                         f"got {getattr(charges, 'shape', type(charges))}")
    if loc.shape[1] < 2:
        raise ValueError(f"{who}: an N-body system needs at least 2 particles, got n = {loc.shape[1]}")


def pca_frames(x: torch.Tensor, group: Literal["SO(3)", "O(3)"] = "O(3)") -> tuple[torch.Tensor, torch.Tensor]:
    """The frames of Frame Averaging (Puny et al., ICLR 2022, Sec. 3.1): principal axes, every sign choice.

    For points ``x: (B, N, 3)`` with centroid ``c`` and covariance ``Σ = (1/N) Σ_i (x_i − c)(x_i − c)ᵀ =
    U Λ Uᵀ`` (eigenvalues decreasing), the frames are ``U diag(s)`` for the ``2³ = 8`` signs ``s ∈ {±1}³``
    (``group="O(3)"``) or the 4 of them with ``det = +1`` (``"SO(3)"``). The *set* of frames moves with the
    input, ``{Q U diag(s)}``, whatever signs ``eigh`` returns, so averaging over it is exactly equivariant
    wherever the eigenvalues are distinct.

    Returns ``(frames (B, k, 3, 3), centre (B, 3))``, ``k`` = 8 or 4, axes as columns.

    >>> x = torch.tensor([[[2.0, 0, 0], [-2, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 0.5], [0, 0, -0.5]]])
    >>> F, c = pca_frames(x)
    >>> F.shape, c.tolist()
    (torch.Size([1, 8, 3, 3]), [[0.0, 0.0, 0.0]])
    >>> F[0].abs().sub(torch.eye(3)).abs().max().item()   # every frame is the identity up to signs
    0.0
    >>> pca_frames(x, "SO(3)")[0].det().tolist()
    [[1.0, 1.0, 1.0, 1.0]]
    """
    if group not in ("SO(3)", "O(3)"):
        raise ValueError(f"group must be 'SO(3)' or 'O(3)', got {group!r}")
    _check_points(x, "pca_frames")
    centre = x.mean(1)
    r = x - centre[:, None, :]
    _, vecs = torch.linalg.eigh(r.transpose(-1, -2) @ r / x.shape[1])
    U = vecs.flip(-1)                                                  # (B, 3, 3), decreasing variance
    signs = torch.tensor([[a, b, c] for a in (1.0, -1.0) for b in (1.0, -1.0) for c in (1.0, -1.0)],
                         dtype=x.dtype, device=x.device)              # (8, 3)
    frames = U[:, None] * signs[None, :, None, :]                      # (B, 8, 3, 3): column k times s_k
    if group == "SO(3)":
        keep = torch.linalg.det(frames) > 0                            # (B, 8), exactly 4 per row
        frames = frames[keep].reshape(x.shape[0], 4, 3, 3)
    return frames, centre


class NBodyFrameCanonicalizer(_PointCanonicalizerBase):
    """A learned E(3)-equivariant frame for an N-body state (Kaba et al., ICML 2023, Sec. 7.2), EGNN-style.

    Invariant message passing (as in EGNN, Satorras et al. 2021) on the complete graph of the particles:

        h_i⁰  = φ_in(|r_i|², |v_i|², ⟨r_i, v_i⟩, q_i)                 r_i = x_i − x̄ (centred positions)
        m_ij  = φ_e(h_i, h_j, |x_i − x_j|², q_i q_j, ⟨v_i, v_j⟩)
        h_i  ← h_i + φ_h(h_i, Σ_{j≠i} m_ij)                         (``n_layers`` times)

    then ``m`` equivariant vectors ``w_k = (1/n) Σ_i (a_k(h_i) r_i + b_k(h_i) v_i)`` (translation-invariant,
    rotated and reflected with the input), and :func:`gram_schmidt` turns ``w_1, w_2 (, w_3)`` into the frame.
    The origin is the centroid ``x̄``, as in the paper's N-body model (no learned translation).

    ``group="O(3)"`` (default; three vectors, the paper's choice) gives frames equivariant to rotations *and*
    reflections, so the wrapped model is E(3)-equivariant; ``"SO(3)"`` (two vectors, ``e3 = e1 × e2``) gives
    SE(3)-equivariance only. ``frame`` replaces the Gram-Schmidt step (a learner's, for instance).

    ``forward(loc, vel, charges) -> CanonicalizationResult`` with ``element`` the frame ``(B, 3, 3)`` (axes as
    columns), ``origin = x̄`` and ``canonical = (loc − x̄) F`` (the canonical velocities are ``vel F``).
    """

    def __init__(self, hidden: int = 16, n_layers: int = 2, group: Literal["SO(3)", "O(3)"] = "O(3)",
                 frame: Callable | None = None):
        super().__init__()
        if group not in ("SO(3)", "O(3)"):
            raise ValueError(f"group must be 'SO(3)' or 'O(3)', got {group!r}")
        for name, v in (("hidden", hidden), ("n_layers", n_layers)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if frame is not None and not callable(frame):
            raise TypeError(f"frame must be a function (v1, v2[, v3]) -> (B, 3, 3) frames, got {type(frame).__name__}")
        self.group, self.hidden, self.n_layers = group, hidden, n_layers
        self.frame = frame if frame is not None else gram_schmidt
        self.n_vectors = 2 if group == "SO(3)" else 3
        act = nn.SiLU
        self.embed = nn.Sequential(nn.Linear(4, hidden), act(), nn.Linear(hidden, hidden))
        self.edge_mlps = nn.ModuleList(nn.Sequential(nn.Linear(2 * hidden + 3, hidden), act(), nn.Linear(hidden, hidden), act())
                                       for _ in range(n_layers))
        self.node_mlps = nn.ModuleList(nn.Sequential(nn.Linear(2 * hidden, hidden), act(), nn.Linear(hidden, hidden))
                                       for _ in range(n_layers))
        self.weights = nn.Sequential(nn.Linear(hidden, hidden), act(), nn.Linear(hidden, 2 * self.n_vectors))

    def vectors(self, loc: torch.Tensor, vel: torch.Tensor, charges: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(vectors (B, m, 3), centre (B, 3))``: the ``m`` = 2 (SO(3)) or 3 (O(3)) equivariant vectors."""
        _check_nbody(loc, vel, charges, type(self).__name__)
        B, n, _ = loc.shape
        centre = loc.mean(1)
        r = loc - centre[:, None, :]
        h = self.embed(torch.cat([(r * r).sum(-1, keepdim=True), (vel * vel).sum(-1, keepdim=True),
                                  (r * vel).sum(-1, keepdim=True), charges], -1))         # (B, n, H)
        d2 = ((loc[:, :, None, :] - loc[:, None, :, :]) ** 2).sum(-1, keepdim=True)        # (B, n, n, 1)
        qq = charges[:, :, None, :] * charges[:, None, :, :]
        vv = (vel @ vel.transpose(-1, -2))[..., None]
        edge_inv = torch.cat([d2, qq, vv], -1)                                              # (B, n, n, 3)
        off = (1.0 - torch.eye(n, dtype=loc.dtype, device=loc.device))[None, :, :, None]    # no self-messages
        for edge_mlp, node_mlp in zip(self.edge_mlps, self.node_mlps):
            m = edge_mlp[1:](_pair_linear(edge_mlp[0], h, edge_inv))                        # m_ij: (B, n, n, H)
            h = h + node_mlp(torch.cat([h, (m * off).sum(2)], -1))
        ab = self.weights(h)                                                                # (B, n, 2m)
        a, b = ab[..., :self.n_vectors], ab[..., self.n_vectors:]
        w = (torch.einsum("bnk,bnd->bkd", a, r) + torch.einsum("bnk,bnd->bkd", b, vel)) / n
        return w, centre

    def forward(self, loc: torch.Tensor, vel: torch.Tensor, charges: torch.Tensor) -> CanonicalizationResult:
        w, centre = self.vectors(loc, vel, charges)
        F = self.frame(*(w[:, k] for k in range(self.n_vectors)))
        if not torch.is_tensor(F) or F.shape != (loc.shape[0], 3, 3):
            raise ValueError(f"{type(self).__name__}: frame must return (B, 3, 3) frames, got {getattr(F, 'shape', type(F))}")
        return self._finish(loc, centre, F)


class PCANBodyCanonicalizer(_PointCanonicalizerBase):
    """The PCA heuristic (:class:`PCAFrameCanonicalizer`) as an N-body canonicalizer: the principal axes of the
    positions, signs fixed by the third moment, origin at the centroid; velocities and charges are ignored.
    ``forward(loc, vel, charges) -> CanonicalizationResult`` like :class:`NBodyFrameCanonicalizer`. Nothing to train."""

    def __init__(self, group: Literal["SO(3)", "O(3)"] = "O(3)"):
        super().__init__()
        self.pca = PCAFrameCanonicalizer(group)
        self.group = group

    def forward(self, loc: torch.Tensor, vel: torch.Tensor, charges: torch.Tensor) -> CanonicalizationResult:
        _check_nbody(loc, vel, charges, type(self).__name__)
        return self.pca(loc)


class NBodyGNN(nn.Module):
    """The non-equivariant message-passing network of the N-body benchmark ("GNN" in Satorras et al. 2021,
    Table 2; the backbone of Kaba et al. 2023 and of Frame Averaging, Puny et al. 2022).

    Node input: the raw coordinates ``[x_i, v_i]`` (6 numbers; this is what makes it non-equivariant); edge
    attributes ``a_ij = [q_i q_j, |x_i − x_j|²]``; ``n_layers`` residual graph convolutions on the complete graph

        h_i⁰ = W [x_i, v_i] + b,   m_ij = φ_e(h_i, h_j, a_ij),   h_i ← h_i + φ_h(h_i, Σ_{j≠i} m_ij)

    and a decoder ``φ_d(h_i) ∈ R³``. ``residual=False`` returns ``φ_d(h_i)`` as the predicted position, as the
    papers' GNN does; ``residual=True`` (default here) returns ``x_i + φ_d(h_i)``, a displacement added to the
    input position, which learns much faster at the chapter's small training budgets (see the notebook).

    ``forward(loc (B, n, 3), vel (B, n, 3), charges (B, n, 1)) -> (B, n, 3)`` predicted positions.
    """

    def __init__(self, hidden: int = 64, n_layers: int = 4, residual: bool = True):
        super().__init__()
        for name, v in (("hidden", hidden), ("n_layers", n_layers)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        self.hidden, self.n_layers, self.residual = hidden, n_layers, bool(residual)
        act = nn.SiLU
        self.embedding = nn.Linear(6, hidden)
        self.edge_mlps = nn.ModuleList(nn.Sequential(nn.Linear(2 * hidden + 2, hidden), act(), nn.Linear(hidden, hidden), act())
                                       for _ in range(n_layers))
        self.node_mlps = nn.ModuleList(nn.Sequential(nn.Linear(2 * hidden, hidden), act(), nn.Linear(hidden, hidden))
                                       for _ in range(n_layers))
        self.decoder = nn.Sequential(nn.Linear(hidden, hidden), act(), nn.Linear(hidden, 3))

    def forward(self, loc: torch.Tensor, vel: torch.Tensor, charges: torch.Tensor) -> torch.Tensor:
        _check_nbody(loc, vel, charges, type(self).__name__)
        B, n, _ = loc.shape
        h = self.embedding(torch.cat([loc, vel], -1))
        d2 = ((loc[:, :, None, :] - loc[:, None, :, :]) ** 2).sum(-1, keepdim=True)
        a = torch.cat([charges[:, :, None, :] * charges[:, None, :, :], d2], -1)             # (B, n, n, 2)
        off = (1.0 - torch.eye(n, dtype=loc.dtype, device=loc.device))[None, :, :, None]
        for edge_mlp, node_mlp in zip(self.edge_mlps, self.node_mlps):
            m = edge_mlp[1:](_pair_linear(edge_mlp[0], h, a))                               # m_ij: (B, n, n, H)
            h = h + node_mlp(torch.cat([h, (m * off).sum(2)], -1))
        out = self.decoder(h)
        return loc + out if self.residual else out


def _pair_linear(lin: nn.Linear, h: torch.Tensor, edge: torch.Tensor) -> torch.Tensor:
    """``lin([h_i, h_j, e_ij])`` for every pair ``(i, j)``: ``(B, n, n, out)`` from ``h: (B, n, H)`` and
    ``edge: (B, n, n, k)``, with ``lin = Linear(2H + k, out)``. Computed as ``W_1 h_i + W_2 h_j + W_3 e_ij + b``
    (the blocks of the one weight matrix, so the function and its initialisation are those of the
    concatenated layer) to spend the ``H``-wide products once per node rather than once per pair."""
    H = h.shape[-1]
    W = lin.weight
    node_i = h @ W[:, :H].T + lin.bias
    node_j = h @ W[:, H:2 * H].T
    return node_i[:, :, None, :] + node_j[:, None, :, :] + edge @ W[:, 2 * H:].T


def _to_frame(loc: torch.Tensor, vel: torch.Tensor, F: torch.Tensor, centre: torch.Tensor):
    """Canonical coordinates ``((loc − c) F, vel F)`` for frames ``F: (B, 3, 3)`` and origins ``c: (B, 3)``."""
    return (loc - centre[:, None, :]) @ F, vel @ F


class CanonicalizedNBodyModel(nn.Module):
    """``f(x, v, q) = p((x − c) F, v F, q) Fᵀ + c`` with a learned frame ``(F, c)`` (Kaba et al. 2023).

    ``canonicalizer``: e.g. :class:`NBodyFrameCanonicalizer` (``(loc, vel, charges) -> CanonicalizationResult``
    with ``element`` the frame and ``origin`` the centre); ``backbone``: any ``(loc, vel, charges) -> (B, n, 3)``
    position predictor, e.g. :class:`NBodyGNN`. Canonicalizer and backbone train together, end to end.
    E(3)-equivariant when the frames are O(3)-equivariant (SE(3) with SO(3) frames), for any backbone.
    """

    def __init__(self, canonicalizer: nn.Module, backbone: nn.Module):
        super().__init__()
        if not isinstance(canonicalizer, nn.Module) or not isinstance(backbone, nn.Module):
            raise TypeError("canonicalizer and backbone must be torch.nn.Module instances")
        self.canonicalizer, self.backbone = canonicalizer, backbone

    def forward_with_details(self, loc, vel, charges) -> tuple[torch.Tensor, CanonicalizationResult]:
        """``(predicted positions (B, n, 3), CanonicalizationResult)``."""
        result = self.canonicalizer(loc, vel, charges)
        F, c = result.element, result.origin
        cl, cv = _to_frame(loc, vel, F, c)
        y = self.backbone(cl, cv, charges)
        return y @ F.transpose(-1, -2) + c[:, None, :], result

    def forward(self, loc: torch.Tensor, vel: torch.Tensor, charges: torch.Tensor) -> torch.Tensor:
        return self.forward_with_details(loc, vel, charges)[0]


class FrameAveragedNBodyModel(nn.Module):
    """Frame Averaging (Puny et al., ICLR 2022): ``f(x, v, q) = (1/|𝓕|) Σ_{F ∈ 𝓕(x)} [p((x − c) F, v F, q) Fᵀ] + c``.

    ``𝓕(x)`` are the :func:`pca_frames` of the positions (8 for ``group="O(3)"``: E(3)-equivariant; 4 for
    ``"SO(3)"``: SE(3)-equivariant), ``c`` their centroid. The heuristic baseline of Kaba et al.'s N-body
    experiment (their "FA-GNN" row): a predefined frame set instead of a learned frame, and the backbone runs
    ``|𝓕|`` times per input. Exact wherever the covariance's eigenvalues are distinct.
    """

    def __init__(self, backbone: nn.Module, group: Literal["SO(3)", "O(3)"] = "O(3)"):
        super().__init__()
        if not isinstance(backbone, nn.Module):
            raise TypeError("backbone must be a torch.nn.Module instance")
        if group not in ("SO(3)", "O(3)"):
            raise ValueError(f"group must be 'SO(3)' or 'O(3)', got {group!r}")
        self.backbone, self.group = backbone, group

    def forward(self, loc: torch.Tensor, vel: torch.Tensor, charges: torch.Tensor) -> torch.Tensor:
        _check_nbody(loc, vel, charges, type(self).__name__)
        B, n, _ = loc.shape
        frames, centre = pca_frames(loc, self.group)                       # (B, k, 3, 3), (B, 3)
        k = frames.shape[1]
        F = frames.reshape(B * k, 3, 3)
        rep = lambda t: t[:, None].expand(B, k, *t.shape[1:]).reshape(B * k, *t.shape[1:])  # noqa: E731
        cl, cv = _to_frame(rep(loc), rep(vel), F, rep(centre))
        y = self.backbone(cl, cv, rep(charges)) @ F.transpose(-1, -2)      # (B k, n, 3), back in the input frame
        return y.reshape(B, k, n, 3).mean(1) + centre[:, None, :]
