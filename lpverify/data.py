"""Datasets in their published formats, where to find them, and how to fetch them.

* MNIST-format idx files (MNIST, Fashion-MNIST), gzipped or raw;
* the UCI HAR text format (561 features per line, labels 1–6);
* SVHN's cropped-digit ``.mat`` files (``train_32x32.mat``, ``test_32x32.mat``);
* the 2D toy problem of Appendix B.1.

A data directory is resolved from an argument, then ``$LPVERIFY_DATA``, then
``./data``; each dataset lives in a subfolder of it (``mnist``,
``fashion_mnist``, ``har/UCI HAR Dataset``, ``svhn``). :func:`download` fetches MNIST and
Fashion-MNIST from their official locations and checks the md5 of every
decompressed file.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

# idx type codes (the third byte of the magic number) → numpy dtype, big-endian.
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


# md5 of the decompressed files: the same whichever gzip wrapper a mirror serves.
CHECKSUMS = {
    "mnist": {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
}
MIRRORS = {
    "mnist": ["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"],
    "fashion_mnist": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
}
HAR_SOURCE = "https://archive.ics.uci.edu/dataset/240/human+activity+recognition+using+smartphones"
SVHN_SOURCE = "http://ufldl.stanford.edu/housenumbers/"


class DataError(ValueError):
    """A data file is missing, corrupt, or fails its checksum; the message says which and what to do."""


def data_dir(root: str | Path | None = None) -> Path:
    """The data directory: ``root``, else ``$LPVERIFY_DATA``, else ``./data``."""
    if root is not None:
        return Path(root)
    env = os.environ.get("LPVERIFY_DATA")
    return Path(env) if env else Path("data")


def _md5_of_payload(path: Path) -> str:
    digest = hashlib.md5()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(name: str, root: str | Path | None = None) -> dict[str, Path]:
    """Check every file of dataset ``name`` under ``root/name`` against its md5; returns their paths."""
    if name not in CHECKSUMS:
        raise ValueError(f"no checksums for {name!r}; known: {sorted(CHECKSUMS)}")
    folder = data_dir(root) / name
    found = {}
    for stem, expected in CHECKSUMS[name].items():
        path = _find(folder, stem)
        try:
            actual = _md5_of_payload(path)
        except (OSError, EOFError) as err:
            raise DataError(f"{path}: cannot be read ({err}); delete it and run lpverify.data.download({name!r})") from err
        if actual != expected:
            raise DataError(
                f"{path}: md5 {actual} of its contents, expected {expected}; the file is corrupt or not the "
                f"official one: delete it and run lpverify.data.download({name!r})"
            )
        found[stem] = path
    return found


def download(name: str, root: str | Path | None = None, *, mirrors: list[str] | None = None, timeout: float = 60.0) -> Path:
    """Fetch MNIST or Fashion-MNIST into ``root/name`` and verify the checksums; returns the folder.

    Files already present and correct are kept. Each file is written to a
    temporary name and moved into place only once its md5 matches, so an
    interrupted download leaves nothing half-written. ``mirrors`` (base URLs,
    ``file://`` included) replaces the official locations.
    """
    if name not in CHECKSUMS:
        raise ValueError(f"cannot download {name!r}; downloadable: {sorted(CHECKSUMS)}. HAR: see {HAR_SOURCE}")
    folder = data_dir(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    for stem, expected in CHECKSUMS[name].items():
        target = folder / (stem + ".gz")
        if target.is_file() and _md5_of_payload(target) == expected:
            continue
        errors = []
        for base in mirrors or MIRRORS[name]:
            url = base.rstrip("/") + "/" + stem + ".gz"
            fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=".gz", dir=folder)
            try:
                with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
                    shutil.copyfileobj(response, out)
                actual = _md5_of_payload(Path(tmp))
                if actual != expected:
                    raise DataError(f"md5 {actual}, expected {expected}")
                os.replace(tmp, target)
                break
            except Exception as err:  # try the next mirror; report them all if none works
                errors.append(f"{url}: {err}")
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        else:
            raise DataError(f"could not download {stem}.gz for {name}:\n  " + "\n  ".join(errors))
    return folder


def read_idx(path: str | Path) -> np.ndarray:
    """Read an idx file (raw or gzipped) into an array of its declared type and shape.

    Raises a ValueError naming the file when the header or payload length is wrong.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"idx file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise ValueError(f"{path}: cannot be read as {'gzip' if opener is gzip.open else 'raw'} idx: {err}") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ValueError(f"{path}: not an idx file (bad magic number {raw[:4].hex()})")
    dtype, ndim = np.dtype(_IDX_TYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated idx header")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"{path}: corrupt idx file, {len(raw)} bytes where the header {dims} implies {expected}")
    return np.frombuffer(raw, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _find(root: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (root / name).is_file():
            return root / name
    if not root.is_dir():
        raise FileNotFoundError(
            f"data directory {root} does not exist: pass the folder that holds the dataset, set LPVERIFY_DATA, "
            f"or fetch it with lpverify.data.download"
        )
    raise FileNotFoundError(f"{root}: missing {stem}.gz (or {stem}); fetch it with lpverify.data.download")


def load_mnist(root: str | Path, split: str = "test") -> tuple[Tensor, Tensor]:
    """MNIST-format images and labels from the folder ``root`` (MNIST or Fashion-MNIST).

    Returns images as float32 in [0, 1], shape (n, 1, 28, 28), and int64 labels (n,).
    """
    if split not in MNIST_FILES:
        raise ValueError(f"split must be one of {sorted(MNIST_FILES)}, got {split!r}")
    root = Path(root)
    img_stem, lab_stem = MNIST_FILES[split]
    images = read_idx(_find(root, img_stem))
    labels = read_idx(_find(root, lab_stem))
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(f"{root}: images {images.shape} and labels {labels.shape} do not form a dataset")
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return x, torch.from_numpy(labels.astype(np.int64))


def load_dataset(name: str, split: str = "test", root: str | Path | None = None) -> tuple[Tensor, Tensor]:
    """``mnist`` or ``fashion_mnist`` from the data directory (see :func:`data_dir`), or ``har``."""
    if name in ("mnist", "fashion_mnist"):
        return load_mnist(data_dir(root) / name, split)
    if name == "har":
        folder = data_dir(root) / "har"
        named = [folder / "UCI HAR Dataset", folder / "UCI_HAR_Dataset"]
        return load_har(next((f for f in named if f.is_dir()), named[0]), split)
    if name == "svhn":
        return load_svhn(data_dir(root) / "svhn", split)
    raise ValueError(f"unknown dataset {name!r}; known: mnist, fashion_mnist, har, svhn")


def load_svhn(root: str | Path, split: str = "test") -> tuple[Tensor, Tensor]:
    """SVHN cropped digits from ``root/{split}_32x32.mat``: images (n, 3, 32, 32) in [0, 1], labels 0–9 (the file's 10 is 0)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    path = Path(root) / f"{split}_32x32.mat"
    if not path.is_file():
        raise FileNotFoundError(f"missing {path}: the SVHN cropped digits (format 2) are at {SVHN_SOURCE}")
    from scipy.io import loadmat

    try:
        mat = loadmat(path)
        images, labels = mat["X"], mat["y"].ravel().astype(np.int64)
    except Exception as err:
        raise DataError(f"{path}: not an SVHN .mat file ({err})") from err
    if images.ndim != 4 or images.shape[:3] != (32, 32, 3) or images.shape[3] != labels.size:
        raise DataError(f"{path}: images {images.shape} and labels {labels.shape}; expected (32, 32, 3, n) and (n,)")
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(3, 2, 0, 1)).astype(np.float32) / 255.0)
    return x, torch.from_numpy(labels % 10)


def load_har(root: str | Path, split: str = "test") -> tuple[Tensor, Tensor]:
    """UCI HAR features (n, 561) float32 and labels 0–5 (the files hold 1–6) from ``root/split/``."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder = Path(root) / split
    x_path, y_path = folder / f"X_{split}.txt", folder / f"y_{split}.txt"
    for path in (x_path, y_path):
        if not path.is_file():
            raise FileNotFoundError(f"missing {path}: the UCI HAR dataset ('UCI HAR Dataset' folder) is at {HAR_SOURCE}")
    try:
        x = np.loadtxt(x_path, dtype=np.float32, ndmin=2)
        y = np.loadtxt(y_path, dtype=np.int64, ndmin=1)
    except ValueError as err:
        raise DataError(f"{folder}: not in the UCI HAR text format ({err})") from err
    if x.shape[1] != 561 or x.shape[0] != y.shape[0]:
        raise DataError(f"{folder}: {x.shape} features and {y.shape} labels; expected (n, 561) and (n,)")
    if y.min() < 1 or y.max() > 6:
        raise DataError(f"{y_path}: labels must lie in 1..6, got {y.min()}..{y.max()}")
    return torch.from_numpy(x), torch.from_numpy(y - 1)


def toy_2d(n: int = 12, min_distance: float = 0.16, seed: int = 0, max_tries: int = 100_000) -> tuple[Tensor, Tensor]:
    """The 2D toy problem of Appendix B.1: n points in [0, 1]², pairwise ℓ∞ distance ≥ ``min_distance``, random labels."""
    gen = torch.Generator().manual_seed(seed)
    points: list[Tensor] = []
    for _ in range(max_tries):
        p = torch.rand(2, generator=gen, dtype=torch.float64)
        if all(float((p - q).abs().max()) >= min_distance for q in points):
            points.append(p)
            if len(points) == n:
                break
    else:
        raise ValueError(f"could not place {n} points at l_inf distance {min_distance} in {max_tries} tries")
    labels = torch.randint(0, 2, (n,), generator=gen)
    return torch.stack(points).float(), labels
