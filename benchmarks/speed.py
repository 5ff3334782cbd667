"""Speed of certification and of the LP on the paper's MNIST model (ε = 0.1).

1. Certification throughput: Algorithm 1 bounds plus the nine margin
   objectives (Theorem 1), examples per second and peak memory (resident set
   size) for several batch sizes, each in a fresh process on 2 threads. The
   certificates must be identical across batch sizes.
2. Per-LP time: the readable CVXPY model against the direct HiGHS model, per
   (example, target), model building included; the direct model cold (first
   solve) and warm (re-solved from the previous basis). Values must agree.

Reference figures for the same job on this 2-core machine: the authors'
implementation certifies all 10,000 test images in 294 s (34 examples/s,
1.25 GB peak); the CVXPY LP takes about 2 s per margin LP.

    python benchmarks/speed.py                 # 1000 images, 5 LP images
    python benchmarks/speed.py --full          # all 10,000 images, 10 LP images
Needs the MNIST test set and the paper's weights (--data, --weights).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
REFERENCE_RATE, REFERENCE_PEAK_GB, REFERENCE_CVXPY_S = 34.0, 1.25, 2.0
EPS = 0.1


def load(data: Path, weights: Path, n: int):
    from lpverify.data import load_mnist
    from lpverify.zoo import paper_network

    x, y = load_mnist(data, "test")
    return paper_network("mnist", weights), x[:n], y[:n]


def certify_worker(args: argparse.Namespace) -> None:
    """Runs in its own process: certify n images at one batch size, print one JSON line."""
    import torch

    import lpverify as lv

    torch.set_num_threads(args.threads)
    net, x, y = load(args.data, args.weights, args.n)
    lv.certify(net, x[: args.batch_size], y[: args.batch_size], EPS, batch_size=args.batch_size)  # warm-up
    start = time.perf_counter()
    ok = lv.certify(net, x, y, EPS, batch_size=args.batch_size)
    elapsed = time.perf_counter() - start
    bits = "".join("1" if b else "0" for b in ok.tolist())
    print(json.dumps({
        "batch_size": args.batch_size,
        "seconds": elapsed,
        "rate": len(ok) / elapsed,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "uncertified": bits.count("0"),
        "digest": hashlib.sha256(bits.encode()).hexdigest()[:16],
    }))


def run_certify(args: argparse.Namespace, batch_size: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--n", str(args.n), "--batch-size", str(batch_size),
           "--threads", str(args.threads), "--data", str(args.data), "--weights", str(args.weights)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def lp_timings(args: argparse.Namespace) -> list[dict]:
    import numpy as np
    import torch

    import lpverify as lv

    torch.set_num_threads(args.threads)
    net, x, y = load(args.data, args.weights, args.lp_images)
    rows = []
    for i in range(args.lp_images):
        ball = lv.LinfBall(x[i : i + 1].double(), EPS)
        with torch.no_grad():
            bounds = lv.dual_bounds(net, ball)
        C = lv.margin_objectives(y[i : i + 1], 10)[0].double().numpy()
        targets = [j for j in range(10) if j != int(y[i])]
        row = {"image": i, "crossing": int(bounds.n_crossing().sum())}
        for backend in ("highs", "cvxpy"):
            start = time.perf_counter()
            model = lv.build_lp(net, ball, bounds, backend)
            results = [model.solve(C[j]) for j in targets]
            total = time.perf_counter() - start
            if not all(r.optimal for r in results):
                raise RuntimeError(f"image {i}, {backend}: LP not optimal: {[r.status for r in results]}")
            row[f"{backend}_build"] = model.build_time
            row[f"{backend}_per_lp"] = total / len(targets)
            row[f"{backend}_values"] = [r.value for r in results]
            row[f"{backend}_first"] = results[0].time  # CVXPY compiles its model inside the first solve
            row[f"{backend}_later"] = statistics.mean(r.time for r in results[1:])
            if backend == "highs":
                row["n_cols"], row["n_rows"] = model.n_col, model.n_row
        np.testing.assert_allclose(row["highs_values"], row["cvxpy_values"], rtol=1e-6, atol=1e-7)
        rows.append(row)
        print(f"  image {i}: {row['crossing']} crossing units, direct {row['highs_per_lp'] * 1e3:.1f} ms/LP, "
              f"CVXPY {row['cvxpy_per_lp']:.2f} s/LP", flush=True)
    return rows


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="all 10,000 test images and 10 LP images")
    parser.add_argument("--n", type=int, default=None, help="test images to certify (default 1000, 10000 with --full)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[10, 25, 50, 100])
    parser.add_argument("--lp-images", type=int, default=None, help="images for the LP timing (default 5, 10 with --full)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", type=Path, default=SHARED / "data" / "mnist")
    parser.add_argument("--weights", type=Path, default=SHARED / "models" / "wong_kolter_2018" / "mnist.pth")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "speed.md")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=50, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.n = args.n or (10000 if args.full else 1000)
    args.lp_images = args.lp_images or (10 if args.full else 5)
    if args.worker:
        certify_worker(args)
        return 0
    for path in (args.data, args.weights):
        if not path.exists():
            print(f"missing {path}: pass --data/--weights", file=sys.stderr)
            return 2

    print(f"Certifying {args.n} MNIST test images at ε = {EPS}, {args.threads} threads, {cpu_name()}")
    certs = []
    for b in args.batch_sizes:
        certs.append(run_certify(args, b))
        c = certs[-1]
        print(f"  batch {b:>4}: {c['rate']:7.1f} examples/s, peak {c['peak_mb']:6.0f} MB, {c['uncertified']} not certified",
              flush=True)
    if len({c["digest"] for c in certs}) != 1:
        print("ERROR: certificates differ between batch sizes", file=sys.stderr)
        return 1
    best = max(certs, key=lambda c: c["rate"])

    print(f"\nLP per (example, target) on {args.lp_images} images (9 margin LPs each)")
    lps = lp_timings(args)
    highs = statistics.mean(r["highs_per_lp"] for r in lps)
    cvx = statistics.mean(r["cvxpy_per_lp"] for r in lps)

    lines = [
        "# Speed on the paper's MNIST model (ε = 0.1)",
        "",
        f"Machine: {cpu_name()}, {args.threads} threads; torch {__import__('torch').__version__}. "
        f"Command: `python benchmarks/speed.py{' --full' if args.full else ''}`.",
        "",
        f"## Certification: Algorithm 1 + nine margins, {args.n} test images",
        "",
        "| batch size | examples/s | × reference (34/s) | peak memory (MB) | not certified |",
        "|---:|---:|---:|---:|---:|",
        *[f"| {c['batch_size']} | {c['rate']:.1f} | {c['rate'] / REFERENCE_RATE:.2f} | {c['peak_mb']:.0f} | {c['uncertified']} |" for c in certs],
        "",
        f"Best: batch {best['batch_size']}, {best['rate']:.1f} examples/s = {best['rate'] / REFERENCE_RATE:.2f}× the reference "
        f"implementation (34 examples/s, 1.25 GB peak), peak memory {best['peak_mb'] / 1024:.2f} GB. "
        f"Certificates are identical at every batch size (digest {best['digest']}).",
        "",
        f"## LP per (example, target), {args.lp_images} images × 9 targets",
        "",
        "| image | crossing units | direct rows × cols | direct build (ms) | direct cold (ms) | direct warm (ms) | direct per LP, all in (ms) | CVXPY first LP, compile incl. (s) | CVXPY later LPs (s) | CVXPY per LP, all in (s) | ratio |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *[
            f"| {r['image']} | {r['crossing']} | {r['n_rows']} × {r['n_cols']} | {r['highs_build'] * 1e3:.1f} | {r['highs_first'] * 1e3:.1f} | "
            f"{r['highs_later'] * 1e3:.1f} | {r['highs_per_lp'] * 1e3:.1f} | {r['cvxpy_first']:.2f} | {r['cvxpy_later']:.2f} | "
            f"{r['cvxpy_per_lp']:.2f} | {r['cvxpy_per_lp'] / r['highs_per_lp']:.0f}× |"
            for r in lps
        ],
        "",
        f"Mean per (example, target), build included: direct HiGHS {highs * 1e3:.1f} ms, CVXPY {cvx:.2f} s: "
        f"the direct model is {cvx / highs:.0f}× faster. All LP values agree between the two models (rel. 1e-6). "
        "The direct model keeps only the two triangle rows of each crossing unit (stable units are substituted "
        "away); the CVXPY model has a variable per unit and compiles once per example (the objective is a "
        "Parameter), which is why it already beats the ~2 s per LP of a model rebuilt for every target.",
        "",
    ]
    text = "\n".join(lines)
    from lpverify.io import atomic_write_text

    atomic_write_text(args.out, text)
    print("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
