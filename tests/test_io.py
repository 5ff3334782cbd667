"""Atomic result writes."""

from __future__ import annotations

import csv
import os
import stat
import subprocess
import sys

import pytest

from lpverify.io import atomic_write_bytes, remove_stale_temporaries, write_csv


def test_write_csv_round_trips(tmp_path):
    path = write_csv(tmp_path / "sub" / "r.csv", [{"a": 1, "b": 2.5}, {"a": 3, "b": -1}], ["a", "b"])
    assert list(csv.DictReader(path.open())) == [{"a": "1", "b": "2.5"}, {"a": "3", "b": "-1"}]


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "r.txt"
    atomic_write_bytes(path, b"old")

    def disk_full(fd):
        raise OSError("disk full")

    monkeypatch.setattr("lpverify.io.os.fsync", disk_full)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.txt"]  # no temporary left behind


def test_written_files_get_the_umask_mode_not_the_temporary_files(tmp_path):
    old = os.umask(0o027)
    try:
        path = atomic_write_bytes(tmp_path / "r.txt", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    path.chmod(0o600)
    atomic_write_bytes(path, b"y")  # an existing file keeps its mode
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_temporaries_of_a_killed_writer_are_removed_and_a_live_ones_kept(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".r.txt.{dead.pid}.abc.tmp"
    live = tmp_path / f".r.txt.{os.getppid()}.abc.tmp"  # the parent process is alive
    other = tmp_path / f".other.txt.{dead.pid}.abc.tmp"
    for p in (stale, live, other):
        p.write_bytes(b"partial")
    atomic_write_bytes(tmp_path / "r.txt", b"new")
    assert not stale.exists() and live.exists() and other.exists()
    assert remove_stale_temporaries(tmp_path / "other.txt") == [other]
