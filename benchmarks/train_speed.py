"""Training speed side by side with the paper's own code: the robust loss, exact and with random projections.

One training step = the robust loss of a batch (Theorem 2), its gradient and an
Adam step, on the paper's MNIST architecture, batch 50, ε = 0.1, no clamp:

* exact: lpverify's ``Loss.EXACT`` (Algorithm 1 on receptive fields) against
  ``convex_adversarial.robust_loss`` (0.4.4, the paper's code);
* projections (k = 50, training only): ``Loss.PROJECTION`` against
  ``robust_loss(..., proj=50, norm_type="l1_median")``.

Each (code, loss, model state) runs in its own process on ``--threads``
threads; configurations alternate over ``--repeats`` rounds and each keeps
its best round (the least disturbed by other load). CPU time per step (all
threads) is reported beside wall time: on a shared machine it varies far
less. Two model states: the
untrained initialisation (every unit crosses: the slowest steps, the start of
training) and the paper's trained weights (few crossing units: the end of
training). The paper's code runs in the throwaway venv of
:func:`speed.reference_python` (``build/reference-venv``). Every worker sees
the same training batches in the same order.

    python benchmarks/train_speed.py --batches 5 --repeats 1   # a quick look
    python benchmarks/train_speed.py --write                   # benchmarks/results/train_speed.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
EPS = 0.1
BATCH = 50
PROJECTIONS = 50
LOSSES = ("exact", "projection")
STATES = ("init", "paper")


def _model(state: str, weights: Path):
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(  # the paper's MNIST architecture, as both codes build it
        nn.Conv2d(1, 16, 4, stride=2, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 4, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 100), nn.ReLU(), nn.Linear(100, 10))
    if state == "paper":
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model


def worker(args: argparse.Namespace) -> None:
    """Time ``args.batches`` training steps of one configuration; prints one JSON line."""
    import torch

    torch.set_num_threads(args.threads)
    model = _model(args.state, args.weights)
    x, y = torch.load(args.images)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    if args.worker == "lpverify":
        sys.path.insert(0, str(ROOT))
        from lpverify.losses import training_loss
        from lpverify.schedule import Loss

        generator = torch.Generator().manual_seed(0)
        loss_kind = Loss.EXACT if args.loss == "exact" else Loss.PROJECTION

        def loss_of(xb, yb):
            return training_loss(loss_kind, model, xb, yb, EPS, projections=PROJECTIONS, generator=generator).total
    else:
        from convex_adversarial import robust_loss

        torch.manual_seed(0)
        options = {} if args.loss == "exact" else {"proj": PROJECTIONS, "norm_type": "l1_median"}

        def loss_of(xb, yb):
            return robust_loss(model, EPS, xb, yb, **options)[0]

    def step(i: int) -> None:
        xb, yb = x[i * BATCH : (i + 1) * BATCH], y[i * BATCH : (i + 1) * BATCH]
        loss = loss_of(xb, yb)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step(0)  # warm-up: allocator, caches
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(1, args.batches + 1):
        step(i)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    print(json.dumps({"seconds_per_batch": seconds / args.batches, "cpu_seconds_per_batch": cpu_seconds / args.batches}))


def run_worker(python: Path, kind: str, loss: str, state: str, args: argparse.Namespace, images: Path) -> dict:
    cmd = [str(python), __file__, "--worker", kind, "--loss", loss, "--state", state, "--images", str(images),
           "--weights", str(args.weights), "--threads", str(args.threads), "--batches", str(args.batches)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{kind} worker failed ({loss}, {state}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=20, help="timed training steps per run (after one warm-up step)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds; each configuration keeps its best")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--losses", nargs="+", choices=LOSSES, default=list(LOSSES))
    parser.add_argument("--states", nargs="+", choices=STATES, default=list(STATES))
    parser.add_argument("--data", type=Path, default=SHARED / "data", help="folder holding mnist/")
    parser.add_argument("--weights", type=Path, default=SHARED / "models" / "wong_kolter_2018" / "mnist.pth")
    parser.add_argument("--reference-venv", type=Path, default=ROOT / "build" / "reference-venv")
    parser.add_argument("--write-results", "--write", dest="write", action="store_true",
                        help="write benchmarks/results/train_speed.md")
    parser.add_argument("--worker", choices=["lpverify", "reference"], help=argparse.SUPPRESS)
    parser.add_argument("--loss", choices=LOSSES, help=argparse.SUPPRESS)
    parser.add_argument("--state", choices=STATES, help=argparse.SUPPRESS)
    parser.add_argument("--images", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    if min(args.batches, args.repeats, args.threads) < 1:
        parser.error("--batches, --repeats and --threads must be >= 1")
    for path in (args.data / "mnist", args.weights):
        if not path.exists():
            print(f"missing {path}: pass --data/--weights", file=sys.stderr)
            return 2

    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    sys.path.insert(0, str(ROOT))
    from lpverify.data import load_mnist
    from speed import REFERENCE, cpu_name, reference_python

    reference = reference_python(args.reference_venv)
    x, y = load_mnist(args.data / "mnist", "train")
    n = (args.batches + 1) * BATCH
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))[:n]
    configs = [(kind, loss, state) for state in args.states for loss in args.losses for kind in ("lpverify", "reference")]
    best: dict[tuple[str, str, str], dict] = {}
    print(f"Training steps: batch {BATCH}, ε = {EPS}, {args.batches} steps per run, {args.threads} threads, {cpu_name()}")
    with tempfile.TemporaryDirectory() as tmp:
        images = Path(tmp) / "batches.pt"
        torch.save((x[order].reshape(-1, 1, 28, 28).clone(), y[order].clone()), images)
        for repeat in range(args.repeats):
            for kind, loss, state in configs:
                python = reference if kind == "reference" else Path(sys.executable)
                r = run_worker(python, kind, loss, state, args, images)
                print(f"  {state:<5} {loss:<10} {kind:<9} (run {repeat + 1}): {r['seconds_per_batch']:.3f} s/batch, "
                      f"{r['cpu_seconds_per_batch']:.3f} CPU s/batch", flush=True)
                key = (kind, loss, state)
                if key not in best or r["seconds_per_batch"] < best[key]["seconds_per_batch"]:
                    best[key] = r
    lines = [
        "# Training speed: lpverify against the paper's code",
        "",
        f"`python benchmarks/train_speed.py --batches {args.batches} --repeats {args.repeats} --threads {args.threads}`; "
        f"{cpu_name()}. One step: robust loss of a batch of {BATCH} MNIST training images at ε = {EPS} (no clamp), "
        f"its gradient and an Adam step, on the paper's MNIST network; best of {args.repeats} alternating runs. "
        f"Paper's code: `{REFERENCE}`. Projections: k = {PROJECTIONS} (Cauchy median), training only.",
        "",
        "| model state | loss | lpverify s/step | paper's code s/step | speed-up (paper / lpverify) | "
        "lpverify CPU s/step | paper's code CPU s/step | speed-up in CPU time | lpverify epoch (1,200 steps), min |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for state in args.states:
        for loss in args.losses:
            ours, theirs = best[("lpverify", loss, state)], best[("reference", loss, state)]
            a, b = ours["seconds_per_batch"], theirs["seconds_per_batch"]
            ca, cb = ours["cpu_seconds_per_batch"], theirs["cpu_seconds_per_batch"]
            lines.append(f"| {state} | {loss} | {a:.3f} | {b:.3f} | {b / a:.2f}× | {ca:.3f} | {cb:.3f} | {cb / ca:.2f}× | "
                         f"{1200 * a / 60:.1f} |")
    lines.append("")
    text = "\n".join(lines)
    print("\n" + text)
    if args.write:
        sys.path.insert(0, str(ROOT))
        from lpverify.io import atomic_write_text

        atomic_write_text(ROOT / "benchmarks" / "results" / "train_speed.md", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
