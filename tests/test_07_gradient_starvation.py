"""Tests for chapter 07 (gradient starvation): spectral decoupling losses, data builders, dynamics tools."""

import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from symviz.chapters.ch07_gradient_starvation.checks import check_spectral_decoupling_loss
from symviz.data.starvation import (colored_fashion_mnist, colored_images, color_agreement, shape_agreement,
                                    two_feature_task, two_moons_with_margin)
from symviz.losses import spectral_decoupling, spectral_decoupling_centred, spectral_decoupling_loss
from symviz.chapters.ch07_gradient_starvation.experiments import (MLP, BRANCHES, boundary_points, coupling_toy, decision_grid,
                                      decision_margin, feature_responses, linear_feature_dynamics, ntk_features,
                                      train_colored_branches, train_full_batch, ColourSplitInput)
import symviz.chapters.ch07_gradient_starvation.experiments as ch07_experiments

torch.set_num_threads(1)


# ---------------------------------------------------------------- losses

def test_sd_value_binary_and_multiclass():
    z = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    assert float(spectral_decoupling(z, 0.5)) == pytest.approx(0.25 * (1 + 4 + 9) / 3)
    zc = torch.tensor([[1.0, 2.0], [0.0, -1.0]], dtype=torch.float64)
    assert float(spectral_decoupling(zc, 2.0)) == pytest.approx((5 + 1) / 2)
    assert float(spectral_decoupling(z, 0.0)) == 0.0


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 12), st.integers(1, 5), st.floats(0.0, 10.0), st.floats(-3.0, 3.0))
def test_sd_properties(batch, classes, lam, scale):
    g = torch.Generator().manual_seed(batch * 7 + classes)
    z = torch.randn(batch, classes, generator=g, dtype=torch.float64)
    p = spectral_decoupling(z, lam)
    # quadratic in the logits, invariant to reordering the batch, gradient lam * z / batch
    assert torch.allclose(spectral_decoupling(scale * z, lam), scale ** 2 * p)
    assert torch.allclose(spectral_decoupling(z[torch.randperm(batch, generator=g)], lam), p)
    zz = z.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(spectral_decoupling(zz, lam), zz)
    assert torch.allclose(grad, lam * z / batch)


@pytest.mark.parametrize("lam", [-0.1, float("nan"), float("inf"), "1", True, None])
def test_sd_bad_lambda(lam):
    with pytest.raises(ValueError, match="lam"):
        spectral_decoupling(torch.zeros(3), lam)


@pytest.mark.parametrize("logits", [torch.zeros(2, 3, 4), torch.zeros(0), torch.tensor(1.0), [1.0, 2.0]])
def test_sd_bad_shape(logits):
    with pytest.raises(ValueError, match="logits"):
        spectral_decoupling(logits, 0.1)


def test_sd_loss_is_ce_plus_penalty():
    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(10, generator=g), (torch.rand(10, generator=g) > 0.5).float()
    assert torch.allclose(spectral_decoupling_loss(z, y, 0.3),
                          F.binary_cross_entropy_with_logits(z, y) + 0.15 * (z ** 2).mean())
    zc, yc = torch.randn(10, 4, generator=g), torch.randint(0, 4, (10,), generator=g)
    assert torch.allclose(spectral_decoupling_loss(zc, yc, 0.3),
                          F.cross_entropy(zc, yc) + 0.15 * (zc ** 2).sum(1).mean())
    with pytest.raises(ValueError, match="targets"):
        spectral_decoupling_loss(z, y[:5], 0.1)


def test_sd_centred():
    y = torch.tensor([0, 1, 1, 0])
    assert float(spectral_decoupling_centred(torch.tensor([-2.0, 2.0, 2.0, -2.0]), y, 1.0, gamma=2.0)) == 0.0
    assert float(spectral_decoupling_centred(torch.tensor([0.0, 0.0, 0.0, 0.0]), y, 1.0, gamma=(0.0, 0.0))) == 0.0
    assert float(spectral_decoupling_centred(torch.zeros(4), y, 2.0, gamma=1.0)) == pytest.approx(1.0)
    # gamma = 0 is plain SD
    z = torch.randn(4, 3)
    yc = torch.tensor([0, 2, 1, 2])
    assert torch.allclose(spectral_decoupling_centred(z, yc, 0.7, gamma=0.0), spectral_decoupling(z, 0.7))
    centres = 3.0 * torch.eye(3)
    assert float(spectral_decoupling_centred(centres[yc], yc, 1.0, gamma=centres)) == 0.0
    with pytest.raises(ValueError, match="targets"):
        spectral_decoupling_centred(torch.zeros(4), torch.tensor([0, 1, 2, 0]), 1.0, gamma=1.0)
    with pytest.raises(ValueError, match="gamma"):
        spectral_decoupling_centred(torch.zeros(4), y, 1.0, gamma=(1.0, 2.0, 3.0))


def _sd_solution(logits, targets, lam):
    return F.binary_cross_entropy_with_logits(logits, targets) + 0.5 * lam * (logits ** 2).mean()


WRONG_SD_LOSSES = {  # plausible wrong answers, and what the verdict must say about each
    "lambda instead of lambda/2": (lambda z, y, lam: F.binary_cross_entropy_with_logits(z, y) + lam * (z ** 2).mean(),
                                   "the factor is λ/2"),
    "sum over the batch": (lambda z, y, lam: F.binary_cross_entropy_with_logits(z, y) + 0.5 * lam * (z ** 2).sum(),
                           "sums over the batch"),
    "penalising probabilities": (lambda z, y, lam: F.binary_cross_entropy_with_logits(z, y)
                                 + 0.5 * lam * torch.sigmoid(z).pow(2).mean(), "probabilities"),
    "missing cross-entropy": (lambda z, y, lam: 0.5 * lam * (z ** 2).mean(), "cross-entropy term is missing"),
    "penalty subtracted": (lambda z, y, lam: F.binary_cross_entropy_with_logits(z, y) - 0.5 * lam * (z ** 2).mean(),
                           "subtracted"),
    "summed cross-entropy": (lambda z, y, lam: F.binary_cross_entropy_with_logits(z, y, reduction="sum")
                             + 0.5 * lam * (z ** 2).mean(), "cross-entropy is summed"),
    "not differentiable": (lambda z, y, lam: torch.tensor(float(_sd_solution(z.detach(), y, lam))), "not differentiable"),
    "not a scalar": (lambda z, y, lam: F.binary_cross_entropy_with_logits(z, y, reduction="none") + 0.5 * lam * z ** 2,
                     "scalar"),
}


def test_check_spectral_decoupling_loss_passes_reference_and_solution():
    assert check_spectral_decoupling_loss(spectral_decoupling_loss)
    assert check_spectral_decoupling_loss(_sd_solution)


@pytest.mark.parametrize("name", list(WRONG_SD_LOSSES))
def test_check_spectral_decoupling_loss_rejects_wrong_answers(name, capsys):
    fn, says = WRONG_SD_LOSSES[name]
    result = check_spectral_decoupling_loss(fn)
    assert not result
    assert says in result.message, result.message
    assert "NOT YET" in capsys.readouterr().out


def test_the_template_goes_to_the_reference_and_training_uses_what_was_accepted(monkeypatch):
    from symviz import report

    monkeypatch.delenv("SYMVIZ_SOLUTIONS", raising=False)
    report._exercises.clear()

    def template(logits, targets, lam):
        raise NotImplementedError("my_sd_loss: return the loss")

    try:
        accepted = report.accept("spectral decoupling loss", template, check_spectral_decoupling_loss,
                                 reference=spectral_decoupling_loss, solution=_sd_solution)
        assert accepted.source == "reference" and not accepted.passed
        x, y = two_moons_with_margin(n=40, seed=0)
        runs = {}
        for name, fn in (("accepted", accepted), ("default", None)):
            torch.manual_seed(0)
            net = MLP(2, 16)
            train_full_batch(net, x, y, lam=0.1, steps=20, loss_fn=fn)
            runs[name] = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
        assert torch.equal(runs["accepted"], runs["default"])
        assert report.exercises()[0]["used_downstream"]
        monkeypatch.setenv("SYMVIZ_SOLUTIONS", "1")
        solved = report.accept("spectral decoupling loss", template, check_spectral_decoupling_loss,
                               reference=spectral_decoupling_loss, solution=_sd_solution)
        assert solved.source == "solution"
    finally:
        report._exercises.clear()


def test_training_calls_the_loss_it_is_given():
    calls = []

    def spy(logits, targets, lam):
        calls.append(lam)
        return spectral_decoupling_loss(logits, targets, lam)

    x, y = two_moons_with_margin(n=40, seed=0)
    train_full_batch(MLP(2, 8), x, y, lam=0.2, steps=5, loss_fn=spy)
    assert calls == [0.2] * 5
    with pytest.raises(TypeError, match="loss_fn"):
        train_full_batch(MLP(2, 8), x, y, steps=5, loss_fn="sd")
    calls.clear()
    g = torch.Generator().manual_seed(0)
    xc, yc = torch.rand(30, 2, 3, 3, generator=g), (torch.rand(30, generator=g) > 0.5).long()
    make = lambda: MLP(18, 8, depth=2, init="xavier")
    train_colored_branches(make, xc, yc, xc, yc, branches=["sd", "erm"], steps=6, anneal=2, coef=0.25, sd_loss=spy,
                           log_every=2)
    # phase 1: lam = 2 coef; the paper's recipe after the switch: c * (nll + mean z^2) = c * sd_loss(.., lam=2)
    assert calls == [0.5, 0.5, 2.0, 2.0, 2.0, 2.0]
    with pytest.raises(TypeError, match="sd_loss"):
        train_colored_branches(make, xc, yc, xc, yc, steps=6, anneal=2, sd_loss=3)


def test_colored_branches_reproduce_the_papers_written_loss():
    """sd_loss with lam = 2 (and 2c in phase 1) is the paper's c * (nll + mean(z^2)), to the last bit."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(40, 2, 3, 3, generator=g), (torch.rand(40, generator=g) > 0.5).long()
    make = lambda: MLP(18, 8, depth=2, init="xavier")
    ours = train_colored_branches(make, x, y, x, y, branches=["sd"], steps=20, anneal=8, lr=1e-3, coef=1e-3)["sd"]
    written = train_colored_branches(make, x, y, x, y, branches=["sd"], steps=20, anneal=8, lr=1e-3, coef=1e-3,
                                     sd_loss=lambda z, t, lam: F.binary_cross_entropy_with_logits(z, t)
                                     + (lam / 2) * (z ** 2).mean())["sd"]
    for p, q in zip(ours.model.parameters(), written.model.parameters()):
        assert torch.allclose(p, q, rtol=0, atol=1e-7)


# ---------------------------------------------------------------- data

@pytest.mark.parametrize("margin", [0.0, 0.1, 0.3])
def test_two_moons_margin_is_measured(margin):
    x, y = two_moons_with_margin(n=300, noise=0.1, margin=margin, seed=1)
    assert x.shape == (300, 2) and set(y.tolist()) == {0, 1}
    assert float(x[y == 1, 0].max()) <= -margin + 1e-6
    assert float(x[y == 0, 0].min()) >= margin - 1e-6
    # the linear classifier f(x) = -x0 has exactly the smallest |x0| as its margin
    lin = lambda pts: -pts[:, 0]
    want = float(x[:, 0].abs().min())
    assert decision_margin(lin, x, y, lim=2.0, n=401) == pytest.approx(want, abs=0.006)   # grid spacing 0.01


def test_two_moons_bad_inputs():
    with pytest.raises(ValueError, match="n must"):
        two_moons_with_margin(n=2)
    with pytest.raises(ValueError, match="noise"):
        two_moons_with_margin(noise=-1.0)
    with pytest.raises(ValueError, match="margin"):
        two_moons_with_margin(margin=float("nan"))


def test_colored_images_correlations():
    g = torch.Generator().manual_seed(0)
    n = 20000
    imgs = torch.rand(n, 28, 28, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    env = colored_images(imgs, labels, 0.2, label_noise=0.25, size=14, generator=g)
    assert env.x.shape == (n, 2, 14, 14)
    assert abs(color_agreement(env) - 0.8) < 0.015
    assert abs(shape_agreement(env) - 0.75) < 0.015
    # the picture is in the colour channel, the other channel is empty
    idx = torch.arange(n)
    assert float(env.x[idx, 1 - env.color].abs().max()) == 0.0
    assert torch.allclose(env.x[idx, env.color], F.avg_pool2d(imgs[:, None], 2)[:, 0])
    gray = env.grayscale()
    assert torch.allclose(gray[:, 0], gray[:, 1]) and torch.allclose(gray.sum(1), env.x.sum(1))


def test_colored_images_bad_inputs():
    imgs, labels = torch.rand(5, 28, 28), torch.arange(5)
    with pytest.raises(ValueError, match="images"):
        colored_images(torch.rand(5, 14, 14), labels, 0.1)
    with pytest.raises(ValueError, match="labels"):
        colored_images(imgs, torch.arange(4), 0.1)
    with pytest.raises(ValueError, match="color_flip"):
        colored_images(imgs, labels, 1.5)
    with pytest.raises(ValueError, match="label_noise"):
        colored_images(imgs, labels, 0.1, label_noise=0.7)
    with pytest.raises(ValueError, match="size"):
        colored_images(imgs, labels, 0.1, size=10)


def test_colored_fashion_mnist_measured():
    d = colored_fashion_mnist(4000, 3000, size=7, seed=3)
    m = d.measured
    assert d.train.x.shape == (4000, 2, 7, 7) and d.test.x.shape == (3000, 2, 7, 7)
    assert abs(m["train_color_agreement"] - 0.85) < 0.025
    assert abs(m["test_color_agreement"] - 0.10) < 0.025
    assert abs(m["train_shape_agreement"] - 0.75) < 0.03 and abs(m["test_shape_agreement"] - 0.75) < 0.03
    # the two training halves have their own colour flip rates (0.2, 0.1)
    h = 2000
    assert abs(float((d.train.color[:h].float() == d.train.y[:h]).float().mean()) - 0.8) < 0.03
    assert abs(float((d.train.color[h:].float() == d.train.y[h:]).float().mean()) - 0.9) < 0.03
    with pytest.raises(ValueError, match="n_train"):
        colored_fashion_mnist(5)


def test_two_feature_task():
    yphi, y = two_feature_task(100, (3.0, 1.0), (0.3, 0.1))
    assert yphi.shape == (100, 2) and y.shape == (100,)
    assert int((yphi[:, 0] == 3.0).sum()) == 90 and int((yphi[:, 1] == 1.0).sum()) == 70
    with pytest.raises(ValueError, match="strengths"):
        two_feature_task(10, (0.0, 1.0))
    with pytest.raises(ValueError, match="only"):
        two_feature_task(10, (1.0, 1.0), (0.7, 0.6))


# ---------------------------------------------------------------- models and dynamics

def test_mlp_shapes_and_errors():
    assert MLP(2, 8)(torch.zeros(4, 2)).shape == (4,)
    assert MLP(2 * 7 * 7, 8, out_dim=3, depth=2, init="xavier")(torch.zeros(4, 2, 7, 7)).shape == (4, 3)
    with pytest.raises(ValueError, match="hidden"):
        MLP(2, 0)
    with pytest.raises(ValueError, match="init"):
        MLP(2, 4, init="he")
    with pytest.raises(ValueError, match="features"):
        MLP(3, 4)(torch.zeros(2, 2))


def test_boundary_points_circle():
    xx, yy, _ = decision_grid(lambda p: p[:, 0], lim=1.5, n=201)
    z = xx ** 2 + yy ** 2 - 1.0
    pts = boundary_points(xx, yy, z)
    r = pts.norm(dim=1)
    assert len(pts) > 100 and float((r - 1).abs().max()) < 2e-3


def test_decision_margin_misclassified_is_zero():
    x = torch.tensor([[-1.0, 0.0], [1.0, 0.0]])
    y = torch.tensor([0, 1])          # f = -x0 puts both on the wrong side
    assert decision_margin(lambda p: -p[:, 0], x, y) == 0.0
    with pytest.raises(ValueError, match="binary"):
        decision_margin(lambda p: p[:, 0], x, torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="2-D"):
        decision_margin(lambda p: p[:, 0], torch.zeros(2, 3), y)


def test_feature_responses_reproduce_margins():
    g = torch.Generator().manual_seed(0)
    yphi = torch.randn(20, 7, generator=g, dtype=torch.float64)
    theta = torch.randn(7, generator=g, dtype=torch.float64)
    u, s, vh = torch.linalg.svd(yphi, full_matrices=False)
    assert torch.allclose(u @ feature_responses(yphi, theta), yphi @ theta)


def test_sd_fixed_point_does_not_depend_on_strength():
    """Section 2: with SD the fixed point of the feature responses is independent of S; with CE it is not."""
    w2 = {}
    for lam in (0.0, 0.1):
        for s1 in (1.0, 6.0):
            yphi, _ = two_feature_task(60, (s1, 1.0), (0.3, 0.1))
            th = linear_feature_dynamics(yphi, lam=lam, lr=0.02, steps=8000, record_every=8000)["theta"][-1]
            w2[(lam, s1)] = float(th[1])
    assert abs(w2[(0.1, 1.0)] - w2[(0.1, 6.0)]) < 1e-3          # decoupled
    assert w2[(0.0, 6.0)] < 0.97 * w2[(0.0, 1.0)]                 # starvation under cross-entropy
    # the SD fixed point satisfies lam * m = sigma(-m) averaged as in the gradient: check stationarity
    yphi, _ = two_feature_task(60, (6.0, 1.0), (0.3, 0.1))
    th = linear_feature_dynamics(yphi, lam=0.1, lr=0.02, steps=6000)["theta"][-1]
    m = yphi.double() @ th
    grad = yphi.double().T @ (-torch.sigmoid(-m) + 0.1 * m) / 60
    assert float(grad.abs().max()) < 1e-5


def test_linear_feature_dynamics_bad_inputs():
    with pytest.raises(ValueError, match="yphi"):
        linear_feature_dynamics(torch.zeros(3))
    with pytest.raises(ValueError, match="lam"):
        linear_feature_dynamics(torch.zeros(3, 2), lam=-1.0)
    with pytest.raises(ValueError, match="lr"):
        linear_feature_dynamics(torch.zeros(3, 2), lr=0)


def test_ntk_features_linearise_the_network():
    torch.manual_seed(0)
    net = MLP(2, 16).double()
    x = torch.randn(9, 2, dtype=torch.float64)
    jac = ntk_features(net, x)
    n_params = sum(p.numel() for p in net.parameters())
    assert jac.shape == (9, n_params)
    delta = [1e-6 * torch.randn_like(p) for p in net.parameters()]
    f0 = net(x)
    with torch.no_grad():
        for p, d in zip(net.parameters(), delta):
            p.add_(d)
    lin = f0 + jac @ torch.cat([d.reshape(-1) for d in delta])
    assert torch.allclose(net(x), lin, atol=1e-10)


def test_train_full_batch_sd_shrinks_logits_and_snapshots():
    x, y = two_moons_with_margin(n=60, seed=0)
    out = {}
    for lam in (0.0, 0.5):
        torch.manual_seed(0)
        net = MLP(2, 32)
        grid = torch.zeros(5, 2)
        r = train_full_batch(net, x, y, lam=lam, steps=200, snapshot_every=100, grid=grid)
        assert [s for s, _ in r.snapshots] == [0, 100, 200]
        out[lam] = float(net(x).detach().abs().mean())
        assert r.history["train_acc"].iloc[-1] > 0.95
    assert out[0.5] < out[0.0]
    with pytest.raises(ValueError, match="snapshot_every"):
        train_full_batch(MLP(2, 4), x, y, snapshot_every=10)
    with pytest.raises(ValueError, match="optimizer"):
        train_full_batch(MLP(2, 4), x, y, optimizer="lbfgs")


def test_colored_branches_share_phase_one_and_adam_memory():
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(80, 2, 7, 7, generator=g), (torch.rand(80, generator=g) > 0.5).long()
    make = lambda: MLP(98, 16, depth=2, init="xavier")
    out = train_colored_branches(make, x, y, x, y, branches=list(BRANCHES), steps=60, anneal=30, lr=1e-3,
                                 coef=2e-5, log_every=10)
    assert set(out) == set(BRANCHES)
    h = {k: v.history for k, v in out.items()}
    for k in h:   # identical shared phase
        assert h[k]["nll"].iloc[:3].tolist() == h["erm"]["nll"].iloc[:3].tolist()
    params = {k: torch.cat([p.detach().reshape(-1) for p in v.model.parameters()]) for k, v in out.items()}
    # after the switch, the stale Adam state makes the rescaled steps tiny; a fresh Adam does not see the scale
    moved_sd = float((params["sd"] - params["rescaled_ce"]).abs().max())
    moved_fresh = float((params["sd_fresh_adam"] - params["rescaled_ce"]).abs().max())
    assert moved_sd < 0.5 * moved_fresh
    with pytest.raises(ValueError, match="branches"):
        train_colored_branches(make, x, y, x, y, branches=["magic"], steps=10, anneal=5)
    with pytest.raises(ValueError, match="anneal"):
        train_colored_branches(make, x, y, x, y, steps=10, anneal=10)


def _coloured(n, size=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    env = colored_images(torch.rand(n, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g), 0.3,
                         size=size, generator=g)
    return env.x.double(), env.y


@pytest.mark.parametrize("out_dim", [1, 3])
def test_colour_split_input_is_the_same_function_and_gradient(out_dim):
    x, _ = _coloured(40)
    x[5] = 0.0                                            # a blank image: either group is right
    torch.manual_seed(0)
    m = MLP(98, 12, out_dim=out_dim, depth=2, init="xavier").double()
    split = ColourSplitInput(x)
    assert sorted(split.order.tolist()) == list(range(40))
    assert split.first.shape[0] + split.second.shape[0] == 40 and split.pixels == 49
    ours, ref = split(m), m(x)[split.order]
    assert ours.shape == ref.shape and torch.allclose(ours, ref, atol=1e-12)
    w = torch.randn(ref.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    g_ours = torch.autograd.grad((ours * w).sum(), list(m.parameters()))
    g_ref = torch.autograd.grad((m(x)[split.order] * w).sum(), list(m.parameters()))
    for a, b in zip(g_ours, g_ref):
        assert torch.allclose(a, b, atol=1e-12)


def test_colour_split_input_refuses_what_it_cannot_split():
    x, _ = _coloured(10)
    both = x.clone()
    both[3, 0], both[3, 1] = 0.5, 0.5                     # a picture in both channels
    assert ColourSplitInput.applies(x) and not ColourSplitInput.applies(both)
    for bad in (both, x[:, :1], x.flatten(1), x[:0], "images"):
        assert not ColourSplitInput.applies(bad)
    with pytest.raises(ValueError, match="one channel"):
        ColourSplitInput(both)
    with pytest.raises(TypeError, match="MLP with 98 inputs"):
        ColourSplitInput(x)(MLP(50, 4))
    with pytest.raises(TypeError, match="MLP with 98 inputs"):
        ColourSplitInput(x)(torch.nn.Linear(98, 1))


def test_colored_branches_through_the_split_match_the_plain_forward(monkeypatch):
    x, y = _coloured(60)
    make = lambda: MLP(98, 16, depth=2, init="xavier").double()
    kw = dict(branches=["erm", "sd", "sd_gd"], steps=40, anneal=20, lr=1e-2, coef=1e-2, log_every=5)
    calls, call = [], ch07_experiments.ColourSplitInput.__call__
    monkeypatch.setattr(ch07_experiments.ColourSplitInput, "__call__", lambda self, m: calls.append(1) or call(self, m))
    split = train_colored_branches(make, x, y, x, y, **kw)
    assert len(calls) == 20 + 3 * (20 + 1)                 # every training forward pass went through the split
    monkeypatch.setattr(ch07_experiments.ColourSplitInput, "applies", staticmethod(lambda x: False))
    plain = train_colored_branches(make, x, y, x, y, **kw)
    for b in kw["branches"]:
        hs, hp = split[b].history, plain[b].history
        for col in ("train_acc", "test_acc", "mean_abs_logit"):
            assert np.allclose(hs[col], hp[col], rtol=1e-9, atol=1e-12), (b, col)
        # the logged loss is reduced against the float32 labels: the batch order shows at float32 rounding
        assert np.allclose(hs["nll"], hp["nll"], rtol=1e-6), b
        for a, c in zip(split[b].model.parameters(), plain[b].model.parameters()):
            assert torch.allclose(a, c, atol=1e-12)


# ---------------------------------------------------------------- the coupling toy, its widget, the conclusion

def test_coupling_toy_starves_under_ce_not_under_sd():
    ce = [float(coupling_toy(s1, steps=2000, record_every=2000)["w"][-1, 1]) for s1 in (1.0, 8.0)]
    sd = [float(coupling_toy(s1, lam=0.1, steps=6000, record_every=6000)["w"][-1, 1]) for s1 in (1.0, 8.0)]
    assert ce[1] < ce[0]
    assert abs(sd[1] / sd[0] - 1) < 0.1 * abs(ce[1] / ce[0] - 1)
    # the same numbers as the notebook's direct call
    yphi, _ = two_feature_task(100, strengths=(4.0, 1.0), only=(0.3, 0.1))
    direct = linear_feature_dynamics(yphi, lam=0.1, lr=0.02, steps=300, record_every=60)
    toy = coupling_toy(4.0, lam=0.1, steps=300)
    assert torch.equal(toy["w"], direct["theta"] * torch.tensor([4.0, 1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="strengths"):
        coupling_toy(0.0)


def test_coupling_widget_static(monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.setenv("SYMVIZ_STATIC", "1")
    from symviz.chapters.ch07_gradient_starvation.plots import coupling_widget, draw_coupling

    calls = []

    def simulate(s1, lam=0.0, weight_decay=0.0):
        calls.append((s1, lam, weight_decay))
        return coupling_toy(s1, lam=lam, weight_decay=weight_decay, steps=200, record_every=20)

    shown = coupling_widget(simulate, s1=4.0, lam=0.0, weight_decay=0.1)
    assert shown.kind == "static" and len(shown.axes[0].lines) == 3
    assert sorted(calls) == [(1.0, 0.0, 0.1), (4.0, 0.0, 0.1)]
    import matplotlib.pyplot as plt
    with pytest.raises(ValueError, match=r"\(T, 2\)"):
        draw_coupling(plt.figure().gca(), {"steps": torch.arange(3), "w": torch.zeros(3)})


def test_conclude_records_claims_with_kinds(tmp_path):
    import json

    import pandas as pd

    from symviz import report
    from symviz.chapters.ch07_gradient_starvation.results import conclude

    report.start("07_test", tmp_path / "r.json", verbose=False)
    colour = pd.DataFrame([{"seed": s, "method": m, "train_acc": tr, "test_acc": te}
                           for s in (0, 1) for m, tr, te in (("erm", 0.99, 0.25), ("sd", 0.7, 0.55),
                                                             ("rescaled_ce", 0.86, 0.12))])
    moons = pd.DataFrame([{"seed": s, "loss": l, "margin": m} for s in (0, 1)
                          for l, m in (("cross-entropy", 0.1), ("spectral decoupling", 0.2))])
    acc, mg, claims = conclude(colour, moons, [2.8, 2.4], [0.6, 0.6], scale="quick")
    assert list(claims["kind"]) == ["paper", "paper", "paper", "paper", "sanity"] and claims["holds"].all()
    assert acc.loc["sd", "test_acc (mean)"] == 0.55 and mg.shape == (2, 2)
    data = json.loads((tmp_path / "r.json").read_text())
    assert [c["kind"] for c in data["claims"]] == list(claims["kind"])
    broken = colour.assign(test_acc=0.25)   # SD no better than ERM: the paper's claim must fail
    _, _, bad = conclude(broken, moons, [2.8, 2.4], [0.6, 0.6], scale="quick")
    assert not bad["holds"].iloc[0]
    with pytest.raises(ValueError, match="no rows for"):
        conclude(colour[colour.method != "sd"], moons, [2.8, 2.4], [0.6, 0.6], scale="quick")


# ---------------------------------------------------------------- section 6: the colour swap as a nuisance symmetry

def _tiny_colour(seed=0, n=120):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 28, 28, generator=g)
    images[:, :, :14] *= (torch.arange(n) % 10 < 5).float()[:, None, None]     # the class shows in the picture
    return colored_images(images, torch.arange(n) % 10, 0.15, size=7, generator=g)


def test_swap_colors_is_an_involution_and_checks_its_input():
    from symviz.data.starvation import swap_colors

    env = _tiny_colour()
    xs = swap_colors(env.x)
    assert torch.equal(swap_colors(xs), env.x)
    assert torch.equal(xs[torch.arange(len(env.y)), 1 - env.color], env.x[torch.arange(len(env.y)), env.color])
    with pytest.raises(ValueError, match=r"\(N, 2, H, W\)"):
        swap_colors(torch.zeros(3, 3, 7, 7))
    with pytest.raises(ValueError, match=r"\(N, 2, H, W\)"):
        swap_colors(torch.zeros(2, 7, 7))


def test_group_averaged_model_is_exactly_invariant_and_keeps_invariant_models():
    from symviz.chapters.ch07_gradient_starvation.experiments import GroupAveraged
    from symviz.data.starvation import swap_colors
    from symviz.equivariance import invariance_error

    torch.manual_seed(0)
    x = _tiny_colour().x
    f = MLP(2 * 49, 16, depth=2)
    assert invariance_error(f, x, swap_colors) > 1e-2                 # a plain MLP sees the colour
    fbar = GroupAveraged(f, [lambda t: t, swap_colors])
    assert invariance_error(fbar, x, swap_colors) < 1e-6
    torch.testing.assert_close(fbar(x), (f(x) + f(swap_colors(x))) / 2)
    inv = lambda t: t.sum((1, 2, 3))                                   # already invariant: averaging changes nothing
    torch.testing.assert_close(GroupAveraged(torch.nn.Identity(), [lambda t: t]).forward(x), x)
    torch.testing.assert_close(GroupAveraged(_Fn(inv), [lambda t: t, swap_colors])(x), inv(x))
    with pytest.raises(ValueError, match="non-empty list of functions"):
        GroupAveraged(f, [])
    with pytest.raises(TypeError, match="torch.nn.Module"):
        GroupAveraged(inv, [lambda t: t])


class _Fn(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


@pytest.mark.parametrize("method", ["group_avg", "augment"])
def test_train_swap_invariant_learns_without_the_colour(method):
    from symviz.chapters.ch07_gradient_starvation.experiments import swap_sensitivity, train_swap_invariant
    from symviz.data.starvation import swap_colors
    from symviz.equivariance import invariance_error

    tr, te = _tiny_colour(0), _tiny_colour(1)
    make = lambda: MLP(2 * 49, 32, depth=2, init="xavier")
    r = train_swap_invariant(make, tr.x, tr.y, te.x, te.y, method=method, steps=60, lr=3e-3, seed=0)
    h = r.history.iloc[-1]
    assert {"train_acc", "test_acc"} <= set(r.history.columns) and 0.0 <= h["test_acc"] <= 1.0
    assert h["train_acc"] > 0.6                                        # it learns the label from the picture
    err, sens = invariance_error(r.model, te.x, swap_colors), swap_sensitivity(r.model, te.x)
    if method == "group_avg":
        assert err < 1e-6 and sens < 1e-6
    else:
        assert err > 0                                                 # augmentation is approximate only
    back = pickle.loads(pickle.dumps(r))           # how a run comes back from a parallel_runs worker
    assert torch.equal(back.model(te.x), r.model(te.x))
    with pytest.raises(ValueError, match="method must be one of"):
        train_swap_invariant(make, tr.x, tr.y, te.x, te.y, method="average")
    with pytest.raises(ValueError, match=r"\(N, 2, H, W\)"):
        train_swap_invariant(make, tr.x[:, :1], tr.y, te.x, te.y)


@pytest.mark.parametrize("method", ["group_avg", "augment"])
def test_train_swap_invariant_through_the_split_matches_the_plain_forward(method, monkeypatch):
    from symviz.chapters.ch07_gradient_starvation.experiments import train_swap_invariant

    x, y = _coloured(50)
    make = lambda: MLP(98, 16, depth=2, init="xavier").double()
    calls, call = [], ch07_experiments.ColourSplitInput.__call__
    monkeypatch.setattr(ch07_experiments.ColourSplitInput, "__call__", lambda self, m: calls.append(1) or call(self, m))
    split = train_swap_invariant(make, x, y, x, y, method=method, steps=30, lr=1e-2, seed=0)
    assert len(calls) == 31                               # every training forward pass went through the split
    monkeypatch.setattr(ch07_experiments.ColourSplitInput, "applies", staticmethod(lambda x: False))
    plain = train_swap_invariant(make, x, y, x, y, method=method, steps=30, lr=1e-2, seed=0)
    for a, c in zip(split.model.parameters(), plain.model.parameters()):
        assert torch.allclose(a, c, atol=1e-12)
    assert split.history["train_acc"].tolist() == plain.history["train_acc"].tolist()
    assert np.allclose(split.history["ce"], plain.history["ce"], rtol=1e-6)
    with pytest.raises(TypeError, match="forward must be a function"):
        train_full_batch(MLP(98, 4).double(), x, y, steps=2, forward="split")


def test_swap_sensitivity_sees_a_colour_reader():
    from symviz.chapters.ch07_gradient_starvation.experiments import swap_sensitivity

    x = _tiny_colour().x
    colour_reader = lambda t: 20.0 * (t[:, 0].sum((1, 2)) - t[:, 1].sum((1, 2)))
    assert swap_sensitivity(colour_reader, x) > 0.9
    assert swap_sensitivity(lambda t: t.sum((1, 2, 3)), x) == 0.0
    with pytest.raises(TypeError, match="callable"):
        swap_sensitivity(3, x)


def test_plot_invariance_comparison():
    import matplotlib
    matplotlib.use("Agg")
    import pandas as pd

    from symviz.chapters.ch07_gradient_starvation.plots import plot_invariance_comparison

    colour = pd.DataFrame([{"seed": s, "method": m, "test_acc": a} for s in (0, 1)
                           for m, a in (("erm", 0.25), ("sd", 0.55), ("group_avg", 0.7))])
    fig = plot_invariance_comparison(colour, {"erm": 0.7, "group_avg": 0.0}, ["erm", "sd", "group_avg"], 0.1)
    assert len(fig.axes) == 2 and len(fig.axes[1].patches) == 2
    with pytest.raises(ValueError, match="no rows for the methods"):
        plot_invariance_comparison(colour, {}, ["erm", "augment"])


def test_conclude_records_the_invariance_claims(tmp_path):
    import pandas as pd

    from symviz import report
    from symviz.chapters.ch07_gradient_starvation.results import conclude

    report.start("07_test", tmp_path / "r.json", verbose=False)
    rows = (("erm", 0.99, 0.25), ("sd", 0.7, 0.55), ("rescaled_ce", 0.86, 0.12), ("group_avg", 0.73, 0.69),
            ("augment", 0.73, 0.68))
    colour = pd.DataFrame([{"seed": s, "method": m, "train_acc": tr, "test_acc": te + 0.01 * s}
                           for s in (0, 1) for m, tr, te in rows])
    moons = pd.DataFrame([{"seed": s, "loss": l, "margin": m} for s in (0, 1)
                          for l, m in (("cross-entropy", 0.1), ("spectral decoupling", 0.2))])
    inv = {"group_avg_error": 0.0, "augment_error": 0.16, "sensitivity": {"erm": 0.7, "group_avg": 0.0}}
    _, _, claims = conclude(colour, moons, [2.8, 2.4], [0.6, 0.6], scale="quick", invariance=inv)
    assert len(claims) == 8 and claims["holds"].all()
    assert list(claims["kind"][-3:]) == ["paper", "paper", "sanity"]
    # invariance no better than SD, or a broken average: the new claims fail
    # group_avg below SD on one seed; augment above SD on every seed but the seed ranges overlap; a broken average
    worse = colour.assign(test_acc=[r for s in (0, 1) for r in (0.25, 0.55 + 0.1 * s, 0.12, 0.6 - 0.1 * s, 0.6 + 0.1 * s)])
    _, _, bad = conclude(worse, moons, [2.8, 2.4], [0.6, 0.6], scale="quick", invariance={**inv, "group_avg_error": 0.1})
    assert list(bad["holds"][-3:]) == [False, False, False]
    apart = colour.assign(test_acc=[r for s in (0, 1) for r in (0.25, 0.45 + 0.1 * s, 0.12, 0.7, 0.5 + 0.1 * s)])
    _, _, mixed = conclude(apart, moons, [2.8, 2.4], [0.6, 0.6], scale="quick", invariance=inv)
    assert list(mixed["holds"][-3:]) == [True, False, True]      # augment above SD on each seed, but ranges overlap
    with pytest.raises(ValueError, match="needs rows for"):
        conclude(colour[colour.method != "augment"], moons, [2.8, 2.4], [0.6, 0.6], scale="quick", invariance=inv)


@pytest.mark.parametrize("n, noise, seed", [(300, 0.1, 0), (301, 0.2, 1000), (4, 0.0, 5), (1000, 0.1, 2001)])
def test_moons_are_scikit_learns_make_moons(n, noise, seed):
    from sklearn.datasets import make_moons

    from symviz.data.starvation import moons

    x, y = moons(n, noise, seed)
    ref_x, ref_y = make_moons(n_samples=n, noise=noise, random_state=seed)
    assert np.array_equal(x, ref_x) and np.array_equal(y, ref_y)
