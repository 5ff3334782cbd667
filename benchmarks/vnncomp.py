"""VNN-COMP benchmarks with lpverify, beside every tool's published results.

For each instance (ONNX network, VNNLIB property, timeout) of an
instances.csv, ``--method bab`` (the default) runs branch and bound
(:mod:`lpverify.bab`: the falsifier first, then ReLU splitting with rigorous
leaves) with the instance's whole timeout; its counterexamples are re-checked
on the ONNX file itself, with the onnx reference evaluator. ``--method chain``
runs the earlier method chain

1. PGD on the property's margins (a counterexample is re-checked on the
   ONNX file itself, with the onnx reference evaluator),
2. the dual bound (Theorem 1 with Algorithm 1),
3. the LP over the dual bounds (eq. 19),
4. the exact MILP over LP-all bounds with the time that is left (its
   counterexamples are re-checked on the ONNX file as well),

stops at the first verdict: unsat (verified), sat (counterexample),
timeout, or unsupported (a network lpverify cannot represent). Networks with
sigmoid or tanh activations (eran's ``ffnnSIGMOID__Point_6x200``) have no
exact encoding: with either ``--method`` they run PGD, then the dual bound and
the dual bound with optimised slopes (:func:`lpverify.verify.applicable_methods`),
and an instance none of them decides is "unknown". Results go to CSV in VNN-COMP's layout (benchmark, onnx,
vnnlib, prepare time, result, run time) and a summary table compares them
with the published per-instance results: any verdict of ours that
contradicts the published consensus (the official "True Result" of the 2022
scoring log where there is one, else the tools' majority) is a soundness bug
and makes the script exit 1.

    python benchmarks/vnncomp.py                       # mnist_fc 2022 and eran 2021
    python benchmarks/vnncomp.py --max-timeout 30      # cap every instance's timeout
    python benchmarks/vnncomp.py --quick               # a handful of instances, short timeouts (CI)
    python benchmarks/vnncomp.py --workers 2 --threads 1   # two instances at a time, one thread each
    python benchmarks/vnncomp.py --cluster dask://HOST:8786 --threads 1   # on a Dask cluster's workers

Instances run in ``--workers`` processes of ``--threads`` threads each
(:func:`lpverify.pool.pool_map`), or with ``--cluster`` on the workers of a
Dask cluster (``dask scheduler``, then ``dask worker HOST:8786 --nthreads 1``
on each machine, with lpverify installed and --root at the same path), each
instance with ``--threads`` torch threads; timings are per instance, wall clock.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import lpverify as lv
from lpverify.attacks import pgd_objective
from lpverify.io import atomic_write_text, write_csv
from lpverify.onnx_import import OnnxImportError, reference_outputs
from lpverify.pool import CLUSTER_HELP, ClusterError, dask_address, open_cluster, pool_map
from lpverify.verify import property_ball, verify_property
from lpverify.vnnlib import VnnlibProperty, read_vnnlib

ROOT = Path(__file__).resolve().parents[1]
VNNCOMP = ROOT.parent / "shared" / "data" / "vnncomp"
BENCHMARKS = {  # name → (folder, instances file, published results folder/file pattern, edition)
    "mnist_fc": ("mnist_fc", "instances.csv", "results_2022/mnist_fc", 2022),
    "eran": ("eran_2021", "eran_instances.csv", "results_2021", 2021),
}
QUICK = {"mnist_fc": [0, 1, 3], "eran": [0, 1, 36]}  # instance rows run by --quick
TOLERANCE = 1e-6  # a re-checked counterexample must violate by at least this much


@dataclass(frozen=True)
class Instance:
    benchmark: str
    onnx: Path
    vnnlib: Path
    timeout: float
    key: tuple[str, str]  # (onnx stem, vnnlib name) without folders or .gz


def _key(onnx: str, vnnlib: str) -> tuple[str, str]:
    strip = lambda p: Path(p).name.removesuffix(".gz")  # noqa: E731
    return strip(onnx).removesuffix(".onnx"), strip(vnnlib)


def _existing(path: Path) -> Path:
    """The file or its gzipped copy."""
    if path.exists():
        return path
    gz = path.with_name(path.name + ".gz")
    return gz if gz.exists() else path


def instances(name: str, root: Path) -> list[Instance]:
    folder, listing, _, _ = BENCHMARKS[name]
    base = root / folder
    rows = [r for r in csv.reader((base / listing).read_text().splitlines()) if r]
    return [Instance(name, _existing(base / onnx), _existing(base / prop), float(t), _key(onnx, prop)) for onnx, prop, t in rows]


def published(name: str, root: Path) -> dict[tuple[str, str], dict[str, str]]:
    """Per instance, each tool's published result (sat / unsat / other), normalised."""
    _, _, results, _ = BENCHMARKS[name]
    out: dict[tuple[str, str], dict[str, str]] = {}
    bench = "mnist_fc" if name == "mnist_fc" else "eran"
    for path in sorted((root / results).glob("*.csv")):
        for row in csv.reader(path.read_text().splitlines()):
            if len(row) < 5 or row[0] != bench:
                continue
            verdict = {"holds": "unsat", "violated": "sat"}.get(row[4].strip().lower(), row[4].strip().lower())
            out.setdefault(_key(row[1], row[2]), {})[path.stem] = verdict
    return out


def consensus(tools: dict[str, str]) -> str:
    """The majority of the tools' sat/unsat answers; "conflict" on a tie, "" when nobody answered."""
    votes = Counter(v for v in tools.values() if v in ("sat", "unsat"))
    if not votes:
        return ""
    (first, n1), *rest = votes.most_common()
    return "conflict" if rest and rest[0][1] == n1 else first


def official(name: str, root: Path) -> dict[tuple[str, str], str]:
    """The "True Result" per instance of VNN-COMP 2022's scoring log (mnist_fc), where it has one.

    The organisers settle disagreements by checking the counterexamples, so
    this overrides a majority vote (one tool claimed unsat on a sat instance).
    """
    log = root / "results_2022" / "SCORING_results.txt"
    if name != "mnist_fc" or not log.exists():
        return {}
    out, inside, row = {}, False, None
    for line in log.read_text().splitlines():
        if line.startswith("Category "):
            inside = line.startswith("Category mnist_fc")
        elif inside and line.startswith("Row: ['"):
            row = line[len("Row: ['"):].split("'")[0]  # e.g. mnist-net_256x2-prop_0_0.03
        elif inside and line.startswith("True Result:") and row:
            net, prop = row.split("-prop_")
            verdict = line.split(":", 1)[1].strip().lower()
            if verdict in ("sat", "unsat"):
                out[(net, f"prop_{prop}.vnnlib")] = verdict
            row = None
    return out


def _checked(onnx: Path, prop: VnnlibProperty, z: np.ndarray) -> bool:
    """A counterexample is real: inside the box and violating the property on the ONNX file's own output."""
    y = reference_outputs(onnx, z.reshape(1, -1))[0].astype(np.float64)
    return prop.input_contains(z, tol=1e-7) and prop.violated_by(y, tol=-TOLERANCE)


def run_instance(inst: Instance, net: lv.Network, timeout: float, pgd_steps: int, method: str = "chain") -> tuple[str, str, float]:
    """One instance by branch and bound or by the chain: (result, method that decided, seconds).

    VNN-COMP's rule applies: a verdict reached after the timeout is a timeout.
    """
    start = time.perf_counter()
    if "bab" not in lv.applicable_methods(net) and "milp" not in lv.applicable_methods(net):
        result, method = _relaxations(inst, net, pgd_steps, start, timeout)
    elif method == "bab" and "bab" in lv.applicable_methods(net):
        result, method = _bab(inst, net, timeout)
    else:
        result, method = _chain(inst, net, timeout, pgd_steps, start)
    elapsed = time.perf_counter() - start
    if elapsed > timeout and result != "timeout":
        return "timeout", f"{method} (late {result})", elapsed
    return result, method, elapsed


def _bab(inst: Instance, net: lv.Network, timeout: float) -> tuple[str, str]:
    prop = read_vnnlib(inst.vnnlib, math.prod(net.input_shape), net.n_outputs)
    verdict = verify_property(net, prop, "bab", time_limit=timeout)
    by = "falsifier" if verdict.reason.endswith(" 0 leaves bounded") else "bab"
    if verdict.status == "verified":
        return "unsat", by
    if verdict.status == "violated" and _checked(inst.onnx, prop, np.asarray(verdict.witness)):
        return "sat", by
    return ("timeout" if "time limit" in verdict.reason else "unknown"), by


_NETWORKS: dict[Path, lv.Network | str] = {}  # per process: each ONNX file is read once


def _network(path: Path) -> tuple[lv.Network | str, float]:
    start = time.perf_counter()
    if path not in _NETWORKS:
        try:
            _NETWORKS[path] = lv.load_onnx(path)
        except OnnxImportError as err:
            _NETWORKS[path] = str(err)
    return _NETWORKS[path], time.perf_counter() - start


def _job(job: tuple[Instance, float, int, str]) -> tuple[str, str, float, float]:
    """One instance in a worker: (result, decided by, seconds, prepare seconds)."""
    inst, timeout, pgd_steps, method = job
    net, prepare = _network(inst.onnx)
    if isinstance(net, str):
        return "unsupported", net.split(";")[0], 0.0, prepare
    result, by, seconds = run_instance(inst, net, timeout, pgd_steps, method)
    print(f"  ... {inst.key[0]:<18} {inst.key[1]:<42} {result:<11} {seconds:7.2f} s  {by}", flush=True)
    return result, by, seconds, prepare


def _pgd(inst: Instance, net: lv.Network, prop: VnnlibProperty, pgd_steps: int) -> bool:
    """PGD on the property's margins found a counterexample that the ONNX file confirms."""
    if not all(a.shape[0] == 1 for a, _ in prop.disjuncts):
        return False
    ball = property_ball(net, prop)
    c, d, _ = prop.objectives()
    z, value = pgd_objective(net, ball.lo, ball.hi, torch.as_tensor(c).unsqueeze(0), torch.as_tensor(d).unsqueeze(0),
                             steps=pgd_steps, generator=torch.Generator().manual_seed(0))
    return float(value[0]) < 0 and _checked(inst.onnx, prop, z[0].detach().numpy())


def _relaxations(inst: Instance, net: lv.Network, pgd_steps: int, start: float, timeout: float) -> tuple[str, str]:
    """A network without an exact encoding (sigmoid, tanh): PGD, then dual and dual-opt; else unknown."""
    prop = read_vnnlib(inst.vnnlib, math.prod(net.input_shape), net.n_outputs)
    if _pgd(inst, net, prop, pgd_steps):
        return "sat", "pgd"
    for method in ("dual", "dual-opt"):
        if time.perf_counter() - start > timeout:
            return "timeout", method
        if verify_property(net, prop, method).status == "verified":
            return "unsat", method
    return "unknown", "dual-opt"


def _chain(inst: Instance, net: lv.Network, timeout: float, pgd_steps: int, start: float) -> tuple[str, str]:
    prop = read_vnnlib(inst.vnnlib, math.prod(net.input_shape), net.n_outputs)
    if _pgd(inst, net, prop, pgd_steps):
        return "sat", "pgd"
    for method in ("dual", "lp"):
        if verify_property(net, prop, method).status == "verified":
            return "unsat", method
    left = timeout - (time.perf_counter() - start)
    if left <= 0:
        return "timeout", ""
    verdict = verify_property(net, prop, "milp", time_limit=left)
    if verdict.status == "verified":
        return "unsat", "milp"
    if verdict.status == "violated" and _checked(inst.onnx, prop, np.asarray(verdict.witness)):
        return "sat", "milp"
    return ("timeout" if "time" in verdict.reason else "unknown"), "milp"


def relative(text: str, root: Path) -> str:
    """A message with the vnncomp folder's path dropped: committed results name inputs relative to --root."""
    for prefix in {f"{root.resolve()}/", f"{root}/"}:
        text = text.replace(prefix, "")
    return text


def run_benchmark(name: str, args: argparse.Namespace) -> tuple[list[dict], list[str]]:
    todo = instances(name, args.root)
    if args.quick:
        todo = [todo[i] for i in QUICK[name]]
    truth, settled = published(name, args.root), official(name, args.root)
    rows, problems = [], []
    timeouts = [min(inst.timeout, args.max_timeout) if args.max_timeout else inst.timeout for inst in todo]
    jobs = [(inst, t, args.pgd_steps, args.method) for inst, t in zip(todo, timeouts)]
    results = pool_map(_job, jobs, workers=args.workers, threads=args.threads, executor=getattr(args, "executor", None))
    for inst, timeout, (result, method, seconds, prepare) in zip(todo, timeouts, results):
        tools = truth.get(inst.key, {})
        agreed = settled.get(inst.key) or consensus(tools)
        if result in ("sat", "unsat") and agreed in ("sat", "unsat") and result != agreed:
            problems.append(f"{inst.key}: lpverify says {result}, the published consensus is {agreed}")
        rows.append({"benchmark": name, "onnx": inst.key[0], "vnnlib": inst.key[1], "prepare_time": prepare,
                     "result": result, "time": seconds, "timeout": timeout, "decided_by": relative(method, args.root), "consensus": agreed,
                     "alpha_beta_crown": tools.get("alpha_beta_crown", tools.get("a-b-CROWN", "")),
                     "command": args.command, "note": args.note})
        print(f"{name:<9} {inst.key[0]:<18} {inst.key[1]:<42} {result:<11} {seconds:7.2f} s  {method:<6} "
              f"(consensus: {agreed or '-'})", flush=True)
    return rows, problems


def summary(rows: list[dict], name: str, root: Path) -> list[str]:
    ours = Counter(r["result"] for r in rows)
    keys = {(r["onnx"], r["vnnlib"]) for r in rows}
    runs = sorted({(r.get("command", ""), r.get("note", "")) for r in rows})
    lines = [f"### {name} ({len(rows)} instances)", ""]
    for command, note in runs:
        lines += [f"Command: `{command}`." + (f" {note}" if note else ""), ""]
    lines += ["| tool | unsat | sat | timeout / unknown / other |", "|---|---:|---:|---:|",
             f"| **lpverify** | {ours['unsat']} | {ours['sat']} | {len(rows) - ours['unsat'] - ours['sat']}"
             + (f" (of which {ours['unsupported']} unsupported)" if ours["unsupported"] else "") + " |"]
    per_tool: dict[str, Counter] = {}
    for key, tools in published(name, root).items():
        if key in keys:
            for tool, verdict in tools.items():
                per_tool.setdefault(tool, Counter())[verdict] += 1
    for tool, counts in sorted(per_tool.items()):
        total = sum(counts.values())
        lines.append(f"| {tool} | {counts['unsat']} | {counts['sat']} | {total - counts['unsat'] - counts['sat']} |")
    agree = sum(r["consensus"] == r["result"] for r in rows)
    decided = sum(r["consensus"] in ("sat", "unsat") for r in rows)
    lines += ["", f"lpverify agrees with the published consensus on {agree} of the {decided} instances that have one; "
              f"it contradicts it on {sum(r['result'] in ('sat', 'unsat') and r['consensus'] in ('sat', 'unsat') and r['result'] != r['consensus'] for r in rows)}.",
              f"Decided by: {dict(Counter(r['decided_by'] for r in rows if r['result'] in ('sat', 'unsat')))}.", ""]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--benchmark", choices=(*BENCHMARKS, "all"), default="all")
    parser.add_argument("--root", type=Path, default=VNNCOMP, help="the vnncomp folder")
    parser.add_argument("--max-timeout", type=float, default=None, help="cap every instance's timeout (s)")
    parser.add_argument("--quick", action="store_true", help="three instances per benchmark, timeouts capped at 20 s")
    parser.add_argument("--pgd-steps", type=int, default=50)
    parser.add_argument("--method", choices=("bab", "chain"), default="bab",
                        help="branch and bound (default) or the chain PGD, dual, LP, MILP")
    parser.add_argument("--workers", type=int, default=1, help="instances run at once, each in its own process")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per worker (per instance with --cluster)")
    parser.add_argument("--cluster", default=None, metavar="ADDRESS", help=CLUSTER_HELP)
    parser.add_argument("--write-results", action="store_true",
                        help="refresh the committed benchmarks/results/; without it a run writes to out/vnncomp/")
    parser.add_argument("--results", type=Path, default=None, help="folder for the CSV and markdown files (overrides the above)")
    parser.add_argument("--note", default="", help="a line for the summary (e.g. that the machine was shared)")
    parser.add_argument("--from-csv", type=Path, default=None,
                        help="rebuild the summary from the CSV of an earlier run instead of running")
    args = parser.parse_args(argv)
    if args.cluster is not None:
        try:
            dask_address(args.cluster)
        except ClusterError as err:
            parser.error(str(err))
    args.results = args.results or (ROOT / "benchmarks" / "results" if args.write_results else ROOT / "out" / "vnncomp")
    print(f"writing results to {args.results}", flush=True)
    if args.quick and args.max_timeout is None:
        args.max_timeout = 20.0
    torch.set_num_threads(args.threads)
    names = list(BENCHMARKS) if args.benchmark == "all" else [args.benchmark]
    all_rows, problems, lines = [], [], ["# VNN-COMP benchmarks", ""]
    command = "python benchmarks/vnncomp.py" + (" --quick" if args.quick else "") + (
        f" --max-timeout {args.max_timeout:g}" if args.max_timeout and not args.quick else "") + (
        f" --benchmark {args.benchmark}" if args.benchmark != "all" else "") + (
        f" --method {args.method}" if args.method != "bab" else "") + (
        f" --workers {args.workers}" if args.workers != 1 else "") + (
        f" --threads {args.threads}" if args.threads != 2 else "") + (
        f" --cluster {args.cluster}" if args.cluster else "")
    threads = args.threads * max(1, args.workers)
    where = (f"instances on the Dask cluster's workers, {args.threads} thread(s) each" if args.cluster
             else f"{threads} threads in all: {max(1, args.workers)} worker(s) of {args.threads}")
    args.command = command
    args.note = f"{where[0].upper()}{where[1:]}." + (f" {args.note}" if args.note else "")
    lines += ["Published results: VNN-COMP 2022 (mnist_fc) and 2021 (eran), each tool on its own hardware, "
              "with the full timeouts. Each benchmark names the run its rows come from: a run of one benchmark "
              "(`--benchmark`) keeps the other's rows.", ""]
    earlier = list(csv.DictReader(args.from_csv.open())) if args.from_csv else None
    suffix = "_quick" if args.quick else ""
    kept = []  # the rows of benchmarks not run now, from the results being refreshed
    if earlier is None and args.benchmark != "all" and (args.results / f"vnncomp{suffix}.csv").is_file():
        with (args.results / f"vnncomp{suffix}.csv").open() as f:
            kept = [r for r in csv.DictReader(f) if r["benchmark"] not in names]
    args.executor = None
    try:
        if args.cluster is not None and earlier is None:
            args.executor = open_cluster(args.cluster, threads=args.threads, workers=args.workers)
        for name in names:
            if earlier is None:
                rows, p = run_benchmark(name, args)
            else:
                rows, p = [{**r, "decided_by": relative(r["decided_by"], args.root)} for r in earlier if r["benchmark"] == name], []
            all_rows += rows
            problems += p
    except ClusterError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        if args.executor is not None:
            args.executor.shutdown(cancel_futures=True)
    all_rows += kept
    all_rows.sort(key=lambda r: list(BENCHMARKS).index(r["benchmark"]))  # stable: each benchmark's own order
    for name in BENCHMARKS:
        rows = [r for r in all_rows if r["benchmark"] == name]
        if rows:
            lines += summary(rows, name, args.root)
    write_csv(args.results / f"vnncomp{suffix}.csv", all_rows, list(all_rows[0]))
    atomic_write_text(args.results / f"vnncomp{suffix}.md", "\n".join(lines))
    print("\n".join(lines))
    for p in problems:
        print("SOUNDNESS BUG:", p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
