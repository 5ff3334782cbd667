"""Training: schedules, log, atomic checkpoints, bit-exact resume, the final report and its ONNX export."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

import lpverify as lv
from lpverify.data import toy_2d
from lpverify.schedule import Loss, epsilon_at, schedule_at
from lpverify.train import RECORD_KEYS, TrainConfig, export_onnx, final_report, load_checkpoint, train
from conftest import random_convnet, shared_path

# The paper's robust loss on toys (the trainer's default is CROWN-IBP with a warm-up).
EXACT = dict(loss=Loss.EXACT, warmup_epochs=0, ramp_epochs=0, kappa_start=0.0, lr_steps=())


def toy_model(seed: int = 0) -> torch.nn.Sequential:
    return lv.zoo.random_mlp([2, 30, 30, 2], seed, bias_std=0.1)


def test_epsilon_schedule_is_linear_then_flat():
    config = TrainConfig(eps=0.1, eps_start=0.05, warmup_epochs=0, ramp_epochs=10)
    assert epsilon_at(config, 0, 0, 100) == pytest.approx(0.05)
    assert epsilon_at(config, 5, 0, 100) == pytest.approx(0.075)
    assert epsilon_at(config, 4, 50, 100) == pytest.approx(0.05 + 0.45 * 0.05)
    assert epsilon_at(config, 30, 0, 100) == pytest.approx(0.1)
    assert epsilon_at(TrainConfig(eps=0.2, warmup_epochs=0, ramp_epochs=0), 0, 0, 10) == 0.2


def test_schedule_warms_up_then_ramps_eps_kappa_beta_and_steps_the_learning_rate():
    config = TrainConfig(eps=0.1, eps_start=0.0, warmup_epochs=2, ramp_epochs=4, kappa_start=1.0, kappa_end=0.5,
                         beta_start=1.0, beta_end=0.0, lr=1e-3, lr_steps=(7, 9), lr_step_factor=0.1)
    warm = schedule_at(config, 1.5)
    assert (warm.eps, warm.kappa, warm.beta, warm.lr) == (0.0, 1.0, 1.0, 1e-3)
    mid = schedule_at(config, 3.0)  # a quarter of the ramp
    assert mid.eps == pytest.approx(0.025) and mid.kappa == pytest.approx(0.875) and mid.beta == pytest.approx(0.75)
    end = schedule_at(config, 6.0)
    assert (end.eps, end.kappa, end.beta) == (pytest.approx(0.1), 0.5, 0.0)
    assert schedule_at(config, 7.0).lr == pytest.approx(1e-4) and schedule_at(config, 9.5).lr == pytest.approx(1e-5)
    assert schedule_at(config, 6.99).lr == 1e-3
    # the old surprise: eps_start is used without any other option, the default ramp starts from it
    default = TrainConfig()
    assert schedule_at(default, 0).eps == default.eps_start < default.eps
    assert schedule_at(default, default.warmup_epochs + default.ramp_epochs / 2).eps == pytest.approx(default.eps / 2)
    with pytest.raises(ValueError, match="kappa_end"):
        TrainConfig(kappa_end=1.5)


def test_resumed_training_equals_an_uninterrupted_run(tmp_path):
    data = toy_2d(12, 0.16, seed=0)
    config = TrainConfig(epochs=3, batch_size=4, eps=0.05, lr=1e-2, test_robust_examples=None, **EXACT)
    straight = toy_model()
    train(straight, data, data, config, tmp_path / "a", progress=False)

    resumed = toy_model()
    train(resumed, data, data, TrainConfig(**{**config.__dict__, "epochs": 1}), tmp_path / "b", progress=False)
    fresh = toy_model(seed=99)  # different initial weights: everything must come from the checkpoint
    history = train(fresh, data, data, config, tmp_path / "b", progress=False)
    assert [h.epoch for h in history] == [1, 2, 3]
    for p, q in zip(straight.parameters(), fresh.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


@pytest.mark.parametrize("loss", [Loss.PROJECTION, Loss.CROWN_IBP])
def test_interrupted_mid_epoch_resumes_bit_exactly(tmp_path, loss, monkeypatch):
    """Interruptions inside epochs (projections draw random numbers: their state is in the checkpoint too)."""
    from lpverify import losses

    drawn = []  # batches whose projection loss did draw projections (not the exact shortcut)
    original = losses.projected_bounds
    monkeypatch.setattr(losses, "projected_bounds", lambda *a, **k: drawn.append(1) or original(*a, **k))
    data = toy_2d(12, 0.16, seed=0)
    config = TrainConfig(epochs=3, batch_size=4, eps=0.05, lr=1e-2, loss=loss, projections=1, warmup_epochs=0.5,
                         ramp_epochs=1.5, lr_steps=(2.5,), test_robust_examples=4)
    straight = toy_model()
    full = train(straight, data, data, config, tmp_path / "a", progress=False)
    assert (len(drawn) > 0) == (loss is Loss.PROJECTION)
    # 3 batches per epoch: stop inside epoch 1 after 2 batches, then inside epoch 3 after 4 more
    part = train(toy_model(), data, data, config, tmp_path / "b", progress=False, stop_after=2)
    assert part == []
    part = train(toy_model(seed=5), data, data, config, tmp_path / "b", progress=False, stop_after=4)
    assert [h.epoch for h in part] == [1, 2]
    resumed = toy_model(seed=99)
    history = train(resumed, data, data, config, tmp_path / "b", progress=False)
    for p, q in zip(straight.parameters(), resumed.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    assert [h.train_robust_loss for h in history] == [h.train_robust_loss for h in full]
    assert history[-1].train_seconds > 0 and all(h.seconds > 0 for h in history)


def test_changed_settings_refuse_to_resume(tmp_path):
    data = toy_2d(12, 0.16, seed=0)
    train(toy_model(), data, data, TrainConfig(epochs=1, batch_size=6, eps=0.05), tmp_path, progress=False)
    with pytest.raises(ValueError, match="was written with settings"):
        train(toy_model(), data, data, TrainConfig(epochs=2, batch_size=6, eps=0.08), tmp_path, progress=False)
    with pytest.raises(ValueError, match="was written with settings"):
        train(toy_model(), data, data, TrainConfig(epochs=2, batch_size=6, eps=0.05, loss=Loss.IBP), tmp_path,
              progress=False)


def test_robust_training_reaches_zero_robust_error_on_a_separable_toy(tmp_path):
    x = torch.tensor([[0.1, 0.1], [0.2, 0.15], [0.8, 0.9], [0.9, 0.8]])
    y = torch.tensor([0, 0, 1, 1])
    model = toy_model(1)
    history = train(model, (x, y), (x, y), TrainConfig(epochs=150, batch_size=4, eps=0.05, lr=1e-2,
                                                     test_robust_examples=None, **EXACT), tmp_path, progress=False)
    assert history[-1].test_robust_err == 0.0
    assert lv.certify(model, x, y, 0.05).all()


@pytest.mark.shared
def test_two_epochs_on_an_mnist_slice_write_a_resumable_checkpoint_and_log(tmp_path):
    from lpverify.data import load_mnist

    x, y = load_mnist(shared_path("data", "mnist"), "train")
    xt, yt = load_mnist(shared_path("data", "mnist"), "test")
    torch.manual_seed(0)
    model = lv.zoo.conv_small()
    config = TrainConfig(epochs=2, batch_size=50, eps=0.1, eps_start=0.05, test_robust_examples=50,
                         **{**EXACT, "ramp_epochs": 50})
    history = train(model, (x[:100], y[:100]), (xt[:100], yt[:100]), config, tmp_path, progress=False)
    rows = list(csv.DictReader((tmp_path / "log.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert set(rows[0]) >= {"train_loss", "train_robust_err", "test_err", "test_robust_loss", "seconds"}
    assert float(rows[1]["eps"]) == pytest.approx(0.05 + 2 / 50 * 0.05)
    assert all(0 <= float(r["test_robust_err"]) <= 1 for r in rows)
    reloaded = lv.zoo.conv_small()
    assert len(load_checkpoint(reloaded, tmp_path / "checkpoint.pt")) == 2
    for p, q in zip(model.state_dict().values(), reloaded.state_dict().values()):
        torch.testing.assert_close(p, q)
    assert history[-1].epoch == 2
    again = train(reloaded, (x[:100], y[:100]), (xt[:100], yt[:100]), config, tmp_path, progress=False)
    assert len(again) == 2  # nothing left to do: the rerun resumes after epoch 2


def test_corrupt_checkpoint_is_reported(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"garbage")
    data = toy_2d(12, 0.16, seed=0)
    with pytest.raises(ValueError, match="cannot be read as a checkpoint"):
        train(toy_model(), data, data, TrainConfig(epochs=1), tmp_path, progress=False)


def test_onnx_export_evaluates_like_the_torch_model(tmp_path):
    model, shape = random_convnet(1, 8, seed=1)
    path = export_onnx(model, shape, tmp_path / "m.onnx")
    x = torch.rand(5, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(lv.onnx_import.reference_outputs(path, x.numpy()), expected, rtol=1e-5, atol=1e-5)
    net = lv.load_onnx(path)  # lpverify reads it back as the same network
    np.testing.assert_allclose(net(x).detach().numpy(), expected, rtol=1e-5, atol=1e-5)


def test_final_report_writes_the_record_and_the_model(tmp_path):
    data = toy_2d(12, 0.16, seed=0)
    model = toy_model()
    config = TrainConfig(epochs=2, batch_size=4, eps=0.02, lr=1e-2, loss=Loss.IBP, warmup_epochs=0.5, ramp_epochs=1,
                         test_robust_examples=None)
    history = train(model, data, data, config, tmp_path, progress=False)
    record = final_report(model, data, config, history, tmp_path, dataset="toy", pgd_steps=10)
    assert set(RECORD_KEYS) <= set(record)
    assert json.loads((tmp_path / "result.json").read_text()) == record
    assert record["method"] == "ibp" and record["epochs"] == 2 and record["threads"] == torch.get_num_threads()
    assert record["config"]["ramp_epochs"] == 1 and record["train_seconds"] == history[-1].train_seconds > 0
    x, y = data
    certified = lv.certify(model, x, y, 0.02)
    assert record["certified_error"] == pytest.approx(float((~certified).float().mean()))
    assert record["clean_error"] <= record["pgd_error"] <= record["certified_error"]
    assert record["certified_error"] == pytest.approx(history[-1].test_robust_err)  # the per-epoch rigorous figure agrees
    net = lv.load_onnx(tmp_path / "model.onnx")
    torch.testing.assert_close(net(x), model(x).detach(), rtol=1e-5, atol=1e-5)


@pytest.mark.shared
def test_train_fast_smoke_run_writes_its_record_and_recipes_table(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "train_fast.py"
    spec = importlib.util.spec_from_file_location("benchmarks_train_fast", path)
    train_fast = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_fast)
    data = str(shared_path("data"))
    assert train_fast.main(["--data", data, "--runs", str(tmp_path), "--epochs", "1", "--warmup-epochs", "0",
                            "--ramp-epochs", "1", "--train-examples", "100", "--final-examples", "20",
                            "--test-robust-examples", "5", "--threads", "1", "--radius-examples", "5", "--no-reference",
                            "--no-progress"]) == 0
    record = json.loads((tmp_path / "mnist_crown-ibp_smoke" / "result.json").read_text())
    assert set(RECORD_KEYS) <= set(record) and record["recipe"] == "crown-ibp" and record["examples"] == 20
    assert record["config"]["ramp_epochs"] == 1.0 and record["config"]["lr_steps"] == list(TrainConfig().lr_steps)
    for figure in ("curves", "radii"):  # Figures 4 and 5 of the run, beside its record (not in figures/ without --write)
        assert (tmp_path / "mnist_crown-ibp_smoke" / f"train_fast_mnist_{figure}.png").stat().st_size > 10_000
    records = tmp_path / "records"
    records.mkdir()
    (records / "mnist_exact.json").write_text(json.dumps({**record, "epochs": 2, "train_seconds": 600}))
    table = train_fast.recipes_table(records)
    assert "| mnist | mnist_exact | 2 | 10.0 | 5.00 |" in table and "| 20 |" in table and "_smoke" not in table and "5.82%" in table


@pytest.mark.shared
def test_a_short_run_on_2000_images_certifies_more_than_the_initial_model(tmp_path):
    """One epoch of the default loss (CROWN-IBP) on 2,000 MNIST images, ε ramped to 0.02; rigorous certificates."""
    from lpverify.data import load_mnist

    x, y = load_mnist(shared_path("data", "mnist"), "train")
    xt, yt = load_mnist(shared_path("data", "mnist"), "test")
    x, xt = x.reshape(-1, 1, 28, 28), xt[:200].reshape(-1, 1, 28, 28)
    torch.manual_seed(0)
    model = lv.zoo.conv_small()
    before = float((~lv.certify(model, xt, yt[:200], 0.02)).float().mean())
    config = TrainConfig(epochs=1, eps=0.02, warmup_epochs=0.1, ramp_epochs=0.5, test_robust_examples=0)
    train(model, (x[:2000], y[:2000]), (xt, yt[:200]), config, tmp_path, progress=False)
    after = float((~lv.certify(model, xt, yt[:200], 0.02)).float().mean())
    assert after < before and after < 0.8


@pytest.mark.shared
def test_the_committed_one_hour_model_certifies_what_its_record_says():
    """benchmarks/results/models/mnist_fast_eps0.1.{onnx,json}: the record's certified and clean errors are true."""
    from pathlib import Path

    from lpverify.data import load_mnist

    models = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "models"
    record = json.loads((models / "mnist_fast_eps0.1.json").read_text())
    assert record["train_seconds"] <= 3600 and record["threads"] <= 2 and record["examples"] == 10000
    assert record["certified_error"] <= 0.0582  # the paper's 100-epoch figure (Table 1)
    net = lv.load_onnx(models / "mnist_fast_eps0.1.onnx")
    x, y = load_mnist(shared_path("data", "mnist"), "test")
    x = x.reshape(-1, 1, 28, 28)
    with torch.no_grad():
        assert int((net(x).argmax(1) != y).sum()) == round(record["clean_error"] * 10000)
    certified = lv.certify(net, x, y, record["eps"])
    assert int((~certified).sum()) == round(record["certified_error"] * 10000)
