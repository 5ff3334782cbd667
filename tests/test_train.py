"""Training: schedule, log, atomic checkpoints, resume and determinism."""

from __future__ import annotations

import csv

import pytest
import torch

import lpverify as lv
from lpverify.data import toy_2d
from lpverify.train import TrainConfig, epsilon_at, load_checkpoint, train
from conftest import shared_path


def toy_model(seed: int = 0) -> torch.nn.Sequential:
    return lv.zoo.random_mlp([2, 30, 30, 2], seed, bias_std=0.1)


def test_epsilon_schedule_is_linear_then_flat():
    config = TrainConfig(eps=0.1, eps_start=0.05, warmup_epochs=10)
    assert epsilon_at(config, 0, 0, 100) == pytest.approx(0.05)
    assert epsilon_at(config, 5, 0, 100) == pytest.approx(0.075)
    assert epsilon_at(config, 4, 50, 100) == pytest.approx(0.05 + 0.45 * 0.05)
    assert epsilon_at(config, 30, 0, 100) == pytest.approx(0.1)
    assert epsilon_at(TrainConfig(eps=0.2), 0, 0, 10) == 0.2


def test_resumed_training_equals_an_uninterrupted_run(tmp_path):
    data = toy_2d(12, 0.16, seed=0)
    config = TrainConfig(epochs=3, batch_size=4, robust=True, eps=0.05, lr=1e-2, test_robust_examples=None)
    straight = toy_model()
    train(straight, data, data, config, tmp_path / "a", progress=False)

    resumed = toy_model()
    train(resumed, data, data, TrainConfig(**{**config.__dict__, "epochs": 1}), tmp_path / "b", progress=False)
    fresh = toy_model(seed=99)  # different initial weights: everything must come from the checkpoint
    history = train(fresh, data, data, config, tmp_path / "b", progress=False)
    assert [h.epoch for h in history] == [1, 2, 3]
    for p, q in zip(straight.parameters(), fresh.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_changed_settings_refuse_to_resume(tmp_path):
    data = toy_2d(12, 0.16, seed=0)
    train(toy_model(), data, data, TrainConfig(epochs=1, batch_size=6, eps=0.05), tmp_path, progress=False)
    with pytest.raises(ValueError, match="was written with settings"):
        train(toy_model(), data, data, TrainConfig(epochs=2, batch_size=6, eps=0.08), tmp_path, progress=False)


def test_robust_training_reaches_zero_robust_error_on_a_separable_toy(tmp_path):
    x = torch.tensor([[0.1, 0.1], [0.2, 0.15], [0.8, 0.9], [0.9, 0.8]])
    y = torch.tensor([0, 0, 1, 1])
    model = toy_model(1)
    history = train(model, (x, y), (x, y), TrainConfig(epochs=150, batch_size=4, eps=0.05, lr=1e-2,
                                                     test_robust_examples=None), tmp_path, progress=False)
    assert history[-1].test_robust_err == 0.0
    assert lv.certify(model, x, y, 0.05).all()


@pytest.mark.shared
def test_two_epochs_on_an_mnist_slice_write_a_resumable_checkpoint_and_log(tmp_path):
    from lpverify.data import load_mnist

    x, y = load_mnist(shared_path("data", "mnist"), "train")
    xt, yt = load_mnist(shared_path("data", "mnist"), "test")
    torch.manual_seed(0)
    model = lv.zoo.conv_small()
    config = TrainConfig(epochs=2, batch_size=50, eps=0.1, eps_start=0.05, warmup_epochs=50, test_robust_examples=50)
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
