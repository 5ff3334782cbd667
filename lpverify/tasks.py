"""What each ``lpverify`` subcommand does per item: the inputs it checks and the rows it returns.

A :class:`lpverify.runner.Task` per subcommand: ``setup`` loads and checks
the network, data or property files (an :class:`~lpverify.runner.InputError`
names what is wrong), ``work`` turns a chunk of items (test examples,
properties, VNN-COMP instances) into rows. Both are module-level functions
so that a process pool can run them (``--workers``).
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Hashable, Mapping, Sequence

from . import checks
from .runner import InputError, Row, RowStatus, Task

BATCH = 32  # examples per call of the batched computations (the same with any --workers)


# -- inputs ------------------------------------------------------------------------------------------------------


def load_checked_network(path: Path, arch: str | None = None, input_shape: Sequence[int] | None = None):
    """The network of a model file, every weight finite; any failure is an InputError naming the file."""
    from .zoo import load_network

    checks.existing_file(path, "model")
    try:
        net = load_network(path, arch, tuple(input_shape) if input_shape else None)
    except (ValueError, TypeError, OSError, RuntimeError, KeyError) as err:
        message = str(err)
        raise InputError(message if str(path) in message else f"{path}: {message}") from err
    checks.finite_network(net, path)
    return net


@dataclass(frozen=True)
class Examples:
    """The network and the test examples of a run (global indices ``start .. start + n``)."""

    args: argparse.Namespace
    net: object
    x: object  # (n, *input_shape) in --dtype on --device
    y: object  # (n,)
    start: int
    lower: float | None
    upper: float | None


def setup_examples(args: argparse.Namespace) -> Examples:
    import torch

    from .data import load_dataset

    net = load_checked_network(args.model, args.arch, args.input_shape)
    try:
        x, y = load_dataset(args.dataset, "test", args.data)
    except (ValueError, OSError) as err:
        raise InputError(f"--data: {err}") from err
    if args.start >= len(y):
        raise InputError(f"--start {args.start}: the {args.dataset} test set has {len(y)} examples")
    x, y = x[args.start : args.start + args.n], y[args.start : args.start + args.n]
    if x[0].numel() != math.prod(net.input_shape):
        raise InputError(f"{args.dataset} inputs have {x[0].numel()} values; the network {args.model} takes {net.input_shape}")
    checks.finite_inputs(x, f"the {args.dataset} test set")
    dtype = getattr(torch, args.dtype)
    x = x.reshape(-1, *net.input_shape).to(dtype).to(args.device)
    lower, upper = args.clamp if args.clamp else (None, None)
    return Examples(args, net, x, y.to(args.device), args.start, lower, upper)


def _example_items(ctx: Examples) -> list[int]:
    return list(range(ctx.start, ctx.start + len(ctx.y)))


def _index_row(item: Hashable) -> Row:
    return {"index": item}


def _index_key(row: Mapping[str, object]) -> Hashable:
    return int(row["index"])


def _slice(ctx: Examples, chunk: Sequence[int]):
    idx = [i - ctx.start for i in chunk]
    return ctx.x[idx], ctx.y[idx]


def _ball_and_objectives(ctx: Examples, x, y, eps: float):
    from . import specs
    from .sets import LinfBall

    return LinfBall(x, eps, ctx.lower, ctx.upper), specs.robustness_objectives(y, ctx.net.n_outputs).to(x)


def _counterexample(ctx: Examples, x, y, eps: float, point) -> tuple[bool, object, str]:
    """Whether ``point`` is a checked counterexample to robustness at x (in the exact ball, misclassified)."""
    import torch

    from .verify import check_witness

    ball, c = _ball_and_objectives(ctx, x.unsqueeze(0), y.unsqueeze(0), eps)
    ok, witness, _, _, why = check_witness(ctx.net, ball, c[0], torch.zeros(c.shape[1], dtype=torch.float64), point)
    return ok, witness, why


# -- verify ------------------------------------------------------------------------------------------------------


def _verdict_row(info: Row, v, method: str) -> Row:
    row = {**info, "method": method, "status": RowStatus(str(v.status)), "bound": v.bound, "seconds": v.time,
           "reason": v.reason}
    if v.witness is not None:
        row["counterexample"] = v.witness
    return row


def verify_examples(ctx: Examples, chunk: Sequence[int], seconds: float) -> list[Row]:
    """Verdicts of a chunk of test examples: misclassified centres convicted, the rest by ``--method``."""
    import torch

    from .verify import Status, Verdict, verify

    args = ctx.args
    x, y = _slice(ctx, chunk)
    with torch.no_grad():
        predicted = ctx.net(x).argmax(1)
    verdicts: dict[int, object] = {}
    correct = [j for j in range(len(chunk)) if predicted[j] == y[j]]
    if correct:
        ball, c = _ball_and_objectives(ctx, x[correct], y[correct], args.eps)
        for j, v in zip(correct, verify(ctx.net, ball, c, method=args.method, time_limit=seconds)):
            verdicts[j] = v
    for j in sorted(set(range(len(chunk))) - set(correct)):
        begun = time.perf_counter()
        ok, point, why = _counterexample(ctx, x[j], y[j], args.eps, x[j].detach().cpu().double().numpy())
        elapsed = time.perf_counter() - begun
        verdicts[j] = (Verdict(Status.VIOLATED, math.nan, elapsed, witness=point, reason="misclassified at the centre")
                       if ok else Verdict(Status.UNKNOWN, math.nan, elapsed, reason=f"misclassified centre not confirmed: {why}"))
    return [_verdict_row({"index": i, "label": int(y[j]), "predicted": int(predicted[j])}, verdicts[j], args.method)
            for j, i in enumerate(chunk)]


@dataclass(frozen=True)
class Properties:
    args: argparse.Namespace
    net: object
    paths: tuple[str, ...]


def setup_properties(args: argparse.Namespace) -> Properties:
    return Properties(args, load_checked_network(args.model, args.arch, args.input_shape), tuple(map(str, args.vnnlib)))


def _property_items(ctx: Properties) -> tuple[str, ...]:
    return ctx.paths


def _property_row(item: Hashable) -> Row:
    return {"property": item}


def _property_key(row: Mapping[str, object]) -> Hashable:
    return str(row["property"])


def read_checked_property(path: Path, net):
    """A VNNLIB property for ``net`` with a finite input box; any problem is an InputError naming the file."""
    import numpy as np

    from .vnnlib import read_vnnlib

    try:
        prop = read_vnnlib(path, math.prod(net.input_shape), net.n_outputs)
    except (ValueError, OSError) as err:
        raise InputError(str(err) if str(path) in str(err) else f"{path}: {err}") from err
    if not (np.isfinite(prop.input_lower).all() and np.isfinite(prop.input_upper).all()):
        raise InputError(f"{path}: the input box has a non-finite bound")
    return prop


def verify_properties(ctx: Properties, chunk: Sequence[str], seconds: float) -> list[Row]:
    from .verify import verify_property

    rows = []
    for path in chunk:
        prop = read_checked_property(Path(path), ctx.net)
        rows.append(_verdict_row({"property": path}, verify_property(ctx.net, prop, ctx.args.method, time_limit=seconds), ctx.args.method))
    return rows


VERIFY_COLUMNS = ("index", "label", "predicted", "method", "status", "bound", "seconds", "reason")
PROPERTY_COLUMNS = ("property", "method", "status", "bound", "seconds", "reason")


def verify_task(args: argparse.Namespace) -> Task:
    """Test examples (``--data``, ``--eps``) or VNNLIB properties (``--vnnlib``), by ``--method``."""
    from .verify import BOUND_METHODS

    chunk = BATCH if args.method in BOUND_METHODS and args.method not in ("lp", "lp-all") else 1
    if args.vnnlib is not None:
        given = [f for f in ("data", "eps", "n", "start", "clamp") if getattr(args, f) is not None]
        if given:
            raise InputError(f"--vnnlib properties carry their own input sets: drop --{given[0]}")
        return Task(setup_properties, verify_properties, _property_items, _property_row, _property_key, PROPERTY_COLUMNS, 1)
    if args.eps is None:
        raise InputError("verify needs --eps (with the test set of --data) or --vnnlib FILES")
    return Task(setup_examples, verify_examples, _example_items, _index_row, _index_key, VERIFY_COLUMNS, chunk)


# -- tightness, attack, max-eps ----------------------------------------------------------------------------------------


def tightness_examples(ctx: Examples, chunk: Sequence[int], seconds: float) -> list[Row]:
    """The LP against the dual margin bounds of one example; rows the time limit cut keep their dual bound."""
    from .verify import objective_bounds

    (i,) = chunk
    x, y = _slice(ctx, chunk)
    ball, c = _ball_and_objectives(ctx, x, y, ctx.args.eps)
    start = time.perf_counter()
    deadline = start + seconds
    dual = objective_bounds(ctx.net, ball, c, "dual")[0].detach().double().cpu()
    t_dual = time.perf_counter() - start
    lp = objective_bounds(ctx.net, ball, c, "lp", deadline=deadline)[0].detach().double().cpu()
    t_lp = time.perf_counter() - start - t_dual
    late = time.perf_counter() >= deadline
    gap = lp - dual
    return [{"index": i, "label": int(y[0]), "status": RowStatus.UNKNOWN if late else RowStatus.DONE,
             "dual_min_margin": float(dual.min()), "lp_min_margin": float(lp.min()), "median_gap": float(gap.median()),
             "max_gap": float(gap.max()), "dual_seconds": t_dual, "lp_seconds": t_lp,
             "reason": "time limit: LP rows not solved keep their dual bound" if late else ""}]


TIGHTNESS_COLUMNS = ("index", "label", "status", "dual_min_margin", "lp_min_margin", "median_gap", "max_gap",
                     "dual_seconds", "lp_seconds", "reason")


def tightness_task(args: argparse.Namespace) -> Task:
    return Task(setup_examples, tightness_examples, _example_items, _index_row, _index_key, TIGHTNESS_COLUMNS, 1)


def attack_examples(ctx: Examples, chunk: Sequence[int], seconds: float) -> list[Row]:
    """FGSM or PGD on a chunk; a misclassified attack point is checked before it convicts."""
    import torch

    from .attacks import fgsm, pgd

    args = ctx.args
    x, y = _slice(ctx, chunk)
    start = time.perf_counter()
    attack = fgsm if args.attack == "fgsm" else pgd
    x_adv = attack(ctx.net, x, y, args.eps, lower=ctx.lower, upper=ctx.upper)
    with torch.no_grad():
        clean, broken = ctx.net(x).argmax(1) != y, ctx.net(x_adv).argmax(1) != y
    per = (time.perf_counter() - start) / len(chunk)
    rows = []
    for j, i in enumerate(chunk):
        row: Row = {"index": i, "label": int(y[j]), "status": RowStatus.UNKNOWN, "clean_error": bool(clean[j]),
                    f"{args.attack}_error": bool(broken[j]), "seconds": per,
                    "reason": f"{args.attack} found no counterexample"}
        if broken[j]:
            ok, point, why = _counterexample(ctx, x[j], y[j], args.eps, x_adv[j].detach().cpu().double().numpy())
            row.update(status=RowStatus.VIOLATED, reason="") if ok else row.update(reason=f"attack point rejected: {why}")
            if ok:
                row["counterexample"] = point
        rows.append(row)
    return rows


def attack_task(args: argparse.Namespace) -> Task:
    columns = ("index", "label", "status", "clean_error", f"{args.attack}_error", "seconds", "reason")
    return Task(setup_examples, attack_examples, _example_items, _index_row, _index_key, columns, BATCH)


def max_eps_examples(ctx: Examples, chunk: Sequence[int], seconds: float) -> list[Row]:
    """The largest certified ε by bisection (eq. 17); with --eps, verified when it reaches ε."""
    from .certify import certified_radius

    args = ctx.args
    x, y = _slice(ctx, chunk)
    start = time.perf_counter()
    r = certified_radius(ctx.net, x, y if args.true_label else None, tol=args.tol, eps_max=args.eps_max,
                         lower=ctx.lower, upper=ctx.upper)
    per = (time.perf_counter() - start) / len(chunk)
    rows = []
    for j, i in enumerate(chunk):
        certified = float(r.lower[j])
        if args.eps is None:
            status, reason = RowStatus.DONE, ""
        elif certified >= args.eps:
            status, reason = RowStatus.VERIFIED, ""
        else:
            status, reason = RowStatus.UNKNOWN, f"certified up to ε = {certified:.4g} < {args.eps}"
        rows.append({"index": i, "label": int(y[j]), "class": int(r.labels[j]), "status": status, "certified_eps": certified,
                     "not_certified_at": float(r.upper[j]), "seconds": per, "reason": reason})
    return rows


MAX_EPS_COLUMNS = ("index", "label", "class", "status", "certified_eps", "not_certified_at", "seconds", "reason")


def max_eps_task(args: argparse.Namespace) -> Task:
    if args.eps is not None and args.eps > args.eps_max:
        raise InputError(f"--eps {args.eps} is above --eps-max {args.eps_max}, where the search stops")
    return Task(setup_examples, max_eps_examples, _example_items, _index_row, _index_key, MAX_EPS_COLUMNS, BATCH)


# -- run-instances ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instance:
    onnx: str  # as written in instances.csv: relative to its folder
    vnnlib: str
    timeout: float


@dataclass
class Instances:
    args: argparse.Namespace
    root: Path
    benchmark: str
    instances: dict[tuple[str, str], Instance]
    networks: dict[str, object] = field(default_factory=dict)  # onnx → Network or the InputError it raised


def setup_instances(args: argparse.Namespace) -> Instances:
    checks.existing_file(args.instances, "instances file")
    root = args.root or args.instances.parent
    found: dict[tuple[str, str], Instance] = {}
    for n, line in enumerate(csv.reader(args.instances.read_text(encoding="utf-8").splitlines()), 1):
        if not line or not "".join(line).strip():
            continue
        try:
            onnx, vnnlib, timeout = (s.strip() for s in line)
            found[(onnx, vnnlib)] = Instance(onnx, vnnlib, checks.positive(timeout))
        except (ValueError, argparse.ArgumentTypeError) as err:
            raise InputError(f"{args.instances}:{n}: expected 'onnx,vnnlib,timeout' with a timeout > 0 ({err})") from None
    if not found:
        raise InputError(f"{args.instances} lists no instances")
    return Instances(args, root, args.benchmark or root.name, found)


def _existing(root: Path, relative: str) -> Path:
    """The file, or its gzipped copy (the benchmark folders ship .gz)."""
    path = root / relative
    gz = path.with_name(path.name + ".gz")
    return gz if not path.exists() and gz.exists() else path


VNNCOMP_RESULT = {RowStatus.VERIFIED: "unsat", RowStatus.VIOLATED: "sat", RowStatus.UNKNOWN: "unknown",
                  RowStatus.INPUT_ERROR: "error", RowStatus.INTERNAL_ERROR: "error"}
VNNCOMP_STATUS = {"unsat": RowStatus.VERIFIED, "sat": RowStatus.VIOLATED, "unknown": RowStatus.UNKNOWN,
                  "timeout": RowStatus.UNKNOWN, "error": RowStatus.INPUT_ERROR}


def run_instance_rows(ctx: Instances, chunk: Sequence[tuple[str, str]], seconds: float) -> list[Row]:
    """One VNN-COMP instance: result sat / unsat / unknown / timeout / error, the prepare and run times."""
    from .verify import verify_property

    rows = []
    for key in chunk:
        inst = ctx.instances[tuple(key)]
        row: Row = {"benchmark": ctx.benchmark, "onnx": inst.onnx, "vnnlib": inst.vnnlib, "prepare_time": 0.0}
        prep = time.perf_counter()
        if inst.onnx not in ctx.networks:
            try:
                ctx.networks[inst.onnx] = load_checked_network(_existing(ctx.root, inst.onnx))
            except InputError as err:
                ctx.networks[inst.onnx] = err
        net = ctx.networks[inst.onnx]
        row["prepare_time"] = time.perf_counter() - prep
        start = time.perf_counter()
        limit = min(seconds, inst.timeout)
        try:
            if isinstance(net, InputError):
                raise net
            v = verify_property(net, read_checked_property(_existing(ctx.root, inst.vnnlib), net), ctx.args.method,
                                time_limit=limit)
        except InputError as err:
            rows.append({**row, "result": "error", "run_time": time.perf_counter() - start, "reason": str(err)})
            continue
        elapsed = time.perf_counter() - start
        result = VNNCOMP_RESULT[RowStatus(str(v.status))]
        if elapsed >= limit and result != "sat":
            result = "timeout"  # a verdict after the timeout counts as a timeout, as in VNN-COMP
        rows.append({**row, "result": result, "run_time": elapsed, "bound": v.bound, "reason": v.reason})
    return rows


INSTANCE_COLUMNS = ("benchmark", "onnx", "vnnlib", "prepare_time", "result", "run_time")


def run_instances_task(args: argparse.Namespace) -> Task:
    """VNN-COMP instances: rows in the official results layout (no header), verdicts from their result."""
    return Task(setup_instances, run_instance_rows, _instance_items, _instance_row, _instance_key, INSTANCE_COLUMNS, 1,
                status_of=instance_status, header=False)


def _instance_items(ctx: Instances) -> list[tuple[str, str]]:
    return list(ctx.instances)


def _instance_row(item: Hashable) -> Row:
    onnx, vnnlib = item
    return {"onnx": onnx, "vnnlib": vnnlib, "result": "error"}


def _instance_key(row: Mapping[str, object]) -> Hashable:
    return str(row["onnx"]), str(row["vnnlib"])


def instance_status(row: Mapping[str, object]) -> RowStatus:
    return VNNCOMP_STATUS.get(str(row.get("result")), RowStatus.INTERNAL_ERROR)


__all__ = ["attack_task", "load_checked_network", "max_eps_task", "run_instances_task", "tightness_task", "verify_task"]
