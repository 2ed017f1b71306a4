"""Networks equivariant to a crystal's space group, and the baselines they are compared with.

Teaches: S.-O. Kaba and S. Ravanbakhsh, "Equivariant Networks for Crystal Structures", NeurIPS 2022,
arXiv:2211.15420.

On a fixed supercell with ``n`` sites, the space group ``G`` acts on per-site signals
``h: (batch, n, c)`` by permutations ``h -> h[:, p_g, :]`` (see :mod:`symviz.data.crystals`).
A linear map ``W: R^n -> R^n`` commutes with all of them exactly when it is constant on the orbits of
site *pairs* ``(i, j) -> (g·i, g·j)``. With channels, one weight matrix per pair orbit ``o``:

    y_i = b + Σ_o Σ_{j : (i, j) ∈ o} (1 / k_o(i)) h_j W_o            (paper, sec. 4: weights tied by orbits)

``k_o(i)`` = number of ``j`` with ``(i, j)`` in ``o`` (it is the same for every site of an orbit, so
the normalisation keeps the equivariance). This is message passing in which a message's weights are
chosen by the *orbit* of the edge instead of by its length: more expressive than distance-based
message passing (CGCNN) when two bonds of equal length are not related by symmetry.

Models:

* :class:`OrbitLinear` - the layer above; :class:`CrystalEquivariantNet` - a stack of them with an
  equivariant per-site readout and the invariant total (their sum).
* :class:`SupercellCGCNN` - the distance-based baseline: chapter 06's
  :class:`symviz.nn.cgcnn.CGCNN` run on the fixed supercell's periodic graph, with the site
  occupancies as node features (a thin wrapper; the graph is built once).
* :class:`OccupancyMLP` - an MLP on the raw occupancy vector (no symmetry at all).
* :class:`OrbitCGCNN` - CGCNN whose edge filters also read the edge-orbit descriptors of
  :func:`symviz.data.crystals.orbit_edge_features` (for many different crystals, where one weight per
  orbit cannot be shared).

    >>> import torch
    >>> from symviz.data.crystals import lattice_supercell, site_permutations, pair_orbits
    >>> atoms = lattice_supercell("hcp", "Cu", size=(2, 2, 1))
    >>> perms = site_permutations(atoms, ignore_species=True)
    >>> net = CrystalEquivariantNet(pair_orbits(perms), in_dim=2, hidden=8).double()
    >>> x = torch.nn.functional.one_hot(torch.randint(0, 2, (3, 8)), 2).double()
    >>> out, out_g = net(x), net(x[:, perms[5], :])
    >>> bool(torch.allclose(out.energy, out_g.energy)), bool(torch.allclose(out.site[:, perms[5]], out_g.site))
    (True, True)
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["CrystalPrediction", "orbit_basis", "OrbitLinear", "CrystalEquivariantNet", "OccupancyMLP",
           "SupercellCGCNN", "OrbitCGCNN"]


class CrystalPrediction(NamedTuple):
    """``energy: (batch,)`` (invariant) and ``site: (batch, n)`` (equivariant; None if not available)."""

    energy: torch.Tensor
    site: torch.Tensor | None


def orbit_basis(pair_orbits: Any, normalize: bool = True, orbits: Sequence[int] | None = None) -> torch.Tensor:
    """Indicator matrices of the pair orbits: ``(K, n, n)`` with ``A[o, i, j] = 1`` iff ``(i, j) ∈ o``.

    With ``normalize``, each row of ``A[o]`` is divided by its count ``k_o(i)`` (a mean over the
    ``j`` of that orbit). ``orbits`` keeps only those orbit labels (e.g. short bonds only).

    >>> orbit_basis(np.array([[0, 1], [1, 0]])).shape
    torch.Size([2, 2, 2])
    """
    po = torch.as_tensor(np.asarray(pair_orbits), dtype=torch.long)
    if po.ndim != 2 or po.shape[0] != po.shape[1] or po.shape[0] == 0:
        raise ValueError(f"orbit_basis: pair_orbits must be a square (n, n) array of orbit labels, got {tuple(po.shape)}")
    if (po < 0).any():
        raise ValueError("orbit_basis: orbit labels must be non-negative integers")
    labels = range(int(po.max()) + 1) if orbits is None else list(orbits)
    A = torch.stack([(po == o).double() for o in labels])
    if (A.sum(dim=(1, 2)) == 0).any():
        raise ValueError("orbit_basis: some requested orbit labels do not occur in pair_orbits")
    if normalize:
        A = A / A.sum(dim=2, keepdim=True).clamp(min=1.0)
    return A


class OrbitLinear(nn.Module):
    """The equivariant linear layer ``y_i = b + Σ_o Σ_j A[o, i, j] h_j W_o`` (Kaba & Ravanbakhsh 2022).

    Args:
        pair_orbits: ``(n, n)`` orbit labels (:func:`symviz.data.crystals.pair_orbits`).
        in_dim, out_dim: channels. ``h: (..., n, in_dim) -> (..., n, out_dim)``.
    Parameters: ``weight (K, in_dim, out_dim)``, ``bias (out_dim,)``: ``K·in·out`` weights whatever ``n``.

    Initialisation: the paper's code (``LinearEquiv`` in Kaba & Ravanbakhsh's repository) draws every
    tied weight and bias like PyTorch's ``nn.Linear``, ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``
    (``kaiming_uniform_`` with ``a=sqrt(5)``). This layer *is* an ``nn.Linear(K·in_dim, out_dim)``
    applied to the ``K`` orbit means ``[mean_{j∈o} h_j]_o`` stacked, so ``fan_in = K·in_dim`` here.
    (The paper's layer sums over sites instead of averaging and sets its fan per layer position; with a
    mean per orbit the inputs of every output are the ``K·in_dim`` orbit means, whatever the supercell.)
    """

    def __init__(self, pair_orbits: Any, in_dim: int, out_dim: int, normalize: bool = True):
        super().__init__()
        for name, v in (("in_dim", in_dim), ("out_dim", out_dim)):
            if not (isinstance(v, int) and v >= 1):
                raise ValueError(f"OrbitLinear: {name} must be a positive int, got {v!r}")
        basis = orbit_basis(pair_orbits, normalize=normalize)
        self.register_buffer("basis", basis.float())
        K, n = basis.shape[0], basis.shape[1]
        # the same matrices stacked as rows (i, o): one matrix product gives every site's K orbit means
        # (derived from ``basis``, not saved in the state dict)
        self.register_buffer("_stacked", basis.float().permute(1, 0, 2).reshape(n * K, n).contiguous(), persistent=False)
        self.in_dim, self.out_dim = in_dim, out_dim
        self.weight = nn.Parameter(torch.empty(K, in_dim, out_dim))
        self.bias = nn.Parameter(torch.empty(out_dim))
        self.reset_parameters()

    @property
    def fan_in(self) -> int:
        """Inputs of each output: ``K·in_dim`` orbit means."""
        return int(self.weight.shape[0] * self.in_dim)

    def reset_parameters(self) -> None:
        """``weight``, ``bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, as ``nn.Linear`` and the paper's code."""
        bound = 1.0 / math.sqrt(self.fan_in)
        with torch.no_grad():
            self.weight.uniform_(-bound, bound)
            self.bias.uniform_(-bound, bound)

    @property
    def n_sites(self) -> int:
        return int(self.basis.shape[1])

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if h.ndim < 2 or h.shape[-2] != self.n_sites or h.shape[-1] != self.in_dim:
            raise ValueError(f"OrbitLinear: h must be (..., n_sites={self.n_sites}, in_dim={self.in_dim}), "
                             f"got {tuple(h.shape)}")
        K, n = self.weight.shape[0], self.n_sites
        means = torch.matmul(self._stacked.to(h.dtype), h)                # (..., n*K, in): mean over j in each orbit
        # = einsum("kij,...jc,kcd->...id", basis, h, weight) as two plain matrix products (~1.5x faster than
        # the einsums, which permute and copy their operands): a Linear(K*in, out) on each site's K orbit means
        means = means.reshape(*h.shape[:-2], n, K * self.in_dim)
        return means @ self.weight.to(h.dtype).reshape(K * self.in_dim, self.out_dim) + self.bias.to(h.dtype)


class CrystalEquivariantNet(nn.Module):
    """Space-group-equivariant network on a fixed supercell.

    ``x: (batch, n) occupancies or (batch, n, in_dim) features`` ->
    :class:`CrystalPrediction` with ``site: (batch, n)`` (equivariant: ``site(x[:, p]) = site(x)[:, p]``)
    and ``energy = site.sum(-1)`` (invariant, extensive).

    Layers: per-site embedding, ``n_layers`` residual blocks ``h <- h + SiLU(OrbitLinear(h))``, and a
    per-site MLP readout (a per-site map is equivariant to any permutation).

    ``layer``: the class of the orbit-tied layers, called as ``layer(pair_orbits, hidden, hidden)`` (default
    :class:`OrbitLinear`; chapter 05 passes the learner's own, checked against it).
    """

    def __init__(self, pair_orbits: Any, in_dim: int = 2, hidden: int = 32, n_layers: int = 2, layer: Any = None):
        super().__init__()
        layer = OrbitLinear if layer is None else layer
        if not callable(layer):
            raise TypeError(f"CrystalEquivariantNet: layer must be a class like OrbitLinear, got {type(layer).__name__}")
        if not (isinstance(hidden, int) and hidden >= 1):
            raise ValueError(f"CrystalEquivariantNet: hidden must be a positive int, got {hidden!r}")
        if not (isinstance(n_layers, int) and n_layers >= 0):
            raise ValueError(f"CrystalEquivariantNet: n_layers must be a non-negative int, got {n_layers!r}")
        if not (isinstance(in_dim, int) and in_dim >= 1):
            raise ValueError(f"CrystalEquivariantNet: in_dim must be a positive int, got {in_dim!r}")
        self.in_dim = in_dim
        self.embed = nn.Linear(in_dim, hidden)
        self.layers = nn.ModuleList([layer(pair_orbits, hidden, hidden) for _ in range(n_layers)])
        self.readout = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 1))
        self.n_sites = int(np.asarray(pair_orbits).shape[0])

    def forward(self, x: torch.Tensor) -> CrystalPrediction:
        x = _as_features(x, self.n_sites, self.in_dim, "CrystalEquivariantNet")
        h = self.embed(x.to(self.embed.weight.dtype))
        for layer in self.layers:
            h = h + torch.nn.functional.silu(layer(h))
        site = self.readout(h).squeeze(-1)
        return CrystalPrediction(energy=site.sum(-1), site=site)


def _as_features(x: torch.Tensor, n: int, in_dim: int, where: str) -> torch.Tensor:
    if not torch.is_tensor(x):
        raise TypeError(f"{where}: x must be a tensor, got {type(x).__name__}")
    if x.ndim == 2 and in_dim == 2:  # occupancies -> one-hot [A, B]
        x = torch.stack([1 - x, x], dim=-1)
    elif x.ndim == 2 and in_dim == 1:
        x = x[..., None]
    if x.ndim != 3 or x.shape[1] != n or x.shape[2] != in_dim:
        raise ValueError(f"{where}: x must be (batch, n_sites={n}) occupancies or (batch, {n}, {in_dim}) "
                         f"features, got {tuple(x.shape)}")
    return x


def _is_one_hot(x: torch.Tensor) -> bool:
    """True when every row of ``x (..., k)`` is a one-hot vector (an occupancy of exactly 0 or 1)."""
    return bool((((x == 0) | (x == 1)).all(-1) & (x.sum(-1) == 1)).all())


class OccupancyMLP(nn.Module):
    """An MLP on the raw occupancy vector ``x: (batch, n) -> energy (batch,)``: no symmetry built in.

    It sees site ``i`` as a fixed input coordinate, so relabelling the sites by a symmetry operation
    changes its prediction; it has to learn the symmetry from data.
    """

    def __init__(self, n_sites: int, hidden: int = 64, n_layers: int = 2):
        super().__init__()
        if not (isinstance(n_sites, int) and n_sites >= 1):
            raise ValueError(f"OccupancyMLP: n_sites must be a positive int, got {n_sites!r}")
        layers, width = [], n_sites
        for _ in range(n_layers):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        self.net = nn.Sequential(*layers, nn.Linear(width, 1))
        self.n_sites = n_sites

    def forward(self, x: torch.Tensor) -> CrystalPrediction:
        if x.ndim == 3 and x.shape[-1] == 2:
            x = x[..., 1]
        if x.ndim != 2 or x.shape[1] != self.n_sites:
            raise ValueError(f"OccupancyMLP: x must be (batch, n_sites={self.n_sites}) occupancies, got {tuple(x.shape)}")
        return CrystalPrediction(energy=self.net(x.to(self.net[0].weight.dtype)).squeeze(-1), site=None)


class SupercellCGCNN(nn.Module):
    """Chapter 06's CGCNN (Xie & Grossman, PRL 120, 145301 (2018)) on a fixed supercell's graph.

    The periodic radius graph of ``template`` (ase Atoms or pymatgen Structure) is built once with
    :func:`symviz.data.crystal_graph.structure_to_graph`; a batch of occupancies ``(batch, n)`` becomes
    node features ``[is_A, is_B]`` on copies of that graph. The per-site head (``pool=None``) gives
    per-site energies; their sum is the energy. Depends only on distances, so it is invariant under the
    space group too, but it cannot tell apart two bonds of the same length. On one-hot occupancies the first
    convolution runs on the few (species pair, bond length) classes of edges (``species_pairs``; the same
    function, faster).
    """

    def __init__(self, template: Any, cutoff: float = 8.0, max_neighbors: int | None = 12, hidden: int = 32,
                 n_conv: int = 2, n_gaussians: int = 41, batch_norm: bool = True):
        super().__init__()
        from symviz.data.crystal_graph import structure_to_graph
        from symviz.nn.cgcnn import CGCNN

        structure = _to_pymatgen(template)
        n = len(structure)
        g = structure_to_graph(structure, cutoff=cutoff, max_neighbors=max_neighbors,
                               node_features=np.zeros((n, 2), dtype=np.float32))
        self.register_buffer("edge_index", g.edge_index)
        self.register_buffer("distances", g.distances)
        self.n_sites = n
        # On a lattice every site has the same number M of neighbours (ties kept) and the edges come sorted
        # by centre: then the edges are an (n, M) table and the sum over neighbours is a plain sum over M.
        i = g.edge_index[0]
        counts = torch.bincount(i, minlength=n)
        regular = bool(len(i) and (i[1:] >= i[:-1]).all() and (counts == counts[0]).all())
        self.register_buffer("neighbors", g.edge_index[1].reshape(n, -1) if regular else None)
        self.dense = regular   # False: the general index_add path (the same function; tests compare both)
        # the first convolution by species pairs on one-hot inputs (the same function; tests compare both paths).
        # It needs the bond lengths that occur (exactly equal float32 distances form one class; an ideal hcp or
        # fcc supercell has a single one within 12 neighbours) and each edge's class, as an (n, M) table.
        self.species_pairs = True
        lengths, edge_class = torch.unique(g.distances, return_inverse=True)
        self.register_buffer("bond_lengths", lengths, persistent=False)
        self.register_buffer("edge_class", edge_class.reshape(n, -1) if regular else None, persistent=False)
        self.cgcnn = CGCNN(node_dim=2, cutoff=cutoff, hidden=hidden, n_conv=n_conv, n_gaussians=n_gaussians,
                           head_hidden=hidden, n_targets=1, pool=None, batch_norm=batch_norm)

    def forward(self, x: torch.Tensor) -> CrystalPrediction:
        x = _as_features(x, self.n_sites, 2, "SupercellCGCNN")
        c = self.cgcnn
        dtype = c.embed.weight.dtype
        h = c.embed(x.to(dtype))                                       # (B, n, D)
        u = c.rbf(self.distances.to(dtype))                            # (E, G), the same for every configuration
        i, j = self.edge_index[0], self.edge_index[1]
        dense = self.dense and self.neighbors is not None
        D = h.shape[-1]
        # models pickled before the species-pair path existed lack its attributes: they take the edge path
        pairs = (dense and getattr(self, "species_pairs", False) and getattr(self, "edge_class", None) is not None
                 and _is_one_hot(x))
        for k, conv in enumerate(c.convs):
            # CGConv's lin(cat[h_i, h_j, u_ij]) split into its three blocks: the node blocks are applied
            # per node and the edge block once per graph (all configurations share the graph). Same
            # parameters and the same function as CGConv.forward, ~10x cheaper on a fixed supercell.
            W, b = conv.lin.weight, conv.lin.bias
            if k == 0 and pairs:   # one-hot species: the first messages from (species pair, bond length) classes
                ue = c.rbf(self.bond_lengths.to(dtype)) @ W[:, 2 * D:].T + b   # (L, 2D): one row per bond length
                agg = self._first_messages_by_species_pairs(conv, x.to(dtype), ue)
            else:
                ue = u @ W[:, 2 * D:].T + b                            # (E, 2D)
                if dense:   # edges as an (n, M) table: the centre term broadcasts, no scatter
                    n, M = self.neighbors.shape
                    # index_select, not h[:, neighbors]: the same gather, and its backward is an index_add_
                    # (advanced indexing's is a slower accumulating index_put_)
                    nb = (h @ W[:, D:2 * D].T).index_select(1, self.neighbors.reshape(-1)).reshape(*h.shape[:-2], n, M, -1)
                    z = (h @ W[:, :D].T)[:, :, None] + nb + ue.reshape(n, M, -1)
                else:
                    z = (h @ W[:, :D].T)[:, i] + (h @ W[:, D:2 * D].T)[:, j] + ue
                if not isinstance(conv.bn_edge, nn.Identity):
                    z = conv.bn_edge(z.reshape(-1, 2 * D)).reshape(z.shape)
                gate, core = z.chunk(2, dim=-1)
                msg = torch.sigmoid(gate) * conv.act(core)             # (B, E, D) or (B, n, M, D)
                agg = msg.sum(2) if dense else h.new_zeros(h.shape).index_add_(1, i, msg)
            if not isinstance(conv.bn_node, nn.Identity):
                agg = conv.bn_node(agg.reshape(-1, D)).reshape(agg.shape)
            h = conv.act(h + agg)
        site = c.head(h).squeeze(-1)                                   # pool=None: one energy per site
        return CrystalPrediction(energy=site.sum(-1), site=site)

    def _first_messages_by_species_pairs(self, conv: nn.Module, x: torch.Tensor, ue: torch.Tensor) -> torch.Tensor:
        """The first convolution's summed messages ``(B, n, D)`` for one-hot species ``x (B, n, 2)``.

        Before the first convolution a site's features are one of two embeddings, so an edge's ``z_ij`` is one of
        ``4 L`` vectors: (species of i, species of j, which of the ``L`` bond lengths of the supercell; ``ue (L, 2D)``
        holds the bond-length part). BatchNorm, the gate and the softplus run on those ``4 L`` rows instead of the
        ``B n M`` edges (their batch statistics weighted by how often each row occurs in the batch), and a site's sum
        over its ``M`` neighbours is ``sum_(s_j, l) count_i(s_j, l) msg(s_i, s_j, l)``, ``count_i`` the number of its
        neighbours of species ``s_j`` at bond length ``l``. The same function as the edge-by-edge path (tests
        compare outputs, gradients and running statistics), and its cost no longer grows with ``B n M``: 25% less
        time per training step of chapter 05's CGCNN at a batch of 8, 15% at 32 (alternated runs, Intel Xeon).
        """
        c, bn = self.cgcnn, conv.bn_edge
        n, M = self.neighbors.shape
        D, L = conv.dim, ue.shape[0]
        W = conv.lin.weight
        emb = c.embed(torch.eye(2, dtype=ue.dtype, device=ue.device))   # (2, D): the two species' features
        z = (emb @ W[:, :D].T)[:, None, None] + (emb @ W[:, D:2 * D].T)[None, :, None] + ue[None, None]
        z = z.reshape(2, 2 * L, 2 * D)                                    # rows: s_i; columns: (s_j, l)
        B = x.shape[0]
        key = x[..., 1].long()[:, self.neighbors] * L + self.edge_class   # (B, n, M): (s_j, l) of each edge
        count = x.new_zeros(B, n, 2 * L).scatter_add_(2, key, x.new_ones(key.shape))   # (B, n, 2L)
        if not isinstance(bn, nn.Identity):
            N = B * n * M
            if bn.training or bn.running_mean is None:   # batch statistics over the B n M edges, as BatchNorm1d
                w = (x.reshape(B * n, 2).T @ count.reshape(B * n, 2 * L))[..., None]   # (2, 2L, 1): edges per row
                mean = (w * z).sum((0, 1)) / N
                var = (w * (z - mean) ** 2).sum((0, 1)) / N
                if bn.training and bn.running_mean is not None:
                    with torch.no_grad():
                        bn.num_batches_tracked += 1
                        f = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
                        bn.running_mean.mul_(1 - f).add_(mean, alpha=f)
                        bn.running_var.mul_(1 - f).add_(var * (N / max(N - 1, 1)), alpha=f)
            else:
                mean, var = bn.running_mean, bn.running_var
            scale = torch.rsqrt(var + bn.eps)
            if bn.weight is not None:
                scale = scale * bn.weight
            z = (z - mean) * scale + (bn.bias if bn.bias is not None else 0.0)
        gate, core = z.chunk(2, dim=-1)
        msg = torch.sigmoid(gate) * conv.act(core)                        # (2, 2L, D)
        return x[..., :1] * (count @ msg[0]) + x[..., 1:] * (count @ msg[1])   # each site's own species' row

    def graph_batch(self, x: torch.Tensor):
        """The same input as a chapter-06 ``GraphBatch`` (to run ``self.cgcnn`` directly; used in tests)."""
        from symviz.data.crystal_graph import GraphBatch

        x = _as_features(x, self.n_sites, 2, "SupercellCGCNN")
        B, n = x.shape[0], self.n_sites
        offsets = (torch.arange(B, device=x.device) * n).repeat_interleave(self.edge_index.shape[1])
        return GraphBatch(
            num_nodes=torch.full((B,), n, dtype=torch.long, device=x.device),
            node_features=x.reshape(B * n, 2), atomic_numbers=torch.zeros(B * n, dtype=torch.long, device=x.device),
            edge_index=self.edge_index.repeat(1, B) + offsets, distances=self.distances.repeat(B),
            batch=torch.arange(B, device=x.device).repeat_interleave(n))


def _to_pymatgen(template: Any):
    from pymatgen.core import Structure

    if isinstance(template, Structure):
        return template
    from pymatgen.io.ase import AseAtomsAdaptor

    return AseAtomsAdaptor.get_structure(template)


class OrbitCGCNN(nn.Module):
    """CGCNN whose edge filters read ``[Gaussian(d_ij), orbit descriptors of edge ij]``.

    For many different crystals (each with its own space group) one weight per pair orbit cannot be
    shared, so each edge orbit is described by invariants of its bonds
    (:func:`symviz.data.crystals.orbit_edge_features`) and CGCNN's gated filter (eq. 5 of Xie &
    Grossman) reads them next to the distance: bonds of equal length in different orbits get different
    messages. ``forward(batch, edge_features)`` with a ``GraphBatch`` and ``edge_features: (E, F)``
    -> ``(num_graphs, 1)``. With ``use_orbits=False`` the descriptors are zeroed: plain CGCNN with the
    same graph and size (the ablation).
    """

    def __init__(self, node_dim: int = 92, cutoff: float = 5.0, hidden: int = 64, n_conv: int = 3,
                 n_gaussians: int = 41, head_hidden: int = 128, orbit_dim: int = 4, use_orbits: bool = True,
                 batch_norm: bool = True):
        super().__init__()
        from symviz.nn.cgcnn import CGCNN, CGConv

        self.base = CGCNN(node_dim=node_dim, cutoff=cutoff, hidden=hidden, n_conv=n_conv, n_gaussians=n_gaussians,
                          head_hidden=head_hidden, n_targets=1, pool="mean", batch_norm=batch_norm)
        # same gated convolution, wider edge input
        self.base.convs = nn.ModuleList([CGConv(hidden, n_gaussians + orbit_dim, batch_norm) for _ in range(n_conv)])
        self.orbit_dim, self.use_orbits = orbit_dim, use_orbits

    def forward(self, batch, edge_features: torch.Tensor) -> torch.Tensor:
        from symviz.nn.cgcnn import scatter_mean

        ef = edge_features
        if not torch.is_tensor(ef):
            raise TypeError(f"OrbitCGCNN: edge_features must be a tensor (num_edges, {self.orbit_dim}), "
                            f"got {type(ef).__name__}")
        if ef.ndim != 2 or ef.shape[1] != self.orbit_dim or ef.shape[0] != batch.edge_index.shape[1]:
            raise ValueError(f"OrbitCGCNN: edge_features must be (num_edges={batch.edge_index.shape[1]}, "
                             f"{self.orbit_dim}), got {tuple(ef.shape)}")
        b = self.base
        dtype = b.embed.weight.dtype
        h = b.embed(batch.node_features.to(dtype))
        u = b.rbf(batch.distances.to(dtype))
        ef = ef.to(dtype) if self.use_orbits else torch.zeros_like(ef, dtype=dtype)
        u = torch.cat([u, ef], dim=-1)
        for conv in b.convs:
            h = conv(h, batch.edge_index, u)
        return b.head(scatter_mean(h, batch.batch, int(batch.num_nodes.shape[0])))


# ----------------------------------------------------------------------------------------------
# measuring the space-group symmetry of a model
# ----------------------------------------------------------------------------------------------

@torch.no_grad()
def symmetry_errors(model: nn.Module, x: torch.Tensor, perms: torch.Tensor, ops: Sequence[int] | None = None,
                    chunk: int = 512) -> dict:
    """How far ``model`` is from the space group's symmetry, over the operations ``ops`` (default all).

    Relative errors as :func:`symviz.equivariance.relative_error` defines them, one item per
    configuration ``x_b`` and operation ``g``, the worst one returned:

    * ``energy``: ``|E(x_b[p_g]) − E(x_b)| / (max(|E(x_b)|, 1e-3 · max_b' |E(x_b')|) + 1e-12)`` (invariance);
    * ``site``: ``‖s(x_b[p_g]) − s(x_b)[p_g]‖ / (max(‖s(x_b)‖, 1e-3 · max_b' ‖s(x_b')‖) + 1e-12)``
      (equivariance; Euclidean norms over the sites), or NaN when the model has no per-site output.

    ``x: (batch, n)`` occupancies; ``perms: (m, n)``; ``chunk``: configurations per forward pass.
    """
    from symviz.equivariance import relative_error

    if x.ndim != 2 or perms.ndim != 2 or perms.shape[1] != x.shape[1]:
        raise ValueError(f"symmetry_errors: need x (batch, n) and perms (m, n) with the same n, got "
                         f"{tuple(x.shape)} and {tuple(perms.shape)}")
    was = model.training
    model.eval()
    dtype = next(model.parameters()).dtype
    x = x.to(dtype)
    ref = model(x)
    e_err, s_err = 0.0, (0.0 if ref.site is not None else float("nan"))
    ops = torch.arange(perms.shape[0]) if ops is None else torch.as_tensor(list(ops), dtype=torch.long)
    B, n = x.shape
    per_chunk = max(1, chunk // B)
    for start in range(0, len(ops), per_chunk):  # many operations per forward pass
        P = perms[ops[start:start + per_chunk]]                              # (k, n)
        xg = x[:, P].transpose(0, 1).reshape(-1, n)                          # (k*B, n): x_b[p_g]
        out = model(xg)
        e_diff = out.energy.reshape(len(P), B) - ref.energy                  # (k, B)
        e_err = max(e_err, float(relative_error(e_diff[..., None], ref.energy[:, None], dim=-1).max()))
        if ref.site is not None:
            moved = ref.site[:, P].transpose(0, 1)                           # (k, B, n): s(x_b)[p_g]
            s_diff = out.site.reshape(len(P), B, n) - moved
            s_err = max(s_err, float(relative_error(s_diff, ref.site, dim=-1).max()))
    model.train(was)
    return {"energy": e_err, "site": s_err}


__all__ += ["symmetry_errors"]
