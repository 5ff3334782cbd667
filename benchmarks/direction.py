"""Algorithm 1 per layer forwards or backwards: where each layer's bounds are cheaper, and what it saves.

Algorithm 1 pushes its columns (the input identity and one column per
crossing unit) forwards; from the layer on where walking the layer's 2·n
unit objectives back through the blocks before it costs less
(:func:`lpverify.dual._backward_cheaper`), it walks back instead
(:mod:`lpverify.backward`). Per network this script runs the certification
bounds (Algorithm 1 and J of the nine margins, rigorous, ε as given) on the
same test images twice, forwards only and with the automatic choice, in
alternating rounds (best of ``--repeats``), and reports the block it hands
over at, the time per example, the ratio and whether the certificates agree.

Networks: the paper's MNIST and HAR models (forwards throughout, the
automatic choice costs nothing), VNN-COMP's mnist_fc 256×6, and a
bottleneck (784 → 16 → 1000 → 10, trained 2 epochs normally; its last layer
is narrow after a wide one).

    python benchmarks/direction.py                 # 500 images, 2 threads
    python benchmarks/direction.py --write         # benchmarks/results/direction.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))

import lpverify as lv  # noqa: E402
from lpverify import backward, dual  # noqa: E402
from lpverify.data import load_dataset  # noqa: E402


def bottleneck(x: torch.Tensor, y: torch.Tensor) -> nn.Sequential:
    """784 → 16 → 1000 → 10, two epochs of plain training on the given images (seeded)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.ReLU(), nn.Linear(16, 1000), nn.ReLU(), nn.Linear(1000, 10))
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    for _ in range(2):
        for i in range(0, len(y), 100):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[i : i + 100]), y[i : i + 100]).backward()
            opt.step()
    return model


def networks(data: Path) -> dict[str, tuple[lv.Network, torch.Tensor, torch.Tensor, float]]:
    """name → (network, test images, labels, ε)."""
    from lpverify.onnx_import import load_onnx
    from lpverify.zoo import paper_network

    x, y = load_dataset("mnist", "test", data)
    xt, yt = load_dataset("mnist", "train", data)
    weights = SHARED / "models" / "wong_kolter_2018"
    out = {
        "paper MNIST (conv)": (paper_network("mnist", weights / "mnist.pth"), x.reshape(-1, 1, 28, 28), y, 0.1),
        "bottleneck 784-16-1000-10": (lv.Network.from_torch(bottleneck(xt[:20000].reshape(-1, 784), yt[:20000]),
                                                            input_shape=(1, 28, 28)), x.reshape(-1, 1, 28, 28), y, 0.02),
        "mnist_fc 256x6 (VNN-COMP)": (load_onnx(data / "vnncomp" / "mnist_fc" / "onnx" / "mnist-net_256x6.onnx.gz"),
                                      x.reshape(-1, 1, 28, 28), y, 0.02),
    }
    return out


def measure(net: lv.Network, x: torch.Tensor, y: torch.Tensor, eps: float, auto: bool) -> tuple[float, torch.Tensor, list[int]]:
    """Seconds per example of :func:`lpverify.certify` and its verdicts, with the handover blocks seen."""
    seen: list[int] = []
    original = backward.backward_from

    def spy(net, ball, lower, upper, *args, **kwargs):
        seen.append(len(lower))
        return original(net, ball, lower, upper, *args, **kwargs)

    dual.AUTO_DIRECTION, backward.backward_from = auto, spy
    try:
        start = time.perf_counter()
        verdicts = lv.certify(net, x.reshape(len(y), *net.input_shape), y, eps)
        return (time.perf_counter() - start) / len(y), verdicts, sorted(set(seen))
    finally:
        dual.AUTO_DIRECTION, backward.backward_from = True, original


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=500, help="test images per network")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--data", type=Path, default=SHARED / "data")
    parser.add_argument("--write-results", "--write", dest="write", action="store_true",
                        help="write benchmarks/results/direction.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    lines = [
        "# Algorithm 1 forwards, or backwards from the layer where that is cheaper",
        "",
        f"`python benchmarks/direction.py --n {args.n} --threads {args.threads} --repeats {args.repeats}`: "
        f"`lpverify.certify` (rigorous) on the first {args.n} MNIST test images, forwards only against the automatic "
        "choice (the default), best of alternating rounds. Handover: the block from which the layers are bounded by "
        "backward walks (— : forwards throughout).",
        "",
        "| network | ε | handover | forwards only, ms/example | automatic, ms/example | speed-up | certified | same certificates |",
        "|---|---:|---|---:|---:|---:|---:|---|",
    ]
    for name, (net, x, y, eps) in networks(args.data).items():
        x, y = x[: args.n], y[: args.n]
        best = {True: float("inf"), False: float("inf")}
        verdicts, seen = {}, []
        for _ in range(args.repeats):
            for auto in (False, True):
                seconds, verdicts[auto], s = measure(net, x, y, eps, auto)
                best[auto] = min(best[auto], seconds)
                seen = s if auto else seen
        same = torch.equal(verdicts[True], verdicts[False])
        handover = ", ".join(f"block {b}" for b in seen) or "—"
        lines.append(f"| {name} | {eps} | {handover} | {1e3 * best[False]:.2f} | {1e3 * best[True]:.2f} | "
                     f"{best[False] / best[True]:.2f}× | {int(verdicts[True].sum())} / {len(y)} | {'yes' if same else 'NO'} |")
        print(lines[-1], flush=True)
        if not same:
            print(f"{name}: the certificates differ", file=sys.stderr)
    lines.append("")
    text = "\n".join(lines)
    print("\n" + text)
    if args.write:
        from lpverify.io import atomic_write_text

        atomic_write_text(ROOT / "benchmarks" / "results" / "direction.md", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
