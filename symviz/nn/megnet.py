"""A MEGNet-style graph network: edge, node and global-state updates on crystal graphs.

C. Chen, W. Ye, Y. Zuo, C. Zheng, S. P. Ong, "Graph Networks as a Universal Machine Learning Framework for
Molecules and Crystals", Chem. Mater. 31, 3564 (2019), arXiv:1812.05055.

CGCNN (:mod:`symviz.nn.cgcnn`) updates atoms only. A MEGNet block updates three things in turn, each with a small
MLP ``φ`` (shifted softplus activations), for edges ``e_k`` (atom ``s_k`` -> neighbour ``r_k``), atoms ``v_i`` and
one **global state** ``u`` per crystal (a placeholder ``[0, 0]`` for crystals in the paper; temperature, pressure,
... when they matter)::

    e_k' = φ_e(v_{s_k} ⊕ v_{r_k} ⊕ e_k ⊕ u)                        edge update
    v_i' = φ_v(mean_{k: s_k = i} e_k' ⊕ v_i ⊕ u)                   node update
    u'   = φ_u(mean_k e_k' ⊕ mean_i v_i' ⊕ u)                      state update

Blocks are stacked with residual connections; a readout then summarises the crystal: ``"set2set"`` (the paper:
attention-weighted sums of atoms and of edges, refined by an LSTM over a few steps), ``"mean"`` (plain means), or
``None`` (one prediction per atom from ``v_i ⊕ u``).

Every step is a sum or a mean over atoms or edges of functions of distances, so the output is invariant to
rotations, translations and the order of the sites, and per-atom outputs move with their sites. Means (not sums)
make the global state and the readout the same for a supercell of the same crystal: a 2x1x1 supercell repeats each
atom's neighbourhood, so per-atom outputs repeat and the crystal's prediction is unchanged.

    >>> import torch
    >>> from pymatgen.core import Lattice, Structure
    >>> from symviz.data.crystal_graph import structures_to_graphs, collate_graphs
    >>> nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    >>> batch = collate_graphs(structures_to_graphs([nacl, nacl * (2, 1, 1)], cutoff=4.0))
    >>> model = MEGNet(node_dim=92, cutoff=4.0, hidden=16, n_blocks=2).eval()
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

from symviz.nn.cgcnn import gaussian_expansion, scatter_mean, scatter_sum

__all__ = ["shifted_softplus", "GaussianBasis", "scatter_softmax", "Set2Set", "MEGNetBlock", "MEGNet"]

_LOG2 = math.log(2.0)


def shifted_softplus(x: torch.Tensor) -> torch.Tensor:
    """``softplus(x) - log 2`` (zero at zero), the activation of MEGNet's MLPs."""
    return nn.functional.softplus(x) - _LOG2


class _ShiftedSoftplus(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return shifted_softplus(x)


def _mlp(sizes: list[int], last_activation: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = []
    for k in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[k], sizes[k + 1]))
        if last_activation or k < len(sizes) - 2:
            layers.append(_ShiftedSoftplus())
    return nn.Sequential(*layers)


class GaussianBasis(nn.Module):
    """``u[k] = exp(-(d - mu_k)^2 / width^2)``, ``mu_k`` evenly spaced in ``[0, r_max]``: d ``(E,)`` -> ``(E, n)``.

    MEGNet (Chen et al. 2019) used 100 centres between 0 and 5 Å with width 0.5 Å.

    >>> GaussianBasis(r_max=5.0, n_centers=100, width=0.5)(torch.tensor([1.0, 2.0])).shape
    torch.Size([2, 100])
    """

    def __init__(self, r_max: float = 5.0, n_centers: int = 100, width: float = 0.5):
        super().__init__()
        if not (r_max > 0 and isinstance(n_centers, int) and n_centers >= 2 and width > 0):
            raise ValueError(f"GaussianBasis: need r_max > 0, an int n_centers >= 2 and width > 0; got r_max={r_max!r}, "
                             f"n_centers={n_centers!r}, width={width!r}")
        self.register_buffer("centers", torch.linspace(0.0, float(r_max), n_centers))
        self.width = float(width)

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        return gaussian_expansion(d, self.centers, self.width)


def scatter_softmax(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    """Softmax of ``src (n,)`` within each group of equal ``index``: ``exp(s_i) / Σ_{j: index_j = index_i} exp(s_j)``.

    >>> scatter_softmax(torch.tensor([0.0, 0.0, 5.0]), torch.tensor([0, 0, 1]), 2).tolist()
    [0.5, 0.5, 1.0]
    """
    top = src.new_full((dim_size,), -torch.inf).scatter_reduce(0, index, src, reduce="amax", include_self=True)
    z = torch.exp(src - top[index].detach())
    return z / scatter_sum(z, index, dim_size)[index]


class Set2Set(nn.Module):
    """Set2Set readout (Vinyals et al., "Order Matters", ICLR 2016), as MEGNet uses it: ``(N, D)`` -> ``(B, 2D)``.

    ``steps`` times: ``q = LSTM(q*)``, ``a_i = softmax_i(x_i · q_{b(i)})`` within each crystal,
    ``r = Σ_i a_i x_i``, ``q* = q ⊕ r``. The attention weights of a repeated atom split between its copies, so a
    supercell gives the same ``r`` as its cell.
    """

    def __init__(self, dim: int, steps: int = 3):
        super().__init__()
        if not (isinstance(dim, int) and dim >= 1 and isinstance(steps, int) and steps >= 1):
            raise ValueError(f"Set2Set: dim and steps must be positive ints, got dim={dim!r}, steps={steps!r}")
        self.dim, self.steps = dim, steps
        self.lstm = nn.LSTMCell(2 * dim, dim)

    def forward(self, x: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
        h = x.new_zeros(dim_size, self.dim)
        c = x.new_zeros(dim_size, self.dim)
        q_star = x.new_zeros(dim_size, 2 * self.dim)
        for _ in range(self.steps):
            h, c = self.lstm(q_star, (h, c))
            a = scatter_softmax((x * h[index]).sum(-1), index, dim_size)
            r = scatter_sum(a[:, None] * x, index, dim_size)
            q_star = torch.cat([h, r], dim=-1)
        return q_star


class MEGNetBlock(nn.Module):
    """One MEGNet block: pre-dense MLPs on ``e, v, u``, then the edge, node and state updates (module docstring).

    Args: v ``(N, D)``, e ``(E, D)``, u ``(B, D)``, edge_index ``(2, E)`` (row 0 the centre atom ``s_k``),
    node_graph ``(N,)`` and edge_graph ``(E,)`` (which crystal each atom / edge belongs to). Returns the updated
    ``(v, e, u)`` with the same shapes (the residual is added by :class:`MEGNet`).
    """

    def __init__(self, dim: int):
        super().__init__()
        self.pre_e, self.pre_v, self.pre_u = (_mlp([dim, 2 * dim, dim]) for _ in range(3))
        self.phi_e = _mlp([4 * dim, 2 * dim, 2 * dim, dim])
        self.phi_v = _mlp([3 * dim, 2 * dim, 2 * dim, dim])
        self.phi_u = _mlp([3 * dim, 2 * dim, 2 * dim, dim])

    def forward(self, v, e, u, edge_index, node_graph, edge_graph):
        n_nodes, n_graphs = v.shape[0], u.shape[0]
        v, e, u = self.pre_v(v), self.pre_e(e), self.pre_u(u)
        s, r = edge_index[0], edge_index[1]
        e = self.phi_e(torch.cat([v[s], v[r], e, u[edge_graph]], dim=-1))
        v = self.phi_v(torch.cat([scatter_mean(e, s, n_nodes), v, u[node_graph]], dim=-1))
        u = self.phi_u(torch.cat([scatter_mean(e, edge_graph, n_graphs), scatter_mean(v, node_graph, n_graphs), u], dim=-1))
        return v, e, u


class MEGNet(nn.Module):
    """MEGNet-style crystal graph network: embeddings -> ``n_blocks`` :class:`MEGNetBlock` -> readout -> MLP head.

    Reads the same :class:`~symviz.data.crystal_graph.GraphBatch` as :class:`~symviz.nn.cgcnn.CGCNN`.

    Args:
        node_dim: width of the node features (92 for the ``"cgcnn"`` encoding); a linear layer embeds them (the
            paper learns a 16-wide embedding of the atomic number, which is a linear layer on a one-hot).
        cutoff: the graphs' cutoff in Å (the Gaussian centres span ``[0, cutoff]``).
        hidden: width of edges, atoms and state inside the blocks (paper: 32, with MLPs of 64).
        n_blocks: number of MEGNet blocks (paper: 3).
        n_gaussians, width: Gaussian expansion of the distances (paper: 100 centres, width 0.5 Å).
        state_dim: width of the global state input (paper, crystals: 2, all zeros).
        readout: ``"set2set"`` (paper), ``"mean"`` or ``None`` (one output per atom).
        set2set_steps: LSTM steps of the Set2Set readout (paper: 3).
        n_targets: outputs per crystal (per atom with ``readout=None``).

    ``forward(batch, state=None)`` -> ``(num_graphs, n_targets)`` (or ``(num_nodes, n_targets)`` with
    ``readout=None``); ``state`` is ``(num_graphs, state_dim)``, zeros when not given.
    """

    def __init__(self, node_dim: int = 92, cutoff: float = 5.0, hidden: int = 32, n_blocks: int = 3,
                 n_gaussians: int = 100, width: float = 0.5, state_dim: int = 2, readout: str | None = "set2set",
                 set2set_steps: int = 3, n_targets: int = 1):
        super().__init__()
        for name, v in (("node_dim", node_dim), ("hidden", hidden), ("n_blocks", n_blocks), ("state_dim", state_dim),
                        ("n_targets", n_targets), ("set2set_steps", set2set_steps)):
            if not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
                raise ValueError(f"MEGNet: {name} must be a positive int, got {v!r}")
        if readout not in ("set2set", "mean", None):
            raise ValueError(f"MEGNet: readout must be 'set2set', 'mean' or None (one output per atom), got {readout!r}")
        if not (isinstance(cutoff, (int, float)) and cutoff > 0):
            raise ValueError(f"MEGNet: cutoff must be a positive distance in Å, got {cutoff!r}")
        self.node_dim, self.state_dim, self.readout = node_dim, state_dim, readout
        self.rbf = GaussianBasis(float(cutoff), n_gaussians, width)
        self.embed_v = _mlp([node_dim, hidden])
        self.embed_e = _mlp([n_gaussians, hidden])
        self.embed_u = _mlp([state_dim, hidden])
        self.blocks = nn.ModuleList([MEGNetBlock(hidden) for _ in range(n_blocks)])
        if readout == "set2set":
            self.s2s_v, self.s2s_e = Set2Set(hidden, set2set_steps), Set2Set(hidden, set2set_steps)
            head_in = 5 * hidden
        else:
            head_in = 3 * hidden if readout == "mean" else 2 * hidden
        self.head = _mlp([head_in, hidden, hidden // 2 if hidden >= 2 else 1], last_activation=True)
        self.out = nn.Linear(hidden // 2 if hidden >= 2 else 1, n_targets)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise as the reference (Keras) implementation does: Glorot-uniform weights and zero biases for
        every dense layer; for the Set2Set LSTMs Glorot-uniform input weights, orthogonal recurrent weights and a
        forget-gate bias of 1. (PyTorch's default initialisation is smaller; with it the deep MLPs of each block
        start near a plateau and training stalls for many epochs on small data sets.)"""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LSTMCell):
                for gate in module.weight_ih.chunk(4, 0):
                    nn.init.xavier_uniform_(gate)
                for gate in module.weight_hh.chunk(4, 0):
                    nn.init.orthogonal_(gate)
                nn.init.zeros_(module.bias_ih)
                nn.init.zeros_(module.bias_hh)
                with torch.no_grad():
                    module.bias_ih[module.hidden_size:2 * module.hidden_size] = 1.0  # gates i, f, g, o: forget = 1

    def _check(self, batch, state):
        x = batch.node_features
        if x.dim() != 2 or x.shape[1] != self.node_dim:
            raise ValueError(f"MEGNet: node_features must be (num_nodes, node_dim={self.node_dim}), got "
                             f"{tuple(x.shape)}; build the graphs and the model with the same node features")
        n_graphs = int(batch.num_nodes.shape[0])
        if state is not None and (state.dim() != 2 or tuple(state.shape) != (n_graphs, self.state_dim)):
            raise ValueError(f"MEGNet: state must be (num_graphs={n_graphs}, state_dim={self.state_dim}), "
                             f"got {tuple(state.shape)}")
        return n_graphs

    def encode(self, batch, state: torch.Tensor | None = None):
        """Atoms, edges and global state after the blocks: ``(v (N, hidden), e (E, hidden), u (B, hidden))``."""
        n_graphs = self._check(batch, state)
        dtype = self.embed_v[0].weight.dtype
        if state is None:
            state = batch.node_features.new_zeros(n_graphs, self.state_dim)
        edge_graph = batch.batch[batch.edge_index[0]]
        v = self.embed_v(batch.node_features.to(dtype))
        e = self.embed_e(self.rbf(batch.distances.to(dtype)))
        u = self.embed_u(state.to(dtype))
        for block in self.blocks:
            dv, de, du = block(v, e, u, batch.edge_index, batch.batch, edge_graph)
            v, e, u = v + dv, e + de, u + du
        return v, e, u

    def atom_features(self, batch, state: torch.Tensor | None = None) -> torch.Tensor:
        """Atom representations after the blocks: ``(num_nodes, hidden)``."""
        return self.encode(batch, state)[0]

    def forward(self, batch, state: torch.Tensor | None = None) -> torch.Tensor:
        v, e, u = self.encode(batch, state)
        n_graphs = u.shape[0]
        if self.readout is None:
            z = torch.cat([v, u[batch.batch]], dim=-1)
        elif self.readout == "mean":
            edge_graph = batch.batch[batch.edge_index[0]]
            z = torch.cat([scatter_mean(v, batch.batch, n_graphs), scatter_mean(e, edge_graph, n_graphs), u], dim=-1)
        else:
            edge_graph = batch.batch[batch.edge_index[0]]
            z = torch.cat([self.s2s_v(v, batch.batch, n_graphs), self.s2s_e(e, edge_graph, n_graphs), u], dim=-1)
        return self.out(self.head(z))
