"""Chapter 00's models keep exactly the symmetries the primer says they have, and its exercise check works."""
import torch

from symviz.chapters.ch00_symmetry_primer.checks import check_permutation_equivariant_layer
from symviz.equivariance import check_equivariance
from symviz.nn.primer import DeepSets, DeepSetsLayer, E3PointNet, SetMLP


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
    import pytest

    with pytest.raises(ValueError, match="sets of 6 points"):
        SetMLP(6)(torch.randn(5, 3))
