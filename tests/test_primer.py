"""Chapter 00's models keep exactly the symmetries the primer says they have, and its exercise check works."""
import pytest
import torch

from symviz import report
from symviz.chapters.ch00_symmetry_primer.checks import check_equivariant_basis, check_permutation_equivariant_layer
from symviz.chapters.ch00_symmetry_primer.experiments import (equivariant_basis_from_generators, generator_matrices,
                                                              permutation_generators)
from symviz.equivariance import check_equivariance
from symviz.groups import DihedralGroup, SymmetricGroup
from symviz.nn.primer import DeepSets, DeepSetsLayer, E3PointNet, EquivariantBasisLayer, SetMLP
from symviz.reps import Representation, equivariant_basis


def test_symmetries_of_the_three_models():
    torch.manual_seed(0)
    x = torch.randn(6, 3)
    e3 = E3PointNet().double()
    assert check_equivariance(e3, (x,), ("point",), ("scalar", "vector"), group="E(3)xS_n").max_error < 1e-8
    out = e3(x.double())                                   # a named tuple: scalar (1,), vector (3,) for one set
    assert out.scalar.shape == (1,) and out.vector.shape == (3,) and torch.equal(out[1], out.vector)
    assert e3(x.double()[None]).vector.shape == (1, 3)
    assert check_equivariance(e3, (x,), ("point",), ("scalar", "scalar"), group="SO(3)").max_error > 1e-3  # the vector turns
    ds = DeepSets().double()
    assert check_equivariance(ds, (x,), ("point",), "scalar", group="S_n").max_error < 1e-12
    assert check_equivariance(ds, (x,), ("point",), "scalar", group="SO(3)").max_error > 1e-3
    mlp = SetMLP(6).double()
    assert check_equivariance(mlp, (x,), ("point",), "scalar", group="S_n").max_error > 1e-3
    layer = DeepSetsLayer(3, 5).double()
    assert check_equivariance(layer, (x,), ("node_scalar",), "node_scalar", group="S_n").max_error < 1e-12


def test_exercise_check_accepts_the_solution_and_rejects_wrong_answers():
    assert check_permutation_equivariant_layer(DeepSetsLayer)
    assert not check_permutation_equivariant_layer(lambda a, b: torch.nn.Linear(a, b))        # no mixing

    class Leaky(torch.nn.Module):
        def __init__(self, a, b):
            super().__init__()
            self.lin = torch.nn.Linear(a, b)

        def forward(self, h):
            return self.lin(h) + h[:, :1, :1]          # uses node 0 specially: not equivariant

    res = check_permutation_equivariant_layer(Leaky)
    assert not res and "not permutation-equivariant" in res.message
    res = check_permutation_equivariant_layer(lambda a, b: torch.nn.Linear(a + 1, b))
    assert not res and "failed" in res.message


def test_set_mlp_rejects_wrong_set_size():
    with pytest.raises(ValueError, match="sets of 6 points"):
        SetMLP(6)(torch.randn(5, 3))


# ---------------------------------------------------------------------------------------------- the exercise

def _null_space(C, do, di, tol=1e-9):
    _, S, Vh = torch.linalg.svd(C, full_matrices=True)
    s = torch.zeros(Vh.shape[0], dtype=C.dtype)
    s[:S.numel()] = S
    return Vh[s <= tol * max(float(S.max()), 1.0)].reshape(-1, do, di)


def _constraint(A, B, transpose=True):
    do, di = A.shape[0], B.shape[0]
    return (torch.kron(A, torch.eye(di, dtype=A.dtype))
            - torch.kron(torch.eye(do, dtype=A.dtype), (B.T if transpose else B).contiguous()))


def _solve(gens_in, gens_out, transpose=True, first_only=False):
    pairs = list(zip(gens_out, gens_in))[:1 if first_only else None]
    C = torch.cat([_constraint(A, B, transpose) for A, B in pairs])
    return _null_space(C, gens_out[0].shape[0], gens_in[0].shape[0])


def _row_space(gi, go):                                     # the largest singular vectors instead of the null space
    C = torch.cat([_constraint(A, B) for A, B in zip(go, gi)])
    K = _solve(gi, go).shape[0]
    return torch.linalg.svd(C, full_matrices=True)[2][:K].reshape(K, go[0].shape[0], gi[0].shape[0])


def _template(gens_in, gens_out):
    raise NotImplementedError("solve_equivariant_basis: build the stacked constraints and return their null space")


WRONG_BASES = {
    "equivariant only on the first generator": (lambda gi, go: _solve(gi, go, first_only=True), "not equivariant under"),
    "transposed action (I ⊗ B instead of I ⊗ Bᵀ)": (lambda gi, go: _solve(gi, go, transpose=False), "not equivariant under"),
    "a dimension missing": (lambda gi, go: _solve(gi, go)[:-1], "independent equivariant maps, your basis has"),
    "not normalised": (lambda gi, go: 2 * _solve(gi, go), "not orthonormal"),
    "spanning but not orthogonal": (lambda gi, go: (lambda B: torch.cat([B[:1], B[1:] + B[:1]]))(_solve(gi, go)),
                                    "not orthonormal"),
    "column-major reshape": (lambda gi, go: (lambda B: B.reshape(B.shape[0], B.shape[2], B.shape[1]).transpose(1, 2))(
        _solve(gi, go)), "not equivariant under"),
    "row space instead of null space": (_row_space, "not equivariant under"),
    "(d_in, d_out) shape": (lambda gi, go: _solve(gi, go).transpose(1, 2), "expected a basis of shape"),
    "the template": (_template, "NotImplementedError"),
}


def test_the_reference_and_a_correct_solution_pass_the_check():
    assert check_equivariant_basis(equivariant_basis_from_generators)
    assert check_equivariant_basis(_solve)
    assert check_equivariant_basis(lambda gi, go: _solve(go, gi).transpose(1, 2))   # W ρ_in = ρ_out W, transposed: also right


@pytest.mark.parametrize("wrong", list(WRONG_BASES), ids=list(WRONG_BASES))
def test_the_check_rejects_wrong_bases_with_a_clear_message(wrong):
    fn, message = WRONG_BASES[wrong]
    res = check_equivariant_basis(fn)
    assert not res and message in res.message


def test_the_template_goes_through_accept_to_the_reference(monkeypatch):
    monkeypatch.delenv("SYMVIZ_SOLUTIONS", raising=False)
    accepted = report.accept("equivariant basis (test)", _template, check_equivariant_basis,
                             reference=equivariant_basis_from_generators, solution=_solve)
    assert accepted.source == "reference" and not accepted.passed
    gens = permutation_generators(5)
    assert accepted(gens, gens).shape == (2, 5, 5)
    monkeypatch.setenv("SYMVIZ_SOLUTIONS", "1")          # under `symviz run` the notebook's solution is used
    accepted = report.accept("equivariant basis (test)", _template, check_equivariant_basis,
                             reference=equivariant_basis_from_generators, solution=_solve)
    assert accepted.source == "solution"


@pytest.mark.parametrize("G", [SymmetricGroup(5), DihedralGroup(7)])
def test_reference_solver_spans_what_reps_equivariant_basis_spans(G):
    nodes, reg = Representation.from_group_vertices(G), Representation.regular(G)
    for ri, ro in [(nodes, nodes), (nodes, reg), (reg, nodes)]:
        B = equivariant_basis_from_generators(*generator_matrices(ri, ro))
        R = equivariant_basis(ri, ro)
        assert B.shape == R.shape
        flat = B.reshape(len(B), -1)
        assert torch.allclose(flat @ flat.T, torch.eye(len(B), dtype=torch.float64), atol=1e-10)
        proj = R.reshape(len(R), -1) @ flat.T @ flat          # every reference map lies in the span
        assert torch.allclose(proj, R.reshape(len(R), -1), atol=1e-9)


def test_permutation_generators_match_symmetric_group():
    S5 = SymmetricGroup(5)
    rep = Representation.from_group_vertices(S5)
    gens_in, _ = generator_matrices(rep, rep)
    mine = permutation_generators(5)
    # the same two permutations (SymmetricGroup's generators, in gather convention)
    assert {tuple(m.argmax(1).tolist()) for m in mine} == {(1, 0, 2, 3, 4), (1, 2, 3, 4, 0)}
    for m in mine:
        assert any(torch.equal(m, r) for r in rep.matrices)
    assert equivariant_basis_from_generators(permutation_generators(8), permutation_generators(8)).shape == (2, 8, 8)


def test_reference_solver_rejects_bad_generators():
    with pytest.raises(ValueError, match="same generators"):
        equivariant_basis_from_generators(permutation_generators(3), permutation_generators(3)[:1])
    with pytest.raises(ValueError, match="list of square matrices"):
        equivariant_basis_from_generators(torch.eye(3), torch.eye(3))
    with pytest.raises(ValueError, match=r"\(3, 3\) matrix"):
        equivariant_basis_from_generators([torch.eye(3), torch.eye(2)], [torch.eye(3), torch.eye(3)])
    with pytest.raises(ValueError, match="n must be an integer >= 2"):
        permutation_generators(1)


def test_basis_layer_and_deepsets_built_from_a_solved_basis():
    torch.manual_seed(0)
    gens = permutation_generators(6)
    basis = equivariant_basis_from_generators(gens, gens)
    assert check_permutation_equivariant_layer(lambda a, b: EquivariantBasisLayer(a, b, basis))
    x = torch.randn(6, 3, dtype=torch.float64)
    ds = DeepSets(node_basis=basis).double()
    assert check_equivariance(ds, (x,), ("point",), "scalar", group="S_n").max_error < 1e-12
    # nodes exchange information before the sum: the per-node features see the set's mean
    layer = EquivariantBasisLayer(3, 4, basis).double()
    h = torch.randn(1, 6, 3, dtype=torch.float64)
    h2 = h.clone()
    h2[:, 1:] += 1.0
    assert (layer(h2)[0, 0] - layer(h)[0, 0]).abs().max() > 1e-6
    # any basis of the same span gives the same function class; the initial scale does not depend on it
    q = torch.linalg.qr(torch.randn(2, 2, dtype=torch.float64)).Q
    rotated = torch.einsum("kl,lij->kij", q, basis)
    assert EquivariantBasisLayer(3, 4, rotated).basis.reshape(2, -1).norm(dim=1).allclose(torch.full((2,), 6 ** 0.5, dtype=torch.float64))
    with pytest.raises(ValueError, match="acts on 6 nodes"):
        ds(torch.randn(5, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"basis must be \(K, n, n\)"):
        EquivariantBasisLayer(3, 4, torch.eye(6))
    with pytest.raises(ValueError, match="non-zero"):
        EquivariantBasisLayer(3, 4, torch.zeros(1, 6, 6))
