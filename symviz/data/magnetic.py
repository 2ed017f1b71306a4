"""A pool of candidate magnetic materials, CHGNet magnetic-moment labels (cached), and reference moments.

Chapter 06 follows Kaba, Groleau-Paré, Gauthier, Tremblay, Verret, Gauvin-Ndiaye, "Prediction of
Large Magnetic Moment Materials With Graph Neural Networks and Random Forests" (arXiv:2111.14712).
The paper trains on DFT moments from high-throughput databases; offline we cannot download them, so:

* **Candidates** (:func:`candidate_pool`) come from two offline sources:
  prototypes (bcc, fcc, hcp, B2, L1_0, L1_2, D0_3, Heusler L2_1, half-Heusler C1_b, NiAs B8_1,
  rocksalt B1, zincblende B3, perovskite E2_1, and in full mode more from pymatgen's AFLOW prototype
  library; Mehl et al., Comput. Mater. Sci. 136, S1 (2017)) decorated with 3d/4f magnetic elements and
  main-group partners and scaled so that no two atoms overlap (nearest distance = sum of atomic radii);
  and real Materials Project structures that ship in the ``crystal-toolkit`` wheel (matbench
  "dielectric" set, Dunn et al., npj Comput. Mater. 6, 138 (2020), CC BY 4.0) and in pymatgen.
* **Labels** (:func:`chgnet_labels`) are site magnetic moments predicted by CHGNet (Deng et al.,
  Nature Machine Intelligence 5, 1031 (2023)), a universal potential trained on Materials Project
  DFT relaxations. CHGNet *stands in* for high-throughput DFT here. It predicts the *magnitude* of each
  site's moment, so for ferrimagnets (Fe3O4) the per-formula sum overestimates the net moment.
  Labels are cached in ``cache_dir()/magnetic/chgnet_labels.json``, keyed by a hash of the structure;
  entries with a different recipe (stale) or a wrong checksum / site count (corrupt) are relabelled.
* **References** (:data:`REFERENCE_MOMENTS`, :func:`reference_structures`): measured saturation
  moments from the literature, to check the labels.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import math
import time
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = [
    "MAGNETIC_ELEMENTS", "PARTNER_ELEMENTS", "PROTOTYPES", "prototype_structure", "scale_to_radii",
    "min_distance_ratio", "decorated_prototypes", "real_structures", "candidate_pool", "structure_hash",
    "LabelCache", "chgnet_labels", "REFERENCE_MOMENTS", "reference_structures", "LABEL_RECIPE",
]

MAGNETIC_3D = ("V", "Cr", "Mn", "Fe", "Co", "Ni")
MAGNETIC_4F = ("Nd", "Sm", "Gd", "Tb", "Dy")
MAGNETIC_ELEMENTS = MAGNETIC_3D + MAGNETIC_4F
PARTNER_ELEMENTS = ("B", "C", "N", "O", "Mg", "Al", "Si", "P", "S", "Ti", "Cu", "Zn", "Ga", "Ge", "As",
                    "Se", "Y", "Zr", "Ru", "Rh", "Pd", "In", "Sn", "Sb", "Pt", "Bi")
_MAIN_GROUP = ("Al", "Si", "Ga", "Ge", "In", "Sn", "Sb", "As", "Bi", "P", "B", "Mg", "Zn")
_ANIONS = ("N", "O", "S", "Se", "As", "Sb", "P", "C", "B")
_NONMAG_TM = ("Ti", "Cu", "Zn", "Y", "Zr", "Ru", "Rh", "Pd", "Pt")


def _check_element(symbol: Any, where: str) -> str:
    from pymatgen.core.periodic_table import Element

    if not isinstance(symbol, str) or not Element.is_valid_symbol(symbol):
        raise ValueError(f"{where}: unknown element {symbol!r} (expected a chemical symbol such as 'Fe')")
    return symbol


# ----------------------------------------------------------------------------------------------
# Prototypes
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Prototype:
    """A crystal prototype: its primitive cell (lattice kind, c/a), sites, and the elements each slot takes.

    ``sites`` lists ``(slot, fractional coordinates)`` in the primitive cell; ``lattice`` is ``"sc"``
    (simple cubic), ``"fcc"`` / ``"bcc"`` (primitive vectors of the cubic cell), ``"hex"`` or ``"tet"``.
    Written out by hand (instead of from the space group) so that building thousands is instant.
    """

    name: str
    spacegroup: int
    lattice: str
    c_over_a: float
    sites: tuple
    slots: tuple  # element choices per slot (tuples of symbols)


_Q, _H, _T = (0.25, 0.25, 0.25), (0.5, 0.5, 0.5), (0.75, 0.75, 0.75)
_O = (0.0, 0.0, 0.0)
PROTOTYPES: dict[str, Prototype] = {p.name: p for p in [
    Prototype("A2_bcc", 229, "bcc", 1.0, ((0, _O),), (MAGNETIC_3D,)),
    Prototype("A1_fcc", 225, "fcc", 1.0, ((0, _O),), (MAGNETIC_3D,)),
    Prototype("A3_hcp", 194, "hex", 1.633, ((0, (1 / 3, 2 / 3, 0.25)), (0, (2 / 3, 1 / 3, 0.75))), (MAGNETIC_ELEMENTS,)),
    Prototype("B2_CsCl", 221, "sc", 1.0, ((0, _O), (1, _H)), (MAGNETIC_3D, MAGNETIC_3D + _MAIN_GROUP + _NONMAG_TM)),
    Prototype("B1_NaCl", 225, "fcc", 1.0, ((0, _O), (1, _H)), (MAGNETIC_ELEMENTS, _ANIONS)),
    Prototype("B3_ZnS", 216, "fcc", 1.0, ((0, _O), (1, _Q)), (MAGNETIC_3D, _ANIONS)),
    Prototype("B8_1_NiAs", 194, "hex", 1.4, ((0, _O), (0, (0, 0, 0.5)), (1, (1 / 3, 2 / 3, 0.25)), (1, (2 / 3, 1 / 3, 0.75))),
              (MAGNETIC_3D, ("As", "Sb", "Bi", "S", "Se", "Te", "Ge", "Sn"))),
    Prototype("L1_0_CuAu", 123, "tet", 1.35 / math.sqrt(2), ((0, _O), (1, _H)),
              (MAGNETIC_3D, ("Pt", "Pd", "Rh", "Al", "Ga", "Ni", "Co", "Fe"))),
    Prototype("L1_2_Cu3Au", 221, "sc", 1.0, ((0, (0.5, 0.5, 0)), (0, (0.5, 0, 0.5)), (0, (0, 0.5, 0.5)), (1, _O)),
              (MAGNETIC_3D, _MAIN_GROUP + _NONMAG_TM)),
    Prototype("D0_3_BiF3", 225, "fcc", 1.0, ((0, _Q), (0, _T), (0, _H), (1, _O)), (MAGNETIC_3D, _MAIN_GROUP)),
    Prototype("L2_1_Heusler", 225, "fcc", 1.0, ((0, _Q), (0, _T), (1, _H), (2, _O)),
              (("Co", "Ni", "Fe", "Cu", "Pd", "Rh", "Ru", "Mn"), ("Mn", "Fe", "Cr", "V", "Ti"), _MAIN_GROUP)),
    Prototype("C1_b_halfHeusler", 216, "fcc", 1.0, ((0, _O), (1, _Q), (2, _H)),
              (("Ni", "Co", "Pt", "Pd", "Rh", "Fe", "Cu"), ("Mn", "Fe", "Cr", "V", "Ti"), _MAIN_GROUP)),
    Prototype("E2_1_perovskite", 221, "sc", 1.0, ((0, _O), (1, _H), (2, (0.5, 0.5, 0)), (2, (0.5, 0, 0.5)), (2, (0, 0.5, 0.5))),
              (("Mg", "Y", "Zn", "Al", "Ga", "In", "Sn") + MAGNETIC_4F, MAGNETIC_3D, ("O", "N", "C"))),
]}


def _lattice(kind: str, a: float, c_over_a: float):
    from pymatgen.core import Lattice

    if kind == "sc":
        return Lattice.cubic(a)
    if kind == "fcc":
        return Lattice(0.5 * a * np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0]], dtype=float))
    if kind == "bcc":
        return Lattice(0.5 * a * np.array([[-1, 1, 1], [1, -1, 1], [1, 1, -1]], dtype=float))
    if kind == "hex":
        return Lattice.hexagonal(a, a * c_over_a)
    return Lattice.tetragonal(a, a * c_over_a)


def prototype_structure(name: str, elements: Sequence[str], a: float = 4.0) -> Any:
    """The primitive cell of prototype ``name`` with one element per slot, lattice constant ``a`` (Å).

    Slot order follows :data:`PROTOTYPES` (e.g. ``"L2_1_Heusler"``: X2 Y Z, so ``["Co", "Mn", "Si"]``
    is Co2MnSi). The cell is not yet scaled: see :func:`scale_to_radii`.

    >>> prototype_structure("L2_1_Heusler", ["Co", "Mn", "Si"]).composition.reduced_formula
    'MnCo2Si'
    """
    from pymatgen.core import Structure

    if name not in PROTOTYPES:
        raise ValueError(f"prototype_structure: unknown prototype {name!r}; known: {sorted(PROTOTYPES)}")
    p = PROTOTYPES[name]
    if isinstance(elements, str) or len(elements) != len(p.slots):
        raise ValueError(f"prototype_structure: {name} has {len(p.slots)} slots, got elements={elements!r}")
    for e in elements:
        _check_element(e, "prototype_structure")
    if not (isinstance(a, (int, float)) and a > 0):
        raise ValueError(f"prototype_structure: a must be a positive length in Å, got {a!r}")
    return Structure(_lattice(p.lattice, a, p.c_over_a), [elements[k] for k, _ in p.sites],
                     [list(x) for _, x in p.sites])


def _radius(symbol: str) -> float:
    from pymatgen.core.periodic_table import Element

    el = Element(symbol)
    r = el.atomic_radius or el.atomic_radius_calculated or 1.4
    return float(r)


def min_distance_ratio(structure: Any) -> float:
    """``min_{i,j,images} d_ij / (r_i + r_j)`` with empirical atomic radii (Slater 1964) from pymatgen.

    1 means the closest pair just touches; below ~0.7 two atoms overlap badly.
    """
    r = np.array([_radius(site.specie.symbol) for site in structure])
    # search radius large enough to see the nearest image in every direction
    reach = max(2.0 * r.max() * 1.5, min(structure.lattice.abc) * 1.01)
    ci, nj, _, d = structure.get_neighbor_list(reach)
    keep = d > 1e-6
    if not np.any(keep):
        return float("inf")
    return float(np.min(d[keep] / (r[ci[keep]] + r[nj[keep]])))


def scale_to_radii(structure: Any, target: float = 1.0) -> Any:
    """Rescale the lattice isotropically so that ``min_distance_ratio == target`` (a copy).

    This is a cheap stand-in for relaxing the volume: every pair of atoms is at least the sum of their
    atomic radii apart, and the closest pair touches.
    """
    ratio = min_distance_ratio(structure)
    if not np.isfinite(ratio) or ratio <= 0:
        raise ValueError("scale_to_radii: cannot scale a structure whose atoms coincide")
    s = structure.copy()
    s.scale_lattice(structure.volume * (target / ratio) ** 3)
    return s


def decorated_prototypes(n: int, seed: int = 0, prototypes: Sequence[str] | None = None) -> list[dict]:
    """``n`` distinct element decorations of the prototypes, sampled round-robin over prototypes.

    Returns dicts ``{"id", "source": "prototype", "prototype", "structure"}``; structures are primitive
    cells scaled by :func:`scale_to_radii`. Deterministic for a given ``seed``.
    """
    if not (isinstance(n, int) and n >= 0):
        raise ValueError(f"decorated_prototypes: n must be a non-negative int, got {n!r}")
    names = list(prototypes) if prototypes is not None else list(PROTOTYPES)
    for nm in names:
        if nm not in PROTOTYPES:
            raise ValueError(f"decorated_prototypes: unknown prototype {nm!r}; known: {sorted(PROTOTYPES)}")
    rng = np.random.default_rng(seed)
    # all decorations of each prototype, shuffled; then take them round-robin
    queues = []
    for nm in names:
        p = PROTOTYPES[nm]
        combos = [()]
        for slot in p.slots:
            combos = [c + (e,) for c in combos for e in slot if e not in c]
        combos = [combos[i] for i in rng.permutation(len(combos))]
        queues.append((nm, combos))
    out, seen, k = [], set(), 0
    while len(out) < n and any(q for _, q in queues):
        nm, q = queues[k % len(queues)]
        k += 1
        if not q:
            continue
        els = q.pop()
        s = scale_to_radii(prototype_structure(nm, els))
        key = f"proto:{nm}:{'-'.join(els)}"
        if key in seen:
            continue
        seen.add(key)
        out.append({"id": key, "source": "prototype", "prototype": nm, "structure": s})
    return out


def _aflow_decorations(n: int, seed: int = 0, max_sites: int = 6) -> list[dict]:
    """Decorate small binary/ternary AFLOW prototypes (pymatgen's library) with magnetic + partner elements."""
    from pymatgen.analysis.prototypes import AFLOW_PROTOTYPE_LIBRARY

    rng = np.random.default_rng(seed + 1)
    protos = [p for p in AFLOW_PROTOTYPE_LIBRARY
              if len(p["snl"].structure) <= max_sites and 2 <= len(p["snl"].structure.composition.elements) <= 3]
    out = []
    for trial in range(20 * n):
        if len(out) >= n:
            break
        p = protos[int(rng.integers(len(protos)))]
        s0 = p["snl"].structure
        species = sorted(s0.composition.elements, key=lambda e: s0.composition[e])
        mapping = {species[0]: str(rng.choice(MAGNETIC_ELEMENTS))}
        for sp in species[1:]:
            choices = [e for e in PARTNER_ELEMENTS + MAGNETIC_3D if e not in mapping.values()]
            mapping[sp] = str(rng.choice(choices))
        s = s0.copy()
        s.replace_species({k: v for k, v in mapping.items()})
        key = f"aflow:{p['tags'].get('aflow')}:{s.composition.reduced_formula}"
        if any(o["id"] == key for o in out):
            continue
        try:
            s = scale_to_radii(s)
        except ValueError:
            continue
        out.append({"id": key, "source": "aflow", "prototype": str(p["tags"].get("aflow")), "structure": s})
    return out


@lru_cache(maxsize=1)
def _matbench_raw() -> dict:
    from symviz.data.crystals import matbench_dielectric_file

    with gzip.open(matbench_dielectric_file(), "rt") as fh:
        return json.load(fh)


@lru_cache(maxsize=8)
def _matbench_magnetic(max_sites: int) -> tuple:
    """``(key, structure dict)`` of the matbench structures with at most ``max_sites`` sites and a magnetic element,
    in the file's order; cached on disk (parsing all 4,764 structures takes ~1 s, this subset ~0.05 s)."""
    from symviz.data.cache import cached, file_digest
    from symviz.data.crystals import matbench_dielectric_file

    path = matbench_dielectric_file()
    mag = set(MAGNETIC_ELEMENTS)

    def select() -> list:
        return [[key, d] for key, d in _matbench_raw()["structure"].items() if len(d["sites"]) <= max_sites
                and {sp["element"] for site in d["sites"] for sp in site["species"]} & mag]

    return tuple((k, d) for k, d in cached("magnetic", "matbench_magnetic", [file_digest(path), max_sites, sorted(mag)], select,
                                           fmt="json"))


def real_structures(max_sites: int = 8, n: int | None = None, seed: int = 0) -> list[dict]:
    """Real Materials Project structures containing a 3d/4f magnetic element, shipped offline.

    Sources: the matbench dielectric set inside the crystal-toolkit wheel (4,764 MP structures;
    Dunn et al. 2020, CC BY 4.0) and the example structures shipped with pymatgen. Keeps structures
    with at most ``max_sites`` sites; ``n`` samples that many (deterministic for ``seed``). Each dict also
    carries ``mp_dft_moment_per_atom``: the mean |m| of the DFT site moments MP stored with the structure.
    """
    from pymatgen.core import Structure

    if not (isinstance(max_sites, int) and max_sites >= 1):
        raise ValueError(f"real_structures: max_sites must be a positive int, got {max_sites!r}")
    mag = set(MAGNETIC_ELEMENTS)
    out = []
    try:
        matbench = _matbench_magnetic(max_sites)
    except FileNotFoundError as err:  # no silent fallback: a smaller pool would change every number downstream
        raise FileNotFoundError(f"real_structures: {err}. `make setup` installs it; by hand: "
                                "pip install --no-deps crystal-toolkit==2026.7.20") from err
    out += [("mp-dielectric:" + key, "matbench_dielectric", d) for key, d in matbench]
    try:
        from importlib.util import find_spec

        folder = Path(list(find_spec("pymatgen").submodule_search_locations)[0]) / "util" / "structures"
        for f in sorted(folder.glob("*.json")):
            d = json.loads(f.read_text())
            if "sites" in d and len(d["sites"]) <= max_sites:
                els = {sp["element"] for site in d["sites"] for sp in site["species"]}
                if els & mag:
                    out.append(("pymatgen:" + f.stem, "pymatgen_examples", d))
    except Exception:  # the examples are a bonus; a different pymatgen layout just skips them
        pass
    if n is not None:
        rng = np.random.default_rng(seed)
        idx = sorted(rng.permutation(len(out))[:n])
        out = [out[i] for i in idx]
    result = []
    for key, source, d in out:
        s = Structure.from_dict(d)
        mp_moment = float("nan")
        if "magmom" in s.site_properties:  # Materials Project's DFT site moments: kept aside to check labels,
            m = s.site_properties["magmom"]  # and removed from the structure so they never leak into inputs
            if all(v is not None for v in m):
                mp_moment = float(np.mean(np.abs(np.asarray(m, dtype=float))))
            s.remove_site_property("magmom")
        if not s.is_ordered:
            continue
        result.append({"id": key, "source": source, "prototype": "real", "structure": s,
                       "mp_dft_moment_per_atom": mp_moment})
    return result


SMOKE_POOL = {"prototypes": 200, "real": 60, "aflow": 30}
"""At most this many crystals per source in a smoke run (`symviz run --smoke`): quick mode's sizes."""


def candidate_pool(n_prototypes: int = 200, n_real: int = 60, seed: int = 0, max_real_sites: int = 8,
                   n_aflow: int = 0):
    """The candidate pool: decorated prototypes + real structures (+ AFLOW decorations).

    Returns a pandas DataFrame with columns ``id``, ``source``, ``prototype``, ``formula``, ``n_sites``,
    ``hash``, ``mp_dft_moment_per_atom`` (mean |m| of the Materials Project DFT site moments shipped with the
    real structures, NaN for the others) and ``structure`` (pymatgen Structure), one row per distinct
    structure.

    Quick mode of chapter 06 uses ~200 prototypes + 60 real; full mode a few thousand. A smoke run
    (`symviz run --smoke`) keeps every source but at most :data:`SMOKE_POOL` crystals of each (CHGNet labels,
    descriptors and graphs of the full pool take many CPU minutes).
    """
    import pandas as pd

    from symviz.train import smoke_cap

    for name, v in (("n_prototypes", n_prototypes), ("n_real", n_real), ("n_aflow", n_aflow)):
        if not (isinstance(v, int) and v >= 0):
            raise ValueError(f"candidate_pool: {name} must be a non-negative int, got {v!r}")
    n_prototypes, n_real, n_aflow = (smoke_cap(n, SMOKE_POOL[k]) for k, n in
                                     (("prototypes", n_prototypes), ("real", n_real), ("aflow", n_aflow)))
    rows = decorated_prototypes(n_prototypes, seed=seed)
    if n_aflow:
        rows += _aflow_decorations(n_aflow, seed=seed)
    if n_real:
        rows += real_structures(max_sites=max_real_sites, n=n_real, seed=seed)
    df = pd.DataFrame(rows)
    if df.empty:
        raise ValueError("candidate_pool: the pool is empty; ask for n_prototypes or n_real > 0")
    df["formula"] = [s.composition.reduced_formula for s in df["structure"]]
    df["n_sites"] = [len(s) for s in df["structure"]]
    df["hash"] = [structure_hash(s) for s in df["structure"]]
    if "mp_dft_moment_per_atom" not in df:
        df["mp_dft_moment_per_atom"] = float("nan")
    df = df.drop_duplicates("hash").reset_index(drop=True)
    return df[["id", "source", "prototype", "formula", "n_sites", "hash", "mp_dft_moment_per_atom", "structure"]]


# ----------------------------------------------------------------------------------------------
# CHGNet labels with a cache
# ----------------------------------------------------------------------------------------------

LABEL_RECIPE = {"model": "CHGNet", "weights": "0.3.0", "geometry": "static (no relaxation)", "version": 1}


def structure_hash(structure: Any) -> str:
    """A content hash of a structure (lattice, species, fractional coordinates rounded to 1e-4).

    >>> from pymatgen.core import Lattice, Structure
    >>> s = Structure(Lattice.cubic(2.87), ["Fe"], [[0, 0, 0]])
    >>> structure_hash(s) == structure_hash(s.copy()), len(structure_hash(s))
    (True, 16)
    """
    from pymatgen.core import Structure

    if not isinstance(structure, Structure):
        raise TypeError(f"structure_hash: expected a pymatgen Structure, got {type(structure).__name__}")
    lat = np.round(structure.lattice.matrix, 4) + 0.0
    frac = np.round(np.mod(structure.frac_coords, 1.0), 4) % 1.0 + 0.0
    text = json.dumps({"lat": lat.tolist(), "sp": [s.species_string for s in structure], "f": frac.tolist()})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _entry_checksum(entry: dict) -> str:
    body = json.dumps({k: entry[k] for k in ("site_moments", "energy_per_atom", "n_sites")}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()[:12]


class LabelCache:
    """A JSON file of CHGNet labels keyed by :func:`structure_hash`, with stale/corrupt detection.

    * the file's ``recipe`` differs from :data:`LABEL_RECIPE` -> every entry is **stale**;
    * unreadable JSON -> the whole file is **corrupt** (ignored, rewritten on save);
    * an entry whose checksum or site count does not match -> that entry is **corrupt**.
    ``get`` returns None for all of these (the caller relabels); ``stats`` counts them.
    """

    def __init__(self, path: str | Path | None = None, recipe: dict | None = None):
        from symviz.train import cache_dir

        self.path = Path(path) if path is not None else cache_dir() / "magnetic" / "chgnet_labels.json"
        self.recipe = dict(recipe or LABEL_RECIPE)
        self.entries: dict[str, dict] = {}
        self.stats = {"hits": 0, "missing": 0, "stale": 0, "corrupt": 0, "file_corrupt": False, "file_stale": False}
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        try:
            blob = json.loads(self.path.read_text())
            if not isinstance(blob, dict) or not isinstance(blob.get("entries"), dict):
                raise ValueError("no entries")
        except (ValueError, OSError, UnicodeDecodeError):
            self.stats["file_corrupt"] = True
            return
        if blob.get("recipe") != self.recipe:
            self.stats["file_stale"] = True
            return
        self.entries = blob["entries"]

    def get(self, key: str, n_sites: int) -> dict | None:
        """The entry for ``key`` if present and valid, else None (and count why)."""
        e = self.entries.get(key)
        if e is None:
            self.stats["stale" if self.stats["file_stale"] else "missing"] += 1
            return None
        try:
            ok = (e["checksum"] == _entry_checksum(e) and e["n_sites"] == n_sites
                  and len(e["site_moments"]) == n_sites and all(map(math.isfinite, e["site_moments"])))
        except (KeyError, TypeError):
            ok = False
        if not ok:
            self.stats["corrupt"] += 1
            return None
        self.stats["hits"] += 1
        return e

    def put(self, key: str, site_moments: Sequence[float], energy_per_atom: float) -> dict:
        e = {"site_moments": [round(float(m), 5) for m in site_moments], "energy_per_atom": round(float(energy_per_atom), 6),
             "n_sites": len(site_moments)}
        e["checksum"] = _entry_checksum(e)
        self.entries[key] = e
        return e

    def save(self) -> None:
        """Write atomically (a crash never leaves half a file)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".tmp{id(self)}")
        tmp.write_text(json.dumps({"recipe": self.recipe, "entries": self.entries}))
        tmp.replace(self.path)


@lru_cache(maxsize=1)
def _chgnet():
    import logging

    warnings.filterwarnings("ignore", module="chgnet")
    warnings.filterwarnings("ignore", category=UserWarning, module="pymatgen")
    logging.getLogger("chgnet").setLevel(logging.ERROR)
    from chgnet.model import CHGNet

    return CHGNet.load(verbose=False)


def chgnet_labels(structures: Sequence[Any], cache: LabelCache | str | Path | None = None,
                  batch_size: int = 8, progress: bool = False):
    """Magnetic moments of each structure from CHGNet, using and filling the label cache.

    Returns ``(labels, info)``: ``labels`` a DataFrame with one row per structure and columns
    ``hash``, ``moment_per_atom`` (mean |m_i|, μB), ``moment_per_fu`` (Σ|m_i| per reduced formula
    unit, μB), ``max_site_moment``, ``energy_per_atom`` (eV), ``site_moments`` (list); ``info`` a dict
    with cache ``hits``/``missing``/``stale``/``corrupt`` counts, ``labelled`` and ``seconds``.

    ``progress=True`` prints a line per chunk of labelled structures. ``batch_size`` 8 keeps the peak memory under ~1 GB on CPU (CHGNet's three-body graphs grow fast:
    batch 32 peaks at ~1.6 GB for 4-atom cells) and is no slower.
    """
    import pandas as pd
    from pymatgen.core import Structure

    structures = list(structures)
    for i, s in enumerate(structures):
        if not isinstance(s, Structure):
            raise TypeError(f"chgnet_labels: structures[{i}] must be a pymatgen Structure, got {type(s).__name__}")
        if not s.is_ordered:
            raise ValueError(f"chgnet_labels: structures[{i}] ({s.composition}) is disordered; CHGNet needs ordered sites")
    if not isinstance(cache, LabelCache):
        cache = LabelCache(cache)
    t0 = time.perf_counter()
    keys = [structure_hash(s) for s in structures]
    entries = [cache.get(k, len(s)) for k, s in zip(keys, structures)]
    todo = [i for i, e in enumerate(entries) if e is None]
    if todo:
        model = _chgnet()
        # sort by size so that batches are balanced; label in chunks and save as we go
        todo.sort(key=lambda i: len(structures[i]))
        chunk = max(batch_size * 4, 64)
        for c in range(0, len(todo), chunk):
            idx = todo[c:c + chunk]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                preds = model.predict_structure([structures[i] for i in idx], task="em", batch_size=batch_size)
            if isinstance(preds, dict):
                preds = [preds]
            for i, p in zip(idx, preds):
                entries[i] = cache.put(keys[i], np.asarray(p["m"]).reshape(-1).tolist(), float(np.asarray(p["e"])))
            cache.save()
            if progress:
                print(f"CHGNet: labelled {min(c + chunk, len(todo))}/{len(todo)} "
                      f"({time.perf_counter() - t0:.0f} s)", flush=True)
    rows = []
    for k, s, e in zip(keys, structures, entries):
        m = np.abs(np.asarray(e["site_moments"], dtype=float))
        n_fu = s.composition.get_reduced_composition_and_factor()[1]
        rows.append({"hash": k, "moment_per_atom": float(m.mean()), "moment_per_fu": float(m.sum() / n_fu),
                     "max_site_moment": float(m.max()), "energy_per_atom": e["energy_per_atom"],
                     "site_moments": m.tolist()})
    info = {k: v for k, v in cache.stats.items()}
    info.update(labelled=len(todo), seconds=time.perf_counter() - t0, path=str(cache.path))
    return pd.DataFrame(rows), info


# ----------------------------------------------------------------------------------------------
# Literature reference moments
# ----------------------------------------------------------------------------------------------

_KITTEL = ("C. Kittel, Introduction to Solid State Physics, 8th ed. (Wiley, 2005), ch. 11, Table 1 "
           "(saturation moment n_B at 0 K, μB per formula unit)")

#: Measured saturation moments (μB per formula unit) and the experimental lattice used to build each.
REFERENCE_MOMENTS = [
    {"material": "Fe", "structure": "bcc", "moment_per_fu": 2.22, "kind": "ferromagnet", "source": _KITTEL},
    {"material": "Co", "structure": "hcp", "moment_per_fu": 1.72, "kind": "ferromagnet", "source": _KITTEL},
    {"material": "Ni", "structure": "fcc", "moment_per_fu": 0.606, "kind": "ferromagnet", "source": _KITTEL},
    {"material": "Gd", "structure": "hcp", "moment_per_fu": 7.63, "kind": "ferromagnet", "source": _KITTEL},
    {"material": "MnBi", "structure": "NiAs (B8_1)", "moment_per_fu": 3.52, "kind": "ferromagnet", "source": _KITTEL},
    {"material": "MnSb", "structure": "NiAs (B8_1)", "moment_per_fu": 3.5, "kind": "ferromagnet", "source": _KITTEL},
    {"material": "CrO2", "structure": "rutile", "moment_per_fu": 2.03, "kind": "ferromagnet", "source": _KITTEL},
    {"material": "EuO", "structure": "rocksalt", "moment_per_fu": 6.8, "kind": "ferromagnet", "source": _KITTEL},
    {"material": "Fe3O4", "structure": "spinel", "moment_per_fu": 4.1, "kind": "ferrimagnet", "source": _KITTEL},
    {"material": "Co2MnSi", "structure": "Heusler L2_1", "moment_per_fu": 5.07, "kind": "ferromagnet",
     "source": "P. J. Webster, J. Phys. Chem. Solids 32, 1221 (1971)"},
    {"material": "Ni2MnGa", "structure": "Heusler L2_1", "moment_per_fu": 4.17, "kind": "ferromagnet",
     "source": "P. J. Webster, K. R. A. Ziebeck, S. L. Town, M. S. Peak, Philos. Mag. B 49, 295 (1984)"},
]


def reference_structures() -> dict[str, Any]:
    """The structures of :data:`REFERENCE_MOMENTS`, built with measured room-temperature lattice constants."""
    from pymatgen.core import Lattice, Structure

    proto = prototype_structure
    u = 0.3053  # rutile oxygen parameter of CrO2
    rutile = Structure(Lattice.tetragonal(4.421, 2.917), ["Cr", "Cr", "O", "O", "O", "O"],
                       [[0, 0, 0], [0.5, 0.5, 0.5], [u, u, 0], [1 - u, 1 - u, 0], [0.5 + u, 0.5 - u, 0.5],
                        [0.5 - u, 0.5 + u, 0.5]])
    # Fd-3m origin choice 1 (pymatgen's default): Fe 8a (0,0,0), Fe 16d (5/8,5/8,5/8), O 32e x = 0.3799
    magnetite = Structure.from_spacegroup("Fd-3m", Lattice.cubic(8.396), ["Fe", "Fe", "O"],
                                          [[0, 0, 0], [0.625, 0.625, 0.625], [0.3799, 0.3799, 0.3799]])
    s = {
        "Fe": proto("A2_bcc", ["Fe"], 2.8665),
        "Co": Structure(Lattice.hexagonal(2.507, 4.069), ["Co", "Co"], [[1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]]),
        "Ni": proto("A1_fcc", ["Ni"], 3.524),
        "Gd": Structure(Lattice.hexagonal(3.636, 5.783), ["Gd", "Gd"], [[1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]]),
        "MnBi": Structure(Lattice.hexagonal(4.29, 6.12), ["Mn", "Mn", "Bi", "Bi"],
                          [[0, 0, 0], [0, 0, 0.5], [1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]]),
        "MnSb": Structure(Lattice.hexagonal(4.12, 5.78), ["Mn", "Mn", "Sb", "Sb"],
                          [[0, 0, 0], [0, 0, 0.5], [1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]]),
        "CrO2": rutile,
        "EuO": proto("B1_NaCl", ["Eu", "O"], 5.144),
        "Fe3O4": magnetite.get_primitive_structure(),
        "Co2MnSi": proto("L2_1_Heusler", ["Co", "Mn", "Si"], 5.654),
        "Ni2MnGa": proto("L2_1_Heusler", ["Ni", "Mn", "Ga"], 5.825),
    }
    return s


def _main(argv: Sequence[str] | None = None) -> None:
    """``python -m symviz.data.magnetic [quick|full]``: fill the CHGNet label cache ahead of the notebook."""
    import argparse

    ap = argparse.ArgumentParser(description="Label chapter 06's candidate pool with CHGNet and cache the labels.")
    ap.add_argument("scale", nargs="?", default="quick", choices=("quick", "full"))
    args = ap.parse_args(argv)
    sizes = {"quick": dict(n_prototypes=200, n_real=60, max_real_sites=8, n_aflow=0),
             "full": dict(n_prototypes=2000, n_real=700, max_real_sites=20, n_aflow=300)}[args.scale]
    pool = candidate_pool(seed=0, **sizes)
    structures = list(pool["structure"]) + list(reference_structures().values())
    _, info = chgnet_labels(structures, progress=True)
    print(f"{len(structures)} structures: {info['hits']} cached, {info['labelled']} labelled in {info['seconds']:.0f} s "
          f"-> {info['path']}")


if __name__ == "__main__":
    _main()
