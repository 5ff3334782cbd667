"""Outward-rounded arithmetic: bounds that hold for the real-valued network (MATH.md §11).

Every certified number of lpverify is computed in ordinary floating point and
then widened by an a-priori bound on its rounding error. The one fact used is
Higham's (Accuracy and Stability of Numerical Algorithms, §3.1 and Lemma 3.3):
a quantity computed by at most ``n`` chained roundings of sums and products,
in any order, differs from its exact value by at most ``γ_n · m`` with
``γ_n = n·u / (1 − n·u)``, where ``m`` is the same computation carried out on
absolute values (its *magnitude*) and ``u`` the unit roundoff of the dtype.
Each bound method therefore computes a value and its magnitude side by side
and reports ``value − error_bound(magnitude, n)``, rounded down.

Assumptions (SOUNDNESS.md): IEEE arithmetic, round to nearest; matrix
products and convolutions evaluated as sums of products (no Winograd, FFT or
Strassen algorithms, no TF32: on a GPU set
``torch.backends.cuda.matmul.allow_tf32 = False`` and
``torch.backends.cudnn.allow_tf32 = False``).
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

# The dtypes bounds are computed in: half precision is upcast (exactly) to float32.
WORKING_DTYPES = (torch.float32, torch.float64)


def unit_roundoff(dtype: torch.dtype) -> float:
    """u = 2⁻²⁴ for float32, 2⁻⁵³ for float64."""
    return torch.finfo(dtype).eps / 2


def gamma(n: int, dtype: torch.dtype) -> float:
    """``γ_n = n·u / (1 − n·u)`` (inf once n·u ≥ 1/2: no bound is claimed then).

    Returned slightly enlarged (1%), which covers the rounding of the
    magnitude it multiplies and of the product itself.
    """
    nu = n * unit_roundoff(dtype)
    if nu >= 0.5:
        return math.inf
    return 1.01 * nu / (1.0 - nu)


def error_bound(magnitude: Tensor, n: int) -> Tensor:
    """An upper bound on the rounding error of a value computed with n chained roundings.

    ``magnitude`` is the computation's magnitude (≥ 0) in the working dtype.
    The term ``n · tiny`` covers products that fell into the subnormal range,
    where the relative bound does not hold. NaN and inf propagate: no bound.
    """
    finfo = torch.finfo(magnitude.dtype)
    return magnitude * gamma(n, magnitude.dtype) + n * finfo.tiny


def down(x: Tensor) -> Tensor:
    """The next float below x: ≤ the exact result of the one operation that rounded to nearest into x."""
    return torch.nextafter(x, torch.full_like(x, -math.inf))


def up(x: Tensor) -> Tensor:
    """The next float above x."""
    return torch.nextafter(x, torch.full_like(x, math.inf))


def widen(lower: Tensor, upper: Tensor, error: Tensor) -> tuple[Tensor, Tensor]:
    """``[lower − error, upper + error]``, the subtraction and addition rounded outward."""
    return down(lower - error), up(upper + error)


def lower_bound(value: Tensor, error: Tensor) -> Tensor:
    """``value − error`` rounded down: a bound below the exact quantity that ``value`` approximates."""
    return down(value - error)


def to_dtype_down(t: Tensor, dtype: torch.dtype) -> Tensor:
    """t converted to dtype and rounded toward −∞ (t is not increased)."""
    r = t.to(dtype)
    wider = torch.promote_types(t.dtype, dtype)
    return torch.where(r.to(wider) > t.to(wider), down(r), r)


def to_dtype_up(t: Tensor, dtype: torch.dtype) -> Tensor:
    """t converted to dtype and rounded toward +∞ (t is not decreased)."""
    r = t.to(dtype)
    wider = torch.promote_types(t.dtype, dtype)
    return torch.where(r.to(wider) < t.to(wider), up(r), r)


def enclosing_mid_rad(lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
    """A midpoint and radius with ``[mid − rad, mid + rad] ⊇ [lower, upper]`` in exact arithmetic."""
    mid = lower / 2 + upper / 2
    rad = torch.maximum(up(upper - mid), up(mid - lower)).clamp(min=0)
    return mid, rad


def working_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """The dtype bounds are computed in: the widest given, at least float32.

    Half-precision numbers are exact in float32, so upcasting loses nothing;
    a note says so, since bounds then describe the real-valued network, not
    a half-precision evaluation of it (SOUNDNESS.md).
    """
    widest = torch.float32
    for dtype in dtypes:
        if not dtype.is_floating_point:
            raise TypeError(f"expected a floating-point dtype, got {dtype}")
        if dtype not in WORKING_DTYPES:
            warnings.warn(
                f"{dtype} values are upcast exactly to float32 for bounds; certificates hold for the "
                "real-valued network with these weights, witnesses are checked in the model's dtype",
                stacklevel=3,
            )
            continue
        widest = torch.promote_types(widest, dtype)
    return widest


__all__ = [
    "down",
    "enclosing_mid_rad",
    "error_bound",
    "gamma",
    "lower_bound",
    "to_dtype_down",
    "to_dtype_up",
    "unit_roundoff",
    "up",
    "widen",
    "working_dtype",
]
