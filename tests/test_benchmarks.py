"""The benchmark scripts run end to end and write what they promise."""

from __future__ import annotations

import csv
import math
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

import lpverify as lv
from conftest import shared_path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[f"benchmarks_{name}"] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def test_tightness_default_run_writes_tables_and_figure(tmp_path, capsys):
    tightness = load_script("tightness")
    assert tightness.main(["--results", str(tmp_path), "--figures", str(tmp_path), "--data", str(tmp_path)]) == 0
    ranges = list(csv.DictReader((tmp_path / "tightness_output_ranges.csv").open()))
    assert {r["method"] for r in ranges} == {"sampled", "lp", "dual", "interval"}
    by = {(r["eps"], r["output"], r["method"]): (float(r["lower"]), float(r["upper"])) for r in ranges}
    for (eps, out, method), (lo, hi) in by.items():
        if method == "lp":  # sampled ⊆ LP ⊆ dual, and the interval box is the loosest here
            s, d, i = by[(eps, out, "sampled")], by[(eps, out, "dual")], by[(eps, out, "interval")]
            assert d[0] - 1e-6 <= lo <= s[0] + 1e-6 and s[1] - 1e-6 <= hi <= d[1] + 1e-6
            assert i[0] <= d[0] and d[1] <= i[1]
    margins = list(csv.DictReader((tmp_path / "tightness_margins.csv").open()))
    assert all(float(m["dual"]) <= float(m["lp"]) + 1e-6 <= float(m["sampled"]) + 2e-6 for m in margins)
    assert (tmp_path / "tightness_output_ranges.png").stat().st_size > 10_000
    out = capsys.readouterr().out
    assert "Every LP lies between its dual bound and the sampled values" in out
    assert "Figure 11 skipped: needs" in out  # no MNIST in tmp_path
    toy = [m for m in margins if m["network"].startswith("toy 2D")]
    assert len(toy) == 2 * 12  # both toy networks, one margin per point


@pytest.mark.shared
def test_figure11_lp_against_dual_on_the_paper_model(tmp_path):
    from lpverify.data import load_mnist

    tightness = load_script("tightness")
    model = lv.zoo.load_paper_model("mnist", shared_path("models", "wong_kolter_2018", "mnist.pth"))
    x, _ = load_mnist(shared_path("data", "mnist"), "test")
    rows = tightness.lp_vs_dual("robust", model, x[:2], 0.1, targets=3)
    assert len(rows) == 6 and all(r.dual <= r.lp + 1e-6 for r in rows)
    summary = tightness.gap_summary(rows)[0]
    assert summary["n_lps"] == 6 and 0 <= summary["median_abs_gap"] <= summary["max_abs_gap"]
    tightness.plot_figure11(rows, tmp_path / "f11.png")
    assert (tmp_path / "f11.png").stat().st_size > 10_000


def test_tightness_refuses_a_dual_bound_above_the_lp(monkeypatch):
    """An unsound bound method (here: J shifted up by 1) must stop the study, not become a row."""
    import lpverify as lv
    import torch

    tightness = load_script("tightness")
    honest = lv.dual_objective
    monkeypatch.setattr(tightness.lv, "dual_objective", lambda *a, **k: honest(*a, **k) + 1.0)
    net = lv.Network.from_torch(lv.zoo.random_mlp([3, 20, 20, 4], seed=0))
    x = torch.rand(2, 3, dtype=torch.float64)
    with pytest.raises(tightness.SoundnessError, match="above LP"):
        tightness.margin_study("dense", net, x, 0.05, n_samples=50)


@pytest.mark.shared
def test_speed_benchmark_small_run(tmp_path):
    out = tmp_path / "speed.md"
    cmd = [sys.executable, str(BENCHMARKS / "speed.py"), "--n", "20", "--batch-sizes", "5", "10", "--lp-images", "2",
           "--data", str(shared_path("data", "mnist")),
           "--weights", str(shared_path("models", "wong_kolter_2018", "mnist.pth")), "--out", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    assert "Certificates are identical at every batch size" in text
    assert "All LP values agree between the two models" in text


def test_train_2d_writes_its_log_and_figure_and_reports_failure(tmp_path):
    train_2d = load_script("train_2d")
    code = train_2d.main(["--steps", "100", "--results", str(tmp_path), "--figures", str(tmp_path)])
    rows = list(csv.DictReader((tmp_path / "train_2d.csv").open()))
    assert {r["robust"] for r in rows} == {"False", "True"} and int(rows[-1]["step"]) == 100
    assert code == (0 if float(rows[-1]["robust_err"]) == 0.0 else 1)  # exit status follows the robust error
    assert (tmp_path / "train_2d.png").stat().st_size > 10_000


def test_polytope_script_small_run(tmp_path):
    polytope = load_script("polytope")
    assert polytope.main(["--networks", "1", "--directions", "16", "--grid", "30", "--toy-steps", "20",
                          "--results", str(tmp_path), "--figures", str(tmp_path)]) == 0
    rows = list(csv.DictReader((tmp_path / "polytope.csv").open()))
    assert len(rows) == 3 * 16 + 12 * 16
    assert (tmp_path / "polytope_toy.png").stat().st_size > 10_000
    assert all(float(r["sampled"]) <= float(r["lp"]) + 1e-6 <= float(r["dual"]) + 2e-6 for r in rows)
    assert (tmp_path / "polytope.png").stat().st_size > 10_000


@pytest.mark.shared
def test_ladder_small_run_orders_the_methods(tmp_path):
    shared_path("data", "mnist")
    ladder = load_script("ladder")
    assert ladder.main(["--n", "4", "--milp-time", "20", "--alpha-steps", "10", "--results", str(tmp_path)]) == 0
    rows = list(csv.DictReader((tmp_path / "ladder_all_n4.csv").open()))
    for network in {r["network"] for r in rows}:
        err = {r["method"]: float(r["robust_error"]) for r in rows if r["network"] == network}
        high = {r["method"]: float(r["robust_error_high"]) for r in rows if r["network"] == network}
        assert set(err) == {"interval", "dual", "dual-opt", "lp", "lp-all", "milp", "pgd"}
        # The MILP's range [violations found, not verified] holds the true robust error, which PGD bounds below;
        # only safe bounds verify, so its upper end is LP-all's.
        milp_high = err["milp"] if math.isnan(high["milp"]) else high["milp"]
        assert err["milp"] <= milp_high and err["pgd"] <= milp_high
        assert milp_high <= err["lp-all"] <= err["lp"] <= err["dual-opt"] <= err["dual"]
    assert "known (full test set)" in (tmp_path / "ladder_all_n4.md").read_text()


@pytest.mark.shared
def test_vnncomp_quick_run_agrees_with_the_published_verdicts(tmp_path):
    shared_path("data", "vnncomp", "mnist_fc")
    vnncomp = load_script("vnncomp")
    assert vnncomp.main(["--quick", "--benchmark", "mnist_fc", "--results", str(tmp_path)]) == 0
    rows = list(csv.DictReader((tmp_path / "vnncomp_quick.csv").open()))
    assert [r["result"] for r in rows] == ["unsat", "sat", "unsat"]  # the official results of these instances
    assert all(r["result"] == r["consensus"] for r in rows)
    summary = (tmp_path / "vnncomp_quick.md").read_text()
    assert "| **lpverify** | 2 | 1 | 0 |" in summary
    (tmp_path / "vnncomp_quick.md").unlink()
    again = ["--quick", "--benchmark", "mnist_fc", "--results", str(tmp_path), "--from-csv", str(tmp_path / "vnncomp_quick.csv")]
    assert vnncomp.main(again) == 0
    assert (tmp_path / "vnncomp_quick.md").read_text() == summary  # the summary is rebuilt from the results alone


@pytest.mark.shared
def test_vnncomp_reports_the_sigmoid_network_as_unsupported(tmp_path):
    shared_path("data", "vnncomp", "eran_2021")
    vnncomp = load_script("vnncomp")
    inst = [i for i in vnncomp.instances("eran", vnncomp.VNNCOMP) if "SIGMOID" in i.onnx.name]
    assert len(inst) == 36
    with pytest.raises(lv.OnnxImportError, match="Sigmoid"):
        lv.load_onnx(inst[0].onnx)
