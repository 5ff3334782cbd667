"""The ``lpverify`` command, end to end on tiny inputs."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lpverify import cli
from conftest import random_mlp, shared_path


@pytest.fixture()
def tiny_model(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.pt"
    torch.save(random_mlp([784, 20, 10], seed=0), path)
    return path


def run(capsys, *argv: str) -> str:
    assert cli.main(list(argv)) == 0
    return capsys.readouterr().out


def test_every_subcommand_has_help(capsys):
    for command in ("verify", "tightness", "attack", "max-eps", "polytope", "train"):
        with pytest.raises(SystemExit) as exit_:
            cli.main([command, "--help"])
        assert exit_.value.code == 0
        assert "usage: lpverify " + command in capsys.readouterr().out


@pytest.mark.shared
@pytest.mark.parametrize("method", ["interval", "dual", "lp", "milp"])
def test_verify_on_mnist_images_prints_parseable_json(capsys, tiny_model, method):
    data = shared_path("data")
    out = run(capsys, "verify", str(tiny_model), "--data", str(data), "--n", "3", "--eps", "0.001",
              "--method", method, "--format", "json")
    rows = json.loads(out)
    assert [r["index"] for r in rows] == [0, 1, 2]
    for r in rows:
        assert r["status"] in ("verified", "violated", "unknown") and r["method"] == method
        if r["status"] == "violated":
            assert len(r["counterexample"]) == 784


@pytest.mark.shared
def test_verify_paper_weights_agree_with_the_library_and_write_csv(capsys, tmp_path):
    import lpverify as lv
    from lpverify.data import load_dataset

    weights = shared_path("models", "wong_kolter_2018", "mnist.pth")
    data = shared_path("data")
    out_file = tmp_path / "verdicts.csv"
    run(capsys, "verify", str(weights), "--arch", "mnist", "--data", str(data), "--n", "5", "--eps", "0.1",
        "--output", str(out_file))
    rows = list(csv.DictReader(out_file.open()))
    x, y = load_dataset("mnist", "test", data)
    expected = lv.certify(lv.zoo.load_paper_model("mnist", weights), x[:5].view(-1, 1, 28, 28), y[:5], 0.1)
    assert [r["status"] == "verified" for r in rows] == expected.tolist()


@pytest.mark.shared
def test_verify_vnnlib_instances_match_the_published_verdicts(capsys):
    """Three small VNN-COMP instances: one sat, two unsat per the published results."""
    root = shared_path("data", "vnncomp", "mnist_fc")
    onnx = root / "onnx" / "mnist-net_256x2.onnx.gz"
    if not onnx.exists():
        onnx = root / "onnx" / "mnist-net_256x2.onnx"
    # alpha-beta-CROWN, Marabou and MN-BaB (VNN-COMP 2022): unsat, unsat, sat.
    props = {"prop_0_0.03.vnnlib": "verified", "prop_3_0.03.vnnlib": "verified", "prop_1_0.03.vnnlib": "violated"}
    paths = []
    for name in props:
        path = root / "vnnlib" / name
        paths.append(path if path.exists() else path.with_name(name + ".gz"))
    out = run(capsys, "verify", str(onnx), "--vnnlib", *map(str, paths), "--method", "milp", "--time-limit", "60",
              "--format", "json")
    got = {Path(r["property"]).name.removesuffix(".gz"): r["status"] for r in json.loads(out)}
    assert got == props


@pytest.mark.shared
def test_attack_tightness_and_max_eps_run(capsys, tiny_model):
    data = str(shared_path("data"))
    rows = json.loads(run(capsys, "attack", str(tiny_model), "--data", data, "--n", "4", "--eps", "0.1", "--format", "json"))
    assert len(rows) == 4 and all(r["pgd_error"] >= r["clean_error"] for r in rows)
    rows = json.loads(run(capsys, "tightness", str(tiny_model), "--data", data, "--n", "2", "--eps", "0.01", "--format", "json"))
    assert all(r["lp_min_margin"] >= r["dual_min_margin"] - 1e-6 for r in rows)
    rows = json.loads(run(capsys, "max-eps", str(tiny_model), "--data", data, "--n", "2", "--format", "json"))
    assert all(0 <= r["certified_eps"] <= r["not_certified_at"] for r in rows)


def test_polytope_writes_its_figure_and_support_values(capsys, tmp_path):
    figure = tmp_path / "p.png"
    rows = json.loads(run(capsys, "polytope", "--eps", "0.1", "--hidden", "10", "--directions", "16", "--grid", "60",
                          "--figure", str(figure), "--format", "json"))
    assert figure.stat().st_size > 1000 and len(rows) == 16
    assert all(r["sampled"] <= r["lp"] + 1e-6 <= r["dual"] + 2e-6 for r in rows)


def test_bad_model_file_gives_a_clear_error(capsys, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    assert cli.main(["attack", str(bad), "--eps", "0.1"]) == 2
    assert "bad.pt" in capsys.readouterr().err


def test_console_script_is_installed_and_its_json_stdout_parses(tmp_path):
    """Run as a real process: nothing else (e.g. a solver's banner) may reach stdout."""
    exe = Path(sys.executable).with_name("lpverify")
    if not exe.exists():
        pytest.skip("the console script is installed by `pip install -e .` (make test does it)")
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True).stdout
    assert "verify" in out and "tightness" in out
    out = subprocess.run([str(exe), "polytope", "--hidden", "6", "--directions", "8", "--grid", "30",
                          "--figure", str(tmp_path / "p.png"), "--format", "json"],
                         capture_output=True, text=True, check=True).stdout
    assert len(json.loads(out)) == 8


@pytest.mark.shared
def test_train_writes_a_checkpoint_and_reports_its_log(capsys, tmp_path):
    data = str(shared_path("data"))
    out = tmp_path / "run"
    options = ["--dataset", "mnist", "--data", data, "--epochs", "1", "--warmup-epochs", "0", "--ramp-epochs", "0.5",
               "--train-examples", "100", "--test-robust-examples", "5", "--final-examples", "10", "--out", str(out)]
    rows = json.loads(run(capsys, "train", *options, "--format", "json"))
    assert len(rows) == 1 and rows[0]["epoch"] == 1 and 0 <= rows[0]["train_robust_err"] <= 1
    assert (out / "checkpoint.pt").exists() and (out / "log.csv").exists()
    record = json.loads((out / "result.json").read_text())
    assert record["method"] == "crown-ibp" and record["examples"] == 10 and (out / "model.onnx").exists()
    again = json.loads(run(capsys, "train", *options, "--format", "json"))
    assert again == rows  # resumed from the checkpoint: nothing retrained
