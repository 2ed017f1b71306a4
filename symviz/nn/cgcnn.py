"""CGCNN: the crystal graph convolutional neural network of Xie & Grossman.

T. Xie and J. C. Grossman, "Crystal Graph Convolutional Neural Networks for an Accurate and
Interpretable Prediction of Material Properties", Phys. Rev. Lett. 120, 145301 (2018).

The network reads a :class:`~symviz.data.crystal_graph.GraphBatch` (see
:func:`symviz.data.crystal_graph.structures_to_graphs`):

1. embed each atom: ``v_i = W_emb x_i`` (``x_i`` the element features, any width);
2. expand each edge length in Gaussians: ``u_ij[k] = exp(-(d_ij - mu_k)^2 / sigma^2)``;
3. ``n_conv`` gated convolutions (paper eq. 5)::

       z_ij = v_i ⊕ v_j ⊕ u_ij
       v_i <- v_i + Σ_j  σ(z_ij W_f + b_f) ⊙ softplus(z_ij W_s + b_s)

4. pool the atoms of each crystal (mean, as in the paper), then an MLP head (``pool="sum"``: the head
   on each atom, then a sum, so the output is extensive).

Everything depends on distances and on sums over neighbours and atoms, so the prediction is invariant
to rotations, translations and permutations of the sites; with ``pool="mean"`` it is also the same
for a supercell of the same crystal.

    >>> import torch
    >>> from pymatgen.core import Lattice, Structure
    >>> from symviz.data.crystal_graph import structures_to_graphs, collate_graphs
    >>> nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    >>> batch = collate_graphs(structures_to_graphs([nacl, nacl * (2, 1, 1)], cutoff=4.0))
    >>> model = CGCNN(node_dim=92, cutoff=4.0).eval()
    >>> out = model(batch)
    >>> out.shape
    torch.Size([2, 1])
    >>> bool(torch.allclose(out[0], out[1], atol=1e-5))   # supercell: same crystal, same prediction
    True
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["GaussianDistance", "gaussian_expansion", "CGConv", "CGCNN", "scatter_sum", "scatter_mean"]


def scatter_sum(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    """``out[k] = Σ_{i: index[i]=k} src[i]``; src ``(n, ...)``, index ``(n,)`` -> ``(dim_size, ...)``."""
    out = src.new_zeros((dim_size,) + tuple(src.shape[1:]))
    return out.index_add_(0, index, src)


def scatter_mean(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    """Mean of the rows of ``src`` that share an ``index`` (empty groups give 0)."""
    total = scatter_sum(src, index, dim_size)
    count = scatter_sum(torch.ones_like(index, dtype=src.dtype), index, dim_size).clamp(min=1)
    return total / count.view(-1, *([1] * (src.dim() - 1)))


class GaussianDistance(nn.Module):
    """Expand distances in Gaussians: ``u[k] = exp(-(d - mu_k)^2 / step^2)``, ``mu_k`` evenly in [0, cutoff].

    d ``(E,)`` -> ``(E, n_gaussians)``. CGCNN used 0 to 8 Å in steps of 0.2 Å.

    >>> GaussianDistance(cutoff=5.0, n_gaussians=51)(torch.tensor([0.0, 2.5])).shape
    torch.Size([2, 51])
    """

    def __init__(self, cutoff: float = 5.0, n_gaussians: int = 41):
        super().__init__()
        if not (cutoff > 0 and n_gaussians >= 2):
            raise ValueError(f"GaussianDistance: need cutoff > 0 and n_gaussians >= 2, got {cutoff!r}, {n_gaussians!r}")
        self.register_buffer("centers", torch.linspace(0.0, float(cutoff), int(n_gaussians)))
        self.width = float(cutoff) / (int(n_gaussians) - 1)

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        return gaussian_expansion(d, self.centers, self.width)


def gaussian_expansion(d: torch.Tensor, centers: torch.Tensor, width: float) -> torch.Tensor:
    """``exp(-(d - mu_k)^2 / width^2)`` for distances ``d (E,)`` and centres ``(K,)`` -> ``(E, K)``, without subnormals.

    Far from a centre the Gaussian falls below the smallest normal number of ``d``'s dtype (1.2e-38 in float32):
    ``exp`` then returns subnormal numbers, which x86 CPUs compute and multiply in slow microcode (measured: the
    expansion of chapter 05's 432 edges took 0.45-1 ms instead of 6 us, and the matrix products after it slow down
    too). Values below 1.0088x that number are returned as exact zeros instead: a change below 1.2e-38 (2.2e-308 in
    float64), nothing a weight can see.

    >>> u = gaussian_expansion(torch.tensor([0.0, 8.0]), torch.linspace(0.0, 8.0, 41), 0.2)
    >>> float(u[0, 0]), float(u[1, 0]), bool(((u == 0) | (u >= torch.finfo(u.dtype).tiny)).all())
    (1.0, 0.0, True)
    """
    arg = -((d[:, None] - centers.to(d.dtype)) ** 2) / width ** 2
    # exp(arg) is subnormal below log(tiny); 1e-4 of margin, because the floor itself rounds in arg's dtype (in float32
    # exp of the rounded log(tiny) is subnormal again: 0.84 ms instead of 6 us for chapter 05's 432 x 41 values)
    floor = math.log(torch.finfo(arg.dtype).tiny) * (1 - 1e-4)
    return torch.exp(arg.clamp(min=floor)) * (arg > floor)


class CGConv(nn.Module):
    """One gated crystal-graph convolution (Xie & Grossman 2018, eq. 5), with residual update.

    ``v_i <- g(v_i + BN(Σ_j σ(z_ij W_f + b_f) ⊙ softplus(z_ij W_s + b_s)))``, ``z_ij = v_i ⊕ v_j ⊕ u_ij``,
    ``g`` = softplus as in the reference implementation.

    Args: h ``(N, D)``, edge_index ``(2, E)`` (centre, neighbour), u ``(E, G)`` -> ``(N, D)``.

    BatchNorm needs two or more rows to normalise in training, so a batch of a single atom (or edge) skips it. By
    default it skips it in eval mode too, so that a one-atom crystal run on its own gets a different prediction
    than in a batch or than its supercell; ``eval_norm_always=True`` applies the running statistics in eval mode
    whatever the batch size (a crystal's prediction then never depends on its batch).
    """

    def __init__(self, dim: int, edge_dim: int, batch_norm: bool = True, eval_norm_always: bool = False):
        super().__init__()
        self.dim = dim
        self.eval_norm_always = bool(eval_norm_always)
        self.lin = nn.Linear(2 * dim + edge_dim, 2 * dim)
        self.bn_edge = nn.BatchNorm1d(2 * dim) if batch_norm else nn.Identity()
        self.bn_node = nn.BatchNorm1d(dim) if batch_norm else nn.Identity()
        self.act = nn.Softplus()

    def forward(self, h: torch.Tensor, edge_index: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        i, j = edge_index[0], edge_index[1]
        z = self.lin(torch.cat([h[i], h[j], u], dim=-1))
        always = self.eval_norm_always and not self.training
        if z.shape[0] > 1 or (always and z.shape[0] > 0):  # BatchNorm needs at least two edges in training
            z = self.bn_edge(z)
        gate, core = z.chunk(2, dim=-1)
        msg = torch.sigmoid(gate) * self.act(core)
        agg = scatter_sum(msg, i, h.shape[0])
        if agg.shape[0] > 1 or always:
            agg = self.bn_node(agg)
        return self.act(h + agg)


class CGCNN(nn.Module):
    """Crystal graph network: embedding -> ``n_conv`` :class:`CGConv` -> pooling -> MLP head.

    Args:
        node_dim: width of the input node features (92 for ``"cgcnn"``, 100 for ``"onehot"``, or
            whatever per-site features you pass to ``structures_to_graphs``).
        cutoff: the graphs' cutoff radius in Å (sets the Gaussian centres).
        hidden: atom feature width (paper: 64); n_conv: number of convolutions (paper: 3).
        n_gaussians: Gaussian basis size (paper: 41 over 8 Å).
        head_hidden: width of the hidden layer after pooling (paper: 128).
        n_targets: outputs per crystal (or per site with ``pool=None``).
        pool: ``"mean"`` (paper; size-intensive, e.g. moment per atom), ``"sum"`` (extensive, e.g.
            moment per cell) or ``None`` (one prediction per site, e.g. site magnetic moments).
        batch_norm: the BatchNorm layers of the reference implementation (off for tiny batches).
        eval_norm_always: in eval mode, apply BatchNorm's running statistics even to a batch of one atom, so that
            a crystal's prediction does not depend on the rest of its batch (see :class:`CGConv`; default False,
            the earlier behaviour).

    ``forward(batch)`` -> ``(num_graphs, n_targets)`` (or ``(num_nodes, n_targets)`` with ``pool=None``).
    """

    def __init__(self, node_dim: int = 92, cutoff: float = 5.0, hidden: int = 64, n_conv: int = 3,
                 n_gaussians: int = 41, head_hidden: int = 128, n_targets: int = 1, pool: str | None = "mean",
                 batch_norm: bool = True, eval_norm_always: bool = False):
        super().__init__()
        for name, v in (("node_dim", node_dim), ("hidden", hidden), ("n_targets", n_targets), ("head_hidden", head_hidden)):
            if not (isinstance(v, int) and v >= 1):
                raise ValueError(f"CGCNN: {name} must be a positive int, got {v!r}")
        if not (isinstance(n_conv, int) and n_conv >= 0):
            raise ValueError(f"CGCNN: n_conv must be a non-negative int, got {n_conv!r}")
        if pool not in ("mean", "sum", None):
            raise ValueError(f"CGCNN: pool must be 'mean', 'sum' or None, got {pool!r}")
        self.node_dim, self.pool = node_dim, pool
        self.embed = nn.Linear(node_dim, hidden)
        self.rbf = GaussianDistance(cutoff, n_gaussians)
        self.convs = nn.ModuleList([CGConv(hidden, n_gaussians, batch_norm, eval_norm_always) for _ in range(n_conv)])
        self.head = nn.Sequential(nn.Softplus(), nn.Linear(hidden, head_hidden), nn.Softplus(),
                                  nn.Linear(head_hidden, n_targets))

    def atom_features(self, batch) -> torch.Tensor:
        """Atom representations after the convolutions: ``(num_nodes, hidden)``."""
        x = batch.node_features
        if x.dim() != 2 or x.shape[1] != self.node_dim:
            raise ValueError(f"CGCNN: node_features must be (num_nodes, node_dim={self.node_dim}), got "
                             f"{tuple(x.shape)}; build graphs and model with the same features")
        dtype = self.embed.weight.dtype
        h = self.embed(x.to(dtype))
        u = self.rbf(batch.distances.to(dtype))
        for conv in self.convs:
            h = conv(h, batch.edge_index, u)
        return h

    def forward(self, batch) -> torch.Tensor:
        h = self.atom_features(batch)
        if self.pool is None:
            return self.head(h)
        n_graphs = int(batch.num_nodes.shape[0])
        if self.pool == "sum":  # extensive: a prediction per atom, summed, so a supercell doubles it
            return scatter_sum(self.head(h), batch.batch, n_graphs)
        return self.head(scatter_mean(h, batch.batch, n_graphs))
