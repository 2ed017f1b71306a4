import pytest
import torch

from symviz import equivariance as eq
from symviz.groups import CyclicGroup, DihedralGroup


def test_equivariance_error_zero_for_equivariant_and_positive_otherwise():
    x = torch.randn(6, 3, dtype=torch.float64)
    p = torch.randperm(6)
    perm = lambda t: t[p]
    assert eq.equivariance_error(lambda t: t * 3 + 1, x, perm, perm) == 0.0
    assert eq.equivariance_error(lambda t: t.cumsum(0), x, perm, perm) > 1e-2
    assert eq.invariance_error(lambda t: t.sum(0), x, perm) < 1e-14


@pytest.mark.parametrize("group", ["SO(3)", "O(3)", "E(3)", "SE(3)", "E(3)xS_n", "O(3)xS_n"])
def test_centroid_distances_are_invariant_and_centred_points_equivariant(group):
    x = torch.randn(7, 3)
    rep = eq.check_equivariance(lambda x: (x - x.mean(0)).norm(dim=-1).sort().values, (x,), ("point",), "scalar", group=group)
    assert rep.max_error < 1e-12
    rep = eq.check_equivariance(lambda x: x - x.mean(0), (x,), ("point",), "node_vector", group=group)
    assert rep.max_error < 1e-12


def test_non_equivariant_function_is_caught():
    x = torch.randn(5, 3)
    rep = eq.check_equivariance(lambda x: x[:, :1].expand(-1, 3) * 1.0, (x,), ("node_vector",), "node_vector", group="SO(3)")
    assert rep.max_error > 1e-2
    with pytest.raises(AssertionError, match="row vectors"):
        rep.assert_below(1e-6)


def test_translation_breaks_equivariance_of_uncentred_vectors():
    x = torch.randn(5, 3)
    assert eq.check_equivariance(lambda x: x.mean(0), (x,), ("point",), "vector", group="E(3)").max_error > 1e-3
    assert eq.check_equivariance(lambda x: x.mean(0), (x,), ("point",), "vector", group="O(3)").max_error < 1e-12


def test_channels_matrix_and_adjacency_kinds():
    xc = torch.randn(5, 3, 4)
    f = lambda x: x - x.mean(0, keepdim=True)
    assert eq.check_equivariance(f, (xc,), ("point_channels",), "node_vector_channels", group="E(3)xS_n").max_error < 1e-12
    v = torch.randn(10, 3)
    assert eq.check_equivariance(lambda v: v.T @ v, (v,), ("vector",), "matrix", group="O(3)").max_error < 1e-12
    A = eq.cycle_graph(6)
    assert eq.check_equivariance(lambda A: A @ A, (A,), ("adjacency",), "adjacency", group="S_n").max_error < 1e-12


def test_stabilizers_of_symmetric_inputs():
    D6 = DihedralGroup(6)
    assert len(eq.stabilizer(torch.ones(6, 1), D6)) == 12
    assert len(eq.stabilizer(eq.regular_polygon(6), D6, D6.act_points, as_set=True)) == 12
    alt = torch.tensor([[1.0], [0.0]] * 3)
    assert eq.stabilizer(alt, D6) == [0, 2, 4, 6, 8, 10]
    one = torch.tensor([[1.0]] + [[0.0]] * 5)
    assert eq.stabilizer(one, D6) == [0, 6]            # identity and the reflection through vertex 0
    assert eq.stabilizer(one, CyclicGroup(6)) == [0]


def test_symmetric_molecules_have_their_point_group_symmetry():
    z, pos, pg = eq.symmetric_molecule("methane")
    assert pg == "Td" and pos.shape == (5, 3)
    # the tetrahedral H positions are permuted by a C3 rotation about (1,1,1)
    R = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    moved = pos @ R.T
    assert torch.cdist(moved, pos).min(1).values.max() < 1e-9


def test_bad_arguments_give_clear_errors():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="unknown group"):
        eq.check_equivariance(lambda x: x, (x,), ("point",), "point", group="SU(2)")
    with pytest.raises(ValueError, match="unknown kind"):
        eq.check_equivariance(lambda x: x, (x,), ("spinor",), "point")
    with pytest.raises(ValueError, match="one kind per argument"):
        eq.check_equivariance(lambda x: x, (x,), ("point", "scalar"), "point")
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        eq.check_equivariance(lambda x: x, (torch.randn(4, 2),), ("vector",), "vector")
    with pytest.raises(TypeError, match="FiniteGroup"):
        eq.stabilizer(x, "D4")
    with pytest.raises(ValueError, match="available"):
        eq.symmetric_molecule("unobtainium")


# ---------------------------------------------------------------------------------------------- relative_error

def test_relative_error_numerator_denominator_and_floors():
    d, r = torch.tensor([3e-7, 4e-7], dtype=torch.float64), torch.tensor([3.0, 4.0], dtype=torch.float64)
    assert float(eq.relative_error(d, r)) == pytest.approx(1e-7, rel=1e-12)           # ‖d‖ / ‖r‖, one item
    assert float(eq.relative_error(10 * d, 10 * r)) == pytest.approx(1e-7, rel=1e-12)   # scale-free
    # items along dim: each error uses its own reference, floored at 1e-3 of the batch's largest one
    d2 = torch.tensor([[1e-6, 0.0], [1e-6, 0.0], [1e-9, 0.0]], dtype=torch.float64)
    r2 = torch.tensor([[1.0, 0.0], [1e-2, 0.0], [1e-16, 0.0]], dtype=torch.float64)
    err = eq.relative_error(d2, r2, dim=-1)
    assert err.shape == (3,)
    assert err[0] == pytest.approx(1e-6, rel=1e-9) and err[1] == pytest.approx(1e-4, rel=1e-9)
    assert err[2] == pytest.approx(1e-9 / 1e-3, rel=1e-6)          # ~0 reference: measured against 1e-3 · 1.0
    assert float(eq.relative_error(d2, r2, dim=-1, scale=1e3)[2]) == pytest.approx(1e-9, rel=1e-6)
    # an all-zero reference gives ‖d‖ / EPS, never NaN
    assert float(eq.relative_error(torch.ones(2), torch.zeros(2))) == pytest.approx(2 ** 0.5 / eq.EPS, rel=1e-6)
    assert float(eq.relative_error(torch.zeros(2), torch.zeros(2))) == 0.0
    # extra leading axes of diff (one per group element) broadcast against the reference's items
    assert eq.relative_error(torch.ones(5, 3, 2), torch.ones(3, 2), dim=-1).shape == (5, 3)
    with pytest.raises(TypeError, match="tensors"):
        eq.relative_error([1.0], torch.ones(1))


def test_equivariance_error_is_relative_error_of_the_whole_output():
    x = torch.randn(4, 3, dtype=torch.float64)
    f, g = (lambda t: t ** 3), (lambda t: t.flip(0))
    d = f(g(x)) - g(f(x))
    assert eq.equivariance_error(f, x, g, g) == float(d.norm() / (g(f(x)).norm() + eq.EPS))
    assert eq.equivariance_error(f, x, g, g) == float(eq.relative_error(d, g(f(x))))


def test_rot90_invariance_error():
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    sorted_pixels = lambda t: t.flatten(1).sort(-1).values                      # C4-invariant
    assert eq.rot90_invariance_error(sorted_pixels, x) == 0.0
    assert eq.rot90_invariance_error(sorted_pixels, x[:, 0]) == 0.0            # (B, H, W) images too
    first_row = lambda t: t[..., 0, :].flatten(1)                                # not invariant: O(1) relative change
    assert eq.rot90_invariance_error(first_row, x) > 0.1
    scaled = lambda t: 1e6 * first_row(t)
    assert eq.rot90_invariance_error(scaled, x) == pytest.approx(eq.rot90_invariance_error(first_row, x), rel=1e-9)
    class SortedAfterDropout(torch.nn.Module):                                  # invariant in eval mode only
        def __init__(self):
            super().__init__()
            self.drop = torch.nn.Dropout(0.5)

        def forward(self, t):
            return sorted_pixels(self.drop(t))

    net = SortedAfterDropout().train()
    assert eq.rot90_invariance_error(net, x) == 0.0 and net.training           # measured in eval mode, mode restored
    with pytest.raises(ValueError, match="square images"):
        eq.rot90_invariance_error(sorted_pixels, torch.rand(2, 1, 8, 6))
    with pytest.raises(ValueError, match="square images"):
        eq.rot90_invariance_error(sorted_pixels, torch.rand(8, 8))
    with pytest.raises(TypeError, match="callable"):
        eq.rot90_invariance_error(None, x)
