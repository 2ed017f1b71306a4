"""QM9 molecules read from the CSV files that ship inside the PyPI package ``qm9pack``, offline.

Source: Ramakrishnan, Dral, Rupp, von Lilienfeld, "Quantum chemistry structures and properties of
134 kilo molecules", Scientific Data 1, 140022 (2014). ``qm9pack`` ships 130,831 molecules in
``qm9pack/data/qm9_part{1,2,3}.csv`` (coordinates in Å as JSON strings, B3LYP/6-31G(2df,p)
properties). We read the CSVs with pandas directly (the package's own loader imports the deprecated
``pkg_resources``) and only the columns we need.

    >>> sorted(TARGETS)[:3]
    ['alpha', 'cv', 'gap']
"""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import torch

__all__ = ["TARGETS", "ELEMENTS", "qm9_files", "load_qm9", "qm9_splits"]

TARGETS = {
    "mu": ("Dipole_debye", 1.0, "D"),
    "alpha": ("Polarizability_bohr3", 1.0, "bohr^3"),
    "homo": ("HOMO_au", 27.211386, "eV"),
    "lumo": ("LUMO_au", 27.211386, "eV"),
    "gap": ("HOMO_LUMO_gap_au", 27.211386, "eV"),
    "r2": ("R2_bohr2", 1.0, "bohr^2"),
    "zpve": ("ZPVE_au", 27.211386, "eV"),
    "cv": ("Heatcapacity_Cv_cal_mol_K", 1.0, "cal/mol/K"),
}
"""Target name -> (CSV column, factor to the unit, unit). Hartree -> eV uses 27.211386."""
ELEMENTS = ("H", "C", "N", "O", "F")
MAX_ATOMS = 29
_BARE_DOT = re.compile(r"\.(?=[,\]])")  # the CSVs write 0. and 1. (not JSON)


def qm9_files(parts=(1, 2, 3)) -> list[Path]:
    """Paths of the ``qm9pack`` CSV part files, located without importing the package."""
    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the PyPI package 'qm9pack' is not installed: pip install qm9pack")
    base = Path(list(spec.submodule_search_locations)[0]) / "data"
    bad = [p for p in parts if p not in (1, 2, 3)]
    if bad or not parts:
        raise ValueError(f"parts must be a non-empty subset of (1, 2, 3), got {parts!r}")
    paths = [base / f"qm9_part{p}.csv" for p in parts]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"qm9pack data files missing: {missing}")
    return paths


SMOKE_MOLECULES = 300
"""Molecules :func:`load_qm9` reads at most in a smoke run (full mode reads all 130,831: minutes and 4 GB)."""


def load_qm9(n: int | None = 3000, targets=("gap",), seed: int = 0, parts=(1, 2, 3), hydrogens: bool = True,
             cache: bool = True) -> dict:
    """A random sample of ``n`` QM9 molecules (all of ``parts`` when ``n`` is None) as padded tensors.

    Rows are sampled while reading (``skiprows``), so memory stays proportional to ``n``.
    ``hydrogens=False`` keeps heavy atoms only (at most 9 per molecule, so a fully connected graph has
    about 16x fewer edges; the hydrogens are implied by the chemistry), padded to 9 instead of 29.

    Returns a dict (``A = 29``, or 9 without hydrogens): ``z (S, A)`` long element index into :data:`ELEMENTS` (-1 for padding),
    ``onehot (S, A, 5)``, ``pos (S, A, 3)`` Å, ``mask (S, A)`` bool, ``y (S, len(targets))`` in the
    units of :data:`TARGETS`, ``index (S,)`` the QM9 molecule index.
    """
    import pandas as pd

    from symviz.train import smoke_cap

    n = smoke_cap(n, SMOKE_MOLECULES)  # `symviz run --smoke`: full mode's code path on a few molecules
    targets = tuple(targets)
    bad = [t for t in targets if t not in TARGETS]
    if bad or not targets:
        raise ValueError(f"targets must be names from {sorted(TARGETS)}, got {targets!r}")
    if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1):
        raise ValueError(f"n must be a positive integer or None (all molecules), got {n!r}")
    files = qm9_files(parts)
    path = None
    if cache:
        from symviz.train import cache_dir
        path = cache_dir() / "qm9" / f"qm9_{n}_{'-'.join(targets)}_{seed}_{'-'.join(map(str, parts))}_H{int(hydrogens)}.pt"
        if path.exists():
            try:
                return torch.load(path, weights_only=True)
            except Exception:  # corrupt cache: read again
                pass
    total = 130_831 * len(parts) / 3
    keep = 1.0 if n is None else min(1.0, 1.3 * n / total)
    rng = np.random.default_rng(seed)
    cols = ["Index", "N_atoms", "Elements", "XYZ_Ang"] + [TARGETS[t][0] for t in targets]
    frames = [pd.read_csv(f, usecols=cols, skiprows=(None if keep >= 1 else (lambda i: i > 0 and rng.random() > keep)))
              for f in files]
    df = pd.concat(frames, ignore_index=True)
    if n is not None:
        if len(df) < n:
            raise ValueError(f"only {len(df)} molecules were read, fewer than n={n}; use more parts")
        df = df.iloc[np.sort(rng.choice(len(df), size=n, replace=False))]
    S = len(df)
    width = MAX_ATOMS if hydrogens else 9
    z = np.full((S, width), -1, dtype=np.int64)
    pos = np.zeros((S, width, 3), dtype=np.float32)
    lookup = {e: k for k, e in enumerate(ELEMENTS)}
    for k, (els, xyz) in enumerate(zip(df["Elements"], df["XYZ_Ang"])):
        els = np.array([lookup[e] for e in json.loads(els.replace("'", '"'))])
        xyz = np.asarray(json.loads(_BARE_DOT.sub(".0", xyz)), dtype=np.float32)
        if not hydrogens:
            keep = els != 0
            els, xyz = els[keep], xyz[keep]
        z[k, :len(els)] = els
        pos[k, :len(els)] = xyz
    y = np.stack([df[TARGETS[t][0]].to_numpy(np.float64) * TARGETS[t][1] for t in targets], 1)
    zt = torch.as_tensor(z)
    mask = zt >= 0
    onehot = torch.nn.functional.one_hot(zt.clamp(min=0), len(ELEMENTS)).float() * mask[..., None]
    out = {"z": zt, "onehot": onehot, "pos": torch.as_tensor(pos), "mask": mask,
           "y": torch.as_tensor(y, dtype=torch.float32), "index": torch.as_tensor(df["Index"].to_numpy())}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(out, tmp)
        tmp.replace(path)
    return out


def qm9_splits(data: dict, n_train: int, n_val: int, n_test: int, seed: int = 0) -> dict[str, dict]:
    """Split a :func:`load_qm9` dict at random into train/val/test dicts (EGNN: 100k/18k/13k).

    In a smoke run (`symviz run --smoke`, where :func:`load_qm9` reads at most :data:`SMOKE_MOLECULES`) the sizes
    shrink to at most half / a quarter / a quarter of the molecules loaded."""
    from symviz.train import smoke_steps

    S = int(data["y"].shape[0])
    sizes = (n_train, n_val, n_test)
    if smoke_steps() is not None and all(isinstance(s, (int, np.integer)) for s in sizes):
        sizes = (min(n_train, S // 2), min(n_val, S // 4), min(n_test, S // 4))
    if any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1 for s in sizes) or sum(sizes) > S:
        raise ValueError(f"n_train, n_val, n_test must be positive with a sum <= {S} molecules, got {sizes}")
    perm = torch.as_tensor(np.random.default_rng(seed).permutation(S))
    out, start = {}, 0
    for name, size in zip(("train", "val", "test"), sizes):
        idx = perm[start:start + size]
        out[name] = {k: v[idx] for k, v in data.items()}
        start += size
    return out
