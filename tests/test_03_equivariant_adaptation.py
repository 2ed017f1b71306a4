"""Tests for chapter 03: pretrained backbone + cache, canonicalization prior, adaptation, evaluation."""
from __future__ import annotations

import math

import pytest
import torch

from symviz.chapters.ch03_equivariant_adaptation.checks import (check_adaptation_objective, check_adaptation_step,
                                                                check_canonicalization_prior)
from symviz.chapters.ch03_equivariant_adaptation.results import conclude
from symviz.losses import canonicalization_prior
from symviz.chapters.ch03_equivariant_adaptation.adaptation import (AdaptedModel, adapt, adaptation_objective, adaptation_step, element_histogram, evaluate_adapted, evaluate_rotations,
                                      identity_metric, rotate_test_set, rotation_angles)
from symviz.equivariance import rot90_invariance_error
from symviz.nn.canonical import C4ImageCanonicalizer
from symviz.chapters.ch03_equivariant_adaptation.pretrained import ResNetBackbone, accuracy, pretrained_backbone

TINY = dict(hidden=4, blocks=(1,), stem_stride=2, n_train=200, epochs=1, batch_size=50)
DIGITS = dict(source="digits", device="cpu", **TINY)  # 8x8 digits load in milliseconds: cheap cache tests


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see tests/conftest.py


# --- the prior loss ---------------------------------------------------------------------------

def test_prior_discrete_values():
    assert torch.allclose(canonicalization_prior(torch.zeros(3, 4)), torch.tensor(math.log(4)))
    confident = torch.tensor([[50.0, 0.0, 0.0, 0.0]])
    assert float(canonicalization_prior(confident)) < 1e-10
    wrong = torch.tensor([[0.0, 50.0, 0.0, 0.0]])
    assert float(canonicalization_prior(wrong)) > 40
    s = torch.randn(6, 8, dtype=torch.float64)
    ce = torch.nn.functional.cross_entropy(s, torch.zeros(6, dtype=torch.long))
    assert torch.allclose(canonicalization_prior(s), ce)
    assert torch.allclose(canonicalization_prior(s, identity=2),
                          torch.nn.functional.cross_entropy(s, torch.full((6,), 2)))
    assert canonicalization_prior(s, reduction="none").shape == (6,)


def test_prior_continuous_values():
    eye = torch.eye(3, dtype=torch.float64).expand(4, 3, 3)
    assert float(canonicalization_prior(eye)) == 0.0
    R = torch.tensor([[[0.0, -1.0], [1.0, 0.0]]])  # 90 degrees: ||R - I||_F^2 = 4
    assert torch.allclose(canonicalization_prior(R), torch.tensor(4.0))


def test_prior_gradient_points_to_identity():
    s = torch.zeros(2, 4, requires_grad=True)
    canonicalization_prior(s).backward()
    assert (s.grad[:, 0] < 0).all() and (s.grad[:, 1:] > 0).all()  # descent raises the identity's score


@pytest.mark.parametrize("bad, kwargs", [
    (torch.zeros(4), {}),                        # 1-D
    (torch.zeros(2, 3, 4), {}),                  # not square matrices
    (torch.zeros(2, 4, dtype=torch.long), {}),   # not float
    (torch.zeros(0, 4), {}),                     # empty batch
    (torch.zeros(2, 4), {"identity": 4}),        # identity out of range
    (torch.zeros(2, 4), {"reduction": "sum"}),
    ([[0.0, 1.0]], {}),                          # not a tensor
])
def test_prior_bad_inputs(bad, kwargs):
    with pytest.raises(ValueError, match="scores|identity|reduction"):
        canonicalization_prior(bad, **kwargs)


def test_exercise_check():
    assert check_canonicalization_prior(canonicalization_prior)
    assert not check_canonicalization_prior(lambda s: torch.zeros(()))
    assert not check_canonicalization_prior(lambda s: (s[:, 0]).mean())   # no log-softmax
    detached = lambda s: canonicalization_prior(s).detach()  # noqa: E731
    assert not check_canonicalization_prior(detached)
    discrete = lambda s: torch.nn.functional.cross_entropy(s, torch.zeros(len(s), dtype=torch.long))  # noqa: E731
    assert check_canonicalization_prior(discrete)      # the continuous case is a bonus: checked only when asked
    assert not check_canonicalization_prior(discrete, check_continuous=True)  # raises on matrices: reported, not raised


# --- backbone ---------------------------------------------------------------------------------

def test_backbone_shapes_and_errors():
    net = ResNetBackbone(hidden=4, blocks=(1, 1))
    assert net(torch.zeros(2, 28, 28)).shape == (2, 10)
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ValueError, match="x must be"):
        net(torch.zeros(2, 3, 28, 28))
    with pytest.raises(ValueError, match="hidden"):
        ResNetBackbone(hidden=0)
    with pytest.raises(ValueError, match="blocks"):
        ResNetBackbone(blocks=())
    with pytest.raises(ValueError, match="stem_stride"):
        ResNetBackbone(stem_stride=3)


def test_backbone_initialised_like_torchvision_resnet():
    """Mondal et al.'s backbones are torchvision ResNets: He-normal convolutions with fan_out
    (std sqrt(2 / (out_channels * k * k))), BatchNorm weight 1 and bias 0. PyTorch's default conv
    init would be ~2.4x smaller."""
    torch.manual_seed(0)
    net = ResNetBackbone(hidden=32, blocks=(1, 1))
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 6
    for m in convs:
        fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1]
        want = math.sqrt(2.0 / fan_out)
        assert abs(float(m.weight.detach().std()) - want) < 0.2 * want, (m, float(m.weight.detach().std()), want)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)


def test_backbone_is_not_rotation_invariant():
    torch.manual_seed(0)
    net = ResNetBackbone(hidden=4, blocks=(1,)).double().eval()
    x = torch.rand(4, 28, 28, dtype=torch.float64)
    x[:, :7] += 2.0   # images with an "up" (a bright band at the top): pure noise looks alike in every orientation
    assert rot90_invariance_error(net, x) > 1e-2   # relative change of the logits: far above float64 rounding


# --- cache handling ---------------------------------------------------------------------------

@pytest.fixture()
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMVIZ_CACHE", str(tmp_path))
    return tmp_path


def test_cache_roundtrip_corrupt_and_mismatch(tmp_cache):
    a = pretrained_backbone("quick", seed=0, **DIGITS)
    assert not a.from_cache and a.checkpoint.exists()
    b = pretrained_backbone("quick", seed=0, **DIGITS)
    assert b.from_cache
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k])
    # a corrupt file is detected and retrained, never used
    a.checkpoint.write_bytes(b"not a checkpoint")
    c = pretrained_backbone("quick", seed=0, **DIGITS)
    assert not c.from_cache
    # a file from another architecture under the same name is detected (fingerprint) and retrained
    from symviz.train import save_checkpoint
    save_checkpoint(ResNetBackbone(hidden=3, blocks=(1,)), a.checkpoint.stem, {"other": 1})
    d = pretrained_backbone("quick", seed=0, **DIGITS)
    assert not d.from_cache
    assert pretrained_backbone("quick", seed=0, **DIGITS).from_cache
    # another recipe is another cache entry
    e = pretrained_backbone("quick", seed=1, **DIGITS)
    assert not e.from_cache and e.checkpoint != a.checkpoint


def test_local_weights(tmp_cache):
    torch.manual_seed(1)
    net = ResNetBackbone(hidden=4, blocks=(1,), stem_stride=2)
    path = tmp_cache / "mine.pt"
    torch.save(net.state_dict(), path)
    got = pretrained_backbone("quick", weights=path, hidden=4, blocks=(1,), stem_stride=2)
    assert got.from_cache and got.source.startswith("weights:")
    assert torch.equal(got.model.head.weight, net.head.weight)
    with pytest.raises(ValueError, match="do not match"):
        pretrained_backbone("quick", weights=path, hidden=8, blocks=(1,))
    with pytest.raises(FileNotFoundError):
        pretrained_backbone("quick", weights=tmp_cache / "missing.pt")


def test_pretrained_bad_arguments():
    with pytest.raises(ValueError, match="scale"):
        pretrained_backbone("medium")
    with pytest.raises(ValueError, match="unknown recipe"):
        pretrained_backbone("quick", depth=3)
    with pytest.raises(ValueError, match="seed"):
        pretrained_backbone("quick", seed=1.5)


# --- the adapted model ------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_adapted_model_exactly_c4_invariant_float64(seed):
    torch.manual_seed(seed)
    model = AdaptedModel(C4ImageCanonicalizer(hidden=4, pool=2), ResNetBackbone(hidden=4, blocks=(1, 1))).double().eval()
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(6, 28, 28, dtype=torch.float64, generator=g)
    k = int(torch.randint(1, 4, (1,), generator=g))
    with torch.no_grad():
        out, res = model.forward_with_details(x)
        out_r, res_r = model.forward_with_details(torch.rot90(x, k, dims=(-2, -1)))
    assert float((out - out_r).abs().max()) < 1e-12
    assert torch.equal((res_r.element - res.element) % 4, torch.full((6,), k))  # h(g x) = g h(x)
    assert rot90_invariance_error(model, x) < 1e-12


def test_identity_metric_and_histogram_follow_rotations():
    torch.manual_seed(0)
    canon = C4ImageCanonicalizer(hidden=4, pool=2).double()
    x = torch.rand(40, 28, 28, dtype=torch.float64)
    hist = element_histogram(canon, x)
    assert int(hist.sum()) == 40
    assert identity_metric(canon, x) == pytest.approx(float(hist[0]) / 40)
    # rotating every image by 90 degrees shifts the chosen element by one
    assert element_histogram(canon, torch.rot90(x, 1, dims=(-2, -1))).tolist() == torch.roll(hist, 1).tolist()
    with pytest.raises(ValueError, match="images"):
        identity_metric(canon, torch.rand(28))


def test_rotations_and_evaluation():
    assert rotation_angles("C4") == [0.0, 90.0, 180.0, 270.0]
    assert len(rotation_angles("C8")) == 8 and len(rotation_angles("continuous", 6)) == 6
    with pytest.raises(ValueError, match="kind"):
        rotation_angles("SO2")
    x = torch.rand(3, 28, 28)
    assert torch.equal(rotate_test_set(x, 270), torch.rot90(x, 3, dims=(-2, -1)))
    assert torch.allclose(rotate_test_set(x, 45).sum(), rotate_test_set(x, 45).sum())
    torch.manual_seed(0)
    model = AdaptedModel(C4ImageCanonicalizer(hidden=4, pool=2), ResNetBackbone(hidden=4, blocks=(1,)))
    y = torch.randint(0, 10, (3,))
    ev = evaluate_rotations(model, x, y, "C4")
    assert len(set(ev["per_angle"].values())) == 1  # exactly invariant: the same accuracy at every angle
    assert ev["upright"] == accuracy(model, x, y)
    with pytest.raises(ValueError, match="y must be"):
        evaluate_rotations(model, x, y[:2])


def test_adapt_prior_pulls_canonicalizer_to_identity():
    """With the prior alone, the canonicalizer learns to leave upright images alone."""
    g = torch.Generator().manual_seed(0)
    # synthetic "upright" images: a bright bar in the top rows, so orientation is learnable
    x = 0.1 * torch.rand(128, 28, 28, generator=g)
    x[:, 2:6, 6:22] += 1.0
    y = torch.randint(0, 10, (128,), generator=g)
    backbone = ResNetBackbone(hidden=4, blocks=(1,), stem_stride=2)
    res = adapt(backbone, x, y, prior_weight=1.0, task_weight=0.0, freeze_backbone=True, epochs=3, lr=1e-2,
                hidden=4, device="cpu", seed=0)
    assert identity_metric(res.model.canonicalizer, x) > 0.95
    assert identity_metric(res.model.canonicalizer, torch.rot90(x, 1, dims=(-2, -1))) < 0.05
    # the frozen backbone did not move
    assert torch.equal(res.model.backbone.head.weight, backbone.head.weight)
    assert list(res.history["epoch"]) == [1, 2, 3]


def test_adapt_bad_arguments():
    bb = ResNetBackbone(hidden=4, blocks=(1,))
    x, y = torch.rand(8, 28, 28), torch.randint(0, 10, (8,))
    with pytest.raises(ValueError, match="prior_weight"):
        adapt(bb, x, y, prior_weight=-1.0)
    with pytest.raises(ValueError, match="y must be"):
        adapt(bb, x, y[:4])
    with pytest.raises(ValueError, match="scale"):
        adapt(bb, x, y, scale="huge")
    with pytest.raises(ValueError, match="unknown recipe"):
        adapt(bb, x, y, momentum=0.9)
    with pytest.raises(ValueError, match="x_val"):
        adapt(bb, x, y, x_val=x)
    with pytest.raises(TypeError, match="backbone"):
        adapt("resnet", x, y)
    with pytest.raises(TypeError, match="step must be a function"):
        adapt(bb, x, y, step="sgd")
    with pytest.raises(ValueError, match="task_weight applies to the reference objective"):
        adapt(bb, x, y, task_weight=0.5, objective=adaptation_objective)


def test_adapt_continuous_prior_pulls_matrix_to_identity():
    """A continuous canonicalizer (element = rotation matrix, scores None) gets the ||R - I||^2 prior."""
    from torch import nn

    from symviz.nn.canonical import CanonicalizationResult

    class AngleCanonicalizer(nn.Module):
        def __init__(self):
            super().__init__()
            self.theta = nn.Parameter(torch.tensor(1.0))

        def forward(self, x):
            c, s = torch.cos(self.theta), torch.sin(self.theta)
            R = torch.stack([torch.stack([c, -s]), torch.stack([s, c])]).expand(x.shape[0], 2, 2)
            return CanonicalizationResult(element=R, scores=None, canonical=x)

    x, y = torch.rand(64, 28, 28), torch.randint(0, 10, (64,))
    res = adapt(ResNetBackbone(hidden=4, blocks=(1,), stem_stride=2), x, y, canonicalizer=AngleCanonicalizer(),
                prior_weight=1.0, task_weight=0.0, freeze_backbone=True, epochs=30, lr=0.05, batch_size=64,
                device="cpu", x_val=x[:8], y_val=y[:8])
    assert abs(float(res.model.canonicalizer.theta.detach())) < 0.2
    assert "val_identity" in res.history


def test_accuracy_is_the_one_of_symviz_train():
    import symviz.chapters.ch03_equivariant_adaptation.pretrained as pretrained
    import symviz.train

    assert accuracy is symviz.train.accuracy and "accuracy" in pretrained.__all__


def test_evaluate_adapted_matches_separate_measurements():
    torch.manual_seed(0)
    model = AdaptedModel(C4ImageCanonicalizer(hidden=4, pool=2), ResNetBackbone(hidden=4, blocks=(1,))).eval()
    x, y = torch.rand(30, 28, 28), torch.randint(0, 10, (30,))
    ev = evaluate_adapted(model, x, y, seed=1, batch_size=7)
    assert ev["upright"] == accuracy(model, x, y)
    assert ev["rotated"] == ev["upright"]                      # exactly invariant: same predictions
    assert ev["identity"] == identity_metric(model.canonicalizer, x)
    assert torch.equal(ev["histogram"], element_histogram(model.canonicalizer, x))
    with pytest.raises(ValueError, match="labels"):
        evaluate_adapted(model, x, y[:3])
    with pytest.raises(ValueError, match="discrete canonicalizer"):
        evaluate_adapted(ResNetBackbone(hidden=4, blocks=(1,)), x, y)


# --- the learner's objective and step (the exercise) -------------------------------------------

def test_adaptation_objective_is_task_loss_plus_weighted_prior():
    g = torch.Generator().manual_seed(0)
    logits, labels, scores = torch.randn(6, 10, generator=g), torch.randint(0, 10, (6,), generator=g), torch.randn(6, 4, generator=g)
    ce = torch.nn.functional.cross_entropy(logits, labels)
    assert torch.equal(adaptation_objective(logits, labels, scores, 0.0), ce)
    assert torch.allclose(adaptation_objective(logits, labels, scores, 2.5), ce + 2.5 * canonicalization_prior(scores))
    assert torch.allclose(adaptation_objective(logits, labels, scores, 1.0, task_weight=0.0), canonicalization_prior(scores))


def test_adapt_trains_with_the_objective_and_step_it_is_given():
    """The learner's objective and step drive the loop; equal ones give the reference's weights exactly."""
    calls = {"step": 0, "objective": 0}

    def my_objective(logits, labels, scores, beta):
        calls["objective"] += 1
        return torch.nn.functional.cross_entropy(logits, labels) + beta * canonicalization_prior(scores)

    def my_step(model, batch, optimizer, objective, beta):
        calls["step"] += 1
        return adaptation_step(model, batch, optimizer, objective, beta)

    x, y = torch.rand(40, 28, 28), torch.randint(0, 10, (40,))
    bb = ResNetBackbone(hidden=4, blocks=(1,), stem_stride=2)
    kw = dict(prior_weight=3.0, epochs=2, batch_size=20, hidden=4, device="cpu", seed=1, x_val=x[:10], y_val=y[:10])
    mine = adapt(bb, x, y, objective=my_objective, step=my_step, **kw)
    ref = adapt(bb, x, y, **kw)
    assert calls["step"] == 4 and calls["objective"] >= 4           # 2 epochs x 2 batches (+ validation)
    for (k, a), b in zip(mine.model.state_dict().items(), ref.model.state_dict().values()):
        assert torch.equal(a, b), k
    assert mine.history.drop(columns="seconds").equals(ref.history.drop(columns="seconds"))


def test_check_adaptation_objective_accepts_right_answers():
    assert check_adaptation_objective(adaptation_objective)
    zeros = lambda s: torch.zeros(len(s), dtype=torch.long)  # noqa: E731
    assert check_adaptation_objective(lambda l, y, s, b: torch.nn.functional.cross_entropy(l, y)
                                      + b * torch.nn.functional.cross_entropy(s, zeros(s)))


def _prior_towards(s, k):
    return -torch.log_softmax(s, 1)[:, k].mean()


@pytest.mark.parametrize("objective, message", [
    (lambda l, y, s, b: torch.nn.functional.cross_entropy(l, y) - b * _prior_towards(s, 0), "wrong sign"),
    (lambda l, y, s, b: torch.nn.functional.cross_entropy(l, y) + b * _prior_towards(s, 1), "towards element 1"),
    (lambda l, y, s, b: torch.nn.functional.cross_entropy(l, y)
     + b * torch.nn.functional.cross_entropy(s, s.argmax(1)), "already picks (argmax)"),
    (lambda l, y, s, b: b * torch.nn.functional.cross_entropy(l, y) + _prior_towards(s, 0), "β multiplies the task loss"),
    (lambda l, y, s, b: torch.nn.functional.cross_entropy(l, y) + _prior_towards(s, 0), "β is missing"),
    (lambda l, y, s, b: torch.nn.functional.cross_entropy(l, y) - b * torch.log_softmax(s, 1)[:, 0].sum(), "summed"),
    (lambda l, y, s, b: (torch.nn.functional.cross_entropy(l, y) + b * _prior_towards(s, 0)).detach().clone(),
     "no gradient"),
])
def test_check_adaptation_objective_rejects_plausible_mistakes(objective, message):
    res = check_adaptation_objective(objective)
    assert not res and message in res.message


def _step(zero_grad=True, backward=True, step=True, beta_scale=1.0):
    def fn(model, batch, optimizer, objective, beta):
        x, y = batch
        logits, result = model.forward_with_details(x)
        loss = objective(logits, y, result.scores, beta * beta_scale)
        if zero_grad:
            optimizer.zero_grad()
        if backward:
            loss.backward()
        if step:
            optimizer.step()
        return loss.detach()
    return fn


def test_check_adaptation_step_accepts_the_reference_and_its_own_right_answer():
    assert check_adaptation_step(adaptation_step)
    assert check_adaptation_step(_step())


@pytest.mark.parametrize("step, message", [
    (_step(step=False), "call optimizer.step()"),
    (_step(zero_grad=False), "optimizer.zero_grad()"),
    (_step(backward=False), "no gradient was computed"),
    (_step(beta_scale=0.0), "your step's loss is"),
])
def test_check_adaptation_step_rejects_plausible_mistakes(step, message):
    res = check_adaptation_step(step)
    assert not res and message in res.message


def test_templates_fall_back_to_the_reference(monkeypatch):
    from symviz import report

    monkeypatch.setattr(report, "_exercises", [])
    monkeypatch.delenv("SYMVIZ_SOLUTIONS", raising=False)

    def my_objective(logits, labels, scores, beta):
        raise NotImplementedError("write my_objective")

    def my_step(model, batch, optimizer, objective, beta):
        raise NotImplementedError("write my_step")

    obj = report.accept("objective", my_objective, check_adaptation_objective, reference=adaptation_objective)
    step = report.accept("step", my_step, check_adaptation_step, reference=adaptation_step)
    assert obj.__wrapped__ is adaptation_objective and step.__wrapped__ is adaptation_step
    assert [(e["passed"], e["source"]) for e in report.exercises()] == [(False, "reference"), (False, "reference")]
    assert "NotImplementedError" in report.exercises()[1]["message"]


def test_conclude_records_claims_of_both_kinds(monkeypatch):
    import pandas as pd

    from symviz import report

    monkeypatch.setattr(report, "_exercises", [])
    monkeypatch.setattr(report, "_current", None)     # restored after the test
    report.start("03_test", None, verbose=False)
    torch.manual_seed(0)
    adapted = AdaptedModel(C4ImageCanonicalizer(hidden=4, pool=2), ResNetBackbone(hidden=4, blocks=(1,))).eval()
    backbone = ResNetBackbone(hidden=4, blocks=(1,)).eval()
    runs = pd.DataFrame([{"config": c, "seed": s, "upright": 0.85, "rotated": r, "identity": i}
                         for c, s, r, i in (("no prior", 0, 0.80, 0.3), ("prior", 0, 0.84, 0.8),
                                            ("no prior", 1, 0.81, 0.2), ("prior", 1, 0.85, 0.9))])
    ev = {"upright": 0.9, "rotated": 0.4, "per_angle": {0.0: 0.9, 90.0: 0.2, 180.0: 0.3, 270.0: 0.2}}
    kw = dict(seeds=[0, 1], source="fashion_mnist", backbone_from_cache=True, c8_mean={"prior": 0.7}, wall_seconds=1.0)
    table = conclude(runs, ev, [adapted], backbone, torch.rand(8, 28, 28), **kw)
    assert list(table.columns) == ["claim", "kind", "numbers", "holds"]
    assert list(table.kind) == ["paper", "sanity", "paper", "paper", "paper"]   # the accuracy gap beats the spread
    assert table.holds[[0, 2, 3, 4]].all()       # (an untrained backbone may be nearly invariant: row 1 not asserted)
    assert report.current().metrics["invariance_error_adapted"] < 1e-6
    assert report.current().metrics["prior_identity_metric_per_seed"] == [0.8, 0.9]
    with pytest.raises(ValueError, match="columns"):
        conclude(runs.drop(columns="identity"), ev, [adapted], backbone, torch.rand(8, 28, 28), **kw)
    with pytest.raises(ValueError, match="one row per seed"):
        conclude(runs, ev, [adapted], backbone, torch.rand(8, 28, 28), **{**kw, "seeds": [0, 1, 2]})


def test_smoke_run_evaluates_a_few_small_batches(monkeypatch):
    """`symviz run --smoke`: evaluations and adaptation take their code path on smoke_steps() batches of at most
    SMOKE_BATCH images (full mode's 10 000 test images and batches of 256 made most of the full-mode smoke)."""
    from symviz import train

    torch.manual_seed(0)
    model = AdaptedModel(C4ImageCanonicalizer(hidden=4, pool=2), ResNetBackbone(hidden=4, blocks=(1,))).eval()
    x, y = torch.rand(300, 28, 28), torch.randint(0, 10, (300,))
    full = evaluate_adapted(model, x, y, seed=1)
    assert int(full["histogram"].sum()) == 300
    monkeypatch.setenv(train.SMOKE_ENV, "2")
    ev = evaluate_adapted(model, x, y, seed=1)
    assert int(ev["histogram"].sum()) == 32                    # 2 batches of SMOKE_BATCH = 16
    assert int(element_histogram(model.canonicalizer, x).sum()) == 32
    assert ev["identity"] == identity_metric(model.canonicalizer, x[:32])
    assert evaluate_rotations(model, x, y, "C4")["upright"] == accuracy(model, x[:32], y[:32])
    seen = []
    res = adapt(ResNetBackbone(hidden=4, blocks=(1,)), x, y, prior_weight=1.0, seed=0, x_val=x[:100], y_val=y[:100],
                step=lambda m, b, opt, obj, w: seen.append(len(b[0])) or adaptation_step(m, b, opt, obj, w))
    assert seen == [16, 16] and len(res.history) == 1          # one epoch of 2 steps, batches of SMOKE_BATCH
    monkeypatch.delenv(train.SMOKE_ENV)
    assert int(element_histogram(model.canonicalizer, x).sum()) == 300
