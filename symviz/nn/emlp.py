"""Equivariant MLPs for finite groups, and their relaxed (symmetry-breaking) versions.

Teaches: S.-O. Kaba and S. Ravanbakhsh, "Symmetry Breaking and Equivariant Neural Networks",
arXiv:2312.09016 (2023). The E-MLP construction follows M. Finzi, M. Welling and A. G. Wilson, "A
Practical Method for Constructing Equivariant Multilayer Perceptrons for Arbitrary Matrix Groups",
ICML 2021 (arXiv:2104.09459): the equivariant linear maps are the solutions of

    ρ_out(g) W = W ρ_in(g)    for every generator g of G,

found numerically as a null space (SVD), or, when both representations permute coordinates, as the
maps that are constant on the orbits of G on index pairs (the same space, found faster).

Conventions: a representation acts on **flat feature vectors** ``x: (..., d)`` as ``x @ ρ(g).T``. A
permutation representation is stored as gather indices ``p`` with ``(g·x)[i] = x[p[i]]`` (the
convention of :mod:`symviz.groups`), i.e. ``ρ(g)[i, p[i]] = 1``. A direct sum of representations with
multiplicities (a :class:`SumRep`) lays its features out block after block, each block channel-major
``(channels, dim)`` flattened.

Relaxed equivariance (Kaba & Ravanbakhsh): ``f(g·x) = g·h·f(x)`` for some ``h`` in the
stabilizer ``G_x = {h : h·x = x}``. :class:`RelaxedEMLP` builds it from an E-MLP that also reads a
*symmetry-breaking object* ``b`` in the regular representation: ``b = e_k`` with ``k = k(x)`` a
canonicalizing group element (``k(x)⁻¹·x`` is the same for the whole orbit of ``x``). Since
``k(g·x) = g·h·k(x)`` for some ``h ∈ G_x``, the pair ``(x, b)`` moves by ``g·h`` and the E-MLP's
output does too.

    >>> from symviz.groups import DihedralGroup
    >>> D4 = DihedralGroup(4)
    >>> nodes = Representation.from_group_vertices(D4)          # D4 permuting the 4 vertices of a square
    >>> model = EMLP(nodes, nodes, hidden=4, depth=1).double()
    >>> x = torch.randn(3, 4, dtype=torch.float64)
    >>> equivariance_violation(model, x, nodes, nodes) < 1e-12
    True
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from symviz.equivariance import relative_error
from symviz.groups import FiniteGroup, PermutationGroup  # PermutationGroup re-exported for emlp users
from symviz.train import CallRef
from symviz.reps import (Representation, SumRep, as_sumrep, equivariant_basis, fixed_basis, generators,
                         graph_automorphism_group, stabilizer_elements)

__all__ = [
    "PermutationGroup", "graph_automorphism_group", "Representation", "SumRep", "as_sumrep",
    "equivariant_basis", "EquivariantLinear", "EMLP", "Canonicalizer", "BreakingResult",
    "RelaxedEMLP", "NoiseEMLP", "CanonicalRelaxed", "stabilizer_elements",
    "relaxed_equivariance_violation", "equivariance_violation", "generators",
]


class EquivariantLinear(nn.Module):
    """``y = W x + b`` with ``W`` in the space of equivariant maps between two :class:`SumRep` s.

    ``W`` is parametrised as ``Σ_k θ_k ⊗ B_k`` per pair of blocks, ``B_k`` from
    :func:`equivariant_basis`, ``θ_k`` a ``(c_out, c_in)`` matrix of learned weights; the bias lives in
    the fixed subspace of ``ρ_out``. Input ``x: (..., rep_in.dim)``, output ``(..., rep_out.dim)``.
    """

    def __init__(self, rep_in, rep_out, bias: bool = True):
        super().__init__()
        self.rep_in, self.rep_out = as_sumrep(rep_in), as_sumrep(rep_out)
        if self.rep_in.group is not self.rep_out.group:
            raise ValueError("rep_in and rep_out must represent the same group object")
        fan_in = self.rep_in.dim
        self.weights = nn.ParameterList()
        self.pairs: list[tuple[int, int, int]] = []  # (out block, in block, index in weights)
        cache: dict = {}
        for o, (ro, co) in enumerate(self.rep_out.blocks):
            for i, (ri, ci) in enumerate(self.rep_in.blocks):
                key = (id(ri), id(ro))
                if key not in cache:
                    # kept in float64 (cast in forward): a float32-rounded SVD basis is only
                    # equivariant to ~1e-8, which would hide the exactness the chapter measures
                    cache[key] = equivariant_basis(ri, ro)
                B = cache[key]
                if B.shape[0] == 0:
                    continue
                name = f"basis_{o}_{i}"
                self.register_buffer(name, B, persistent=False)
                std = math.sqrt(2.0 / fan_in * ro.dim * ri.dim / B.shape[0])
                self.weights.append(nn.Parameter(torch.randn(co, ci, B.shape[0]) * std))
                self.pairs.append((o, i, len(self.weights) - 1))
        self.biases = nn.ParameterList()
        self.bias_blocks: list[tuple[int, int]] = []
        if bias:
            for o, (ro, co) in enumerate(self.rep_out.blocks):
                Bb = fixed_basis(ro)
                if Bb.shape[0] == 0:
                    continue
                self.register_buffer(f"bias_basis_{o}", Bb, persistent=False)
                self.biases.append(nn.Parameter(torch.zeros(co, Bb.shape[0])))
                self.bias_blocks.append((o, len(self.biases) - 1))

    def weight_matrix(self) -> torch.Tensor:
        """The full ``(rep_out.dim, rep_in.dim)`` matrix ``W``."""
        ref = self.weights[0] if len(self.weights) else next(iter(self.buffers()))
        W = torch.zeros(self.rep_out.dim, self.rep_in.dim, dtype=ref.dtype, device=ref.device)
        offs_o = np.cumsum([0] + [r.dim * c for r, c in self.rep_out.blocks])
        offs_i = np.cumsum([0] + [r.dim * c for r, c in self.rep_in.blocks])
        for o, i, w in self.pairs:
            theta = self.weights[w]
            B = getattr(self, f"basis_{o}_{i}").to(theta.dtype)
            block = torch.einsum("ock,kab->oacb", theta, B).reshape(theta.shape[0] * B.shape[1], theta.shape[1] * B.shape[2])
            W[offs_o[o]:offs_o[o + 1], offs_i[i]:offs_i[i + 1]] = block
        return W

    def bias_vector(self) -> torch.Tensor | None:
        if not self.bias_blocks:
            return None
        ref = self.biases[0]
        b = torch.zeros(self.rep_out.dim, dtype=ref.dtype, device=ref.device)
        offs_o = np.cumsum([0] + [r.dim * c for r, c in self.rep_out.blocks])
        for o, j in self.bias_blocks:
            Bb = getattr(self, f"bias_basis_{o}").to(ref.dtype)
            b[offs_o[o]:offs_o[o + 1]] = (self.biases[j] @ Bb).reshape(-1)
        return b

    def _weights(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(W, b)``; without autograd they are cached until a parameter changes (in place or not),
        which makes evaluating large groups (e.g. S5's 120-dim regular representation) cheap."""
        if torch.is_grad_enabled():
            return self.weight_matrix(), self.bias_vector()
        key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in self.parameters())
        cache = getattr(self, "_cache", None)
        if cache is None or cache[0] != key:
            cache = (key, self.weight_matrix(), self.bias_vector())
            self._cache = cache
        return cache[1], cache[2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.rep_in.dim:
            raise ValueError(f"EquivariantLinear expects x: (..., {self.rep_in.dim}) features, got shape {tuple(x.shape)}")
        W, b = self._weights()
        y = x @ W.T
        return y if b is None else y + b


class EMLP(nn.Module):
    """An equivariant MLP for a finite group: ``EquivariantLinear`` layers with ReLU in between.

    Hidden layers use ``hidden`` copies of ``hidden_rep`` (default: the regular representation), which
    must be a permutation representation so that the pointwise ReLU commutes with the group
    (``ReLU(P x) = P ReLU(x)``). Input ``x: (..., rep_in.dim)``, output ``(..., rep_out.dim)``;
    ``f(ρ_in(g) x) = ρ_out(g) f(x)`` for all ``g`` (up to float rounding).
    """

    def __init__(self, rep_in, rep_out, hidden: int = 16, depth: int = 2, hidden_rep: Representation | None = None,
                 out_gain: float = 1.0):
        super().__init__()
        self.rep_in, self.rep_out = as_sumrep(rep_in), as_sumrep(rep_out)
        if self.rep_in.group is not self.rep_out.group:
            raise ValueError("rep_in and rep_out must represent the same group object")
        if not isinstance(hidden, int) or hidden < 1:
            raise ValueError(f"hidden (channels per hidden layer) must be a positive integer, got {hidden!r}")
        if not isinstance(depth, int) or depth < 0:
            raise ValueError(f"depth (number of hidden layers) must be a non-negative integer, got {depth!r}")
        G = self.rep_in.group
        hidden_rep = hidden_rep or Representation.regular(G)
        if not hidden_rep.is_permutation:
            raise ValueError("hidden_rep must be a permutation representation (ReLU is only equivariant for those)")
        reps = [self.rep_in] + [SumRep([(hidden_rep, hidden)])] * depth + [self.rep_out]
        self.layers = nn.ModuleList(EquivariantLinear(a, b) for a, b in zip(reps[:-1], reps[1:]))
        # a small last layer starts outputs near 0, where an energy landscape's steepest descent
        # picks the lowest mode (e.g. the Néel pattern) instead of freezing a random saturated one
        with torch.no_grad():
            for w in self.layers[-1].weights:
                w.mul_(float(out_gain))

    @property
    def group(self) -> FiniteGroup:
        return self.rep_in.group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for k, layer in enumerate(self.layers):
            x = layer(x)
            if k < len(self.layers) - 1:
                x = torch.relu(x)
        return x


# ----------------------------------------------------------------------------------------------
# Symmetry breaking
# ----------------------------------------------------------------------------------------------

@dataclass
class BreakingResult:
    """What a symmetry-breaking step computed, returned rather than stored on the module.

    ``k: (B,)`` the chosen group elements; ``candidates: (B, |G|)`` bool, the valid choices
    ``K(x) = {k : ρ(k)⁻¹ x = c(x)}`` (one coset ``G_x·k``); ``canonical: (B, d)`` the canonical
    input ``c(x)``; ``b: (B, |G|)`` the symmetry-breaking object ``e_k`` (regular representation).
    """

    k: torch.Tensor
    candidates: torch.Tensor
    canonical: torch.Tensor
    b: torch.Tensor


class Canonicalizer:
    """Canonicalization by the lexicographically largest point of the orbit.

    ``c(x) = max_lex {ρ(g)⁻¹ x : g ∈ G}`` (coordinates rounded to ``decimals`` so that float
    rounding of ``g·x`` does not change the choice), ``K(x) = {k : ρ(k)⁻¹ x = c(x)} = G_x·k₀``.
    ``K(g·x) = g·K(x)``, so any choice ``k(x) ∈ K(x)`` satisfies ``k(g·x) = g·h·k(x)`` with
    ``h ∈ G_x``. Deterministic mode picks the smallest element index of ``K(x)``; ``sample=True``
    picks uniformly in ``K(x)`` (the probabilistic symmetry breaking of Kaba & Ravanbakhsh).
    """

    def __init__(self, rep, decimals: int = 6):
        self.rep = as_sumrep(rep)
        self.decimals = int(decimals)
        G = self.rep.group
        inv = [G.inverse(g) for g in G.elements]
        self._inv_mats = self.rep.matrices()[inv]  # (|G|, d, d): ρ(g)⁻¹ = ρ(g⁻¹)

    def _orbit(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(orbit, q)``: ``orbit[b, g] = ρ(g)⁻¹ x_b`` in float64 ``(B, |G|, d)`` and its rounded integers ``q``."""
        if x.ndim != 2 or x.shape[-1] != self.rep.dim:
            raise ValueError(f"Canonicalizer expects x: (batch, {self.rep.dim}), got shape {tuple(x.shape)}")
        orbit = torch.einsum("gij,bj->bgi", self._inv_mats.to(device=x.device, dtype=torch.float64), x.double())
        q = torch.round(orbit * 10 ** self.decimals)
        return orbit, torch.where(q == 0, torch.zeros_like(q), q)  # -0.0 == 0.0 anyway; keep integers clean

    def stabilizer_mask(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, |G|)`` bool: ``h ∈ G_x`` (``ρ(h)⁻¹ x = x`` after rounding), for ``x: (B, d)``."""
        with torch.no_grad(), torch.autocast(device_type=x.device.type, enabled=False):
            _, q = self._orbit(x)
            return (q == q[:, :1]).all(-1)       # element 0 is the identity: q[:, 0] is x itself

    def __call__(self, x: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None) -> BreakingResult:
        # float64 and no autocast: a bf16 orbit would round before the lexicographic comparison
        with torch.no_grad(), torch.autocast(device_type=x.device.type, enabled=False):
            orbit, q = self._orbit(x)
            mask = torch.ones(q.shape[:2], dtype=torch.bool, device=x.device)
            for j in range(q.shape[-1]):
                col = torch.where(mask, q[..., j], torch.full_like(q[..., j], -math.inf))
                mask &= col == col.max(-1, keepdim=True).values
            k = _uniform_choice(mask, generator) if sample else mask.double().argmax(-1)  # deterministic: first True
            canonical = orbit[torch.arange(x.shape[0], device=x.device), k].to(x.dtype)
            b = torch.nn.functional.one_hot(k, mask.shape[1]).to(x.dtype)
        return BreakingResult(k=k, candidates=mask, canonical=canonical, b=b)


def _uniform_choice(mask: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One index per row of the bool ``mask: (B, n)``, uniformly among its True entries."""
    u = torch.rand(mask.shape, generator=generator, dtype=torch.float64).to(mask.device) if generator is not None \
        else torch.rand(mask.shape, dtype=torch.float64, device=mask.device)
    return torch.where(mask, u, torch.full_like(u, -1.0)).argmax(-1)


class RelaxedEMLP(nn.Module):
    """A relaxed-equivariant E-MLP: ``f(x) = F(x, e_{k(x)})`` with ``F`` an E-MLP on ``ρ_in ⊕ ρ_reg``.

    ``F(ρ_in(g)x, ρ_reg(g)b) = ρ_out(g) F(x, b)`` and ``e_{k(g·x)} = ρ_reg(g·h) e_{k(x)}``,
    ``g·x = (g·h)·x`` for some ``h ∈ G_x``, hence ``f(g·x) = ρ_out(g·h) f(x)``: relaxed equivariance
    (Kaba & Ravanbakhsh 2023, symmetry breaking by an equivariant network fed a symmetry-breaking
    object; the one-hot ``e_k`` has trivial stabilizer, so ``F`` may break every symmetry of ``x``).
    ``sample=True`` draws ``k`` uniformly from ``K(x)`` (relaxed equivariance in distribution).

    ``breaking_object`` (optional): a callable ``(x: (B, d_in), rep_in) -> (k: (B,), b: (B, |G|))`` returning
    canonicalizing elements (``ρ(k)⁻¹ x`` the same for the whole orbit of ``x``) and their one-hots ``e_k``, e.g. a
    learner's implementation of what :class:`Canonicalizer` computes (the default). With ``sample=True`` its
    ``k`` is moved to ``h·k`` with ``h`` uniform in the stabilizer ``G_x``, i.e. uniform in ``K(x) = G_x·k``.
    """

    def __init__(self, rep_in, rep_out, hidden: int = 16, depth: int = 2, decimals: int = 6, out_gain: float = 1.0,
                 breaking_object: Callable | None = None):
        super().__init__()
        self.rep_in, self.rep_out = as_sumrep(rep_in), as_sumrep(rep_out)
        G = self.rep_in.group
        self.net = EMLP(self.rep_in + Representation.regular(G), self.rep_out, hidden, depth, out_gain=out_gain)
        self.canonicalizer = Canonicalizer(self.rep_in, decimals)
        if breaking_object is not None and not callable(breaking_object):
            raise TypeError(f"breaking_object must be callable (x, rep_in) -> (k, b), got {type(breaking_object).__name__}")
        fn = breaking_object
        # held like a plain function: copy.deepcopy (used to measure a trained model in float64) keeps it as it is,
        # where it would detach a copy of a callable object (e.g. an accepted exercise and its record), and a
        # trained model pickles (symviz.train.parallel_runs brings models back from its workers that way)
        self._breaking_object = None if fn is None else CallRef(fn)

    def breaking(self, x: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None) -> BreakingResult:
        """The symmetry-breaking object for ``x: (B, d_in)`` (see :class:`BreakingResult`)."""
        if self._breaking_object is None:
            return self.canonicalizer(x, sample, generator)
        G = self.rep_in.group
        k, b = self._given_object(x)
        with torch.no_grad():
            stab = self.canonicalizer.stabilizer_mask(x)                            # (B, |G|): h ∈ G_x
            hk = torch.as_tensor(G.table, device=x.device)[:, k].T                  # (B, |G|): index of h·k
            if sample:
                k = hk.gather(1, _uniform_choice(stab, generator)[:, None])[:, 0]
                b = torch.nn.functional.one_hot(k, G.order)
            candidates = torch.zeros_like(stab).scatter_(1, hk, stab)               # K(x) = G_x·k
            canonical = torch.einsum("bij,bj->bi", self.canonicalizer._inv_mats.to(x.device)[k], x.double()).to(x.dtype)
        return BreakingResult(k=k, candidates=candidates, canonical=canonical, b=b.to(x.dtype))

    def _given_object(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(k, b)`` from ``breaking_object``, shapes checked."""
        n, order = x.shape[0], self.rep_in.group.order
        k, b = self._breaking_object(x, self.rep_in)
        k, b = torch.as_tensor(k, device=x.device).long(), torch.as_tensor(b, device=x.device)
        if k.shape != (n,) or tuple(b.shape) != (n, order):
            raise ValueError(f"breaking_object must return k: ({n},) and b: ({n}, {order}), got "
                             f"{tuple(k.shape)} and {tuple(b.shape)}")
        return k, b

    def forward(self, x: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, x.shape[-1])
        if self._breaking_object is not None and not sample:   # the given b as it is (no candidates needed)
            b = self._given_object(x2)[1].to(x2.dtype)
        else:
            b = self.breaking(x2, sample, generator).b
        return self.net(torch.cat([x2, b], -1)).reshape(*lead, -1)


class NoiseEMLP(nn.Module):
    """The noise-injection baseline: the same E-MLP ``F(x, z)`` fed Gaussian noise ``z ~ N(0, σ²I)``
    in the regular representation instead of a symmetry-breaking object.

    ``F`` is equivariant in ``(x, z)`` and the noise law is invariant, so the *distribution* of
    outputs is equivariant; but for a given noise draw ``x ↦ F(x, z)`` is neither equivariant nor
    relaxed-equivariant. Pass ``generator`` to freeze the draw (to measure that).
    """

    def __init__(self, rep_in, rep_out, hidden: int = 16, depth: int = 2, sigma: float = 1.0, out_gain: float = 1.0):
        super().__init__()
        self.rep_in, self.rep_out = as_sumrep(rep_in), as_sumrep(rep_out)
        self.order = self.rep_in.group.order
        self.sigma = float(sigma)
        self.net = EMLP(self.rep_in + Representation.regular(self.rep_in.group), self.rep_out, hidden, depth,
                        out_gain=out_gain)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, x.shape[-1])
        if generator is not None:
            z = torch.randn(x2.shape[0], self.order, generator=generator, dtype=torch.float64).to(x2)
        else:
            z = torch.randn(x2.shape[0], self.order, dtype=x2.dtype, device=x2.device)
        return self.net(torch.cat([x2, self.sigma * z], -1)).reshape(*lead, -1)


class CanonicalRelaxed(nn.Module):
    """``f(x) = ρ_out(k(x)) f₀(ρ_in(k(x))⁻¹ x)`` for ANY model ``f₀``: relaxed-equivariant.

    With ``c = k(x)⁻¹·x`` constant on orbits and ``k(g·x) = g·h·k(x)``, ``h ∈ G_x``:
    ``f(g·x) = ρ_out(g·h·k) f₀(c) = ρ_out(g·h) f(x)``. An unconstrained ``f₀`` breaks symmetry; an
    ``f₀`` that is equivariant under the stabilizer of ``c`` would make ``f`` exactly equivariant.
    """

    def __init__(self, f0: nn.Module | Callable, rep_in, rep_out, decimals: int = 6):
        super().__init__()
        self.f0 = f0
        self.rep_in, self.rep_out = as_sumrep(rep_in), as_sumrep(rep_out)
        self.canonicalizer = Canonicalizer(self.rep_in, decimals)
        self.register_buffer("out_mats", self.rep_out.matrices(), persistent=False)

    def forward(self, x: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        res = self.canonicalizer(x, sample, generator)
        y0 = self.f0(res.canonical)
        return torch.einsum("bij,bj->bi", self.out_mats[res.k].to(y0), y0)


# ----------------------------------------------------------------------------------------------
# Measuring (relaxed) equivariance
# ----------------------------------------------------------------------------------------------

def _violations(f: Callable, x: torch.Tensor, rep_in, rep_out, relaxed: bool, elements, tol) -> torch.Tensor:
    rep_in, rep_out = as_sumrep(rep_in), as_sumrep(rep_out)
    if not callable(f):
        raise TypeError("f must be callable: f(x: (B, d_in)) -> (B, d_out)")
    x = torch.as_tensor(x)
    if x.ndim != 2 or x.shape[-1] != rep_in.dim:
        raise ValueError(f"x must be a batch (B, {rep_in.dim}) of inputs, got shape {tuple(x.shape)}")
    G = rep_in.group
    elements = list(G.elements) if elements is None else [G._check(g) for g in elements]
    out_mats = rep_out.matrices().to(x.device)
    with torch.no_grad():
        y = f(x)
        if y.ndim != 2 or y.shape != (x.shape[0], rep_out.dim):
            raise ValueError(f"f(x) must have shape ({x.shape[0]}, {rep_out.dim}), got {tuple(y.shape)}")
        y = y.to(torch.float64)
        stabs = [stabilizer_elements(xb, rep_in, tol) if relaxed else [0] for xb in x]
        # one item per input, floored at 1e-3 of the batch's largest output (symviz.equivariance.relative_error)
        scale = y.norm(dim=-1).max()
        worst = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
        for g in elements:
            yg = f(rep_in.act(g, x)).to(torch.float64)
            for bi, H in enumerate(stabs):
                gh = [G.compose(g, h) for h in H]
                cand = torch.einsum("hij,j->hi", out_mats[gh].to(y), y[bi])  # ρ_out(g h) f(x), same norm as f(x)
                err = relative_error(yg[bi] - cand, y[bi], dim=-1, scale=scale).min()
                worst[bi] = torch.maximum(worst[bi], err)
    return worst


def relaxed_equivariance_violation(f: Callable, x: torch.Tensor, rep_in, rep_out, elements: Sequence[int] | None = None,
                                   tol: float = 1e-6, reduce: str = "max"):
    """How far ``f`` is from relaxed equivariance on inputs ``x: (B, d_in)``:

    ``max_g min_{h ∈ G_x} ‖f(g·x) − ρ_out(g·h) f(x)‖ / (max(‖f(x)‖, 1e-3 · max_batch ‖f(x')‖) + 1e-12)``

    for each input (:func:`symviz.equivariance.relative_error`, one item per input; Kaba &
    Ravanbakhsh 2023, relaxed equivariance: ``f(g·x) ∈ {g·h·f(x) : h ∈ G_x}``). ``G_x`` is found numerically
    (relative tolerance ``tol``). ``elements``: the ``g`` to try (default: all). ``reduce="max"``
    returns a float, ``"none"`` the per-input values ``(B,)``.
    """
    if reduce not in ("max", "none"):
        raise ValueError(f"reduce must be 'max' or 'none', got {reduce!r}")
    v = _violations(f, x, rep_in, rep_out, True, elements, tol)
    return float(v.max()) if reduce == "max" else v


def equivariance_violation(f: Callable, x: torch.Tensor, rep_in, rep_out, elements: Sequence[int] | None = None,
                           reduce: str = "max"):
    """The ordinary equivariance error ``max_g ‖f(g·x) − ρ_out(g) f(x)‖ / ‖f(x)‖`` on ``x: (B, d_in)``
    (normalised as in :func:`relaxed_equivariance_violation`)."""
    if reduce not in ("max", "none"):
        raise ValueError(f"reduce must be 'max' or 'none', got {reduce!r}")
    v = _violations(f, x, rep_in, rep_out, False, elements, 1e-6)
    return float(v.max()) if reduce == "max" else v
