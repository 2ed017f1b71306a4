"""Descriptors of crystals for a random forest: composition statistics, structure features, selection.

Kaba et al. (arXiv:2111.14712) feed a random forest about a hundred descriptors chosen
stochastically from a much larger set of composition and structure descriptors. Here:

* :func:`composition_descriptors`: fraction-weighted statistics (mean, min, max, range, mean absolute
  deviation) of the 64 single-valued element properties of the Magpie tables (Ward et al., npj
  Comput. Mater. 2, 16028 (2016)) that ship offline inside matminer. Same numbers as matminer's
  ``ElementProperty`` featurizer (tested), but vectorised over many compositions at once.
* :func:`structure_descriptors`: volume and packing, space group, nearest-neighbour distances,
  coordination, and the distance between magnetic atoms (what sets the exchange coupling).
* :func:`stochastic_descriptor_selection`: many small random forests on random descriptor subsets;
  each descriptor scores the validation-error-weighted importance it earned in the subsets it was in
  (:func:`selection_scores`, replaceable through ``score_fn``); keep the best ``n_select``.

    >>> from pymatgen.core import Composition
    >>> X = composition_descriptors([Composition("Fe3Al")], properties=["Electronegativity"], stats=["mean", "range"])
    >>> [round(v, 4) for v in X.iloc[0]]
    [1.775, 0.22]
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Sequence

import numpy as np

__all__ = [
    "magpie_table", "MAGPIE_PROPERTIES", "STATS", "composition_descriptors", "structure_descriptors",
    "all_descriptors", "element_fractions", "stochastic_descriptor_selection", "selection_scores", "SelectionResult",
]

STATS = ("mean", "minimum", "maximum", "range", "avg_dev")


@lru_cache(maxsize=1)
def _magpie():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from matminer.utils.data import MagpieData

        return MagpieData(impute_nan=True)


@lru_cache(maxsize=1)
def _single_valued_properties() -> tuple[str, ...]:
    props = _magpie().all_elemental_props
    return tuple(sorted(p for p, table in props.items()
                        if not any(isinstance(v, (list, tuple, np.ndarray)) for v in table.values())))


def __getattr__(name: str):  # MAGPIE_PROPERTIES is computed on first use (reading the tables costs ~1 s)
    if name == "MAGPIE_PROPERTIES":
        return _single_valued_properties()
    raise AttributeError(name)


def magpie_table(properties: Sequence[str] | None = None):
    """Element property table: a DataFrame indexed by element symbol, one column per Magpie property.

    >>> float(magpie_table(["GSmagmom"]).loc["Fe", "GSmagmom"])   # DFT ground-state moment of bcc Fe (μB)
    2.1106628
    """
    import pandas as pd

    known = _single_valued_properties()
    props = list(known) if properties is None else list(properties)
    for p in props:
        if p not in known:
            raise ValueError(f"magpie_table: unknown or multi-valued property {p!r}; known: {', '.join(known)}")
    data = _magpie().all_elemental_props
    return pd.DataFrame({p: pd.Series(data[p], dtype=float) for p in props})


def _fractions(compositions: Sequence[Any], where: str):
    """``(n, n_elements)`` atomic fractions and the element symbols (columns)."""
    from pymatgen.core import Composition

    comps = []
    for i, c in enumerate(compositions):
        if isinstance(c, str):
            try:
                c = Composition(c)
            except Exception as err:  # pymatgen raises several kinds for a bad formula
                raise ValueError(f"{where}: compositions[{i}] = {c!r} is not a chemical formula ({err})") from None
        elif hasattr(c, "composition"):  # a Structure
            c = c.composition
        if not isinstance(c, Composition):
            raise TypeError(f"{where}: compositions[{i}] must be a pymatgen Composition, Structure or formula string")
        if c.num_atoms <= 0:
            raise ValueError(f"{where}: compositions[{i}] is empty")
        comps.append(c)
    symbols = sorted({el.symbol for c in comps for el in c.elements})
    col = {s: k for k, s in enumerate(symbols)}
    F = np.zeros((len(comps), len(symbols)))
    for i, c in enumerate(comps):
        for el, amt in c.get_el_amt_dict().items():
            F[i, col[el]] += amt
    F /= F.sum(1, keepdims=True)
    return F, symbols


def composition_descriptors(compositions: Sequence[Any], properties: Sequence[str] | None = None,
                            stats: Sequence[str] = STATS):
    """Fraction-weighted statistics of element properties (Magpie), like matminer's ``ElementProperty``.

    With atomic fractions ``f_e`` and property values ``p_e`` of the elements present:
    ``mean = Σ f_e p_e``, ``minimum``/``maximum`` over present elements, ``range = max - min``,
    ``avg_dev = Σ f_e |p_e - mean|``.

    Args:
        compositions: pymatgen Compositions, Structures or formula strings (``n`` of them).
        properties: Magpie property names (default: all 64 single-valued ones).
        stats: any of :data:`STATS`.
    Returns:
        DataFrame ``(n, len(properties) * len(stats))``, columns ``"<stat> <property>"`` (property-major,
        the order matminer uses).
    """
    import pandas as pd

    where = "composition_descriptors"
    for s in stats:
        if s not in STATS:
            raise ValueError(f"{where}: unknown stat {s!r}; choose from {STATS}")
    if isinstance(compositions, (str, bytes)):
        raise TypeError(f"{where}: compositions must be a list (got a single string {compositions!r})")
    F, symbols = _fractions(compositions, where)
    table = magpie_table(properties)
    missing = [s for s in symbols if s not in table.index]
    if missing:
        raise ValueError(f"{where}: unknown element(s) {missing} (not in the Magpie tables)")
    P = table.loc[symbols].to_numpy()  # (n_el, n_prop)
    present = F > 0
    mean = F @ P
    big = np.where(present[:, :, None], P[None], np.nan)  # (n, n_el, n_prop)
    mn, mx = np.nanmin(big, axis=1), np.nanmax(big, axis=1)
    out = {}
    for j, p in enumerate(table.columns):
        for s in stats:
            if s == "mean":
                v = mean[:, j]
            elif s == "minimum":
                v = mn[:, j]
            elif s == "maximum":
                v = mx[:, j]
            elif s == "range":
                v = mx[:, j] - mn[:, j]
            else:
                v = (F * np.abs(P[None, :, j] - mean[:, j:j + 1])).sum(1)
            out[f"{s} {p}"] = v
    return pd.DataFrame(out)


def structure_descriptors(structures: Sequence[Any], magnetic_elements: Sequence[str] | None = None):
    """Geometric descriptors of each structure (a DataFrame, one row per structure).

    Columns: ``volume_per_atom`` (Å³), ``density`` (g/cm³), ``packing_fraction`` (Σ 4/3 π r³ / V, atomic
    radii), ``n_sites``, ``n_elements``, ``spacegroup`` (spglib number), ``crystal_system`` (1 triclinic
    .. 7 cubic), ``nn_min``/``nn_mean`` (nearest-neighbour distances, Å), ``coordination_mean`` (neighbours
    within 1.2 × the nearest distance), ``mag_fraction`` (fraction of magnetic atoms), ``mag_nn``
    (shortest magnetic–magnetic distance, Å; 10 when there is one or no magnetic atom in reach),
    ``c_over_a`` (longest / shortest lattice vector).
    """
    import pandas as pd
    import spglib
    from pymatgen.core import Structure

    from symviz.data.magnetic import MAGNETIC_ELEMENTS, _radius

    mags = set(magnetic_elements or MAGNETIC_ELEMENTS)
    rows = []
    for i, s in enumerate(structures):
        if not isinstance(s, Structure):
            raise TypeError(f"structure_descriptors: structures[{i}] must be a pymatgen Structure, got {type(s).__name__}")
        n = len(s)
        syms = [site.specie.symbol for site in s]
        r = np.array([_radius(x) for x in syms])
        cell = (s.lattice.matrix, s.frac_coords, [site.specie.Z for site in s])
        ds = spglib.get_symmetry_dataset(cell, symprec=1e-3)
        sgn = int(ds.number) if ds is not None else 1
        ci, nj, _, d = s.get_neighbor_list(6.0)
        keep = d > 1e-6
        ci, nj, d = ci[keep], nj[keep], d[keep]
        nn = np.full(n, 6.0)
        np.minimum.at(nn, ci, d)
        coord = np.bincount(ci[d <= 1.2 * nn[ci]], minlength=n)
        is_mag = np.array([x in mags for x in syms])
        mm = is_mag[ci] & is_mag[nj]
        abc = np.array(s.lattice.abc)
        rows.append({
            "volume_per_atom": s.volume / n,
            "density": float(s.density),
            "packing_fraction": float((4 / 3 * np.pi * r ** 3).sum() / s.volume),
            "n_sites": n,
            "n_elements": len(set(syms)),
            "spacegroup": sgn,
            "crystal_system": int(np.searchsorted([2, 15, 74, 142, 167, 194], sgn, side="left") + 1),
            "nn_min": float(nn.min()),
            "nn_mean": float(nn.mean()),
            "coordination_mean": float(coord.mean()),
            "mag_fraction": float(is_mag.mean()),
            "mag_nn": float(d[mm].min()) if mm.any() else 10.0,
            "c_over_a": float(abc.max() / abc.min()),
        })
    return pd.DataFrame(rows)


def element_fractions(compositions: Sequence[Any], elements: Sequence[str] | None = None):
    """Atomic fraction of each of ``elements`` (default: the magnetic ones) in each composition.

    Columns ``"fraction <El>"``. Trees split on these directly ("how much Fe is there?").

    >>> element_fractions(["Fe3Al"], ["Fe", "Co"]).iloc[0].tolist()
    [0.75, 0.0]
    """
    import pandas as pd

    from symviz.data.magnetic import MAGNETIC_ELEMENTS

    F, symbols = _fractions(compositions, "element_fractions")
    col = {s: k for k, s in enumerate(symbols)}
    els = list(elements or MAGNETIC_ELEMENTS)
    return pd.DataFrame({f"fraction {e}": (F[:, col[e]] if e in col else np.zeros(len(F))) for e in els})


def all_descriptors(structures: Sequence[Any], properties: Sequence[str] | None = None, cache: bool = False):
    """All descriptors: Magpie statistics (64 properties × :data:`STATS`), magnetic-element fractions,
    and structure descriptors. About 340 columns to select from.

    ``cache=True`` keeps the table in ``symviz.train.cache_dir()`` under a hash of the structures (lattices,
    coordinates, species) and ``properties`` (a space group per crystal takes ~7 ms: 260 crystals, ~2 s)."""
    import pandas as pd

    structures = list(structures)
    if cache:
        from symviz.data.cache import cached, source_digest, structures_digest

        key = [structures_digest(structures), None if properties is None else list(properties),
               source_digest(__name__, packages=("pymatgen", "spglib", "matminer"))]   # a code change recomputes
        return cached("magnetic", "descriptors", key, lambda: all_descriptors(structures, properties))
    comps = [s.composition for s in structures]
    comp = composition_descriptors(comps, properties)
    return pd.concat([comp, element_fractions(comps), structure_descriptors(structures)], axis=1)


class SelectionResult:
    """What :func:`stochastic_descriptor_selection` returns.

    Attributes: ``selected`` (list of column names, best first), ``scores`` (DataFrame: descriptor,
    score, times_drawn), ``rounds`` (DataFrame: round, val_mae, n_descriptors).
    """

    def __init__(self, selected, scores, rounds):
        self.selected, self.scores, self.rounds = selected, scores, rounds

    def __repr__(self) -> str:
        return f"SelectionResult({len(self.selected)} selected of {len(self.scores)}, {len(self.rounds)} rounds)"


def selection_scores(cols, importances, val_mae, n_descriptors: int) -> np.ndarray:
    """Score every descriptor from the rounds of a stochastic selection.

    Round ``r`` drew the descriptors ``cols[r]``, a small forest on them got the validation MAE
    ``val_mae[r]`` and gave them the importances ``importances[r]``. A descriptor's score is the mean, over
    the rounds it was drawn in, of its importance weighted by how well that round predicted:

    ``score_d = (1 / |R_d|) Σ_{r ∈ R_d} importance_{r,d} × median_r'(MAE_r') / MAE_r``,

    and 0 for a descriptor never drawn (``R_d`` empty). The mean (not the sum) keeps a descriptor that was
    drawn often by luck from outscoring one drawn rarely; the median makes the weights comparable between runs.

    Args:
        cols: ``(R, k)`` integer descriptor indices (distinct within a round); importances: ``(R, k)``;
            val_mae: ``(R,)`` positive; n_descriptors: ``d`` (every index in ``cols`` is below it).
    Returns:
        ``(d,)`` scores.

        >>> selection_scores([[0, 1], [1, 2]], [[0.5, 0.5], [0.2, 0.8]], [1.0, 1.0], 4).tolist()
        [0.5, 0.35, 0.8, 0.0]
    """
    cols = np.asarray(cols)
    imp = np.asarray(importances, dtype=float)
    mae = np.asarray(val_mae, dtype=float).reshape(-1)
    if cols.ndim != 2 or imp.shape != cols.shape or mae.shape != (cols.shape[0],) or cols.shape[0] == 0:
        raise ValueError(f"selection_scores: need cols (R, k), importances (R, k) and val_mae (R,) with R >= 1; got "
                         f"{cols.shape}, {imp.shape}, {mae.shape}")
    if not np.issubdtype(cols.dtype, np.integer) or (cols.size and (cols.min() < 0 or cols.max() >= n_descriptors)):
        raise ValueError(f"selection_scores: cols must hold integer descriptor indices in 0..{n_descriptors - 1}")
    if not np.all(np.isfinite(mae)) or np.any(mae < 0):
        raise ValueError("selection_scores: val_mae must be finite and >= 0")
    med = float(np.median(mae))
    imp_sum, drawn = np.zeros(n_descriptors), np.zeros(n_descriptors)
    for c, i, m in zip(cols, imp, mae):
        imp_sum[c] += i * (med / max(m, 1e-12))
        drawn[c] += 1
    return np.where(drawn > 0, imp_sum / np.maximum(drawn, 1), 0.0)


def stochastic_descriptor_selection(X, y, n_select: int = 100, n_rounds: int = 40, subset_size: int | None = None,
                                    val_fraction: float = 0.25, n_estimators: int = 40, seed: int = 0,
                                    n_jobs: int | None = 1, score_fn=None) -> SelectionResult:
    """Stochastic descriptor selection (in the spirit of Kaba et al. 2021, sec. "Random forests").

    For ``n_rounds`` rounds: draw ``subset_size`` descriptors at random, fit a small random forest on a
    random training split, measure its validation MAE. A descriptor's score is the mean over the rounds
    it was drawn in of ``importance_in_round × (median MAE / MAE_round)`` (useful in subsets that
    predict well; :func:`selection_scores`). Keep the ``n_select`` best.

    Args:
        X: DataFrame ``(n, d)`` of descriptors; y: ``(n,)`` targets.
        score_fn: ``(cols (R, k), importances (R, k), val_mae (R,), d) -> (d,) scores``; default
            :func:`selection_scores` (chapter 06 passes the learner's version here).
    """
    import pandas as pd
    from sklearn.ensemble import RandomForestRegressor

    if not isinstance(X, pd.DataFrame):
        raise TypeError("stochastic_descriptor_selection: X must be a pandas DataFrame (named descriptors)")
    y = np.asarray(y, dtype=float).reshape(-1)
    n, d = X.shape
    if len(y) != n:
        raise ValueError(f"stochastic_descriptor_selection: X has {n} rows but y has {len(y)}")
    if not (isinstance(n_select, int) and 1 <= n_select):
        raise ValueError(f"stochastic_descriptor_selection: n_select must be a positive int, got {n_select!r}")
    if n < 8:
        raise ValueError(f"stochastic_descriptor_selection: need at least 8 samples, got {n}")
    if score_fn is not None and not callable(score_fn):
        raise TypeError(f"stochastic_descriptor_selection: score_fn must be callable, got {type(score_fn).__name__}")
    n_select = min(n_select, d)
    subset_size = subset_size or max(1, min(d, max(n_select // 2, int(np.sqrt(d) * 3))))
    rng = np.random.default_rng(seed)
    Xv = X.to_numpy(dtype=float)
    per_round = []
    for r in range(n_rounds):
        cols = rng.choice(d, size=subset_size, replace=False)
        perm = rng.permutation(n)
        n_val = max(2, int(round(val_fraction * n)))
        va, tr = perm[:n_val], perm[n_val:]
        rf = RandomForestRegressor(n_estimators=n_estimators, min_samples_leaf=2, max_features=0.5,
                                   random_state=int(rng.integers(2**31)), n_jobs=n_jobs)
        rf.fit(Xv[np.ix_(tr, cols)], y[tr])
        mae = float(np.mean(np.abs(rf.predict(Xv[np.ix_(va, cols)]) - y[va])))
        per_round.append((r, mae, cols, rf.feature_importances_))
    maes = np.array([m for _, m, _, _ in per_round])
    score = (score_fn or selection_scores)(np.stack([c for _, _, c, _ in per_round]),
                                           np.stack([i for _, _, _, i in per_round]), maes, d)
    score = np.asarray(score, dtype=float).reshape(-1)
    if score.shape != (d,) or not np.all(np.isfinite(score)):
        raise ValueError(f"stochastic_descriptor_selection: score_fn must return {d} finite scores, got shape "
                         f"{score.shape}")
    scores = pd.DataFrame({"descriptor": X.columns, "score": score,
                           "times_drawn": np.bincount(np.concatenate([c for _, _, c, _ in per_round]),
                                                      minlength=d).astype(int)})
    scores = scores.sort_values("score", ascending=False).reset_index(drop=True)
    rounds = pd.DataFrame({"round": [r for r, *_ in per_round], "val_mae": maes, "n_descriptors": subset_size})
    return SelectionResult(list(scores["descriptor"][:n_select]), scores, rounds)
