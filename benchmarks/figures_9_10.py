"""Figures 9 and 10 of the paper: the robust MNIST model's learned filters, and its index sets over the training set.

Figure 9 (with Figure 8, Appendix B.2): the convolutional filters of the
paper's robust MNIST model (../shared/models/wong_kolter_2018/mnist.pth),
the 16 first-layer filters and all 32 × 16 second-layer kernels, on a
diverging colour map centred at 0. The paper finds them "highly sparse, and
some filters have all zero weights"; the sparsity is measured as the
fraction of weights with |w| below 10⁻³ (and 10⁻²) of the layer's largest
|w|, and the number of filters and of 4×4 kernels that lie entirely below it.

Figure 10: for every MNIST training image x, the bounds ℓ, u of Algorithm 1
(``lv.dual_bounds``, rigorous, over the ε = 0.1 ball) split each hidden
layer's units into I⁻ (u ≤ 0), I⁺ (ℓ ≥ 0) and the crossing set I (ℓ < 0 < u)
(``lpverify.relu.unit_states``); the histograms of the three counts per
layer (conv1 16×14×14, conv2 32×7×7, fc 100) form a 3 × 3 grid. The paper
reports more than half of the first layer's units in I⁻ with few crossing,
and about 90% of the third layer's in I⁻ with extremely few crossing.

Writes figures/figure9_filters.png, figures/figure10_index_sets.png and, under
benchmarks/results/, figure9_filters.csv (sparsity), figure10_index_sets.csv
(per layer and set: mean, median, min, max, fraction of units),
figure10_index_sets_per_image.csv.gz (the counts of every image) and
figure10_index_sets.md (the same summary beside the paper's statements).

    python benchmarks/figures_9_10.py            # all 60,000 training images
    python benchmarks/figures_9_10.py --n 1000   # the first 1000
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import lpverify as lv
from lpverify.data import load_mnist
from lpverify.io import atomic_write_bytes, atomic_write_text, write_csv
from lpverify.plots import save_figure
from lpverify.relu import UnitState, unit_states
from lpverify.zoo import INPUT_SHAPES, load_paper_model

ROOT = Path(__file__).resolve().parents[1]
RESULTS, FIGURES = ROOT / "benchmarks" / "results", ROOT / "figures"
SHARED = ROOT.parent / "shared"
SETS = (("negative", UnitState.OFF, "I⁻ (u ≤ 0)"), ("positive", UnitState.ON, "I⁺ (ℓ ≥ 0)"),
        ("crossing", UnitState.CROSSING, "I (ℓ < 0 < u)"))
THRESHOLDS = (1e-3, 1e-2)  # relative to the layer's largest |w|
PAPER_FIGURE10 = {  # Appendix B.2, on Figure 10
    0: "more than half of the units in I⁻, relatively few in I",
    1: "significantly more in I⁺ than in I⁻, comparably few in I",
    2: "90% of the units in I⁻, extremely few in I",
}


# -- Figure 9: filters --------------------------------------------------------------------------


def conv_weights(model: nn.Sequential) -> list[tuple[str, torch.Tensor]]:
    """(name, weight) of each convolution of the model, in order: conv1, conv2, ..."""
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    return [(f"conv{i + 1}", m.weight.detach().cpu().double()) for i, m in enumerate(convs)]


def filter_sparsity(name: str, weight: torch.Tensor, rel: float) -> dict[str, object]:
    """Sparsity of one convolution's weight (out, in, k, k) at the threshold rel · max|w|.

    ``zero_filters`` counts output channels whose weights all lie below the
    threshold, ``zero_kernels`` the k×k kernels (one per output and input channel).
    """
    scale = float(weight.abs().max())
    small = weight.abs() < rel * scale
    return {
        "layer": name,
        "shape": "×".join(map(str, weight.shape)),
        "max_abs": scale,
        "threshold_rel": rel,
        "frac_small": float(small.double().mean()),
        "zero_filters": int(small.flatten(1).all(1).sum()),
        "filters": weight.shape[0],
        "zero_kernels": int(small.flatten(2).all(2).sum()),
        "kernels": weight.shape[0] * weight.shape[1],
    }


def mosaic(kernels: torch.Tensor, gap: int = 1) -> np.ndarray:
    """Kernels (rows, cols, k, k) tiled into one image, separated by ``gap`` NaN pixels."""
    rows, cols, k, _ = kernels.shape
    out = np.full((rows * (k + gap) - gap, cols * (k + gap) - gap), np.nan)
    for r in range(rows):
        for c in range(cols):
            out[r * (k + gap): r * (k + gap) + k, c * (k + gap): c * (k + gap) + k] = kernels[r, c].numpy()
    return out


def plot_filters(weights: list[tuple[str, torch.Tensor]], sparsity: list[dict[str, object]], path: Path,
                 clip: float = 99.0) -> None:
    """Figures 8 and 9: conv1's 16 filters (2 × 8) above conv2's 16 × 32 kernels (rows: input channel, columns: filter).

    Each layer has its own linear colour scale, symmetric about 0 and clipped
    at the ``clip``-th percentile of its |w| (larger weights take the end
    colours), so that near-zero weights are white.
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize

    (name1, w1), (name2, w2) = weights[:2]
    panels = [(name1, w1[:, 0].reshape(2, -1, *w1.shape[2:])), (name2, w2.permute(1, 0, 2, 3))]
    tiles = [mosaic(kernels) for _, kernels in panels]
    ratios = [0.5 * tiles[0].shape[0] / tiles[0].shape[1], tiles[1].shape[0] / tiles[1].shape[1]]  # conv1 at half width
    fig, axes = plt.subplots(2, 1, figsize=(12, 1.4 + 10.5 * sum(ratios)), height_ratios=ratios)
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="0.3")
    for ax, (name, kernels), tile in zip(axes, panels, tiles):
        scale = float(np.percentile(kernels.abs().numpy(), clip))
        image = ax.imshow(tile, cmap=cmap, norm=Normalize(-scale, scale), interpolation="nearest")
        stats = {s["threshold_rel"]: s for s in sparsity if s["layer"] == name}
        fine, coarse = stats[THRESHOLDS[0]], stats[THRESHOLDS[1]]
        k = kernels.shape[-1]
        if name == name1:  # filters numbered row by row
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(f"filters 0–{kernels.shape[1] - 1} (top row), {kernels.shape[1]}–{2 * kernels.shape[1] - 1} (bottom)",
                          fontsize=8)
        else:
            ax.set_xticks(np.arange(kernels.shape[1]) * (k + 1) + (k - 1) / 2, np.arange(kernels.shape[1]), fontsize=6)
            ax.set_yticks(np.arange(kernels.shape[0]) * (k + 1) + (k - 1) / 2, np.arange(kernels.shape[0]), fontsize=6)
            ax.set_xlabel("filter (output channel)", fontsize=8)
            ax.set_ylabel("input channel", fontsize=8)
        ax.set_title(f"{name} ({fine['shape']})\nweights with |w| < 10⁻³·max|w|: {fine['frac_small']:.0%}, whole filters "
                     f"{fine['zero_filters']}/{fine['filters']}, 4×4 kernels {fine['zero_kernels']}/{fine['kernels']}; "
                     f"< 10⁻²·max|w|: {coarse['frac_small']:.0%}, {coarse['zero_filters']}/{coarse['filters']}, "
                     f"{coarse['zero_kernels']}/{coarse['kernels']}", fontsize=8.5)
        bar = fig.colorbar(image, ax=ax, fraction=0.03, pad=0.01, extend="both")
        bar.ax.tick_params(labelsize=6)
    fig.suptitle(f"Learned filters of the robust MNIST model (paper's weights); colour scale clipped at the "
                 f"{clip:g}th percentile of |w|", fontsize=10)
    save_figure(fig, path, dpi=110)


# -- Figure 10: index sets ----------------------------------------------------------------------


def hidden_layer_names(model: nn.Sequential) -> list[str]:
    """conv1, conv2, ..., fc1, ... for each affine layer followed by a ReLU."""
    names, counts = [], {"conv": 0, "fc": 0}
    layers = list(model)
    for m, nxt in zip(layers, layers[1:]):
        if isinstance(nxt, nn.ReLU) and isinstance(m, (nn.Conv2d, nn.Linear)):
            kind = "conv" if isinstance(m, nn.Conv2d) else "fc"
            counts[kind] += 1
            names.append(f"{kind}{counts[kind]}")
    return names


def set_masks(bounds: lv.Bounds) -> list[torch.Tensor]:
    """Per hidden layer, the membership of every unit in I⁻, I⁺ and I: bool (batch, units, 3)."""
    masks = []
    for lower, upper in bounds.hidden:
        states = unit_states(lower, upper).flatten(1)
        masks.append(torch.stack([states == int(s) for _, s, _ in SETS], 2))
    return masks


def index_set_counts(net: lv.Network, x: torch.Tensor, eps: float, batch: int,
                     progress: bool = True) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Index sets of Algorithm 1's bounds over the ε-ball of every image of x, in batches.

    Returns the counts per image, int64 (images, hidden layers, 3), and per
    hidden layer the number of images in which each unit is in each set,
    int64 (units, 3).
    """
    chunks, tallies, start = [], [], time.perf_counter()
    n_batches = (len(x) + batch - 1) // batch
    report = max(1, n_batches // 20)
    with torch.no_grad():
        for b, i in enumerate(range(0, len(x), batch)):
            masks = set_masks(lv.dual_bounds(net, lv.LinfBall(x[i: i + batch], eps)))
            chunks.append(torch.stack([m.sum(1) for m in masks], 1))
            batch_tallies = [m.sum(0) for m in masks]
            tallies = batch_tallies if not tallies else [t + u for t, u in zip(tallies, batch_tallies)]
            if progress and ((b + 1) % report == 0 or b + 1 == n_batches):
                done, elapsed = min(i + batch, len(x)), time.perf_counter() - start
                print(f"  {done:>6}/{len(x)} images, {elapsed:6.0f} s, "
                      f"about {elapsed / done * (len(x) - done):.0f} s left", flush=True)
    return torch.cat(chunks), tallies


def summarise(counts: torch.Tensor, tallies: list[torch.Tensor], names: list[str]) -> list[dict[str, object]]:
    """Per layer and set: mean, median, min and max count over the images, the mean fraction of the
    layer's units, and how many units are in the set for every image (``always``) and for some (``ever``)."""
    rows = []
    for layer, (name, tally) in enumerate(zip(names, tallies)):
        n_units = tally.shape[0]
        for k, (key, _, label) in enumerate(SETS):
            c = counts[:, layer, k].double().numpy()
            rows.append({"layer": name, "units": n_units, "set": key, "definition": label, "images": len(c),
                         "mean": float(c.mean()), "median": float(np.median(c)), "min": int(c.min()), "max": int(c.max()),
                         "fraction": float(c.mean()) / n_units, "always": int((tally[:, k] == len(c)).sum()),
                         "ever": int((tally[:, k] > 0).sum())})
    return rows


def per_image_rows(counts: torch.Tensor, labels: torch.Tensor, names: list[str]) -> tuple[list[str], list[list[int]]]:
    """Header and one row per image: index, label, then the three counts of each layer."""
    header = ["image", "label"] + [f"{name}_{key}" for name in names for key, _, _ in SETS]
    flat = counts.flatten(1).tolist()
    return header, [[i, int(y), *row] for i, (y, row) in enumerate(zip(labels.tolist(), flat))]


def write_csv_gz(path: Path, header: list[str], rows: list[list[int]]) -> Path:
    """A gzipped CSV, written atomically (mtime 0, so equal data give equal bytes)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return atomic_write_bytes(path, gzip.compress(buf.getvalue().encode(), mtime=0))


def plot_index_sets(counts: torch.Tensor, names: list[str], units: list[int], eps: float, path: Path) -> None:
    """Figure 10: rows are hidden layers, columns I⁻, I⁺, I; histograms of the counts over the images."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(names), len(SETS), figsize=(11, 2.6 * len(names)), squeeze=False)
    for layer, (name, n_units) in enumerate(zip(names, units)):
        for k, (_, _, label) in enumerate(SETS):
            ax, c = axes[layer][k], counts[:, layer, k].numpy()
            lo, hi = int(c.min()), int(c.max())
            width = -(-(hi - lo + 1) // 60)  # whole units per bin, at most 60 bins
            bins = np.arange(lo, hi + width + 1, width) - 0.5
            ax.hist(c, bins=bins, color=f"C{k}", alpha=0.85)
            ax.axvline(c.mean(), color="black", lw=1, ls="--")
            ax.set_title(f"{name} ({n_units} units): {label}\nmean {c.mean():.1f} ({c.mean() / n_units:.1%})", fontsize=9)
            ax.tick_params(labelsize=7)
            if layer == len(names) - 1:
                ax.set_xlabel("units in the set", fontsize=8)
        axes[layer][0].set_ylabel("images", fontsize=8)
    fig.suptitle(f"Index sets of Algorithm 1's bounds, robust MNIST model, ε = {eps}, {len(counts):,} training images",
                 fontsize=10)
    save_figure(fig, path, dpi=100)


def report(summary: list[dict[str, object]], sparsity: list[dict[str, object]], command: str, seconds: float,
           threads: int, dtype: torch.dtype) -> str:
    """Markdown: Figure 10's summary beside the paper's statements, and Figure 9's sparsity."""
    lines = [
        "# Figures 9 and 10: filters and index sets of the paper's robust MNIST model",
        "",
        f"Command: `{command}`; {threads} threads, {str(dtype).replace('torch.', '')}, "
        f"rigorous Algorithm 1 (`lv.dual_bounds`); {seconds:.0f} s wall time.",
        "",
        f"## Figure 10: units per set over {summary[0]['images']:,} training images (ε = 0.1)",
        "",
        "Means are per image; 'always' counts the units in the set for every image, 'ever I' those crossing for some.",
        "",
        "| layer | units | I⁻ mean (frac.) | I⁺ mean (frac.) | I mean (frac.) | I median [min, max] "
        "| always I⁻ / I⁺ | ever I | paper |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    layers = list(dict.fromkeys(r["layer"] for r in summary))
    for i, name in enumerate(layers):
        cells = {r["set"]: r for r in summary if r["layer"] == name}
        mean = [f"{cells[k]['mean']:.1f} ({cells[k]['fraction']:.1%})" for k, _, _ in SETS]
        cross = cells["crossing"]
        lines.append(f"| {name} | {cross['units']} | {' | '.join(mean)} | {cross['median']:g} [{cross['min']}, {cross['max']}] "
                     f"| {cells['negative']['always']} / {cells['positive']['always']} | {cross['ever']} "
                     f"| {PAPER_FIGURE10.get(i, '')} |")
    lines += ["", "## Figure 9: sparsity of the convolutional weights", "",
              "| layer | shape | max abs | threshold (× max) | weights below | all-zero filters | all-zero 4×4 kernels |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for s in sparsity:
        lines.append(f"| {s['layer']} | {s['shape']} | {s['max_abs']:.3g} | {s['threshold_rel']:g} | {s['frac_small']:.1%} "
                     f"| {s['zero_filters']} / {s['filters']} | {s['zero_kernels']} / {s['kernels']} |")
    return "\n".join(lines) + "\n"


# -- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=SHARED / "data", help="data directory holding mnist/")
    parser.add_argument("--weights", type=Path, default=SHARED / "models" / "wong_kolter_2018" / "mnist.pth")
    parser.add_argument("--n", type=int, default=None, help="first n training images (default: all 60,000)")
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--batch", type=int, default=200, help="images per call of dual_bounds")
    parser.add_argument("--float64", action="store_true", help="bounds in float64 (default: float32, the data's dtype)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--write-results", action="store_true", help="refresh the committed results (benchmarks/results/, figures/); without it a run writes to out/figures_9_10/")
    parser.add_argument("--results", type=Path, default=None, help="folder for the CSV and markdown files (overrides the above)")
    parser.add_argument("--figures", type=Path, default=None, help="folder for the figures (default: beside the results)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    args.results = args.results or (RESULTS if args.write_results else ROOT / "out" / "figures_9_10")
    args.figures = args.figures or (FIGURES if args.write_results else args.results)
    print(f"writing results to {args.results}" + (f" and figures to {args.figures}" if hasattr(args, "figures") else ""), flush=True)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    mnist = args.data / "mnist"
    if not mnist.is_dir() or not args.weights.is_file():
        print(f"needs {mnist} and {args.weights} (pass --data and --weights)", file=sys.stderr)
        return 2

    model = load_paper_model("mnist", args.weights)
    dtype = torch.float64 if args.float64 else torch.float32
    net = lv.Network.from_torch(model.to(dtype), input_shape=INPUT_SHAPES["mnist"])

    # Figure 9.
    weights = conv_weights(model)
    sparsity = [filter_sparsity(name, w, rel) for name, w in weights for rel in THRESHOLDS]
    write_csv(args.results / "figure9_filters.csv", sparsity, list(sparsity[0]))
    plot_filters(weights, sparsity, args.figures / "figure9_filters.png")
    for s in sparsity:
        print(f"{s['layer']} {s['shape']}: {s['frac_small']:.1%} of |w| < {s['threshold_rel']:g}·max|w| "
              f"({s['max_abs']:.3g}); all-zero filters {s['zero_filters']}/{s['filters']}, "
              f"4×4 kernels {s['zero_kernels']}/{s['kernels']}")

    # Figure 10.
    x, y = load_mnist(mnist, "train")
    n = len(y) if args.n is None else min(args.n, len(y))
    x, y = x[:n].to(dtype), y[:n]
    names = hidden_layer_names(model)
    print(f"\nAlgorithm 1 on {n:,} training images, ε = {args.eps}, batches of {args.batch}, {args.threads} threads", flush=True)
    counts, tallies = index_set_counts(net, x, args.eps, args.batch, progress=not args.quiet)
    units = [block.out_features for block in net.blocks[:-1]]
    if len(names) != counts.shape[1] or not bool((counts.sum(2) == torch.tensor(units)).all()):
        raise AssertionError("the three sets do not partition each hidden layer")
    summary = summarise(counts, tallies, names)
    seconds = time.perf_counter() - start
    write_csv(args.results / "figure10_index_sets.csv", summary, list(summary[0]))
    write_csv_gz(args.results / "figure10_index_sets_per_image.csv.gz", *per_image_rows(counts, y, names))
    plot_index_sets(counts, names, units, args.eps, args.figures / "figure10_index_sets.png")
    command = "python benchmarks/figures_9_10.py" + ("" if args.n is None else f" --n {args.n}") + (
        " --float64" if args.float64 else "")
    text = report(summary, sparsity, command, seconds, args.threads, dtype)
    atomic_write_text(args.results / "figure10_index_sets.md", text)
    print("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
