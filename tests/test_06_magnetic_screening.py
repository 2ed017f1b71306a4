"""Tests for chapter 06: crystal graphs, CGCNN, the MEGNet-style network, candidate pool, label cache, descriptors,
screening metrics, and the two-stage screen (split, forests, networks, ensemble, error bars, cell choice)."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

warnings.filterwarnings("ignore", category=DeprecationWarning)

from pymatgen.core import Composition, Lattice, Structure  # noqa: E402

from symviz.data import crystal_graph as CG  # noqa: E402
from symviz.data import descriptors as D  # noqa: E402
from symviz.data import magnetic as M  # noqa: E402
from symviz.chapters.ch06_magnetic_screening import screening as S  # noqa: E402
from symviz.nn.cgcnn import CGCNN  # noqa: E402
from symviz.nn.megnet import MEGNet, Set2Set, scatter_softmax  # noqa: E402


def _heusler():
    return M.scale_to_radii(M.prototype_structure("L2_1_Heusler", ["Co", "Mn", "Si"]))


def _nias():
    return M.scale_to_radii(M.prototype_structure("B8_1_NiAs", ["Mn", "Bi"]))


def _random_rotation(seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))


# ---------------------------------------------------------------- crystal graphs and CGCNN

def test_graph_bcc_neighbours():
    fe = Structure(Lattice.cubic(2.87), ["Fe", "Fe"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    g = CG.structure_to_graph(fe, cutoff=3.0, max_neighbors=None)
    assert g.num_edges == 2 * 14  # 8 at 2.49 Å + 6 at 2.87 Å
    assert torch.allclose(g.distances.min(), torch.tensor(2.87 * 3 ** 0.5 / 2), atol=1e-4)
    # max_neighbors=12: the 12th neighbour lies in the 2nd shell, so all 6 atoms tied with it are kept (14)
    g12 = CG.structure_to_graph(fe, cutoff=3.0, max_neighbors=12)
    assert g12.num_edges == 2 * 14  # ties at the 12th distance are all kept


def test_graph_single_atom_cell_sees_its_images():
    po = Structure(Lattice.cubic(3.0), ["Po"], [[0, 0, 0]])
    g = CG.structure_to_graph(po, cutoff=3.1)
    assert g.num_edges == 6 and bool((g.edge_index == 0).all())


def test_collate_offsets_and_targets():
    graphs = CG.structures_to_graphs([_heusler(), _nias()], cutoff=4.0, targets=[1.0, 2.0])
    b = CG.collate_graphs(graphs)
    assert b.num_graphs == 2 and b.y.shape == (2, 1)
    assert int(b.edge_index.max()) < b.node_features.shape[0]
    assert b.batch.tolist() == [0] * graphs[0].num_nodes + [1] * graphs[1].num_nodes
    assert int(b.edge_index[:, graphs[0].num_edges:].min()) == graphs[0].num_nodes


def test_custom_node_features_are_pluggable():
    s = _heusler()
    own = [np.random.default_rng(0).normal(size=(len(s), 7))]
    g = CG.structures_to_graphs([s], cutoff=4.0, node_features=own)[0]
    assert g.node_features.shape == (len(s), 7)
    g2 = CG.structures_to_graphs([s], node_features=lambda site: [site.specie.X, site.specie.Z])[0]
    assert g2.node_features.shape == (len(s), 2)
    model = CGCNN(node_dim=7, cutoff=4.0).eval()
    assert model(CG.collate_graphs([g])).shape == (1, 1)


def _predict(model, structures, **kw):
    with torch.no_grad():
        return model(CG.collate_graphs(CG.structures_to_graphs(structures, **kw)))


def _same_crystal(s, rotations: int, shift, perm_seed: int) -> list:
    """The same crystal described differently: ``rotations`` rotated frames, a translated origin, shuffled sites."""
    out = [Structure(Lattice(s.lattice.matrix @ _random_rotation(seed).T), s.species, s.frac_coords)
           for seed in range(rotations)]
    out.append(Structure(s.lattice, s.species, s.frac_coords + np.array(shift)))
    perm = np.random.default_rng(perm_seed).permutation(len(s))
    out.append(Structure(s.lattice, [s.species[i] for i in perm], s.frac_coords[perm]))
    return out


@pytest.mark.parametrize("pool", ["mean", "sum"])
def test_cgcnn_invariances_float64(pool):
    torch.manual_seed(0)
    model = CGCNN(node_dim=92, cutoff=4.5, n_conv=2, pool=pool).double().eval()
    s = _heusler()
    base = _predict(model, [s], cutoff=4.5)
    # rotations of the whole crystal (lattice rotated, fractional coordinates unchanged), a translation, a site permutation
    for same in _same_crystal(s, rotations=3, shift=(0.13, -0.4, 0.71), perm_seed=1):
        assert torch.allclose(_predict(model, [same], cutoff=4.5), base, rtol=1e-9, atol=1e-10)
    # supercell: same crystal; mean pooling gives the same value, sum pooling doubles it
    sup = _predict(model, [s * (2, 1, 1)], cutoff=4.5)
    expected = base if pool == "mean" else 2 * base
    assert torch.allclose(sup, expected, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gaussian_expansions_hold_no_subnormal_numbers(dtype):
    # CGCNN's and MEGNet's Gaussian bases: exact zeros where exp would be subnormal (slow on x86), the plain
    # formula everywhere else
    from symviz.nn.cgcnn import GaussianDistance, gaussian_expansion
    from symviz.nn.megnet import GaussianBasis

    d = torch.linspace(0.0, 8.0, 801, dtype=dtype)
    tiny = torch.finfo(dtype).tiny
    for basis in (GaussianDistance(cutoff=8.0, n_gaussians=41), GaussianBasis(r_max=8.0, n_centers=100, width=0.05)):
        u = basis(d)
        plain = torch.exp(-((d[:, None] - basis.centers.to(dtype)) ** 2) / basis.width ** 2)
        assert u.dtype == dtype and u.shape == plain.shape
        assert ((plain > 0) & (plain < tiny)).any()          # the plain formula does make subnormals here
        assert not ((u > 0) & (u < tiny)).any()
        normal = plain >= 1.01 * tiny
        assert torch.equal(u[normal], plain[normal]) and (u[plain < tiny] == 0).all()
        assert ((u == 0) | (u == plain)).all()
    assert gaussian_expansion(torch.tensor([2.0], dtype=dtype), torch.tensor([2.0]), 0.2).item() == 1.0


def test_cgcnn_is_not_blind_to_geometry():
    torch.manual_seed(0)
    model = CGCNN(node_dim=92, cutoff=5.0).double().eval()
    s = _heusler()
    squeezed = s.copy()
    squeezed.scale_lattice(s.volume * 0.8)
    assert not torch.allclose(_predict(model, [s]), _predict(model, [squeezed]))


def test_cgcnn_per_site_output_and_bad_inputs():
    model = CGCNN(node_dim=92, cutoff=4.0, pool=None).eval()
    b = CG.collate_graphs(CG.structures_to_graphs([_nias()], cutoff=4.0))
    assert model(b).shape == (len(_nias()), 1)
    with pytest.raises(ValueError, match="node_dim"):
        CGCNN(node_dim=10, cutoff=4.0)(b)
    with pytest.raises(ValueError, match="pool"):
        CGCNN(pool="max")


def test_graph_bad_inputs():
    with pytest.raises(TypeError, match="pymatgen Structure"):
        CG.structures_to_graphs(["Fe"])
    overlapping = Structure(Lattice.cubic(3.0), ["Fe", "Fe"], [[0, 0, 0], [0.01, 0, 0]])
    with pytest.raises(ValueError, match="apart"):
        CG.structures_to_graphs([overlapping])
    disordered = Structure(Lattice.cubic(3.0), [{"Fe": 0.5, "Co": 0.5}], [[0, 0, 0]])
    with pytest.raises(ValueError, match="disordered"):
        CG.structures_to_graphs([disordered])
    with pytest.raises(ValueError, match="node_features"):
        CG.structures_to_graphs([_nias()], node_features="magic")
    with pytest.raises(ValueError, match="targets"):
        CG.structures_to_graphs([_nias()], targets=[1.0, 2.0])


# ---------------------------------------------------------------- pool and labels

def test_pool_valid_non_overlapping():
    protos = M.decorated_prototypes(26, seed=3)
    assert len({p["id"] for p in protos}) == 26
    assert {p["prototype"] for p in protos} == set(M.PROTOTYPES)  # round-robin covers every prototype
    for p in protos:
        s = p["structure"]
        assert s.is_ordered and s.is_valid(tol=0.5)
        assert M.min_distance_ratio(s) == pytest.approx(1.0, abs=1e-6)  # closest pair just touches
        assert any(el.symbol in M.MAGNETIC_ELEMENTS for el in s.composition.elements)


def test_prototype_formulas_and_symmetry():
    import spglib

    cases = {("L2_1_Heusler", ("Co", "Mn", "Si")): ("MnCo2Si", 225), ("D0_3_BiF3", ("Fe", "Al")): ("Fe3Al", 225),
             ("B2_CsCl", ("Fe", "Co")): ("FeCo", 221), ("B8_1_NiAs", ("Mn", "Bi")): ("MnBi", 194),
             ("E2_1_perovskite", ("Y", "Fe", "O")): ("YFeO3", 221), ("A3_hcp", ("Co",)): ("Co", 194)}
    for (name, els), (formula, sg) in cases.items():
        s = M.scale_to_radii(M.prototype_structure(name, els))
        assert s.composition.reduced_formula == Composition(formula).reduced_formula
        ds = spglib.get_symmetry_dataset((s.lattice.matrix, s.frac_coords, [x.specie.Z for x in s]), symprec=1e-3)
        assert ds.number == sg, name


def test_pool_bad_inputs():
    with pytest.raises(ValueError, match="unknown element"):
        M.prototype_structure("B2_CsCl", ["Fe", "Xx"])
    with pytest.raises(ValueError, match="unknown prototype"):
        M.prototype_structure("Z9", ["Fe"])
    with pytest.raises(ValueError, match="slots"):
        M.prototype_structure("B2_CsCl", ["Fe"])


def test_real_structures_offline():
    real = M.real_structures(max_sites=4, n=5, seed=0)
    assert len(real) == 5
    for r in real:
        assert len(r["structure"]) <= 4
        assert any(el.symbol in M.MAGNETIC_ELEMENTS for el in r["structure"].composition.elements)


def test_reference_structures_match_table():
    refs = M.reference_structures()
    assert set(refs) == {r["material"] for r in M.REFERENCE_MOMENTS}
    for r in M.REFERENCE_MOMENTS:
        s = refs[r["material"]]
        assert s.composition.reduced_formula == Composition(r["material"]).reduced_formula
        assert M.min_distance_ratio(s) > 0.75, r["material"]
        assert r["source"]


def test_structure_hash_sensitivity():
    s = _nias()
    t = s.copy()
    t.translate_sites([0], [1.0, 0, 0])  # a whole lattice vector: same crystal
    assert M.structure_hash(s) == M.structure_hash(t)
    u = s.copy()
    u.replace(0, "Fe")
    assert M.structure_hash(s) != M.structure_hash(u)


def test_label_cache_detects_stale_and_corrupt(tmp_path, monkeypatch):
    calls = []

    class FakeModel:  # CHGNet stand-in: moment = atomic number / 10 on each site
        def predict_structure(self, structures, task="em", batch_size=32):
            calls.append(len(structures))
            return [{"m": np.array([x.specie.Z / 10 for x in s]), "e": -1.0} for s in structures]

    M._chgnet.cache_clear()
    monkeypatch.setattr(M, "_chgnet", lambda: FakeModel())
    path = tmp_path / "labels.json"
    structs = [_nias(), _heusler()]
    lab, info = M.chgnet_labels(structs, cache=path)
    assert info["labelled"] == 2 and calls == [2]
    assert lab.moment_per_fu[0] == pytest.approx(2.5 + 8.3)  # MnBi: 25/10 + 83/10
    lab2, info = M.chgnet_labels(structs, cache=path)
    assert info["hits"] == 2 and info["labelled"] == 0 and lab2.equals(lab)
    # corrupt one entry: its checksum no longer matches -> relabelled
    blob = json.loads(path.read_text())
    key = next(iter(blob["entries"]))
    blob["entries"][key]["site_moments"][0] = 99.0
    path.write_text(json.dumps(blob))
    _, info = M.chgnet_labels(structs, cache=path)
    assert info["corrupt"] == 1 and info["labelled"] == 1
    # stale recipe -> everything relabelled
    _, info = M.chgnet_labels(structs, cache=M.LabelCache(path, recipe={**M.LABEL_RECIPE, "version": -1}))
    assert info["file_stale"] and info["labelled"] == 2
    # a corrupt file -> ignored, relabelled, rewritten
    path.write_text("{not json")
    _, info = M.chgnet_labels(structs, cache=path)
    assert info["file_corrupt"] and info["labelled"] == 2
    assert json.loads(path.read_text())["entries"]


def test_labels_bad_inputs(tmp_path):
    with pytest.raises(TypeError, match="Structure"):
        M.chgnet_labels(["Fe"], cache=tmp_path / "x.json")


# ---------------------------------------------------------------- descriptors

def test_composition_descriptors_match_matminer():
    from matminer.featurizers.composition import ElementProperty

    props = ["Electronegativity", "GSmagmom", "NdValence"]
    stats = ["mean", "minimum", "maximum", "range", "avg_dev"]
    comps = [Composition(c) for c in ["Fe3Al", "Co2MnSi", "Gd", "Ni2MnGa", "Fe3O4"]]
    ours = D.composition_descriptors(comps, props, stats)
    ep = ElementProperty("magpie", props, stats)
    ref = np.array([ep.featurize(c) for c in comps])
    assert list(ours.columns) == [lab.replace("MagpieData ", "") for lab in ep.feature_labels()]
    np.testing.assert_allclose(ours.to_numpy(), ref, rtol=1e-10, atol=1e-10)


def test_all_descriptors_cached_are_the_same_table(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMVIZ_CACHE", str(tmp_path))
    structures = [_heusler(), _nias()]
    plain = D.all_descriptors(structures)
    assert D.all_descriptors(structures, cache=True).equals(plain)
    monkeypatch.setattr(D, "structure_descriptors", lambda *a, **k: pytest.fail("computed again"))
    assert D.all_descriptors(structures, cache=True).equals(plain)   # read back from the file
    with pytest.raises(pytest.fail.Exception, match="computed again"):   # other crystals: another entry
        D.all_descriptors(structures[:1], cache=True)


def test_descriptor_errors_and_structure_descriptors():
    with pytest.raises(ValueError, match="unknown or multi-valued property"):
        D.composition_descriptors(["Fe"], ["NoSuchProperty"])
    with pytest.raises(ValueError, match="unknown element|not a chemical formula"):
        D.composition_descriptors(["Qq2"])
    with pytest.raises(ValueError, match="unknown stat"):
        D.composition_descriptors(["Fe"], ["Number"], ["median"])
    X = D.structure_descriptors([_heusler(), _nias(), M.prototype_structure("A2_bcc", ["Fe"])])
    assert X.loc[2, "crystal_system"] == 7 and X.loc[2, "coordination_mean"] == 14  # bcc: 8 + 6 within 1.2 x nearest
    assert X.loc[0, "spacegroup"] == 225 and X.loc[1, "spacegroup"] == 194
    assert X.loc[0, "crystal_system"] == 7 and X.loc[1, "crystal_system"] == 6
    assert np.all(X["packing_fraction"].between(0.1, 1.0))
    assert X.loc[1, "mag_fraction"] == pytest.approx(0.5)


def test_stochastic_selection_finds_the_signal():
    import pandas as pd

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(120, 30)), columns=[f"d{i}" for i in range(30)])
    y = 2 * X["d3"] - X["d17"] + 0.05 * rng.normal(size=120)
    res = D.stochastic_descriptor_selection(X, y, n_select=5, n_rounds=25, subset_size=8, n_estimators=20)
    assert set(res.selected[:2]) == {"d3", "d17"}
    with pytest.raises(ValueError, match="rows"):
        D.stochastic_descriptor_selection(X, y[:10])


# ---------------------------------------------------------------- screening

def test_recall_and_baselines():
    y = np.arange(20.0)
    assert S.recall_at_k(y, y, 5) == 1.0
    assert S.recall_at_k(y, -y, 5) == 0.0
    assert S.random_recall_at_k(20, 5) == 0.25
    with pytest.raises(ValueError, match="k must be"):
        S.recall_at_k(y, y, 0)
    comps = ["Fe", "Co", "FeCo", "Ni"]
    base = S.ElementAverageBaseline(alpha=1e-9).fit(comps, [2.0, 1.6, 1.8, 0.6])
    assert base.predict(["FeCo"])[0] == pytest.approx(1.8, abs=1e-6)
    assert base.predict(["Fe3Al"]).shape == (1,)  # unseen Al gets the mean element weight
    assert S.MeanBaseline().fit(None, [1.0, 3.0]).predict([0, 0, 0]).tolist() == [2.0] * 3


def test_disagreement_and_spearman():
    a, b = np.array([1.0, 2.0, 3.0]), np.array([1.5, 2.0, 1.0])
    np.testing.assert_allclose(S.disagreement(a, b), [0.5, 0.0, 2.0])
    assert S.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=60)
    assert S.permutation_pvalue(x, x + 0.1 * rng.normal(size=60), n_perm=200) < 0.01
    with pytest.raises(ValueError, match="at least two"):
        S.disagreement(a)
    table = S.rank_candidates(["a", "b", "c"], {"rf": a, "cgcnn": b}, k=2, truth=[1, 2, 3])
    assert list(table["id"]) == ["b", "c"] and "abs_error" in table


def test_train_cgcnn_learns_a_simple_target(one_torch_thread):
    structs = [M.scale_to_radii(M.prototype_structure("B2_CsCl", [a, b]))
               for a in ("Fe", "Co", "Ni", "Mn") for b in ("Al", "Ga", "Si", "Cu", "Pd")]
    y = [[float(s.composition.average_electroneg)] for s in structs]
    graphs = CG.structures_to_graphs(structs, cutoff=4.0, targets=y)
    model, res = S.train_cgcnn(graphs[:16], graphs[16:], epochs=40, batch_size=8, hidden=16, n_conv=1,
                               cutoff=4.0, device="cpu", patience=None)
    assert res.history["train_loss"].iloc[-1] < 0.5 * res.history["train_loss"].iloc[0]
    assert S.predict_cgcnn(model, graphs).shape == (20,)


# ---------------------------------------------------------------- figures (static mode)

def test_viz_screening_static(monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.setenv("SYMVIZ_STATIC", "1")
    from symviz.chapters.ch06_magnetic_screening import plots as V

    y = np.array([0.1, 1.0, 2.0, 0.5])
    fig = V.parity_plots(y, {"a": y + 0.1, "b": y[::-1]})
    assert len(fig.axes) == 2
    with pytest.raises(ValueError, match="predictions"):
        V.parity_plots(y, {"a": y[:2]})
    table = S.rank_candidates(["p", "q", "r", "s"], {"random forest": y, "CGCNN": y + 0.2}, truth=y)
    table["formula"] = ["Fe", "Co", "Ni", "Mn"]
    sc = V.candidates_scatter(table, top=2)
    assert len(sc.data) == 2 and list(sc.data[0].marker.symbol[:2]) == ["star", "star"]
    with pytest.raises(ValueError, match="no column"):
        V.candidates_scatter(table, x="nope")
    assert V.moment_colors([0, 1, 2])[0] != V.moment_colors([0, 1, 2])[2]
    structs = {i: _nias() for i in table["id"]}
    moments = {i: [2.0, 2.0, 0.1, 0.1] for i in table["id"]}
    fig = V.candidate_explorer(table, structs, moments)
    assert fig is not None  # the static fallback figure
    with pytest.raises(ValueError, match="no structure"):
        V.candidate_explorer(table, {}, moments)


def test_real_structures_without_the_data_wheel_says_how_to_install_it(monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "crystal_toolkit" else real_find_spec(name, *a))
    M._matbench_raw.cache_clear()
    M._matbench_magnetic.cache_clear()
    try:
        with pytest.raises(FileNotFoundError, match="pip install --no-deps crystal-toolkit"):
            M.real_structures(max_sites=4, n=5, seed=0)
    finally:
        M._matbench_raw.cache_clear()
        M._matbench_magnetic.cache_clear()


def test_real_structures_are_the_same_from_the_disk_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("SYMVIZ_CACHE", str(tmp_path))
    M._matbench_magnetic.cache_clear()
    first = M.real_structures(max_sites=5, n=12, seed=3)
    assert len(list((tmp_path / "magnetic").glob("matbench_magnetic_*.json"))) == 1
    M._matbench_magnetic.cache_clear()
    monkeypatch.setattr(M, "_matbench_raw", lambda: pytest.fail("the whole matbench file was parsed again"))
    again = M.real_structures(max_sites=5, n=12, seed=3)
    M._matbench_magnetic.cache_clear()
    assert [r["id"] for r in first] == [r["id"] for r in again]
    assert all(a["structure"] == b["structure"] for a, b in zip(first, again))
    assert np.allclose([r["mp_dft_moment_per_atom"] for r in first], [r["mp_dft_moment_per_atom"] for r in again],
                       equal_nan=True)


# ---------------------------------------------------------------- the exercise: scoring the stochastic selection

def _scores_solution(cols, importances, val_mae, n_descriptors):
    weight = np.median(val_mae) / val_mae
    total, drawn = np.zeros(n_descriptors), np.zeros(n_descriptors)
    for c, imp, w in zip(cols, importances, weight):
        total[c] += imp * w
        drawn[c] += 1
    return np.where(drawn > 0, total / np.maximum(drawn, 1), 0.0)


def _accumulate(cols, values, d):
    out = np.zeros(d)
    np.add.at(out, cols, values)
    return out


def _per_draw(total, cols, d):
    drawn = np.bincount(np.asarray(cols).ravel(), minlength=d)
    return np.where(drawn > 0, total / np.maximum(drawn, 1), 0.0)


def _w(mae):
    return (np.median(mae) / mae)[:, None]


WRONG_SCORES = {  # plausible wrong answers, and what the verdict must say about each
    "sum over rounds": (lambda c, i, m, d: _accumulate(c, i * _w(m), d), "sum over rounds"),
    "mean over all rounds": (lambda c, i, m, d: _accumulate(c, i * _w(m), d) / len(m), "mean over all rounds"),
    "unweighted importance": (lambda c, i, m, d: _per_draw(_accumulate(c, i, d), c, d), "ignore how well"),
    "weighted by MAE, not 1/MAE": (lambda c, i, m, d: _per_draw(_accumulate(c, i / _w(m), d), c, d), "rewards"),
    "0/0 for descriptors never drawn": (lambda c, i, m, d: _zero_over_zero(c, i * _w(m), d), "never drawn"),
    "buffered fancy-index add": (lambda c, i, m, d: _buffered(c, i * _w(m), d), "np.add.at"),
    "median left out": (lambda c, i, m, d: _per_draw(_accumulate(c, i / m[:, None], d), c, d), "median"),
    "one score per round": (lambda c, i, m, d: i.sum(1), "one score per descriptor"),
}


def _zero_over_zero(cols, values, d):
    with np.errstate(all="ignore"):
        return _accumulate(cols, values, d) / np.bincount(cols.ravel(), minlength=d)


def _buffered(cols, values, d):
    total, drawn = np.zeros(d), np.zeros(d)
    with np.errstate(all="ignore"):
        total[cols] += values  # numpy adds a repeated index once
        drawn[cols] += 1
    return np.where(drawn > 0, total / np.maximum(drawn, 1), 0.0)


def test_selection_scores_reference_and_errors():
    got = D.selection_scores([[0, 1], [1, 2]], [[0.5, 0.5], [0.2, 0.8]], [1.0, 3.0], 4)
    np.testing.assert_allclose(got, [0.5 * 2, (0.5 * 2 + 0.2 * 2 / 3) / 2, 0.8 * 2 / 3, 0.0])
    with pytest.raises(ValueError, match="cols must hold integer descriptor indices"):
        D.selection_scores([[0, 5]], [[0.5, 0.5]], [1.0], 4)
    with pytest.raises(ValueError, match=r"importances \(R, k\)"):
        D.selection_scores([[0, 1]], [[0.5]], [1.0], 4)


@pytest.mark.parametrize("name", ["reference", "solution", *WRONG_SCORES])
def test_check_selection_scores_passes_the_right_answers_and_names_the_wrong_ones(name, capsys):
    from symviz.chapters.ch06_magnetic_screening.checks import check_selection_scores

    fn, says = {"reference": (D.selection_scores, None), "solution": (_scores_solution, None), **WRONG_SCORES}[name]
    result = check_selection_scores(fn)
    printed = capsys.readouterr().out
    if says is None:
        assert result and printed.startswith("PASSED")
    else:
        assert not result and printed.startswith("NOT YET") and says in result.message, result.message


@pytest.fixture
def no_exercises(monkeypatch):
    from symviz import report

    monkeypatch.delenv("SYMVIZ_SOLUTIONS", raising=False)
    report._exercises.clear()
    yield report
    report._exercises.clear()


def test_the_template_goes_to_the_reference_and_the_selection_uses_what_was_accepted(no_exercises, monkeypatch):
    import pandas as pd

    from symviz.chapters.ch06_magnetic_screening.checks import check_selection_scores

    report = no_exercises

    def template(cols, importances, val_mae, n_descriptors):
        raise NotImplementedError("my_selection_scores: score every descriptor")

    accepted = report.accept("stochastic selection scores", template, check_selection_scores,
                             reference=D.selection_scores, solution=_scores_solution)
    assert accepted.source == "reference" and not accepted.passed
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(60, 12)), columns=[f"d{i}" for i in range(12)])
    y = X["d3"] - X["d7"]
    kw = dict(n_select=4, n_rounds=6, subset_size=5, n_estimators=10, seed=1)
    plain = D.stochastic_descriptor_selection(X, y, **kw)
    assert D.stochastic_descriptor_selection(X, y, score_fn=accepted, **kw).selected == plain.selected
    assert report.exercises()[0]["used_downstream"]
    # under `symviz run` the notebook's solution is checked and used instead
    monkeypatch.setenv("SYMVIZ_SOLUTIONS", "1")
    solved = report.accept("stochastic selection scores", template, check_selection_scores,
                           reference=D.selection_scores, solution=_scores_solution)
    assert solved.source == "solution"
    assert D.stochastic_descriptor_selection(X, y, score_fn=solved, **kw).selected == plain.selected


def test_selection_score_fn_is_validated():
    import pandas as pd

    X = pd.DataFrame(np.random.default_rng(0).normal(size=(20, 5)), columns=list("abcde"))
    y = X["a"].to_numpy()
    with pytest.raises(ValueError, match="score_fn must return 5 finite scores"):
        D.stochastic_descriptor_selection(X, y, n_select=2, n_rounds=2, subset_size=3, n_estimators=3,
                                          score_fn=lambda c, i, m, d: np.zeros(3))
    with pytest.raises(TypeError, match="score_fn must be callable"):
        D.stochastic_descriptor_selection(X, y, n_select=2, n_rounds=2, score_fn="mean")


# ---------------------------------------------------------------- the screening decision and the conclusion

def test_recall_curve_matches_recall_at_k():
    rng = np.random.default_rng(1)
    y = rng.normal(size=40)
    p = y + rng.normal(size=40)
    np.testing.assert_allclose(S.recall_curve(y, p), [S.recall_at_k(y, p, k) for k in range(1, 41)])
    with pytest.raises(ValueError, match="ks must be integers"):
        S.recall_curve(y, p, ks=[0, 3])


def test_screening_explorer_static_and_draw(monkeypatch):
    import matplotlib
    import matplotlib.pyplot as plt

    matplotlib.use("Agg")
    monkeypatch.setenv("SYMVIZ_STATIC", "1")
    from symviz.chapters.ch06_magnetic_screening import plots as V

    rng = np.random.default_rng(0)
    y = rng.gamma(2.0, 0.5, size=50)
    preds = {"a": y + 0.1 * rng.normal(size=50), "b": y + 0.3 * rng.normal(size=50)}
    dis = np.abs(preds["a"] - preds["b"])
    shown = V.screening_explorer(y, preds, dis, k=5, ranked_by="a")
    assert shown.kind == "static" and len(shown.axes) == 2
    fig = plt.figure()
    info = V.draw_screening(fig, y, preds, dis, k=10, threshold=0.0, ranked_by="a")
    assert info["flagged"] == int(np.sum(dis[np.argsort(-preds["a"], kind="stable")[:10]] > 0))
    assert info["found"] == round(S.recall_at_k(y, preds["a"], 10) * 10)
    none = V.draw_screening(fig, y, preds, dis, k=10, threshold=dis.max() + 1, ranked_by="a")
    assert none["flagged"] == 0
    with pytest.raises(ValueError, match="ranked_by"):
        V.draw_screening(fig, y, preds, dis, k=5, threshold=0.1, ranked_by="c")
    with pytest.raises(ValueError, match="k must be"):
        V.draw_screening(fig, y, preds, dis, k=0, threshold=0.1, ranked_by="a")


def _two_stage_summary():
    return {"screen": {"precision": 0.8, "precision_lower": 0.6, "base_rate": 0.1},
            "stage1": {"accuracy": 0.9, "majority": 0.75,
                       "gain_lower": {"rf": 0.1, "cgcnn": 0.05, "megnet": 0.02, "ensemble": 0.08},
                       "auc_gaps": {"rf": {"auc": 0.95, "gap": 0.0, "gap_lower": 0.0},
                                    "cgcnn": {"auc": 0.93, "gap": 0.02, "gap_lower": -0.01},
                                    "megnet": {"auc": 0.9, "gap": 0.05, "gap_lower": -0.001}}},
            "spread": {"spearman": 0.25, "p_value": 0.01},
            "cell_choice": {"CGCNN": {"atoms_supercell": 1e-16, "crystal_supercell": 0.0},
                            "MEGNet": {"atoms_supercell": 0.0, "crystal_supercell": 2e-16}}}


def test_conclude_records_claims_with_kinds(tmp_path):
    from symviz import report
    from symviz.chapters.ch06_magnetic_screening.results import conclude

    report.start("06_test", tmp_path / "r.json", verbose=False)
    maes = {"mean baseline": 0.7, "element average": 0.2, "random forest": 0.3, "CGCNN": 0.25,
            "RF + CGCNN average": 0.24}
    recall = {m: 0.5 for m in maes}
    table = conclude(maes=maes, recall=recall, recall_random=0.1, k=10, n=100, rho=0.3, p_value=0.001,
                     chgnet_literature={}, chgnet_mp={}, pool={}, timings={})
    assert list(table.columns) == ["claim", "kind", "numbers", "holds"]
    assert list(table["kind"]) == ["sanity", "paper", "paper", "paper"] and table["holds"].all()
    data = json.loads((tmp_path / "r.json").read_text())
    assert [c["kind"] for c in data["claims"]] == list(table["kind"])
    assert data["metrics"]["mae_RF_and_CGCNN_average"] == 0.24
    # a broken model fails the claims
    bad = conclude(maes={**maes, "random forest": 0.69}, recall={**recall, "RF + CGCNN average": 0.1},
                   recall_random=0.1, k=10, n=100, rho=-0.1, p_value=0.9, chgnet_literature={}, chgnet_mp={},
                   pool={}, timings={})
    assert not bad["holds"].any()
    with pytest.raises(ValueError, match="need an entry for"):
        conclude(maes={"mean baseline": 1.0}, recall={}, recall_random=0.1, k=1, n=10, rho=0, p_value=1,
                 chgnet_literature={}, chgnet_mp={}, pool={}, timings={})
    # the two-stage screen of section 8 adds three paper claims and one sanity claim
    report.start("06_test2", tmp_path / "r2.json", verbose=False)
    two = _two_stage_summary()
    table2 = conclude(maes=maes, recall=recall, recall_random=0.1, k=10, n=100, rho=0.3, p_value=0.001,
                      chgnet_literature={}, chgnet_mp={}, pool={}, timings={}, two_stage=two)
    assert list(table2["kind"]) == ["sanity", "paper", "paper", "paper", "paper", "paper", "paper", "sanity"]
    assert table2["holds"].all()
    data = json.loads((tmp_path / "r2.json").read_text())
    assert data["metrics"]["two_stage_screen"]["precision"] == 0.8
    # each two-stage claim fails when its evidence is broken
    broken = {"screen": {**two["screen"], "precision_lower": 0.05},
              "stage1": {**two["stage1"], "gain_lower": {**two["stage1"]["gain_lower"], "megnet": -0.01}},
              "spread": {"spearman": 0.2, "p_value": 0.2},
              "cell_choice": {"CGCNN": {"crystal_supercell": 0.9}}}
    bad2 = conclude(maes=maes, recall=recall, recall_random=0.1, k=10, n=100, rho=0.3, p_value=0.001,
                    chgnet_literature={}, chgnet_mp={}, pool={}, timings={}, two_stage=broken)
    assert not bad2["holds"].iloc[4:].any() and bad2["holds"].iloc[:4].all()
    with pytest.raises(ValueError, match="two_stage needs an entry"):
        conclude(maes=maes, recall=recall, recall_random=0.1, k=10, n=100, rho=0.3, p_value=0.001,
                 chgnet_literature={}, chgnet_mp={}, pool={}, timings={}, two_stage={"screen": {}})


# ---------------------------------------------------------------- the MEGNet-style network

def _predict_megnet(model, structures, **kw):
    with torch.no_grad():
        return model(CG.collate_graphs(CG.structures_to_graphs(structures, **kw)))


@pytest.mark.parametrize("readout", ["set2set", "mean"])
def test_megnet_crystal_output_invariances_float64(readout):
    torch.manual_seed(0)
    model = MEGNet(node_dim=92, cutoff=4.5, hidden=16, n_blocks=2, readout=readout).double().eval()
    s = _heusler()
    base = _predict_megnet(model, [s], cutoff=4.5)
    for same in _same_crystal(s, rotations=2, shift=(0.31, -0.2, 0.57), perm_seed=2):
        assert torch.allclose(_predict_megnet(model, [same], cutoff=4.5), base, rtol=1e-9, atol=1e-10)
    # supercells are the same crystal: the intensive prediction does not change
    for scaling in ((2, 1, 1), (2, 2, 2)):
        assert torch.allclose(_predict_megnet(model, [s * scaling], cutoff=4.5), base, rtol=1e-8, atol=1e-10)
    # batching does not mix crystals: each one's prediction is the same alone or in a batch
    both = _predict_megnet(model, [s, _nias()], cutoff=4.5)
    assert torch.allclose(both[:1], base, rtol=1e-9, atol=1e-10)


def test_megnet_per_atom_outputs_permute_with_sites_and_repeat_in_supercells():
    torch.manual_seed(1)
    model = MEGNet(node_dim=92, cutoff=4.5, hidden=16, n_blocks=2, readout=None).double().eval()
    s = _nias()
    atoms = _predict_megnet(model, [s], cutoff=4.5)
    assert atoms.shape == (len(s), 1)
    assert not torch.allclose(atoms[0], atoms[-1])  # Mn and Bi sites differ: the check below is not trivial
    perm = np.random.default_rng(0).permutation(len(s))
    shuffled = Structure(s.lattice, [s.species[i] for i in perm], s.frac_coords[perm])
    assert torch.allclose(_predict_megnet(model, [shuffled], cutoff=4.5), atoms[perm], rtol=1e-9, atol=1e-12)
    sup = s * (2, 1, 1)
    sup_atoms = _predict_megnet(model, [sup], cutoff=4.5)
    site = S.supercell_site_map(s, sup)
    assert torch.allclose(sup_atoms, atoms[site], rtol=1e-9, atol=1e-12)  # each copy predicts what its site does
    assert torch.allclose(sup_atoms.sum(), 2 * atoms.sum())  # extensive total doubles ...
    assert torch.allclose(sup_atoms.mean(), atoms.mean())  # ... the per-atom average does not


def test_megnet_shapes_state_and_bad_inputs():
    torch.manual_seed(0)
    b = CG.collate_graphs(CG.structures_to_graphs([_heusler(), _nias()], cutoff=4.0))
    model = MEGNet(node_dim=92, cutoff=4.0, hidden=8, n_blocks=1, n_targets=3).eval()
    out = model(b)
    assert out.shape == (2, 3)
    v, e, u = model.encode(b)
    assert v.shape == (b.node_features.shape[0], 8) and e.shape == (b.edge_index.shape[1], 8) and u.shape == (2, 8)
    # the global state is an input: a different state changes the prediction, zeros are the default
    assert torch.allclose(model(b, state=torch.zeros(2, 2)), out)
    assert not torch.allclose(model(b, state=torch.ones(2, 2)), out)
    with pytest.raises(ValueError, match=r"state must be \(num_graphs=2, state_dim=2\)"):
        model(b, state=torch.zeros(3, 2))
    with pytest.raises(ValueError, match="node_dim=10"):
        MEGNet(node_dim=10, cutoff=4.0)(b)
    with pytest.raises(ValueError, match="readout must be"):
        MEGNet(readout="max")
    with pytest.raises(ValueError, match="hidden must be a positive int"):
        MEGNet(hidden=0)
    with pytest.raises(ValueError, match="cutoff must be a positive distance"):
        MEGNet(cutoff=-1.0)
    with pytest.raises(ValueError, match="width > 0"):
        MEGNet(width=0.0)


def test_megnet_is_not_blind_to_geometry_and_learns():
    torch.manual_seed(0)
    model = MEGNet(node_dim=92, cutoff=5.0, hidden=8, n_blocks=1).double().eval()
    s = _heusler()
    squeezed = s.copy()
    squeezed.scale_lattice(s.volume * 0.8)
    assert not torch.allclose(_predict_megnet(model, [s]), _predict_megnet(model, [squeezed]))


def test_scatter_softmax_and_set2set():
    src = torch.tensor([1.0, 2.0, 3.0, -1.0, 100.0])
    idx = torch.tensor([0, 0, 1, 1, 2])
    a = scatter_softmax(src, idx, 3)
    assert torch.allclose(torch.zeros(3).index_add_(0, idx, a), torch.ones(3))
    assert torch.allclose(a[:2], torch.softmax(src[:2], 0)) and a[4] == 1.0  # large values do not overflow
    torch.manual_seed(0)
    s2s = Set2Set(4, steps=3).double()
    x = torch.randn(5, 4, dtype=torch.float64)
    out = s2s(x, idx, 3)
    assert out.shape == (3, 8)
    perm = torch.tensor([1, 0, 3, 2, 4])  # shuffle inside each group
    assert torch.allclose(s2s(x[perm], idx[perm], 3), out)
    twice = s2s(torch.cat([x, x]), torch.cat([idx, idx]), 3)  # every member twice: same readout
    assert torch.allclose(twice, out)
    with pytest.raises(ValueError, match="positive ints"):
        Set2Set(0)


# ---------------------------------------------------------------- CGCNN per atom, and the cell choice

def test_cgcnn_per_atom_outputs_repeat_in_supercells():
    torch.manual_seed(0)
    model = CGCNN(node_dim=92, cutoff=4.5, n_conv=2, pool=None).double().eval()
    s = _heusler()
    atoms = _predict(model, [s], cutoff=4.5)
    sup = s * (2, 2, 2)
    sup_atoms = _predict(model, [sup], cutoff=4.5)
    assert torch.allclose(sup_atoms, atoms[S.supercell_site_map(s, sup)], rtol=1e-9, atol=1e-12)
    assert torch.allclose(sup_atoms.sum(), 8 * atoms.sum()) and torch.allclose(sup_atoms.mean(), atoms.mean())


def _with_running_stats(model):
    for conv in model.convs:
        for bn in (conv.bn_node, conv.bn_edge):
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2.0)
    return model


def test_cgcnn_eval_norm_always_makes_one_atom_cells_consistent():
    fe = Structure(Lattice.cubic(2.87), ["Fe"], [[0, 0, 0]])
    torch.manual_seed(0)
    old = _with_running_stats(CGCNN(node_dim=92, cutoff=5.0, hidden=8, n_conv=2)).double().eval()
    new = CGCNN(node_dim=92, cutoff=5.0, hidden=8, n_conv=2, eval_norm_always=True).double().eval()
    new.load_state_dict(old.state_dict())
    # the default (kept for chapter 05) skips BatchNorm for a batch of one atom, also in eval mode ...
    assert S.cell_choice_errors(old, fe, cutoff=5.0)["crystal_supercell"] > 1e-3
    # ... with eval_norm_always the running statistics are used for any batch: cell and supercell agree
    errs = S.cell_choice_errors(new, fe, cutoff=5.0)
    assert max(errs.values()) < 1e-12
    two = CG.collate_graphs(CG.structures_to_graphs([fe, _nias()], cutoff=5.0))
    with torch.no_grad():  # in a batch the two settings agree (BatchNorm applied in both)
        assert torch.allclose(old(two), new(two))
    new.train()
    assert new(two).shape == (2, 1)  # training mode still works (and a batch of one still skips BatchNorm)


def test_cell_choice_errors_detects_a_cell_dependent_model():
    s = _heusler()
    torch.manual_seed(0)
    for model in (MEGNet(node_dim=92, cutoff=4.5, hidden=8, n_blocks=2),
                  CGCNN(node_dim=92, cutoff=4.5, hidden=8, n_conv=2, eval_norm_always=True)):
        assert max(S.cell_choice_errors(model, s, cutoff=4.5, scaling=(1, 2, 1)).values()) < 1e-12
    # a sum readout predicts an extensive total: it doubles on a 2x1x1 supercell, and the check says so
    extensive = CGCNN(node_dim=92, cutoff=4.5, hidden=8, n_conv=2, pool="sum", eval_norm_always=True)
    assert S.cell_choice_errors(extensive, s, cutoff=4.5)["crystal_supercell"] == pytest.approx(1.0, rel=1e-6)
    with pytest.raises(ValueError, match="atom_features"):
        S.cell_choice_errors(torch.nn.Linear(2, 2), s, cutoff=4.5)
    with pytest.raises(TypeError, match="pymatgen Structure"):
        S.cell_choice_errors(extensive, "Fe", cutoff=4.5)
    with pytest.raises(ValueError, match="not a supercell"):
        S.supercell_site_map(s, _nias())


# ---------------------------------------------------------------- the two-stage screen

def test_chemical_systems_and_group_split_keep_groups_whole():
    structs = [_heusler(), M.prototype_structure("B2_CsCl", ["Mn", "Co"]), _nias()]
    assert S.chemical_systems(structs) == ["Co-Mn-Si", "Co-Mn", "Bi-Mn"]
    rng = np.random.default_rng(0)
    groups = [f"g{i}" for i in rng.integers(0, 30, size=200)]
    for seed in range(3):
        tr, te = S.group_split(groups, 0.4, seed=seed)
        assert sorted(np.concatenate([tr, te]).tolist()) == list(range(200))
        assert not {groups[i] for i in tr} & {groups[i] for i in te}  # no group on both sides
        assert 0.4 <= len(te) / 200 < 0.6
    assert not np.array_equal(S.group_split(groups, 0.4, seed=0)[1], S.group_split(groups, 0.4, seed=1)[1])
    with pytest.raises(ValueError, match="test_fraction"):
        S.group_split(groups, 1.5)
    with pytest.raises(ValueError, match="same group"):
        S.group_split(["a", "a", "a"])
    with pytest.raises(TypeError, match="composition"):
        S.chemical_systems(["Fe"])


def test_magnetic_labels_and_two_stage_screen():
    assert S.magnetic_labels([0.05, 0.2, 1.0], 0.1).tolist() == [False, True, True]
    with pytest.raises(ValueError, match="threshold"):
        S.magnetic_labels([1.0], -1)
    # the crystal with the largest predicted moment fails stage 1, so it is never screened
    picked = S.two_stage_screen([0.9, 0.1, 0.6, 0.55, 0.3], [1.0, 9.0, 3.0, 2.0, 8.0], k=3)
    assert picked.tolist() == [2, 3, 0]
    assert S.two_stage_screen([0.1, 0.2], [1.0, 2.0], k=1).size == 0  # nothing passes stage 1
    with pytest.raises(ValueError, match="k must be"):
        S.two_stage_screen([0.9], [1.0], k=2)
    with pytest.raises(ValueError, match="p_magnetic has 2 values"):
        S.two_stage_screen([0.9, 0.2], [1.0], k=1)


def test_precision_recall_coverage_and_bootstrap():
    y = np.array([3.0, 0.1, 2.5, 0.2, 2.1, 0.0])
    pr = S.precision_recall(y, [0, 2, 1], large=2.0)
    assert pr["precision"] == pytest.approx(2 / 3) and pr["recall"] == pytest.approx(2 / 3)
    assert pr["base_rate"] == 0.5 and pr["n_large"] == 3
    with pytest.raises(ValueError, match="outside"):
        S.precision_recall(y, [7], large=2.0)
    cov = S.coverage([0.0, 0.0, 0.0, 0.0], [0.5, 1.5, 2.5, 0.0], [1.0, 1.0, 1.0, 0.0], ks=(1, 2, 3))
    assert cov == {1: 0.5, 2: 0.75, 3: 1.0}
    with pytest.raises(ValueError, match="spread must be >= 0"):
        S.coverage([0.0], [0.0], [-1.0])
    # a calibrated Gaussian error bar covers ~68% / ~95%
    rng = np.random.default_rng(0)
    sig = rng.uniform(0.1, 2.0, size=20000)
    cov = S.coverage(sig * rng.normal(size=sig.size), np.zeros(sig.size), sig)
    assert cov[1] == pytest.approx(0.683, abs=0.01) and cov[2] == pytest.approx(0.954, abs=0.01)
    hits = np.array([1.0] * 8 + [0.0] * 2)
    lo = S.bootstrap_lower(hits, seed=0)
    assert 0.5 <= lo < 0.8 and S.bootstrap_lower(np.ones(10)) == 1.0
    assert S.bootstrap_lower(hits, q=0.01, seed=0) <= lo
    with pytest.raises(ValueError, match="q must be"):
        S.bootstrap_lower(hits, q=1.5)


def test_ensemble_predictions_mean_and_spread():
    df = S.ensemble_predictions({"a": ([1.0, 2.0], [0.2, 0.9]), "b": ([3.0, 2.0], [0.4, 0.7]),
                                 "c": ([2.0, 2.0], [0.6, 0.8])})
    np.testing.assert_allclose(df["moment"], [2.0, 2.0])
    np.testing.assert_allclose(df["p_magnetic"], [0.4, 0.8])
    np.testing.assert_allclose(df["spread"], [np.std([1.0, 3.0, 2.0]), 0.0])
    np.testing.assert_allclose(df["range"], [2.0, 0.0])
    with pytest.raises(ValueError, match="at least two models"):
        S.ensemble_predictions({"a": ([1.0], [0.5])})
    with pytest.raises(ValueError, match="expected 2"):
        S.ensemble_predictions({"a": ([1.0, 2.0], [0.5, 0.5]), "b": ([1.0], [0.5])})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        S.ensemble_predictions({"a": ([1.0], [1.5]), "b": ([1.0], [0.5])})
    with pytest.raises(ValueError, match="pair"):
        S.ensemble_predictions({"a": [1.0, 2.0, 3.0], "b": ([1.0], [0.5])})


def test_two_stage_forest_classifies_and_regresses():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 2))
    y = np.where(X[:, 0] > 0, 1.0 + 2 * np.abs(X[:, 1]), 0.01)  # magnetic iff x0 > 0; size set by x1
    forest = S.TwoStageForest(0.1, n_estimators=50, seed=0).fit(X[:400], y[:400])
    m, p = forest.predict(X[400:])
    mag = y[400:] > 0.1
    assert np.mean((p >= 0.5) == mag) > 0.9
    assert S.mae(y[400:][mag], m[mag]) < 0.5 * S.mae(y[400:][mag], np.full(mag.sum(), y[:400][y[:400] > 0.1].mean()))
    with pytest.raises(ValueError, match="both classes"):
        S.TwoStageForest(0.1).fit(X[:10], np.ones(10))
    with pytest.raises(ValueError, match="rows"):
        S.TwoStageForest(0.1).fit(X[:10], y[:9])


@pytest.mark.parametrize("kind", ["cgcnn", "megnet"])
def test_train_two_stage_gnn_learns_both_stages(kind, one_torch_thread):
    structs = [M.scale_to_radii(M.prototype_structure("B2_CsCl", [a, b]))
               for a in ("Fe", "Co", "Ni", "Mn") for b in ("Al", "Ga", "Si", "Cu", "Pd", "Zn")]
    y = [2.2 * s.composition["Fe"] + 3.0 * s.composition["Mn"] for s in structs]  # only Fe and Mn are magnetic
    graphs = CG.structures_to_graphs(structs, cutoff=4.0, targets=[[v] for v in y])
    model, res = S.train_two_stage_gnn(kind, graphs[:20], graphs[20:], threshold=0.1, hidden=16, n_layers=1,
                                       epochs=80, batch_size=8, cutoff=4.0, device="cpu", seed=0)
    assert res.history["train_loss"].iloc[-1] < 0.5 * res.history["train_loss"].iloc[0]
    m, p = S.predict_two_stage_gnn(model, graphs)
    assert m.shape == p.shape == (24,) and np.all((p >= 0) & (p <= 1))
    assert np.mean((p >= 0.5) == (np.array(y) > 0.1)) >= 0.9  # stage 1 learned which element is magnetic
    with pytest.raises(ValueError, match="kind must be"):
        S.train_two_stage_gnn("schnet", graphs, graphs, threshold=0.1)
    with pytest.raises(ValueError, match="both classes"):
        S.train_two_stage_gnn(kind, graphs[:20], graphs[20:], threshold=100.0)


def test_composition_variance_share_separates_composition_from_structure():
    formulas = ["A", "A", "B", "B", "C"]
    only_composition = S.composition_variance_share([1.0, 1.0, 3.0, 3.0, 9.0], formulas)
    assert only_composition["structure_share"] == 0.0 and only_composition["n_formulas"] == 2
    only_structure = S.composition_variance_share([1.0, 3.0, 1.0, 3.0, 9.0], formulas)
    assert only_structure["structure_share"] == pytest.approx(1.0)
    assert np.isnan(S.composition_variance_share([1.0, 2.0], ["A", "B"])["structure_share"])


def test_roc_auc_and_auc_gaps():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    lab = rng.random(150) < 0.7
    good, noisier, blind = lab + 0.5 * rng.normal(size=150), lab + 2 * rng.normal(size=150), rng.normal(size=150)
    for s in (good, noisier, blind, np.round(good)):  # ties too
        assert S.roc_auc(lab, s) == pytest.approx(roc_auc_score(lab, s))
    gaps = S.auc_gaps(lab, {"good": good, "noisier": noisier, "blind": blind}, seed=0)
    assert gaps["good"]["gap"] == 0.0 and gaps["good"]["gap_lower"] == 0.0
    assert gaps["blind"]["gap_lower"] > 0  # a classifier that sees nothing is told apart from the best
    assert gaps["noisier"]["gap"] > 0 and gaps["noisier"]["gap_lower"] < gaps["blind"]["gap_lower"]
    with pytest.raises(ValueError, match="positive and one negative"):
        S.roc_auc([True, True], [0.1, 0.2])
    with pytest.raises(ValueError, match="at least two models"):
        S.auc_gaps(lab, {"good": good})
    with pytest.raises(ValueError, match="150 labels"):
        S.auc_gaps(lab, {"good": good, "short": good[:5]})


def test_permutation_pvalue_matches_the_plain_loop():
    rng = np.random.default_rng(3)
    a = rng.normal(size=80)
    b = a + 4 * rng.normal(size=80)
    b[:10] = b[10]  # ties
    r = np.random.default_rng(7)
    obs = S.spearman(a, b)
    null = np.array([S.spearman(a, r.permutation(b)) for _ in range(300)])
    assert S.permutation_pvalue(a, b, n_perm=300, seed=7) == pytest.approx((1 + np.sum(null >= obs)) / 301)


def test_two_stage_figure_static():
    import matplotlib

    matplotlib.use("Agg")
    from symviz.chapters.ch06_magnetic_screening import plots as V

    rng = np.random.default_rng(0)
    y = rng.gamma(2.0, 0.6, size=40)
    fig = V.two_stage_figure(y, rng.uniform(size=40), y + 0.2 * rng.normal(size=40), rng.uniform(0, 0.3, size=40),
                             [0, 1, 2], 0.1, 2.0)
    assert len(fig.axes) == 4
    with pytest.raises(ValueError, match="same length"):
        V.two_stage_figure(y, y[:3], y, y, [0], 0.1, 2.0)
