import json

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from symviz import report, train


def _data(n=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.tensor([1.0, -1.0, 0.5, 2.0]) + 0.3
    return DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=g)


def _loss(m, b):
    return ((m(b[0]).squeeze(-1) - b[1]) ** 2).mean()


def test_fit_learns_and_returns_a_history_table():
    res = train.fit(torch.nn.Linear(4, 1), _loss, _data(), _data(64, 1), epochs=25, lr=0.05, progress=False)
    h = res.history
    assert list(h.columns[:3]) == ["epoch", "train_loss", "val_loss"]
    assert h["train_loss"].iloc[-1] < 0.05 * h["train_loss"].iloc[0]
    assert res.device.type == "cpu" and res.best_val_loss == h["val_loss"].min()


def test_fit_is_reproducible_by_seed():
    runs = []
    for _ in range(2):
        train.seed_everything(7)  # the model's initial weights come from the global generator
        runs.append(train.fit(torch.nn.Linear(4, 1), _loss, _data(), epochs=3, seed=7, progress=False).history["train_loss"])
    a, b = runs
    assert a.tolist() == b.tolist()


def test_early_stopping_stops_and_restores_best_weights():
    # validation targets that contradict the training targets: training makes the validation loss worse
    # after a few epochs, so early stopping must end the run long before `epochs`
    g = torch.Generator().manual_seed(1)
    xv = torch.randn(64, 4, generator=g)
    val = [(xv, -(xv @ torch.tensor([1.0, -1.0, 0.5, 2.0])))]
    train.seed_everything(0)
    model = torch.nn.Linear(4, 1)
    epochs, patience = 60, 3
    res = train.fit(model, _loss, _data(), val, epochs=epochs, lr=0.05, patience=patience, progress=False)
    h = res.history
    assert len(h) == res.best_epoch + patience < epochs, "stopped `patience` epochs after the best one, early"
    best = h["val_loss"].min()
    assert h["val_loss"].iloc[res.best_epoch - 1] == best
    assert (h["val_loss"].iloc[res.best_epoch:] >= best).all(), "no improvement in the epochs it waited"
    assert h["val_loss"].iloc[-1] > best          # the last epoch's weights are worse than the best ones...
    assert train.evaluate(res.model, _loss, val) == pytest.approx(best, rel=1e-6)   # ...and were replaced


def test_amp_is_opt_in_and_refused_where_there_is_no_bf16_autocast():
    import inspect

    assert inspect.signature(train.fit).parameters["amp"].default is False
    seen = []

    def loss(m, b):
        seen.append(torch.is_autocast_enabled(b[0].device.type))
        return _loss(m, b)

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    train.fit(torch.nn.Linear(4, 1), loss, _data(), epochs=1, device=dev, progress=False)
    assert seen and not any(seen), "float32 unless amp=True is asked for"
    with pytest.raises(ValueError, match=r"amp=True \(bf16 autocast\) needs a CUDA GPU.*cpu.*amp=False"):
        train.fit(torch.nn.Linear(4, 1), _loss, _data(), epochs=1, device="cpu", amp=True, progress=False)
    with pytest.raises(ValueError, match="amp must be True"):
        train.fit(torch.nn.Linear(4, 1), _loss, _data(), epochs=1, device="cpu", amp=None, progress=False)


@pytest.mark.skipif(not (torch.cuda.is_available() and torch.cuda.is_bf16_supported()), reason="needs a GPU with bf16")
def test_amp_true_autocasts_on_a_cuda_gpu():
    seen = []

    def loss(m, b):
        out = m(b[0])
        seen.append(out.dtype)
        return ((out.squeeze(-1).float() - b[1]) ** 2).mean()

    res = train.fit(torch.nn.Linear(4, 1), loss, _data(), epochs=2, device="cuda", amp=True, progress=False)
    assert seen and set(seen) == {torch.bfloat16} and res.device.type == "cuda"
    assert next(res.model.parameters()).dtype == torch.float32      # weights stay float32


def test_a_ready_optimizer_carries_lr_and_weight_decay_and_fit_refuses_both():
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for given in ({"lr": 0.05}, {"weight_decay": 0.0}, {"lr": 1e-3, "weight_decay": 1e-4}):
        with pytest.raises(ValueError, match=r"ready optimizer \(Adam\) and (lr|weight_decay)=.*would be ignored.*"
                                             r"drop them from fit"):
            train.fit(model, _loss, _data(), optimizer=opt, progress=False, **given)
    # the optimizer alone: trained with its own learning rate, exactly as fit's own Adam with that lr
    train.seed_everything(0)
    a = torch.nn.Linear(4, 1)
    b = torch.nn.Linear(4, 1)
    b.load_state_dict(a.state_dict())
    ha = train.fit(a, _loss, _data(), epochs=3, optimizer=torch.optim.Adam(a.parameters(), lr=0.05),
                   progress=False).history
    hb = train.fit(b, _loss, _data(), epochs=3, lr=0.05, progress=False).history
    assert ha["train_loss"].tolist() == hb["train_loss"].tolist()


def test_an_optimizer_by_name_gets_lr_1e3_and_no_weight_decay_by_default(monkeypatch):
    made = []

    class SpyAdam(torch.optim.Adam):
        def __init__(self, params, **kwargs):
            made.append(kwargs)
            super().__init__(params, **kwargs)

    monkeypatch.setattr(torch.optim, "Adam", SpyAdam)
    train.fit(torch.nn.Linear(4, 1), _loss, _data(), epochs=1, progress=False)
    train.fit(torch.nn.Linear(4, 1), _loss, _data(), epochs=1, lr=0.2, weight_decay=0.1, progress=False)
    assert made == [{"lr": 1e-3, "weight_decay": 0.0, "foreach": True}, {"lr": 0.2, "weight_decay": 0.1, "foreach": True}]


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_optimizers_by_name_use_the_multi_tensor_update_with_the_numbers_of_the_default_one(name):
    """On a CPU fit's named optimizers take PyTorch's multi-tensor (foreach) update: bit for bit the weights that
    PyTorch's CPU default (one tensor at a time) gives, weight decay, momentum and batch norm included."""
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[name]
    extra = {"momentum": 0.9} if name == "sgd" else {}

    def trained(use_fit):
        torch.manual_seed(0)
        m = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.SiLU(), torch.nn.BatchNorm1d(16), torch.nn.Linear(16, 1))
        if use_fit:
            res = train.fit(m, _loss, _data(), epochs=3, optimizer=name, lr=3e-3, weight_decay=1e-2, progress=False,
                            device="cpu")
            assert res.model is m
        else:
            opt = cls(m.parameters(), lr=3e-3, weight_decay=1e-2, foreach=False, **extra)
            loader = _data()
            for _ in range(3):
                for batch in loader:
                    opt.zero_grad(set_to_none=True)
                    _loss(m, batch).backward()
                    opt.step()
        return [p.detach().clone() for p in m.parameters()]

    a, b = trained(True), trained(False)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_fused_adam_is_adam_with_the_fused_kernel_and_the_same_update_rule():
    """fused_adam: PyTorch's fused Adam where the device has it (a CPU does, from torch 2.4); the weights it trains agree
    with the multi-tensor Adam's to rounding (not bit for bit), weight decay included."""
    def trained(make):
        torch.manual_seed(0)
        m = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.SiLU(), torch.nn.Linear(16, 1))
        res = train.fit(m, _loss, _data(), epochs=3, optimizer=make(m), progress=False, device="cpu")
        return [p.detach().clone() for p in res.model.parameters()]

    opt = train.fused_adam(torch.nn.Linear(2, 2), lr=3e-3, weight_decay=1e-2, device="cpu")
    assert isinstance(opt, torch.optim.Adam) and opt.defaults["weight_decay"] == 1e-2 and opt.defaults["lr"] == 3e-3
    assert opt.defaults["fused"] is True   # torch 2.13 on a CPU
    a = trained(lambda m: train.fused_adam(m, lr=3e-3, weight_decay=1e-2, device="cpu"))
    b = trained(lambda m: torch.optim.Adam(m.parameters(), lr=3e-3, weight_decay=1e-2, foreach=True))
    assert all(torch.allclose(x, y, rtol=1e-5, atol=1e-6) for x, y in zip(a, b))
    with pytest.raises(ValueError, match="learning rate"):
        train.fused_adam(torch.nn.Linear(2, 2), lr=-1.0, device="cpu")
    # eps is Adam's (chapter 07's recipe depends on it); device=None leaves the model where it is
    opt = train.fused_adam(torch.nn.Linear(2, 2), lr=1e-4, device=None, eps=1e-3)
    assert opt.defaults["eps"] == 1e-3 and opt.defaults["fused"] is True
    with pytest.raises(ValueError, match="epsilon"):
        train.fused_adam(torch.nn.Linear(2, 2), lr=1e-4, device=None, eps=-1.0)


def _rng_states():
    import random

    import numpy as np

    return torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()


def _same_states(a, b):
    return torch.equal(a[0], b[0]) and (a[1] == b[1]).all() and a[2] == b[2]


def test_fit_leaves_the_global_rng_alone_without_seed_and_seeds_it_with_one():
    loader = train.TensorBatches(torch.randn(32, 4), torch.randn(32), batch_size=8, seed=0)   # its own generator
    train.seed_everything(123)
    model = torch.nn.Linear(4, 1)                       # the caller seeds, builds the model, then calls fit
    before = _rng_states()
    train.fit(model, _loss, loader, epochs=2, progress=False)
    assert _same_states(_rng_states(), before), "seed=None (the default) must not touch the global RNGs"
    train.fit(torch.nn.Linear(4, 1), _loss, loader, epochs=2, seed=5, progress=False)
    after_fit = _rng_states()
    train.seed_everything(5)
    assert _same_states(after_fit, _rng_states()), "seed=5 seeds python, numpy and torch before training"


class _Tagger(torch.nn.Module):
    """Logits that pick class ``round(x[:, 0]) % 3``, behind BatchNorm and dropout (train mode would change them)."""

    def __init__(self):
        super().__init__()
        self.bn = torch.nn.BatchNorm1d(1, affine=False)
        self.drop = torch.nn.Dropout(0.9)
        self.grad_enabled = []

    def forward(self, x):
        self.grad_enabled.append(torch.is_grad_enabled())
        k = self.drop(self.bn(x[:, :1])).round().long().squeeze(-1) % 3
        return torch.nn.functional.one_hot(k, 3).float()


def test_accuracy_equals_a_plain_loop_at_every_batch_size_and_restores_the_mode():
    from symviz.train import accuracy

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 6, (10, 2), generator=g).float()
    y = torch.randint(0, 3, (10,), generator=g)
    model = _Tagger()
    model.eval()
    expected = sum(int(model(x[i:i + 1]).argmax(-1) == y[i]) for i in range(10)) / 10   # one example at a time
    assert 0 < expected < 1
    model.train()
    stats = model.bn.running_mean.clone()
    for bs in (1, 3, 4, 9, 10, 11, 500):                 # 10 % bs != 0: a short last batch
        model.grad_enabled.clear()
        assert accuracy(model, x, y, batch_size=bs) == expected, f"batch_size={bs}"
        assert len(model.grad_enabled) == -(-10 // bs) and not any(model.grad_enabled), "every batch once, no grad"
        assert model.training and model.bn.training and model.drop.training, "train mode restored"
    assert torch.equal(model.bn.running_mean, stats), "evaluated in eval mode: BatchNorm statistics untouched"
    model.eval()
    assert accuracy(model, x, y, 4, "cpu") == expected and not model.training, "eval mode stays eval mode"
    assert accuracy(model, x, y.to(torch.int32)) == expected
    assert accuracy(torch.nn.Identity(), torch.eye(3), torch.tensor([0, 1, 0])) == 2 / 3   # no parameters: CPU


def test_accuracy_runs_where_the_model_is_unless_a_device_is_given(monkeypatch):
    from symviz.train import accuracy

    model = torch.nn.Linear(2, 3)
    x, y = torch.randn(5, 2), torch.tensor([0, 1, 2, 0, 1])
    moves = []
    real_to = torch.nn.Module.to
    monkeypatch.setattr(torch.nn.Module, "to", lambda self, *a, **k: moves.append(a) or real_to(self, *a, **k))
    accuracy(model, x, y)
    assert moves == [], "no device given: the model stays where it is"
    accuracy(model, x, y, device="cpu")
    assert next(model.parameters()).device.type == "cpu"
    if torch.cuda.is_available():
        moves.clear()
        acc = accuracy(model, x, y, device="cuda")
        assert acc == accuracy(model, x, y) and next(model.parameters()).device.type == "cpu", "moved back"
        assert [m[0].type for m in moves] == ["cuda", "cpu"]


def test_accuracy_bad_inputs():
    from symviz.train import accuracy

    m = torch.nn.Linear(2, 3)
    with pytest.raises(ValueError, match="same length"):
        accuracy(m, torch.randn(4, 2), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="no examples"):
        accuracy(m, torch.randn(0, 2), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="batch_size"):
        accuracy(m, torch.randn(4, 2), torch.zeros(4, dtype=torch.long), batch_size=0)
    with pytest.raises(ValueError, match=r"labels of shape \(N,\)"):
        accuracy(m, torch.randn(4, 2), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="device must be one of"):
        accuracy(m, torch.randn(4, 2), torch.zeros(4, dtype=torch.long), device="tpu")


def test_metrics_are_recorded():
    res = train.fit(torch.nn.Linear(4, 1), _loss, _data(), _data(64, 1), epochs=2, progress=False,
                    metrics={"mae": lambda m, b: (m(b[0]).squeeze(-1) - b[1]).abs().mean()})
    assert "mae" in res.history


def test_checkpoint_roundtrip_and_corrupt_or_mismatched_files(tmp_cache):
    model = torch.nn.Linear(4, 1)
    res = train.fit(model, _loss, _data(), epochs=2, progress=False, checkpoint="lin")
    assert res.checkpoint.exists() and res.checkpoint.parent.parent == tmp_cache
    fresh = torch.nn.Linear(4, 1)
    assert train.load_checkpoint(fresh, "lin")
    assert torch.equal(fresh.weight, model.weight)
    assert not train.load_checkpoint(torch.nn.Linear(5, 1), "lin")              # other architecture
    assert not train.load_checkpoint(torch.nn.Linear(4, 1), "lin", meta={"data": "other"})
    res.checkpoint.write_bytes(b"not a checkpoint")
    assert not train.load_checkpoint(torch.nn.Linear(4, 1), "lin")              # corrupt: caller retrains
    assert not train.load_checkpoint(torch.nn.Linear(4, 1), "missing")


def test_bad_arguments_give_clear_errors():
    with pytest.raises(ValueError, match="device must be one of"):
        train.resolve_device("tpu")
    with pytest.raises(ValueError, match="epochs"):
        train.fit(torch.nn.Linear(4, 1), _loss, _data(), epochs=0)
    with pytest.raises(ValueError, match="needs a val_loader"):
        train.fit(torch.nn.Linear(4, 1), _loss, _data(), patience=2)
    with pytest.raises(TypeError, match="nn.Module"):
        train.fit(lambda x: x, _loss, _data())
    with pytest.raises(ValueError, match="optimizer"):
        train.fit(torch.nn.Linear(4, 1), _loss, _data(), optimizer="lbfgs")
    with pytest.raises(ValueError, match="weight_decay must be"):
        train.fit(torch.nn.Linear(4, 1), _loss, _data(), weight_decay=-1.0)
    with pytest.raises(FloatingPointError, match="lower lr"):
        train.fit(torch.nn.Linear(4, 1), lambda m, b: torch.tensor(float("nan"), requires_grad=True), _data(), progress=False)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            train.resolve_device("cuda")
    assert train.resolve_device("auto").type in ("cpu", "cuda", "mps")


def test_to_device_handles_nested_batches():
    batch = {"x": torch.zeros(2), "y": [torch.ones(1), (torch.ones(1), 3)]}
    out = train.to_device(batch, torch.device("cpu"))
    assert out["y"][1][1] == 3 and torch.equal(out["x"], batch["x"])


def test_report_writes_json_incrementally_and_check_names_failures(tmp_path):
    path = tmp_path / "r.json"
    r = report.start("99_demo", path, verbose=False)
    report.metric("acc", torch.tensor(0.5))
    report.claim("good", True, value=[1, 2])
    data = json.loads(path.read_text())
    assert data["metrics"]["acc"] == 0.5 and data["claims"][0]["holds"] is True
    report.claim("bad claim", 1 > 2)
    with pytest.raises(report.ClaimFailed, match="bad claim"):
        report.check()
    assert r.holds is False


def test_report_requires_claims_and_valid_names():
    r = report.Report("x", verbose=False)
    with pytest.raises(report.ClaimFailed, match="no claims"):
        r.check()
    with pytest.raises(ValueError, match="non-empty"):
        r.metric("", 1)
    with pytest.raises(ValueError, match="non-empty"):
        report.Report("")


def test_chapter_threads_honours_an_explicit_choice_and_defaults_quick_mode_to_one(monkeypatch):
    import torch

    from symviz.train import chapter_threads

    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("SYMVIZ_THREADS", raising=False)
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        torch.set_num_threads(2)
        assert chapter_threads("quick") == 1 and torch.get_num_threads() == 1
        torch.set_num_threads(2)
        assert chapter_threads("full") == 2, "full mode keeps torch's own choice"
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert chapter_threads("quick") == 2 and torch.get_num_threads() == 2
        monkeypatch.setenv("SYMVIZ_THREADS", "1")
        assert chapter_threads("quick") == 1, "SYMVIZ_THREADS (symviz run --threads) wins over OMP_NUM_THREADS"
        for bad in ("0", "two", "-1"):
            monkeypatch.setenv("SYMVIZ_THREADS", bad)
            with pytest.raises(ValueError, match="SYMVIZ_THREADS"):
                chapter_threads("quick")
        with pytest.raises(ValueError, match="scale"):
            chapter_threads("fast")
    finally:
        torch.set_num_threads(before)


def test_usable_cores_reads_a_cgroup_quota_and_quick_mode_never_asks_for_more_threads(tmp_path, monkeypatch):
    import os

    import torch

    import symviz.train as T

    visible = len(os.sched_getaffinity(0))
    assert T.usable_cores(tmp_path) == visible, "no cgroup files: the CPUs the process may run on"
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert T.usable_cores(tmp_path) == visible, "no quota"
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert T.usable_cores(tmp_path) == 1, "half a core is one thread"
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert T.usable_cores(tmp_path) == min(visible, 2), "1.5 cores round up to 2"
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert T.usable_cores(tmp_path) == 1, "cgroup v1 quota of one core"
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert T.usable_cores(tmp_path) == visible, "cgroup v1 without a quota"

    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("SYMVIZ_THREADS", raising=False)
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setattr(T, "usable_cores", lambda: 1)
        assert T.chapter_threads("quick", quick_default=2) == 1, "a 1-core container gets 1 thread, not 2"
        monkeypatch.setattr(T, "usable_cores", lambda: 4)
        assert T.chapter_threads("quick", quick_default=2) == 2
        for bad in (0, True, 1.5):
            with pytest.raises(ValueError, match="quick_default"):
                T.chapter_threads("quick", quick_default=bad)
    finally:
        torch.set_num_threads(before)


def test_a_report_records_the_threads_its_numbers_were_measured_with(tmp_path):
    import json

    import torch

    from symviz.report import Report

    Report("demo", tmp_path / "r.json", verbose=False)
    assert json.loads((tmp_path / "r.json").read_text())["metrics"]["torch_threads"] == torch.get_num_threads()


def test_fit_with_a_step_of_ones_own_trains_like_fit():
    """fit(step=): the caller's step updates the model; with the same update, the same weights and history."""
    def make():
        torch.manual_seed(0)
        return torch.nn.Linear(3, 1)

    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(8, 3, generator=g), torch.randn(8, 1, generator=g)) for _ in range(4)]
    loss = lambda m, b: ((m(b[0]) - b[1]) ** 2).mean()  # noqa: E731
    calls = []

    def my_step(m, batch, opt):
        calls.append(1)
        out = loss(m, batch)
        opt.zero_grad()
        out.backward()
        opt.step()
        return out.detach()

    a, b = make(), make()
    ra = train.fit(a, loss, data, data, epochs=3, optimizer=torch.optim.SGD(a.parameters(), lr=0.1), progress=False,
                   device="cpu")
    rb = train.fit(b, loss, data, data, epochs=3, optimizer=torch.optim.SGD(b.parameters(), lr=0.1), progress=False,
                   device="cpu", step=my_step)
    assert len(calls) == 12
    assert torch.equal(a.weight, b.weight) and ra.history["val_loss"].tolist() == rb.history["val_loss"].tolist()
    with pytest.raises(ValueError, match="grad_clip"):
        train.fit(make(), loss, data, epochs=1, step=my_step, grad_clip=1.0, device="cpu", progress=False)
    with pytest.raises(TypeError, match="step must be a function"):
        train.fit(make(), loss, data, epochs=1, step=3, device="cpu", progress=False)
