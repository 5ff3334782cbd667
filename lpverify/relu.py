"""The ReLU relaxation, written once for every bound method (MATH.md §2, §3, §6).

With valid pre-activation bounds ℓ ≤ ẑ ≤ u a unit is in one of three states,
each with its set S of reachable pairs (ẑ, z = relu(ẑ)) under the relaxation:

* OFF (I⁻, u ≤ 0): z = 0, ẑ ∈ [ℓ, u]: the segment (ℓ, 0)–(u, 0);
* ON (I⁺, ℓ ≥ 0): z = ẑ ∈ [ℓ, u]: the segment (ℓ, ℓ)–(u, u);
* CROSSING (I, ℓ < 0 < u): the triangle with vertices (ℓ, 0), (0, 0), (u, u),
  i.e. ``z ≥ 0, z ≥ ẑ, z ≤ d (ẑ − ℓ)`` with ``d = u / (u − ℓ)`` (eq. 3).

Every method reads its part of the relaxation here: the dual network its
slopes (eq. 7) and the local terms of Theorem 1, the LP the triangle's faces,
the MILP the big-M rows of §6. A branch-and-bound split is a tightening of ℓ
or u to 0, which moves a unit to OFF or ON.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np
import torch
from torch import Tensor

from .rigorous import up


class UnitState(IntEnum):
    """Where a unit's pre-activation can lie: I⁻, I⁺ or I."""

    OFF = 0
    ON = 1
    CROSSING = 2


def unit_states(lower: Tensor, upper: Tensor) -> Tensor:
    """The :class:`UnitState` of every unit (an integer tensor shaped like the bounds)."""
    on = lower >= 0
    off = (upper <= 0) & ~on
    return torch.where(off, int(UnitState.OFF), torch.where(on, int(UnitState.ON), int(UnitState.CROSSING)))


def crossing(lower: Tensor, upper: Tensor) -> Tensor:
    """Mask of the crossing units I (ℓ < 0 < u)."""
    return (lower < 0) & (upper > 0)


def relu_slope(lower: Tensor, upper: Tensor) -> Tensor:
    """The diagonal D of the linear dual network (eq. 7 with α = u/(u − ℓ)).

    0 on I⁻ (u ≤ 0), 1 on I⁺ (ℓ ≥ 0) and u/(u − ℓ) on crossing units, written
    as one formula ``u⁺ / (u⁺ − ℓ⁻)`` so that no branch divides by zero (a NaN
    in an unused branch of ``torch.where`` would still poison gradients).
    """
    upper_pos = upper.clamp(min=0)
    den = upper_pos - lower.clamp(max=0)
    positive = den > 0
    return torch.where(positive, upper_pos / torch.where(positive, den, torch.ones_like(den)), torch.zeros_like(den))


def sound_slope(lower: Tensor, upper: Tensor) -> Tensor:
    """:func:`relu_slope` rounded up on crossing units (never above 1): a d' ≥ u/(u − ℓ).

    The face ``z ≤ d' (ẑ − ℓ)`` with d' ≥ d still contains the triangle, so a
    dual network run with these slopes is a valid relaxation whatever the
    rounding of the division: the difference and the quotient round twice,
    so ``d_float ≥ d (1 − 2u)``, and three steps up multiply by at least
    ``(1 + u)³``. Exactly 1 on I⁺ and 0 on I⁻.
    """
    d = relu_slope(lower, upper)
    return torch.where(crossing(lower, upper), up(up(up(d))).clamp(max=1.0), d)


def dual_step(nu_hat: Tensor, lower: Tensor, upper: Tensor, alpha: Tensor | None = None) -> Tensor:
    """ν_i from ν̂_i (eq. 7): 0 on I⁻, ν̂ on I⁺, ``d[ν̂]₊ − α[ν̂]₋`` on I (α = d by default)."""
    slope = relu_slope(lower, upper)
    if alpha is None:
        return slope * nu_hat
    return torch.where(crossing(lower, upper), slope * nu_hat.clamp(min=0) - alpha * (-nu_hat).clamp(min=0), slope * nu_hat)


def dual_term(nu: Tensor, lower: Tensor) -> Tensor:
    """The term ``ℓ_j [ν_j]₊`` of Theorem 1 per unit (zero off I, since ℓ⁻ = 0 on I⁺ and ν = 0 on I⁻)."""
    return lower.clamp(max=0) * nu.clamp(min=0)


def local_minimum(nu: Tensor, nu_hat: Tensor, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
    """``min_{(ẑ, z) ∈ S_j} ν_j ẑ − ν̂_j z`` per unit, for ANY numbers ν, ν̂; and its magnitude.

    The minimum of a linear function over S is attained at a vertex, so this
    needs no relation between ν and ν̂: it is what makes a bound from
    multipliers that were rounded, or read off an LP solver, still valid
    (MATH.md §11). With ν from :func:`dual_step` it equals
    :func:`dual_term` in exact arithmetic.

    Returns the term and ``(|ν| + |ν̂|)(|ℓ| + |u|)``, which bounds the
    magnitude of each of its products.
    """
    states = unit_states(lower, upper)
    slack = nu - nu_hat
    off = torch.minimum(nu * lower, nu * upper)
    on = torch.minimum(slack * lower, slack * upper)
    tri = torch.minimum(torch.minimum(nu * lower, slack * upper), torch.zeros_like(nu))
    term = torch.where(states == UnitState.OFF, off, torch.where(states == UnitState.ON, on, tri))
    magnitude = (nu.abs() + nu_hat.abs()) * (lower.abs() + upper.abs())
    return term, magnitude


# -- rows of the LP and MILP encodings (numpy, float64) -------------------------------


def triangle_face(lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The upper face ``z ≤ d ẑ − d ℓ`` of crossing units as (d, −d ℓ) (eq. 3)."""
    d = upper / (upper - lower)
    return d, -d * lower


def split_face(lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The upper face of crossing units with ẑ split as ``z + w`` (w = ẑ − z): ``a z − d w ≤ −d ℓ``.

    ``z ≤ d (z + w − ℓ)`` rearranged, with ``a = 1 − d = −ℓ/(u − ℓ)`` computed
    without the cancellation of ``1 − d``. Returns (a, d, −d ℓ). The other
    faces of the triangle, z ≥ 0 and z ≥ ẑ, become the bounds z ≥ 0 and w ≤ 0.
    """
    d, offset = triangle_face(lower, upper)
    return -lower / (upper - lower), d, offset


def big_m_rows(lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The §6 rows ``z ≤ u·a`` and ``z ≤ ẑ − ℓ(1 − a)`` of crossing units, as their coefficients (u, ℓ)."""
    return upper, lower


__all__ = [
    "UnitState",
    "big_m_rows",
    "crossing",
    "dual_step",
    "dual_term",
    "local_minimum",
    "relu_slope",
    "sound_slope",
    "split_face",
    "triangle_face",
    "unit_states",
]
