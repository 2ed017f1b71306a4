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
    model = torch.nn.Linear(4, 1)
    res = train.fit(model, _loss, _data(), _data(64, 1), epochs=60, lr=0.05, patience=3, progress=False)
    assert len(res.history) <= 60
    best = train.evaluate(res.model, _loss, _data(64, 1))
    assert best == pytest.approx(res.best_val_loss, rel=1e-5)


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


def test_a_report_records_the_threads_its_numbers_were_measured_with(tmp_path):
    import json

    import torch

    from symviz.report import Report

    Report("demo", tmp_path / "r.json", verbose=False)
    assert json.loads((tmp_path / "r.json").read_text())["metrics"]["torch_threads"] == torch.get_num_threads()
