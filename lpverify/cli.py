"""The ``lpverify`` command: the library for the shell, safe to leave running and to script.

    lpverify verify MODEL --eps 0.1 --method dual --output verdicts.jsonl
    lpverify verify net.onnx --vnnlib p1.vnnlib p2.vnnlib --method milp --time-limit 60
    lpverify run-instances instances.csv --output results.csv
    lpverify run-instances instances.csv --cluster dask://HOST:8786 --output results.csv
    lpverify tightness MODEL --eps 0.1
    lpverify attack MODEL --eps 0.1 --attack pgd
    lpverify max-eps MODEL --eps 0.1
    lpverify polytope --eps 0.1 --figure polytope.pdf
    lpverify train --dataset mnist --out runs/robust

MODEL is an ONNX file, a torch state_dict of a paper architecture (``--arch``),
an lpverify training checkpoint (``--arch``) or a saved ``nn.Sequential``.
Inputs are checked before any work; every row is appended to ``--output``
(.jsonl or .csv) as soon as it is finished, and ``--resume`` skips the rows
that file already holds.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
import traceback
from pathlib import Path
from typing import Mapping, Sequence

from . import checks, tasks
from .pool import CLUSTER_HELP, ClusterError, dask_address
from .runner import (
    ExitCode,
    InputError,
    Limits,
    RowSink,
    RunResult,
    Task,
    check_writable_dir,
    check_writable_file,
    exit_code,
    output_kind,
    run_task,
    summary,
)

DTYPES = ("float32", "float64")
DATASETS = ("mnist", "fashion_mnist", "har", "svhn")
TIME_LIMIT = 60.0  # seconds per example, property or instance
BUDGET = 3600.0  # seconds per run
EXIT_CODES = """exit codes:
  0   every property verified / certified (or, for a measurement, every row done)
  3   some property violated: a checked counterexample is in the output
  4   some property unknown or timed out (none violated), or --budget spent
  2   a usage or input error (one line names it), or a row whose input could not be read
  1   an internal error (--debug shows the traceback)
  130 interrupted by Ctrl-C: the finished rows are in --output; --resume continues"""


# -- rendering ---------------------------------------------------------------------------------------------------


def _plain(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def render(rows: Sequence[Mapping[str, object]], fmt: str) -> str:
    """The rows as a table, JSON (a list) or CSV; list-valued fields (counterexamples) only in JSON."""
    if fmt == "json":
        return json.dumps([{k: _plain(v) for k, v in r.items()} for r in rows], indent=1) + "\n"
    columns: list[str] = []
    for r in rows:
        columns += [k for k, v in r.items() if k not in columns and not isinstance(_plain(v), list)]
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: _plain(v) for k, v in r.items()} for r in rows)
        return buf.getvalue()

    def cell(v: object) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    table = [columns] + [[cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(columns))]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(row, widths)).rstrip() for row in table) + "\n"


# -- the subcommands that run over items ----------------------------------------------------------------------------------------------------


def cmd_verify(args: argparse.Namespace) -> int:
    return run_items(args, tasks.verify_task(args), f"verify ({args.method})")


def cmd_run_instances(args: argparse.Namespace) -> int:
    return run_items(args, tasks.run_instances_task(args), f"instances ({args.method})")


def cmd_tightness(args: argparse.Namespace) -> int:
    return run_items(args, tasks.tightness_task(args), "tightness")


def cmd_attack(args: argparse.Namespace) -> int:
    return run_items(args, tasks.attack_task(args), args.attack)


def cmd_max_eps(args: argparse.Namespace) -> int:
    return run_items(args, tasks.max_eps_task(args), "max-eps")


def run_items(args: argparse.Namespace, task: Task, desc: str) -> int:
    """Check, set up, stream every row to --output, print the rows and a summary; the exit code from the verdicts."""
    if args.resume and args.output is None:
        raise InputError("--resume needs --output: the file whose finished rows are skipped")
    if args.output is not None:
        check_writable_file(args.output, "--output")
        output_kind(args.output)
    context = task.setup(args)  # every input checked before the first row
    sink = (RowSink(args.output, task.columns, task.key, args.resume, header=task.header, status_of=task.status_of)
            if args.output else None)
    progress = not args.quiet and sys.stderr.isatty()
    try:
        result = run_task(task, args, context, Limits(math.inf if args.time_limit is None else args.time_limit, args.budget), sink,
                          workers=args.workers, threads=args.threads, cluster=args.cluster, progress=progress,
                          debug=args.debug, desc=desc)
    except ClusterError as err:
        raise InputError(str(err)) from None
    return report(args, result, task)


def report(args: argparse.Namespace, result: RunResult, task: Task) -> int:
    sys.stdout.write(render(result.rows, args.format))
    line = summary(result.rows, result, args.output, task.status_of)
    print(line, file=sys.stdout if args.format == "table" else sys.stderr)
    return int(exit_code(result.rows, result, task.status_of))


# -- polytope and train ------------------------------------------------------------------------------------------------


def cmd_polytope(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import torch

    from . import polytope as P
    from .bounds import interval_bounds
    from .dual import dual_bounds
    from .network import Network
    from .plots import draw_polytope, save_figure
    from .sets import LinfBall
    from .zoo import random_mlp

    checks.figure_path(args.figure)
    check_writable_file(args.figure, "--figure")
    if args.output is not None:
        check_writable_file(args.output, "--output")
        output_kind(args.output)
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
    if args.output is not None:
        sink = RowSink(args.output, list(rows[0]), lambda r: r["angle"], resume=False)
        for row in rows:
            sink.append(row)
        sink.close()
    sys.stdout.write(render(rows, args.format))
    print(f"figure written to {args.figure}", file=sys.stdout if args.format == "table" else sys.stderr)
    return int(ExitCode.VERIFIED)


def cmd_train(args: argparse.Namespace) -> int:
    from .io import atomic_write_text
    from .schedule import train_config_from_args
    from .train import fit_paper_model

    check_writable_dir(args.out, "--out")
    if args.output is not None:
        check_writable_file(args.output, "--output")
        output_kind(args.output)
    try:
        config = train_config_from_args(args)
        _, history = fit_paper_model(args.dataset, config, args.out, root=args.data,
                                     progress=args.format == "table" and not args.quiet, train_examples=args.train_examples,
                                     report=args.final_examples != 0, report_examples=args.final_examples)
    except (FileNotFoundError, ValueError) as err:
        raise InputError(str(err)) from err
    rows = [h.__dict__ for h in history]
    if args.output is not None:
        fmt = "csv" if output_kind(args.output).value == ".csv" else "json"
        atomic_write_text(args.output, render(rows, fmt) if fmt == "csv" else "".join(json.dumps(r) + "\n" for r in rows))
    sys.stdout.write(render(rows, args.format))
    where = sys.stdout if args.format == "table" else sys.stderr
    if args.final_examples != 0:
        record = json.loads((args.out / "result.json").read_text())
        print(f"test set ({record['examples']} images, eps {record['eps']}): clean error {record['clean_error']:.2%}, "
              f"PGD error {record['pgd_error']:.2%}, certified error {record['certified_error']:.2%}; "
              f"{record['train_seconds'] / 60:.1f} min of training on {record['threads']} threads", file=where)
    print(f"checkpoint, log, model.onnx and result.json in {args.out}", file=where)
    return int(ExitCode.VERIFIED)


# -- the parser --------------------------------------------------------------------------------------------------------


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Every default shown (unless the help already says it or there is none), the epilog kept as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS) or action.nargs == 0:
            return text
        default = " ".join(map(str, action.default)) if isinstance(action.default, (list, tuple)) else action.default
        return f"{text} (default: {default})"


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(int(ExitCode.INPUT_ERROR), f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _output_args(p: argparse.ArgumentParser, stream: bool = True) -> None:
    p.add_argument("--format", choices=("table", "json", "csv"), default="table", help="what to print on stdout")
    p.add_argument("--output", type=Path, default=None, metavar="FILE",
                   help="also write the rows to this .jsonl or .csv file" + (", each as soon as it is finished" if stream else ""))
    p.add_argument("--quiet", action="store_true", help="no progress bar (it is off anyway when stderr is not a terminal)")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")


def _run_args(p: argparse.ArgumentParser, time_limit: float | None = TIME_LIMIT) -> None:
    p.add_argument("--resume", action="store_true", help="keep the finished rows of --output and run only the others")
    limit_help = ("wall-clock seconds per item, model building included; a row cut short is unknown, with its reason "
                  "and the best safe bound so far")
    p.add_argument("--time-limit", type=checks.positive, default=time_limit, metavar="SECONDS",
                   help=limit_help if time_limit is not None else limit_help + " (default: each instance's timeout)")
    p.add_argument("--budget", type=checks.positive, default=BUDGET, metavar="SECONDS",
                   help="wall-clock seconds for the whole run; rows not started then are left for --resume")
    p.add_argument("--workers", type=checks.count(1), default=1, metavar="N",
                   help="processes over the items (same rows, same order as one process)")
    p.add_argument("--threads", type=checks.count(1), default=None, metavar="N",
                   help="torch threads per worker (default: the cores shared among --workers; 1 per job with --cluster)")
    p.add_argument("--cluster", default=None, metavar="ADDRESS", help=CLUSTER_HELP + " (same rows, same order)")


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", type=Path, help="ONNX file, torch state_dict (with --arch), checkpoint or saved nn.Sequential")
    p.add_argument("--arch", default=None, choices=("mnist", "fashion_mnist", "svhn", "har"),
                   help="architecture of a state_dict or checkpoint")
    p.add_argument("--input-shape", type=checks.count(1), nargs="+", default=None, metavar="DIM",
                   help="input shape of a saved module, e.g. 1 28 28")


def _data_args(p: argparse.ArgumentParser, eps_help: str, defaults: bool = True) -> None:
    p.add_argument("--data", type=Path, default=None, metavar="DIR", help="data directory (default: $LPVERIFY_DATA, then ./data)")
    p.add_argument("--dataset", choices=DATASETS, default="mnist", help="dataset in the data directory")
    p.add_argument("--n", type=checks.count(1), default=10 if defaults else None, help="number of test examples"
                   + ("" if defaults else " (default: 10)"))
    p.add_argument("--start", type=checks.count(0), default=0 if defaults else None, help="index of the first test example"
                   + ("" if defaults else " (default: 0)"))
    p.add_argument("--eps", type=checks.nonnegative, default=None, help=eps_help)
    p.add_argument("--clamp", type=checks.finite, nargs=2, metavar=("LOW", "HIGH"), default=None,
                   help="intersect the ball with the box [LOW, HIGH] (e.g. 0 1 for pixels; default: no box)")
    p.add_argument("--device", default="cpu", help="torch device of the bounds and attacks, e.g. cuda")
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="dtype of the inputs")


def build_parser() -> argparse.ArgumentParser:
    from .verify import METHODS

    def sub_parser(name: str, help_: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_, description=help_, epilog=EXIT_CODES, formatter_class=_Formatter)

    parser = _Parser(prog="lpverify", description=__doc__, epilog=EXIT_CODES, formatter_class=_Formatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub_parser("verify", "verify robustness of test images, or VNNLIB properties")
    _model_args(p)
    _data_args(p, "l_inf radius (required without --vnnlib)", defaults=False)
    p.add_argument("--vnnlib", type=Path, nargs="+", default=None, metavar="FILE", help="VNNLIB property files (.vnnlib or .vnnlib.gz)")
    p.add_argument("--method", choices=METHODS, default="dual", help="the bound method")
    _run_args(p)
    _output_args(p)
    p.set_defaults(run=cmd_verify)

    p = sub_parser("run-instances", "run a VNN-COMP instances.csv (onnx,vnnlib,timeout), writing VNN-COMP's result CSV")
    p.add_argument("instances", type=Path, help="instances.csv; its paths are relative to --root")
    p.add_argument("--root", type=Path, default=None, help="folder the instance paths are relative to (default: the CSV's folder)")
    p.add_argument("--benchmark", default=None, help="benchmark name in the results (default: the root folder's name)")
    p.add_argument("--method", choices=METHODS, default="milp", help="the bound method")
    _run_args(p, time_limit=None)
    _output_args(p)
    p.set_defaults(run=cmd_run_instances)

    p = sub_parser("tightness", "LP vs dual margin bounds, example by example")
    _model_args(p)
    _data_args(p, "l_inf radius (required)")
    _run_args(p)
    _output_args(p)
    p.set_defaults(run=cmd_tightness)

    p = sub_parser("attack", "FGSM or PGD (the paper's settings); a misclassified point is a checked counterexample")
    _model_args(p)
    _data_args(p, "l_inf radius (required)")
    p.add_argument("--attack", choices=("fgsm", "pgd"), default="pgd", help="the attack")
    _run_args(p)
    _output_args(p)
    p.set_defaults(run=cmd_attack)

    p = sub_parser("max-eps", "the largest certified ε of each example (eq. 17)")
    _model_args(p)
    _data_args(p, "judge each example at this ε: verified when certified up to it (default: measure only)")
    p.add_argument("--tol", type=checks.positive, default=1e-2, help="relative tolerance of the bisection")
    p.add_argument("--eps-max", type=checks.positive, default=1.0, help="largest ε searched")
    p.add_argument("--true-label", action="store_true", help="certify the true label (default: the predicted class)")
    _run_args(p)
    _output_args(p)
    p.set_defaults(run=cmd_max_eps)

    p = sub_parser("polytope", "draw the 2D adversarial polytope of a random network (Figure 6)")
    p.add_argument("--eps", type=checks.nonnegative, default=0.1, help="l_inf radius")
    p.add_argument("--seed", type=int, default=0, help="seed of the network and the input")
    p.add_argument("--hidden", type=checks.count(1), nargs="+", default=[50, 50], help="hidden widths")
    p.add_argument("--directions", type=checks.count(3), default=64, help="support directions")
    p.add_argument("--grid", type=checks.count(2), default=300, help="sampling grid points per input dimension")
    p.add_argument("--figure", type=Path, default=Path("polytope.png"), help="figure file: .png, .pdf or .svg")
    _output_args(p, stream=False)
    p.set_defaults(run=cmd_polytope)

    p = sub_parser("train", "train a paper architecture, provably robust by default (CROWN-IBP, ε 0.1), with checkpoints")
    p.add_argument("--dataset", default="mnist", help="mnist, fashion_mnist, har or svhn")
    p.add_argument("--data", type=Path, default=None, help="data directory (default: $LPVERIFY_DATA, then ./data)")
    p.add_argument("--out", type=Path, required=True, help="run folder: checkpoint, log, model.onnx, result.json (a rerun resumes)")
    p.add_argument("--train-examples", type=checks.count(1), default=None, help="first training examples only (default: all)")
    p.add_argument("--final-examples", type=checks.count(0), default=None,
                   help="test images of the final evaluation (default: all; 0: none)")
    from .schedule import add_train_arguments

    add_train_arguments(p)
    _output_args(p, stream=False)
    p.set_defaults(run=cmd_train)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lpverify")
    except PackageNotFoundError:
        return "unknown"


def _check_args(args: argparse.Namespace) -> None:
    """The checks argparse cannot do alone (defaults that depend on other flags, devices, files)."""
    if getattr(args, "command", None) == "verify" and args.vnnlib is None:
        args.n = 10 if args.n is None else args.n
        args.start = 0 if args.start is None else args.start
    if getattr(args, "clamp", None) and args.clamp[0] > args.clamp[1]:
        raise InputError(f"--clamp {args.clamp[0]} {args.clamp[1]}: LOW must be ≤ HIGH")
    if hasattr(args, "device"):
        checks.device(args.device)
    if getattr(args, "cluster", None) is not None:
        try:
            dask_address(args.cluster)
        except ClusterError as err:
            raise InputError(str(err)) from None
    for path in getattr(args, "vnnlib", None) or ():
        checks.existing_file(path, "--vnnlib")
    if hasattr(args, "model"):
        checks.existing_file(args.model, "model")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _check_args(args)
        return int(args.run(args))
    except InputError as err:
        print(f"lpverify {args.command}: error: {err}", file=sys.stderr)
        return int(ExitCode.INPUT_ERROR)
    except KeyboardInterrupt:
        print(f"lpverify {args.command}: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    except Exception as err:  # noqa: BLE001 - a bug: one line, the traceback with --debug
        if args.debug:
            traceback.print_exc()
        print(f"lpverify {args.command}: internal error: {type(err).__name__}: {err} "
              "(--debug shows the traceback; please report it)", file=sys.stderr)
        return int(ExitCode.INTERNAL_ERROR)


if __name__ == "__main__":
    sys.exit(main())
