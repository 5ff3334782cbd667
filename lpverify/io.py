"""File helpers: atomic writes for results and checkpoints (a crash never leaves a
half-written file), and reading files that may be gzipped."""

from __future__ import annotations

import csv
import gzip
import io
import os
import tempfile
from pathlib import Path
from typing import Iterable, Mapping, Sequence


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_csv(path: str | Path, rows: Iterable[Mapping[str, object]], fields: Sequence[str]) -> Path:
    """Write rows (dicts keyed by ``fields``) as CSV, atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row[k] for k in fields})
    return atomic_write_text(path, buf.getvalue())


def read_maybe_gzipped(path: Path, what: str, error: type[ValueError] = ValueError) -> bytes:
    """The bytes of a file stored plain or gzipped (told apart by content, not by name).

    A missing file raises FileNotFoundError and a broken gzip stream ``error``,
    both naming ``what`` the file should hold and its path.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {path} does not exist")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise error(f"{path} looks gzipped but cannot be decompressed: {e}") from e
    return raw
