"""Independent jobs over a pool of processes (instances of a benchmark, examples of a data set).

Each worker is a fresh interpreter (the "spawn" start method: torch's thread
pools do not survive a fork) with its own intra-op thread count, so
``workers × threads`` is the CPU budget. Results come back in the order of
the inputs, whichever worker finished first; ``workers <= 1`` runs in this
process, which is what a serial run and a parallel run are compared against.

A cluster is one more executor: any ``concurrent.futures.Executor`` can be
passed as ``executor`` (e.g. ``ray.util.multiprocessing.Pool``'s or a Dask
``distributed.Client.get_executor()``), with the same function and items.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import Callable, Iterable, TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def pool_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    workers: int = 1,
    threads: int = 1,
    executor: Executor | None = None,
) -> list[R]:
    """``[fn(item) for item in items]``, computed by ``workers`` processes of ``threads`` threads each.

    ``fn`` and the items must pickle (a module-level function). ``executor``
    overrides the local pool (a cluster's executor); ``workers`` is then ignored.
    """
    items = list(items)
    if executor is not None:
        return list(executor.map(fn, items))
    if workers <= 1 or len(items) <= 1:
        return [fn(item) for item in items]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(items)), mp_context=context,
                             initializer=_init_worker, initargs=(threads,)) as pool:
        return list(pool.map(fn, items))


__all__ = ["pool_map"]
