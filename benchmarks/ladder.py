"""The ladder of bounds: certified robust error by every method, on the same networks and numbers.

For each network, at its ε, on a slice of test images, the robust error
certified by

    interval ≤? dual ≤ dual-opt ≤ LP ≤ LP-all ≤ MILP (exact)

beside the PGD error (a lower bound on the true robust error), with the mean
time per example of each method. An example counts as robust for a method
when it is classified correctly and every margin ``f_y − f_t`` (t ≠ y) has a
bound > 0. The MILP runs on the examples that LP-all leaves open (the others
are proven already); its unknowns (time limit) are reported as a range.

Every example is checked against the chain the theory guarantees: each
margin's bound grows from dual to dual-opt to LP to LP-all, no certified
example is broken by PGD, and every MILP counterexample lies in the ball and
violates a margin. The script exits 1 otherwise.

Networks: the paper's MNIST model at ε = 0.1 (known figures on the full test
set: dual 5.82%, PGD 4.11%, exact MILP 4.38% as reported by the MIPVerify
authors), and the VNN-COMP 2022 MNIST 256×2 network at ε = 0.02 (pixels in
[0, 1], clamped).

    python benchmarks/ladder.py            # first 100 test images, minutes
    python benchmarks/ladder.py --full     # all 10,000 (hours)
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

import lpverify as lv
from lpverify.data import load_dataset
from lpverify.io import atomic_write_text, write_csv
from lpverify.milp import forward64
from lpverify.verify import objective_bounds, verify
from lpverify.zoo import paper_network

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
RELAXATIONS = ("interval", "dual", "dual-opt", "lp", "lp-all")
KNOWN = {  # full MNIST test set, the paper's model, ε = 0.1 (%)
    "pgd": ("4.11", "Table 1"),
    "dual": ("5.82", "Table 1"),
    "milp": ("4.38", "MIPVerify (Tjeng et al., 2019)"),
}


@dataclass(frozen=True)
class Case:
    name: str
    net: lv.Network
    x: torch.Tensor
    y: torch.Tensor
    eps: float
    lower: float | None = None
    upper: float | None = None

    def ball(self, sl: slice) -> lv.LinfBall:
        return lv.LinfBall(self.x[sl], self.eps, self.lower, self.upper)


def run_case(case: Case, *, chunk: int, milp_time: float, alpha_steps: int) -> tuple[list[dict], list[str]]:
    """The ladder on one case: rows of the table and the list of broken invariants."""
    n = len(case.y)
    correct = lv.predict(case.net, case.x) == case.y
    c = lv.robustness_objectives(case.y, case.net.n_outputs).to(case.x)
    lows: dict[str, torch.Tensor] = {}
    seconds: dict[str, float] = {}
    for method in RELAXATIONS:
        start = time.perf_counter()
        parts = [objective_bounds(case.net, case.ball(slice(i, i + chunk)), c[i : i + chunk], method,
                                  alpha_steps=alpha_steps).detach().cpu().double()
                 for i in tqdm(range(0, n, chunk), desc=f"{case.name}: {method}", leave=False)]
        lows[method] = torch.cat(parts)
        seconds[method] = (time.perf_counter() - start) / n
    certified = {m: correct & (lows[m] > 0).all(1) for m in RELAXATIONS}

    start = time.perf_counter()
    x_adv = lv.pgd(case.net, case.x, case.y, case.eps, lower=case.lower, upper=case.upper)
    broken = lv.attack_error(case.net, x_adv, case.y)
    seconds["pgd"] = (time.perf_counter() - start) / n

    open_ = (correct & ~certified["lp-all"]).nonzero().flatten().tolist()
    milp = {i: verify(case.net, case.ball(slice(i, i + 1)), c[i : i + 1], method="milp", time_limit=milp_time)[0]
            for i in tqdm(open_, desc=f"{case.name}: milp", leave=False)}
    seconds["milp"] = sum(v.time for v in milp.values()) / max(1, len(milp))
    violated = sum(v.status == "violated" for v in milp.values())
    unknown = sum(v.status == "unknown" for v in milp.values())

    problems = _check_chain(case, lows, certified, broken, milp)
    wrong = int((~correct).sum())
    rows = [{"network": case.name, "eps": case.eps, "n": n, "method": m,
             "robust_error": 100 * float((~certified[m]).float().mean()), "robust_error_high": math.nan,
             "seconds_per_example": seconds[m], "examples_timed": n} for m in RELAXATIONS]
    rows.append({"network": case.name, "eps": case.eps, "n": n, "method": "milp",
                 "robust_error": 100 * (wrong + violated) / n, "robust_error_high": 100 * (wrong + violated + unknown) / n,
                 "seconds_per_example": seconds["milp"], "examples_timed": len(milp)})
    rows.append({"network": case.name, "eps": case.eps, "n": n, "method": "pgd",
                 "robust_error": 100 * float(broken.float().mean()), "robust_error_high": math.nan,
                 "seconds_per_example": seconds["pgd"], "examples_timed": n})
    return rows, problems


def _check_chain(case: Case, lows: dict, certified: dict, broken: torch.Tensor, milp: dict) -> list[str]:
    """The invariants the theory guarantees, example by example."""
    problems = []
    tol = 1e-5
    for loose, tight in (("dual", "dual-opt"), ("dual-opt", "lp"), ("lp", "lp-all")):
        gap = lows[loose] - lows[tight]
        if (gap > tol * (1 + lows[tight].abs())).any():
            problems.append(f"{case.name}: {loose} exceeds {tight} by {float(gap.max()):.3g}")
    for m in RELAXATIONS:
        if (certified[m] & broken).any():
            problems.append(f"{case.name}: PGD broke an example certified by {m}")
    for i, v in milp.items():
        if v.status == "violated":
            ball = case.ball(slice(i, i + 1))
            z = torch.as_tensor(v.witness, dtype=torch.float64).view(1, 1, *case.net.input_shape)
            margins = lv.robustness_objectives(case.y[i : i + 1], case.net.n_outputs).double()[0].numpy() @ \
                forward64(case.net.sparse(), v.witness)[-1]
            if not bool(ball.contains(z.to(ball.lo), tol=1e-9).all()):
                problems.append(f"{case.name}: MILP witness of example {i} lies outside the ball")
            if float(margins.min()) > 0:
                problems.append(f"{case.name}: MILP witness of example {i} violates no margin")
        if v.status == "verified" and bool(broken[i]):
            problems.append(f"{case.name}: PGD broke example {i} that the MILP verified")
    return problems


def cases(args: argparse.Namespace) -> list[Case]:
    n = None if args.full else args.n
    out = []
    x, y = load_dataset("mnist", "test", args.data)
    x, y = x[:n], y[:n]
    if args.network in ("all", "paper"):
        out.append(Case("paper MNIST conv (Wong & Kolter)", paper_network("mnist", args.weights), x, y, 0.1))
    onnx = args.vnncomp / "mnist_fc" / "onnx" / "mnist-net_256x2.onnx.gz"
    if args.network == "paper":
        return out
    if onnx.exists():
        fc = lv.load_onnx(onnx)
        out.append(Case("VNN-COMP MNIST 256x2", fc, x.reshape(-1, *fc.input_shape), y, 0.02, 0.0, 1.0))
    else:
        print(f"{onnx} not found; the 256x2 network is skipped")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100, help="first n test images (default 100)")
    parser.add_argument("--full", action="store_true", help="the full test set")
    parser.add_argument("--milp-time", type=float, default=120.0, help="MILP time limit per example (s)")
    parser.add_argument("--alpha-steps", type=int, default=50)
    parser.add_argument("--chunk", type=int, default=25, help="examples per batch for the batched methods")
    parser.add_argument("--network", choices=("all", "paper", "fc"), default="all",
                        help="the paper's MNIST model, the VNN-COMP 256x2 network, or both")
    parser.add_argument("--data", type=Path, default=SHARED / "data")
    parser.add_argument("--weights", type=Path, default=SHARED / "models" / "wong_kolter_2018" / "mnist.pth")
    parser.add_argument("--vnncomp", type=Path, default=SHARED / "data" / "vnncomp")
    parser.add_argument("--write-results", action="store_true", help="refresh the committed results (benchmarks/results/, figures/); without it a run writes to out/ladder/")
    parser.add_argument("--results", type=Path, default=None, help="folder for the CSV and markdown files (overrides the above)")
    args = parser.parse_args(argv)
    args.results = args.results or (ROOT / "benchmarks" / "results" if args.write_results else ROOT / "out" / "ladder")
    print(f"writing results to {args.results}" + (f" and figures to {args.figures}" if hasattr(args, "figures") else ""), flush=True)
    torch.set_num_threads(2)

    rows, problems = [], []
    for case in cases(args):
        r, p = run_case(case, chunk=args.chunk, milp_time=args.milp_time, alpha_steps=args.alpha_steps)
        rows += r
        problems += p
        for row in r:
            print(_line(row), flush=True)
    default = not args.full and args.n == 100 and args.network == "all"
    name = "ladder" if default else f"ladder_{args.network}_{'full' if args.full else f'n{args.n}'}"
    write_csv(args.results / f"{name}.csv", rows, list(rows[0]))
    atomic_write_text(args.results / f"{name}.md", _markdown(rows, args))
    print(_markdown(rows, args))
    for p in problems:
        print("INVARIANT BROKEN:", p, file=sys.stderr)
    return 1 if problems else 0


def _line(row: dict) -> str:
    err = f"{row['robust_error']:.2f}%"
    if not math.isnan(row["robust_error_high"]) and row["robust_error_high"] != row["robust_error"]:
        err += f"–{row['robust_error_high']:.2f}%"
    return f"{row['network']:<34} {row['method']:<9} robust error {err:<14} {row['seconds_per_example']:.4f} s/example"


def _markdown(rows: list[dict], args: argparse.Namespace) -> str:
    command = "python benchmarks/ladder.py" + (" --full" if args.full else "" if args.n == 100 else f" --n {args.n}") + (
        "" if args.network == "all" else f" --network {args.network}") + (
        "" if args.milp_time == 120 else f" --milp-time {args.milp_time:g}")
    lines = [
        "# The ladder of bounds",
        "",
        f"Command: `{command}` (2 threads). Robust error = misclassified or not certified; "
        "PGD error is a lower bound on the true robust error, every certified error an upper bound. "
        f"The MILP runs only where LP-all leaves an example open (time limit {args.milp_time:g} s); "
        "its time is the mean over those examples and includes its own LP-all bounds. "
        "A range means some MILPs hit the time limit.",
        "",
        "| network | ε | n | method | robust error | known (full test set) | s / example | examples timed |",
        "|---|---:|---:|---|---:|---|---:|---:|",
    ]
    for r in rows:
        err = f"{r['robust_error']:.2f}%"
        if not math.isnan(r["robust_error_high"]) and r["robust_error_high"] != r["robust_error"]:
            err += f" – {r['robust_error_high']:.2f}%"
        known = KNOWN.get(r["method"]) if r["network"].startswith("paper MNIST") else None
        known_s = f"{known[0]}% ({known[1]})" if known else ""
        lines.append(f"| {r['network']} | {r['eps']:g} | {r['n']} | {r['method']} | {err} | {known_s} | "
                     f"{r['seconds_per_example']:.4f} | {r['examples_timed']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
