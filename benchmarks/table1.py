"""Table 1 of the paper: test error, FGSM, PGD and robust error bound, measured beside the paper's figures.

Rows:
* "robust": the paper's own weights (../shared/models/wong_kolter_2018) on the
  full test sets of MNIST and Fashion-MNIST, ε = 0.1, no [0, 1] clamp;
* "standard": a model of the same architecture trained normally by this
  script (a few epochs of Adam, lr 1e-3, batch 50), cached under
  benchmarks/results/models/.
HAR and SVHN rows need feature data that is not in the shared folder; they
run when a user supplies it (``--data``) and are reported as unavailable
otherwise.

FGSM and PGD follow the paper (MATH.md §9: PGD is 100 steps of 0.01 from x).
Attack errors are lower bounds on the true robust error and the certified
error an upper bound; the script fails if an attack beats a certificate.

    python benchmarks/table1.py                    # full test sets
    python benchmarks/table1.py --n 1000           # first 1000 test images
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

import lpverify as lv
from lpverify.plots import save_figure
from lpverify.data import data_dir, load_dataset
from lpverify.io import atomic_write_text, write_csv
from lpverify.schedule import Loss
from lpverify.train import TrainConfig, fit_paper_model
from lpverify.zoo import INPUT_SHAPES, load_paper_model

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
MODELS = ROOT / "benchmarks" / "results" / "models"  # trained here; not committed
PAPER = {  # (problem, robust?) → (ε, test, FGSM, PGD, robust bound) in %, Table 1
    ("mnist", False): (0.1, 1.07, 50.01, 81.68, 100.0),
    ("mnist", True): (0.1, 1.80, 3.93, 4.11, 5.82),
    ("fashion_mnist", False): (0.1, 9.36, 77.98, 81.85, 100.0),
    ("fashion_mnist", True): (0.1, 21.73, 31.25, 31.63, 34.53),
    ("har", False): (0.05, 4.95, 60.57, 63.82, 81.56),
    ("har", True): (0.05, 7.80, 21.49, 21.52, 21.90),
    ("svhn", False): (0.01, 16.01, 62.21, 83.43, 100.0),
    ("svhn", True): (0.01, 20.38, 33.28, 33.74, 40.67),
}


@dataclass(frozen=True)
class Row:
    problem: str
    robust: bool
    eps: float
    n_test: int
    test_err: float
    fgsm_err: float
    pgd_err: float
    robust_bound: float
    n_bound: int
    seconds: float


def measure(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, n_bound: int, batch: int = 500) -> dict:
    """Error rates (%) of the model: clean, FGSM, PGD, and the certified robust error bound on the first n_bound."""
    model.eval()
    clean = lv.attack_error(model, x, y)
    fgsm = torch.cat([lv.attack_error(model, lv.fgsm(model, x[i : i + batch], y[i : i + batch], eps), y[i : i + batch])
                      for i in range(0, len(y), batch)])
    pgd = torch.cat([lv.attack_error(model, lv.pgd(model, x[i : i + batch], y[i : i + batch], eps), y[i : i + batch])
                     for i in range(0, len(y), batch)])
    certified = lv.certify(model, x[:n_bound], y[:n_bound], eps)
    broken = certified & (pgd[:n_bound] | fgsm[:n_bound])
    if broken.any():
        raise AssertionError(f"an attack broke a certificate: examples {broken.nonzero().flatten().tolist()}")
    return {
        "test_err": 100 * float(clean.float().mean()),
        "fgsm_err": 100 * float(fgsm.float().mean()),
        "pgd_err": 100 * float(pgd.float().mean()),
        "robust_bound": 100 * float((~certified).float().mean()),
        "n_bound": n_bound,
    }


def standard_model(problem: str, root: Path, epochs: int, seed: int) -> torch.nn.Module:
    """A normally trained model of the paper's architecture (cached: a rerun resumes or reuses it)."""
    config = TrainConfig(epochs=epochs, loss=Loss.STANDARD, lr_steps=(), seed=seed, test_robust_examples=0)
    model, _ = fit_paper_model(problem, config, MODELS / f"standard_{problem}", root=root, progress=False)
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="data directory (default: $LPVERIFY_DATA, ../shared/data, ./data)")
    parser.add_argument("--weights", type=Path, default=SHARED / "models" / "wong_kolter_2018")
    parser.add_argument("--n", type=int, default=None, help="test images per problem (default: all)")
    parser.add_argument("--bound-n-standard", type=int, default=1000,
                        help="test images certified for the standard models, whose bounds are slow and all ~100%%")
    parser.add_argument("--standard-epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--problems", nargs="+", default=["mnist", "fashion_mnist", "har", "svhn"])
    parser.add_argument("--write-results", action="store_true", help="refresh the committed results (benchmarks/results/, figures/); without it a run writes to out/table1/")
    parser.add_argument("--out", type=Path, default=None, help="folder for the table (overrides the above)")
    parser.add_argument("--figure", type=Path, default=None, help="the figure file (default: beside the table)")
    args = parser.parse_args(argv)
    args.out = args.out or (ROOT / "benchmarks" / "results" if args.write_results else ROOT / "out" / "table1")
    args.figure = args.figure or (ROOT / "figures" / "table1.png" if args.write_results else args.out / "table1.png")
    print(f"writing results to {args.out} and the figure to {args.figure}", flush=True)
    root = default_root(args.data)
    torch.set_num_threads(2)

    rows: list[Row] = []
    missing: list[str] = []
    for problem in args.problems:
        try:
            x, y = load_dataset(problem, "test", root)
        except (FileNotFoundError, ValueError) as err:
            missing.append(f"{problem}: feature data not available here ({err})".replace(str(ROOT.parent) + "/", "../"))
            print(f"{problem}: skipped, feature data not available ({err})", flush=True)
            continue
        n = len(y) if args.n is None else min(args.n, len(y))
        x, y = x[:n], y[:n]
        for robust in (False, True):
            eps = PAPER[(problem, robust)][0]
            start = time.perf_counter()
            if robust:
                model = load_paper_model(problem, args.weights / f"{problem}.pth")
                n_bound = n
            else:
                model = standard_model(problem, root, args.standard_epochs, args.seed)
                n_bound = min(n, args.bound_n_standard)
            m = measure(model, x.reshape(n, *INPUT_SHAPES[problem]), y, eps, n_bound)
            rows.append(Row(problem, robust, eps, n, seconds=time.perf_counter() - start, **m))
            r = rows[-1]
            print(f"{problem:<14}{'robust' if robust else 'standard':<9} test {r.test_err:6.2f}%  FGSM {r.fgsm_err:6.2f}%  "
                  f"PGD {r.pgd_err:6.2f}%  bound {r.robust_bound:6.2f}% (n={r.n_bound})  {r.seconds:.0f} s", flush=True)

    lines = [
        "# Table 1: error rates (%) at the paper's ε, measured (paper's figure in parentheses)",
        "",
        f"Command: `python benchmarks/table1.py{'' if args.n is None else f' --n {args.n}'}`; 2 threads. "
        "Robust rows: the paper's weights; standard rows: trained here "
        f"({args.standard_epochs} epochs of Adam, lr 1e-3, batch 50, seed {args.seed}).",
        "",
        "| problem | robust | ε | test images | test error | FGSM | PGD | robust bound |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        p = PAPER[(r.problem, r.robust)]
        bound_note = "" if r.n_bound == r.n_test else f" (first {r.n_bound})"
        lines.append(
            f"| {r.problem} | {'yes' if r.robust else 'no'} | {r.eps} | {r.n_test} | {r.test_err:.2f} ({p[1]:.2f}) | "
            f"{r.fgsm_err:.2f} ({p[2]:.2f}) | {r.pgd_err:.2f} ({p[3]:.2f}) | {r.robust_bound:.2f}{bound_note} ({p[4]:.2f}) |"
        )
    lines += ["", *[f"- {m}" for m in missing], ""]
    text = "\n".join(lines)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "table1.md", text)
    if rows:
        write_csv(args.out / "table1.csv", [asdict(r) for r in rows], list(Row.__dataclass_fields__))
        plot(rows, args.figure)
    print("\n" + text)
    return 0


def default_root(given: Path | None) -> Path:
    """--data, else $LPVERIFY_DATA, else the shared folder beside the checkout, else ./data."""
    import os

    if given is not None or os.environ.get("LPVERIFY_DATA"):
        return data_dir(given)
    return SHARED / "data" if (SHARED / "data").is_dir() else data_dir()


def plot(rows: list[Row], path: Path) -> None:
    import matplotlib.pyplot as plt
    import numpy as np

    columns = [("test_err", 1, "test"), ("fgsm_err", 2, "FGSM"), ("pgd_err", 3, "PGD"), ("robust_bound", 4, "bound")]
    fig, axes = plt.subplots(1, len(rows), figsize=(3.2 * len(rows), 3.2), squeeze=False)
    for ax, r in zip(axes[0], rows):
        paper = PAPER[(r.problem, r.robust)]
        pos = np.arange(len(columns))
        ax.bar(pos - 0.2, [getattr(r, c) for c, _, _ in columns], 0.4, label="lpverify")
        ax.bar(pos + 0.2, [paper[i] for _, i, _ in columns], 0.4, label="paper")
        ax.set_xticks(pos, [name for _, _, name in columns])
        ax.set_ylim(0, 105)
        ax.set_title(f"{r.problem}, {'robust' if r.robust else 'standard'}")
    axes[0][0].set_ylabel("error (%)")
    axes[0][0].legend(fontsize=8)
    save_figure(fig, path, dpi=100)


if __name__ == "__main__":
    sys.exit(main())
