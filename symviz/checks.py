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
    models = {
        "an equivariant E-MLP": EMLP(nodes, nodes, hidden=2, depth=1).double(),
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
