"""Atomic result writes."""

from __future__ import annotations

import csv

import pytest

from lpverify.io import atomic_write_bytes, write_csv


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
