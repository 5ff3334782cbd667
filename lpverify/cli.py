"""The ``lpverify`` command: thin wrappers of the library for the shell.

    lpverify verify MODEL --data DIR --eps 0.1 --method dual
    lpverify verify net.onnx --vnnlib prop.vnnlib --method milp --time-limit 60
    lpverify tightness MODEL --data DIR --eps 0.1
    lpverify attack MODEL --data DIR --eps 0.1 --attack pgd
    lpverify max-eps MODEL --data DIR
    lpverify polytope --eps 0.1 --output polytope.png
    lpverify train --dataset mnist --out runs/robust

MODEL is an ONNX file, a torch state_dict of a paper architecture (``--arch``),
an lpverify training checkpoint (``--arch``) or a saved ``nn.Sequential``.
Every subcommand prints a readable table; ``--format json|csv`` prints
machine-readable output instead and ``--output FILE`` (.json or .csv) writes
it to a file atomically.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from .io import atomic_write_text

DTYPES = {"float32": torch.float32, "float64": torch.float64}


# -- output --------------------------------------------------------------------------


def _clean(value: object) -> object:
    """A JSON-friendly value: floats stay numbers (nan/inf as strings), arrays become lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _render(rows: list[dict], fmt: str) -> str:
    if fmt == "json":
        return json.dumps([{k: _clean(v) for k, v in r.items()} for r in rows], indent=1) + "\n"
    columns = list(rows[0]) if rows else []
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: v for k, v in r.items() if not isinstance(v, (list, np.ndarray))} for r in rows)
        return buf.getvalue()
    shown = [c for c in columns if not rows or not isinstance(rows[0][c], (list, np.ndarray))]

    def cell(v: object) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    table = [shown] + [[cell(r[c]) for c in shown] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(shown))]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in table) + "\n"


def _emit(rows: list[dict], args: argparse.Namespace, summary: str = "") -> None:
    sys.stdout.write(_render(rows, args.format))
    if summary and args.format == "table":
        print(summary)
    if args.output is not None:
        fmt = "csv" if args.output.suffix.lower() == ".csv" else "json"
        atomic_write_text(args.output, _render(rows, fmt))


# -- inputs --------------------------------------------------------------------------


def _network(args: argparse.Namespace):
    from .zoo import load_network

    shape = tuple(args.input_shape) if getattr(args, "input_shape", None) else None
    return load_network(args.model, args.arch, shape)


def _examples(args: argparse.Namespace, net) -> tuple[torch.Tensor, torch.Tensor]:
    """The test images of ``--dataset`` in ``--data``, shaped for the network, ``--start``/``--n``."""
    from .data import load_dataset

    x, y = load_dataset(args.dataset, "test", args.data)
    x, y = x[args.start : args.start + args.n], y[args.start : args.start + args.n]
    if x[0].numel() != math.prod(net.input_shape):
        raise SystemExit(f"error: {args.dataset} inputs have {x[0].numel()} values; the network takes {net.input_shape}")
    return x.reshape(-1, *net.input_shape).to(DTYPES[args.dtype]).to(args.device), y.to(args.device)


def _clamp(args: argparse.Namespace) -> tuple[float | None, float | None]:
    return tuple(args.clamp) if args.clamp else (None, None)


def _inputs(args: argparse.Namespace):
    """The network, the test examples and the clamp (lower, upper) that a subcommand works on."""
    net = _network(args)
    x, y = _examples(args, net)
    return (net, x, y, *_clamp(args))


# -- subcommands -----------------------------------------------------------------------


def cmd_verify(args: argparse.Namespace) -> int:
    from . import specs
    from .sets import LinfBall
    from .verify import Verdict, verify, verify_property
    from .vnnlib import read_vnnlib

    net = _network(args)
    rows = []
    if args.vnnlib is not None:
        for path in tqdm(args.vnnlib, desc="properties", disable=len(args.vnnlib) < 2):
            prop = read_vnnlib(path, math.prod(net.input_shape), net.n_outputs)
            v = verify_property(net, prop, args.method, time_limit=args.time_limit)
            rows.append(_verdict_row({"property": str(path)}, v, args.method))
    else:
        if args.eps is None or args.data is None:
            raise SystemExit("error: verify needs --vnnlib FILE, or --data DIR with --eps")
        x, y = _examples(args, net)
        lower, upper = _clamp(args)
        predicted = torch.cat([net(x[i : i + 256]).argmax(1) for i in range(0, len(x), 256)]) if len(x) else y
        for i in tqdm(range(len(y)), desc=f"verify ({args.method})", disable=len(y) < 2):
            info = {"index": args.start + i, "label": int(y[i]), "predicted": int(predicted[i])}
            if predicted[i] != y[i]:
                v = Verdict("violated", math.nan, 0.0, witness=x[i].detach().cpu().double().numpy(),
                            reason="misclassified at the centre")
            else:
                ball = LinfBall(x[i : i + 1], args.eps, lower, upper)
                c = specs.robustness_objectives(y[i : i + 1], net.n_outputs).to(x)
                v = verify(net, ball, c, method=args.method, time_limit=args.time_limit)[0]
            rows.append(_verdict_row(info, v, args.method))
    counts = {s: sum(r["status"] == s for r in rows) for s in ("verified", "violated", "unknown")}
    _emit(rows, args, summary=", ".join(f"{k} {n}" for k, n in counts.items()))
    return 0


def _verdict_row(info: dict, v, method: str) -> dict:
    row = {**info, "method": method, "status": v.status, "bound": v.bound, "seconds": v.time, "reason": v.reason}
    if v.witness is not None:
        row["counterexample"] = np.asarray(v.witness, dtype=np.float64).ravel()
    return row


def cmd_tightness(args: argparse.Namespace) -> int:
    from . import specs
    from .sets import LinfBall
    from .verify import objective_bounds

    net, x, y, lower, upper = _inputs(args)
    rows = []
    for i in tqdm(range(len(y)), desc="tightness", disable=len(y) < 2):
        ball = LinfBall(x[i : i + 1], args.eps, lower, upper)
        c = specs.robustness_objectives(y[i : i + 1], net.n_outputs).to(x)
        start = time.perf_counter()
        dual = objective_bounds(net, ball, c, "dual")[0].detach().double().cpu()
        t_dual = time.perf_counter() - start
        lp = objective_bounds(net, ball, c, "lp")[0]
        t_lp = time.perf_counter() - start - t_dual
        gap = lp - dual
        rows.append({"index": args.start + i, "label": int(y[i]), "dual_min_margin": float(dual.min()),
                     "lp_min_margin": float(lp.min()), "median_gap": float(gap.median()), "max_gap": float(gap.max()),
                     "dual_seconds": t_dual, "lp_seconds": t_lp})
    gaps = [r["median_gap"] for r in rows]
    _emit(rows, args, summary=f"median LP − dual gap over {len(rows)} examples: {float(np.median(gaps)) if gaps else math.nan:.4g}")
    return 0


def cmd_attack(args: argparse.Namespace) -> int:
    from .attacks import attack_error, fgsm, pgd

    net, x, y, lower, upper = _inputs(args)
    attack = fgsm if args.attack == "fgsm" else pgd
    x_adv = attack(net, x, y, args.eps, lower=lower, upper=upper)
    clean, broken = attack_error(net, x, y), attack_error(net, x_adv, y)
    rows = [{"index": args.start + i, "label": int(y[i]), "clean_error": bool(clean[i]), f"{args.attack}_error": bool(broken[i])}
            for i in range(len(y))]
    _emit(rows, args, summary=f"clean error {float(clean.float().mean()):.2%}, {args.attack} error {float(broken.float().mean()):.2%}")
    return 0


def cmd_max_eps(args: argparse.Namespace) -> int:
    from .certify import certified_radius

    net, x, y, lower, upper = _inputs(args)
    r = certified_radius(net, x, y if args.true_label else None, tol=args.tol, eps_max=args.eps_max, lower=lower, upper=upper)
    rows = [{"index": args.start + i, "class": int(r.labels[i]), "certified_eps": float(r.lower[i]), "not_certified_at": float(r.upper[i])}
            for i in range(len(y))]
    _emit(rows, args, summary=f"median certified ε {float(r.lower.median()):.4g} ({r.iterations} certificate evaluations)")
    return 0


def cmd_polytope(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import polytope as P
    from .bounds import interval_bounds
    from .dual import dual_bounds
    from .network import Network
    from .plots import draw_polytope, save_figure
    from .sets import LinfBall
    from .zoo import random_mlp

    net = Network.from_torch(random_mlp([2, *args.hidden, 2], args.seed).double())
    x = torch.rand(1, 2, generator=torch.Generator().manual_seed(args.seed), dtype=torch.float64)
    ball = LinfBall(x, args.eps)
    with torch.no_grad():
        bounds, interval = dual_bounds(net, ball), interval_bounds(net, ball)
        center = net(x)[0].numpy()
    dirs = P.directions(args.directions)
    image = P.sampled_image(net, ball, args.grid)
    h_true, h_lp, h_dual = image.support(dirs), P.support_lp(net, ball, bounds, dirs), P.support_dual(net, ball, bounds, dirs)
    fig, ax = plt.subplots(figsize=(5, 5))
    lo, hi = interval.lower[-1][0].numpy(), interval.upper[-1][0].numpy()
    box = ((float(lo[0]), float(hi[0])), (float(lo[1]), float(hi[1])))
    draw_polytope(ax, image.cells(), P.polygon(dirs, h_lp, center), P.polygon(dirs, h_dual, center), box)
    ax.legend(fontsize=7, loc="upper right")
    ax.set_title(f"2-{'-'.join(map(str, args.hidden))}-2 net (seed {args.seed}), ε = {args.eps}", fontsize=9)
    save_figure(fig, args.figure)
    rows = [{"angle": float(np.arctan2(d[1], d[0])), "sampled": float(t), "lp": float(l), "dual": float(u)}
            for d, t, l, u in zip(dirs, h_true, h_lp, h_dual)]
    _emit(rows, args, summary=f"figure written to {args.figure}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .schedule import train_config_from_args
    from .train import fit_paper_model

    _, history = fit_paper_model(args.dataset, train_config_from_args(args), args.out, root=args.data,
                                 progress=args.format == "table", train_examples=args.train_examples,
                                 report=args.final_examples != 0, report_examples=args.final_examples)
    summary = f"checkpoint, log, model.onnx and result.json in {args.out}"
    if args.final_examples != 0:
        record = json.loads((args.out / "result.json").read_text())
        summary = (f"test set ({record['examples']} images, eps {record['eps']}): clean error {record['clean_error']:.2%}, "
                   f"PGD error {record['pgd_error']:.2%}, certified error {record['certified_error']:.2%}; "
                   f"{record['train_seconds'] / 60:.1f} min of training on {record['threads']} threads\n{summary}")
    _emit([h.__dict__ for h in history], args, summary=summary)
    return 0


# -- the parser ------------------------------------------------------------------------------


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=("table", "json", "csv"), default="table", help="what to print (default: table)")
    p.add_argument("--output", type=Path, default=None, help="also write the results to this .json or .csv file")


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", type=Path, help="ONNX file, torch state_dict (with --arch), checkpoint or saved nn.Sequential")
    p.add_argument("--arch", default=None, help="architecture of a state_dict: mnist, fashion_mnist, svhn or har")
    p.add_argument("--input-shape", type=int, nargs="+", default=None, help="input shape of a saved module, e.g. 1 28 28")


def _data_args(p: argparse.ArgumentParser, eps_required: bool) -> None:
    p.add_argument("--data", type=Path, default=None, help="data directory (default: $LPVERIFY_DATA, then ./data)")
    p.add_argument("--dataset", default="mnist", help="dataset in the data directory (default: mnist)")
    p.add_argument("--n", type=int, default=10, help="number of test examples (default 10)")
    p.add_argument("--start", type=int, default=0, help="index of the first test example")
    p.add_argument("--eps", type=float, required=eps_required, default=None, help="l_inf radius")
    p.add_argument("--clamp", type=float, nargs=2, metavar=("LOW", "HIGH"), default=None,
                   help="intersect the ball with the box [LOW, HIGH] (e.g. 0 1 for pixels)")
    p.add_argument("--device", default="cpu", help="torch device of the dual bounds and attacks (e.g. cuda)")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="float32")


def build_parser() -> argparse.ArgumentParser:
    from .verify import METHODS

    parser = argparse.ArgumentParser(prog="lpverify", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("verify", help="verify robustness of test images or VNNLIB properties")
    _model_args(p)
    _data_args(p, eps_required=False)
    p.add_argument("--vnnlib", type=Path, nargs="+", default=None, help="VNNLIB property files (.vnnlib or .vnnlib.gz)")
    p.add_argument("--method", choices=METHODS, default="dual")
    p.add_argument("--time-limit", type=float, default=None,
                   help="wall-clock seconds per example or property for the LP, LP-all and MILP methods, model building "
                        "included (default: none); a row left unsolved makes the verdict unknown")
    _common(p)
    p.set_defaults(run=cmd_verify)

    p = sub.add_parser("tightness", help="LP vs dual margin bounds, example by example")
    _model_args(p)
    _data_args(p, eps_required=True)
    _common(p)
    p.set_defaults(run=cmd_tightness)

    p = sub.add_parser("attack", help="FGSM or PGD error (the paper's settings)")
    _model_args(p)
    _data_args(p, eps_required=True)
    p.add_argument("--attack", choices=("fgsm", "pgd"), default="pgd")
    _common(p)
    p.set_defaults(run=cmd_attack)

    p = sub.add_parser("max-eps", help="the largest certified ε of each example (eq. 17)")
    _model_args(p)
    _data_args(p, eps_required=False)
    p.add_argument("--tol", type=float, default=1e-2, help="relative tolerance of the bisection")
    p.add_argument("--eps-max", type=float, default=1.0)
    p.add_argument("--true-label", action="store_true", help="certify the true label (default: the predicted class)")
    _common(p)
    p.set_defaults(run=cmd_max_eps)

    p = sub.add_parser("polytope", help="draw the 2D adversarial polytope of a random network (Figure 6)")
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hidden", type=int, nargs="+", default=[50, 50], help="hidden widths (default 50 50)")
    p.add_argument("--directions", type=int, default=64)
    p.add_argument("--grid", type=int, default=300)
    p.add_argument("--figure", type=Path, default=Path("polytope.png"))
    _common(p)
    p.set_defaults(run=cmd_polytope)

    p = sub.add_parser("train", help="train a paper architecture, provably robust by default (CROWN-IBP, ε 0.1), with checkpoints")
    p.add_argument("--dataset", default="mnist", help="mnist, fashion_mnist, har or svhn")
    p.add_argument("--data", type=Path, default=None)
    p.add_argument("--out", type=Path, required=True, help="run folder: checkpoint, log, model.onnx, result.json (a rerun resumes)")
    p.add_argument("--train-examples", type=int, default=None, help="first training examples only")
    p.add_argument("--final-examples", type=int, default=None, help="test images of the final evaluation (default: all; 0: none)")
    from .schedule import add_train_arguments

    add_train_arguments(p)
    _common(p)
    p.set_defaults(run=cmd_train)
    return parser


def _highs_banner_to_stderr() -> None:
    """Send HiGHS's licence banner, printed on stdout at its first model in a process, to stderr.

    Keeps stdout parseable for ``--format json|csv``: the banner is emitted
    here, with file descriptor 1 pointing at stderr, and never again.
    """
    import ctypes

    import highspy

    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        highspy.Highs()
        ctypes.CDLL(None).fflush(None)  # the C library's stdout buffer, before fd 1 is restored
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _highs_banner_to_stderr()
    if getattr(args, "device", "cpu") != "cpu" and not torch.cuda.is_available() and args.device.startswith("cuda"):
        raise SystemExit(f"error: --device {args.device} but no CUDA device is available")
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"lpverify {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
