"""The exercise checks of chapter 06 (screening materials for magnetic moments): each takes the learner's
implementation, compares it with the tested reference, prints a verdict and returns a
:class:`symviz.checks.CheckResult` (truthy when correct). A wrong answer never raises."""
from __future__ import annotations

from symviz.checks import verdict

__all__ = ['check_composition_featurizer']


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
