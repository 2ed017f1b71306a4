"""`symviz run --smoke`: every training stops after a few steps, nothing trained is cached, claims are not asserted."""
from __future__ import annotations

import nbformat
import pytest
import torch

from symviz import report, train


def _loader(n_batches=10, bs=4):
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(bs, 3, generator=g), torch.randn(bs, 1, generator=g)) for _ in range(n_batches)]


def _mse(m, b):
    return ((m(b[0]) - b[1]) ** 2).mean()


@pytest.mark.parametrize("raw, expected", [("", None), ("0", None), ("2", 2), (" 5 ", 5)])
def test_smoke_steps_reads_the_environment(monkeypatch, raw, expected):
    monkeypatch.setenv(train.SMOKE_ENV, raw)
    assert train.smoke_steps() == expected


@pytest.mark.parametrize("raw", ["-1", "two"])
def test_smoke_steps_rejects_nonsense(monkeypatch, raw):
    monkeypatch.setenv(train.SMOKE_ENV, raw)
    with pytest.raises(ValueError, match="SYMVIZ_SMOKE must be a positive number of steps"):
        train.smoke_steps()


def test_fit_stops_after_the_smoke_steps_and_caches_nothing_real(monkeypatch, tmp_path):
    monkeypatch.setenv("SYMVIZ_CACHE", str(tmp_path))
    steps = []
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    orig = opt.step
    opt.step = lambda *a, **k: (steps.append(1), orig(*a, **k))[1]
    monkeypatch.setenv(train.SMOKE_ENV, "2")
    res = train.fit(model, _mse, _loader(), _loader(6), epochs=50, optimizer=opt, checkpoint="smoke_demo",
                    device="cpu", progress=False)
    assert len(steps) == 2 and len(res.history) == 1 and res.checkpoint is None
    train.save_checkpoint(model, "by_hand")
    assert not (tmp_path / "checkpoints").exists() and (tmp_path / "smoke-checkpoints" / "by_hand.pt").exists()
    monkeypatch.delenv(train.SMOKE_ENV)
    assert not train.load_checkpoint(torch.nn.Linear(3, 1), "by_hand")   # real runs never see smoke weights
    res = train.fit(torch.nn.Linear(3, 1), _mse, _loader(), epochs=3, device="cpu", progress=False)
    assert len(res.history) == 3                                          # and without the variable nothing is cut


def test_evaluate_is_capped_in_a_smoke_run(monkeypatch):
    seen = []
    model = torch.nn.Linear(3, 1)
    loss = lambda m, b: (seen.append(1), _mse(m, b))[1]  # noqa: E731
    monkeypatch.setenv(train.SMOKE_ENV, "3")
    train.evaluate(model, loss, _loader(8), "cpu")
    assert len(seen) == 3


def test_claims_are_not_asserted_in_a_smoke_run(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv(train.SMOKE_ENV, "2")
    r = report.start("demo", tmp_path / "r.json", verbose=False)
    r.claim("would fail", False)
    assert r.check() is None and r.failed == ["would fail"]
    assert "claims recorded, not asserted" in capsys.readouterr().out


def test_symviz_run_smoke_passes_a_chapter_whose_claim_fails(tmp_path):
    from symviz.run import run_chapters

    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell('SCALE = "quick"\nDEVICE = "auto"\nSEED = 0\nREPORT_PATH = None'),
                nbformat.v4.new_code_cell("import os\nfrom symviz import report, train\nSTEPS = train.smoke_steps()"),
                nbformat.v4.new_code_cell("report.start('10_smoke', REPORT_PATH)\nreport.metric('steps', STEPS)\n"
                                          "report.claim('an effect two steps cannot show', False)\nreport.check()")]
    nb.cells[0].metadata["tags"] = ["parameters"]
    nbformat.write(nb, nbdir / "10_smoke.ipynb")
    summary = run_chapters(out=tmp_path / "b1", notebooks=nbdir, html=False, verbose=False, smoke=True)
    (r,) = summary["chapters"]
    assert summary["smoke"] is True and r["status"] == "ok" and r["metrics"]["steps"] == 2, r["error"]
    (r,) = run_chapters(out=tmp_path / "b2", notebooks=nbdir, html=False, verbose=False)["chapters"]
    assert r["status"] == "failed" and "an effect two steps cannot show" in r["error"]


def test_chapter_07_loops_obey_the_smoke_steps(monkeypatch):
    """Chapter 07 trains in its own full-batch loops (the Adam state must survive a loss switch): they ask too."""
    from symviz.chapters.ch07_gradient_starvation.experiments import MLP, train_colored_branches, train_full_batch

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 2, generator=g), (torch.rand(40, generator=g) > 0.5).long()
    monkeypatch.setenv(train.SMOKE_ENV, "2")
    res = train_full_batch(MLP(2, 8), x, y, steps=1000, log_every=1)
    assert res.history["step"].max() == 2
    out = train_colored_branches(lambda: MLP(2, 8), x, y, x, y, branches=("erm", "sd"), steps=2001, anneal=450,
                                 log_every=1)
    assert all(r.history["step"].max() == 4 for r in out.values())   # 2 steps before the switch, 2 after


def test_accuracy_scores_a_few_batches_in_a_smoke_run(monkeypatch):
    calls = []
    model = torch.nn.Linear(3, 2)
    model.register_forward_hook(lambda *a: calls.append(1))
    x, y = torch.randn(50, 3), torch.randint(0, 2, (50,))
    full = train.accuracy(model, x, y, batch_size=10)
    assert len(calls) == 5
    monkeypatch.setenv(train.SMOKE_ENV, "2")
    calls.clear()
    part = train.accuracy(model, x, y, batch_size=10)
    assert len(calls) == 2 and 0.0 <= part <= 1.0
    monkeypatch.delenv(train.SMOKE_ENV)
    assert part == train.accuracy(model, x[:20], y[:20]) and full == train.accuracy(model, x, y)


def test_nbody_splits_are_small_in_a_smoke_run(monkeypatch, tmp_path):
    """Full mode's 3000/2000/2000 charged systems take minutes to simulate on a CPU: a smoke run simulates at
    most SMOKE_SYSTEMS per split (their own cache entries: the sizes are part of the key)."""
    from symviz.data import nbody

    monkeypatch.setenv("SYMVIZ_CACHE", str(tmp_path))
    monkeypatch.setenv(train.SMOKE_ENV, "2")
    monkeypatch.setattr(nbody, "SMOKE_SYSTEMS", 3)
    sp = nbody.charged_splits(5, 4, 2, seed=0, cache=False, frame_in=1, frame_out=2)
    assert {k: len(v["loc"]) for k, v in sp.items()} == {"train": 3, "val": 3, "test": 2}
    monkeypatch.delenv(train.SMOKE_ENV)
    sp = nbody.charged_splits(5, 4, 2, seed=0, cache=False, frame_in=1, frame_out=2)
    assert {k: len(v["loc"]) for k, v in sp.items()} == {"train": 5, "val": 4, "test": 2}


def test_qm9_is_small_in_a_smoke_run(monkeypatch, tmp_path):
    """Full mode reads all 130,831 QM9 molecules (minutes, 4 GB): a smoke run reads SMOKE_MOLECULES and splits them."""
    from symviz.data import qm9

    monkeypatch.setenv("SYMVIZ_CACHE", str(tmp_path))
    monkeypatch.setenv(train.SMOKE_ENV, "2")
    monkeypatch.setattr(qm9, "SMOKE_MOLECULES", 40)
    mols = qm9.load_qm9(None, parts=(1,), hydrogens=False, cache=False)
    assert len(mols["y"]) == 40
    sp = qm9.qm9_splits(mols, 100000, 17748, 13083)
    assert {k: len(v["y"]) for k, v in sp.items()} == {"train": 20, "val": 10, "test": 10}
    monkeypatch.delenv(train.SMOKE_ENV)
    with pytest.raises(ValueError, match="sum"):
        qm9.qm9_splits(mols, 100000, 17748, 13083)


def test_pools_and_images_are_small_in_a_smoke_run(monkeypatch):
    """Chapter 06's full candidate pool and chapter 07's 50,000 coloured images shrink to quick-mode sizes under
    --smoke (their labels, descriptors and full-batch steps were most of the full-mode smoke)."""
    from symviz.data import magnetic, starvation

    monkeypatch.setenv(train.SMOKE_ENV, "2")
    split = starvation.colored_fashion_mnist(n_train=50000, n_test=5000)
    assert len(split.train.y) == len(split.test.y) == starvation.SMOKE_IMAGES
    monkeypatch.setattr(magnetic, "SMOKE_POOL", {"prototypes": 5, "real": 0, "aflow": 0})
    assert len(magnetic.candidate_pool(n_prototypes=2000, n_real=0)) <= 5
    monkeypatch.delenv(train.SMOKE_ENV)
    assert len(starvation.colored_fashion_mnist(n_train=1200, n_test=20).train.y) == 1200


def test_tensor_batches_are_small_in_a_smoke_run(monkeypatch):
    x = torch.arange(100.0)
    assert [len(b[0]) for b in train.TensorBatches(x, batch_size=64, shuffle=False)] == [64, 36]
    monkeypatch.setenv(train.SMOKE_ENV, "2")
    assert max(len(b[0]) for b in train.TensorBatches(x, batch_size=64)) == train.SMOKE_BATCH
    assert [len(b[0]) for b in train.TensorBatches(x, batch_size=8, shuffle=False)][:1] == [8]
