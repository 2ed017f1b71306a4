"""A cluster expansion of alloy energies on a fixed supercell: a label whose symmetry is the space group, not distance.

Teaches (with chapter 05): S.-O. Kaba and S. Ravanbakhsh, "Equivariant Networks for Crystal Structures", NeurIPS
2022, arXiv:2211.15420. The cluster expansion itself: J. M. Sanchez, F. Ducastelle and D. Gratias, "Generalized
cluster description of multicomponent systems", Physica A 128, 334 (1984).

A binary alloy configuration is a spin per site, ``s_i = 2 x_i - 1`` (``x_i = 1`` where the site holds element B).
A *cluster* is a set of sites (a point, a pair, a triangle); the space group moves clusters onto clusters, and
its orbits ``alpha`` group the clusters that the crystal's symmetry cannot tell apart. The energy is

    E(s) = J_0 + sum_alpha J_alpha sum_{c in alpha} prod_{i in c} s_i            (eV per supercell)

with one effective cluster interaction (ECI) ``J_alpha`` per orbit. Because the ECIs are constant on orbits,
``E(s[p_g]) = E(s)`` for every site permutation ``p_g`` of the group, exactly. Two orbits may hold pairs at the
same distance (in ideal hcp the in-plane and out-of-plane nearest neighbours): nothing forces their ECIs to be
equal, and a model that only sees distances cannot tell them apart.

Conventions: sites and ``perms`` as in :mod:`symviz.data.crystals` (``perms: (m, n)``, row ``g`` a permutation
of the sites, the rows forming a group). A cluster is a sorted row of distinct site indices; clusters are taken
on the supercell (a pair is a pair of supercell sites, counted once, whatever the number of periodic images
that connect them).

    >>> from symviz.data.crystals import lattice_supercell, site_permutations, pair_distances
    >>> atoms = lattice_supercell("fcc", "Cu", size=(1, 1, 1))
    >>> perms = site_permutations(atoms, ignore_species=True)
    >>> orbits = find_cluster_orbits(atoms, perms, max_pair=3.0, max_triplet=0.0)
    >>> [(o.size, len(o.clusters)) for o in orbits]           # 4 points, 6 nearest-neighbour pairs
    [(1, 4), (2, 6)]
    >>> ce = ClusterExpansion(orbits, eci=[0.0, 0.01], j0=0.0)
    >>> float(ce.energy(torch.zeros(1, 4))[0])               # all A: every pair product is +1
    0.06
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

__all__ = ["enumerate_clusters", "cluster_orbits", "ClusterOrbit", "find_cluster_orbits", "ClusterExpansion",
           "random_configurations", "cluster_expansion_dataset", "anisotropic_ecis"]


def _distances(distances: Any, where: str) -> np.ndarray:
    d = np.asarray(distances, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] != d.shape[1] or d.shape[0] == 0:
        raise ValueError(f"{where}: distances must be a square (n, n) matrix of site distances in Å (e.g. "
                         f"symviz.data.crystals.pair_distances), got shape {d.shape}")
    if not np.isfinite(d).all() or (d < 0).any() or not np.allclose(d, d.T):
        raise ValueError(f"{where}: distances must be finite, non-negative and symmetric")
    return d


def enumerate_clusters(distances: Any, size: int, max_distance: float, tol: float = 1e-6) -> np.ndarray:
    """All clusters of ``size`` distinct sites whose pairwise distances are all ``<= max_distance`` (+ ``tol``).

    ``distances: (n, n)`` in Å. Returns ``(C, size)`` int64, each row sorted, rows in lexicographic order.
    ``size`` 1 gives every site, whatever ``max_distance``.

    >>> enumerate_clusters(np.array([[0, 1, 2], [1, 0, 1], [2, 1, 0]]), 2, 1.5).tolist()
    [[0, 1], [1, 2]]
    """
    d = _distances(distances, "enumerate_clusters")
    if not (isinstance(size, (int, np.integer)) and 1 <= size <= 4):
        raise ValueError(f"enumerate_clusters: size must be 1, 2, 3 or 4 sites, got {size!r}")
    if not (isinstance(max_distance, (int, float)) and max_distance >= 0):
        raise ValueError(f"enumerate_clusters: max_distance must be a distance >= 0 in Å, got {max_distance!r}")
    n = d.shape[0]
    if size == 1:
        return np.arange(n, dtype=np.int64)[:, None]
    close = d <= max_distance + tol
    np.fill_diagonal(close, False)
    rows = []
    for c in itertools.combinations(range(n), size):
        if all(close[a, b] for a, b in itertools.combinations(c, 2)):
            rows.append(c)
    return np.asarray(rows, dtype=np.int64).reshape(-1, size)


def _check_clusters(clusters: Any, n: int, where: str) -> np.ndarray:
    c = np.asarray(clusters)
    if c.ndim != 2 or c.shape[0] == 0 or c.shape[1] == 0:
        raise ValueError(f"{where}: clusters must be a non-empty (C, k) array of site indices, got shape {c.shape}")
    if not np.issubdtype(c.dtype, np.integer):
        raise ValueError(f"{where}: clusters must hold integer site indices, got dtype {c.dtype}")
    if (c < 0).any() or (c >= n).any():
        raise ValueError(f"{where}: cluster site indices must lie in 0..{n - 1} (the n={n} sites of perms)")
    c = np.sort(c.astype(np.int64), axis=1)
    if c.shape[1] > 1 and (np.diff(c, axis=1) == 0).any():
        raise ValueError(f"{where}: a cluster lists the same site twice; a cluster is a set of distinct sites")
    return c


def cluster_orbits(perms: Any, clusters: Any) -> np.ndarray:
    """Orbit label of every cluster under the group ``perms``: ``(C,)`` ints ``0..K-1`` (first-appearance order).

    ``clusters: (C, k)`` site indices; the list must be closed under the group (every image of a cluster is in
    it: a list built by :func:`enumerate_clusters` is). Two clusters share a label exactly when some operation
    maps one onto the other as sets of sites.
    """
    from symviz.data.crystals import _check_perms, canonical_labels

    p = _check_perms(perms, "cluster_orbits")
    n = p.shape[1]
    c = _check_clusters(clusters, n, "cluster_orbits")
    C, k = c.shape
    code = lambda rows: (np.sort(rows, axis=1) * (n ** np.arange(k - 1, -1, -1))).sum(axis=1)   # a set -> an int
    keys = code(c)
    order = np.argsort(keys)
    if len(np.unique(keys)) != C:
        raise ValueError("cluster_orbits: the same cluster is listed twice")
    best = np.arange(C)
    for row in p:
        img = code(row[c])
        pos = np.clip(np.searchsorted(keys[order], img), 0, C - 1)
        if not (keys[order][pos] == img).all():
            raise ValueError("cluster_orbits: the cluster list is not closed under the group (a symmetry operation "
                             "maps some cluster outside it); enumerate every cluster within the cutoff, e.g. with "
                             "enumerate_clusters")
        np.minimum(best, order[pos], out=best)
    return canonical_labels(best)


@dataclass
class ClusterOrbit:
    """One orbit of clusters under the space group.

    Attributes:
        size: sites per cluster (1 point, 2 pair, 3 triangle).
        clusters: ``(m, size)`` the supercell's clusters in this orbit (sorted site indices).
        distances: the sorted pair distances of a cluster (Å, rounded to 1e-4; the same for the whole orbit).
        anisotropy: orbit average of ``P2(cos theta) = (3 cos^2 theta - 1) / 2``, ``theta`` the angle between the
            crystal's unique axis and the bond (pairs) or the triangle's normal (triplets); 0 for points. It is
            the same for every cluster of an orbit by construction (an average over the orbit).
    """

    size: int
    clusters: np.ndarray
    distances: tuple
    anisotropy: float = 0.0

    @property
    def multiplicity(self) -> float:
        """Clusters of this orbit per site of the supercell."""
        return len(self.clusters) / float(self._n_sites) if self._n_sites else float("nan")

    _n_sites: int = field(default=0, repr=False)

    def __repr__(self) -> str:
        d = ", ".join(f"{v:.3f}" for v in self.distances)
        return (f"ClusterOrbit(size={self.size}, {len(self.clusters)} clusters, distances=({d}) Å, "
                f"anisotropy={self.anisotropy:+.3f})")


def _cartesian_clusters(lattice: np.ndarray, frac: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """Cartesian positions ``(C, k, 3)`` of each cluster's sites, every site at the image nearest the first site."""
    f = frac[clusters]                                     # (C, k, 3)
    d = f - f[:, :1]
    d -= np.round(d)
    return (f[:, :1] + d) @ lattice


def find_cluster_orbits(structure: Any, perms: Any, max_pair: float, max_triplet: float = 0.0,
                        axis: Sequence[float] | None = None, tol: float = 1e-4) -> list[ClusterOrbit]:
    """The orbits of points, pairs up to ``max_pair`` Å and triangles whose sides are all ``<= max_triplet`` Å.

    ``structure``: the supercell (ase Atoms, pymatgen Structure or ``(lattice, frac, numbers)``) that ``perms``
    acts on. ``axis``: the crystal's unique axis for :attr:`ClusterOrbit.anisotropy` (default: the third cell
    vector, the c axis of an hcp cell). Orbits come sorted by size, then by distances. ``max_triplet=0``: no
    triangles.
    """
    from symviz.data.crystals import _as_cell, pair_distances

    lat, frac, _ = _as_cell(structure, "find_cluster_orbits")
    p = np.asarray(perms.detach().cpu() if torch.is_tensor(perms) else perms)
    if p.ndim != 2 or p.shape[1] != len(frac):
        raise ValueError(f"find_cluster_orbits: perms must be (m, n={len(frac)}) for this structure, got shape {p.shape}")
    for name, v in (("max_pair", max_pair), ("max_triplet", max_triplet)):
        if not (isinstance(v, (int, float)) and v >= 0):
            raise ValueError(f"find_cluster_orbits: {name} must be a distance >= 0 in Å, got {v!r}")
    ax = np.asarray(lat[2] if axis is None else axis, dtype=np.float64)
    if ax.shape != (3,) or np.linalg.norm(ax) < 1e-12:
        raise ValueError(f"find_cluster_orbits: axis must be a non-zero 3-vector, got {axis!r}")
    ax = ax / np.linalg.norm(ax)
    d = pair_distances(structure)
    out: list[ClusterOrbit] = []
    for size, cut in ((1, 0.0), (2, max_pair), (3, max_triplet)):
        if size > 1 and cut <= 0:
            continue
        clusters = enumerate_clusters(d, size, cut)
        if len(clusters) == 0:
            continue
        labels = cluster_orbits(p, clusters)
        xyz = _cartesian_clusters(lat, frac, clusters)
        if size == 1:
            direction = None
        elif size == 2:
            direction = xyz[:, 1] - xyz[:, 0]
        else:
            direction = np.cross(xyz[:, 1] - xyz[:, 0], xyz[:, 2] - xyz[:, 0])
        if direction is not None:
            cos = direction @ ax / np.linalg.norm(direction, axis=1).clip(min=1e-12)
            p2 = 1.5 * cos ** 2 - 0.5
        for o in range(labels.max() + 1):
            members = clusters[labels == o]
            first = members[0]
            dist = tuple(sorted(round(float(d[a, b]), 4) for a, b in itertools.combinations(first, 2)))
            aniso = float(p2[labels == o].mean()) if direction is not None else 0.0
            out.append(ClusterOrbit(size=size, clusters=members, distances=dist, anisotropy=aniso,
                                    _n_sites=len(frac)))
    out.sort(key=lambda o: (o.size, o.distances, round(o.anisotropy, 6)))
    return out


class ClusterExpansion:
    """``E(x) = J_0 + sum_alpha J_alpha sum_{c in alpha} prod_{i in c} s_i`` with ``s = 2 x - 1`` (eV per supercell).

    Args:
        orbits: the cluster orbits (:func:`find_cluster_orbits`), all on the same ``n`` sites.
        eci: ``(K,)`` one effective cluster interaction per orbit, in eV.
        j0: the constant term, eV.
    """

    def __init__(self, orbits: Sequence[ClusterOrbit], eci: Sequence[float], j0: float = 0.0):
        orbits = list(orbits)
        if not orbits or not all(isinstance(o, ClusterOrbit) for o in orbits):
            raise ValueError("ClusterExpansion: orbits must be a non-empty list of ClusterOrbit "
                             "(from find_cluster_orbits)")
        eci = np.asarray(eci, dtype=np.float64)
        if eci.shape != (len(orbits),):
            raise ValueError(f"ClusterExpansion: need one ECI per orbit, {len(orbits)} orbits but eci has shape "
                             f"{eci.shape}")
        if not np.isfinite(eci).all() or not np.isfinite(j0):
            raise ValueError("ClusterExpansion: eci and j0 must be finite numbers (eV)")
        n = int(max(int(o.clusters.max()) for o in orbits)) + 1
        self.n_sites = max(n, max(o._n_sites for o in orbits))
        self.orbits, self.eci, self.j0 = orbits, eci, float(j0)

    def _spins(self, occupancy: Any) -> torch.Tensor:
        x = torch.as_tensor(occupancy, dtype=torch.float64)
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2 or x.shape[1] != self.n_sites:
            raise ValueError(f"ClusterExpansion: occupancy must be (N, n_sites={self.n_sites}) of 0 (A) / 1 (B), "
                             f"got shape {tuple(x.shape)}")
        if not ((x == 0) | (x == 1)).all():
            raise ValueError("ClusterExpansion: occupancy must hold 0 (element A) or 1 (element B) on every site")
        return 2 * x - 1

    def correlations(self, occupancy: Any) -> torch.Tensor:
        """``(N, K)``: for each orbit, the sum over its clusters of the product of the cluster's spins."""
        s = self._spins(occupancy)
        cols = [s[:, torch.as_tensor(o.clusters)].prod(dim=-1).sum(dim=-1) for o in self.orbits]
        return torch.stack(cols, dim=-1)

    def energy(self, occupancy: Any) -> torch.Tensor:
        """``(N,)`` energy per supercell in eV (float64)."""
        return self.j0 + self.correlations(occupancy) @ torch.as_tensor(self.eci)

    def site_energy(self, occupancy: Any) -> torch.Tensor:
        """``(N, n)``: each cluster's term split equally among its sites (and ``J_0 / n`` per site); sums to the energy."""
        s = self._spins(occupancy)
        out = torch.full_like(s, self.j0 / self.n_sites)
        for o, J in zip(self.orbits, self.eci):
            idx = torch.as_tensor(o.clusters)
            term = s[:, idx].prod(dim=-1) * (J / o.size)                  # (N, C)
            for col in range(o.size):
                out.index_add_(1, idx[:, col], term)
        return out

    def table(self):
        """A pandas DataFrame, one row per orbit: size, clusters, per site, distances, anisotropy, ECI (meV)."""
        import pandas as pd

        return pd.DataFrame([{"size": o.size, "clusters": len(o.clusters), "per site": len(o.clusters) / self.n_sites,
                              "distances (Å)": ", ".join(f"{v:.3f}" for v in o.distances) or "-",
                              "anisotropy P2": round(o.anisotropy, 3), "ECI (meV)": 1000 * J}
                             for o, J in zip(self.orbits, self.eci)])


def anisotropic_ecis(orbits: Sequence[ClusterOrbit], point: float = 0.0, pair: Sequence[float] = (0.0,),
                     pair_anisotropy: Sequence[float] = (0.0,), triplet: float = 0.0,
                     triplet_anisotropy: float = 0.0) -> np.ndarray:
    """ECIs (eV) from a bond-angle-dependent rule: ``J = J_iso + J_aniso * P2`` per orbit.

    Pairs of the ``k``-th distance shell (``k = 0`` nearest) get ``pair[k] + pair_anisotropy[k] * anisotropy``
    (0 beyond the listed shells); triangles ``triplet + triplet_anisotropy * anisotropy``; points ``point``.
    Because :attr:`ClusterOrbit.anisotropy` is an orbit average, the result is constant on orbits for any
    lattice; on a cubic lattice the average of ``P2`` over a pair orbit vanishes and the rule depends on distance
    only, while in hcp the in-plane and out-of-plane bonds of one shell get different ECIs.
    """
    shells = sorted({o.distances for o in orbits if o.size == 2})
    out = []
    for o in orbits:
        if o.size == 1:
            out.append(point)
        elif o.size == 2:
            k = shells.index(o.distances)
            iso = pair[k] if k < len(pair) else 0.0
            ani = pair_anisotropy[k] if k < len(pair_anisotropy) else 0.0
            out.append(iso + ani * o.anisotropy)
        elif o.size == 3:
            out.append(triplet + triplet_anisotropy * o.anisotropy)
        else:
            out.append(0.0)
    return np.asarray(out, dtype=np.float64)


def random_configurations(n_configs: int, n_sites: int, seed: int = 0) -> torch.Tensor:
    """``(N, n)`` float64 occupancies: the number of B atoms uniform in ``0..n``, placed on random sites (as
    :func:`symviz.data.crystals.alloy_dataset` draws them)."""
    if not (isinstance(n_configs, (int, np.integer)) and n_configs >= 1):
        raise ValueError(f"random_configurations: n_configs must be a positive int, got {n_configs!r}")
    if not (isinstance(n_sites, (int, np.integer)) and n_sites >= 1):
        raise ValueError(f"random_configurations: n_sites must be a positive int, got {n_sites!r}")
    rng = np.random.default_rng(seed)
    occ = np.zeros((n_configs, n_sites))
    for k in range(n_configs):
        occ[k, rng.permutation(n_sites)[:rng.integers(0, n_sites + 1)]] = 1.0
    return torch.as_tensor(occ)


def cluster_expansion_dataset(template: Any, ce: ClusterExpansion, n_configs: int, seed: int = 0,
                              elements: Sequence[str] = ("A", "B")):
    """Random configurations on ``template`` labelled by ``ce``: a :class:`symviz.data.crystals.AlloyDataset`.

    ``energy`` is the cluster-expansion energy (eV per supercell), ``site_energy`` its equal split over each
    cluster's sites (:meth:`ClusterExpansion.site_energy`). ``template``: the supercell (ase Atoms); its space group
    (all sites alike) gives ``perms`` and ``pair_orbits``.
    """
    from symviz.data import crystals as C

    n = len(template)
    if ce.n_sites != n:
        raise ValueError(f"cluster_expansion_dataset: the expansion is on {ce.n_sites} sites, the template has {n}")
    group = C.space_group(template, ignore_species=True)
    perms = C.site_permutations(template, group, ignore_species=True)
    occ = random_configurations(n_configs, n, seed)
    return C.AlloyDataset(occupancy=occ, energy=ce.energy(occ), site_energy=ce.site_energy(occ), template=template,
                          elements=tuple(elements), lattice="cluster expansion", group=group, perms=perms,
                          pair_orbits=C.pair_orbits(perms), distances=C.pair_distances(template),
                          meta={"label": "cluster expansion", "seed": seed})
