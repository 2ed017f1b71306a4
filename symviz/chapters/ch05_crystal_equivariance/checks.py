"""The exercise checks of chapter 05 (crystal (space-group) equivariance): each takes the learner's implementation,
compares it with the tested reference on random inputs, prints a verdict and returns a
:class:`symviz.checks.CheckResult` (truthy when correct). A wrong answer never raises."""
from __future__ import annotations

from symviz.checks import CheckResult, verdict

__all__ = ['check_pair_orbits']


def _check_05_cases():
    """(name, perms (m, n), reference pair orbits (n, n)) from spglib on three lattices."""
    from pymatgen.core import Lattice, Structure

    from symviz.data import crystals as C

    rutile = Structure.from_spacegroup("P4_2/mnm", Lattice.tetragonal(4.59, 2.96), ["Ti", "O"],
                                       [[0, 0, 0], [0.305, 0.305, 0]])
    cases = [("fcc cubic cell (4 sites, Fm-3m)", C.lattice_supercell("fcc", "Cu", size=(1, 1, 1))),
             ("hcp 2x2x1 supercell (8 sites, P6_3/mmc)", C.lattice_supercell("hcp", "Cu", size=(2, 2, 1))),
             ("rutile TiO2 (6 sites, P4_2/mnm, two site orbits)", rutile)]
    out = []
    for name, s in cases:
        perms = C.site_permutations(s)
        out.append((name, perms, C.pair_orbits(perms)))
    return out


def check_pair_orbits(pair_orbits_fn) -> CheckResult:
    """Check a learner's ``pair_orbits_fn(perms) -> (n, n) labels`` against the orbits from spglib.

    ``perms: (m, n)`` LongTensor, row ``g`` a site permutation of the space group (``x -> x[perms[g]]``).
    Any labelling is accepted as long as two pairs share a label exactly when an operation maps one
    onto the other (the partition is compared, not the label values).
    """
    import numpy as np

    from symviz.data.crystals import canonical_labels

    for name, perms, want in _check_05_cases():
        n = perms.shape[1]
        try:
            got = pair_orbits_fn(perms.clone())
        except Exception as exc:  # the learner's code may fail in any way: report it, never raise
            return verdict(False, "", f"on the {name} your function raised {type(exc).__name__}: {exc}")
        got = np.asarray(got.detach().cpu() if hasattr(got, "detach") else got)
        if got.shape != (n, n):
            return verdict(False, "", f"on the {name}: expected an ({n}, {n}) array of orbit labels, got shape {got.shape}")
        g, w = canonical_labels(got), canonical_labels(want)
        if (g == w).all():
            continue
        k_got, k_want = len(np.unique(got)), int(w.max()) + 1
        # find a pair of pairs on which the partitions disagree, to give a concrete hint
        a, b = np.argwhere(g != w)[0]
        same_want = np.argwhere(w == w[a, b])
        same_got = np.argwhere(g == g[a, b])
        if k_got > k_want:
            other = next(tuple(q) for q in same_want if g[tuple(q)] != g[a, b])
            hint = (f"pairs {(int(a), int(b))} and {tuple(int(v) for v in other)} are related by a symmetry "
                    "operation but got different labels (did you apply every operation, to both i and j?)")
        else:
            other = next((tuple(q) for q in same_got if w[tuple(q)] != w[a, b]), (int(a), int(b)))
            hint = (f"pairs {(int(a), int(b))} and {tuple(int(v) for v in other)} got the same label but no "
                    "operation maps one onto the other (e.g. (i, j) and (j, i) are not always in one orbit, "
                    "and a distance alone does not define an orbit)")
        return verdict(False, "", f"on the {name}: you found {k_got} orbits, spglib's group gives {k_want}; {hint}.")
    return verdict(True, "your pair orbits match the ones computed from spglib's operations on fcc, hcp and rutile.", "")
