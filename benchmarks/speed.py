"""Certification speed side by side with the paper's own code, and the LP per margin.

1. Certification: Algorithm 1 plus the nine margins (Theorem 1, Corollary 1)
   on the paper's MNIST and Fashion-MNIST models (ε = 0.1, no clamp, as in
   Table 1), lpverify against the paper's implementation, ``convex_adversarial``
   0.4.4, on the same images in the same run. Every configuration runs in
   its own process (peak resident memory is per process) on ``--threads``
   threads; configurations alternate and each keeps its best of
   ``--repeats`` runs (``--reference-repeats`` for the paper's code). The paper's code runs in a throwaway venv
   (``build/reference-venv``, created when absent: ``convex_adversarial``
   from the package registry, with this interpreter's torch linked in, so
   both sides use the same torch build). Its certificate is the strict one:
   every ``J(e_y − e_j) > 0``. The certificates of every configuration must
   be identical (the digest column). lpverify's automatic batch size (its
   default) is marked. Wall-clock rates are what a user sees; CPU time per
   example (all threads) is reported beside them because on a shared machine
   it varies far less from run to run.
2. The LP per margin (eq. 19): the direct HiGHS model against the readable
   CVXPY model, on the robust, random-init and normally trained MNIST models
   (:mod:`lp_speed`).

    python benchmarks/speed.py                 # 1,000 images per dataset
    python benchmarks/speed.py --full --write-results  # 10,000 images; refreshes benchmarks/results/speed.md
    python benchmarks/speed.py --device cuda --lp-images 0 --out speed_gpu.md   # both codes on a GPU, TF32 off
Needs the test sets and the paper's weights (``--data``, ``--weights``, default ../shared).
"""

from __future__ import annotations

import argparse
import hashlib
import shlex
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
EPS = 0.1
REFERENCE = "convex_adversarial==0.4.4"
DATASETS = ("mnist", "fashion_mnist")


# -- the two workers (each in its own process) --------------------------------------------------


def digest(certified: list[bool]) -> tuple[int, str]:
    """The number of uncertified examples and a short hash of the verdicts."""
    bits = "".join("1" if b else "0" for b in certified)
    return bits.count("0"), hashlib.sha256(bits.encode()).hexdigest()[:16]


def report(batch_size: object, n: int, seconds: float, cpu_seconds: float, certified: list[bool], device: str) -> None:
    """One JSON line; the peak memory is the process's resident set, or on a GPU the device memory torch allocated."""
    import torch

    uncertified, tag = digest(certified)
    peak = (torch.cuda.max_memory_allocated(device) if device.startswith("cuda")
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    print(json.dumps({"batch_size": batch_size, "seconds": seconds, "rate": n / seconds, "cpu_ms": 1e3 * cpu_seconds / n,
                      "uncertified": uncertified, "digest": tag, "peak_mb": peak / 2**20}))


def on_device(device: str):
    """Set up ``device`` for a fair timing: TF32 off on a GPU (float32 products stay float32); a sync function."""
    import torch

    if not device.startswith("cuda"):
        return lambda: None
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.cuda.reset_peak_memory_stats(device)
    return lambda: torch.cuda.synchronize(device)


def lpverify_worker(args: argparse.Namespace) -> None:
    """lpverify's certify at one batch size ("auto": its default)."""
    import torch

    sys.path.insert(0, str(ROOT))
    import lpverify as lv
    from lpverify.certify import plan_chunks
    from lpverify.zoo import INPUT_SHAPES, load_paper_model

    torch.set_num_threads(args.threads)
    sync = on_device(args.device)
    model = load_paper_model(args.dataset, args.weights).to(args.device)
    net = lv.Network.from_torch(model, input_shape=INPUT_SHAPES[args.dataset])
    x, y = (t.to(args.device) for t in torch.load(args.images))
    batch = None if args.batch_size == "auto" else int(args.batch_size)
    sizes = [len(c) for c in plan_chunks(net, x, torch.tensor(EPS, dtype=torch.float64), batch_size=batch)]
    warm = max(sizes)
    lv.certify(net, x[:warm], y[:warm], EPS, batch_size=batch)  # warm-up: caches, allocator
    sync()
    start, cpu = time.perf_counter(), time.process_time()
    ok = lv.certify(net, x, y, EPS, batch_size=batch)
    sync()
    label = f"auto ({min(sizes)}–{max(sizes)})" if batch is None else batch
    report(label, len(y), time.perf_counter() - start, time.process_time() - cpu, ok.cpu().tolist(), args.device)


def reference_worker(args: argparse.Namespace) -> None:
    """The paper's code: ``DualNetwork`` and the nine margins, as its ``robust_loss`` computes them."""
    import torch
    from convex_adversarial import DualNetwork
    from torch import nn

    torch.set_num_threads(args.threads)
    sync = on_device(args.device)
    model = nn.Sequential(  # the paper's MNIST / Fashion-MNIST architecture
        nn.Conv2d(1, 16, 4, stride=2, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 4, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 100), nn.ReLU(), nn.Linear(100, 10))
    model.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))
    model = model.to(args.device)
    x, y = (t.to(args.device) for t in torch.load(args.images))
    batch = int(args.batch_size)
    eye = torch.eye(10, device=args.device)

    def certify(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        f = -DualNetwork(model, xb, EPS)(eye[yb].unsqueeze(1) - eye.unsqueeze(0))  # f_j = −J(e_y − e_j)
        others = torch.ones_like(f, dtype=torch.bool).scatter(1, yb.view(-1, 1), False)
        return (torch.where(others, f, torch.full_like(f, -torch.inf)) < 0).all(1)

    with torch.no_grad():
        certify(x[:batch], y[:batch])  # warm-up
        sync()
        start, cpu = time.perf_counter(), time.process_time()
        ok = torch.cat([certify(x[i : i + batch], y[i : i + batch]) for i in range(0, len(y), batch)])
        sync()
    report(batch, len(y), time.perf_counter() - start, time.process_time() - cpu, ok.cpu().tolist(), args.device)


# -- orchestration ------------------------------------------------------------------------------


def reference_python(venv: Path) -> Path:
    """The throwaway venv's interpreter with the paper's code installed (created when absent)."""
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import convex_adversarial, torch"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    import torch

    print(f"installing {REFERENCE} into {venv} (this interpreter's torch is linked in)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    subprocess.run([str(python), "-m", "ensurepip"], check=True, stdout=subprocess.DEVNULL)  # it has no --quiet
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    torch_site = Path(torch.__file__).resolve().parents[1]
    (Path(site) / "_shared_torch.pth").write_text(f"{torch_site}\n")
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", REFERENCE], check=True)
    subprocess.run(probe, check=True)
    return python


def run_worker(python: Path, kind: str, dataset: str, batch: str, images: Path, weights: Path, threads: int,
               device: str = "cpu") -> dict:
    cmd = [str(python), __file__, "--worker", kind, "--dataset", dataset, "--batch-size", batch,
           "--images", str(images), "--weights", str(weights), "--threads", str(threads), "--device", device]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{kind} worker failed ({dataset}, batch {batch}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def certification_table(args: argparse.Namespace, reference: Path | None, tmp: Path) -> tuple[list[str], bool]:
    """Markdown lines for every dataset and whether all certificates agreed."""
    import torch

    sys.path.insert(0, str(ROOT))
    from lpverify.data import load_mnist

    lines, agree = [], True
    for dataset in args.datasets:
        x, y = load_mnist(args.data / dataset, "test")
        images = tmp / f"{dataset}.pt"
        torch.save((x[: args.n].clone(), y[: args.n].clone()), images)
        weights = args.weights / f"{dataset}.pth"
        configs = [("lpverify", b) for b in args.batch_sizes]
        if reference is not None:
            configs += [("reference", b) for b in args.reference_batch_sizes]
        best: dict[tuple[str, str], dict] = {}
        for repeat in range(max(args.repeats, args.reference_repeats)):
            for kind, batch in configs:
                if repeat >= (args.reference_repeats if kind == "reference" else args.repeats):
                    continue
                python = reference if kind == "reference" else Path(sys.executable)
                r = run_worker(python, kind, dataset, batch, images, weights, args.threads, args.device)
                print(f"  {dataset} {kind:<9} batch {r['batch_size']!s:>9} (run {repeat + 1}): {r['rate']:7.1f} ex/s, "
                      f"{r['cpu_ms']:6.2f} CPU ms/ex, "
                      f"peak {r['peak_mb']:5.0f} MB, {r['uncertified']} not certified, digest {r['digest']}", flush=True)
                if (kind, batch) not in best or r["rate"] > best[(kind, batch)]["rate"]:
                    best[(kind, batch)] = r
        ref_rows = [best[c] for c in configs if c[0] == "reference"]
        ref_rate = max((r["rate"] for r in ref_rows), default=float("nan"))
        ref_cpu = min((r["cpu_ms"] for r in ref_rows), default=float("nan"))
        ref_peak = min((r["peak_mb"] for r in ref_rows), default=float("nan"))
        digests = {r["digest"] for r in best.values()}
        agree &= len(digests) == 1
        lines += [
            f"### {dataset}: {args.n} test images, ε = {EPS}",
            "",
            "| code | batch size | examples/s | × paper's code (best batch) | CPU ms / example | × paper's code, CPU | "
            "peak memory (MB) | not certified | digest |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for (kind, _), r in best.items():
            name = "lpverify" if kind == "lpverify" else f"paper's code ({REFERENCE})"
            mark = " **(default)**" if str(r["batch_size"]).startswith("auto") else ""
            lines.append(f"| {name} | {r['batch_size']}{mark} | {r['rate']:.1f} | {r['rate'] / ref_rate:.2f} | "
                         f"{r['cpu_ms']:.2f} | {ref_cpu / r['cpu_ms']:.2f} | {r['peak_mb']:.0f} | {r['uncertified']} | "
                         f"{r['digest']} |")
        auto = next((r for (k, b), r in best.items() if k == "lpverify" and b == "auto"), None)
        if auto is not None and ref_rows:
            lines += ["", f"lpverify at its default setting: **{auto['rate'] / ref_rate:.1f}×** the paper's code at its "
                          f"best batch size in wall time, {ref_cpu / auto['cpu_ms']:.1f}× in CPU time, peak memory "
                          f"{auto['peak_mb']:.0f} MB against {ref_peak:.0f} MB. "
                          + ("Certificates identical in every configuration." if len(digests) == 1
                             else "**Certificates differ between configurations.**")]
        lines.append("")
    return lines, agree


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def write(args: argparse.Namespace, text: str) -> None:
    """Print the tables; write them too when asked (``--write-results`` or ``--out``), atomically."""
    print("\n" + text)
    if args.write or args.out:
        sys.path.insert(0, str(ROOT))
        from lpverify.io import atomic_write_text

        atomic_write_text(args.out or ROOT / "benchmarks" / "results" / "speed.md", text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="all 10,000 test images (default 1,000)")
    parser.add_argument("--n", type=int, default=None, help="test images per dataset")
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--batch-sizes", nargs="+", default=["auto", "10", "100"],
                        help="lpverify batch sizes; 'auto' is its default")
    parser.add_argument("--reference-batch-sizes", nargs="+", default=["10", "50"])
    parser.add_argument("--repeats", type=int, default=2, help="runs per lpverify configuration; the best is kept")
    parser.add_argument("--reference-repeats", type=int, default=1, help="runs per configuration of the paper's code")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu",
                        help="torch device of both codes' certification, e.g. cuda (TF32 off; peak memory is then "
                             "the device memory allocated)")
    parser.add_argument("--no-reference", action="store_true", help="skip the paper's code")
    parser.add_argument("--reference-venv", type=Path, default=ROOT / "build" / "reference-venv")
    parser.add_argument("--lp-images", type=int, default=1, help="images per model for the LP table (0 skips)")
    parser.add_argument("--data", type=Path, default=SHARED / "data", help="folder holding mnist/ and fashion_mnist/")
    parser.add_argument("--weights", type=Path, default=SHARED / "models" / "wong_kolter_2018",
                        help="folder holding the paper's <dataset>.pth")
    parser.add_argument("--write-results", "--write", dest="write", action="store_true",
                        help="refresh the committed benchmarks/results/speed.md (--write is the older name)")
    parser.add_argument("--out", type=Path, default=None, help="write the table to this file instead")
    parser.add_argument("--worker", choices=["lpverify", "reference"], help=argparse.SUPPRESS)
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", help=argparse.SUPPRESS)
    parser.add_argument("--images", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        (lpverify_worker if args.worker == "lpverify" else reference_worker)(args)
        return 0
    args.n = args.n or (10000 if args.full else 1000)
    if args.n < 1 or args.repeats < 1 or args.reference_repeats < 1 or args.threads < 1:
        parser.error("--n, --repeats, --reference-repeats and --threads must be >= 1")
    for dataset in args.datasets:
        for path in (args.data / dataset, args.weights / f"{dataset}.pth"):
            if not path.exists():
                print(f"missing {path}: pass --data/--weights", file=sys.stderr)
                return 2

    import torch

    reference = None if args.no_reference else reference_python(args.reference_venv)
    print(f"Certifying {args.n} test images per dataset at ε = {EPS}, {args.threads} threads, {cpu_name()}")
    with tempfile.TemporaryDirectory() as tmp:
        cert_lines, agree = certification_table(args, reference, Path(tmp))
    shown = [a for a in (sys.argv[1:] if argv is None else argv) if a not in ("--write", "--write-results")]
    header = [
        "# Speed",
        "",
        f"Machine: {cpu_name()}, {args.threads} thread(s)"
        + (f", device {torch.cuda.get_device_name(args.device)} (TF32 off)" if args.device.startswith("cuda") else "")
        + f"; torch {torch.__version__}. "
        f"Command: `{shlex.join(['python', 'benchmarks/speed.py', *shown])}`.",
        "",
        "## Certification beside the paper's code",
        "",
        *cert_lines,
    ]
    write(args, "\n".join(header))  # kept even if the LP part fails
    if args.lp_images:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from lp_speed import lp_speed_lines

        print(f"\nLP per margin on {args.lp_images} images per model")
        lp_lines = lp_speed_lines(args.data, args.weights / "mnist.pth", args.lp_images, args.threads)
        write(args, "\n".join([*header, "## LP per margin", "", *lp_lines, ""]))
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
