"""Crystal symmetry as a permutation group, and the data of chapter 05.

Teaches: S.-O. Kaba and S. Ravanbakhsh, "Equivariant Networks for Crystal Structures", NeurIPS 2022,
arXiv:2211.15420.

A space-group operation ``g = (R, t)`` maps fractional coordinates ``f -> R f + t`` (spglib's
convention: ``R`` an integer matrix acting on *column* fractional vectors). On a periodic supercell it
sends every site to a site: it is a permutation of the sites. We store it in the convention of
:mod:`symviz.groups`: ``p[i]`` is the *old* index of the site that lands on site ``i``, so a per-site
feature ``h: (..., n, f)`` transforms as ``h[..., p, :]`` (and an occupancy vector ``(..., n)`` as
``x[..., p]``).

    >>> atoms = lattice_supercell("fcc", "Cu", size=(1, 1, 1))      # the 4-site cubic fcc cell
    >>> sg = space_group(atoms)
    >>> sg.number, sg.symbol, len(sg)                               # 48 point operations x 4 translations
    (225, 'Fm-3m', 192)
    >>> perms = site_permutations(atoms, sg)
    >>> perms.shape
    torch.Size([192, 4])
    >>> pair_orbits(perms).tolist()                                 # (i, i) pairs vs nearest neighbours
    [[0, 1, 1, 1], [1, 0, 1, 1], [1, 1, 0, 1], [1, 1, 1, 0]]

Data (all computed offline, labels cached in :func:`symviz.train.cache_dir`):

* :func:`alloy_dataset`: random configurations of a binary alloy (e.g. Cu-Au) on a fixed fcc, bcc or
  hcp supercell, labelled with the energy of ASE's EMT potential (K. W. Jacobsen, P. Stoltze and
  J. K. Norskov, Surf. Sci. 366, 394 (1996)) and its per-atom energies.
* :func:`load_matbench_dielectric`: 4,764 Materials Project structures with their refractive index
  (matbench v0.1 ``matbench_dielectric``, Dunn et al., npj Comput. Mater. 6, 138 (2020), CC BY 4.0),
  as shipped inside the ``crystal-toolkit`` wheel.
"""
from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from symviz.data.cache import cached, file_digest, source_digest, structures_digest

__all__ = [
    "SpaceGroup", "space_group", "site_permutations", "compose_operations", "site_orbits", "pair_orbits",
    "canonical_labels", "pair_distances", "lattice_supercell", "LATTICES", "AlloyDataset", "alloy_dataset",
    "load_matbench_dielectric", "matbench_dielectric_file", "edge_orbits", "orbit_edge_features", "symmetry_graphs",
    "SymmetryGraphs", "structure_to_atoms",
]

LATTICES = ("fcc", "bcc", "hcp")
DEFAULT_SYMPREC = 1e-3  # Å; see space_group for what it means


# ----------------------------------------------------------------------------------------------
# structures in, (lattice, fractional coordinates, atomic numbers) out
# ----------------------------------------------------------------------------------------------

def _as_cell(structure: Any, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(lattice (3, 3) rows = cell vectors in Å, frac (n, 3), numbers (n,))`` from ase/pymatgen/tuple."""
    try:
        from ase import Atoms
    except ImportError:  # pragma: no cover
        Atoms = ()
    if Atoms and isinstance(structure, Atoms):
        if structure.cell.rank != 3 or not all(structure.pbc):
            raise ValueError(f"{where}: the ase Atoms must be periodic in 3 directions with a full cell "
                             f"(pbc={list(structure.pbc)}, cell rank {structure.cell.rank})")
        lat, frac, num = np.asarray(structure.cell[:]), structure.get_scaled_positions(wrap=True), structure.numbers
    elif hasattr(structure, "lattice") and hasattr(structure, "frac_coords"):  # pymatgen Structure
        if not structure.is_ordered:
            raise ValueError(f"{where}: the pymatgen Structure is disordered; symmetry needs one element per site")
        lat = np.asarray(structure.lattice.matrix)
        frac = np.mod(np.asarray(structure.frac_coords), 1.0)
        num = np.array([s.specie.Z for s in structure])
    elif isinstance(structure, tuple) and len(structure) == 3:
        lat, frac, num = (np.asarray(v) for v in structure)
    else:
        raise TypeError(f"{where}: structure must be an ase Atoms, a pymatgen Structure or a tuple "
                        f"(lattice (3, 3), frac_coords (n, 3), numbers (n,)); got {type(structure).__name__}")
    lat = np.asarray(lat, dtype=np.float64)
    frac = np.asarray(frac, dtype=np.float64)
    num = np.asarray(num, dtype=np.int64)
    if lat.shape != (3, 3) or abs(np.linalg.det(lat)) < 1e-6:
        raise ValueError(f"{where}: lattice must be a non-degenerate (3, 3) matrix, got shape {lat.shape}")
    if frac.ndim != 2 or frac.shape[1] != 3 or frac.shape[0] == 0 or num.shape != (frac.shape[0],):
        raise ValueError(f"{where}: need frac_coords (n, 3) with n >= 1 and numbers (n,), got "
                         f"{frac.shape} and {num.shape}")
    if not np.isfinite(frac).all():
        raise ValueError(f"{where}: fractional coordinates contain NaN or inf")
    return lat, np.mod(frac, 1.0), num


def structure_to_atoms(structure: Any):
    """An ase ``Atoms`` for ase/pymatgen input (for EMT and for viewing)."""
    from ase import Atoms

    if isinstance(structure, Atoms):
        return structure
    lat, frac, num = _as_cell(structure, "structure_to_atoms")
    return Atoms(numbers=num, scaled_positions=frac, cell=lat, pbc=True)


# ----------------------------------------------------------------------------------------------
# space group and its permutation representation
# ----------------------------------------------------------------------------------------------

@dataclass
class SpaceGroup:
    """The operations of a crystal's space group found by spglib.

    Attributes:
        number, symbol: international space-group number (1-230) and Hermann-Mauguin symbol.
        rotations: ``(m, 3, 3)`` int, acting on column fractional coordinates.
        translations: ``(m, 3)`` float, fractional.
        symprec: the tolerance (Å) spglib used.

    Every operation that maps the (super)cell onto itself is listed, so for a supercell the pure
    translations by the primitive lattice vectors appear too: ``m = |point group| x (#primitive cells)``.
    """

    number: int
    symbol: str
    rotations: np.ndarray
    translations: np.ndarray
    symprec: float

    def __len__(self) -> int:
        return int(self.rotations.shape[0])

    def __repr__(self) -> str:
        return f"SpaceGroup({self.symbol}, number {self.number}, {len(self)} operations on this cell)"


def space_group(structure: Any, symprec: float = DEFAULT_SYMPREC, ignore_species: bool = False) -> SpaceGroup:
    """The space group of ``structure`` (ase Atoms, pymatgen Structure or ``(lattice, frac, numbers)``).

    ``symprec`` (Å) is spglib's tolerance: two positions closer than it count as the same point after
    an operation. Real, relaxed structures are only symmetric up to numerical noise (1e-5..1e-2 Å);
    too small a tolerance finds no symmetry, too large a one finds symmetry that is not there.
    ``ignore_species=True`` gives the symmetry of the bare lattice sites (all atoms alike): the group
    that acts on the configurations of an alloy on this lattice.

    Raises ``ValueError`` when spglib cannot symmetrise the structure (overlapping atoms, a degenerate
    cell) at this tolerance.
    """
    import spglib

    if not (isinstance(symprec, (int, float)) and 0 < symprec < 1):
        raise ValueError(f"space_group: symprec must be a tolerance in Å in (0, 1), got {symprec!r}")
    lat, frac, num = _as_cell(structure, "space_group")
    if ignore_species:
        num = np.ones_like(num)
    cart = frac @ lat
    if len(frac) > 1:
        d = frac[:, None, :] - frac[None, :, :]
        d -= np.round(d)
        dist = np.linalg.norm(d @ lat, axis=-1) + np.eye(len(frac)) * 1e9
        if dist.min() < symprec:
            i, j = np.unravel_index(np.argmin(dist), dist.shape)
            raise ValueError(f"space_group: sites {i} and {j} are {dist.min():.2e} Å apart, closer than the "
                             f"tolerance symprec={symprec} Å: spglib cannot symmetrise overlapping atoms. "
                             "Remove duplicate sites or lower symprec.")
    del cart
    try:
        ds = spglib.get_symmetry_dataset((lat, frac, num), symprec=float(symprec))
    except Exception as err:  # spglib >= 2.5 may raise SpglibError instead of returning None
        ds = None
        msg = str(err)
    else:
        msg = "" if ds is not None else (spglib.get_error_message() or "")
    if ds is None:
        raise ValueError(f"space_group: spglib could not find the symmetry of this structure at symprec={symprec} Å"
                         f" ({msg or 'no dataset'}). The tolerance is the distance within which two atoms count "
                         "as the same point after an operation; try a larger symprec (e.g. 1e-2) for noisy "
                         "structures, and check that the cell is not degenerate.")
    return SpaceGroup(number=int(ds.number), symbol=str(ds.international),
                      rotations=np.asarray(ds.rotations, dtype=np.int64),
                      translations=np.asarray(ds.translations, dtype=np.float64), symprec=float(symprec))


def _map_sites(lat: np.ndarray, frac: np.ndarray, num: np.ndarray, R: np.ndarray, t: np.ndarray,
               tol: float, where: str) -> tuple[np.ndarray, np.ndarray]:
    """sigma (n,), shifts L (n, 3) with ``R f_i + t = f_sigma(i) + L_i``; raises when a site has no image."""
    img = frac @ R.T + t
    d = img[:, None, :] - frac[None, :, :]
    d -= np.round(d)
    dist = np.linalg.norm(d @ lat, axis=-1)
    dist[num[:, None] != num[None, :]] = np.inf
    sigma = np.argmin(dist, axis=1)
    best = dist[np.arange(len(frac)), sigma]
    if (best > tol).any() or len(set(sigma.tolist())) != len(frac):
        raise ValueError(f"{where}: an operation does not map the sites onto themselves within {tol:.2e} Å "
                         f"(worst mismatch {best.max():.2e} Å); was the group computed for this structure "
                         "with the same symprec and ignore_species?")
    shifts = np.round(img - frac[sigma]).astype(np.int64)
    return sigma, shifts


def site_permutations(structure: Any, group: SpaceGroup | None = None, symprec: float = DEFAULT_SYMPREC,
                      ignore_species: bool = False) -> torch.Tensor:
    """The permutation representation of the space group on the sites: ``(m, n)`` LongTensor.

    Row ``g`` is ``p_g`` with ``p_g[i]`` = old index of the site that operation ``g`` moves onto site
    ``i``; a per-site signal transforms as ``h[..., p_g, :]``. It is a homomorphism: acting with ``a``
    then ``b`` is ``h[p_a][p_b] = h[p_a[p_b]]``, which is the permutation of the operation ``b a``
    (see :func:`compose_operations`).
    """
    lat, frac, num = _as_cell(structure, "site_permutations")
    if ignore_species:
        num = np.ones_like(num)
    if group is None:
        group = space_group(structure, symprec=symprec, ignore_species=ignore_species)
    if not isinstance(group, SpaceGroup):
        raise TypeError(f"site_permutations: group must be a SpaceGroup from space_group(), got {type(group).__name__}")
    tol = max(2.0 * group.symprec, 1e-6) * 2
    perms = np.empty((len(group), len(frac)), dtype=np.int64)
    for g, (R, t) in enumerate(zip(group.rotations, group.translations)):
        sigma, _ = _map_sites(lat, frac, num, R, t, tol, "site_permutations")
        perms[g, sigma] = np.arange(len(frac))  # p = sigma^-1
    return torch.as_tensor(perms)


def compose_operations(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``b ∘ a`` (first ``a``, then ``b``) for operations ``(R, t)``: ``f -> R_b (R_a f + t_a) + t_b``.

    >>> R, t = np.eye(3, dtype=int), np.array([0.5, 0, 0])
    >>> compose_operations((R, t), (R, t))[1].tolist()
    [1.0, 0.0, 0.0]
    """
    Ra, ta = a
    Rb, tb = b
    return np.asarray(Rb) @ np.asarray(Ra), np.asarray(Rb) @ np.asarray(ta) + np.asarray(tb)


def _check_perms(perms: Any, where: str) -> np.ndarray:
    p = perms.detach().cpu().numpy() if torch.is_tensor(perms) else np.asarray(perms)
    if p.ndim != 2 or p.shape[0] < 1 or p.shape[1] < 1:
        raise ValueError(f"{where}: perms must be an (m operations, n sites) array of permutations, got shape {p.shape}")
    if not np.issubdtype(p.dtype, np.integer):
        raise ValueError(f"{where}: perms must hold integer site indices, got dtype {p.dtype}")
    n = p.shape[1]
    if not (np.sort(p, axis=1) == np.arange(n)).all():
        raise ValueError(f"{where}: every row of perms must be a permutation of 0..{n - 1}")
    return p.astype(np.int64)


def canonical_labels(labels: Any) -> np.ndarray:
    """Relabel a partition ``0, 1, 2, ...`` in order of first appearance (row-major), same shape.

    Two labelings describe the same orbits exactly when their canonical labels are equal.

    >>> canonical_labels(np.array([7, 3, 7, 5])).tolist()
    [0, 1, 0, 2]
    """
    a = np.asarray(labels)
    flat = a.reshape(-1)
    _, first, inv = np.unique(flat, return_index=True, return_inverse=True)
    rank = np.argsort(np.argsort(first))
    return rank[inv].reshape(a.shape)


def site_orbits(perms: Any) -> np.ndarray:
    """Orbit label of every site: ``(n,)`` ints ``0..k-1`` (first appearance order).

    ``orbit(i) = {g·i : g in G}``; the labels are computed as ``min_g sigma_g(i)``, exact because
    the rows of ``perms`` form a group (closed under inverses and composition).
    """
    p = _check_perms(perms, "site_orbits")
    return canonical_labels(p.min(axis=0))


def pair_orbits(perms: Any) -> np.ndarray:
    """Orbit label of every ordered site pair ``(i, j)``: ``(n, n)`` ints ``0..K-1``.

    ``orbit(i, j) = {(g·i, g·j) : g in G}``. Matrices constant on these orbits are exactly the linear
    maps that commute with every permutation of the group (the equivariant linear layers).
    """
    p = _check_perms(perms, "pair_orbits")
    n = p.shape[1]
    idx = np.arange(n * n).reshape(n, n)
    best = idx.copy()
    for row in p:
        np.minimum(best, idx[np.ix_(row, row)], out=best)
    return canonical_labels(best)


def pair_distances(structure: Any) -> np.ndarray:
    """Minimum-image distances between the sites of a cell: ``(n, n)`` in Å."""
    lat, frac, _ = _as_cell(structure, "pair_distances")
    d = frac[:, None, :] - frac[None, :, :]
    d -= np.round(d)
    # the rounded vector is not always the shortest image in skewed cells: also try the neighbours
    shifts = np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)], dtype=float)
    cand = (d[:, :, None, :] + shifts[None, None]) @ lat
    return np.linalg.norm(cand, axis=-1).min(axis=-1)


# ----------------------------------------------------------------------------------------------
# lattices and the alloy dataset
# ----------------------------------------------------------------------------------------------

_DEFAULT_SIZE = {"fcc": (2, 2, 2), "bcc": (3, 3, 3), "hcp": (3, 3, 2)}


def _fcc_constant(element: str) -> float:
    from ase.data import atomic_numbers, reference_states

    if element not in atomic_numbers:
        raise ValueError(f"unknown chemical element {element!r}")
    ref = reference_states[atomic_numbers[element]]
    if not ref or ref.get("symmetry") != "fcc":
        raise ValueError(f"{element!r} is not an fcc metal in ASE's reference table; pass a lattice constant a=")
    return float(ref["a"])


def lattice_supercell(lattice: str = "fcc", element: str = "Cu", a: float | None = None,
                      size: Sequence[int] | None = None):
    """A supercell of a simple lattice filled with ``element`` (an ase ``Atoms``).

    ``lattice``: ``"fcc"`` (cubic cell, 4 sites, default 2x2x2 -> 32 sites), ``"bcc"`` (cubic cell,
    2 sites, default 3x3x3 -> 54) or ``"hcp"`` (ideal c/a = sqrt(8/3), 2 sites, default 3x3x2 -> 36;
    the non-cubic one). ``a`` is the fcc lattice constant in Å (default: ASE's for ``element``); bcc
    and hcp get the same volume per atom (bcc) or the same nearest-neighbour distance (hcp).
    """
    from ase.build import bulk

    if lattice not in LATTICES:
        raise ValueError(f"lattice_supercell: lattice must be one of {LATTICES}, got {lattice!r}")
    if a is None:
        a = _fcc_constant(element)
    if not (isinstance(a, (int, float)) and 1.0 < a < 10.0):
        raise ValueError(f"lattice_supercell: a must be a lattice constant in Å (1..10), got {a!r}")
    size = tuple(size) if size is not None else _DEFAULT_SIZE[lattice]
    if len(size) != 3 or not all(isinstance(s, (int, np.integer)) and 1 <= s <= 8 for s in size):
        raise ValueError(f"lattice_supercell: size must be three ints in 1..8, got {size!r}")
    if lattice == "fcc":
        unit = bulk(element, "fcc", a=a, cubic=True)
    elif lattice == "bcc":
        unit = bulk(element, "bcc", a=a / 2 ** (1 / 3), cubic=True)
    else:
        ah = a / math.sqrt(2)
        unit = bulk(element, "hcp", a=ah, c=ah * math.sqrt(8 / 3))
    return unit.repeat(size)


@dataclass
class AlloyDataset:
    """Configurations of a binary alloy ``A_{1-x} B_x`` on a fixed supercell, labelled by EMT.

    Attributes:
        occupancy: ``(N, n)`` float64, 1.0 where the site holds element ``B``, 0.0 for ``A``.
        energy: ``(N,)`` mixing energy of the supercell in eV: ``E - sum_i e_pure(species_i)`` with
            ``e_pure`` the per-atom EMT energy of the pure metal on the same lattice.
        site_energy: ``(N, n)`` per-site mixing energies (EMT's per-atom energies minus ``e_pure``);
            they sum to ``energy``.
        template: the ase ``Atoms`` of the lattice (element A everywhere).
        perms: ``(m, n)`` the lattice's space group as site permutations; pair_orbits: ``(n, n)``;
        distances: ``(n, n)`` minimum-image distances (Å).
    """

    occupancy: torch.Tensor
    energy: torch.Tensor
    site_energy: torch.Tensor
    template: Any
    elements: tuple[str, str]
    lattice: str
    group: SpaceGroup
    perms: torch.Tensor
    pair_orbits: np.ndarray
    distances: np.ndarray
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.occupancy.shape[0])

    @property
    def n_sites(self) -> int:
        return int(self.occupancy.shape[1])

    def one_hot(self, idx: Any = slice(None)) -> torch.Tensor:
        """``(N, n, 2)`` one-hot species features ``[is_A, is_B]``."""
        x = self.occupancy[idx]
        return torch.stack([1 - x, x], dim=-1)

    def structure(self, k: int):
        """Configuration ``k`` as an ase ``Atoms``."""
        from ase.data import atomic_numbers

        atoms = self.template.copy()
        za, zb = atomic_numbers[self.elements[0]], atomic_numbers[self.elements[1]]
        atoms.numbers = np.where(self.occupancy[k].numpy() > 0.5, zb, za)
        return atoms


def _emt_energies(atoms) -> tuple[float, np.ndarray]:
    from ase.calculators.emt import EMT

    atoms.calc = EMT()
    e = float(atoms.get_potential_energy())
    return e, np.asarray(atoms.get_potential_energies(), dtype=np.float64)


_EMT_ELEMENTS = ("Al", "Cu", "Ag", "Au", "Ni", "Pd", "Pt")


def alloy_dataset(n_configs: int = 300, lattice: str = "fcc", elements: Sequence[str] = ("Cu", "Au"),
                  size: Sequence[int] | None = None, a: float | None = None, seed: int = 0,
                  cache: bool = True, symprec: float = DEFAULT_SYMPREC) -> AlloyDataset:
    """Random configurations of a binary alloy on a fixed supercell, labelled with EMT energies.

    The number of ``B`` atoms is drawn uniformly in ``0..n`` and they are placed on random sites, so
    every composition is covered. The lattice is fixed (no relaxation) at the average of the two
    metals' fcc lattice constants (Vegard's law at x = 1/2), scaled for bcc/hcp as in
    :func:`lattice_supercell`. EMT: Jacobsen, Stoltze & Norskov, Surf. Sci. 366, 394 (1996), as
    implemented in ASE (elements Al, Cu, Ag, Au, Ni, Pd, Pt). Labels are cached on disk.
    """
    from ase.data import atomic_numbers

    if not (isinstance(n_configs, (int, np.integer)) and n_configs >= 1):
        raise ValueError(f"alloy_dataset: n_configs must be a positive int, got {n_configs!r}")
    elements = tuple(elements)
    if len(elements) != 2 or elements[0] == elements[1] or not all(e in _EMT_ELEMENTS for e in elements):
        raise ValueError(f"alloy_dataset: elements must be two different metals among {_EMT_ELEMENTS} "
                         f"(those ASE's EMT knows), got {elements!r}")
    if a is None:
        a = 0.5 * (_fcc_constant(elements[0]) + _fcc_constant(elements[1]))
    template = lattice_supercell(lattice, elements[0], a=a, size=size)
    n = len(template)
    group = space_group(template, symprec=symprec, ignore_species=True)
    perms = site_permutations(template, group, ignore_species=True)

    key = json.dumps([n_configs, lattice, elements, [int(s) for s in (size or _DEFAULT_SIZE[lattice])], round(a, 6), int(seed)])
    path = None
    if cache:
        from symviz.train import cache_dir

        path = cache_dir() / "crystals" / f"alloy_{hashlib.sha1(key.encode()).hexdigest()[:12]}.npz"
    if path is not None and path.exists():
        blob = np.load(path)
        occ, energy, site_energy = blob["occ"], blob["energy"], blob["site_energy"]
    else:
        rng = np.random.default_rng(seed)
        za, zb = atomic_numbers[elements[0]], atomic_numbers[elements[1]]
        ref = {}
        for z in (za, zb):
            atoms = template.copy()
            atoms.numbers = np.full(n, z)
            ref[z] = _emt_energies(atoms)[0] / n
        occ = np.zeros((n_configs, n))
        energy = np.zeros(n_configs)
        site_energy = np.zeros((n_configs, n))
        atoms = template.copy()
        for k in range(n_configs):
            nb = rng.integers(0, n + 1)
            occ[k, rng.permutation(n)[:nb]] = 1.0
            atoms.numbers = np.where(occ[k] > 0.5, zb, za)
            e, es = _emt_energies(atoms)
            pure = np.where(occ[k] > 0.5, ref[zb], ref[za])
            energy[k] = e - pure.sum()
            site_energy[k] = es - pure
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.stem + ".tmp.npz")
            np.savez(tmp, occ=occ, energy=energy, site_energy=site_energy)
            tmp.replace(path)
    return AlloyDataset(
        occupancy=torch.as_tensor(occ, dtype=torch.float64), energy=torch.as_tensor(energy, dtype=torch.float64),
        site_energy=torch.as_tensor(site_energy, dtype=torch.float64), template=template, elements=elements,
        lattice=lattice, group=group, perms=perms, pair_orbits=pair_orbits(perms),
        distances=pair_distances(template), meta={"a": a, "seed": seed})


# ----------------------------------------------------------------------------------------------
# real materials: matbench dielectric
# ----------------------------------------------------------------------------------------------

SMOKE_STRUCTURES = 64
"""How many matbench structures a smoke run (`symviz run --smoke`) loads at most."""


def matbench_dielectric_file() -> Path:
    """Where the crystal-toolkit wheel keeps matbench's ``dielectric`` set (found without importing crystal_toolkit,
    installed ``--no-deps``, whose ``__init__`` needs dash); a FileNotFoundError that says how to install it."""
    spec = importlib.util.find_spec("crystal_toolkit")
    path = None
    if spec is not None and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / "apps" / "examples" / "matbench_dielectric.json.gz"
    if path is None or not path.is_file():
        raise FileNotFoundError("the matbench dielectric structures ship in the crystal-toolkit wheel, which is not "
                                "installed here: pip install --no-deps crystal-toolkit (make setup does)")
    return path


def load_matbench_dielectric(n: int | None = None, seed: int = 0, max_sites: int | None = None):
    """Materials Project structures with their refractive index (matbench ``dielectric``).

    Data: matbench v0.1 (Dunn, Wang, Ganose, Dopp & Jain, npj Comput. Mater. 6, 138 (2020)), Materials
    Project DFT; CC BY 4.0; 4,764 structures shipped in the ``crystal-toolkit`` wheel as
    ``crystal_toolkit/apps/examples/matbench_dielectric.json.gz``.

    Args:
        n: keep a random subset of this size (after the ``max_sites`` filter); None keeps all. A smoke run
            (`symviz run --smoke`) keeps at most 64: the same code path without the graphs of all 4,764.
        max_sites: keep only structures with at most this many sites (cheap graphs for quick mode).
    Returns:
        ``(structures, refractive_index (N,) float64 array, space_group_numbers (N,) int array)``.
    """
    if n is not None and not (isinstance(n, (int, np.integer)) and n >= 1):
        raise ValueError(f"load_matbench_dielectric: n must be a positive int or None, got {n!r}")
    if max_sites is not None and not (isinstance(max_sites, (int, np.integer)) and max_sites >= 1):
        raise ValueError(f"load_matbench_dielectric: max_sites must be a positive int or None, got {max_sites!r}")
    path = matbench_dielectric_file()
    from pymatgen.core import Structure

    from symviz.train import smoke_cap

    n = smoke_cap(n, SMOKE_STRUCTURES)

    def select() -> dict:
        raw = json.loads(gzip.decompress(path.read_bytes()))   # all 4,764 structures: ~1 s, so the subset is cached
        keys = sorted(raw["structure"], key=int)
        if max_sites is not None:
            keys = [k for k in keys if len(raw["structure"][k]["sites"]) <= max_sites]
        if n is not None and n < len(keys):
            rng = np.random.default_rng(seed)
            keys = [keys[i] for i in np.sort(rng.choice(len(keys), size=n, replace=False))]
        return {"structure": [raw["structure"][k] for k in keys], "n": [float(raw["n"][k]) for k in keys],
                "spg_num": [int(raw["spg_num"][k]) for k in keys]}

    key = [file_digest(path), None if n is None else int(n), int(seed),
           None if max_sites is None else int(max_sites)]
    sub = cached("crystals", "matbench_dielectric", key, select, fmt="json")
    structures = [Structure.from_dict(d) for d in sub["structure"]]
    return structures, np.array(sub["n"], dtype=np.float64), np.array(sub["spg_num"], dtype=np.int64)


# ----------------------------------------------------------------------------------------------
# edge orbits of a periodic crystal graph
# ----------------------------------------------------------------------------------------------

def edge_orbits(structure: Any, centers: np.ndarray, neighbors: np.ndarray, images: np.ndarray,
                group: SpaceGroup | None = None, symprec: float = 1e-2) -> np.ndarray:
    """Orbit label of every edge ``i -> (j, image)`` of a periodic graph under the space group: ``(E,)``.

    An operation with ``R f_i + t = f_sigma(i) + L_i`` sends the edge ``(i, j, n)`` (neighbour at
    ``f_j + n``) to ``(sigma(i), sigma(j), R n + L_j - L_i)``. The edge list must be closed under the
    group (a radius graph is; a k-nearest graph is when ties are kept).
    """
    lat, frac, num = _as_cell(structure, "edge_orbits")
    centers, neighbors = np.asarray(centers, dtype=np.int64), np.asarray(neighbors, dtype=np.int64)
    images = np.asarray(images, dtype=np.int64).reshape(-1, 3)
    E = len(centers)
    if not (len(neighbors) == E and images.shape[0] == E):
        raise ValueError(f"edge_orbits: centers, neighbors and images must have the same length, got "
                         f"{len(centers)}, {len(neighbors)}, {images.shape[0]}")
    if E == 0:
        return np.zeros(0, dtype=np.int64)
    if group is None:
        group = space_group(structure, symprec=symprec)
    n = len(frac)
    span = int(np.abs(images).max()) * 4 + 8

    def key(i, j, img):
        c = img + span // 2
        return ((i * n + j) * span + c[:, 0]) * span ** 2 + c[:, 1] * span + c[:, 2]

    keys = key(centers, neighbors, images)
    order = np.argsort(keys)
    sorted_keys = keys[order]
    best = np.arange(E)
    tol = max(4 * group.symprec, 1e-5)
    for R, t in zip(group.rotations, group.translations):
        sigma, L = _map_sites(lat, frac, num, R, t, tol, "edge_orbits")
        new_img = images @ R.T + L[neighbors] - L[centers]
        k2 = key(sigma[centers], sigma[neighbors], new_img)
        pos = np.clip(np.searchsorted(sorted_keys, k2), 0, E - 1)
        found = sorted_keys[pos] == k2
        idx = np.where(found, order[pos], best)  # an edge pushed outside the list: ignore that image
        np.minimum(best, idx, out=best)
    # min over images of images: iterate until stable (only matters when some images were missing)
    while True:
        nxt = best[best]
        if (nxt == best).all():
            break
        best = nxt
    return canonical_labels(best)


def orbit_edge_features(vectors: np.ndarray, centers: np.ndarray, orbits: np.ndarray, n_sites: int) -> np.ndarray:
    """Describe each edge's orbit by invariants of the bonds of that orbit at its centre: ``(E, 4)``.

    For centre ``i`` and orbit ``O``, with ``k`` bonds ``r`` of ``O`` leaving ``i``:
    ``[k / 12, eig(T)]`` where ``T = (1/k) Σ r̂ r̂ᵀ`` (sorted eigenvalues). ``T`` is the same for every
    site of an orbit and rotation invariant, so these features are invariant under the space group and
    under rotations, yet tell apart bonds of equal length that no symmetry relates (e.g. the in-plane and
    out-of-plane nearest neighbours of ideal hcp: eigenvalues (0, 1/2, 1/2) vs (1/6, 1/6, 2/3)).
    """
    vectors = np.asarray(vectors, dtype=np.float64).reshape(-1, 3)
    E = len(vectors)
    out = np.zeros((E, 4))
    if E == 0:
        return out
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)
    outer = unit[:, :, None] * unit[:, None, :]
    group_id = np.asarray(centers, dtype=np.int64) * (int(np.max(orbits)) + 1) + np.asarray(orbits, dtype=np.int64)
    uniq, inv, counts = np.unique(group_id, return_inverse=True, return_counts=True)
    T = np.zeros((len(uniq), 3, 3))
    np.add.at(T, inv, outer)
    T /= counts[:, None, None]
    eig = np.linalg.eigvalsh(T)
    out[:, 0] = counts[inv] / 12.0
    out[:, 1:] = eig[inv]
    return out


@dataclass
class SymmetryGraphs:
    """Crystal graphs (``symviz.data.crystal_graph.CrystalGraph``) plus per-edge orbit features.

    ``graphs[k]`` has the same edges as CGCNN's graph; ``edge_features[k]`` ``(E_k, 4)`` describes each
    edge's orbit (see :func:`orbit_edge_features`); ``n_edge_orbits[k]`` counts the orbits.
    """

    graphs: list
    edge_features: list
    n_edge_orbits: np.ndarray
    n_distance_shells: np.ndarray


def symmetry_graphs(structures: Sequence[Any], targets: Sequence[float] | None = None, cutoff: float = 5.0,
                    max_neighbors: int | None = 12, node_features: str = "cgcnn", symprec: float = 1e-2,
                    tol: float = 1e-3, cache: bool = False) -> SymmetryGraphs:
    """Periodic radius graphs (CGCNN's, neighbours within ``cutoff`` Å, ``max_neighbors`` nearest with
    ties kept) whose edges also carry their orbit under the structure's space group.

    ``cache=True`` keeps the result in ``symviz.train.cache_dir()`` under a hash of the structures (lattices,
    species, coordinates), the targets and the arguments (a space group per structure takes ~3 ms)."""
    from symviz.data.crystal_graph import CrystalGraph, cgcnn_element_features, onehot_element_features

    if targets is not None and len(targets) != len(structures):
        raise ValueError(f"symmetry_graphs: {len(targets)} targets for {len(structures)} structures")
    featurize = {"cgcnn": cgcnn_element_features, "onehot": onehot_element_features}.get(node_features)
    if featurize is None:
        raise ValueError(f"symmetry_graphs: node_features must be 'cgcnn' or 'onehot', got {node_features!r}")
    if cache:
        key = [structures_digest(structures), None if targets is None else [float(t) for t in targets], float(cutoff),
               max_neighbors, node_features, float(symprec), float(tol),
               source_digest(__name__, "symviz.data.crystal_graph", packages=("pymatgen", "spglib"))]   # code change: recompute
        return cached("crystals", "symmetry_graphs", key,
                      lambda: symmetry_graphs(structures, targets, cutoff, max_neighbors, node_features, symprec, tol))
    graphs, feats, n_orb, n_shell = [], [], [], []
    for k, s in enumerate(structures):
        if not s.is_ordered:
            raise ValueError(f"symmetry_graphs: structure {k} is disordered (one element per site expected)")
        zs = np.array([site.specie.Z for site in s], dtype=np.int64)
        c, nb, img, d = s.get_neighbor_list(float(cutoff))
        keep = d > tol
        c, nb, img, d = c[keep], nb[keep], img[keep].astype(np.int64), d[keep]
        if max_neighbors is not None and len(d):  # same rule as crystal_graph: k nearest, ties kept
            order = np.lexsort((d, c))
            c, nb, img, d = c[order], nb[order], img[order], d[order]
            sel = np.zeros(len(d), dtype=bool)
            for i in range(len(s)):
                lo, hi = np.searchsorted(c, i), np.searchsorted(c, i, side="right")
                sel[lo:hi] = True if hi - lo <= max_neighbors else d[lo:hi] <= d[lo + max_neighbors - 1] + tol
            c, nb, img, d = c[sel], nb[sel], img[sel], d[sel]
        try:
            orb = edge_orbits(s, c, nb, img, symprec=symprec)
        except ValueError:  # spglib failed at this tolerance: every edge its own orbit (no symmetry used)
            orb = np.arange(len(c))
        vec = (s.frac_coords[nb] + img - s.frac_coords[c]) @ s.lattice.matrix
        feats.append(torch.as_tensor(orbit_edge_features(vec, c, orb, len(s)), dtype=torch.float32))
        graphs.append(CrystalGraph(
            node_features=torch.as_tensor(np.stack([featurize(int(z)) for z in zs]), dtype=torch.float32),
            atomic_numbers=torch.as_tensor(zs),
            edge_index=torch.as_tensor(np.stack([c, nb]).astype(np.int64)).reshape(2, -1),
            distances=torch.as_tensor(d, dtype=torch.float32),
            y=None if targets is None else torch.tensor([float(targets[k])], dtype=torch.float32),
            meta={"formula": s.composition.reduced_formula, "cutoff": float(cutoff)}))
        n_orb.append(len(np.unique(orb)))
        n_shell.append(len(np.unique(np.round(d, 2))))
    return SymmetryGraphs(graphs, feats, np.array(n_orb), np.array(n_shell))
