"""Independent jobs over processes or a Dask cluster (lpverify.pool): the serial results, in order, on every executor.

The cluster tests run a Dask cluster inside this process (``processes=False``:
one worker of one thread, no process to spawn), reached either directly or by
its scheduler's TCP address, as a remote cluster would be.
"""

from __future__ import annotations

import csv
import importlib.util
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import lpverify as lv
from conftest import random_mlp, shared_path
from lpverify.bab import BabOptions, bab
from lpverify.pool import ClusterError, ClusterExecutor, dask_address, open_cluster, pool_map

distributed = pytest.importorskip("distributed")  # in the test extra; skipped only where lpverify[cluster] is not installed

ROOT = Path(__file__).resolve().parents[1]
FAST = BabOptions(root_steps=20, steps=10, refine_steps=5, restarts=20, attack_steps=20, input_split_dims=0)


def _decide(seed: int) -> str:
    """A small property decided by branch and bound (verified or violated, whatever the machine's speed)."""
    net = lv.Network.from_torch(random_mlp([2, 6, 6, 2], seed).double())
    x = torch.rand(1, 2, generator=torch.Generator().manual_seed(seed + 7), dtype=torch.float64)
    return str(bab(net, lv.LinfBall(x, 0.3), torch.tensor([[1.0, -1.0]], dtype=torch.float64), time_limit=None,
                   options=FAST).status)


def _verify(seed: int) -> list[str]:
    """lv.verify of a tiny random network's robustness at each bound method's verdicts."""
    net = lv.Network.from_torch(random_mlp([4, 8, 3], seed).double())
    x = torch.rand(1, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    label = int(net(x).argmax())
    c = torch.eye(3, dtype=torch.float64)[label] - torch.eye(3, dtype=torch.float64)
    c = torch.cat([c[:label], c[label + 1:]]).unsqueeze(0)
    return [str(v.status) for method in ("interval", "dual", "lp")
            for v in lv.verify(net, lv.LinfBall(x, 0.05), c, method=method)]


def _threads(_: object) -> int:
    return torch.get_num_threads()


def _fail(item: int) -> int:
    if item == 1:
        raise ValueError(f"job {item} failed")
    return item


@pytest.fixture()
def keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def cluster(keep_threads):
    """An executor on an in-process cluster of one worker of one thread, by the cluster itself."""
    pool = open_cluster("local", threads=1, workers=1, processes=False, timeout=10)
    yield pool
    pool.shutdown()


@pytest.fixture()
def scheduler(keep_threads):
    """The TCP address of an in-process cluster's scheduler, for what connects by address (the CLI, benchmarks)."""
    local = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None,
                                     silence_logs=40, host="127.0.0.1", protocol="tcp")
    yield local.scheduler_address
    local.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_addresses():
    assert dask_address("dask://10.0.0.1:8786") == "tcp://10.0.0.1:8786"
    assert dask_address("tcp://h:1") == "tcp://h:1" and dask_address("h:1") == "h:1"
    assert dask_address("local") is None and dask_address("dask://local") is None
    for bad in ("ray://h:1", "dask://", "host-without-port"):
        with pytest.raises(ClusterError, match="--cluster"):
            dask_address(bad)


def test_importing_lpverify_does_not_import_dask():
    code = ("import sys, lpverify, lpverify.cli, lpverify.pool, lpverify.runner; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


def test_without_dask_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed raises ImportError
    with pytest.raises(ClusterError, match=r"pip install 'lpverify\[cluster\]'"):
        pool_map(_threads, [1, 2], cluster="local")


def test_a_bad_address_fails_quickly_and_clearly():
    started = time.perf_counter()
    with pytest.raises(ClusterError, match="no Dask scheduler answered"):
        open_cluster(f"dask://127.0.0.1:{_free_port()}", timeout=1)
    assert time.perf_counter() - started < 15


def test_cluster_verdicts_are_the_serial_ones_in_order(cluster):
    assert isinstance(cluster, ClusterExecutor) and cluster.slots == 1
    seeds = [0, 1, 2, 3]
    serial = pool_map(_decide, seeds)
    assert set(serial) <= {"verified", "violated"}
    assert pool_map(_decide, seeds, executor=cluster) == serial
    serial = pool_map(_verify, seeds)
    assert pool_map(_verify, seeds, executor=cluster) == serial


def test_every_job_runs_with_the_asked_thread_count(keep_threads):
    torch.set_num_threads(1)
    pool = open_cluster("local", threads=3, processes=False, timeout=10)
    try:
        assert pool_map(_threads, range(4), executor=pool) == [3] * 4
    finally:
        pool.shutdown()


def test_a_job_error_reaches_the_caller(cluster):
    with pytest.raises(ValueError, match="job 1 failed"):
        pool_map(_fail, [0, 1, 2], executor=cluster)


def test_a_cluster_by_address(scheduler):
    assert pool_map(_decide, [0, 1], threads=1, cluster=scheduler) == pool_map(_decide, [0, 1])


@pytest.mark.shared
def test_vnncomp_on_a_cluster_gives_the_committed_verdicts(scheduler, tmp_path):
    shared_path("data", "vnncomp", "mnist_fc")
    spec = importlib.util.spec_from_file_location("benchmarks_vnncomp", ROOT / "benchmarks" / "vnncomp.py")
    vnncomp = importlib.util.module_from_spec(spec)
    sys.modules["benchmarks_vnncomp"] = vnncomp
    spec.loader.exec_module(vnncomp)
    argv = ["--quick", "--benchmark", "mnist_fc", "--results", str(tmp_path), "--threads", "1", "--cluster", scheduler]
    assert vnncomp.main(argv) == 0
    ours = [(r["vnnlib"], r["result"]) for r in csv.DictReader((tmp_path / "vnncomp_quick.csv").open())]
    committed = [(r["vnnlib"], r["result"]) for r in csv.DictReader((ROOT / "benchmarks" / "results" / "vnncomp_quick.csv").open())
                 if r["benchmark"] == "mnist_fc"]
    assert ours == committed
    assert "--cluster" in (tmp_path / "vnncomp_quick.md").read_text()
