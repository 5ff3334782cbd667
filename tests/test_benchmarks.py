"""The benchmark scripts run end to end and write what they promise."""

from __future__ import annotations

import csv
import math
import importlib.util
import subprocess
import sys
import time
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
    """lpverify's side of the table (the paper's code needs its venv, from the package registry)."""
    out = tmp_path / "speed.md"
    cmd = [sys.executable, str(BENCHMARKS / "speed.py"), "--n", "20", "--datasets", "fashion_mnist",
           "--batch-sizes", "auto", "7", "--repeats", "1", "--no-reference", "--lp-images", "0", "--device", "cpu",
           "--data", str(shared_path("data")), "--weights", str(shared_path("models", "wong_kolter_2018")),
           "--out", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr  # 1 would mean the certificates differ between batch sizes
    text = out.read_text()
    assert "### fashion_mnist: 20 test images" in text
    rows = [line for line in text.splitlines() if line.startswith("| lpverify |")]
    assert len(rows) == 2 and sum("**(default)**" in r for r in rows) == 1
    assert len({r.split("|")[-2] for r in rows}) == 1  # one digest
    speed = load_script("speed")
    assert speed.digest([True, False, True]) == (1, speed.digest([True, False, True])[1])
    assert speed.digest([True, True]) != speed.digest([True, False])


@pytest.mark.shared
def test_direction_benchmark_hands_over_where_cheaper_with_the_same_certificates(capsys):
    shared_path("data", "vnncomp", "mnist_fc")
    direction = load_script("direction")
    assert direction.main(["--n", "6", "--repeats", "1", "--data", str(shared_path("data"))]) == 0
    rows = {line.split("|")[1].strip(): line.split("|") for line in capsys.readouterr().out.splitlines()
            if line.startswith("| ") and "ms/example" not in line and "---" not in line}
    assert rows["paper MNIST (conv)"][3].strip() == "—" and rows["bottleneck 784-16-1000-10"][3].strip() == "block 2"
    assert all(r[-2].strip() == "yes" for r in rows.values()) and len(rows) == 3


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
def test_a_vnncomp_run_of_one_benchmark_keeps_the_other_benchmarks_rows(tmp_path, monkeypatch):
    shared_path("data", "vnncomp", "mnist_fc")
    vnncomp = load_script("vnncomp")
    committed = list(csv.DictReader((BENCHMARKS / "results" / "vnncomp_quick.csv").open()))
    (tmp_path / "vnncomp_quick.csv").write_text((BENCHMARKS / "results" / "vnncomp_quick.csv").read_text())
    fresh = [{**r, "result": "unknown", "decided_by": "stub"} for r in committed if r["benchmark"] == "eran"]

    def run_benchmark(name, args):  # the rows of this run, labelled with its command
        assert name == "eran"
        return [{**r, "command": args.command, "note": args.note} for r in fresh], []

    monkeypatch.setattr(vnncomp, "run_benchmark", run_benchmark)
    assert vnncomp.main(["--quick", "--benchmark", "eran", "--workers", "2", "--threads", "1", "--results", str(tmp_path)]) == 0
    rows = list(csv.DictReader((tmp_path / "vnncomp_quick.csv").open()))
    kept = [r for r in committed if r["benchmark"] == "mnist_fc"]
    assert [r for r in rows if r["benchmark"] == "mnist_fc"] == kept and kept
    assert [r["result"] for r in rows if r["benchmark"] == "eran"] == ["unknown"] * len(fresh)
    text = (tmp_path / "vnncomp_quick.md").read_text()
    assert "Command: `python benchmarks/vnncomp.py --quick --benchmark eran --workers 2 --threads 1`" in text
    assert f"Command: `{kept[0]['command']}`" in text and "### mnist_fc" in text


@pytest.mark.shared
def test_vnncomp_runs_the_sigmoid_network_with_the_relaxations(tmp_path):
    shared_path("data", "vnncomp", "eran_2021")
    vnncomp = load_script("vnncomp")
    inst = [i for i in vnncomp.instances("eran", vnncomp.VNNCOMP) if "SIGMOID" in i.onnx.name]
    assert len(inst) == 36
    net = lv.load_onnx(inst[0].onnx)
    assert lv.applicable_methods(net) == ("interval", "dual", "dual-opt")
    result, by, seconds = vnncomp.run_instance(inst[0], net, 60.0, 5, "bab")
    assert result in ("unsat", "sat", "unknown", "timeout") and by in ("pgd", "dual", "dual-opt")


@pytest.mark.shared
def test_figures_9_10_small_run_partitions_every_layer(tmp_path):
    import gzip

    import torch

    from lpverify.data import load_mnist

    data, weights = shared_path("data"), shared_path("models", "wong_kolter_2018", "mnist.pth")
    shared_path("data", "mnist")
    script = load_script("figures_9_10")
    assert script.main(["--n", "20", "--batch", "8", "--threads", "1", "--quiet", "--data", str(data),
                        "--weights", str(weights), "--results", str(tmp_path), "--figures", str(tmp_path)]) == 0
    for name in ("figure9_filters.png", "figure10_index_sets.png"):
        assert (tmp_path / name).stat().st_size > 10_000
    units = {"conv1": 16 * 14 * 14, "conv2": 32 * 7 * 7, "fc1": 100}
    rows = list(csv.DictReader(gzip.open(tmp_path / "figure10_index_sets_per_image.csv.gz", "rt")))
    assert [int(r["image"]) for r in rows] == list(range(20))
    for r in rows:  # I⁻, I⁺ and I partition every hidden layer of every image
        assert all(sum(int(r[f"{layer}_{s}"]) for s in ("negative", "positive", "crossing")) == n for layer, n in units.items())
    # The crossing counts are those of Algorithm 1's bounds for the same images.
    x, y = load_mnist(data / "mnist", "train")
    net = lv.zoo.paper_network("mnist", weights)
    with torch.no_grad():
        expected = lv.dual_bounds(net, lv.LinfBall(x[:20], 0.1)).n_crossing()
    assert [[int(r[f"{layer}_crossing"]) for layer in units] for r in rows] == expected.tolist()
    assert [int(r["label"]) for r in rows] == y[:20].tolist()
    summary = list(csv.DictReader((tmp_path / "figure10_index_sets.csv").open()))
    assert len(summary) == 9
    for layer in units:  # the mean fractions of each layer sum to 1
        assert abs(sum(float(s["fraction"]) for s in summary if s["layer"] == layer) - 1) < 1e-9
    for s in summary:  # units in a set for every image ≤ any image's count ≤ units in it for some image
        assert int(s["always"]) <= int(s["min"]) <= float(s["mean"]) <= int(s["max"]) <= int(s["ever"]) <= int(s["units"])
    sparsity = list(csv.DictReader((tmp_path / "figure9_filters.csv").open()))
    assert {(s["layer"], s["shape"]) for s in sparsity} == {("conv1", "16×1×4×4"), ("conv2", "32×16×4×4")}
    assert all(0 <= float(s["frac_small"]) <= 1 and int(s["zero_kernels"]) <= int(s["kernels"]) for s in sparsity)


SCRIPTS_WITH_RESULTS = ("figures_9_10", "ladder", "lp_speed", "polytope", "rigorous", "speed", "table1", "tightness",
                        "train_2d", "train_fast", "train_mnist", "train_speed", "vnncomp")


@pytest.mark.parametrize("name", SCRIPTS_WITH_RESULTS)
def test_committed_results_are_refreshed_only_with_write_results(name, capsys):
    script = load_script(name)
    with pytest.raises(SystemExit) as exit_:
        script.main(["--help"])
    assert exit_.value.code == 0
    assert "--write-results" in capsys.readouterr().out
    source = (BENCHMARKS / f"{name}.py").read_text()
    assert 'default=ROOT / "benchmarks" / "results"' not in source and "default=RESULTS" not in source
    assert 'default=ROOT / "figures"' not in source and "default=FIGURES" not in source


def test_vnncomp_results_name_inputs_relative_to_the_root(tmp_path):
    vnncomp = load_script("vnncomp")
    message = f"unsupported ONNX op 'Sigmoid' in {tmp_path}/eran_2021/nets/net.onnx"
    assert vnncomp.relative(message, tmp_path) == "unsupported ONNX op 'Sigmoid' in eran_2021/nets/net.onnx"


@pytest.mark.slow
def test_make_demo_writes_to_an_untracked_folder_and_leaves_tracked_files_alone():
    """The README's main command, shortened to its first study: out/demo/ gets the files, git sees no change."""
    import shutil

    root = BENCHMARKS.parent
    if shutil.which("make") is None or shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("needs make, git and a git checkout")
    watched = ["benchmarks/results", "figures"]

    def tracked_state() -> str:
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--", *watched], cwd=root,
                                capture_output=True, text=True, check=True).stdout
        hashes = subprocess.run(["git", "ls-files", "-s", "-m", "--", *watched], cwd=root, capture_output=True,
                                text=True, check=True).stdout
        return status + hashes

    before, started = tracked_state(), time.time()
    result = subprocess.run(["make", "-o", ".venv/.installed", "demo", f"PY={sys.executable}", "DEMO_FLAGS=--only ranges"],
                            cwd=root, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "out/demo/" in result.stdout
    written = root / "out" / "demo" / "tightness_output_ranges.csv"
    assert written.stat().st_mtime >= started and (root / "out" / "demo" / "tightness_output_ranges.png").exists()
    assert subprocess.run(["git", "check-ignore", "-q", str(written)], cwd=root).returncode == 0  # untracked, ignored
    assert tracked_state() == before
