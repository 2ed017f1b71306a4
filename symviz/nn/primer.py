"""Three small models for the symmetry primer (chapter 00), one per kind of symmetry behaviour.

* :class:`SetMLP` flattens a point set: neither permutation- nor rotation-invariant.
* :class:`DeepSets` (Zaheer et al., NeurIPS 2017): ``ρ(Σ_i φ(x_i))`` is permutation-invariant by
  construction, but sees raw coordinates, so it is not rotation-invariant.
* :class:`E3PointNet`: features built from e3nn spherical harmonics of the centred points, mixed by an
  e3nn equivariant linear map; outputs a scalar (invariant under E(3) and S_n) and a vector (equivariant).
* :class:`DeepSetsLayer`: ``h_i' = A h_i + B·mean_j h_j + c``, the general permutation-equivariant linear layer.
* :class:`EquivariantBasisLayer`: ``h' = Σ_k B_k h Θ_k + c``, the same layer built from any basis ``B_k`` of the
  equivariant maps of the node permutation representation (the basis the primer's learner solves for);
  ``DeepSets(node_basis=...)`` stacks two of them before the sum.

Shapes: point sets ``x: (batch, n, 3)`` or ``(n, 3)``.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

__all__ = ["SetMLP", "DeepSets", "DeepSetsLayer", "EquivariantBasisLayer", "E3PointNet", "E3PointNetOutput"]


class E3PointNetOutput(NamedTuple):
    """What :class:`E3PointNet` returns: ``scalar: (batch, 1)`` (invariant), ``vector: (batch, 3)`` (equivariant)."""

    scalar: torch.Tensor
    vector: torch.Tensor


def _batched(x: torch.Tensor, name: str = "x") -> tuple[torch.Tensor, bool]:
    if x.ndim == 2:
        return x[None], True
    if x.ndim != 3:
        raise ValueError(f"{name} must be (batch, n, d) or (n, d), got shape {tuple(x.shape)}")
    return x, False


class SetMLP(nn.Module):
    """An MLP on the flattened set ``x: (batch, n, 3) -> (batch, out)``; order and orientation both matter."""

    def __init__(self, n_points: int, out_dim: int = 1, hidden: int = 64, in_dim: int = 3):
        super().__init__()
        self.n_points, self.in_dim = n_points, in_dim
        self.net = nn.Sequential(nn.Linear(n_points * in_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, single = _batched(x)
        if x.shape[1:] != (self.n_points, self.in_dim):
            raise ValueError(f"SetMLP was built for sets of {self.n_points} points in R^{self.in_dim}, got {tuple(x.shape[1:])}")
        y = self.net(x.reshape(x.shape[0], -1))
        return y[0] if single else y


class DeepSetsLayer(nn.Module):
    """Permutation-equivariant linear layer ``h_i' = A h_i + B·mean_j h_j + c`` (Zaheer et al., 2017).

    ``h: (batch, n, d_in) -> (batch, n, d_out)``. Any linear permutation-equivariant map on ``R^{n×d}``
    has this form (for n ≥ 2), which is what the primer's exercise asks the learner to find.
    """

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.own = nn.Linear(d_in, d_out)
        self.pooled = nn.Linear(d_in, d_out, bias=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h, single = _batched(h, "h")
        y = self.own(h) + self.pooled(h.mean(dim=1, keepdim=True))
        return y[0] if single else y


class EquivariantBasisLayer(nn.Module):
    """``h' = Σ_k B_k h Θ_k + 1 cᵀ``: a linear layer on node features built from a basis of equivariant maps.

    ``basis: (K, n, n)``, the solutions ``B`` of ``P_g B = B P_g`` for the node permutations ``P_g`` of a group
    (for ``S_n`` any basis of ``span{I, 11ᵀ}``, e.g. from an SVD null space); ``Θ_k: (d_in, d_out)`` learned
    channel mixings, ``c: (d_out,)`` a bias shared by all nodes (the only bias a transitive group allows).
    ``h: (batch, n, d_in) -> (batch, n, d_out)``; equivariant under every permutation that commutes with all
    ``B_k``. Each ``B_k`` is scaled to the Frobenius norm of the identity (``√n``), and ``Θ_k`` starts as
    ``nn.Linear`` does (uniform in ``±1/√d_in``), so the layer starts at the scale of a per-node linear layer
    whatever basis it is given.
    """

    def __init__(self, d_in: int, d_out: int, basis: torch.Tensor):
        super().__init__()
        basis = torch.as_tensor(basis)
        if basis.ndim != 3 or basis.shape[1] != basis.shape[2] or basis.shape[0] < 1:
            raise ValueError(f"basis must be (K, n, n) with K >= 1 equivariant maps of the n nodes, got shape {tuple(basis.shape)}")
        norms = basis.reshape(basis.shape[0], -1).norm(dim=1)
        if not bool(torch.isfinite(basis).all()) or bool((norms < 1e-12).any()):
            raise ValueError("basis: every element must be a finite, non-zero (n, n) matrix")
        n = basis.shape[1]
        # kept in float64 and cast in forward, like symviz.nn.emlp.EquivariantLinear: exactness survives .double()
        self.register_buffer("basis", (basis.double() * (n ** 0.5 / norms.double())[:, None, None]), persistent=False)
        bound = 1.0 / d_in ** 0.5
        self.theta = nn.Parameter(torch.empty(basis.shape[0], d_in, d_out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(d_out).uniform_(-bound, bound))

    @property
    def n(self) -> int:
        return int(self.basis.shape[-1])

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h, single = _batched(h, "h")
        if h.shape[1] != self.n:
            raise ValueError(f"this layer's basis acts on {self.n} nodes, got h with {h.shape[1]} nodes (shape {tuple(h.shape)})")
        mixed = torch.einsum("bjc,kcd->bjkd", h, self.theta)                 # channels first: (batch, n, K, d_out)
        y = torch.einsum("kij,bjkd->bid", self.basis.to(h.dtype), mixed) + self.bias
        return y[0] if single else y


class DeepSets(nn.Module):
    """``ρ(Σ_i φ(x_i))``: ``x: (batch, n, d) -> (batch, out)``, permutation-invariant.

    ``node_basis: (K, n, n)`` (optional): ``φ`` becomes two :class:`EquivariantBasisLayer` s built from it, so
    nodes exchange information before the sum (the equivariant layers of Zaheer et al.); sets must then have
    ``n`` points. Default: ``φ`` acts on each point alone.
    """

    def __init__(self, in_dim: int = 3, out_dim: int = 1, hidden: int = 64, node_basis: torch.Tensor | None = None):
        super().__init__()
        if node_basis is None:
            self.phi = nn.Sequential(nn.Linear(in_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        else:
            self.phi = nn.Sequential(EquivariantBasisLayer(in_dim, hidden, node_basis), nn.SiLU(),
                                     EquivariantBasisLayer(hidden, hidden, node_basis))
        self.rho = nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, single = _batched(x)
        y = self.rho(self.phi(x).sum(dim=1))
        return y[0] if single else y


class E3PointNet(nn.Module):
    """An E(3)×S_n-equivariant point-set network built from e3nn pieces.

    For centred points ``r_i = x_i − mean(x)``: ``k`` channels of features per degree ``l = 0..lmax``,
    ``F^l_c = mean_i R_{lc}(|r_i|) Y^l(r_i)`` (spherical harmonics ``Y^l`` weighted by a learned radial
    MLP ``R``), then all pairwise products of these features (an e3nn ``FullyConnectedTensorProduct``)
    into scalars ``0e`` and vectors ``1o``. The scalars go through an MLP (any function of invariants is
    invariant) to one output scalar; the vectors are mixed linearly into one output vector.
    ``forward(x: (batch, n, 3)) ->`` :class:`E3PointNetOutput` ``(scalar (batch, 1), vector (batch, 3))``.
    """

    def __init__(self, lmax: int = 2, channels: int = 4, hidden: int = 32):
        super().__init__()
        from e3nn import o3

        self.lmax, self.k = lmax, channels
        self.irreps_sh = o3.Irreps.spherical_harmonics(lmax)
        self.irreps_feat = o3.Irreps([(channels, (l, (-1) ** l)) for l in range(lmax + 1)])
        self.radial = nn.Sequential(nn.Linear(1, hidden), nn.SiLU(), nn.Linear(hidden, (lmax + 1) * channels))
        self.tp = o3.FullyConnectedTensorProduct(self.irreps_feat, self.irreps_feat, f"{hidden}x0e + {channels}x1o")
        self.hidden = hidden
        self.head = nn.Sequential(nn.Linear(hidden + channels, hidden), nn.SiLU(), nn.Linear(hidden, 1))
        self.vec = o3.Linear(f"{channels}x1o", "1x1o")

    def forward(self, x: torch.Tensor) -> E3PointNetOutput:
        from e3nn import o3

        x, single = _batched(x)
        r = x - x.mean(dim=1, keepdim=True)
        sh = o3.spherical_harmonics(self.irreps_sh, r, normalize=True, normalization="component")  # (b, n, 9)
        w = self.radial(r.norm(dim=-1, keepdim=True)).reshape(*r.shape[:-1], self.lmax + 1, self.k)
        blocks = []
        for l in range(self.lmax + 1):
            y_l = sh[..., l * l:(l + 1) * (l + 1)]                                   # (b, n, 2l+1)
            blocks.append((w[..., l, :, None] * y_l[..., None, :]).mean(dim=1).flatten(1))  # (b, k*(2l+1))
        feats = torch.cat(blocks, dim=-1)                                            # permutation-invariant
        y = self.tp(feats, feats)
        scalars = torch.cat([y[:, :self.hidden], feats[:, :self.k]], dim=-1)
        # e3nn >= 0.6 orders l=1 components as Cartesian (x, y, z): D^1(R) = R
        scalar, vec = self.head(scalars), self.vec(y[:, self.hidden:])
        return E3PointNetOutput(scalar[0], vec[0]) if single else E3PointNetOutput(scalar, vec)
