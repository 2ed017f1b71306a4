"""Tests for chapter 05: space groups as site permutations, orbits, the alloy data and the crystal models."""
from __future__ import annotations

import copy
import dataclasses
import pickle

import numpy as np
import pytest
import torch

from symviz.data import crystals as C
from symviz.nn.crystal import (CrystalEquivariantNet, OccupancyMLP, OrbitCGCNN, OrbitLinear, SupercellCGCNN, orbit_basis, symmetry_errors)
from symviz.chapters.ch05_crystal_equivariance.experiments import alloy_mae, fit_alloy_model
from symviz.train import torch_threads


@pytest.fixture(scope="module")
def hcp():
    atoms = C.lattice_supercell("hcp", "Cu", size=(2, 2, 2))
    group = C.space_group(atoms, ignore_species=True)
    return atoms, group, C.site_permutations(atoms, group, ignore_species=True)


@pytest.fixture(scope="module")
def rutile():
    from pymatgen.core import Lattice, Structure

    return Structure.from_spacegroup("P4_2/mnm", Lattice.tetragonal(4.594, 2.959), ["Ti", "O"],
                                     [[0, 0, 0], [0.305, 0.305, 0]])


@pytest.fixture(scope="module")
def matbench_small():
    return C.load_matbench_dielectric(4, seed=0, max_sites=6)


def _find_op(group, R, t):
    for k in range(len(group)):
        dt = (group.translations[k] - t + 0.5) % 1 - 0.5
        if (group.rotations[k] == R).all() and np.allclose(dt, 0, atol=1e-6):
            return k
    raise AssertionError("composition of two operations is not in the group")


# ---------------------------------------------------------------------------------------------- groups

@pytest.mark.parametrize("lattice,size,number,order,n_pair_orbits", [
    ("fcc", (1, 1, 1), 225, 192, 2), ("bcc", (1, 1, 1), 229, 96, 2), ("hcp", (1, 1, 1), 194, 24, 2),
    ("fcc", (2, 2, 2), 225, 1536, 6), ("hcp", (3, 3, 2), 194, 432, 11),
])
def test_space_group_and_orbit_counts(lattice, size, number, order, n_pair_orbits):
    atoms = C.lattice_supercell(lattice, "Cu", size=size)
    g = C.space_group(atoms)
    assert (g.number, len(g)) == (number, order)
    perms = C.site_permutations(atoms, g)
    assert perms.shape == (order, len(atoms))
    assert C.pair_orbits(perms).max() + 1 == n_pair_orbits
    assert C.site_orbits(perms).max() == 0  # one site orbit: these lattices are transitive


def test_permutation_representation_is_a_homomorphism(hcp):
    atoms, group, perms = hcp
    rng = np.random.default_rng(0)
    assert (np.sort(perms.numpy(), axis=1) == np.arange(len(atoms))).all()
    for _ in range(60):
        a, b = (int(v) for v in rng.integers(len(group), size=2))
        R, t = C.compose_operations((group.rotations[a], group.translations[a]),
                                    (group.rotations[b], group.translations[b]))
        ba = _find_op(group, R, t)
        assert torch.equal(perms[a][perms[b]], perms[ba])


def test_orbits_are_invariant_and_distances_constant_on_them(hcp):
    atoms, _, perms = hcp
    po = C.pair_orbits(perms)
    so = C.site_orbits(perms)
    for p in perms.numpy()[::7]:
        assert (po[np.ix_(p, p)] == po).all()
        assert (so[p] == so).all()
    d = C.pair_distances(atoms)
    for o in range(po.max() + 1):
        assert np.ptp(d[po == o]) < 1e-8
    # hcp: orbits strictly finer than distance shells (in-plane vs out-of-plane neighbours)
    assert po.max() + 1 > len(np.unique(np.round(d, 6)))


def test_site_orbits_of_rutile_follow_the_wyckoff_positions(rutile):
    perms = C.site_permutations(rutile)
    so = C.site_orbits(perms)
    species = np.array([s.specie.symbol for s in rutile])
    assert so.max() + 1 == 2
    assert len(set(so[species == "Ti"])) == 1 and len(set(so[species == "O"])) == 1
    assert C.space_group(rutile).number == 136


def test_canonical_labels_compare_partitions():
    assert (C.canonical_labels(np.array([[5, 2], [2, 5]])) == np.array([[0, 1], [1, 0]])).all()


def test_bad_inputs_give_clear_errors():
    atoms = C.lattice_supercell("fcc", "Cu", size=(1, 1, 1))
    with pytest.raises(ValueError, match="symprec"):
        C.space_group(atoms, symprec=-1)
    with pytest.raises(TypeError, match="ase Atoms"):
        C.space_group("Cu")
    overlapping = atoms.copy()
    overlapping.positions[1] = overlapping.positions[0] + 1e-5
    with pytest.raises(ValueError, match="closer than the tolerance"):
        C.space_group(overlapping)
    with pytest.raises(ValueError, match="non-degenerate"):
        C.space_group((np.zeros((3, 3)), np.zeros((1, 3)), np.ones(1)))
    with pytest.raises(ValueError, match="permutation"):
        C.pair_orbits(np.array([[0, 0, 1]]))
    with pytest.raises(ValueError, match="lattice"):
        C.lattice_supercell("sc")
    with pytest.raises(ValueError, match="EMT"):
        C.alloy_dataset(3, elements=("Cu", "Fe"))
    # the group of another structure does not act on this one
    other = C.space_group(C.lattice_supercell("hcp", "Cu", size=(1, 1, 1)))
    with pytest.raises(ValueError, match="does not map the sites"):
        C.site_permutations(atoms, other)


def test_noisy_structure_needs_a_larger_tolerance():
    atoms = C.lattice_supercell("fcc", "Cu", size=(1, 1, 1))
    rng = np.random.default_rng(0)
    atoms.positions += rng.normal(scale=3e-3, size=atoms.positions.shape)
    assert len(C.space_group(atoms, symprec=1e-4)) < 192   # noise hides the symmetry at a tight tolerance
    assert len(C.space_group(atoms, symprec=5e-2)) == 192


# ---------------------------------------------------------------------------------------------- data

def test_alloy_dataset_physics(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMVIZ_CACHE", str(tmp_path))
    ds = C.alloy_dataset(6, "hcp", ("Cu", "Au"), size=(2, 2, 1), seed=1)
    assert ds.occupancy.shape == (6, 8) and ds.energy.shape == (6,)
    assert torch.allclose(ds.site_energy.sum(1), ds.energy, atol=1e-9)
    # the EMT energy itself is invariant under the space group (the label has the symmetry we build in)
    from symviz.data.crystals import _emt_energies
    atoms = ds.structure(3)
    e0, s0 = _emt_energies(atoms)
    for p in ds.perms[::5]:
        moved = atoms.copy()
        moved.numbers = atoms.numbers[p.numpy()]
        e, s = _emt_energies(moved)
        assert abs(e - e0) < 1e-8
        assert np.allclose(s, s0[p.numpy()], atol=1e-8)   # per-site energies are equivariant
    # pure metals have zero mixing energy; cache gives the same numbers
    again = C.alloy_dataset(6, "hcp", ("Cu", "Au"), size=(2, 2, 1), seed=1)
    assert torch.equal(again.energy, ds.energy)
    pure = (ds.occupancy.sum(1) == 0) | (ds.occupancy.sum(1) == 8)
    assert torch.all(ds.energy[pure].abs() < 1e-9)


def test_matbench_loader_and_symmetry_graphs(matbench_small):
    from symviz.data.crystal_graph import structure_to_graph

    structures, n, spg = matbench_small
    assert len(structures) == 4 and n.shape == (4,) and (n >= 1).all() and ((spg >= 1) & (spg <= 230)).all()
    sg = C.symmetry_graphs(structures, targets=n, cutoff=6.0, max_neighbors=12)
    for s, g, f in zip(structures, sg.graphs, sg.edge_features):
        ref = structure_to_graph(s, cutoff=6.0, max_neighbors=12)
        assert g.num_edges == ref.num_edges and f.shape == (g.num_edges, 4)
        assert np.allclose(np.sort(g.distances.numpy()), np.sort(ref.distances.numpy()), atol=1e-5)
    with pytest.raises(ValueError, match="max_sites"):
        C.load_matbench_dielectric(3, max_sites=0)
    with pytest.raises(ValueError, match="targets"):
        C.symmetry_graphs(structures, targets=[1.0])


def test_matbench_subset_and_symmetry_graphs_are_cached(monkeypatch, tmp_path):
    import gzip

    monkeypatch.setenv("SYMVIZ_CACHE", str(tmp_path))
    first = C.load_matbench_dielectric(5, seed=3, max_sites=8)
    graphs = C.symmetry_graphs(first[0], targets=first[1], cutoff=6.0, cache=True)
    files = sorted(p.name for p in (tmp_path / "crystals").iterdir())
    assert [f.split("_")[0] for f in files] == ["matbench", "symmetry"]

    def no_parse(*args, **kwargs):
        raise AssertionError("the whole matbench file was parsed again")

    monkeypatch.setattr(gzip, "decompress", no_parse)
    again = C.load_matbench_dielectric(5, seed=3, max_sites=8)   # from the cached subset
    assert [s == t for s, t in zip(first[0], again[0])] == [True] * 5
    assert np.array_equal(first[1], again[1]) and np.array_equal(first[2], again[2])
    plain = C.symmetry_graphs(again[0], targets=again[1], cutoff=6.0)
    cached = C.symmetry_graphs(again[0], targets=again[1], cutoff=6.0, cache=True)
    assert all(torch.equal(a, b) for a, b in zip(plain.edge_features, cached.edge_features))
    for a, b in zip(plain.graphs, cached.graphs):
        for f in dataclasses.fields(a):
            x, y = getattr(a, f.name), getattr(b, f.name)
            assert torch.equal(x, y) if torch.is_tensor(x) else x == y, f.name
    assert np.array_equal(plain.n_edge_orbits, cached.n_edge_orbits) and graphs.graphs[0].y == cached.graphs[0].y
    # other arguments or other targets are other cache entries, not the stored ones
    other = C.symmetry_graphs(again[0], targets=again[1] + 1.0, cutoff=6.0, cache=True)
    assert float(other.graphs[0].y) == float(cached.graphs[0].y) + 1.0
    # a damaged cache file is computed again and replaced
    monkeypatch.undo()
    monkeypatch.setenv("SYMVIZ_CACHE", str(tmp_path))
    for f in (tmp_path / "crystals").iterdir():
        f.write_bytes(b"not a cache file")
    assert np.array_equal(C.load_matbench_dielectric(5, seed=3, max_sites=8)[1], first[1])
    assert C.symmetry_graphs(again[0], targets=again[1], cutoff=6.0, cache=True).graphs[0].num_edges == plain.graphs[0].num_edges


def test_matbench_loader_without_the_data_wheel_says_how_to_install_it(monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "crystal_toolkit" else real_find_spec(name, *a))
    with pytest.raises(FileNotFoundError, match="pip install --no-deps crystal-toolkit"):
        C.load_matbench_dielectric(5, seed=0, max_sites=6)


def test_matbench_smoke_run_loads_a_few_structures(monkeypatch):
    """`symviz run --smoke` with full mode's n=None: at most SMOKE_STRUCTURES, not the graphs of all 4,764."""
    from symviz import train

    monkeypatch.setenv(train.SMOKE_ENV, "2")
    structures, n, _ = C.load_matbench_dielectric(None, seed=0, max_sites=6)
    assert len(structures) == len(n) == C.SMOKE_STRUCTURES
    assert len(C.load_matbench_dielectric(5, seed=0, max_sites=6)[0]) == 5
    monkeypatch.delenv(train.SMOKE_ENV)
    assert len(C.load_matbench_dielectric(None, seed=0, max_sites=6)[0]) > C.SMOKE_STRUCTURES

def test_edge_orbits_of_hcp_split_equal_length_bonds():
    from pymatgen.io.ase import AseAtomsAdaptor

    s = AseAtomsAdaptor.get_structure(C.lattice_supercell("hcp", "Cu", a=3.6, size=(1, 1, 1)))
    c, nb, img, d = s.get_neighbor_list(2.6)
    assert len(c) == 24 and np.ptp(d) < 1e-6          # 12 nearest neighbours per atom, all of one length
    orb = C.edge_orbits(s, c, nb, img, symprec=1e-3)
    assert orb.max() + 1 == 2                          # ... but in two orbits: in-plane and out-of-plane
    vec = (s.frac_coords[nb] + img - s.frac_coords[c]) @ s.lattice.matrix
    feats = C.orbit_edge_features(vec, c, orb, len(s))
    eigs = {tuple(np.round(f[1:], 4)) for f in feats}
    assert eigs == {(0.0, 0.5, 0.5), (round(1 / 6, 4), round(1 / 6, 4), round(2 / 3, 4))}


# ---------------------------------------------------------------------------------------------- models

def test_orbit_linear_commutes_with_the_group_and_only_with_it(hcp):
    atoms, _, perms = hcp
    po = C.pair_orbits(perms)
    layer = OrbitLinear(po, 3, 4).double()
    h = torch.randn(2, len(atoms), 3, dtype=torch.float64)
    for p in perms[::5]:
        assert torch.allclose(layer(h[:, p]), layer(h)[:, p], atol=1e-12)
    q = torch.randperm(len(atoms), generator=torch.Generator().manual_seed(3))   # not a symmetry
    assert (layer(h[:, q]) - layer(h)[:, q]).abs().max() > 1e-3
    assert sum(p.numel() for p in layer.parameters()) == (po.max() + 1) * 3 * 4 + 4


def test_orbit_linear_is_the_orbit_basis_formula(hcp):
    # forward uses the basis stacked as (n*K, n) and one Linear(K*in, out): the same map as the definition
    # y_i = b + sum_o sum_j A[o, i, j] h_j W_o, with and without batch dimensions
    atoms, _, perms = hcp
    po = C.pair_orbits(perms)
    torch.manual_seed(0)
    layer = OrbitLinear(po, 3, 5).double()
    A = orbit_basis(po)
    for shape in ((len(atoms), 3), (2, len(atoms), 3), (2, 4, len(atoms), 3)):
        h = torch.randn(*shape, dtype=torch.float64)
        ref = torch.einsum("kij,...jc,kcd->...id", A, h, layer.weight) + layer.bias
        assert layer(h).shape == ref.shape and torch.allclose(layer(h), ref, atol=1e-12)
    assert "_stacked" not in layer.state_dict()          # derived from basis, not saved


def test_orbit_linear_init_follows_the_papers_code(hcp):
    # the paper's LinearEquiv draws tied weights and biases like nn.Linear: U(+-1/sqrt(fan_in)); here the
    # layer is a Linear on the K orbit means, fan_in = K * in_dim. Pin the scale (a 1.7x larger randn init
    # or a zero bias would fail).
    import math

    _, _, perms = hcp
    po = C.pair_orbits(perms)
    K = int(po.max()) + 1
    torch.manual_seed(0)
    layer = OrbitLinear(po, 32, 48)
    bound = 1 / math.sqrt(K * 32)
    assert layer.fan_in == K * 32
    w, b = layer.weight.detach(), layer.bias.detach()
    assert w.abs().max() <= bound and b.abs().max() <= bound
    assert abs(float(w.std()) - bound / math.sqrt(3)) < 0.05 * bound / math.sqrt(3)   # uniform: std = bound/sqrt(3)
    assert float(w.abs().max()) > 0.95 * bound and float(b.abs().max()) > 0.5 * bound     # not zero, not shrunk
    ref = torch.nn.Linear(K * 32, 48)
    assert abs(float(w.std()) - float(ref.weight.detach().std())) < 0.05 * float(ref.weight.detach().std())


def test_models_symmetry_float64(hcp):
    atoms, _, perms = hcp
    po = C.pair_orbits(perms)
    x = torch.randint(0, 2, (5, len(atoms))).double()
    eq = CrystalEquivariantNet(po, hidden=8, n_layers=2).double()
    err = symmetry_errors(eq, x, perms)
    assert err["energy"] < 1e-12 and err["site"] < 1e-12
    cg = SupercellCGCNN(atoms, hidden=8, n_conv=2).double()
    err = symmetry_errors(cg, x, perms)
    assert err["energy"] < 1e-10 and err["site"] < 1e-10
    mlp = OccupancyMLP(len(atoms)).double()
    err = symmetry_errors(mlp, x, perms)
    assert err["energy"] > 1e-3 and np.isnan(err["site"])
    for model in (eq, cg, mlp):   # trained models come back from parallel_runs' workers pickled
        assert torch.equal(pickle.loads(pickle.dumps(model))(x).energy, model(x).energy)


def test_supercell_cgcnn_matches_chapter06_cgcnn(hcp):
    atoms, _, _ = hcp
    torch.manual_seed(0)
    m = SupercellCGCNN(atoms, hidden=8, n_conv=2, batch_norm=True).double().eval()
    x = torch.randint(0, 2, (3, len(atoms))).double()
    ref = m.cgcnn(m.graph_batch(x)).reshape(3, -1)
    assert torch.allclose(m(x).site, ref, atol=1e-10)


def test_supercell_cgcnn_neighbour_table_equals_the_scatter_path(hcp, rutile):
    # lattices: every site has the same number of neighbours, so the edges form an (n, M) table (fast path);
    # the result must equal the general index_add path and chapter 06's CGCNN, in training mode too (BatchNorm)
    atoms, _, _ = hcp
    for template in (atoms, C.lattice_supercell("bcc", "Cu", size=(2, 2, 2)), rutile):
        torch.manual_seed(0)
        m = SupercellCGCNN(template, hidden=8, n_conv=2).double()
        x = torch.randint(0, 2, (3, m.n_sites)).double()
        ref = m.cgcnn(m.graph_batch(x)).reshape(3, -1)
        scatter = copy.deepcopy(m)
        scatter.dense = False
        fast, slow = m(x).site, scatter(x).site
        assert torch.allclose(fast, slow, atol=1e-10) and torch.allclose(slow, ref, atol=1e-10)
        # the edge BatchNorm folded into per-node terms (dense path): same gradients, same running statistics, and
        # the same function in eval mode, on random (not one-hot) inputs too
        ga = torch.autograd.grad((fast ** 2).sum(), list(m.parameters()))
        gb = torch.autograd.grad((slow ** 2).sum(), list(scatter.parameters()))
        assert all(torch.allclose(p, q, atol=1e-9) for p, q in zip(ga, gb))
        for (name, p), q in zip(m.state_dict().items(), scatter.state_dict().values()):
            assert torch.allclose(p.double(), q.double(), atol=1e-12), name
        xr = torch.rand(4, m.n_sites, dtype=torch.float64)
        assert torch.allclose(m(xr).site, scatter(xr).site, atol=1e-10)
        m.eval(), scatter.eval()
        assert torch.allclose(m(xr).site, scatter(xr).site, atol=1e-10)
    assert SupercellCGCNN(atoms, hidden=4).neighbors.shape == (len(atoms), 12)


@pytest.mark.parametrize("batch_norm", [True, False])
def test_supercell_cgcnn_first_convolution_by_species_pairs_is_the_same_function(hcp, rutile, batch_norm):
    # one-hot inputs: the first convolution runs on the 4 species pairs per edge; outputs, gradients and BatchNorm's
    # running statistics must equal the edge-by-edge path's, in training and in eval mode
    atoms, _, _ = hcp
    for template in (atoms, rutile):
        torch.manual_seed(0)
        pairs = SupercellCGCNN(template, hidden=8, n_conv=2, batch_norm=batch_norm).double()
        edges = copy.deepcopy(pairs)
        edges.species_pairs = False
        x = torch.randint(0, 2, (5, pairs.n_sites)).double()
        for mode in ("train", "eval"):
            for m in (pairs, edges):
                m.train(mode == "train")
            a, b = pairs(x).site, edges(x).site
            assert torch.allclose(a, b, atol=1e-12), mode
            ga = torch.autograd.grad((a ** 2).sum(), list(pairs.parameters()), allow_unused=True)
            gb = torch.autograd.grad((b ** 2).sum(), list(edges.parameters()), allow_unused=True)
            for p, q in zip(ga, gb):
                assert (p is None) == (q is None) and (p is None or torch.allclose(p, q, atol=1e-10)), mode
        for (name, p), q in zip(pairs.state_dict().items(), edges.state_dict().values()):
            assert torch.allclose(p.double(), q.double(), atol=1e-12), name   # running statistics updated alike
    # fractional occupancies are not one-hot: the edge-by-edge path, the same as chapter 06's CGCNN
    m = SupercellCGCNN(atoms, hidden=8, n_conv=2).double()
    x = torch.rand(3, m.n_sites, dtype=torch.float64)
    assert torch.allclose(m(x).site, m.cgcnn(m.graph_batch(x)).reshape(3, -1), atol=1e-10)
    # one class per bond length: hcp has a single one within 12 neighbours, rutile six
    assert len(SupercellCGCNN(atoms, hidden=4).bond_lengths) == 1 and len(SupercellCGCNN(rutile, hidden=4).bond_lengths) == 6


def test_supercell_cgcnn_pickled_before_the_species_pair_path_still_runs(hcp):
    # a model pickled by an older symviz lacks species_pairs and the bond-length classes: it takes the edge path
    atoms, _, _ = hcp
    torch.manual_seed(0)
    m = SupercellCGCNN(atoms, hidden=8, n_conv=2).double().eval()
    x = torch.randint(0, 2, (3, m.n_sites)).double()
    ref = m(x).site
    old = copy.deepcopy(m)
    del old.species_pairs
    del old._buffers["edge_class"], old._buffers["bond_lengths"]
    old = pickle.loads(pickle.dumps(old))
    assert torch.allclose(old(x).site, ref, atol=1e-12)


def test_fit_alloy_model_without_hold_out(hcp):
    atoms, _, _ = hcp
    x = torch.randint(0, 2, (8, len(atoms))).double()
    y = x.sum(1) * 0.01
    with torch_threads(1):
        r = fit_alloy_model(OccupancyMLP(len(atoms), hidden=8), x, y, steps=5, val_fraction=0.0, device="cpu")
    assert len(r.history) == 5 and "val_loss" not in r.history   # every configuration trains, final weights kept
    with pytest.raises(ValueError, match="val_fraction"):
        fit_alloy_model(OccupancyMLP(len(atoms)), x, y, steps=5, val_fraction=1.0)


def test_orbit_cgcnn_runs_and_ablation_zeroes_orbits(matbench_small):
    from symviz.data.crystal_graph import GRAPH_TENSORS, collate_graphs

    structures, n, _ = (v[:3] for v in matbench_small)
    sg = C.symmetry_graphs(structures, targets=n, cutoff=6.0)
    batch, ef = collate_graphs(sg.graphs), torch.cat(sg.edge_features)
    # a GraphBatch holds num_nodes, batch and every tensor of a CrystalGraph, concatenated over the crystals
    assert batch._fields == ("num_nodes", "batch") + GRAPH_TENSORS and "meta" not in GRAPH_TENSORS
    assert torch.equal(batch.node_features, torch.cat([g.node_features for g in sg.graphs]))
    assert torch.equal(batch.distances, torch.cat([g.distances for g in sg.graphs])) and batch.node_y is None
    assert torch.equal(batch.batch, torch.repeat_interleave(torch.arange(3), batch.num_nodes))
    torch.manual_seed(0)
    m = OrbitCGCNN(cutoff=6.0, hidden=8, n_conv=1, batch_norm=False).eval()
    out = m(batch, ef)
    assert out.shape == (3, 1)
    assert not torch.allclose(out, m(batch, torch.randn_like(ef)))          # the orbit descriptors are read
    m.use_orbits = False
    assert torch.allclose(m(batch, ef), m(batch, torch.randn_like(ef)))
    with pytest.raises(ValueError, match="edge_features"):
        m(batch, ef[:, :2])
    with pytest.raises(TypeError, match="edge_features"):
        m((batch, ef))                                                      # inputs are positional, not a tuple


def test_model_input_validation(hcp):
    atoms, _, perms = hcp
    po = C.pair_orbits(perms)
    with pytest.raises(ValueError, match="n_sites"):
        CrystalEquivariantNet(po, hidden=4)(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="square"):
        orbit_basis(np.zeros((2, 3), dtype=int))
    with pytest.raises(ValueError, match="hidden"):
        CrystalEquivariantNet(po, hidden=0)
    with pytest.raises(ValueError, match="n_sites"):
        OccupancyMLP(len(atoms))(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="occupancy"):
        fit_alloy_model(OccupancyMLP(4), torch.zeros(5, 4), torch.zeros(4))


def test_equivariant_model_learns_a_pair_interaction(hcp):
    # a pair-orbit "cluster expansion" energy is exactly representable: training must get close
    atoms, _, perms = hcp
    po = C.pair_orbits(perms)
    g = torch.Generator().manual_seed(0)
    J = torch.randn(int(po.max()) + 1, generator=g, dtype=torch.float64) * 0.05
    Jmat = J[torch.as_tensor(po)]
    x = torch.randint(0, 2, (120, len(atoms)), generator=g).double()
    y = torch.einsum("bi,ij,bj->b", x, Jmat, x)
    m = CrystalEquivariantNet(po, hidden=16, n_layers=1)
    with torch_threads(1):  # tiny model: extra threads only spin (4x the CPU time on a shared machine)
        r = fit_alloy_model(m, x[:100], y[:100], steps=200, batch_size=50, lr=1e-2, device="cpu")
    base = float((y[100:] - y[:100].mean()).abs().mean()) / len(atoms)
    assert alloy_mae(r.model, x[100:], y[100:]) < 0.3 * base


# ---------------------------------------------------------------------------------------------- check & viz

def test_check_pair_orbits():
    from symviz.chapters.ch05_crystal_equivariance.checks import check_pair_orbits

    assert check_pair_orbits(C.pair_orbits)
    assert not check_pair_orbits(lambda p: np.arange(p.shape[1] ** 2).reshape(p.shape[1], -1))
    assert not check_pair_orbits(lambda p: 1 / 0)
    # distance shells are not orbits on hcp
    assert not check_pair_orbits(lambda p: np.zeros((p.shape[1], p.shape[1]), dtype=int))


def test_viz_static(hcp, monkeypatch):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from symviz.viz.crystals import learning_curve_figure, orbit_colors, symmetry_operation_widget

    monkeypatch.setenv("SYMVIZ_STATIC", "1")
    atoms, _, perms = hcp
    assert len(orbit_colors(C.pair_orbits(perms)[0])) == len(atoms)
    x = np.arange(len(atoms)) % 2
    fig = symmetry_operation_widget(atoms, x, perms, lambda occ: occ - 0.5, ops=[0, 3, 5])
    # one row per operation: g·x, f(g·x), g·f(x), three 3-D panels each
    assert len(fig.subfigs) == 3 and len(fig.axes) == 9
    for sf, g in zip(fig.subfigs, (0, 3, 5)):
        ax_x, ax_fx, ax_gf = sf.axes
        assert ax_x.get_title() == f"g·x  (operation {g})" and ax_fx.get_title() == "model on g·x:  f(g·x)"
        assert ax_gf.get_title() == "moved output: g·f(x)\nmax diff 0.0e+00"   # an equivariant f: nothing differs
        xg = x[np.asarray(perms)[g]]
        assert np.allclose(ax_fx.collections[0].get_array(), xg - 0.5)          # f(g·x), site by site
        assert np.allclose(ax_gf.collections[0].get_array(), (x - 0.5)[np.asarray(perms)[g]])
        assert ax_x.collections[0].get_offsets().shape == (len(atoms), 2)        # one marker per site
    plt.close("all")
    broken = symmetry_operation_widget(atoms, x, perms, lambda occ: occ - 0.5 + 0.1 * np.arange(len(occ)), ops=[3])
    assert not broken.subfigs[0].axes[2].get_title().endswith("max diff 0.0e+00")   # a non-equivariant f shows
    plt.close("all")
    with pytest.raises(ValueError, match="perms"):
        symmetry_operation_widget(atoms, x[:3], perms, lambda occ: occ)
    table = pd.DataFrame({"model": ["a", "a", "a", "b", "b"], "n_train": [8, 8, 16, 8, 16],
                          "test_mae_meV": [3, 5, 2, 5, 4.0]})
    fig = learning_curve_figure(table)
    (ax,) = fig.axes
    lines = {c.get_label(): c.lines[0] for c in ax.containers}                 # one errorbar per model
    assert list(lines) == ["a", "b"] and [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b"]
    assert lines["a"].get_xdata().tolist() == [8, 16] and lines["a"].get_ydata().tolist() == [4.0, 2.0]   # mean over seeds
    assert lines["b"].get_ydata().tolist() == [5.0, 4.0] and ax.get_xscale() == ax.get_yscale() == "log"
    plt.close("all")


# ---------------------------------------------------------------------------------------------- the OrbitLinear exercise

def _crystal_of(n):
    """The structure of the check's crystal with n sites (fcc 4, rutile 6, hcp 8): the wrong answers below need it."""
    from symviz.chapters.ch05_crystal_equivariance.checks import _check_05_structures

    return next(s for _, s, perms, _ in _check_05_structures() if perms.shape[1] == n)


class _TiedBy(torch.nn.Module):
    """An orbit-style layer whose matrices A (K, n, n) come from ``matrices(pair_orbits)``: the reference's recipe
    with one piece swapped, as a learner might write it."""

    def __init__(self, pair_orbits, in_dim, out_dim, matrices=None):
        super().__init__()
        A = (matrices or (lambda po: orbit_basis(po)))(np.asarray(pair_orbits))
        self.register_buffer("A", A.float())
        K = A.shape[0]
        self.weight = torch.nn.Parameter(torch.empty(K, in_dim, out_dim))
        self.bias = torch.nn.Parameter(torch.empty(out_dim))
        bound = 1 / np.sqrt(K * in_dim)
        with torch.no_grad():
            self.weight.uniform_(-bound, bound)
            self.bias.uniform_(-bound, bound)

    def forward(self, h):
        return torch.einsum("kij,...jc,kcd->...id", self.A.to(h.dtype), h, self.weight.to(h.dtype)) + self.bias.to(h.dtype)


def _tied(matrices):
    return lambda po, i, o: _TiedBy(po, i, o, matrices)


class _PerPair(torch.nn.Module):
    """A weight matrix for every site pair (i, j): linear, but not tied, hence not equivariant."""

    def __init__(self, pair_orbits, in_dim, out_dim):
        super().__init__()
        n = np.asarray(pair_orbits).shape[0]
        self.weight = torch.nn.Parameter(torch.randn(n, n, in_dim, out_dim) / np.sqrt(n * in_dim))
        self.bias = torch.nn.Parameter(torch.zeros(out_dim))

    def forward(self, h):
        return torch.einsum("...jc,ijcd->...id", h, self.weight.to(h.dtype)) / h.shape[-2] + self.bias.to(h.dtype)


def _shell_matrices(po):
    d = C.pair_distances(_crystal_of(po.shape[0]))
    return orbit_basis(C.canonical_labels(np.round(d, 3)))


def _zero_init(po, i, o):
    layer = _TiedBy(po, i, o)
    with torch.no_grad():
        layer.weight.zero_()
    return layer


class _NumpyBasis(_TiedBy):
    """Keeps A as a plain float32 attribute, not a buffer: .double() does not convert it."""

    def __init__(self, pair_orbits, in_dim, out_dim):
        super().__init__(pair_orbits, in_dim, out_dim)
        A = self.A
        del self._buffers["A"]
        self.A_plain = A

    def forward(self, h):
        return torch.einsum("kij,...jc,kcd->...id", self.A_plain, h, self.weight) + self.bias


_WRONG_LAYERS = {  # a plausible wrong answer -> phrases its verdict must contain
    "a weight per site pair (not tied)": (_PerPair, ["not equivariant", "tie the weights by orbit"]),
    "one weight per distance shell": (_tied(_shell_matrices), ["per distance shell", "pair orbits"]),
    "transposed orbit matrix": (_tied(lambda po: orbit_basis(po).transpose(1, 2)), ["rutile", "transposed orbit matrix"]),
    "orbit of (j, i) instead of (i, j)": (_tied(lambda po: orbit_basis(po.T)), ["rutile", "orbit of (j, i)"]),
    "sum instead of mean (no normalisation)": (_tied(lambda po: orbit_basis(po, normalize=False)), ["summed", "k_o(i)"]),
    "divided by the orbit's size": (
        _tied(lambda po: orbit_basis(po, normalize=False) / orbit_basis(po, normalize=False).sum(dim=(1, 2), keepdim=True)),
        ["size of the whole orbit"]),
    "weights not initialised (zeros)": (_zero_init, ["initialise weight"]),
    "A kept as a plain attribute": (_NumpyBasis, ["register_buffer"]),
    "no bias": (lambda po, i, o: torch.nn.Linear(i, o, bias=False), ["weight (K, in_dim, out_dim) and bias"]),
    "not a module": (lambda po, i, o: (lambda h: h), ["torch.nn.Module"]),
}


@pytest.mark.parametrize("name", ["reference", "rewrite"] + list(_WRONG_LAYERS))
def test_check_orbit_linear_verdicts(name, capsys):
    """The reference and a faithful rewrite pass; each wrong answer fails with a verdict naming its mistake."""
    from symviz.chapters.ch05_crystal_equivariance.checks import check_orbit_linear

    right = {"reference": OrbitLinear, "rewrite": _TiedBy}
    verdict = check_orbit_linear(right.get(name) or _WRONG_LAYERS[name][0])
    printed = capsys.readouterr().out
    if name in right:
        assert verdict and "PASSED" in printed
        return
    missing = [phrase for phrase in _WRONG_LAYERS[name][1] if phrase not in verdict.message]
    assert not verdict and not missing, (name, verdict.message)
    assert verdict.message in printed                             # the learner sees the verdict


def test_the_templates_go_through_accept_to_the_references(monkeypatch, capsys, hcp):
    """The notebook's templates raise NotImplementedError: accept() falls back to the references, which train."""
    from symviz import report
    from symviz.chapters.ch05_crystal_equivariance.checks import check_orbit_linear, check_pair_orbits

    monkeypatch.setattr(report, "_exercises", [])
    monkeypatch.delenv("SYMVIZ_SOLUTIONS", raising=False)

    class MyOrbitLinear(torch.nn.Module):
        def __init__(self, pair_orbits, in_dim, out_dim):
            super().__init__()
            raise NotImplementedError("build the orbit-tied layer's parameters")

    def my_pair_orbits(perms):
        raise NotImplementedError("label the orbits of site pairs")

    layer = report.accept("orbit-tied linear layer (OrbitLinear)", MyOrbitLinear, check_orbit_linear, reference=OrbitLinear)
    orbits = report.accept("pair orbits (warm-up)", my_pair_orbits, check_pair_orbits, reference=C.pair_orbits)
    assert layer.source == orbits.source == "reference"
    assert "NotImplementedError" in capsys.readouterr().out
    atoms, _, perms = hcp
    net = CrystalEquivariantNet(orbits(perms), hidden=8, layer=layer)
    assert all(isinstance(m, OrbitLinear) for m in net.layers) and len(net.layers) == 2
    assert all(e["used_downstream"] for e in report.exercises())


def test_crystal_net_layer_hook(hcp):
    """layer= builds the orbit layers from any class; the default is OrbitLinear; the same seed gives the same net."""
    atoms, _, perms = hcp
    po = C.pair_orbits(perms)
    torch.manual_seed(0)
    default = CrystalEquivariantNet(po, hidden=8)
    torch.manual_seed(0)
    hooked = CrystalEquivariantNet(po, hidden=8, layer=_TiedBy)
    assert isinstance(default.layers[0], OrbitLinear) and isinstance(hooked.layers[0], _TiedBy)
    for (k, a), (_, b) in zip(default.named_parameters(), hooked.named_parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)       # the same draws, in the same order
    x = torch.randint(0, 2, (3, len(atoms))).float()
    torch.testing.assert_close(default(x).energy, hooked(x).energy)
    with pytest.raises(TypeError, match="layer must be a class"):
        CrystalEquivariantNet(po, layer="OrbitLinear")


def _conclude_kwargs(**extra) -> dict:
    """Arguments of chapter 05's ``conclude`` for three models whose numbers make every claim hold."""
    import pandas as pd

    names = ("eq", "cg", "mlp")
    sym = pd.DataFrame({"energy invariance error": [1e-16, 1e-15, 0.5], "per-site equivariance error": [1e-16, 1e-15, np.nan]},
                       index=list(names))
    curve = pd.DataFrame([{"model": m, "n_train": 8, "seed": s, "test_mae_meV": v}
                          for s in range(3) for m, v in zip(names, (10 + s, 9 + s, 50 + 2 * s))])
    lc = curve.pivot_table(index="n_train", columns="model", values="test_mae_meV", aggfunc="mean")
    mb = pd.DataFrame({"mean": [0.3, 0.31]}, index=["a", "b"])
    return dict(sym_table=sym, model_names=names, curve=curve, lc_table=lc, small=8, n_seeds=3, site_corr={"x": 0.9},
                site_mae=20.0, site_mae_baseline=800.0, mb_table=mb, n_operations=432, n_pair_orbits=11, wall_s=1.0,
                **extra)


def test_conclude_records_the_claims_with_their_kinds():
    from symviz import report
    from symviz.chapters.ch05_crystal_equivariance.results import conclude

    kw = _conclude_kwargs()
    report.start("05_crystal_equivariance", None, verbose=False)
    table = conclude(**kw)
    assert list(table.columns) == ["claim", "kind", "numbers", "holds"]
    assert list(table["kind"]) == ["sanity", "sanity", "paper", "paper"] and table["holds"].all()
    report.start("05_crystal_equivariance", None, verbose=False)
    table = conclude(**dict(kw, site_mae=900.0))                     # the per-site model loses: that claim fails
    assert list(table["holds"]) == [True, True, False, True]
    with pytest.raises(ValueError, match="not in sym_table"):
        conclude(**dict(kw, model_names=("eq", "cg", "other")))


def test_conclude_cluster_expansion_and_matbench_claims():
    import pandas as pd

    from symviz import report
    from symviz.chapters.ch05_crystal_equivariance.results import conclude

    ce = pd.DataFrame([{"model": m, "n_train": 32, "seed": s, "test_mae_meV": v}
                       for s in range(3) for m, v in zip(("eq", "cg"), (3 + 0.1 * s, 8 + 0.1 * s))])
    mb_rows = pd.DataFrame([{"model": m, "seed": s, "test MAE (n)": v}
                            for s in range(3) for m, v in zip(("orbit-aware CGCNN", "CGCNN"), (0.40 + 0.01 * s, 0.39 + 0.01 * s))])
    kw = _conclude_kwargs(ce_curve=ce, ce_small=32, ce_twins={"label_meV": [1.0, 2.0]}, mb_rows=mb_rows, mb_size=160)
    report.start("05_crystal_equivariance", None, verbose=False)
    table = conclude(**kw)
    assert list(table["kind"]) == ["sanity", "sanity", "paper", "paper", "paper", "paper"] and table["holds"].all()
    # CGCNN as good as the orbit network on the cluster expansion: that claim fails
    worse = ce.assign(test_mae_meV=np.where(ce.model == "cg", 3.05, ce.test_mae_meV))
    report.start("05_crystal_equivariance", None, verbose=False)
    assert list(conclude(**dict(kw, ce_curve=worse))["holds"]) == [True, True, True, True, False, True]
    # the orbit-aware model far worse than plain CGCNN on matbench: not competitive
    bad = mb_rows.assign(**{"test MAE (n)": np.where(mb_rows.model == "CGCNN", 0.2, mb_rows["test MAE (n)"])})
    report.start("05_crystal_equivariance", None, verbose=False)
    assert list(conclude(**dict(kw, mb_rows=bad))["holds"]) == [True, True, True, True, True, False]
    with pytest.raises(ValueError, match="ce_small"):
        conclude(**dict(kw, ce_small=None))


# ---------------------------------------------------------------------------------------------- cluster expansion

@pytest.fixture(scope="module")
def hcp_ce():
    from symviz.chapters.ch05_crystal_equivariance.experiments import cluster_expansion_label

    atoms = C.lattice_supercell("hcp", "Cu", size=(3, 3, 2))
    ce, orbits = cluster_expansion_label(atoms)
    return atoms, ce, orbits, C.site_permutations(atoms, ignore_species=True)


def test_cluster_expansion_is_invariant_under_every_space_group_operation(hcp_ce):
    from symviz.data.cluster_expansion import random_configurations

    atoms, ce, orbits, perms = hcp_ce
    x = random_configurations(6, len(atoms), seed=3)
    e = ce.energy(x)
    assert e.std() > 0.05                                           # not a constant label
    moved = x[:, perms].transpose(0, 1).reshape(-1, len(atoms))     # every configuration moved by every operation
    assert torch.allclose(ce.energy(moved).reshape(len(perms), -1), e.expand(len(perms), -1), atol=1e-12)
    # the per-site split is equivariant and sums to the energy
    se = ce.site_energy(x)
    assert torch.allclose(se.sum(1), e, atol=1e-12)
    p = perms[17]
    assert torch.allclose(ce.site_energy(x[:, p]), se[:, p], atol=1e-12)
    # a random relabelling of the sites that is not a symmetry changes the energy
    q = torch.randperm(len(atoms), generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(ce.energy(x[:, q]), e, atol=1e-6)


def test_hcp_cluster_orbits_split_equal_length_bonds(hcp_ce):
    atoms, ce, orbits, perms = hcp_ce
    nn_pairs = [(k, o) for k, o in enumerate(orbits) if o.size == 2 and o.distances == orbits[1].distances]
    assert len(nn_pairs) == 2                                       # in-plane and out-of-plane neighbours
    assert sorted(round(o.anisotropy, 6) for _, o in nn_pairs) == [-0.5, 0.5]
    assert all(len(o.clusters) == 3 * len(atoms) for _, o in nn_pairs)   # 6 + 6 neighbours, each pair counted once
    (ka, _), (kb, _) = nn_pairs
    assert ce.eci[ka] == pytest.approx(-ce.eci[kb]) and ce.eci[ka] != 0
    # the orbits partition the clusters of each size, and each orbit is one orbit of the group
    from symviz.data.cluster_expansion import cluster_orbits, enumerate_clusters
    d = C.pair_distances(atoms)
    pairs = enumerate_clusters(d, 2, orbits[1].distances[0] + 1e-3)
    assert len(pairs) == sum(len(o.clusters) for _, o in nn_pairs)
    labels = cluster_orbits(perms, pairs)
    assert labels.max() + 1 == 2
    # the unordered pair orbits agree with the ordered pair orbits of symviz.data.crystals, symmetrised
    po = C.pair_orbits(perms)
    for a in range(len(pairs)):
        for b in range(len(pairs)):
            i, j = pairs[a]
            k, l = pairs[b]
            same_ordered = po[i, j] in (po[k, l], po[l, k])
            assert same_ordered == (labels[a] == labels[b])


def test_cluster_expansion_by_hand():
    from symviz.data.cluster_expansion import ClusterExpansion, ClusterOrbit

    # a 3-site toy: a point orbit, one pair orbit {01, 12} and one triangle; E = J0 + Jp sum s + J2 (s0 s1 + s1 s2) + J3 s0 s1 s2
    orbits = [ClusterOrbit(1, np.array([[0], [1], [2]]), (), _n_sites=3),
              ClusterOrbit(2, np.array([[0, 1], [1, 2]]), (1.0,), _n_sites=3),
              ClusterOrbit(3, np.array([[0, 1, 2]]), (1.0, 1.0, 2.0), _n_sites=3)]
    ce = ClusterExpansion(orbits, eci=[0.1, 0.2, 0.3], j0=1.0)
    x = torch.tensor([[0.0, 1.0, 1.0], [0.0, 0.0, 0.0]])     # spins (-1, 1, 1) and (-1, -1, -1)
    want = torch.tensor([1.0 + 0.1 * 1 + 0.2 * (-1 + 1) + 0.3 * (-1), 1.0 + 0.1 * (-3) + 0.2 * 2 + 0.3 * (-1)],
                        dtype=torch.float64)
    assert torch.allclose(ce.energy(x), want)
    assert torch.allclose(ce.correlations(x), torch.tensor([[1.0, 0.0, -1.0], [-3.0, 2.0, -1.0]], dtype=torch.float64))
    # per site: site 1 is in both pairs and takes half of each
    se = ce.site_energy(x[:1])
    assert se[0].tolist() == pytest.approx([1 / 3 - 0.1 - 0.1 - 0.1, 1 / 3 + 0.1 - 0.1 + 0.1 - 0.1, 1 / 3 + 0.1 + 0.1 - 0.1])
    assert float(se.sum()) == pytest.approx(float(want[0]))


def test_cluster_expansion_bad_inputs(hcp_ce):
    from symviz.data import cluster_expansion as CE

    atoms, ce, orbits, perms = hcp_ce
    with pytest.raises(ValueError, match="one ECI per orbit"):
        CE.ClusterExpansion(orbits, eci=[0.1])
    with pytest.raises(ValueError, match="ClusterOrbit"):
        CE.ClusterExpansion([], eci=[])
    with pytest.raises(ValueError, match="n_sites=36"):
        ce.energy(torch.zeros(2, 35))
    with pytest.raises(ValueError, match="0 .element A. or 1"):
        ce.energy(torch.full((1, 36), 0.5))
    with pytest.raises(ValueError, match="not closed under the group"):
        CE.cluster_orbits(perms, np.array([[0, 1]]))
    with pytest.raises(ValueError, match="same site twice"):
        CE.cluster_orbits(perms, np.array([[0, 0]]))
    with pytest.raises(ValueError, match="site indices must lie"):
        CE.cluster_orbits(perms, np.array([[0, 99]]))
    with pytest.raises(ValueError, match="square"):
        CE.enumerate_clusters(np.zeros((2, 3)), 2, 1.0)
    with pytest.raises(ValueError, match="size"):
        CE.enumerate_clusters(np.zeros((2, 2)), 7, 1.0)
    with pytest.raises(ValueError, match="max_pair"):
        CE.find_cluster_orbits(atoms, perms, max_pair=-1.0)
    with pytest.raises(ValueError, match=r"perms must be \(m, n=36\)"):
        CE.find_cluster_orbits(atoms, perms[:, :4], max_pair=3.0)
    with pytest.raises(ValueError, match="36 sites"):
        CE.cluster_expansion_dataset(C.lattice_supercell("fcc", "Cu", size=(1, 1, 1)), ce, 3)


def test_fcc_pair_orbits_are_distance_shells():
    from symviz.data.cluster_expansion import anisotropic_ecis, find_cluster_orbits

    atoms = C.lattice_supercell("fcc", "Cu", size=(2, 2, 2))
    perms = C.site_permutations(atoms, ignore_species=True)
    orbits = find_cluster_orbits(atoms, perms, max_pair=4.0)
    pairs = [o for o in orbits if o.size == 2]
    assert len({o.distances for o in pairs}) == len(pairs)        # one orbit per distance: nothing to gain from orbits
    assert all(abs(o.anisotropy) < 1e-9 for o in pairs)           # the cubic average of P2 vanishes
    eci = anisotropic_ecis(orbits, pair=(0.0,), pair_anisotropy=(0.06,))
    assert np.allclose(eci, 0.0)


def test_same_distance_configurations_and_zero_readout(hcp_ce):
    from symviz.chapters.ch05_crystal_equivariance.experiments import (same_distance_pair_configurations,
                                                                        start_readout_at_mean)

    atoms, ce, orbits, perms = hcp_ce
    x, which = same_distance_pair_configurations(ce)
    assert x.sum(1).tolist() == [2.0, 2.0]
    e = ce.energy(x)
    assert abs(float(e[0] - e[1])) > 0.1                            # same bond length, different energy
    net = CrystalEquivariantNet(C.pair_orbits(perms), hidden=8)
    assert start_readout_at_mean(net, -0.01)
    out = net(x.float())
    assert torch.allclose(out.site, torch.full_like(out.site, -0.01))
    assert not start_readout_at_mean(OccupancyMLP(36), 0.0)        # no per-site readout: left alone
    with pytest.raises(ValueError, match="finite"):
        start_readout_at_mean(net, float("nan"))


def test_training_cost_orders_the_chapters_trainings_and_refuses_unknown_models():
    from symviz.chapters.ch05_crystal_equivariance.experiments import training_cost

    names = ("equivariant (orbit MP)", "CGCNN (distance MP)", "MLP on occupancies")   # the notebook's models
    eq, cg, mlp = (training_cost(name, 32, 300) for name in names)
    assert cg > eq > mlp > 0
    assert training_cost(names[0], 8, 300) < training_cost(names[0], 32, 300) == training_cost(names[0], 64, 300)
    assert training_cost(names[1], 32, 150) == cg / 2
    with pytest.raises(ValueError, match="must start with one of"):
        training_cost("SchNet", 8, 10)
    with pytest.raises(ValueError, match="positive ints"):
        training_cost(names[0], 0, 10)
