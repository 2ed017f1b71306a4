import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from symviz import groups


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 9), st.sampled_from(["C", "D"]))
def test_planar_groups_are_groups_and_matrices_represent_them(n, kind):
    G = groups.CyclicGroup(n) if kind == "C" else groups.DihedralGroup(n)
    assert G.order == (n if kind == "C" else 2 * n)
    for a in G.elements:
        assert G.compose(a, G.inverse(a)) == 0
        for b in G.elements:
            ab = G.compose(a, b)
            assert torch.allclose(G.matrix(ab), G.matrix(a) @ G.matrix(b), atol=1e-12)
            h = torch.randn(n, 2, dtype=torch.float64)
            assert torch.equal(G.act_vertices(ab, h), G.act_vertices(a, G.act_vertices(b, h)))


@pytest.mark.parametrize("n", [3, 4, 6])
def test_vertex_permutation_matches_moving_the_polygon(n):
    from symviz.equivariance import regular_polygon

    P = regular_polygon(n)
    G = groups.DihedralGroup(n)
    for g in G.elements:
        assert torch.allclose(G.act_points(g, P)[G.vertex_permutation(g)], P, atol=1e-12)


def test_symmetric_group_composition_is_associative_and_acts():
    S = groups.SymmetricGroup(4)
    assert S.order == 24
    h = torch.randn(4, 3)
    for a in range(0, 24, 5):
        for b in range(0, 24, 7):
            assert torch.equal(S.act_vertices(S.compose(a, b), h), S.act_vertices(a, S.act_vertices(b, h)))


def test_rot90_is_exact_and_interpolated_rotation_agrees_at_90_degrees():
    img = torch.rand(2, 9, 9, dtype=torch.float64)
    assert torch.equal(groups.rot90_image(groups.rot90_image(img, 1), 3), img)
    assert torch.allclose(groups.rotate_image(img, math.pi / 2), groups.rot90_image(img, 1), atol=1e-9)
    C4 = groups.CyclicGroup(4)
    assert torch.equal(C4.act_image(2, img), torch.rot90(img, 2, dims=(-2, -1)))
    # C8 is interpolated, hence not exact: two 45° steps differ from one 90° step
    C8 = groups.CyclicGroup(8)
    assert not torch.allclose(C8.act_image(1, C8.act_image(1, img)), C8.act_image(2, img), atol=1e-3)


def test_random_rotations_and_orthogonal_matrices():
    gen = torch.Generator().manual_seed(0)
    R = groups.random_rotation(50, generator=gen)
    eye = torch.eye(3, dtype=torch.float64).expand(50, 3, 3)
    assert torch.allclose(R @ R.transpose(1, 2), eye, atol=1e-12)
    assert torch.allclose(torch.det(R), torch.ones(50, dtype=torch.float64))
    Q = groups.random_orthogonal(200, generator=gen)
    dets = torch.det(Q)
    assert torch.allclose(dets.abs(), torch.ones(200, dtype=torch.float64))
    assert (dets < 0).any() and (dets > 0).any()


def test_wigner_D_is_a_representation_in_float64():
    gen = torch.Generator().manual_seed(1)
    R1, R2 = groups.random_rotation(generator=gen), groups.random_rotation(generator=gen)
    for l in range(4):
        D = groups.wigner_D(l, R1 @ R2)
        assert torch.allclose(D, groups.wigner_D(l, R1) @ groups.wigner_D(l, R2), atol=1e-10)
    assert torch.allclose(groups.wigner_D(1, R1), R1, atol=1e-10)


@pytest.mark.parametrize("bad", [0, -2, 2.5, "4", True])
def test_bad_group_sizes_are_rejected_with_a_clear_message(bad):
    with pytest.raises(ValueError, match="positive integer"):
        groups.CyclicGroup(bad)


def test_bad_elements_and_shapes_are_rejected():
    C4 = groups.CyclicGroup(4)
    with pytest.raises(ValueError, match="integers 0..3"):
        C4.compose(0, 4)
    with pytest.raises(ValueError, match="acts on 4 vertices"):
        C4.act_vertices(1, torch.zeros(5, 2))
    with pytest.raises(ValueError, match="1..7"):
        groups.SymmetricGroup(9)
    with pytest.raises(ValueError, match="does not match"):
        groups.act_points(torch.eye(3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="one angle per image"):
        groups.rotate_image(torch.zeros(3, 8, 8), torch.zeros(2))
