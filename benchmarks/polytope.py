"""Figures 6 and 7: true and convex outer adversarial polytopes in a 2D output space.

A 3 × 4 grid: ε = 0.05, 0.1, 0.25 (rows) by four random 2-100-100-100-100-2
networks (columns; weights N(0, 1/√n_in), biases N(0, 1), input x uniform in
[0, 1]²). Each panel shows the true set f(B(x)) (the image of a dense grid of
the input box, filled), the LP's outer polygon (its support function in many
directions), the dual network's outer polygon, and the interval box where it
fits the view. Figure 7: the same at the 12 points of the 2D toy problem
(Appendix B.1, ε = 0.08) for a network trained robustly (full-batch Adam on
the robust loss). Writes benchmarks/results/polytope.csv, figures/polytope.png
and figures/polytope_toy.png; fails if a support value breaks the nesting
sampled ≤ LP ≤ dual.

    python benchmarks/polytope.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

import lpverify as lv
from lpverify import polytope as P
from lpverify.data import toy_2d
from lpverify.io import write_csv
from lpverify.plots import draw_polytope, save_figure
from lpverify.train import train_full_batch

ROOT = Path(__file__).resolve().parents[1]
EPSILONS = (0.05, 0.1, 0.25)
TOL = 1e-6


def panel(net: lv.Network, x: torch.Tensor, eps: float, n_dirs: int, grid: int) -> dict:
    ball = lv.LinfBall(x, eps)
    with torch.no_grad():
        bounds = lv.dual_bounds(net, ball)
        interval = lv.interval_bounds(net, ball)
        center = net(x)[0].double().numpy()
    dirs = P.directions(n_dirs)
    image = P.sampled_image(net, ball, grid)
    h_true, h_lp, h_dual = image.support(dirs), P.support_lp(net, ball, bounds, dirs), P.support_dual(net, ball, bounds, dirs)
    if not ((h_true <= h_lp + TOL).all() and (h_lp <= h_dual + TOL).all()):
        raise AssertionError(f"ε={eps}: the support values break sampled ≤ LP ≤ dual")
    lo, hi = interval.lower[-1][0].numpy(), interval.upper[-1][0].numpy()
    return {
        "cells": image.cells(),
        "lp": P.polygon(dirs, h_lp, center),
        "dual": P.polygon(dirs, h_dual, center),
        "box": ((float(lo[0]), float(hi[0])), (float(lo[1]), float(hi[1]))),
        "rows": [{"eps": eps, "angle": float(np.arctan2(d[1], d[0])), "sampled": t, "lp": l, "dual": u}
                 for d, t, l, u in zip(dirs, h_true, h_lp, h_dual)],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--networks", type=int, default=4)
    parser.add_argument("--directions", type=int, default=64)
    parser.add_argument("--grid", type=int, default=200, help="grid points per input dimension")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--toy-steps", type=int, default=3000, help="robust training steps of the 2D toy network")
    parser.add_argument("--write-results", action="store_true", help="refresh the committed results (benchmarks/results/, figures/); without it a run writes to out/polytope/")
    parser.add_argument("--results", type=Path, default=None, help="folder for the CSV and markdown files (overrides the above)")
    parser.add_argument("--figures", type=Path, default=None, help="folder for the figures (default: beside the results)")
    args = parser.parse_args(argv)
    args.results = args.results or (ROOT / "benchmarks" / "results" if args.write_results else ROOT / "out" / "polytope")
    args.figures = args.figures or (ROOT / "figures" if args.write_results else args.results)
    print(f"writing results to {args.results}" + (f" and figures to {args.figures}" if hasattr(args, "figures") else ""), flush=True)
    import matplotlib.pyplot as plt

    start = time.perf_counter()
    fig, axes = plt.subplots(len(EPSILONS), args.networks, figsize=(3.2 * args.networks, 3.0 * len(EPSILONS)), squeeze=False)
    rows = []
    for j in range(args.networks):
        net = lv.Network.from_torch(lv.zoo.random_mlp([2, 100, 100, 100, 100, 2], args.seed + j))
        x = torch.rand(1, 2, generator=torch.Generator().manual_seed(args.seed + j), dtype=torch.float64)
        for i, eps in enumerate(EPSILONS):
            p = panel(net, x, eps, args.directions, args.grid)
            draw_polytope(axes[i][j], p["cells"], p["lp"], p["dual"], p["box"])
            rows += [{"network": j, **r} for r in p["rows"]]
            if j == 0:
                axes[i][j].set_ylabel(f"ε = {eps}")
    axes[0][0].legend(fontsize=7, loc="upper left")
    fig.suptitle("Adversarial polytopes of random 2-100-100-100-100-2 networks: true (grey), LP (blue), dual (orange)")
    save_figure(fig, args.figures / "polytope.png", dpi=100)

    # Figure 7: the robustly trained 2D toy network, at each of its 12 points.
    x_toy, y_toy = toy_2d(12, 0.16, seed=4)
    toy = lv.zoo.toy_2d_network(args.seed)
    train_full_batch(toy, x_toy, y_toy, robust=True, eps=0.08, steps=args.toy_steps, log_every=args.toy_steps)
    net = lv.Network.from_torch(toy)
    fig, axes = plt.subplots(3, 4, figsize=(12.8, 9.0), squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        p = panel(net, x_toy[k : k + 1].double(), 0.08, args.directions, args.grid)
        draw_polytope(ax, p["cells"], p["lp"], p["dual"], p["box"])
        ax.plot([-1e9, 1e9], [-1e9, 1e9], color="0.3", lw=0.6, ls=":")  # the decision boundary f_1 = f_2
        ax.set_title(f"point {k}, label {int(y_toy[k])}", fontsize=9)
        rows += [{"network": "toy", **r} for r in p["rows"]]
    fig.suptitle(f"Robustly trained 2D toy network ({args.toy_steps} steps), ε = 0.08: output polytopes of its 12 points; "
                 "dotted: f_1 = f_2")
    save_figure(fig, args.figures / "polytope_toy.png", dpi=100)
    write_csv(args.results / "polytope.csv", rows, list(rows[0]))
    print(f"{len(rows)} support values (LP and dual) over {args.networks * len(EPSILONS) + 12} panels in "
          f"{time.perf_counter() - start:.1f} s; sampled ≤ LP ≤ dual holds in every direction")
    return 0


if __name__ == "__main__":
    sys.exit(main())
