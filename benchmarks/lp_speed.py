"""The LP per margin (eq. 19): the direct HiGHS model against the readable CVXPY model.

For each model and test image (ε = 0.1, no clamp), both LP builds of
:mod:`lpverify.lp` are built once and solved for the margins ``e_y − e_j``:
the direct model (:class:`lpverify.HighsLP`, stable units eliminated, ẑ of
crossing units split, simplex or interior point by size) for ``targets``
margins, the CVXPY model (:class:`lpverify.CvxpyLP`, every unit a variable)
for the first ``cvxpy_targets`` of them, each of its solves cut at
``cvxpy_time_limit`` seconds. A time is per LP: the image's build time plus
its solves, divided by its LPs; ``max_rel_diff`` is the largest relative
difference between the two models' optima.
On the robust MNIST model ~160 units cross and a direct LP takes ~20 ms, a
CVXPY one ~1.5 s; on the random-init and normally trained ones ~4,000 cross,
a direct LP takes 6-9 s (interior point) and a CVXPY one ~280 s, so each
image costs ~6 min per such model.

``lp_speed_rows`` is the measurement, ``lp_speed_lines`` its markdown table
for ``benchmarks/speed.py``; run alone it prints the table, and with
``--write`` refreshes ``benchmarks/results/lp_speed.md``. The normally trained
model (3 epochs) is trained first when no finished run is cached.

    python benchmarks/lp_speed.py                 # 1 image per model, 9 direct and 1 CVXPY LP each
    python benchmarks/lp_speed.py --images 3 --cvxpy-targets 3
    python benchmarks/lp_speed.py --write         # the committed table
"""

from __future__ import annotations

import argparse
import math
import shlex
import statistics
import sys
from pathlib import Path

import torch
from torch import nn

import lpverify as lv
from lpverify.data import load_mnist

SHARED = Path(__file__).resolve().parents[2] / "shared"
EPS = 0.1


def lp_speed_rows(
    models: dict[str, nn.Module],
    images: torch.Tensor,
    threads: int,
    *,
    targets: int = 9,
    cvxpy_targets: int = 1,
    cvxpy_time_limit: float = 300.0,
) -> list[dict[str, object]]:
    """One row per model: seconds per margin LP of the direct and the CVXPY model, and their agreement.

    ``images`` (n, 1, 28, 28); ``threads`` torch threads (the dual bounds and
    the safe bounds; HiGHS solves each LP on one core).
    """
    torch.set_num_threads(threads)
    rows = []
    for name, model in models.items():
        net = lv.Network.from_torch(model, input_shape=tuple(images.shape[1:]))
        ball = lv.LinfBall(images.double(), EPS)
        with torch.no_grad():
            y = net(ball.center).argmax(1)
            objectives = lv.margin_objectives(y, net.n_outputs).double()
            bounds = lv.dual_bounds(net, ball)
        times: dict[str, list[float]] = {"highs": [], "cvxpy": []}
        lps = {"highs": 0, "cvxpy": 0}
        diffs: list[float] = []
        unfinished = 0
        for b in range(images.shape[0]):
            picks = [j for j in range(net.n_outputs) if j != int(y[b])][:targets]
            fast = lv.HighsLP(net, ball.select(b), bounds.select(b))
            fast_results = [fast.solve(objectives[b, j]) for j in picks]
            slow = lv.CvxpyLP(net, ball.select(b), bounds.select(b))
            slow_results = [slow.solve(objectives[b, j], time_limit=cvxpy_time_limit) for j in picks[:cvxpy_targets]]
            for backend, built, results in (("highs", fast, fast_results), ("cvxpy", slow, slow_results)):
                times[backend].append((built.build_time + sum(r.time for r in results)) / len(results))
                lps[backend] += len(results)
            unfinished += sum(not r.optimal for r in slow_results)
            diffs += [abs(f.value - s.value) / max(1.0, abs(s.value))
                      for f, s in zip(fast_results, slow_results) if f.optimal and s.optimal]
        direct, readable = statistics.mean(times["highs"]), statistics.mean(times["cvxpy"])
        rows.append({
            "model": name,
            "images": images.shape[0],
            "crossing": float(bounds.n_crossing().sum(1).double().mean()),
            "direct_solver": fast.solver,
            "direct_lps": lps["highs"],
            "direct_s_per_lp": direct,
            "cvxpy_lps": lps["cvxpy"],
            "cvxpy_s_per_lp": readable,
            "cvxpy_unfinished": unfinished,
            "speedup": readable / direct,
            "max_rel_diff": max(diffs, default=math.nan),
        })
    return rows


def lp_speed_lines(data: Path, weights: Path, n_images: int, threads: int, **options: float) -> list[str]:
    """The markdown table of :func:`lp_speed_rows` (``options`` its keywords) on Figure 11's three models."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from tightness import figure11_models

    x_test, _ = load_mnist(data / "mnist", "test")
    models = figure11_models(weights, data, seed=0, train_standard=True)
    rows = lp_speed_rows(models, x_test[:n_images], threads, **options)
    lines = [
        (f"Margin LPs at ε = {EPS} on the first {n_images} MNIST test images per model, {threads} threads. "
         "Seconds per LP include the model's build; ≥: some CVXPY solves were cut at the time limit."),
        "",
        "| model | crossing units | direct model: solver | direct s/LP (LPs) | CVXPY s/LP (LPs) | speedup | max rel. diff |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        at_least = "≥ " if r["cvxpy_unfinished"] else ""
        lines.append(
            f"| {r['model']} | {r['crossing']:.0f} | {r['direct_solver']} | {r['direct_s_per_lp']:.3f} ({r['direct_lps']}) "
            f"| {at_least}{r['cvxpy_s_per_lp']:.3f} ({r['cvxpy_lps']}) | {at_least}{r['speedup']:.1f}× | {r['max_rel_diff']:.1e} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1, help="test images per model")
    parser.add_argument("--targets", type=int, default=9, help="margins per image on the direct model")
    parser.add_argument("--cvxpy-targets", type=int, default=1, help="of those, margins per image on the CVXPY model")
    parser.add_argument("--cvxpy-time-limit", type=float, default=300.0, help="seconds per CVXPY solve")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", type=Path, default=SHARED / "data", help="data directory holding mnist/")
    parser.add_argument("--weights", type=Path, default=SHARED / "models" / "wong_kolter_2018" / "mnist.pth")
    parser.add_argument("--write-results", "--write", dest="write", action="store_true",
                        help="refresh benchmarks/results/lp_speed.md")
    args = parser.parse_args(argv)
    lines = lp_speed_lines(args.data, args.weights, args.images, args.threads, targets=args.targets,
                           cvxpy_targets=args.cvxpy_targets, cvxpy_time_limit=args.cvxpy_time_limit)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from speed import cpu_name

    shown = [a for a in (sys.argv[1:] if argv is None else argv) if a not in ("--write", "--write-results")]
    text = "\n".join(["# The LP per margin: direct HiGHS model against CVXPY", "",
                      f"Command: `{shlex.join(['python', 'benchmarks/lp_speed.py', *shown])}`; {cpu_name()}.", "",
                      *lines, ""])
    print(text)
    if args.write:
        from lpverify.io import atomic_write_text

        atomic_write_text(Path(__file__).resolve().parent / "results" / "lp_speed.md", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
