"""MNIST-format idx readers on the real files, and clear errors on broken ones."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch
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


@pytest.mark.shared
def test_shared_files_pass_their_checksums_and_a_corrupt_copy_fails(tmp_path):
    from lpverify.data import DataError, verify

    root = shared_path("data")
    assert set(verify("mnist", root)) == set(verify("fashion_mnist", root))
    copy = tmp_path / "mnist"
    copy.mkdir()
    for f in shared_path("data", "mnist").iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    labels = copy / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(labels.read_bytes()))
    raw[100] = (raw[100] + 1) % 10  # one label changed: same length, valid idx, wrong data
    labels.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: md5"):
        verify("mnist", tmp_path)


@pytest.mark.shared
def test_download_fetches_verifies_and_keeps_good_files(tmp_path):
    from lpverify.data import DataError, download

    mirror = shared_path("data", "fashion_mnist").as_uri()
    folder = download("fashion_mnist", tmp_path, mirrors=[mirror])
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"{s}.gz" for s in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    )
    x, y = load_mnist(folder, "test")
    assert np.bincount(y.numpy()).tolist() == [1000] * 10
    download("fashion_mnist", tmp_path, mirrors=["file:///nonexistent"])  # all present and correct: nothing fetched
    with pytest.raises(DataError, match="could not download"):
        download("mnist", tmp_path / "other", mirrors=[mirror])  # Fashion files under MNIST names: wrong md5


def test_data_dir_resolution(monkeypatch, tmp_path):
    from lpverify.data import data_dir

    monkeypatch.delenv("LPVERIFY_DATA", raising=False)
    assert data_dir() == Path("data")
    monkeypatch.setenv("LPVERIFY_DATA", str(tmp_path))
    assert data_dir() == tmp_path
    assert data_dir("given") == Path("given")


def test_missing_data_directory_says_how_to_get_it(tmp_path):
    from lpverify.data import load_dataset

    with pytest.raises(FileNotFoundError, match="does not exist.*LPVERIFY_DATA.*download"):
        load_dataset("mnist", "test", tmp_path / "nowhere")


def test_toy_2d_points_are_separated():
    from lpverify.data import toy_2d

    x, y = toy_2d(12, 0.16, seed=3)
    assert x.shape == (12, 2) and ((x >= 0) & (x <= 1)).all()
    gaps = (x[:, None] - x[None]).abs().max(-1).values + torch.eye(12)
    assert float(gaps.min()) >= 0.16
    assert set(y.tolist()) <= {0, 1}
    with pytest.raises(ValueError, match="could not place"):
        toy_2d(200, 0.16, seed=0, max_tries=2000)


@pytest.mark.shared
def test_har_reader_on_the_real_labels(tmp_path):
    from lpverify.data import load_har

    folder = tmp_path / "test"
    folder.mkdir()
    labels = shared_path("data", "har", "UCI_HAR_Dataset", "test", "y_test.txt").read_text()
    (folder / "y_test.txt").write_text(labels)
    n = len(labels.split())
    rows = np.random.default_rng(0).normal(size=(n, 561))
    np.savetxt(folder / "X_test.txt", rows, fmt="%.6e")
    x, y = load_har(tmp_path, "test")
    assert x.shape == (2947, 561) and np.bincount(y.numpy()).tolist() == [496, 471, 420, 491, 532, 537]
    np.testing.assert_allclose(x.numpy(), rows, rtol=1e-5)
    with pytest.raises(FileNotFoundError, match="UCI HAR"):
        load_har(shared_path("data", "har", "UCI_HAR_Dataset"), "test")  # the shared copy has no features


def test_svhn_reader_on_a_mat_file(tmp_path):
    from scipy.io import savemat

    from lpverify.data import DataError, load_dataset

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(32, 32, 3, 5), dtype=np.uint8)
    labels = np.array([[10], [1], [2], [9], [10]])
    (tmp_path / "svhn").mkdir()
    savemat(tmp_path / "svhn" / "test_32x32.mat", {"X": images, "y": labels})
    x, y = load_dataset("svhn", "test", tmp_path)
    assert x.shape == (5, 3, 32, 32) and y.tolist() == [0, 1, 2, 9, 0]
    np.testing.assert_allclose(x[1, 2].numpy(), images[:, :, 2, 1] / 255.0, rtol=1e-6)
    with pytest.raises(FileNotFoundError, match="SVHN"):
        load_dataset("svhn", "train", tmp_path)
    (tmp_path / "svhn" / "train_32x32.mat").write_bytes(b"not a mat file")
    with pytest.raises(DataError, match="not an SVHN .mat file"):
        load_dataset("svhn", "train", tmp_path)
