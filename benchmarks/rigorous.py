"""What the rigorous (outward-rounded) certificates cost, and whether they change any verdict.

On the paper's robust MNIST weights (ε = 0.1, no clamp, as in Table 1) the
same images are certified three ways, alternating, best of ``--repeats``:

* plain: Algorithm 1 and Theorem 1 in float32, no rounding allowance
  (what lpverify did before; what training uses);
* rigorous: the default of ``lv.certify``: float32 bounds widened by their
  rounding error, the margins' dual walk in float64, float64 again for the
  examples the float32 allowance leaves undecided (SOUNDNESS.md);
* rigorous float64: everything in float64, the reference "exact" verdicts
  (the rounding allowance is ~1e-13 of the magnitudes).

It prints a table (time, uncertified count, overhead) and lists every image
whose verdict differs between plain and rigorous with its worst margin bound.
``--write`` saves the table to ``benchmarks/results/rigorous.md``.

    python benchmarks/rigorous.py --n 10000 --write
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lpverify as lv  # noqa: E402
from lpverify.certify import _worst_margin, correctly_classified  # noqa: E402
from lpverify.data import load_mnist  # noqa: E402
from lpverify.io import atomic_write_text  # noqa: E402
from lpverify.zoo import paper_network  # noqa: E402

SHARED = ROOT.parent / "shared"


def plain_certify(net: lv.Network, x: torch.Tensor, y: torch.Tensor, eps: float, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Certified (strict > 0, correct prediction) and the worst margin, without any rounding allowance."""
    ok, worst = [], []
    with torch.no_grad():
        for i in range(0, len(y), batch):
            J = lv.margin_bounds(net, lv.LinfBall(x[i : i + batch], eps), y[i : i + batch], rigorous=False)
            w = _worst_margin(J, y[i : i + batch])
            worst.append(w.double())
            ok.append((w > 0) & correctly_classified(net, x[i : i + batch], y[i : i + batch]))
    return torch.cat(ok), torch.cat(worst)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=SHARED / "data" / "mnist")
    parser.add_argument("--weights", type=Path, default=SHARED / "models" / "wong_kolter_2018" / "mnist.pth")
    parser.add_argument("--n", type=int, default=1000, help="first n test images (default 1000; the full set is 10000)")
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--batch", type=int, default=32, help="examples per certify chunk (lv.certify's default)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-float64", action="store_true", help="skip the all-float64 reference")
    parser.add_argument("--write-results", "--write", dest="write", action="store_true",
                        help="refresh the committed benchmarks/results/rigorous.md (--write is the older name)")
    args = parser.parse_args(argv)
    if args.n < 1 or args.repeats < 1:
        parser.error("--n and --repeats must be >= 1")
    torch.set_num_threads(args.threads)

    net = paper_network("mnist", args.weights)
    x, y = load_mnist(args.data, "test")
    x, y = x[: args.n], y[: args.n]
    best = {"plain": float("inf"), "rigorous": float("inf")}
    for _ in range(args.repeats):  # alternate, keep the best time of each
        (plain_ok, plain_worst), t = timed(lambda: plain_certify(net, x, y, args.eps, args.batch))
        best["plain"] = min(best["plain"], t)
        rig_ok, t = timed(lambda: lv.certify(net, x, y, args.eps, batch_size=args.batch))
        best["rigorous"] = min(best["rigorous"], t)
    rows = [("plain float32 (no allowance)", best["plain"], int((~plain_ok).sum())),
            ("rigorous (default)", best["rigorous"], int((~rig_ok).sum()))]
    if not args.skip_float64:
        ref_ok, t = timed(lambda: lv.certify(net, x.double(), y, args.eps, batch_size=args.batch))
        rows.append(("rigorous float64 (reference)", t, int((~ref_ok).sum())))

    lines = [
        "# Rigorous certificates: cost and verdicts",
        "",
        f"Command: `python benchmarks/rigorous.py --n {args.n}` ({args.threads} threads, batch {args.batch}, "
        f"best of {args.repeats}). Paper's robust MNIST weights, ε = {args.eps:g}, no clamp.",
        "",
        "| mode | seconds | images/s | not certified | time vs plain |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, seconds, bad in rows:
        lines.append(f"| {name} | {seconds:.1f} | {args.n / seconds:.1f} | {bad} / {args.n} | {seconds / best['plain']:.2f}× |")
    differ = torch.nonzero(plain_ok != rig_ok).view(-1).tolist()
    lines += ["", f"Images whose verdict differs between plain and rigorous: {len(differ)}."]
    for i in differ:
        lines.append(f"- image {i}: plain worst margin bound {float(plain_worst[i]):.3e}, "
                     f"plain {'certified' if plain_ok[i] else 'not certified'}, rigorous "
                     f"{'certified' if rig_ok[i] else 'not certified'}")
    if not args.skip_float64:
        lines.append(f"Verdicts identical to the float64 reference: {bool((ref_ok == rig_ok).all())}.")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        atomic_write_text(ROOT / "benchmarks" / "results" / "rigorous.md", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
