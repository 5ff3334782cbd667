"""Checks of what a user gives the ``lpverify`` command, in one place, before any work.

Each check raises :class:`lpverify.runner.InputError` (or, as an argparse
type, ``argparse.ArgumentTypeError``) with one line naming the flag, the
value and what is expected; the command prints it without a traceback and
exits with code 2.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Callable

from .runner import InputError

FIGURE_FORMATS = ("png", "pdf", "svg")


# -- argparse types: a value that cannot be right is a usage error ------------------------------------


def count(minimum: int = 1) -> Callable[[str], int]:
    """An integer ≥ ``minimum`` (counts: --n, --epochs, --workers, widths, ...)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be ≥ {minimum}, got {value}")
        return value

    parse.__name__ = "count"
    return parse


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite, got {text}")
    return value


def nonnegative(text: str) -> float:
    """A finite float ≥ 0 (ε, tolerances)."""
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be ≥ 0, got {value}")
    return value


def positive(text: str) -> float:
    """A finite float > 0 (seconds, learning rates, ε bounds of a search)."""
    value = _float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def finite(text: str) -> float:
    """Any finite float (clamp bounds)."""
    return _float(text)


# -- checks that need the file system or torch ---------------------------------------------------------------


def existing_file(path: Path, flag: str) -> Path:
    if not path.exists():
        raise InputError(f"{flag} {path} does not exist")
    if path.is_dir():
        raise InputError(f"{flag} {path} is a directory; name a file")
    return path


def device(name: str) -> str:
    """A torch device that exists here: cpu, cuda[:i] with that GPU present, or mps when available."""
    import torch

    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise InputError(f"--device {name!r} is not a torch device; use cpu or cuda[:i]") from None
    if dev.type == "cpu":
        return name
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {name}: no CUDA device is available here; use cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
        return name
    if dev.type == "mps" and torch.backends.mps.is_available():
        return name
    raise InputError(f"--device {name}: not available here; use cpu or cuda[:i]")


def figure_path(path: Path) -> Path:
    """A figure file whose suffix names a format matplotlib writes here."""
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in FIGURE_FORMATS:
        raise InputError(f"--figure {path}: the suffix must be one of {', '.join('.' + f for f in FIGURE_FORMATS)}")
    return path


def finite_network(net, source: Path) -> None:
    """Every weight and bias finite: a NaN weight would otherwise turn into a verdict."""
    import torch

    for i, p in enumerate(net.parameters()):
        if not torch.isfinite(p).all():
            raise InputError(f"{source}: weight tensor {i} of the network holds NaN or inf")


def finite_inputs(x, what: str) -> None:
    import torch

    bad = ~torch.isfinite(x.reshape(len(x), -1)).all(1)
    if bad.any():
        raise InputError(f"{what}: {int(bad.sum())} input(s) hold NaN or inf, the first at position {int(bad.nonzero()[0])}")


__all__ = ["FIGURE_FORMATS", "count", "device", "existing_file", "figure_path", "finite", "finite_inputs",
           "finite_network", "nonnegative", "positive"]
