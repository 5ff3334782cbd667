"""The ``lpverify`` command end to end: the console script as a user runs it (a real process: its exit code,
stdout, stderr and files), and ``cli.main`` in-process where a process per case would only add import time.

Self-contained but for the tests marked ``shared``: a tiny MNIST-format test set
and small networks are written to a temporary folder. Independent processes
run concurrently (each spends most of its time importing torch).
"""

from __future__ import annotations

import csv
import json
import os
import resource
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from conftest import random_mlp, shared_path
from lpverify import cli

EXE = Path(sys.executable).with_name("lpverify")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
N_IMAGES = 12
VIOLATED_INDEX = 3  # the one image whose label the constant-7 network gets wrong


@pytest.fixture()
def tiny_model(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.pt"
    torch.save(random_mlp([784, 20, 10], seed=0), path)
    return path


def main_out(capsys, *argv: str, codes: tuple[int, ...] = (0,)) -> str:
    """cli.main's stdout; its exit code must be one of ``codes`` (0 verified, 3 violated, 4 unknown)."""
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    assert code in codes, captured.err
    return captured.out


def test_every_subcommand_has_help(capsys):
    for command in ("verify", "run-instances", "tightness", "attack", "max-eps", "polytope", "train"):
        with pytest.raises(SystemExit) as exit_:
            cli.main([command, "--help"])
        assert exit_.value.code == 0
        assert "usage: lpverify " + command in capsys.readouterr().out


@pytest.mark.shared
@pytest.mark.parametrize("method", ["interval", "dual", "lp", "milp"])
def test_verify_on_mnist_images_prints_parseable_json(capsys, tiny_model, method):
    data = shared_path("data")
    out = main_out(capsys, "verify", str(tiny_model), "--data", str(data), "--n", "3", "--eps", "0.001",
                   "--method", method, "--format", "json", codes=(0, 3, 4))
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
    main_out(capsys, "verify", str(weights), "--arch", "mnist", "--data", str(data), "--n", "5", "--eps", "0.1",
             "--output", str(out_file), codes=(0, 3, 4))
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
    out = main_out(capsys, "verify", str(onnx), "--vnnlib", *map(str, paths), "--method", "milp", "--time-limit", "60",
                   "--format", "json", codes=(3,))
    got = {Path(r["property"]).name.removesuffix(".gz"): r["status"] for r in json.loads(out)}
    assert got == props


@pytest.mark.shared
def test_attack_tightness_and_max_eps_run(capsys, tiny_model):
    data = str(shared_path("data"))
    rows = json.loads(main_out(capsys, "attack", str(tiny_model), "--data", data, "--n", "4", "--eps", "0.1",
                               "--format", "json", codes=(3, 4)))
    assert len(rows) == 4 and all(r["pgd_error"] >= r["clean_error"] for r in rows)
    assert all((r["status"] == "violated") == r["pgd_error"] for r in rows)  # every attack point checked before it convicts
    assert all(len(r["counterexample"]) == 784 for r in rows if r["status"] == "violated")
    rows = json.loads(main_out(capsys, "tightness", str(tiny_model), "--data", data, "--n", "2", "--eps", "0.01",
                               "--format", "json"))
    assert all(r["lp_min_margin"] >= r["dual_min_margin"] - 1e-6 and r["status"] == "done" for r in rows)
    rows = json.loads(main_out(capsys, "max-eps", str(tiny_model), "--data", data, "--n", "2", "--format", "json"))
    assert all(0 <= r["certified_eps"] <= r["not_certified_at"] for r in rows)


def test_polytope_writes_its_figure_and_support_values(capsys, tmp_path):
    figure = tmp_path / "p.png"
    rows = json.loads(main_out(capsys, "polytope", "--eps", "0.1", "--hidden", "10", "--directions", "16", "--grid", "60",
                               "--figure", str(figure), "--format", "json"))
    assert figure.stat().st_size > 1000 and len(rows) == 16
    assert all(r["sampled"] <= r["lp"] + 1e-6 <= r["dual"] + 2e-6 for r in rows)


def test_bad_model_file_gives_a_clear_error(capsys, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    assert cli.main(["attack", str(bad), "--eps", "0.1"]) == 2
    err = capsys.readouterr().err
    assert "bad.pt" in err and len(err.strip().splitlines()) == 1


@pytest.mark.shared
def test_train_writes_a_checkpoint_and_reports_its_log(capsys, tmp_path):
    data = str(shared_path("data"))
    out = tmp_path / "run"
    options = ["--dataset", "mnist", "--data", data, "--epochs", "1", "--warmup-epochs", "0", "--ramp-epochs", "0.5",
               "--train-examples", "100", "--test-robust-examples", "5", "--final-examples", "10", "--out", str(out)]
    rows = json.loads(main_out(capsys, "train", *options, "--format", "json"))
    assert len(rows) == 1 and rows[0]["epoch"] == 1 and 0 <= rows[0]["train_robust_err"] <= 1
    assert (out / "checkpoint.pt").exists() and (out / "log.csv").exists()
    record = json.loads((out / "result.json").read_text())
    assert record["method"] == "crown-ibp" and record["examples"] == 10 and (out / "model.onnx").exists()
    again = json.loads(main_out(capsys, "train", *options, "--format", "json"))
    assert again == rows  # resumed from the checkpoint: nothing retrained


# -- the console script and the runner ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def console_script() -> None:
    if not EXE.exists():
        message = "the console script is installed by `pip install -e .` (make test does it)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + "; CI=true requires it")
        pytest.skip(message)


def start(*argv: str, cwd: Path | None = None, umask: int | None = None) -> subprocess.Popen:
    preexec = (lambda: os.umask(umask)) if umask is not None else None
    return subprocess.Popen([str(EXE), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
                            env=ENV, preexec_fn=preexec)


def finish(process: subprocess.Popen, timeout: float = 180) -> subprocess.CompletedProcess:
    out, err = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def run(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    return finish(start(*argv, **kwargs))


def run_all(commands: list[list[str]]) -> list[subprocess.CompletedProcess]:
    """Independent commands at once, results in order."""
    return [finish(p) for p in [start(*argv) for argv in commands]]


def write_idx(path: Path, array: np.ndarray) -> None:
    kind = {np.dtype(np.uint8): 0x08}[array.dtype]
    header = bytes([0, 0, kind, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.tobytes())


def write_mnist(root: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    (root / "mnist").mkdir(parents=True)
    write_idx(root / "mnist" / "t10k-images-idx3-ubyte", images)
    write_idx(root / "mnist" / "t10k-labels-idx1-ubyte", labels.astype(np.uint8))
    return root


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Models and two MNIST-format test sets.

    * ``const7``: a linear network whose class 7 wins by 0.01 + 0.01·Σx; set A
      labels every image 7 but one, so it is verified at small ε, unknown at
      ε = 0.5 (the dual finds no counterexample) and violated at that one image.
    * ``wide``: a random 784-256-256-10 ReLU network, whose MILP takes far
      longer than a few seconds at ε = 0.05; set B labels each image with
      its prediction.
    """
    root = tmp_path_factory.mktemp("cli")
    images = np.random.default_rng(0).integers(0, 256, (N_IMAGES, 28, 28), dtype=np.uint8)
    labels = np.full(N_IMAGES, 7)
    labels[VIOLATED_INDEX] = 3
    const7 = nn.Sequential(nn.Linear(784, 10))
    with torch.no_grad():
        const7[0].weight.zero_()
        const7[0].bias.zero_()
        const7[0].weight[7] = 0.01
        const7[0].bias[7] = 0.01
    wide = random_mlp([784, 256, 256, 10], seed=1)
    with torch.no_grad():
        predicted = wide(torch.from_numpy(images).float().div(255).view(N_IMAGES, 784)).argmax(1).numpy()
    broken = random_mlp([784, 8, 10], seed=0)
    with torch.no_grad():
        broken[0].weight[0, 0] = float("nan")
    paths = {"A": write_mnist(root / "A", images, labels), "B": write_mnist(root / "B", images, predicted),
             "const7": root / "const7.pt", "wide": root / "wide.pt", "nan": root / "nan.pt", "root": root}
    torch.save(const7, paths["const7"])
    torch.save(wide, paths["wide"])
    torch.save(broken, paths["nan"])
    return paths


def vnnlib_margins(image: np.ndarray, eps: float, label: int) -> str:
    """The robustness property of an image as VNN-COMP writes it: unsafe if some class reaches the label's logit."""
    x = image.astype(np.float64).ravel() / 255
    lines = [f"(declare-const X_{i} Real)" for i in range(x.size)] + [f"(declare-const Y_{j} Real)" for j in range(10)]
    for i, v in enumerate(x):
        lines += [f"(assert (>= X_{i} {max(v - eps, 0):.6f}))", f"(assert (<= X_{i} {min(v + eps, 1):.6f}))"]
    lines.append("(assert (or " + " ".join(f"(and (>= Y_{j} Y_{label}))" for j in range(10) if j != label) + "))")
    return "\n".join(lines) + "\n"


def rows_of(result: subprocess.CompletedProcess) -> list[dict]:
    assert "Traceback" not in result.stderr, result.stderr
    return json.loads(result.stdout)


# -- exit codes, --format json, --help ------------------------------------------------------------------------------


def test_exit_codes_follow_the_verdicts_and_json_carries_them(console_script, files):
    const7, data = str(files["const7"]), str(files["A"])
    common = ["verify", const7, "--data", data, "--format", "json"]
    verified, violated, unknown, usage = run_all([
        [*common, "--n", "2", "--eps", "0.001"],
        [*common, "--start", str(VIOLATED_INDEX), "--n", "1", "--eps", "0.001"],
        [*common, "--n", "2", "--eps", "0.5"],
        [*common, "--n", "0", "--eps", "0.1"],
    ])
    assert verified.returncode == 0 and [r["status"] for r in rows_of(verified)] == ["verified", "verified"]
    assert all(r["bound"] > 0 for r in rows_of(verified))
    assert violated.returncode == 3
    (row,) = rows_of(violated)
    assert row["status"] == "violated" and row["index"] == VIOLATED_INDEX and len(row["counterexample"]) == 784
    assert unknown.returncode == 4 and {r["status"] for r in rows_of(unknown)} == {"unknown"}
    assert usage.returncode == 2 and usage.stdout == "" and "--n" in usage.stderr and "Traceback" not in usage.stderr


def test_help_shows_every_default_the_exit_codes_and_the_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["verify", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for needle in ("(default: 60.0)", "--budget", "(default: 3600.0)", "--workers", "--resume", "exit codes", "130",
                   "(default: dual)", "(default: 10)"):
        assert needle in text, needle
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("lpverify ")


# -- limits ---------------------------------------------------------------------------------------------------------------


def test_a_time_limit_is_honoured_on_an_expensive_milp(console_script, files):
    """LP-all then the MILP on 512 crossing-heavy units: minutes of work cut at 2 s, with a safe bound."""
    before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
    result = run("verify", str(files["wide"]), "--data", str(files["B"]), "--n", "1", "--eps", "0.05",
                 "--method", "milp", "--time-limit", "2", "--format", "json")
    after, wall = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic() - started
    (row,) = rows_of(result)
    assert result.returncode == 4, result.stderr
    assert row["status"] == "unknown" and "time limit" in row["reason"]
    assert isinstance(row["bound"], float) and row["bound"] <= 0  # the best safe bound so far, not nan
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    assert cpu < 2 + 20  # imports and the limit: the uncut MILP takes minutes
    if cpu > 0.5 * wall:  # not starved by other jobs: the wall clock is honoured as well, model building included
        assert row["seconds"] <= 2 + 1.0


# -- streaming, interruption, resume ---------------------------------------------------------------------------------------


def test_an_interrupted_run_keeps_its_finished_rows_and_resumes(console_script, files, tmp_path):
    out = tmp_path / "rows.jsonl"
    argv = ["verify", str(files["wide"]), "--data", str(files["B"]), "--eps", "0.05", "--method", "milp",
            "--time-limit", "1", "--output", str(out)]
    process = start(*argv, "--n", str(N_IMAGES))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not out.exists() or out.read_text().count("\n") < 2):
        assert process.poll() is None, finish(process).stderr
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    stopped = finish(process)
    assert stopped.returncode == 130, stopped.stderr
    assert "interrupted" in stopped.stdout + stopped.stderr and "--resume" in stopped.stdout + stopped.stderr
    assert "Traceback" not in stopped.stderr
    first = out.read_text().splitlines()
    done = [json.loads(line)["index"] for line in first]  # every line is a whole row
    assert done == list(range(len(done))) and 2 <= len(done) < N_IMAGES

    resumed = run(*argv, "--n", str(len(done) + 1), "--resume", "--format", "json")
    violated = any(r["status"] == "violated" for r in rows_of(resumed))
    assert resumed.returncode == (3 if violated else 4), resumed.stderr
    lines = out.read_text().splitlines()
    assert lines[: len(done)] == first  # finished rows are kept, not recomputed
    assert [json.loads(line)["index"] for line in lines] == list(range(len(done) + 1))
    assert [r["index"] for r in rows_of(resumed)] == list(range(len(done) + 1))


def test_a_malformed_property_is_reported_in_its_row_and_the_batch_goes_on(files, tmp_path, capsys):
    images = np.random.default_rng(0).integers(0, 256, (N_IMAGES, 28, 28), dtype=np.uint8)
    good = [tmp_path / "p0.vnnlib", tmp_path / "p1.vnnlib"]
    for i, path in enumerate(good):
        path.write_text(vnnlib_margins(images[i], 0.001, 7))
    bad = tmp_path / "bad.vnnlib"
    bad.write_text("(declare-const X_0 Real)\n(assert (<= X_0 0.5)\n")
    out = tmp_path / "props.csv"
    code = cli.main(["verify", str(files["const7"]), "--vnnlib", str(good[0]), str(bad), str(good[1]),
                     "--output", str(out), "--format", "json"])
    rows = json.loads(capsys.readouterr().out)
    assert code == 2
    assert [r["status"] for r in rows] == ["verified", "input-error", "verified"]
    assert "bad.vnnlib:" in rows[1]["reason"]
    assert out.read_text().splitlines()[0] == "property,method,status,bound,seconds,reason"
    assert [line.split(",")[2] for line in out.read_text().splitlines()[1:]] == ["verified", "input-error", "verified"]


# -- input errors -------------------------------------------------------------------------------------------------------------


def test_each_bad_input_is_named_in_one_line_without_a_traceback(files, tmp_path, capsys):
    """Through ``cli.main``, the console script's entry point (a process each would cost seconds of imports)."""
    model, data = str(files["const7"]), str(files["A"])
    verify = ["verify", model, "--data", data, "--eps", "0.1"]
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    cases = {
        "--n": [*verify, "--n", "-5"],
        "--eps": ["verify", model, "--data", data, "--eps", "nan"],
        "--time-limit": [*verify, "--time-limit", "0"],
        "is a directory": [*verify, "--output", str(tmp_path)],
        "cannot write": [*verify, "--output", "/proc/lpverify/rows.jsonl"],
        "is a file": ["train", "--out", str(a_file), "--data", data],
        "--device": [*verify, "--device", "tpu"],
        "--hidden": ["polytope", "--hidden", "0"],
        "NaN": ["verify", str(files["nan"]), "--data", data, "--eps", "0.1"],
        "does not exist": ["verify", str(tmp_path / "missing.pt"), "--data", data, "--eps", "0.1"],
        "--start": [*verify, "--start", str(N_IMAGES)],
        ".jsonl or .csv": [*verify, "--output", str(tmp_path / "rows.txt")],
        "--figure": ["polytope", "--figure", str(tmp_path / "p.gif")],
        "drop --eps": ["verify", model, "--vnnlib", str(a_file), "--eps", "0.1"],
    }
    for needle, argv in cases.items():
        try:
            code = cli.main(argv)
        except SystemExit as exit_:  # argparse's usage errors
            code = exit_.code
        err = capsys.readouterr().err
        assert code == 2, (needle, err)
        assert needle in err and len(err.strip().splitlines()) == 1, (needle, err)
    assert not (tmp_path / "rows.txt").exists() and not (tmp_path / "p.gif").exists()


def test_a_bug_is_one_line_and_exit_code_1_with_the_traceback_under_debug(files, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(cli.tasks, "verify_task", broken)
    argv = ["verify", str(files["const7"]), "--data", str(files["A"]), "--eps", "0.1"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "internal error: ZeroDivisionError: a bug" in err and "Traceback" not in err
    assert cli.main([*argv, "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err


# -- files -----------------------------------------------------------------------------------------------------------------------


def test_figures_follow_their_suffix_and_outputs_respect_the_umask(console_script, tmp_path, capsys):
    small = ["--hidden", "6", "--directions", "8", "--grid", "30"]
    pdf, svg = tmp_path / "p.pdf", tmp_path / "p.svg"
    result = run("polytope", *small, "--figure", str(pdf), "--output", str(tmp_path / "p.csv"), umask=0o027)
    assert result.returncode == 0, result.stderr
    assert pdf.read_bytes()[:5] == b"%PDF-"
    for path in (pdf, tmp_path / "p.csv"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o640  # 0666 less the umask, not the temporary file's 0600
    assert cli.main(["polytope", *small, "--figure", str(svg), "--format", "json"]) == 0
    assert b"<svg" in svg.read_bytes()[:1000] and len(json.loads(capsys.readouterr().out)) == 8
    assert not list(tmp_path.glob(".*.tmp"))


# -- parallel -----------------------------------------------------------------------------------------------------------------------


def test_workers_give_the_serial_rows_in_the_serial_order(console_script, files, tmp_path):
    argv = ["verify", str(files["wide"]), "--data", str(files["B"]), "--n", "4", "--eps", "0.002", "--method", "lp",
            "--format", "json"]
    serial, parallel = run_all([argv, [*argv, "--workers", "2", "--output", str(tmp_path / "w.jsonl")]])
    assert serial.returncode == parallel.returncode, parallel.stderr
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(rows_of(parallel)) == strip(rows_of(serial))
    assert [r["index"] for r in rows_of(serial)] == [0, 1, 2, 3]
    assert [json.loads(line)["index"] for line in (tmp_path / "w.jsonl").read_text().splitlines()] == [0, 1, 2, 3]


def test_a_dask_cluster_gives_the_serial_rows_in_the_serial_order(files, tmp_path, capsys, monkeypatch):
    distributed = pytest.importorskip("distributed")
    argv = ["verify", str(files["const7"]), "--data", str(files["A"]), "--n", "5", "--eps", "0.001", "--method", "lp",
            "--format", "json"]
    serial = json.loads(main_out(capsys, *argv, codes=(3,)))
    threads = torch.get_num_threads()
    local = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None,
                                     silence_logs=40, host="127.0.0.1", protocol="tcp")
    try:  # reached by its TCP address, as a remote scheduler is
        out = main_out(capsys, *argv, "--cluster", local.scheduler_address, "--threads", "1", "--output",
                       str(tmp_path / "c.jsonl"), codes=(3,))
    finally:
        local.close()
        torch.set_num_threads(threads)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(json.loads(out)) == strip(serial)
    assert [r["status"] for r in serial] == ["verified", "verified", "verified", "violated", "verified"]
    assert [json.loads(line)["index"] for line in (tmp_path / "c.jsonl").read_text().splitlines()] == [0, 1, 2, 3, 4]

    import socket

    import lpverify.pool

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(lpverify.pool, "CONNECT_TIMEOUT", 1.0)
    assert cli.main([*argv, "--cluster", f"dask://127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err
    assert "error: --cluster dask://127.0.0.1" in err and "no Dask scheduler answered" in err and len(err.splitlines()) == 1
    assert cli.main([*argv, "--cluster", "ray://head:10001"]) == 2
    assert "not a Dask address" in capsys.readouterr().err


# -- budget, resume and run-instances in-process ---------------------------------------------------------------------------------


def test_a_spent_budget_stops_with_exit_4_and_resume_finishes_the_rest(files, tmp_path, capsys):
    out = tmp_path / "rows.csv"
    argv = ["verify", str(files["const7"]), "--data", str(files["A"]), "--n", "6", "--eps", "0.001", "--method", "lp",
            "--output", str(out)]
    assert cli.main([*argv, "--budget", "1e-9"]) == 4
    printed = capsys.readouterr().out
    assert "--budget spent" in printed and "--resume" in printed
    first = list(csv.DictReader(out.open()))
    assert len(first) < 6
    code = cli.main([*argv, "--resume", "--format", "json"])
    rows = json.loads(capsys.readouterr().out)
    assert code == 3  # image 3 is misclassified: violated
    assert [r["index"] for r in rows] == list(range(6)) == [int(r["index"]) for r in csv.DictReader(out.open())]
    assert [r["status"] for r in rows] == ["violated" if i == VIOLATED_INDEX else "verified" for i in range(6)]


def test_resume_refuses_a_file_of_another_command(files, tmp_path, capsys):
    out = tmp_path / "rows.csv"
    out.write_text("a,b\n1,2\n")
    argv = ["verify", str(files["const7"]), "--data", str(files["A"]), "--eps", "0.001", "--output", str(out), "--resume"]
    assert cli.main(argv) == 2
    assert "--resume" in capsys.readouterr().err and out.read_text() == "a,b\n1,2\n"


def test_run_instances_writes_the_vnncomp_results_layout(files, tmp_path, capsys):
    images = np.random.default_rng(0).integers(0, 256, (N_IMAGES, 28, 28), dtype=np.uint8)
    bench = tmp_path / "bench"
    (bench / "specs").mkdir(parents=True)
    (bench / "specs" / "p0.vnnlib").write_text(vnnlib_margins(images[0], 0.001, 7))
    (bench / "net.pt").write_bytes(files["const7"].read_bytes())
    (bench / "instances.csv").write_text("net.pt,specs/p0.vnnlib,30\nnet.pt,specs/missing.vnnlib,30\n")
    out = tmp_path / "results.csv"
    code = cli.main(["run-instances", str(bench / "instances.csv"), "--output", str(out), "--format", "json"])
    rows = json.loads(capsys.readouterr().out)
    assert code == 2 and [r["result"] for r in rows] == ["unsat", "error"]
    lines = list(csv.reader(out.open()))
    assert [line[:3] + line[4:5] for line in lines] == [["bench", "net.pt", "specs/p0.vnnlib", "unsat"],
                                                       ["bench", "net.pt", "specs/missing.vnnlib", "error"]]
    assert all(len(line) == 6 and float(line[3]) >= 0 and float(line[5]) >= 0 for line in lines)  # no header, relative paths

