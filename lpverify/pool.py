"""Independent jobs over a pool of processes or a Dask cluster (instances of a benchmark, examples of a data set).

Each worker is a fresh interpreter (the "spawn" start method: torch's thread
pools do not survive a fork) with its own intra-op thread count, so
``workers × threads`` is the CPU budget. Results come back in the order of
the inputs, whichever worker finished first; ``workers <= 1`` runs in this
process, which is what a serial run and a parallel run are compared against.

A cluster is one more executor. ``cluster="dask://HOST:PORT"`` (or any Dask
address, ``tcp://HOST:PORT``) sends the same jobs to the workers of a running
Dask scheduler, ``cluster="local"`` to a Dask ``LocalCluster`` of ``workers``
processes started on this machine (:func:`open_cluster`); every job sets
torch's thread count to ``threads`` in the thread that runs it. Dask is an
optional dependency (``pip install 'lpverify[cluster]'``), imported only when
a cluster is asked for. Any other ``concurrent.futures.Executor`` can be
passed as ``executor``.

The workers of a cluster need the same environment (lpverify and its
dependencies) and the files the jobs name, at the same paths (a shared file
system).
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from typing import Callable, Iterable, TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")

CLUSTER_EXTRA = "lpverify[cluster]"
CONNECT_TIMEOUT = 20.0  # seconds to reach a scheduler, and for it to have a worker
CLUSTER_HELP = ("run on a Dask cluster: dask://HOST:PORT (a scheduler started with `dask scheduler`, "
                "workers with `dask worker HOST:PORT --nthreads 1`) or 'local' (a LocalCluster of --workers "
                f"processes on this machine); needs pip install '{CLUSTER_EXTRA}'")


class ClusterError(RuntimeError):
    """A cluster that cannot be used: Dask not installed, an address that does not answer, a scheduler without workers."""


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def _threaded(threads: int, fn: Callable[..., R], *args: object) -> R:
    """``fn(*args)`` with torch's intra-op thread count set first, in the thread that runs it (a cluster worker's)."""
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return fn(*args)


def dask_address(cluster: str) -> str | None:
    """The Dask scheduler address of ``--cluster`` (``dask://HOST:PORT`` → ``tcp://HOST:PORT``), None for 'local'."""
    address = cluster.strip()
    if address in ("local", "dask://local"):
        return None
    if address.startswith("dask://"):
        address = "tcp://" + address[len("dask://"):]
    scheme, sep, rest = address.partition("://")
    if sep and scheme not in ("tcp", "tls", "ucx", "inproc", "ws", "wss"):
        raise ClusterError(f"--cluster {cluster}: not a Dask address (dask://HOST:PORT, tcp://HOST:PORT or 'local')")
    if not (rest if sep else address) or ":" not in (rest if sep else address):
        raise ClusterError(f"--cluster {cluster}: expected HOST:PORT, e.g. dask://127.0.0.1:8786, or 'local'")
    return address


def _import_distributed():
    try:
        import distributed
    except ImportError as err:
        raise ClusterError(f"--cluster needs Dask's distributed scheduler, which is not installed: "
                           f"pip install '{CLUSTER_EXTRA}' ({err})") from None
    return distributed


class ClusterExecutor(Executor):
    """A Dask cluster as a ``concurrent.futures`` executor: every job sets torch's thread count before it runs.

    ``slots`` is the number of jobs the cluster runs at once (its workers' threads, summed). ``shutdown``
    cancels what has not finished, closes the connection and stops a cluster this executor started.
    """

    def __init__(self, client, threads: int, cluster=None) -> None:
        self.client = client
        self.threads = threads
        self._cluster = cluster
        self._futures: list = []

    @property
    def slots(self) -> int:
        return max(1, sum(self.client.nthreads().values()))

    def submit(self, fn: Callable[..., R], /, *args: object, **kwargs: object) -> Future:
        if kwargs:
            raise TypeError("ClusterExecutor.submit takes positional arguments only")
        dask_future = self.client.submit(_threaded, self.threads, fn, *args, pure=False)
        self._futures.append(dask_future)
        future: Future = Future()
        future.set_running_or_notify_cancel()

        def done(f) -> None:
            if future.done():
                return
            if f.cancelled():
                future.set_exception(ClusterError("the job was cancelled on the cluster"))
                return
            try:
                future.set_result(f.result())
            except BaseException as err:  # noqa: BLE001 - the job's own exception, raised by result()
                future.set_exception(err)

        dask_future.add_done_callback(done)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        pending = [f for f in self._futures if not f.done()]
        if pending and (cancel_futures or not wait):
            try:
                self.client.cancel(pending)
            except Exception:  # noqa: BLE001 - the connection may already be gone
                pass
        elif pending:
            _import_distributed().wait(pending)
        self._futures = []
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()


def open_cluster(
    cluster: str,
    *,
    threads: int = 1,
    workers: int = 1,
    timeout: float | None = None,
    processes: bool = True,
) -> ClusterExecutor:
    """An executor on the Dask cluster ``cluster`` (see :func:`dask_address`), checked to have a worker.

    'local' starts a ``LocalCluster`` of ``workers`` processes of one job at a time each
    (``processes=False``: threads of this process, for tests). Raises :class:`ClusterError`
    within about ``timeout`` seconds (default :data:`CONNECT_TIMEOUT`) when Dask is missing,
    the scheduler does not answer, or it has no worker.
    """
    timeout = CONNECT_TIMEOUT if timeout is None else timeout
    address = dask_address(cluster)
    distributed = _import_distributed()
    local = None
    try:
        if address is None:
            local = distributed.LocalCluster(n_workers=max(1, workers), threads_per_worker=1, processes=processes,
                                             dashboard_address=None, silence_logs=40)
            client = distributed.Client(local, timeout=timeout)
        else:
            client = distributed.Client(address, timeout=timeout)
    except (OSError, TimeoutError) as err:
        if local is not None:
            local.close()
        raise ClusterError(f"--cluster {cluster}: no Dask scheduler answered at {address} within {timeout:g} s "
                           f"(start one with `dask scheduler`): {err}") from None
    try:
        client.wait_for_workers(1, timeout=timeout)
    except (OSError, TimeoutError) as err:
        client.close()
        if local is not None:
            local.close()
        raise ClusterError(f"--cluster {cluster}: the scheduler has no worker after {timeout:g} s "
                           f"(start some with `dask worker {address} --nthreads 1`): {err}") from None
    return ClusterExecutor(client, threads, local)


def pool_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    workers: int = 1,
    threads: int = 1,
    executor: Executor | None = None,
    cluster: str | None = None,
) -> list[R]:
    """``[fn(item) for item in items]``, computed by ``workers`` processes of ``threads`` threads each.

    ``fn`` and the items must pickle (a module-level function). ``cluster`` (a Dask address or
    'local', see :func:`open_cluster`) runs them on a Dask cluster instead, each job with
    ``threads`` torch threads; ``executor`` overrides the local pool with any executor. With
    either, ``workers`` is ignored (but for the size of a 'local' cluster).
    """
    items = list(items)
    if cluster is not None:
        pool = open_cluster(cluster, threads=threads, workers=workers)
        try:
            return list(pool.map(fn, items))
        finally:
            pool.shutdown(cancel_futures=True)
    if executor is not None:
        return list(executor.map(fn, items))
    if workers <= 1 or len(items) <= 1:
        return [fn(item) for item in items]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(items)), mp_context=context,
                             initializer=_init_worker, initargs=(threads,)) as pool:
        return list(pool.map(fn, items))


__all__ = ["CLUSTER_EXTRA", "ClusterError", "ClusterExecutor", "dask_address", "open_cluster", "pool_map"]
