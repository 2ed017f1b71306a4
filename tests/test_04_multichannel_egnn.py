"""Chapter 04: charged N-body simulator, solar system and QM9 loaders, (MC-)EGNN models, exercise check."""
import numpy as np
import pytest
import torch

from symviz.chapters.ch04_multichannel_egnn.checks import check_mc_coord_update
from symviz.data import nbody, qm9, solar
from symviz.equivariance import check_equivariance
from symviz.nn import egnn
from symviz.chapters.ch04_multichannel_egnn import experiments as ex


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see tests/conftest.py


# ---------------------------------------------------------------------------------------------
# N-body simulator
# ---------------------------------------------------------------------------------------------

def test_simulator_reproducible_and_shapes():
    a = nbody.simulate_charged(6, n_frames=4, seed=3)
    b = nbody.simulate_charged(6, n_frames=4, seed=3)
    c = nbody.simulate_charged(6, n_frames=4, seed=4)
    assert a.positions.shape == (6, 4, 5, 3) and a.charges.shape == (6, 5)
    np.testing.assert_array_equal(a.positions, b.positions)
    assert not np.allclose(a.positions, c.positions)
    assert set(np.unique(a.charges)) <= {-1.0, 1.0}
    np.testing.assert_allclose(np.linalg.norm(a.velocities[:, 0], axis=-1), 0.5)
    assert a.times[1] == pytest.approx(0.1)


def test_forces_match_brute_force_and_newton_third_law():
    rng = np.random.default_rng(0)
    x, q = rng.normal(size=(4, 6, 3)), rng.choice([-1.0, 1.0], size=(4, 6))
    F, clipped = nbody.coulomb_forces(x, q)
    want = np.zeros_like(x)
    for s in range(4):
        for i in range(6):
            for j in range(6):
                if i != j:
                    d = x[s, i] - x[s, j]
                    want[s, i] += q[s, i] * q[s, j] * d / np.linalg.norm(d) ** 3
    np.testing.assert_allclose(F, want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(F.sum(1), 0.0, atol=1e-10)          # momentum conserved
    assert not clipped.any()
    Fc, clipped = nbody.coulomb_forces(np.array([[0.0, 0, 0], [0.01, 0, 0]]), np.array([1.0, -1.0]), clip=100.0)
    assert clipped and np.abs(Fc).max() == 100.0


def test_energy_conserved_without_clipping():
    sim = nbody.simulate_charged(40, n_frames=11, seed=1)
    E = nbody.total_energy(sim.positions, sim.velocities, sim.charges[:, None])
    drift = np.abs(E - E[:, :1]).max(1) / np.maximum(np.abs(E[:, 0]), 0.1)
    ok = ~sim.clipped
    assert ok.sum() >= 10
    assert np.median(drift[ok]) < 1e-4 and drift[ok].max() < 2e-2
    # momentum is exact without clipping
    sim2 = nbody.simulate_charged(10, n_frames=6, clip=None, seed=2)
    p = sim2.velocities.sum(2)
    np.testing.assert_allclose(p, np.broadcast_to(p[:, :1], p.shape), atol=1e-9)


def test_dataset_and_splits(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMVIZ_CACHE", str(tmp_path))
    ds = nbody.charged_dataset(5, seed=0, frame_in=1, frame_out=3)
    sim = nbody.simulate_charged(5, n_frames=4, seed=0)
    np.testing.assert_allclose(ds["target"].numpy(), sim.positions[:, 3], rtol=1e-6)
    s1 = nbody.charged_splits(4, 3, 2, seed=0, frame_in=1, frame_out=2)
    s2 = nbody.charged_splits(4, 3, 2, seed=0, frame_in=1, frame_out=2)      # from the cache
    assert s1["val"]["loc"].shape == (3, 5, 3)
    assert torch.equal(s1["test"]["target"], s2["test"]["target"])
    assert not torch.equal(s1["train"]["loc"][:2], s1["val"]["loc"][:2])
    assert len(nbody.NBodyDataset(s1["train"])) == 4


def test_splits_simulated_together_equal_splits_simulated_alone():
    sp = nbody.charged_splits(4, 3, 2, seed=5, cache=False, frame_in=1, frame_out=3, clip=50.0)
    for name, n in (("train", 4), ("val", 3), ("test", 2)):
        alone = nbody.charged_dataset(n, seed=5 + nbody._SPLIT_SEED_OFFSET[name], frame_in=1, frame_out=3, clip=50.0)
        for k in alone:
            assert torch.equal(sp[name][k], alone[k]), (name, k)
    with pytest.raises(TypeError, match="unknown simulator arguments"):
        nbody.charged_splits(2, 2, 2, cache=False, frame_in=1, frame_out=2, temperature=3.0)


def test_tensor_batches_and_training_spikes():
    t = torch.arange(10)
    a = [b[0].tolist() for b in ex.TensorBatches(t, batch_size=4, shuffle=True, seed=1, drop_last=True)]
    b = [b[0].tolist() for b in ex.TensorBatches(t, batch_size=4, shuffle=True, seed=1, drop_last=True)]
    assert a == b and len(a) == 2 and len(set(sum(a, []))) == 8                 # repeatable, no repeats
    with pytest.raises(ValueError, match="same first dimension"):
        ex.TensorBatches(t, t[:3], batch_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        ex.TensorBatches(t, batch_size=0)
    import pandas as pd
    calm = pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [1.0, 0.5, 0.6]})
    assert ex.training_spikes(calm) == []


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_sims=0), "n_sims"), (dict(n_sims=2, dt=-1.0), "dt"), (dict(n_sims=2, n_particles=1), "n_particles"),
])
def test_simulator_bad_inputs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        nbody.simulate_charged(**kwargs)


def test_dataset_bad_frames():
    with pytest.raises(ValueError, match="frame_out"):
        nbody.charged_dataset(2, frame_in=5, frame_out=5)


# ---------------------------------------------------------------------------------------------
# Solar system and QM9
# ---------------------------------------------------------------------------------------------

def test_solar_physics():
    st = solar.solar_states([solar.J2000, solar.J2000 + 365.25 / 2])
    earth = st.positions[:, 3] - st.positions[:, 0]
    r = np.linalg.norm(earth, axis=-1)
    assert np.all((r > 0.98) & (r < 1.02))
    assert np.dot(earth[0], earth[1]) < -0.9                       # half a year: the other side of the Sun
    speed = np.linalg.norm(st.velocities[0, 3], axis=-1)            # 2*pi AU / year ~ 0.0172 AU/day
    assert speed == pytest.approx(2 * np.pi / 365.25, rel=0.05)
    m = solar.relative_masses()
    assert m[0] == 1.0 and m[5] == pytest.approx(9.55e-4, rel=0.01)   # Jupiter ~ 1/1047 solar masses


def test_solar_dataset_periods():
    tr = solar.solar_dataset(5, period="train", seed=0)
    te = solar.solar_dataset(5, period="test", seed=0)
    assert tr["loc"].shape == (5, 6, 3) and tr["mass"].shape == (5, 6, 1)
    assert float(tr["jd"].max()) < solar.J2000 <= float(te["jd"].min())
    with pytest.raises(ValueError, match="period"):
        solar.solar_dataset(5, period="later")
    with pytest.raises(ValueError, match="bodies"):
        solar.solar_states([solar.J2000], bodies=("sun", "vulcan"))
    with pytest.raises(ValueError, match="jd"):
        solar.solar_states([1.0])


def test_qm9_loader(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMVIZ_CACHE", str(tmp_path))
    d = qm9.load_qm9(40, targets=("gap", "mu"), seed=0, parts=(1,))
    assert d["pos"].shape == (40, 29, 3) and d["y"].shape == (40, 2)
    n_atoms = d["mask"].sum(1)
    assert int(n_atoms.min()) >= 3 and int(n_atoms.max()) <= 29
    assert bool((d["z"][~d["mask"]] == -1).all()) and bool((d["pos"][~d["mask"]] == 0).all())
    heavy = d["onehot"][..., 1:].sum((1, 2))
    assert bool((heavy >= 1).all()) and bool((heavy <= 9).all())   # QM9: up to 9 heavy atoms
    assert 2.0 < float(d["y"][:, 0].mean()) < 12.0                 # gap in eV
    s = qm9.qm9_splits(d, 20, 10, 10, seed=0)
    assert s["train"]["y"].shape == (20, 2)
    with pytest.raises(ValueError, match="targets"):
        qm9.load_qm9(10, targets=("energy!",))
    with pytest.raises(ValueError, match="n_train"):
        qm9.qm9_splits(d, 30, 10, 10)


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------

def _inputs(B=3, n=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    loc, vel = torch.randn(B, n, 3, generator=g, dtype=dtype), torch.randn(B, n, 3, generator=g, dtype=dtype)
    q = (torch.randint(0, 2, (B, n, 1), generator=g) * 2 - 1).to(dtype)
    return egnn.nbody_inputs(loc, vel, q)


def _model(C, path="auto", seed=0):
    torch.manual_seed(seed)
    m = egnn.MCEGNN(1, 16, 3, C, edge_nf=1, path=path).double()
    for layer in m.layers:                      # larger coordinate updates than at init: a stronger test
        torch.nn.init.normal_(layer.coord_mlp[2].weight, std=0.2)
    return m


def _perm_edges(T, a):
    return a if T.perm is None else a[:, T.perm][:, :, T.perm]


@pytest.mark.parametrize("C, path", [(1, "dense"), (3, "dense"), (2, "edges")])
def test_mcegnn_e3_and_permutation_equivariant(C, path):
    m = _model(C, path)
    rep = check_equivariance(lambda h, x, v, ea: m(h, x, v, ea).x, _inputs(),
                             ("node_scalar", "point", "node_vector", _perm_edges), "point",
                             group="E(3)xS_n", trials=5, n_nodes=5)
    rep.assert_below(1e-12)
    rep_h = check_equivariance(lambda h, x, v, ea: m(h, x, v, ea).h, _inputs(),
                               ("node_scalar", "point", "node_vector", _perm_edges), "node_scalar",
                               group="E(3)xS_n", trials=4, n_nodes=5)
    rep_h.assert_below(1e-12)


def test_mcegnn_float32_equivariance_tolerance():
    m = _model(2).float()
    rep = check_equivariance(lambda h, x, v, ea: m(h, x, v, ea).x, _inputs(dtype=torch.float32),
                             ("node_scalar", "point", "node_vector", _perm_edges), "point",
                             group="E(3)xS_n", trials=8, dtype=None, n_nodes=5)
    rep.assert_below(1e-5)


@pytest.mark.parametrize("C", [1, 3])
def test_dense_and_edge_paths_agree(C):
    h, x, v, ea = _inputs(B=4, n=6)
    dense, edges = _model(C, "dense"), _model(C, "edges")
    edges.load_state_dict(dense.state_dict())
    a, b = dense(h, x, v, ea), edges(h, x, v, ea)
    torch.testing.assert_close(a.x, b.x, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(a.h, b.h, rtol=1e-10, atol=1e-10)
    # padding: graphs of different sizes in one batch
    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[1, 4:] = False
    mask[3, 2:] = False
    a, b = dense(h, x, v, ea, mask), edges(h, x, v, ea, mask)
    torch.testing.assert_close(a.x, b.x, rtol=1e-10, atol=1e-10)
    small = dense(h[1:2, :4], x[1:2, :4], v[1:2, :4], ea[1:2, :4, :4])
    torch.testing.assert_close(small.x, a.x[1:2, :4], rtol=1e-10, atol=1e-10)
    # the explicit sparse-graph call on a complete graph
    B, n = 4, 6
    ei = egnn.fully_connected_edges(torch.ones(B, n, dtype=torch.bool))
    g = dense.forward_graph(h.reshape(-1, 1), x.reshape(-1, 3), ei, v.reshape(-1, 3), ea.reshape(B * n, n, 1)[ei[0], ei[1] % n])
    torch.testing.assert_close(g.x.reshape(B, n, 3), dense(h, x, v, ea).x, rtol=1e-10, atol=1e-10)


def test_off_diagonal_and_its_inverse():
    t = torch.arange(2 * 4 * 4 * 3).view(2, 4, 4, 3)
    off = egnn.off_diagonal(t)
    want = torch.stack([torch.stack([t[b, i, [j for j in range(4) if j != i]] for i in range(4)]) for b in range(2)])
    assert torch.equal(off, want)
    back = egnn._pad_off_diagonal(off)
    assert torch.equal(back, t * (1 - torch.eye(4, dtype=t.dtype))[None, :, :, None])


_GRAD_CASES = [  # channels, velocity, edge_nf, padded, update_coords, loss uses h
    (1, True, 1, False, True, False), (2, True, 1, True, True, True), (3, False, 0, True, True, True),
    (2, True, 0, False, False, True), (1, False, 1, True, True, False), (3, True, 1, False, True, True)]


@pytest.mark.parametrize("C, vel, enf, padded, upd, use_h", _GRAD_CASES)
def test_dense_hand_written_backward_matches_autograd_edges(C, vel, enf, padded, upd, use_h):
    """The dense path's hand-written backward gives autograd's gradients (edge-list path) for every input and weight."""
    torch.manual_seed(1)
    dense = egnn.MCEGNN(2, 8, 2, C, edge_nf=enf, velocity=vel, update_coords=upd, path="dense").double()
    edges = egnn.MCEGNN(2, 8, 2, C, edge_nf=enf, velocity=vel, update_coords=upd, path="edges").double()
    edges.load_state_dict(dense.state_dict())
    g = torch.Generator().manual_seed(2)
    B, n = 3, 5
    h = torch.randn(B, n, 2, generator=g, dtype=torch.float64, requires_grad=True)
    x = torch.randn(B, n, 3, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(B, n, 3, generator=g, dtype=torch.float64, requires_grad=True) if vel else None
    ea = torch.randn(B, n, n, enf, generator=g, dtype=torch.float64, requires_grad=True) if enf else None
    mask = None
    if padded:
        mask = torch.ones(B, n, dtype=torch.bool)
        mask[0, 3:] = False
        mask[2, 4] = False
    inputs = [t for t in (h, x, v, ea) if t is not None]
    grads = []
    for m in (dense, edges):
        out = m(h, x, v, ea, mask)
        loss = 0.3 * (out.x_channels ** 2).sum() + out.x_channels.sum() + ((out.h ** 2).sum() if use_h else 0)
        gs = torch.autograd.grad(loss, inputs + list(m.parameters()), allow_unused=True)
        grads.append([torch.zeros(()) if t is None else t for t in gs])
    assert len(grads[0]) == len(inputs) + len(list(dense.parameters()))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_dense_backward_gradcheck():
    torch.manual_seed(0)
    m = egnn.MCEGNN(2, 4, 2, 2, edge_nf=1, path="dense").double()
    g = torch.Generator().manual_seed(0)
    args = [torch.randn(*s, generator=g, dtype=torch.float64, requires_grad=True)
            for s in ((2, 4, 2), (2, 4, 3), (2, 4, 3), (2, 4, 4, 1))]
    assert torch.autograd.gradcheck(lambda h, x, v, ea: (m(h, x, v, ea).x_channels, m(h, x, v, ea).h), args)


def test_compiled_model_matches_eager():
    """The dense layer traces into one graph (torch.compile with the aot_eager backend: no C++ needed)."""
    from symviz.train import CompileOrEager

    m = _model(2, "dense")
    w = CompileOrEager(m, backend="aot_eager", fullgraph=True)
    h, x, v, ea = _inputs()
    x = x.clone().requires_grad_(True)
    a, b = w(h, x, v, ea), m(h, x, v, ea)
    assert w.is_compiled and w.fallback_reason is None
    torch.testing.assert_close(a.x, b.x)
    params = [x] + list(m.parameters())           # the last layer's h update does not reach x: allow_unused
    ga = torch.autograd.grad(a.x.square().sum(), params, allow_unused=True)
    gb = torch.autograd.grad(b.x.square().sum(), params, allow_unused=True)
    for t, p, q in zip(params, ga, gb):
        torch.testing.assert_close(torch.zeros_like(t) if p is None else p, torch.zeros_like(t) if q is None else q)
    assert list(w.state_dict()) == ["module." + k for k in m.state_dict()]


def test_inductor_compiled_training_step_matches_eager():
    """The real torch.compile (inductor, C++ kernels; ~20 s) computes the eager model's loss and gradients.
    Where no compiler works, CompileOrEager must say so and still compute them eagerly."""
    from symviz.train import CompileOrEager

    torch.manual_seed(0)
    m = egnn.MCEGNN(1, 8, 1, 2, edge_nf=1, path="dense")
    w = CompileOrEager(m, dynamic=False)
    h, x, v, ea = (t.float() for t in _inputs(B=4))
    target = torch.randn(4, 5, 3, generator=torch.Generator().manual_seed(1))
    params = list(m.parameters())
    g_c = torch.autograd.grad(((w(h, x, v, ea).x - target) ** 2).mean(), params, allow_unused=True)
    g_e = torch.autograd.grad(((m(h, x, v, ea).x - target) ** 2).mean(), params, allow_unused=True)
    assert w.is_compiled or w.fallback_reason
    for p, a, b in zip(params, g_c, g_e):
        torch.testing.assert_close(torch.zeros_like(p) if a is None else a, torch.zeros_like(p) if b is None else b,
                                   rtol=1e-4, atol=1e-6)


def test_compile_failure_falls_back_to_eager():
    from symviz.train import CompileOrEager

    def broken_backend(gm, example_inputs):
        raise RuntimeError("no C++ compiler here")

    m = _model(1, "dense")
    w = CompileOrEager(m, backend=broken_backend)
    h, x, v, ea = _inputs()
    with pytest.warns(RuntimeWarning, match="running it eagerly"):
        out = w(h, x, v, ea)
    assert not w.is_compiled and "no C++ compiler here" in w.fallback_reason
    torch.testing.assert_close(out.x, m(h, x, v, ea).x)
    # mistakes in the inputs are not swallowed by the fallback
    with pytest.raises(ValueError, match="x must have shape"):
        CompileOrEager(_model(1, "dense"), backend="eager")(h, x[..., :2], v, ea)
    with pytest.raises(TypeError, match="wraps a torch.nn.Module"):
        CompileOrEager(lambda t: t)


def test_auto_path_choice():
    m = egnn.MCEGNN(1, 8, 1, 2)
    assert m.path == "auto" and m.dense_max_nodes >= 5


def test_egnn_is_one_channel_and_param_overhead_small():
    e, mc = egnn.EGNN(1, 64, 4, edge_nf=1), egnn.MCEGNN(1, 64, 4, 2, edge_nf=1)
    assert e.channels == 1
    pe, pm = egnn.count_parameters(e), egnn.count_parameters(mc)
    assert pe < pm < 1.05 * pe
    naive = egnn.NaiveEGNN(1, 64, 4, edge_nf=1)
    assert abs(egnn.count_parameters(naive) - pe) / pe < 0.01      # same architecture, regrouped weights


def test_naive_egnn_equivariant():
    torch.manual_seed(0)
    m = egnn.NaiveEGNN(1, 16, 2, edge_nf=1).double()
    rep = check_equivariance(lambda h, x, v, ea: m(h, x, v, ea), _inputs(),
                             ("node_scalar", "point", "node_vector", _perm_edges), "point",
                             group="E(3)xS_n", trials=4, n_nodes=5)
    rep.assert_below(1e-12)


def test_regressor_invariant():
    torch.manual_seed(0)
    m = egnn.MCEGNNRegressor(5, 16, 2, channels=3).double()
    g = torch.Generator().manual_seed(1)
    h = torch.nn.functional.one_hot(torch.randint(0, 5, (2, 7), generator=g), 5).double()
    x = torch.randn(2, 7, 3, dtype=torch.float64, generator=g)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, 5:] = False
    f = lambda h, x: m(h, x, mask)
    check_equivariance(f, (h, x), ("scalar", "point"), "scalar", group="E(3)", trials=5).assert_below(1e-12)
    # padded atoms do not change the prediction
    torch.testing.assert_close(m(h[1:, :5], x[1:, :5])[0], m(h, x, mask)[1], rtol=1e-10, atol=1e-10)


def test_multichannel_update_reduces_to_egnn():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 3, 1, dtype=torch.float64, generator=g)
    w = torch.randn(2, 4, 4, 1, 1, dtype=torch.float64, generator=g)
    got = egnn.multichannel_coord_update(x, w)[..., 0]
    x0, w0 = x[..., 0], w[..., 0, 0]
    want = x0 + ((x0[:, :, None] - x0[:, None]) * w0[..., None]).sum(2) / 3
    torch.testing.assert_close(got, want)


def test_gram_invariants():
    d = torch.randn(7, 3, 4, dtype=torch.float64)
    R = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))[0]
    torch.testing.assert_close(egnn.gram_invariants(R @ d), egnn.gram_invariants(d))
    assert egnn.gram_invariants(d).shape == (7, egnn.n_gram_invariants(4)) == (7, 10)


def test_bad_inputs_give_clear_errors():
    m = egnn.MCEGNN(1, 8, 1, channels=2, edge_nf=1)
    h, x, v, ea = (t.float() for t in _inputs())
    with pytest.raises(ValueError, match="h must have shape"):
        m(h[..., :0], x, v, ea)
    with pytest.raises(ValueError, match="x must have shape"):
        m(h, x[..., :2], v, ea)
    with pytest.raises(ValueError, match="3 channels but the model was built with channels=2"):
        m(h, x[..., None].expand(-1, -1, -1, 3), v, ea)
    with pytest.raises(ValueError, match="edge_attr"):
        m(h, x, v)
    with pytest.raises(ValueError, match="v must have shape"):
        m(h, x, v[:, :2], ea)
    with pytest.raises(ValueError, match="mask must be a bool"):
        m(h, x, v, ea, torch.ones(3, 5))
    with pytest.raises(ValueError, match="is on meta but the model is on cpu"):
        m(h.to("meta"), x, v, ea)
    with pytest.raises(ValueError, match="channels"):
        egnn.MCEGNN(1, 8, 1, channels=0)
    with pytest.raises(ValueError, match="path"):
        egnn.MCEGNN(1, 8, 1, path="sparse")
    with pytest.raises(ValueError, match="w must have shape"):
        egnn.multichannel_coord_update(torch.zeros(1, 3, 3, 2), torch.zeros(1, 3, 3, 1, 1))
    with pytest.raises(ValueError, match="edge_index"):
        m.forward_graph(h[0], x[0], torch.zeros(3, 2, dtype=torch.long))


def test_check_mc_coord_update():
    assert check_mc_coord_update(egnn.multichannel_coord_update)
    assert not check_mc_coord_update(lambda x, w: x.clone())
    assert not check_mc_coord_update(lambda x, w: 1 / 0)


def test_training_helpers_run_and_learn(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMVIZ_CACHE", str(tmp_path))
    sp = nbody.charged_splits(60, 30, 30, seed=0, frame_in=2, frame_out=5)
    r = ex.train_nbody(sp, channels=2, seed=0, hidden_nf=8, n_layers=2, epochs=8, lr=3e-3, device="cpu")
    assert np.isfinite(r.test) and r.test < 2 * ex.linear_baseline_mse(sp["test"]) + 1.0
    assert r.history.shape[0] == 8
    ms = ex.step_time_ms(egnn.MCEGNN(1, 8, 1, 2, edge_nf=1), batch_size=4, repeats=1)
    assert ms > 0


def test_qm9_heavy_atoms_only(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMVIZ_CACHE", str(tmp_path))
    d = qm9.load_qm9(30, seed=1, parts=(1,), hydrogens=False)
    assert d["pos"].shape == (30, 9, 3)
    assert bool((d["z"][d["mask"]] > 0).all())                       # no hydrogen left


# ---------------------------------------------------------------------------------------------
# Initialisation as the EGNN reference code, and double backward
# ---------------------------------------------------------------------------------------------

def _bound(t):
    """Half-width of a U(-a, a) sample estimated from its std (a = sqrt(3) std): robust to the sample's extremes."""
    return float(t.std()) * 3 ** 0.5


@pytest.mark.parametrize("C, edge_nf, velocity", [(1, 1, True), (2, 1, True), (3, 0, False)])
def test_split_layers_start_as_the_concatenated_layers(C, edge_nf, velocity):
    """Each block of a split first layer has the initial scale of the Linear on the concatenation it
    replaces (PyTorch's default, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and bias), as in the EGNN
    reference code. With the blocks' own fan-in the weights on |x_i - x_j|^2 and q_i q_j start ~8x larger."""
    H = 64
    torch.manual_seed(0)
    layer = egnn.MCEGNN(1, H, 1, C, edge_nf=edge_nf, velocity=velocity).layers[0]
    n_inv = egnn.n_gram_invariants(C) + edge_nf
    ref_e = torch.nn.Linear(2 * H + n_inv, H).requires_grad_(False)   # phi_e layer 1 as the paper writes it
    ref_h = torch.nn.Linear(2 * H, H).requires_grad_(False)           # phi_h layer 1
    W, b = layer.node_in.weight.detach(), layer._node_bias().detach()
    blocks = {                                               # block -> (tensor, reference tensor)
        "phi_e receiver half": (W[:H], ref_e.weight[:, :H]),
        "phi_e sender half": (W[H:2 * H], ref_e.weight[:, H:2 * H]),
        "phi_e invariant half": (layer.edge_in_inv.weight.detach(), ref_e.weight[:, 2 * H:]),
        "phi_e bias": (b[:H], ref_e.bias),
        "phi_h node half": (W[2 * H:3 * H], ref_h.weight[:, :H]),
        "phi_h message half": (layer.node_in_agg.weight.detach(), ref_h.weight[:, H:]),
        "phi_h bias": (b[2 * H:3 * H], ref_h.bias),
    }
    for name, (t, ref) in blocks.items():
        fan_in = 2 * H + n_inv if name.startswith("phi_e") else 2 * H
        bound = 1 / fan_in ** 0.5
        assert float(t.abs().max()) <= bound, f"{name}: |w| exceeds 1/sqrt({fan_in})"
        tol = 0.35 if t.numel() < 200 else 0.15              # a few hundred samples estimate the bound to ~10-30%
        assert _bound(t) == pytest.approx(bound, rel=tol), name
        assert _bound(t) == pytest.approx(_bound(ref), rel=2 * tol), name
    assert torch.equal(b[H:2 * H], torch.zeros(H))           # one bias per concatenated layer, not two
    if velocity:
        assert _bound(W[3 * H:]) == pytest.approx(1 / H ** 0.5, rel=0.15)     # phi_v layer 1: Linear(H, H)
    last = layer.coord_mlp[2]                                # phi_x output: xavier_uniform(gain=0.001), no bias
    assert last.bias is None
    assert float(last.weight.detach().abs().max()) <= 0.001 * (6 / (H + C * C)) ** 0.5


def test_split_init_would_catch_the_blocks_own_fan_in():
    """The check above fails on the old initialisation (each block with its own fan-in)."""
    H = 64
    layer = egnn.MCEGNN(1, H, 1, 2, edge_nf=1).layers[0]
    with torch.no_grad():
        torch.nn.init.kaiming_uniform_(layer.edge_in_inv.weight, a=5 ** 0.5)     # nn.Linear(n_inv, H) default
    fan_e = 2 * H + layer.n_inv
    assert _bound(layer.edge_in_inv.weight.detach()) > 5 / fan_e ** 0.5


def test_parameter_count_equals_the_reference_egnn():
    """Same architecture as the straightforward EGNN (and the reference code), to the parameter."""
    for vel in (True, False):
        mc = egnn.MCEGNN(1, 32, 3, 1, edge_nf=1, velocity=vel)
        if vel:
            assert egnn.count_parameters(mc) == egnn.count_parameters(egnn.NaiveEGNN(1, 32, 3, edge_nf=1))
    naive = egnn.NaiveEGNN(1, 32, 2, edge_nf=1)
    assert all(c[2].bias is None and float(c[2].weight.detach().abs().max()) <= 0.001 * (6 / 33) ** 0.5 for c in naive.coord_mlps)


def _energy_model(path):
    torch.manual_seed(0)
    return egnn.MCEGNNRegressor(5, 8, 2, channels=2, path=path).double()


def test_double_backward_dense_raises_clear_error_edges_supports_it():
    """Force matching: forces = -dE/dx with create_graph=True, then a loss on the forces."""
    g = torch.Generator().manual_seed(0)
    h = torch.nn.functional.one_hot(torch.randint(0, 5, (2, 6), generator=g), 5).double()
    x = torch.randn(2, 6, 3, dtype=torch.float64, generator=g, requires_grad=True)
    dense, edges = _energy_model("dense"), _energy_model("edges")
    edges.load_state_dict(dense.state_dict())
    # first derivatives agree on both paths
    f_d = -torch.autograd.grad(dense(h, x).sum(), x)[0]
    f_e = -torch.autograd.grad(edges(h, x).sum(), x)[0]
    torch.testing.assert_close(f_d, f_e, rtol=1e-10, atol=1e-12)
    with pytest.raises(RuntimeError, match=r"path='edges'"):
        torch.autograd.grad(dense(h, x).sum(), x, create_graph=True)
    forces = -torch.autograd.grad(edges(h, x).sum(), x, create_graph=True)[0]
    (forces ** 2).sum().backward()
    grads = [p.grad for p in edges.trunk.layers[0].parameters()]   # (the last layer's x update reaches no output)
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    # switching an existing model's path is enough
    dense.trunk.path = "edges"
    forces_d = -torch.autograd.grad(dense(h, x).sum(), x, create_graph=True)[0]
    torch.testing.assert_close(forces_d, forces)
