"""Crystal graphs: periodic radius graphs of pymatgen structures, ready for a graph network.

A crystal is an infinite periodic arrangement of atoms. Following CGCNN (Xie & Grossman, "Crystal
Graph Convolutional Neural Networks for an Accurate and Interpretable Prediction of Material
Properties", Phys. Rev. Lett. 120, 145301 (2018)), we turn its unit cell into a *multigraph*: one
node per site of the cell, one directed edge ``i -> j`` for every periodic image of site ``j`` within
``cutoff`` Å of site ``i``. Two images of the same site give two edges, so small cells still see their
whole neighbourhood. The graph depends only on interatomic distances, so anything computed from it is
invariant to rotations and translations of the crystal, to the order of the sites and (with mean
pooling) to the choice of unit cell.

Usage::

    >>> from pymatgen.core import Lattice, Structure
    >>> fe = Structure(Lattice.cubic(2.87), ["Fe", "Fe"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    >>> graphs = structures_to_graphs([fe], cutoff=2.6)
    >>> graphs[0].num_nodes, graphs[0].num_edges       # 8 nearest neighbours (2.49 Å) for each atom
    (2, 16)
    >>> batch = collate_graphs(graphs + graphs)
    >>> batch.node_features.shape, batch.num_graphs
    (torch.Size([4, 92]), 2)

Node features are pluggable: ``"cgcnn"`` (the 92-dimensional element encoding of the CGCNN paper, as
shipped in matminer), ``"onehot"`` (atomic number one-hot), a callable ``site -> vector``, or one
array of per-site features per structure that you computed yourself.
"""
from __future__ import annotations

import json
from collections import namedtuple
from dataclasses import dataclass, field, fields
from functools import lru_cache
from typing import Any, Callable, Sequence

import numpy as np
import torch

__all__ = [
    "CrystalGraph", "GraphBatch", "GRAPH_TENSORS", "structures_to_graphs", "structure_to_graph", "collate_graphs",
    "cgcnn_element_features", "onehot_element_features", "MAX_Z", "MIN_DISTANCE",
]

MAX_Z = 100  # one-hot width: elements H (1) .. Fm (100)
MIN_DISTANCE = 0.5  # Å; no real crystal has two atoms closer (H2 is 0.74 Å)


@dataclass
class CrystalGraph:
    """One crystal as a graph.

    Attributes:
        node_features: ``(n_nodes, n_features)`` float32, one row per site of the unit cell.
        atomic_numbers: ``(n_nodes,)`` int64.
        edge_index: ``(2, n_edges)`` int64; row 0 is the centre atom ``i``, row 1 the neighbour ``j``
            (an edge per periodic image of ``j`` within the cutoff).
        distances: ``(n_edges,)`` float32, ``|r_j + L - r_i|`` in Å.
        y: optional target ``(n_targets,)`` float32 (e.g. magnetic moment per atom).
        node_y: optional per-site target ``(n_nodes, k)`` (e.g. site magnetic moments).
    """

    node_features: torch.Tensor
    atomic_numbers: torch.Tensor
    edge_index: torch.Tensor
    distances: torch.Tensor
    y: torch.Tensor | None = None
    node_y: torch.Tensor | None = None
    meta: dict = field(default_factory=dict)

    @property
    def num_nodes(self) -> int:
        return int(self.node_features.shape[0])

    @property
    def num_edges(self) -> int:
        return int(self.edge_index.shape[1])


GRAPH_TENSORS = tuple(f.name for f in fields(CrystalGraph) if f.name != "meta")
"""The tensors of a :class:`CrystalGraph` (all its fields but ``meta``); a :class:`GraphBatch` holds the same ones."""


class GraphBatch(namedtuple("GraphBatch", ("num_nodes", "batch") + GRAPH_TENSORS, defaults=(None, None))):
    """Many crystal graphs glued into one disconnected graph (what :func:`collate_graphs` returns).

    A named tuple, so ``symviz.train.fit`` moves it to the device and counts crystals for you. Its fields
    are ``num_nodes`` and ``batch`` followed by the tensors of :class:`CrystalGraph`
    (:data:`GRAPH_TENSORS`, concatenated over the crystals; ``y`` and ``node_y`` default to None).

    Attributes:
        num_nodes: ``(B,)`` int64, number of sites of each of the ``B`` crystals.
        batch: ``(N,)`` int64, which crystal (0..B-1) each node belongs to.
        node_features: ``(N, F)`` all nodes of all crystals (``N = num_nodes.sum()``).
        atomic_numbers: ``(N,)``.
        edge_index: ``(2, E)`` with node indices offset into the big graph.
        distances: ``(E,)``.
        y: ``(B, n_targets)`` or None; node_y: ``(N, k)`` or None.
    """

    __slots__ = ()

    @property
    def num_graphs(self) -> int:
        return int(self.num_nodes.shape[0])

    def to(self, device: torch.device | str) -> "GraphBatch":
        """Move every tensor to ``device`` (returns a new batch)."""
        return GraphBatch(*[None if t is None else t.to(device) for t in self])


# ----------------------------------------------------------------------------------------------
# Node features
# ----------------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _cgcnn_table() -> dict[int, np.ndarray]:
    from importlib.resources import files

    path = files("matminer.utils.data_files") / "cgcnn_atom_feature.json"
    raw = json.loads(path.read_text())
    return {int(z): np.asarray(v, dtype=np.float32) for z, v in raw.items()}


def cgcnn_element_features(z: int) -> np.ndarray:
    """The 92-dim element encoding of CGCNN (group, period, electronegativity, radius, ... one-hot bins).

    Table from the CGCNN paper's supplementary (shipped offline in matminer as
    ``cgcnn_atom_feature.json``); covers Z = 1..100.

    >>> cgcnn_element_features(26).shape
    (92,)
    """
    table = _cgcnn_table()
    if int(z) not in table:
        raise ValueError(f"cgcnn_element_features: no CGCNN encoding for atomic number {z!r} (known: 1..100)")
    return table[int(z)]


def onehot_element_features(z: int) -> np.ndarray:
    """One-hot of the atomic number, width :data:`MAX_Z` (index ``z - 1``).

    >>> int(onehot_element_features(26).argmax())
    25
    """
    if not (isinstance(z, (int, np.integer)) and 1 <= int(z) <= MAX_Z):
        raise ValueError(f"onehot_element_features: atomic number must be an int in 1..{MAX_Z}, got {z!r}")
    v = np.zeros(MAX_Z, dtype=np.float32)
    v[int(z) - 1] = 1.0
    return v


_FEATURIZERS: dict[str, Callable[[int], np.ndarray]] = {
    "cgcnn": cgcnn_element_features,
    "onehot": onehot_element_features,
}


def _site_z(site: Any, where: str) -> int:
    if not site.is_ordered:
        raise ValueError(f"{where}: disordered site {site.species_string!r}; graphs need ordered structures "
                         "(one element per site)")
    el = site.specie
    z = getattr(el, "Z", None)
    if z is None:  # DummySpecies such as 'X0+'
        raise ValueError(f"{where}: unknown element {str(el)!r} on a site (expected a real chemical element)")
    return int(z)


# ----------------------------------------------------------------------------------------------
# Graph construction
# ----------------------------------------------------------------------------------------------

def structure_to_graph(structure: Any, cutoff: float = 5.0, max_neighbors: int | None = 12,
                       node_features: str | Callable | np.ndarray = "cgcnn", y: Any = None,
                       node_y: Any = None, tol: float = 1e-3) -> CrystalGraph:
    """One pymatgen ``Structure`` -> :class:`CrystalGraph` (see :func:`structures_to_graphs`)."""
    from pymatgen.core import Structure

    where = "structure_to_graph"
    if not isinstance(structure, Structure):
        raise TypeError(f"{where}: structure must be a pymatgen Structure, got {type(structure).__name__}")
    if len(structure) == 0:
        raise ValueError(f"{where}: structure has no sites")
    if not (isinstance(cutoff, (int, float)) and 0 < cutoff <= 20):
        raise ValueError(f"{where}: cutoff must be a distance in Å in (0, 20], got {cutoff!r}")
    if max_neighbors is not None and not (isinstance(max_neighbors, int) and max_neighbors >= 1):
        raise ValueError(f"{where}: max_neighbors must be a positive int or None, got {max_neighbors!r}")
    if not np.isfinite(structure.lattice.volume) or structure.lattice.volume < 1e-3:
        raise ValueError(f"{where}: malformed lattice (volume {structure.lattice.volume!r} Å^3)")
    zs = np.array([_site_z(s, where) for s in structure], dtype=np.int64)
    n = len(structure)

    # node features
    if isinstance(node_features, str):
        if node_features not in _FEATURIZERS:
            raise ValueError(f"{where}: node_features must be one of {sorted(_FEATURIZERS)}, a callable "
                             f"site -> vector, or an (n_sites, F) array; got {node_features!r}")
        fn = _FEATURIZERS[node_features]
        x = np.stack([fn(z) for z in zs])
    elif callable(node_features):
        x = np.stack([np.asarray(node_features(site), dtype=np.float32).reshape(-1) for site in structure])
    else:
        x = np.asarray(node_features, dtype=np.float32)
        if x.ndim == 1:
            x = x[:, None]
        if x.ndim != 2 or x.shape[0] != n:
            raise ValueError(f"{where}: node_features array must have shape (n_sites={n}, F), got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{where}: node features contain NaN or inf")

    # periodic neighbours: every image of every site within the cutoff (pymatgen's C neighbour list)
    centers, neighbors, _images, dists = structure.get_neighbor_list(float(cutoff))
    keep = dists > tol  # drop the atom itself
    centers, neighbors, dists = centers[keep], neighbors[keep], dists[keep]
    if len(dists) and dists.min() < MIN_DISTANCE:
        raise ValueError(f"{where}: two atoms are {dists.min():.3f} Å apart (< {MIN_DISTANCE} Å); "
                         "malformed or overlapping structure")
    if max_neighbors is not None and len(dists):
        # keep the max_neighbors nearest per centre, plus everything tied with the last one kept,
        # so that the graph (and the model) never depends on how ties are broken
        order = np.lexsort((dists, centers))
        centers, neighbors, dists = centers[order], neighbors[order], dists[order]
        keep = np.zeros(len(dists), dtype=bool)
        starts = np.searchsorted(centers, np.arange(n))
        ends = np.searchsorted(centers, np.arange(n), side="right")
        for s, e in zip(starts, ends):
            if e - s <= max_neighbors:
                keep[s:e] = True
            else:
                d_last = dists[s + max_neighbors - 1]
                keep[s:e] = dists[s:e] <= d_last + tol
        centers, neighbors, dists = centers[keep], neighbors[keep], dists[keep]
    edge_index = torch.as_tensor(np.stack([centers, neighbors]).astype(np.int64)).reshape(2, -1)

    def _t(v, name):
        if v is None:
            return None
        t = torch.as_tensor(np.asarray(v, dtype=np.float32))
        if not torch.isfinite(t).all():
            raise ValueError(f"{where}: {name} contains NaN or inf")
        return t

    yt = _t(y, "y")
    if yt is not None:
        yt = yt.reshape(-1)
    nyt = _t(node_y, "node_y")
    if nyt is not None:
        nyt = nyt.reshape(n, -1) if nyt.numel() % n == 0 else None
        if nyt is None:
            raise ValueError(f"{where}: node_y must have n_sites={n} rows")
    return CrystalGraph(
        node_features=torch.as_tensor(x, dtype=torch.float32),
        atomic_numbers=torch.as_tensor(zs),
        edge_index=edge_index,
        distances=torch.as_tensor(dists, dtype=torch.float32),
        y=yt, node_y=nyt,
        meta={"formula": structure.composition.reduced_formula, "cutoff": float(cutoff)},
    )


def structures_to_graphs(structures: Sequence[Any], cutoff: float = 5.0, max_neighbors: int | None = 12,
                         node_features: str | Callable | Sequence[np.ndarray] = "cgcnn",
                         targets: Sequence[Any] | None = None, node_targets: Sequence[Any] | None = None,
                         ) -> list[CrystalGraph]:
    """Build the periodic radius graph of every structure (CGCNN, Xie & Grossman 2018, sec. "Method").

    Args:
        structures: pymatgen ``Structure`` objects (ordered: one element per site).
        cutoff: neighbour radius in Å (CGCNN used 8 Å with 12 neighbours; 5 Å is plenty for metals
            and much cheaper).
        max_neighbors: keep at most this many nearest neighbours per atom (ties at the boundary are all
            kept, so the graph never depends on site order); ``None`` keeps every neighbour.
        node_features: ``"cgcnn"`` (92 dims), ``"onehot"`` (100 dims), a callable ``site -> vector``,
            or a sequence with one ``(n_sites, F)`` array per structure (your own per-site features).
        targets: optional, one value or vector per structure (stored as ``graph.y``).
        node_targets: optional, one ``(n_sites,)`` or ``(n_sites, k)`` array per structure.

    Returns:
        a list of :class:`CrystalGraph`, one per structure (in order).
    """
    if isinstance(structures, (str, bytes)) or not hasattr(structures, "__len__"):
        raise TypeError("structures_to_graphs: structures must be a list of pymatgen Structures")
    n = len(structures)
    for name, seq in (("targets", targets), ("node_targets", node_targets)):
        if seq is not None and len(seq) != n:
            raise ValueError(f"structures_to_graphs: {name} has {len(seq)} entries for {n} structures")
    per_structure = not isinstance(node_features, str) and not callable(node_features)
    if per_structure and len(node_features) != n:
        raise ValueError(f"structures_to_graphs: node_features has {len(node_features)} arrays for {n} structures")
    graphs = []
    for i, s in enumerate(structures):
        try:
            graphs.append(structure_to_graph(
                s, cutoff=cutoff, max_neighbors=max_neighbors,
                node_features=node_features[i] if per_structure else node_features,
                y=None if targets is None else targets[i],
                node_y=None if node_targets is None else node_targets[i]))
        except (ValueError, TypeError) as err:
            raise type(err)(f"structure {i}: {err}") from None
    return graphs


def collate_graphs(graphs: Sequence[CrystalGraph]) -> GraphBatch:
    """Glue crystal graphs into one :class:`GraphBatch` (use as ``DataLoader(..., collate_fn=collate_graphs)``).

    Node indices of graph ``k`` are shifted by the number of nodes in graphs ``0..k-1``;
    ``batch[n]`` says which crystal node ``n`` belongs to.
    """
    graphs = list(graphs)
    if not graphs:
        raise ValueError("collate_graphs: got an empty list of graphs")
    if not all(isinstance(g, CrystalGraph) for g in graphs):
        raise TypeError("collate_graphs: every item must be a CrystalGraph (from structures_to_graphs)")
    widths = {g.node_features.shape[1] for g in graphs}
    if len(widths) != 1:
        raise ValueError(f"collate_graphs: graphs have different node feature widths {sorted(widths)}")
    counts = torch.tensor([g.num_nodes for g in graphs])
    offsets = torch.cumsum(counts, 0) - counts
    has_y = [g.y is not None for g in graphs]
    if any(has_y) and not all(has_y):
        raise ValueError("collate_graphs: some graphs have a target y and some do not")
    has_ny = [g.node_y is not None for g in graphs]
    if any(has_ny) and not all(has_ny):
        raise ValueError("collate_graphs: some graphs have node_y and some do not")
    return GraphBatch(
        num_nodes=counts.to(torch.int64),
        node_features=torch.cat([g.node_features for g in graphs]),
        atomic_numbers=torch.cat([g.atomic_numbers for g in graphs]),
        edge_index=torch.cat([g.edge_index + o for g, o in zip(graphs, offsets)], dim=1),
        distances=torch.cat([g.distances for g in graphs]),
        batch=torch.repeat_interleave(torch.arange(len(graphs)), counts),
        y=torch.stack([g.y for g in graphs]) if all(has_y) else None,
        node_y=torch.cat([g.node_y for g in graphs]) if all(has_ny) else None,
    )
