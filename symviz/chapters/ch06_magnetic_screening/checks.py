"""The exercise checks of chapter 06 (screening materials for magnetic moments): each takes the learner's
implementation, compares it with the tested reference, prints a verdict and returns a
:class:`symviz.checks.CheckResult` (truthy when correct). A wrong answer never raises."""
from __future__ import annotations

from symviz.checks import CheckResult, verdict

__all__ = ['check_composition_featurizer', 'check_selection_scores']


def check_composition_featurizer(featurize_fn, properties=("Electronegativity", "GSmagmom"), stats=("mean", "range")):
    """Chapter 06: check a learner's composition featurizer against matminer's ``ElementProperty``.

    ``featurize_fn(composition) -> sequence`` must return, for each property in ``properties`` and each
    stat in ``stats`` (property-major order, as matminer), the fraction-weighted statistic of the Magpie
    element property (Ward et al., npj Comput. Mater. 2, 16028 (2016)): ``mean = Σ_e f_e p_e``,
    ``range = max_e p_e - min_e p_e`` over the elements present.
    """
    import warnings

    import numpy as np
    from pymatgen.core import Composition

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from matminer.featurizers.composition import ElementProperty

        ep = ElementProperty("magpie", list(properties), list(stats))
    labels = [lab.replace("MagpieData ", "") for lab in ep.feature_labels()]
    for formula in ("Fe", "Fe3Al", "Co2MnSi", "MnBi", "Gd2Fe17", "NiO"):
        comp = Composition(formula)
        want = np.asarray(ep.featurize(comp), dtype=float)
        try:
            got = np.asarray(featurize_fn(comp), dtype=float).reshape(-1)
        except Exception as exc:  # the learner's code may fail in any way: report it, never raise
            return verdict(False, "", f"for {formula} your function raised {type(exc).__name__}: {exc}")
        if got.shape != want.shape:
            return verdict(False, "", f"for {formula}: expected {want.size} numbers in the order {labels}, got {got.size}")
        bad = [(lab, g, w) for lab, g, w in zip(labels, got, want) if not np.isclose(g, w, rtol=1e-6, atol=1e-8)]
        if bad:
            lab, g, w = bad[0]
            hint = " (weight each element by its atomic fraction, not by 1/n_elements)" if lab.startswith("mean") else ""
            return verdict(False, "", f"for {formula}, '{lab}' is {g:.4g} but matminer gives {w:.4g}{hint}.")
    return verdict(True, f"your featurizer matches matminer's ElementProperty on 6 compositions ({', '.join(labels)}).", "")


def _selection_cases():
    """Rounds of a stochastic selection to score: a small hand-made one and a random one (repeated draws across
    rounds, descriptors never drawn, unequal round MAEs)."""
    import numpy as np

    small = (np.array([[0, 1, 2], [1, 2, 3], [2, 3, 4], [0, 2, 4]]),
             np.array([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.4, 0.4, 0.2], [0.2, 0.5, 0.3]]),
             np.array([0.2, 0.4, 0.1, 0.8]), 6)                  # descriptor 5 is never drawn
    rng = np.random.default_rng(11)
    R, k, d = 30, 8, 40
    cols = np.stack([rng.choice(d - 3, size=k, replace=False) for _ in range(R)])  # the last 3 never drawn
    imp = rng.dirichlet(np.ones(k), size=R)
    mae = rng.uniform(0.1, 1.0, size=R)
    return [small, (cols, imp, mae, d)]


def _selection_variants(cols, imp, mae, d):
    """What plausible wrong answers compute, to name the mistake in the verdict."""
    import numpy as np

    w = np.median(mae) / mae
    drawn = np.bincount(cols.ravel(), minlength=d).astype(float)
    weighted = np.zeros(d)
    np.add.at(weighted, cols, imp * w[:, None])
    plain = np.zeros(d)
    np.add.at(plain, cols, imp)
    worse = np.zeros(d)
    np.add.at(worse, cols, imp / w[:, None])
    per_draw = lambda s: np.where(drawn > 0, s / np.maximum(drawn, 1), 0.0)
    return {
        "the sum over rounds instead of the mean over the rounds a descriptor was drawn in (a descriptor drawn "
        "often by luck then outscores one drawn rarely)": weighted,
        "a mean over all rounds (divide by the rounds a descriptor was drawn in, not by R)": weighted / len(mae),
        "importances that ignore how well each round predicted (weight by median MAE / MAE of the round)": per_draw(plain),
        "weights MAE / median MAE: that rewards descriptors from rounds that predicted badly (use median MAE / MAE)":
            per_draw(worse),
        "scores proportional to the expected ones (the median MAE is missing from the weight)": per_draw(weighted) / np.median(mae),
    }


def check_selection_scores(score_fn) -> CheckResult:
    """Chapter 06: check a learner's scoring rule of the stochastic descriptor selection against
    :func:`symviz.data.descriptors.selection_scores`.

    ``score_fn(cols (R, k) int, importances (R, k), val_mae (R,), n_descriptors) -> (n_descriptors,)`` must return
    ``score_d = mean over the rounds r that drew d of importance_{r,d} × median(val_mae) / val_mae[r]``, and 0
    for a descriptor never drawn (Kaba et al., arXiv:2111.14712, stochastic selection). Compared on a small
    hand-made set of rounds and a random one with repeated draws (relative tolerance 1e-9).
    """
    import numpy as np

    from symviz.data.descriptors import selection_scores

    for cols, imp, mae, d in _selection_cases():
        want = selection_scores(cols, imp, mae, d)
        try:
            got = np.asarray(score_fn(cols.copy(), imp.copy(), mae.copy(), d), dtype=float)
        except Exception as exc:  # the learner's code may fail in any way: report it, never raise
            return verdict(False, "", f"your function raised {type(exc).__name__}: {exc}")
        where = f"for R={len(mae)} rounds of k={cols.shape[1]} descriptors out of d={d}"
        if got.shape != (d,):
            return verdict(False, "", f"{where}: expected one score per descriptor, shape ({d},), got {got.shape}")
        never = np.setdiff1d(np.arange(d), cols.ravel())
        if not np.all(np.isfinite(got)):
            bad = int(np.flatnonzero(~np.isfinite(got))[0])
            extra = " (it was never drawn: its score must be 0, not 0/0)" if bad in never else ""
            return verdict(False, "", f"{where}: the score of descriptor {bad} is {got[bad]}{extra}")
        if np.allclose(got, want, rtol=1e-9, atol=1e-12):
            continue
        diagnosis = ""
        for name, wrong in _selection_variants(cols, imp, mae, d).items():
            if np.allclose(got, wrong, rtol=1e-9, atol=1e-12):
                diagnosis = f" This looks like {name}."
                break
        if not diagnosis:
            if never.size and not np.allclose(got[never], 0):
                diagnosis = f" Descriptor {int(never[0])} was never drawn; its score must be 0."
            else:
                diagnosis = (" If you accumulate with `scores[cols] += ...` over several rounds at once, numpy adds a "
                             "repeated index only once: loop over rounds or use np.add.at.")
        j = int(np.argmax(np.abs(got - want)))
        return verdict(False, "", f"{where}: descriptor {j} (drawn in rounds {np.flatnonzero((cols == j).any(1)).tolist()}) "
                                  f"should score {want[j]:.6g}, you gave {got[j]:.6g}.{diagnosis}")
    return verdict(True, "your scores match symviz.data.descriptors.selection_scores on a hand-made and a random set "
                         "of rounds (mean over the rounds each descriptor was drawn in, weighted by median MAE / MAE, "
                         "0 when never drawn). The stochastic selection in every fold below uses your rule.", "")
