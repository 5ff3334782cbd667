"""Rows that survive: streamed as they finish, resumable, under time limits, serial or over processes.

The ``lpverify`` command runs a *task* (verify, tightness, attack, ...) over
*items* (test examples, VNNLIB properties, VNN-COMP instances). This module
owns what every task shares, so that each subcommand is only its per-item
work:

* :class:`RowSink`: each finished row is appended to ``--output`` (JSON lines
  or CSV) and flushed at once; ``--resume`` keeps the rows with an outcome
  and re-runs the rest; the path is checked before any work.
* :func:`run_task`: chunks of items in order, serially, over a process pool
  (``--workers``) or on a Dask cluster (``--cluster``, :mod:`lpverify.pool`),
  each chunk under its share of the per-item time limit and of the total
  budget; SIGINT abandons the current chunk, never a row's write, and the run
  ends with a summary.
* :class:`ExitCode` and :func:`exit_code`: the verdicts as the command's exit
  status.

The library prints nothing; progress (tqdm) goes to stderr.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import signal
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections import OrderedDict
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum, IntEnum
from pathlib import Path
from typing import Callable, Hashable, Iterator, Mapping, Sequence

Row = dict[str, object]


class ExitCode(IntEnum):
    """The command's exit status (documented in ``lpverify --help`` and the README)."""

    VERIFIED = 0  # every property verified / certified (or a measurement without verdicts finished)
    INTERNAL_ERROR = 1  # a bug: please report it (``--debug`` shows the traceback)
    INPUT_ERROR = 2  # a usage or input error: nothing, or not every row, could be run
    VIOLATED = 3  # some property violated (its counterexample is in the output)
    UNKNOWN = 4  # some property unknown or timed out, none violated
    INTERRUPTED = 130  # Ctrl-C: the finished rows are in --output, --resume continues


class RowStatus(str, Enum):
    """The outcome of one row; the verdict statuses of :class:`lpverify.verify.Status` and three more."""

    VERIFIED = "verified"
    VIOLATED = "violated"
    UNKNOWN = "unknown"
    DONE = "done"  # a measurement without a verdict (tightness, max-eps without --eps)
    INPUT_ERROR = "input-error"  # this row's input could not be used (named in the reason)
    INTERNAL_ERROR = "internal-error"

    def __str__(self) -> str:
        return self.value

    @property
    def final(self) -> bool:
        """Whether ``--resume`` keeps the row (an error is retried: the input may have been fixed)."""
        return self not in (RowStatus.INPUT_ERROR, RowStatus.INTERNAL_ERROR)


class InputError(Exception):
    """A problem with what the user gave: reported in one line, exit code 2."""


# -- limits --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """Wall-clock seconds: per item (model building included) and for the whole run."""

    time_limit: float
    budget: float

    def chunk_seconds(self, n_items: int, budget_left: float) -> float:
        return min(self.time_limit * n_items, budget_left)


# -- output files ----------------------------------------------------------------------------


class OutputKind(Enum):
    JSONL = ".jsonl"
    CSV = ".csv"


def output_kind(path: Path) -> OutputKind:
    """The stream format of an output path, from its suffix."""
    for kind in OutputKind:
        if path.name.lower().endswith(kind.value):
            return kind
    raise InputError(f"--output {path}: name a .jsonl or .csv file (rows are appended as they finish)")


def check_writable_file(path: Path, flag: str) -> None:
    """A file path that can be written: not a directory, its folder created if missing, a probe file written there.

    Permission bits alone do not tell (root passes them; a read-only mount
    does not show in them), so a temporary file is created and removed.
    """
    if path.is_dir():
        raise InputError(f"{flag} {path} is a directory; name a file")
    existing = next((p for p in path.parents if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise InputError(f"{flag} {path}: {existing} is a file, not a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            with path.open("a"):
                pass
        else:
            fd, probe = tempfile.mkstemp(prefix=f".{path.name}.probe.", dir=path.parent)
            os.close(fd)
            os.unlink(probe)
    except OSError as err:
        raise InputError(f"{flag} {path}: cannot write there ({err.strerror or err})") from None


def check_writable_dir(path: Path, flag: str) -> None:
    """A folder path that exists as a folder or can be created, and where a file can be written."""
    if path.exists() and not path.is_dir():
        raise InputError(f"{flag} {path} is a file; name a folder")
    existing = next((p for p in path.parents if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise InputError(f"{flag} {path}: {existing} is a file, not a folder")
    check_writable_file(path / ".lpverify-probe", flag)


def _cell(value: object) -> object:
    """A JSON-friendly value: non-finite floats as strings, arrays as lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Enum):
        return value.value
    return value


def _parse_cell(text: str) -> object:
    """A CSV cell read back: int, float, bool or the text."""
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return {"True": True, "False": False}.get(text, text)


def read_rows(path: Path, columns: Sequence[str] | None = None) -> list[Row]:
    """The complete rows of a streamed output (a last line cut short by a kill is dropped).

    ``columns`` names the fields of a CSV written without a header line.
    """
    kind = output_kind(path)
    text = path.read_text(encoding="utf-8")
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    if kind is OutputKind.CSV:
        reader = csv.DictReader(io.StringIO(text), fieldnames=list(columns) if columns else None)
        return [{k: _parse_cell(v) for k, v in r.items()} for r in reader]
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise InputError(f"--resume: {path}:{n} is not a JSON line ({err.msg})") from err
    return rows


@contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold SIGINT while a row is written; deliver it after (a row is never half-written)."""
    pending: list[bool] = []
    previous = signal.getsignal(signal.SIGINT)
    try:
        signal.signal(signal.SIGINT, lambda *_: pending.append(True))
    except ValueError:  # not the main thread: nothing to defer
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if pending:
            raise KeyboardInterrupt


class RowSink:
    """``--output``: rows appended and flushed one by one, JSON lines or CSV with fixed columns.

    With ``resume`` the rows an earlier run finished (any status but an error)
    are kept, rewritten atomically without a cut-short last line, and their
    keys reported by :attr:`done`; otherwise the file starts empty.
    """

    def __init__(
        self,
        path: Path,
        columns: Sequence[str],
        key: Callable[[Mapping[str, object]], Hashable],
        resume: bool,
        *,
        header: bool = True,
        status_of: Callable[[Mapping[str, object]], RowStatus] | None = None,
    ):
        from .io import atomic_write_text

        self.path, self.kind, self.columns, self.header = path, output_kind(path), list(columns), header
        status_of = status_of or row_status
        check_writable_file(path, "--output")
        kept: list[Row] = []
        if resume and path.exists():
            if self.kind is OutputKind.CSV and header:
                first = path.read_text(encoding="utf-8").split("\n", 1)[0].split(",")
                if first != self.columns and first != [""]:
                    raise InputError(f"--resume: {path} has columns {first}, this command writes {self.columns}")
            try:
                kept = [r for r in read_rows(path, None if header else self.columns) if status_of(r).final]
                self.done: set[Hashable] = {key(r) for r in kept}
            except (KeyError, ValueError, TypeError) as err:
                raise InputError(f"--resume: {path} does not hold this command's rows ({err})") from err
        self.previous: list[Row] = kept
        self.done = {key(r) for r in kept}
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, self._header() + "".join(self._line(r) for r in kept))
        self._file = path.open("a", encoding="utf-8", newline="")

    def _header(self) -> str:
        return ",".join(self.columns) + "\n" if self.kind is OutputKind.CSV and self.header else ""

    def _line(self, row: Mapping[str, object]) -> str:
        if self.kind is OutputKind.JSONL:
            return json.dumps({k: _cell(v) for k, v in row.items()}) + "\n"
        buf = io.StringIO()
        csv.DictWriter(buf, fieldnames=self.columns, extrasaction="ignore", lineterminator="\n").writerow(
            {k: _cell(v) for k, v in row.items() if not isinstance(_cell(v), list)}
        )
        return buf.getvalue()

    def append(self, row: Mapping[str, object]) -> None:
        with _sigint_deferred():
            self._file.write(self._line(row))
            self._file.flush()

    def close(self) -> None:
        self._file.close()


def row_status(row: Mapping[str, object]) -> RowStatus:
    """A row's status field (a row without one is a measurement: done)."""
    try:
        return RowStatus(row.get("status", RowStatus.DONE))
    except ValueError:
        return RowStatus.INTERNAL_ERROR


# -- running ---------------------------------------------------------------------------------------


Setup = Callable[[argparse.Namespace], object]
"""Builds a task's context (network, data, ...) from the parsed arguments; raises InputError."""
Work = Callable[[object, Sequence[Hashable], float], list[Row]]
"""(context, a chunk of items, seconds for the chunk) → one row per item, in order."""


@dataclass(frozen=True)
class Task:
    """A subcommand's per-item work; ``setup`` and ``work`` are module-level functions (they cross processes)."""

    setup: Setup
    work: Work
    items: Callable[[object], Sequence[Hashable]]  # the items of a context, in output order
    key_row: Callable[[Hashable], Row]  # the identifying fields of an item's row
    key: Callable[[Mapping[str, object]], Hashable]  # a row's item (for --resume)
    columns: Sequence[str]  # the CSV columns
    chunk: int = 1  # items per call of work (batched methods); the same whatever --workers
    status_of: Callable[[Mapping[str, object]], RowStatus] = row_status
    header: bool = True  # a CSV header line (VNN-COMP's results have none)


@dataclass
class RunResult:
    rows: list[Row]  # every row: resumed ones and new ones, in item order
    interrupted: bool = False
    stopped_by_budget: bool = False
    remaining: int = 0


_CONTEXT: object = None  # a worker process's context, built once by _init_worker


def _init_worker(setup: Setup, args: argparse.Namespace, threads: int) -> None:
    """A pool process: its own context from the same arguments (spawned: nothing is shared)."""
    import torch

    global _CONTEXT
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops the pool
    torch.set_num_threads(threads)
    _CONTEXT = setup(args)


def _work_in_worker(work: Work, chunk: Sequence[Hashable], seconds: float, key_row, debug: bool) -> list[Row]:
    return guarded(work, _CONTEXT, chunk, seconds, key_row, debug)


_CLUSTER_CONTEXTS: OrderedDict[str, object] = OrderedDict()  # a cluster worker's contexts, by run
_CLUSTER_LOCK = threading.Lock()


def _cluster_context(run: str, setup: Setup, args: argparse.Namespace) -> object:
    """A cluster worker's context of a run, built once per worker process (the last few runs are kept)."""
    with _CLUSTER_LOCK:
        if run not in _CLUSTER_CONTEXTS:
            _CLUSTER_CONTEXTS[run] = setup(args)
            while len(_CLUSTER_CONTEXTS) > 2:
                _CLUSTER_CONTEXTS.popitem(last=False)
        return _CLUSTER_CONTEXTS[run]


def _work_on_cluster(run: str, setup: Setup, args: argparse.Namespace, work: Work, chunk: Sequence[Hashable],
                     seconds: float, key_row, debug: bool) -> list[Row]:
    """A chunk on a Dask worker; a context that cannot be built there (a file missing on that machine) errs its rows."""
    try:
        context = _cluster_context(run, setup, args)
    except InputError as err:
        status, reason = RowStatus.INPUT_ERROR, f"on a cluster worker: {err}"
    except Exception as err:  # noqa: BLE001 - reported in the row
        status, reason = RowStatus.INTERNAL_ERROR, f"on a cluster worker: {type(err).__name__}: {err}"
        if debug:
            traceback.print_exc(file=sys.stderr)
    else:
        return guarded(work, context, chunk, seconds, key_row, debug)
    return [{**key_row(item), "status": status, "reason": reason} for item in chunk]


def guarded(work: Work, context: object, chunk: Sequence[Hashable], seconds: float, key_row, debug: bool) -> list[Row]:
    """The chunk's rows; an exception becomes an error row per item (the batch goes on)."""
    try:
        return work(context, chunk, seconds)
    except KeyboardInterrupt:
        raise
    except InputError as err:
        status, reason = RowStatus.INPUT_ERROR, str(err)
    except Exception as err:  # noqa: BLE001 - reported in the row; the run ends with exit code 1
        status, reason = RowStatus.INTERNAL_ERROR, f"{type(err).__name__}: {err}"
        if debug:
            traceback.print_exc(file=sys.stderr)
    return [{**key_row(item), "status": status, "reason": reason} for item in chunk]


def _chunks(items: Sequence[Hashable], size: int) -> list[list[Hashable]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def run_task(
    task: Task,
    args: argparse.Namespace,
    context: object,
    limits: Limits,
    sink: RowSink | None,
    *,
    workers: int = 1,
    threads: int | None = None,
    cluster: str | None = None,
    progress: bool = False,
    debug: bool = False,
    desc: str = "",
) -> RunResult:
    """Every item's row, streamed to ``sink`` in item order; stops on Ctrl-C or when the budget is spent.

    ``workers`` processes of ``threads`` torch threads each (default: an equal share of the cores),
    or, with ``cluster`` (a Dask address or 'local', see :func:`lpverify.pool.open_cluster`), the
    workers of a Dask cluster, each chunk with ``threads`` torch threads (default 1). The rows are
    the same, in the same order.
    """
    from tqdm import tqdm

    started = time.perf_counter()
    items = list(task.items(context))
    done = sink.done if sink is not None else set()
    previous = {task.key(r): r for r in (sink.previous if sink is not None else [])}
    todo = [i for i in items if i not in done]
    chunks = _chunks(todo, task.chunk)
    new: dict[Hashable, Row] = {}
    result = RunResult(rows=[])
    bar = tqdm(total=len(todo), desc=desc, unit="row", disable=not progress, file=sys.stderr, dynamic_ncols=True)

    def budget_left() -> float:
        return limits.budget - (time.perf_counter() - started)

    def record(rows: list[Row]) -> None:
        for row in rows:
            if sink is not None:
                sink.append(row)
            new[task.key(row)] = row
        bar.update(len(rows))

    try:
        if cluster is not None and chunks:
            from .pool import open_cluster

            pool = open_cluster(cluster, threads=threads or 1, workers=workers)
            run = uuid.uuid4().hex
            submit = lambda chunk, seconds: pool.submit(  # noqa: E731
                _work_on_cluster, run, task.setup, args, task.work, chunk, seconds, task.key_row, debug)
            _run_pool(pool, submit, pool.slots, chunks, limits, budget_left, record, result)
        elif workers <= 1:
            if threads is not None:
                import torch

                torch.set_num_threads(threads)
            for chunk in chunks:
                if budget_left() <= 0:
                    result.stopped_by_budget = True
                    break
                seconds = limits.chunk_seconds(len(chunk), budget_left())
                record(guarded(task.work, context, chunk, seconds, task.key_row, debug))
        else:
            import multiprocessing

            pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
                                       initargs=(task.setup, args, threads or max(1, (os.cpu_count() or 1) // workers)))
            submit = lambda chunk, seconds: pool.submit(  # noqa: E731
                _work_in_worker, task.work, chunk, seconds, task.key_row, debug)
            _run_pool(pool, submit, workers, chunks, limits, budget_left, record, result)
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        bar.close()
        if sink is not None:
            sink.close()
    result.rows = [new.get(i) or previous[i] for i in items if i in new or i in previous]
    result.remaining = len(items) - len(result.rows)
    return result


def _run_pool(pool: Executor, submit: Callable[[list, float], Future], slots: int, chunks, limits, budget_left, record,
              result) -> None:
    """Chunks over a pool (spawned processes or a cluster), at most two per slot in flight, rows recorded in order."""
    pending: list[Future] = []
    queue = iter(chunks)
    try:
        while True:
            while len(pending) < 2 * slots:
                chunk = next(queue, None)
                if chunk is None:
                    break
                if budget_left() <= 0:
                    result.stopped_by_budget = True
                    break
                seconds = limits.chunk_seconds(len(chunk), budget_left())
                pending.append(submit(chunk, seconds))
            if not pending:
                break
            record(pending.pop(0).result())
            if result.stopped_by_budget:
                for future in pending:
                    record(future.result())
                pending = []
                break
    except KeyboardInterrupt:
        result.interrupted = True
        raise
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=not result.interrupted, cancel_futures=True)
        if result.interrupted or any(not f.done() for f in pending):
            for process in list(getattr(pool, "_processes", {}).values()):
                process.terminate()


# -- exit status and summary -------------------------------------------------------------------------------


def exit_code(
    rows: Sequence[Mapping[str, object]], result: RunResult | None = None, status_of=row_status
) -> ExitCode:
    """Interrupted, then an internal error, violated, an input error, unknown (rows not run count as unknown)."""
    statuses = {status_of(r) for r in rows}
    if result is not None and result.interrupted:
        return ExitCode.INTERRUPTED
    if RowStatus.INTERNAL_ERROR in statuses:
        return ExitCode.INTERNAL_ERROR
    if RowStatus.VIOLATED in statuses:
        return ExitCode.VIOLATED
    if RowStatus.INPUT_ERROR in statuses:
        return ExitCode.INPUT_ERROR
    if RowStatus.UNKNOWN in statuses or (result is not None and result.remaining):
        return ExitCode.UNKNOWN
    return ExitCode.VERIFIED


def summary(rows: Sequence[Mapping[str, object]], result: RunResult, output: Path | None, status_of=row_status) -> str:
    """One line: counts per status, and what an interrupted or budget-stopped run left to do."""
    counts: dict[str, int] = {}
    for r in rows:
        counts[str(status_of(r))] = counts.get(str(status_of(r)), 0) + 1
    text = ", ".join(f"{k} {n}" for k, n in counts.items()) or "no rows"
    if result.interrupted or result.stopped_by_budget:
        why = "interrupted" if result.interrupted else "--budget spent"
        where = f" in {output}" if output is not None else ""
        again = "; rerun with --resume to continue" if output is not None else ""
        text += f" ({why}: {len(rows)} rows done{where}, {result.remaining} not run{again})"
    return text


__all__ = ["ExitCode", "InputError", "Limits", "RowSink", "RowStatus", "Task", "exit_code", "read_rows", "run_task", "summary"]
