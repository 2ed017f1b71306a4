"""Automatic checks behind the learners' "build it" exercises.

Each ``check_*`` function takes the learner's implementation, compares it with the tested reference
in symviz on random inputs, prints a friendly verdict and returns a :class:`CheckResult` (truthy when
correct). It never raises on a wrong answer: the message says what differed.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CheckResult", "verdict"]


@dataclass
class CheckResult:
    passed: bool
    message: str

    def __bool__(self) -> bool:
        return self.passed

    def _repr_markdown_(self) -> str:
        return ("✅ " if self.passed else "❌ ") + self.message

    def __repr__(self) -> str:
        return ("PASSED: " if self.passed else "NOT YET: ") + self.message


def verdict(passed: bool, ok: str, wrong: str) -> CheckResult:
    """Build, print and return a :class:`CheckResult`."""
    result = CheckResult(bool(passed), ok if passed else wrong)
    print(repr(result))
    return result


# ---- chapter 00: symmetry primer ---------------------------------------------------------------

def check_permutation_equivariant_layer(make_layer, d_in: int = 3, d_out: int = 4, n: int = 6, trials: int = 5) -> CheckResult:
    """Chapter 00 exercise: ``make_layer(d_in, d_out)`` must return a module mapping ``h: (batch, n, d_in)``
    to ``(batch, n, d_out)`` that is permutation-equivariant (``f(h[:, p]) == f(h)[:, p]``) and not
    trivially so (it must mix information across nodes, as a DeepSets layer does)."""
    import torch

    from .equivariance import check_equivariance

    try:
        layer = make_layer(d_in, d_out).double()
        h = torch.randn(2, n, d_in, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        out = layer(h)
    except Exception as err:  # the learner's code failed: say how
        return verdict(False, "", f"calling your layer failed: {type(err).__name__}: {err}")
    if tuple(out.shape) != (2, n, d_out):
        return verdict(False, "", f"expected output shape (batch, n, d_out) = (2, {n}, {d_out}), got {tuple(out.shape)}")
    rep = check_equivariance(layer, (h,), ("node_scalar",), "node_scalar", group="S_n", trials=trials)
    if rep.max_error > 1e-9:
        return verdict(False, "", f"not permutation-equivariant: relative error {rep.max_error:.2e} "
                                  "(permuting the nodes of the input must permute the output rows the same way)")
    h2 = h.clone()
    h2[:, 1:] += 1.0  # change every node but node 0
    with torch.no_grad():
        mixes = float((layer(h2)[:, 0] - out[:, 0]).abs().max()) > 1e-9
    if not mixes:
        return verdict(False, "", "equivariant, but node 0's output ignores the other nodes: add a pooled term "
                                  "(e.g. B · mean_j h_j) so that nodes can exchange information")
    return verdict(True, f"permutation-equivariant (error {rep.max_error:.1e}) and mixes information across nodes. Well done!", "")


__all__ += ["check_permutation_equivariant_layer"]


# ---- Chapter 01: symmetry breaking (stabilizer and relaxed-equivariance exercises) ----

def _ch01_cases():
    """Inputs for the chapter 01 checks: D6 on the hexagon's nodes, with several stabilizers."""
    import torch

    from .groups import DihedralGroup
    from .models.emlp import Representation

    D6 = DihedralGroup(6)
    nodes = Representation.from_group_vertices(D6)
    xs = [torch.ones(6, dtype=torch.float64),                                      # stabilizer: all of D6
          torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 0.0], dtype=torch.float64),       # order 6
          torch.tensor([2.0, 0.0, 0.0, 2.0, 0.0, 0.0], dtype=torch.float64),       # order 4
          torch.tensor([3.0, 1.0, 0.0, 0.0, 0.0, 1.0], dtype=torch.float64),       # a mirror through node 0
          torch.tensor([0.3, -1.2, 0.5, 2.0, 0.1, -0.4], dtype=torch.float64)]     # trivial
    return D6, nodes, xs


def check_stabilizer(stabilizer_fn) -> CheckResult:
    """Check ``stabilizer_fn(x, rep) -> list of group elements g with rep.act(g, x) == x``.

    ``x: (d,)`` one input, ``rep`` a :class:`symviz.models.emlp.Representation` (``rep.group.elements``,
    ``rep.act(g, x)``), compared with :func:`symviz.models.emlp.stabilizer_elements` on inputs of the
    hexagon (D6) with stabilizers of order 12, 6, 4, 2 and 1.
    """
    from .models.emlp import stabilizer_elements

    _, nodes, xs = _ch01_cases()
    for x in xs:
        want = sorted(stabilizer_elements(x, nodes))
        try:
            got = sorted(int(g) for g in stabilizer_fn(x.clone(), nodes))
        except Exception as exc:  # the learner's code may fail in any way: report it, do not raise
            return verdict(False, "", f"your function raised {type(exc).__name__}: {exc}")
        if got != want:
            return verdict(False, "", f"for x = {x.tolist()} the stabilizer is {want} ({len(want)} elements), "
                                      f"you returned {got}. Keep every g with rep.act(g, x) equal to x (use torch.allclose).")
    return verdict(True, "your stabilizers match on inputs with stabilizers of order 12, 6, 4, 2 and 1.", "")


def check_relaxed_violation(violation_fn) -> CheckResult:
    """Check ``violation_fn(f, x, rep_in, rep_out) -> float``, the relaxed-equivariance violation

    ``max_g min_{h ∈ G_x} ‖f(g·x) − ρ_out(g·h) f(x)‖ / ‖f(x)‖`` of ``f: (B, d_in) -> (B, d_out)`` at
    one input ``x: (d_in,)`` (row layout: ``rep.act(g, v)`` applies ``ρ(g)``). Compared with
    :func:`symviz.models.emlp.relaxed_equivariance_violation` on an equivariant E-MLP (0), a
    relaxed-equivariant canonicalized model (0 although it is not equivariant) and a plain linear map
    (not relaxed-equivariant).
    """
    import torch

    from .models.emlp import EMLP, CanonicalRelaxed, equivariance_violation, relaxed_equivariance_violation

    _, nodes, xs = _ch01_cases()
    torch.manual_seed(0)
    emlp = EMLP(nodes, nodes, hidden=2, depth=1).double()
    with torch.no_grad():  # non-zero biases, so that the outputs are never exactly zero
        for b in emlp.parameters():
            if b.ndim == 2:
                b.normal_()
    models = {
        "an equivariant E-MLP": emlp,
        "a relaxed-equivariant canonicalized model": CanonicalRelaxed(torch.nn.Linear(6, 6).double(), nodes, nodes),
        "a plain (non-equivariant) linear layer": torch.nn.Linear(6, 6).double(),
    }
    for name, f in models.items():
        for x in xs[:4]:
            want = relaxed_equivariance_violation(f, x[None], nodes, nodes)
            try:
                got = float(violation_fn(f, x.clone(), nodes, nodes))
            except Exception as exc:
                return verdict(False, "", f"your function raised {type(exc).__name__}: {exc}")
            zero_ok = (got < 1e-6) == (want < 1e-6)
            if not zero_ok or (want >= 1e-6 and abs(got - want) > 0.05 * want):
                hint = ""
                if got > 1e-6 > want and equivariance_violation(f, x[None], nodes, nodes) > 1e-6:
                    hint = (" This model breaks the symmetry of x in an allowed way: f(g·x) only has to equal "
                            "ρ_out(g·h) f(x) for SOME h in the stabilizer G_x. Take the minimum over h.")
                elif got < 1e-6 <= want:
                    hint = " Your function misses a real violation: compare f(g·x) with ρ_out(g·h) f(x) for every g."
                return verdict(False, "", f"on {name} at x = {x.tolist()} the relaxed violation is {want:.3g}, "
                                          f"you returned {got:.3g}.{hint}")
    return verdict(True, "your relaxed-equivariance violation matches on equivariant, relaxed-equivariant and "
                         "non-equivariant models.", "")


__all__ += ["check_stabilizer", "check_relaxed_violation"]


# --- chapter 07: spectral decoupling (Pezeshki et al., NeurIPS 2021) -----------------------------

def check_spectral_decoupling(sd_fn) -> CheckResult:
    """Check a learner's ``sd_fn(logits, lam)`` against :func:`symviz.losses.spectral_decoupling`.

    Expected: ``(lam / 2) * mean over the batch of ||logits_i||^2`` for ``(batch,)`` and
    ``(batch, classes)`` logits, differentiable (compared value and gradient, float64).
    """
    import torch

    from symviz.losses import spectral_decoupling

    g = torch.Generator().manual_seed(7)
    cases = [(torch.randn(16, generator=g, dtype=torch.float64), 0.5),
             (torch.randn(9, 3, generator=g, dtype=torch.float64), 0.1),
             (3.0 * torch.randn(5, 10, generator=g, dtype=torch.float64), 2.0),
             (torch.randn(8, generator=g, dtype=torch.float64), 0.0)]
    for logits, lam in cases:
        want = spectral_decoupling(logits, lam)
        z = logits.clone().requires_grad_(True)
        try:
            got = sd_fn(z, lam)
        except Exception as exc:  # the learner's code may fail in any way: report it, never raise
            return verdict(False, "", f"your function raised {type(exc).__name__}: {exc}")
        if not torch.is_tensor(got) or got.numel() != 1:
            return verdict(False, "", f"expected a scalar tensor, got {type(got).__name__} "
                                      f"{tuple(got.shape) if torch.is_tensor(got) else ''}")
        shape = tuple(logits.shape)
        if not torch.allclose(got.double().reshape(()), want, rtol=1e-6, atol=1e-9):
            ratio = float(got.detach()) / float(want) if float(want) != 0 else float("nan")
            hint = ""
            if abs(ratio - 2.0) < 1e-6:
                hint = " It is twice the expected value: did you forget the 1/2 in (lam / 2)?"
            elif logits.ndim == 2 and abs(ratio - 1.0 / shape[1]) < 1e-6:
                hint = " For (batch, classes) logits, sum over classes and average over the batch."
            elif lam == 0.0:
                hint = " With lam = 0 the penalty must be 0."
            return verdict(False, "", f"for logits of shape {shape} and lam={lam} the penalty is {float(want):.6g}, "
                                      f"you returned {float(got.detach()):.6g}.{hint}")
        if not got.requires_grad:
            return verdict(False, "", "your penalty is not differentiable: keep it a torch expression of logits "
                                      "(no .item(), numpy or detach)")
        (grad,) = torch.autograd.grad(got, z)
        if not torch.allclose(grad.double(), lam * logits / logits.shape[0], rtol=1e-6, atol=1e-12):
            return verdict(False, "", f"the value is right but the gradient for shape {shape} is not lam * logits / batch")
    return verdict(True, "your spectral decoupling penalty matches (lam/2)·mean ||ŷ||² in value and gradient, "
                         "for binary and multi-class logits.", "")


__all__ += ["check_spectral_decoupling"]


# ---- chapter 02: learned canonicalization -------------------------------------------------------

def check_gram_schmidt_frame(frame_fn) -> "CheckResult":
    """Check a learner's ``frame_fn(v1, v2) -> (B, 3, 3)`` SO(3) frame from two vectors ``(B, 3)``.

    Expected (Kaba et al., ICML 2023, §3.3): Gram-Schmidt with the axes as *columns*:
    ``e1 = v1/|v1|``, ``e2 = normalize(v2 − ⟨v2,e1⟩e1)``, ``e3 = e1 × e2``. Checks, in float64, that the
    frames are orthonormal with det +1, equal the reference :func:`symviz.models.canonical.gram_schmidt`,
    and are equivariant: ``frame_fn(v1 Qᵀ, v2 Qᵀ) = Q · frame_fn(v1, v2)`` for random rotations ``Q``
    (vectors are row vectors, rotated as ``v @ Q.T``).
    """
    import torch

    from .groups import random_rotation
    from .models.canonical import gram_schmidt

    g = torch.Generator().manual_seed(7)
    v1 = torch.randn(16, 3, dtype=torch.float64, generator=g)
    v2 = torch.randn(16, 3, dtype=torch.float64, generator=g)
    try:
        F = frame_fn(v1, v2)
    except Exception as exc:  # the learner's code may fail in any way: report it, never raise
        return verdict(False, "", f"your function raised {type(exc).__name__}: {exc}")
    if not torch.is_tensor(F) or tuple(F.shape) != (16, 3, 3):
        return verdict(False, "", f"expected frames of shape (B, 3, 3) = (16, 3, 3), got "
                                  f"{tuple(F.shape) if torch.is_tensor(F) else type(F).__name__}")
    F = F.to(torch.float64)
    eye = torch.eye(3, dtype=torch.float64)
    if not torch.allclose(F.transpose(-1, -2) @ F, eye.expand(16, 3, 3), atol=1e-8):
        return verdict(False, "", "your frames are not orthonormal (Fᵀ F ≠ I): normalise each axis and remove "
                                  "from e2 its component along e1")
    det = torch.det(F)
    if not torch.allclose(det, torch.ones_like(det), atol=1e-8):
        return verdict(False, "", f"some frames have det = {float(det.min()):+.3f}: for SO(3) take e3 = e1 × e2")
    want = gram_schmidt(v1, v2)
    if not torch.allclose(F, want, atol=1e-8):
        if torch.allclose(F.transpose(-1, -2), want, atol=1e-8):
            return verdict(False, "", "your axes are the rows of the matrix: stack them as columns (dim=-1)")
        return verdict(False, "", "orthonormal with det +1, but not the Gram-Schmidt frame of (v1, v2): e1 must "
                                  "point along v1 and e2 lie in the plane of v1 and v2, on v2's side")
    worst = 0.0
    for Q in random_rotation(5, dtype=torch.float64, generator=g):
        moved = frame_fn(v1 @ Q.T, v2 @ Q.T).to(torch.float64)
        worst = max(worst, float((moved - Q @ F).abs().max()))
    if worst > 1e-8:
        return verdict(False, "", f"not equivariant: frame_fn(v Qᵀ) differs from Q·frame_fn(v) by {worst:.2e}")
    return verdict(True, f"your Gram-Schmidt frame is orthonormal, has det +1, matches the reference and is "
                         f"SO(3)-equivariant (max error {worst:.1e}).", "")


__all__ += ["check_gram_schmidt_frame"]


# --- chapter 03: the canonicalization prior (Mondal et al., NeurIPS 2023) ---------------------------

def check_canonicalization_prior(prior_fn, check_continuous: bool = True) -> CheckResult:
    """Check the learner's ``prior_fn(scores) -> scalar`` against :func:`symviz.losses.canonicalization_prior`.

    Discrete case: ``scores: (B, n)`` logits, the mean cross-entropy towards element 0 (the identity),
    value and gradient. Continuous case (when ``check_continuous``): ``scores: (B, d, d)`` matrices,
    the mean squared Frobenius distance to the identity matrix.
    """
    import torch

    from .losses import canonicalization_prior

    g = torch.Generator().manual_seed(3)
    cases = [("C4 logits (8, 4)", torch.randn(8, 4, generator=g, dtype=torch.float64) * 3),
             ("C8 logits (5, 8)", torch.randn(5, 8, generator=g, dtype=torch.float64))]
    if check_continuous:
        cases.append(("2x2 matrices (6, 2, 2)", torch.randn(6, 2, 2, generator=g, dtype=torch.float64)))
        cases.append(("3x3 matrices (4, 3, 3)", torch.randn(4, 3, 3, generator=g, dtype=torch.float64)))
    for name, s in cases:
        want = canonicalization_prior(s)
        s1 = s.clone().requires_grad_(True)
        try:
            got = prior_fn(s1)
        except Exception as exc:  # the learner's code may fail in any way: report it, never raise
            return verdict(False, "", f"on {name} your function raised {type(exc).__name__}: {exc}")
        if not torch.is_tensor(got) or got.numel() != 1:
            return verdict(False, "", f"on {name}: expected a scalar tensor (the batch mean), got "
                                      f"{tuple(got.shape) if torch.is_tensor(got) else type(got).__name__}")
        if not torch.allclose(got.reshape(()).to(torch.float64), want, rtol=1e-6, atol=1e-8):
            hint = ("cross-entropy of softmax(scores) towards index 0, averaged over the batch"
                    if s.ndim == 2 else "||R - I||_F^2 (squared, summed over entries), averaged over the batch")
            return verdict(False, "", f"on {name}: got {float(got.detach()):.6f}, expected {float(want):.6f}. "
                                      f"Hint: {hint}.")
        if not got.requires_grad:
            return verdict(False, "", f"on {name}: the value is right but carries no gradient; keep it a torch "
                                      "expression of scores (no .item(), numpy or argmax)")
        (grad,) = torch.autograd.grad(got.reshape(()), s1)
        s2 = s.clone().requires_grad_(True)
        (want_grad,) = torch.autograd.grad(canonicalization_prior(s2), s2)
        if not torch.allclose(grad.to(torch.float64), want_grad, rtol=1e-6, atol=1e-9):
            return verdict(False, "", f"on {name}: right value but wrong gradient (max diff "
                                      f"{float((grad - want_grad).abs().max()):.2e})")
    what = "discrete (cross-entropy to the identity) and continuous (distance to I)" if check_continuous else \
        "discrete (cross-entropy to the identity)"
    return verdict(True, f"your canonicalization prior matches the reference in value and gradient, {what}.", "")


__all__ += ["check_canonicalization_prior"]


# --- chapter 05 (crystal equivariance): orbits of site pairs ------------------------------------------

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


__all__ += ["check_pair_orbits"]


# ---- chapter 04 (multichannel EGNN) ----------------------------------------------------------------

def check_mc_coord_update(coord_update_fn) -> CheckResult:
    """Check a learner's multichannel coordinate update ``coord_update_fn(x, w) -> x'`` (chapter 04).

    ``x: (B, n, 3, C)`` position channels (points are row vectors; a rotation acts as ``R @ x_i``
    on each ``3 x C`` block), ``w: (B, n, n, C, C)`` invariant mixing matrices. It must equal
    ``x_i + 1/(n-1) sum_{j != i} (x_i - x_j) w_ij`` (:func:`symviz.models.egnn.multichannel_coord_update`)
    and be E(3)-equivariant: rotating/reflecting and translating ``x`` moves the output the same way.
    """
    import torch

    from .groups import random_orthogonal
    from .models.egnn import multichannel_coord_update

    gen = torch.Generator().manual_seed(4)
    for B, n, C in ((2, 5, 1), (3, 4, 3)):
        x = torch.randn(B, n, 3, C, dtype=torch.float64, generator=gen)
        w = torch.randn(B, n, n, C, C, dtype=torch.float64, generator=gen)
        want = multichannel_coord_update(x, w)
        try:
            got = coord_update_fn(x.clone(), w.clone())
        except Exception as exc:  # the learner's code may fail in any way: report it, never raise
            return verdict(False, "", f"with C={C} channels your function raised {type(exc).__name__}: {exc}")
        if not torch.is_tensor(got) or got.shape != want.shape:
            return verdict(False, "", f"with C={C}: expected a tensor of shape {tuple(want.shape)} (B, n, 3, C), "
                                      f"got {getattr(got, 'shape', type(got).__name__)}")
        got = got.to(torch.float64)
        if torch.allclose(got, x):
            return verdict(False, "", "your function returns x unchanged: add the sum over neighbours j of (x_i - x_j) @ w_ij.")
        R = random_orthogonal(dtype=torch.float64, generator=gen)
        t = torch.randn(3, 1, dtype=torch.float64, generator=gen)
        moved = coord_update_fn(torch.einsum("de,bnec->bndc", R, x) + t, w.clone()).to(torch.float64)
        eq_err = float((moved - (torch.einsum("de,bnec->bndc", R, got) + t)).norm() / got.norm())
        if eq_err > 1e-8:
            return verdict(False, "", f"with C={C} the update is not E(3)-equivariant (relative error {eq_err:.2g}): "
                                      "use only differences x_i - x_j, never x_j alone, and keep the residual x_i + ...")
        err = float((got - want).norm() / want.norm())
        if err > 1e-8:
            mean_hint = " (did you divide by n - 1, the number of neighbours?)" if C == 1 else \
                " (mix channels as (x_i - x_j) @ w_ij: a (3, C) by (C, C) product, summed over j != i, divided by n - 1)"
            return verdict(False, "", f"equivariant, but with C={C} it differs from the reference by {err:.2g} (relative){mean_hint}.")
    return verdict(True, "your multichannel update matches the reference and is E(3)-equivariant for C = 1 and C = 3.", "")


__all__ += ["check_mc_coord_update"]


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


__all__ += ["check_composition_featurizer"]
