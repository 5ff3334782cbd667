"""How tight is each bound? The exact LP vs the dual network vs naive interval bounds.

Three studies, each printing a table and writing a CSV under
benchmarks/results/ and a PNG under figures/:

1. Output ranges (Appendix B): for a random 2-100-100-100-100-2 network
   (weights N(0, 1/√n_in), biases N(0, 1)) at ε = 0.05, 0.1, 0.25, the range
   of each output over the ε-box: from a dense grid of the box (the true
   range, up to sampling), the LP, the dual bound (Algorithm 1) and the naive
   interval bound.
2. Margins: for random dense and convolutional networks at several ε, the
   lower bounds on the margins f_y − f_j from interval, dual and LP, with the
   smallest sampled margin, and the gaps between them; the same on the 2D toy
   networks of Appendix B.1 (trained normally and robustly, briefly).
3. Figure 11: the exact LP optimum against the dual bound for many LPs (test
   images × 9 target classes, ε = 0.1) on the paper's robust MNIST model, a
   randomly initialised model of the same architecture and a normally trained
   one, with the median and largest gaps. Needs the MNIST test set and the
   paper's weights (--data, --weights); skipped with a message without them.
   The normally trained model is trained by --full (3 epochs, cached in
   benchmarks/results/models/standard_mnist) and used when cached. On the
   random and standard models ~4,000 units cross: each LP is solved by
   interior point (~10 s), images in --workers processes.

Every LP value must lie between its dual bound and the sampled values; the
script exits with status 1, naming the case, if one does not.

    python benchmarks/tightness.py                       # all three studies, Figure 11 at 12 images (108 LPs per model)
    python benchmarks/tightness.py --only figure11       # Figure 11 alone
    python benchmarks/tightness.py --figure11-images 1   # quick: studies 1-2 under two minutes, 9 LPs per model
    python benchmarks/tightness.py --full                # the paper's scale: more networks, 100 images per model
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

import lpverify as lv
from lpverify.data import load_mnist, toy_2d
from lpverify.io import write_csv
from lpverify.plots import save_figure
from lpverify.schedule import Loss
from lpverify.train import TrainConfig, fit_paper_model, train_full_batch
from lpverify.zoo import load_paper_model, paper_model

ROOT = Path(__file__).resolve().parents[1]
RESULTS, FIGURES = ROOT / "benchmarks" / "results", ROOT / "figures"
SHARED = ROOT.parent / "shared"
TOL = 1e-6


class SoundnessError(AssertionError):
    """An LP below its dual bound, or above a sampled value: a bug, never a result."""


def random_convnet(seed: int, side: int = 12) -> tuple[nn.Sequential, tuple[int, int, int]]:
    """A small version of the paper's conv architecture on a 1×side×side input."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 4, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(8, 16, 4, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(16 * (side // 4) ** 2, 50), nn.ReLU(), nn.Linear(50, 10),
    )
    return model, (1, side, side)


def check(ok: bool, message: str) -> None:
    if not ok:
        raise SoundnessError(message)


# -- study 1: output ranges ------------------------------------------------------------------


@dataclass(frozen=True)
class Range:
    eps: float
    output: int
    method: str
    lower: float
    upper: float


def output_ranges(net: lv.Network, x: torch.Tensor, eps: float, grid: int) -> list[Range]:
    """Each output's range over the box, by sampling, LP, dual and interval (x: (1, 2))."""
    ball = lv.LinfBall(x, eps)
    with torch.no_grad():
        interval, dual = lv.interval_bounds(net, ball), lv.dual_bounds(net, ball)
        axes = [torch.linspace(float(ball.lo[0, d]), float(ball.hi[0, d]), grid, dtype=x.dtype) for d in range(2)]
        points = torch.cartesian_prod(*axes)
        sampled = net(points)
    model = lv.build_lp(net, ball, dual)
    rows = []
    for o in range(net.n_outputs):
        e = np.eye(net.n_outputs)[o]
        low, high = model.solve(e), model.solve(-e)
        check(low.optimal and high.optimal, f"ε={eps} output {o}: LP not optimal ({low.status}, {high.status})")
        lp = (low.value, -high.value)
        true = (float(sampled[:, o].min()), float(sampled[:, o].max()))
        d = (float(dual.lower[-1][0, o]), float(dual.upper[-1][0, o]))
        check(d[0] <= lp[0] + TOL and lp[1] <= d[1] + TOL, f"ε={eps} output {o}: LP {lp} outside dual {d}")
        check(lp[0] <= true[0] + TOL and true[1] <= lp[1] + TOL, f"ε={eps} output {o}: LP {lp} inside sampled {true}")
        rows += [
            Range(eps, o, "sampled", *true),
            Range(eps, o, "lp", *lp),
            Range(eps, o, "dual", *d),
            Range(eps, o, "interval", float(interval.lower[-1][0, o]), float(interval.upper[-1][0, o])),
        ]
    return rows


def print_ranges(rows: list[Range]) -> None:
    methods = ["sampled", "lp", "dual", "interval"]
    print(f"{'eps':>5} {'out':>3}  " + "  ".join(f"{m:>21}" for m in methods))
    keys = sorted({(r.eps, r.output) for r in rows})
    for eps, o in keys:
        cells = {r.method: r for r in rows if (r.eps, r.output) == (eps, o)}
        print(f"{eps:>5} {o:>3}  " + "  ".join(f"[{cells[m].lower:>9.3f},{cells[m].upper:>9.3f}]" for m in methods))


def plot_ranges(rows: list[Range], path: Path) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    eps_values = sorted({r.eps for r in rows})
    fig, axes = plt.subplots(1, len(eps_values), figsize=(4.2 * len(eps_values), 4.0))
    styles = {"lp": ("tab:blue", "LP"), "dual": ("tab:orange", "dual (Alg. 1)"), "sampled": ("black", "sampled range")}
    for ax, eps in zip(np.atleast_1d(axes), eps_values):
        box = {r.method: {} for r in rows}
        for r in rows:
            if r.eps == eps:
                box[r.method][r.output] = (r.lower, r.upper)
        for method, (color, label) in styles.items():
            (x0, x1), (y0, y1) = box[method][0], box[method][1]
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=method == "sampled", alpha=0.35 if method == "sampled" else 1,
                                   edgecolor=color, facecolor=color if method == "sampled" else "none", lw=1.5, label=label))
        (dx0, dx1), (dy0, dy1) = box["dual"][0], box["dual"][1]
        pad_x, pad_y = 0.15 * (dx1 - dx0) + 1e-3, 0.15 * (dy1 - dy0) + 1e-3
        ax.set_xlim(dx0 - pad_x, dx1 + pad_x)
        ax.set_ylim(dy0 - pad_y, dy1 + pad_y)
        (ix0, ix1), (iy0, iy1) = box["interval"][0], box["interval"][1]
        ax.set_title(f"ε = {eps}\ninterval box: [{ix0:.1f}, {ix1:.1f}] × [{iy0:.1f}, {iy1:.1f}]", fontsize=9)
        ax.set_xlabel("output 1")
        ax.set_ylabel("output 2")
    np.atleast_1d(axes)[0].legend(loc="best", fontsize=8)
    fig.suptitle("Bounding boxes of the outputs of a random 2-100-100-100-100-2 network")
    save_figure(fig, path, dpi=110)


# -- study 2: margins on random networks --------------------------------------------------------


@dataclass(frozen=True)
class MarginRow:
    network: str
    eps: float
    example: int
    target: int
    sampled: float
    lp: float
    dual: float
    interval: float
    crossing: int


def margin_study(name: str, net: lv.Network, x: torch.Tensor, eps: float, n_samples: int) -> list[MarginRow]:
    """Bounds on f_y − f_j (y the predicted class) for every example of x and every j ≠ y."""
    ball = lv.LinfBall(x, eps)
    with torch.no_grad():
        y = net(x).argmax(1)
        C = lv.margin_objectives(y, net.n_outputs).to(x)
        dual_b = lv.dual_bounds(net, ball)
        J = lv.dual_objective(net, ball, C, dual_b)
        naive = lv.interval_objective(net, ball, C)
        gen = torch.Generator().manual_seed(0)
        pts = torch.cat([ball.sample(n_samples, generator=gen), ball.sample(n_samples, vertices=True, generator=gen)], 1)
        logits = net(pts.flatten(0, 1)).view(x.shape[0], -1, net.n_outputs)
        sampled = torch.einsum("bjo,bno->bjn", C, logits).min(-1).values
    rows = []
    for b in range(x.shape[0]):
        model = lv.build_lp(net, ball.select(b), dual_b.select(b))
        crossing = int(dual_b.select(b).n_crossing().sum())
        for j in range(net.n_outputs):
            if j == int(y[b]):
                continue
            lp = model.solve(C[b, j])
            where = f"{name} ε={eps} example {b} target {j}"
            check(lp.optimal, f"{where}: LP not optimal ({lp.status})")
            check(float(J[b, j]) <= lp.value + TOL, f"{where}: dual {float(J[b, j])} above LP {lp.value}")
            check(lp.value <= float(sampled[b, j]) + TOL, f"{where}: LP {lp.value} above a sampled margin {float(sampled[b, j])}")
            rows.append(MarginRow(name, eps, b, j, float(sampled[b, j]), lp.value, float(J[b, j]), float(naive[b, j]), crossing))
    return rows


def summarise_margins(rows: list[MarginRow]) -> list[dict[str, object]]:
    out = []
    for key in dict.fromkeys((r.network, r.eps) for r in rows):  # in the order they were run
        group = [r for r in rows if (r.network, r.eps) == key]
        gaps = [r.lp - r.dual for r in group]
        out.append({
            "network": key[0],
            "eps": key[1],
            "n_lps": len(group),
            "crossing": statistics.mean(r.crossing for r in group),
            "sampled": statistics.mean(r.sampled for r in group),
            "lp": statistics.mean(r.lp for r in group),
            "dual": statistics.mean(r.dual for r in group),
            "interval": statistics.mean(r.interval for r in group),
            "median_gap_lp_dual": statistics.median(gaps),
            "max_gap_lp_dual": max(gaps),
            "frac_gap_below_1e-6": sum(g < 1e-6 for g in gaps) / len(gaps),
        })
    return out


def print_margin_summary(summary: list[dict[str, object]]) -> None:
    head = f"{'network':<27}{'eps':>6}{'LPs':>5}{'cross':>7}{'sampled':>10}{'LP':>10}{'dual':>10}{'interval':>11}{'LP-dual med':>12}{'max':>9}{'<1e-6':>7}"
    print(head)
    for s in summary:
        print(
            f"{s['network']:<27}{s['eps']:>6}{s['n_lps']:>5}{s['crossing']:>7.1f}{s['sampled']:>10.3f}{s['lp']:>10.3f}"
            f"{s['dual']:>10.3f}{s['interval']:>11.2f}{s['median_gap_lp_dual']:>12.2e}{s['max_gap_lp_dual']:>9.2e}"
            f"{s['frac_gap_below_1e-6']:>7.0%}"
        )


# -- study 3: Figure 11 -------------------------------------------------------------------------


STANDARD_RUN = ROOT / "benchmarks" / "results" / "models" / "standard_mnist"


def figure11_models(weights: Path, data: Path, seed: int, train_standard: bool) -> dict[str, nn.Module]:
    """The paper's robust MNIST model, a random initialisation and a normally trained model.

    The normally trained model (3 epochs, as in table1.py) is trained only when
    ``train_standard`` is set; otherwise it is used if a finished run is cached.
    """
    torch.manual_seed(seed)
    models = {"robust (paper's weights)": load_paper_model("mnist", weights), "random init": paper_model("mnist").eval()}
    if train_standard or (STANDARD_RUN / "checkpoint.pt").is_file():
        models["standard training"], _ = fit_paper_model(
            "mnist", TrainConfig(epochs=3, loss=Loss.STANDARD, lr_steps=(), test_robust_examples=0), STANDARD_RUN, root=data, progress=False)
    else:
        print(f"Figure 11: no normally trained model cached in {STANDARD_RUN}; --full (or benchmarks/table1.py) trains it")
    return models


def lp_vs_dual(name: str, model: nn.Module, x: torch.Tensor, eps: float, targets: int = 9, workers: int = 1) -> list[MarginRow]:
    """The margin LPs (the first ``targets`` classes other than the predicted one) and their dual bounds.

    One LP model per image, re-solved per target; ``workers`` processes solve images at once.
    """
    net = lv.Network.from_torch(model, input_shape=tuple(x.shape[1:]))
    ball = lv.LinfBall(x.double(), eps)
    with torch.no_grad():
        y = net(ball.center).argmax(1)
        C = lv.margin_objectives(y, 10).double()
        bounds = lv.dual_bounds(net, ball)
        J = lv.dual_objective(net, ball, C, bounds)
    picks = [[j for j in range(10) if j != int(y[b])][:targets] for b in range(x.shape[0])]
    results = lv.solve_batch(net, ball, torch.stack([C[b, p] for b, p in enumerate(picks)]), bounds, workers=workers)
    rows = []
    for b, (picked, lps) in enumerate(zip(picks, results)):
        crossing = int(bounds.select(b).n_crossing().sum())
        for j, lp in zip(picked, lps):
            check(lp.optimal, f"{name} image {b} target {j}: LP not optimal ({lp.status})")
            check(float(J[b, j]) <= lp.value + TOL, f"{name} image {b} target {j}: dual {float(J[b, j])} above LP {lp.value}")
            check(lp.bound <= lp.value + TOL, f"{name} image {b} target {j}: safe bound {lp.bound} above LP {lp.value}")
            rows.append(MarginRow(name, eps, b, j, float("nan"), lp.value, float(J[b, j]), float("nan"), crossing))
    return rows


def gap_summary(rows: list[MarginRow]) -> list[dict[str, object]]:
    out = []
    for name in dict.fromkeys(r.network for r in rows):
        group = [r for r in rows if r.network == name]
        gaps = np.array([r.lp - r.dual for r in group])
        rel = gaps / np.maximum(np.abs([r.lp for r in group]), 1e-12)
        out.append({"model": name, "n_lps": len(group), "crossing": float(np.mean([r.crossing for r in group])),
                    "median_abs_gap": float(np.median(gaps)), "max_abs_gap": float(gaps.max()),
                    "median_rel_gap": float(np.median(rel)), "max_rel_gap": float(rel.max()),
                    "frac_gap_below_1e-6": float((gaps < 1e-6).mean())})
    return out


def plot_figure11(rows: list[MarginRow], path: Path) -> None:
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r.network for r in rows))
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        lp = np.array([r.lp for r in rows if r.network == name])
        dual = np.array([r.dual for r in rows if r.network == name])
        lim = (min(lp.min(), dual.min()), max(lp.max(), dual.max()))
        ax.plot(lim, lim, color="0.6", lw=0.8)
        ax.scatter(lp, dual, s=8, alpha=0.7)
        ax.set_xlabel("exact LP optimum")
        ax.set_ylabel("dual bound J (Theorem 1)")
        ax.set_title(f"{name} ({len(lp)} LPs)", fontsize=10)
    fig.suptitle("MNIST, ε = 0.1: margin lower bounds, LP against dual (the dual is never above the diagonal)")
    save_figure(fig, path, dpi=100)


# -- main ---------------------------------------------------------------------------------------


STUDIES = ("ranges", "margins", "figure11")


def run_ranges(args: argparse.Namespace) -> int:
    """Study 1, Appendix B's output ranges; returns the number of LPs solved."""
    grid = 1000 if args.full else 400
    widths = [2, 100, 100, 100, 100, 2]
    net = lv.Network.from_torch(lv.zoo.random_mlp(widths, args.seed))
    x = torch.rand(1, 2, generator=torch.Generator().manual_seed(args.seed), dtype=torch.float64)
    ranges: list[Range] = []
    for eps in (0.05, 0.1, 0.25):
        ranges += output_ranges(net, x, eps, grid)
    print(f"Output ranges of a random 2-100-100-100-100-2 network at x = {x[0].tolist()} "
          f"(sampled: a {grid}×{grid} grid of the box)\n")
    print_ranges(ranges)
    write_csv(args.results / "tightness_output_ranges.csv", [r.__dict__ for r in ranges], list(Range.__dataclass_fields__))
    plot_ranges(ranges, args.figures / "tightness_output_ranges.png")
    return 2 * len({(r.eps, r.output) for r in ranges})


def run_margins(args: argparse.Namespace) -> int:
    """Study 2, margins on random dense and convolutional networks and the 2D toys; returns the number of LPs."""
    n_examples, n_samples = (8, 4000) if args.full else (3, 1000)
    dense_sizes = [[2, 100, 100, 100, 100, 2], [20, 50, 50, 10], [20, 200, 10]]
    if args.full:
        dense_sizes += [[50, 100, 100, 100, 10]]
    margins: list[MarginRow] = []
    gen = torch.Generator().manual_seed(args.seed + 1)
    for sizes in dense_sizes:
        name = "dense " + "-".join(map(str, sizes))
        net = lv.Network.from_torch(lv.zoo.random_mlp(sizes, args.seed))
        x = torch.rand(n_examples, sizes[0], generator=gen, dtype=torch.float64)
        for eps in (0.01, 0.05, 0.1):
            margins += margin_study(name, net, x, eps, n_samples)
    model, shape = random_convnet(args.seed)
    net = lv.Network.from_torch(model, input_shape=shape)
    x = torch.rand(n_examples, *shape, generator=gen, dtype=torch.float64)
    for eps in (0.01, 0.02, 0.05):
        margins += margin_study("conv 1x12x12 (paper-like)", net, x, eps, n_samples)
    toy_x, toy_y = toy_2d(12, 0.16, seed=4)
    toy_steps = 3000 if args.full else 300
    for name, robust in (("toy 2D, standard", False), ("toy 2D, robust", True)):
        toy = lv.zoo.toy_2d_network(args.seed)
        train_full_batch(toy, toy_x, toy_y, robust=robust, eps=0.08, steps=toy_steps, log_every=toy_steps)
        margins += margin_study(f"{name} ({toy_steps} steps)", lv.Network.from_torch(toy), toy_x.double(), 0.08, n_samples)
    summary = summarise_margins(margins)
    print("\nLower bounds on the margins f_y − f_j (y the predicted class), averaged over examples and targets;"
          "\n'sampled' is the smallest margin seen at sampled points (an upper bound on the true minimum)\n")
    print_margin_summary(summary)
    write_csv(args.results / "tightness_margins.csv", [r.__dict__ for r in margins], list(MarginRow.__dataclass_fields__))
    write_csv(args.results / "tightness_margins_summary.csv", summary, list(summary[0]))
    return len(margins)


def run_figure11(args: argparse.Namespace) -> int:
    """Study 3, Figure 11: ``args.figure11_images`` test images × 9 targets per model; returns the number of LPs."""
    if not (args.data.joinpath("mnist").is_dir() and args.weights.is_file()):
        print(f"\nFigure 11 skipped: needs {args.data / 'mnist'} and {args.weights} (pass --data and --weights)")
        return 0
    x_test, _ = load_mnist(args.data / "mnist", "test")
    n = args.figure11_images
    print(f"\nFigure 11: {n} test images × 9 targets per model, LPs in {args.workers} processes")
    fig11: list[MarginRow] = []
    for name, model in figure11_models(args.weights, args.data, args.seed, train_standard=args.full).items():
        began = time.perf_counter()
        fig11 += lp_vs_dual(name, model, x_test[:n], 0.1, workers=args.workers)
        print(f"  {name}: {9 * n} LPs in {time.perf_counter() - began:.0f} s")
    gaps = gap_summary(fig11)
    print("\nFigure 11: the exact LP against the dual bound, MNIST margins at ε = 0.1\n")
    print(f"{'model':<26}{'LPs':>5}{'crossing':>10}{'median gap':>12}{'max gap':>10}{'median rel':>12}{'max rel':>10}{'<1e-6':>8}")
    for g in gaps:
        print(f"{g['model']:<26}{g['n_lps']:>5}{g['crossing']:>10.0f}{g['median_abs_gap']:>12.2e}{g['max_abs_gap']:>10.2e}"
              f"{g['median_rel_gap']:>12.2e}{g['max_rel_gap']:>10.2e}{g['frac_gap_below_1e-6']:>8.0%}")
    write_csv(args.results / "tightness_figure11.csv", [r.__dict__ for r in fig11], list(MarginRow.__dataclass_fields__))
    write_csv(args.results / "tightness_figure11_summary.csv", gaps, list(gaps[0]))
    plot_figure11(fig11, args.figures / "tightness_figure11.png")
    return len(fig11)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="more networks, inputs and samples; 100 images for Figure 11")
    parser.add_argument("--only", choices=STUDIES, help="run one study (default: all three)")
    parser.add_argument("--figure11-images", type=int, help="test images per model in Figure 11, 9 LPs each (default 12; 100 with --full)")
    parser.add_argument("--workers", type=int, default=2, help="processes solving Figure 11's LPs, one image each at a time")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random networks and inputs")
    parser.add_argument("--write-results", action="store_true", help="refresh the committed results (benchmarks/results/, figures/); without it a run writes to out/tightness/")
    parser.add_argument("--results", type=Path, default=None, help="folder for the CSV and markdown files (overrides the above)")
    parser.add_argument("--figures", type=Path, default=None, help="folder for the figures (default: beside the results)")
    parser.add_argument("--data", type=Path, default=SHARED / "data", help="data directory holding mnist/ (Figure 11)")
    parser.add_argument("--weights", type=Path, default=SHARED / "models" / "wong_kolter_2018" / "mnist.pth")
    args = parser.parse_args(argv)
    args.results = args.results or (RESULTS if args.write_results else ROOT / "out" / "tightness")
    args.figures = args.figures or (FIGURES if args.write_results else args.results)
    print(f"writing results to {args.results}" + (f" and figures to {args.figures}" if hasattr(args, "figures") else ""), flush=True)
    if args.figure11_images is None:
        args.figure11_images = 100 if args.full else 12
    start = time.perf_counter()
    studies = {"ranges": run_ranges, "margins": run_margins, "figure11": run_figure11}
    n_lps = sum(run(args) for name, run in studies.items() if args.only in (None, name))
    print(f"\nEvery LP lies between its dual bound and the sampled values ({n_lps} LPs). "
          f"Wrote {args.results.relative_to(ROOT) if args.results.is_relative_to(ROOT) else args.results}/tightness_*.csv "
          f"and the figures tightness_*.png in {time.perf_counter() - start:.1f} s.")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SoundnessError as err:
        print(f"\nSOUNDNESS VIOLATION: {err}", file=sys.stderr)
        sys.exit(1)
