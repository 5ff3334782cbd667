"""File helpers: atomic writes for results and checkpoints (a crash never leaves a
half-written file), and reading files that may be gzipped."""

from __future__ import annotations

import csv
import glob
import gzip
import io
import os
import re
import tempfile
from pathlib import Path
from typing import Iterable, Mapping, Sequence


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it into place.

    The file gets the mode a plain ``open(path, "w")`` would give it: an
    existing file's mode, else 0666 less the umask (the temporary file's own
    0600 would otherwise leak through the rename). Temporary files that a
    killed writer of the same path left behind are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    mode = path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[^.]+\.tmp$")


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Remove the temporary files of :func:`atomic_write_bytes` for ``path`` whose writer process is gone."""
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        match = _TEMPORARY.match(tmp.name)
        if match is None or match["name"] != path.name or _alive(int(match["pid"])):
            continue
        try:
            tmp.unlink()
            removed.append(tmp)
        except FileNotFoundError:
            pass
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process writes one file at a time: an older temporary of ours is stale
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
