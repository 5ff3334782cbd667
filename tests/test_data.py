"""MNIST-format idx readers on the real files, and clear errors on broken ones."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from lpverify.data import load_mnist, read_idx
from conftest import shared_path

MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.shared
def test_mnist_test_set_has_the_known_class_counts():
    x, y = load_mnist(shared_path("data", "mnist"), "test")
    assert x.shape == (10000, 1, 28, 28) and x.dtype.is_floating_point
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert np.bincount(y.numpy()).tolist() == MNIST_TEST_COUNTS


@pytest.mark.shared
def test_raw_and_gzipped_idx_read_the_same(tmp_path):
    gz = shared_path("data", "mnist", "t10k-labels-idx1-ubyte.gz")
    raw = tmp_path / "t10k-labels-idx1-ubyte"
    raw.write_bytes(gzip.decompress(gz.read_bytes()))
    np.testing.assert_array_equal(read_idx(gz), read_idx(raw))


def write_idx(path, payload: bytes, dims=(3,), type_code=0x08):
    header = bytes([0, 0, type_code, len(dims)]) + b"".join(int(d).to_bytes(4, "big") for d in dims)
    path.write_bytes(header + payload)
    return path


def test_read_idx_of_a_small_file(tmp_path):
    path = write_idx(tmp_path / "a.idx", bytes([1, 2, 3, 4, 5, 6]), dims=(2, 3))
    np.testing.assert_array_equal(read_idx(path), [[1, 2, 3], [4, 5, 6]])


def test_truncated_idx_names_the_file(tmp_path):
    path = write_idx(tmp_path / "short.idx", bytes([1, 2]), dims=(3,))
    with pytest.raises(ValueError, match="short.idx: corrupt idx file"):
        read_idx(path)


def test_bad_magic_and_bad_gzip(tmp_path):
    path = tmp_path / "noise.idx"
    path.write_bytes(b"PK\x03\x04 not an idx")
    with pytest.raises(ValueError, match="not an idx file"):
        read_idx(path)
    broken = tmp_path / "broken.gz"
    broken.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(ValueError, match="broken.gz"):
        read_idx(broken)


def test_missing_files_say_which(tmp_path):
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
        load_mnist(tmp_path, "test")
    with pytest.raises(ValueError, match="split"):
        load_mnist(tmp_path, "validation")
