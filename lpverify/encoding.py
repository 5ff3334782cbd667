"""The sparse encoding of the relaxation that the LP and the MILP share (MATH.md §2, §6).

For one example: the input box, each hidden layer's bounds and unit split,
and the network with its stable units eliminated: every pre-activation is an
affine expression ``ẑ = E v + e`` of the free variables ``v = (z_1, z of the
crossing units)``. On that, the LP splits each crossing unit's ẑ into
``z + w`` and adds its equality and upper face (:func:`triangle_rows`), the
MILP three big-M rows and a binary (:func:`big_m_rows`); every variable has a
finite box (:func:`column_boxes`, :func:`split_boxes`).
The rows come from :mod:`lpverify.relu`, the one place the relaxation is
written. These rows only steer a solver: certified numbers never read them
(the LP's safe bound is recomputed from the network itself, MATH.md §11).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import scipy.sparse as sp
from torch import Tensor

from .activations import LeakyReLU
from .bounds import Bounds, check_compatible
from .network import Network
from .relu import big_m_rows as relu_big_m, split_face
from .sets import Ball


@dataclass(frozen=True)
class Layer:
    """One hidden layer's bounds (float64, flat) and its unit split (:class:`lpverify.relu.UnitState`)."""

    lower: np.ndarray
    upper: np.ndarray
    neg: np.ndarray = field(init=False)  # I⁻: OFF
    pos: np.ndarray = field(init=False)  # I⁺: ON
    cross: np.ndarray = field(init=False)  # I: CROSSING

    def __post_init__(self) -> None:
        pos = self.lower >= 0
        neg = (self.upper <= 0) & ~pos
        object.__setattr__(self, "neg", neg)
        object.__setattr__(self, "pos", pos)
        object.__setattr__(self, "cross", ~neg & ~pos)


def example_data(net: Network, ball: Ball, bounds: Bounds) -> tuple[np.ndarray, np.ndarray, list[Layer]] | str:
    """The input box and per-layer bounds of one example as float64 numpy, or why they make no model."""
    check_compatible(net, ball)
    if ball.batch_size != 1 or bounds.batch_size != 1:
        raise ValueError(
            f"the LP is built for one example: got a ball of batch {ball.batch_size} and bounds of batch "
            f"{bounds.batch_size}; use ball.select(i) and bounds.select(i)"
        )
    if len(bounds) < len(net.blocks) - 1:
        raise ValueError(f"bounds cover {len(bounds)} layers but the network has {len(net.blocks) - 1} hidden layers")
    lo = ball.lo.detach().cpu().double().numpy().ravel()
    hi = ball.hi.detach().cpu().double().numpy().ravel()
    layers = []
    for i, shape in enumerate(net.hidden_shapes):
        lower = bounds.lower[i].detach().cpu().double().numpy().ravel()
        upper = bounds.upper[i].detach().cpu().double().numpy().ravel()
        if lower.size != math.prod(shape):
            raise ValueError(f"bounds of hidden layer {i} have {lower.size} units, the network has {math.prod(shape)}")
        if not (np.isfinite(lower).all() and np.isfinite(upper).all()):
            return f"invalid bounds: hidden layer {i} has NaN or infinite bounds"
        layers.append(Layer(lower, upper))
    return lo, hi, layers


def leaky_slopes(net: Network) -> list[float]:
    """Per hidden layer the slope s of its LeakyReLU (0 for ReLU); a ValueError for any other activation,
    which has no exact LP or MILP encoding."""
    slopes = []
    for i, act in enumerate(net.activations):
        if not isinstance(act, LeakyReLU):
            raise ValueError(f"hidden layer {i} has a {act.name} activation: the LP and MILP encode piecewise-linear "
                             "activations (ReLU, LeakyReLU) only; use the interval, dual or dual-opt methods")
        slopes.append(float(act.slope))
    return slopes


def objective_vector(net: Network, c: np.ndarray | Tensor) -> np.ndarray:
    """c as a checked flat float64 vector of the network's output size."""
    c = np.asarray(c.detach().cpu().double() if isinstance(c, Tensor) else c, dtype=np.float64).ravel()
    if c.shape != (net.n_outputs,):
        raise ValueError(f"objective c must have {net.n_outputs} entries, got {c.size}")
    if not np.isfinite(c).all():
        raise ValueError("objective c contains NaN or inf")
    return c


@dataclass(frozen=True)
class CrossingExpr:
    """The crossing units I of one hidden layer, with their pre-activations in terms of v.

    ``ẑ_I = expr @ v + offset``, where v is the vector of free variables of
    :func:`eliminate_stable` and ``columns`` are the variables z of these units.
    """

    units: np.ndarray  # flat indices of I in the layer
    columns: np.ndarray  # index in v of each unit's post-activation z
    expr: sp.csr_matrix  # (|I|, n_var)
    offset: np.ndarray  # (|I|,)
    lower: np.ndarray  # ℓ_I
    upper: np.ndarray  # u_I
    slope: float = 0.0  # s of the layer's LeakyReLU (0: ReLU)


@dataclass(frozen=True)
class Eliminated:
    """A network with its stable units eliminated (MATH.md §2, §6).

    The free variables are ``v = (z_1, z of the crossing units of layer 1, of
    layer 2, ...)``, ``n_var`` in all, the input first. ``crossing`` gives, per
    hidden layer, the affine expressions of the crossing units' ẑ; the logits
    are ``ẑ_k = out_map @ v + out_offset``. Exact for any assignment of the
    crossing units' z only if the bounds are valid (I⁻ really off, I⁺ really on)
    and up to the rounding of the sparse products (which is why no certified
    number is read from a model built on it).
    """

    n_input: int
    n_var: int
    crossing: tuple[CrossingExpr, ...]
    out_map: sp.csr_matrix  # (n_out, n_var)
    out_offset: np.ndarray  # (n_out,)

    @property
    def n_crossing(self) -> int:
        return sum(cr.units.size for cr in self.crossing)


def eliminate_stable(
    mats: list[tuple[sp.csr_matrix, np.ndarray]], layers: list[Layer], slopes: list[float] | None = None
) -> Eliminated:
    """Substitute the stable units: I⁻ gives z = s ẑ (0 for ReLU), I⁺ passes its expression on (z = ẑ).

    ``mats`` are the (W_i, b_i) of :meth:`Network.sparse`; ``layers`` the
    hidden layers' bounds; ``slopes`` the LeakyReLU slope s per hidden layer
    (:func:`leaky_slopes`; default ReLU everywhere). Each crossing unit gets
    one new variable z, so both the LP (the triangle, §2) and the MILP (§6)
    add only rows on crossing units.
    """
    n_in = mats[0][0].shape[1]
    post = sp.identity(n_in, format="csr")  # z_1 = x, as a map from v
    post_offset = np.zeros(n_in)
    n_var = n_in
    slopes = [0.0] * len(layers) if slopes is None else slopes
    parts: list[tuple[np.ndarray, np.ndarray, sp.csr_matrix, np.ndarray, np.ndarray, np.ndarray, float]] = []
    for (w, b), layer, slope in zip(mats[:-1], layers, slopes):
        # Expressions of the units not in I⁻ only (of all units under a LeakyReLU): nothing reads the others.
        active = np.flatnonzero(~layer.neg) if slope == 0 else np.arange(layer.neg.size)
        expr = (w[active] @ post).tocsr()  # ẑ_active = expr v + offset
        offset = w[active] @ post_offset + b[active]
        cross = np.flatnonzero(layer.cross)
        in_active = np.flatnonzero(layer.cross[active])  # rows of expr that cross
        new_vars = n_var + np.arange(cross.size)
        n_var += cross.size
        expr.resize(expr.shape[0], n_var)
        parts.append((cross, new_vars, expr[in_active], offset[in_active], layer.lower[cross], layer.upper[cross], slope))
        # z of this layer as a map from v: ẑ on I⁺, the new variable on I, s ẑ on I⁻ (nothing for ReLU).
        on = layer.pos[active]
        n_units = layer.pos.size
        keep = sp.csr_matrix((np.ones(on.sum()), (active[on], np.flatnonzero(on))), shape=(n_units, active.size))
        if slope != 0:
            off = layer.neg[active]
            keep = keep + sp.csr_matrix((np.full(off.sum(), slope), (active[off], np.flatnonzero(off))),
                                        shape=(n_units, active.size))
        chosen = sp.csr_matrix((np.ones(cross.size), (cross, new_vars)), shape=(n_units, n_var))
        post = (keep @ expr + chosen).tocsr()
        post_offset = np.zeros(n_units)
        post_offset[active[on]] = offset[on]
        if slope != 0:
            post_offset[active[off]] = slope * offset[off]
    crossing = []
    for units, columns, expr, offset, lower, upper, slope in parts:
        expr.resize(expr.shape[0], n_var)  # earlier layers' expressions were built before later variables existed
        crossing.append(CrossingExpr(units, columns, expr, offset, lower, upper, slope))
    w_out, b_out = mats[-1]
    return Eliminated(n_in, n_var, tuple(crossing), (w_out @ post).tocsr(), w_out @ post_offset + b_out)


@dataclass(frozen=True)
class Rows:
    """``row_lower ≤ A v ≤ row_upper`` (A in CSC, the layout HiGHS takes)."""

    matrix: sp.csc_matrix
    lower: np.ndarray
    upper: np.ndarray


def triangle_rows(elim: Eliminated) -> Rows:
    """The LP's triangle (eq. 3) on every crossing unit, with its pre-activation split ``ẑ = z + w``.

    The columns are ``(v, w)``: v of :func:`eliminate_stable` and one more
    column per crossing unit, ``w = ẑ − z ∈ [ℓ, 0]`` (:func:`split_boxes`), in
    the order of ``elim.crossing``. The faces z ≥ 0 and z ≥ ẑ are then the
    bounds z ≥ 0 and w ≤ 0, and two rows per crossing unit remain:

    * the first ``n_crossing`` rows, ``z + w − E v = e``: the unit's equality
      ``ẑ = E v + e``, whose dual is the multiplier of ẑ;
    * the next ``n_crossing`` rows, the upper face ``(1 − d) z − d w ≤ −d ℓ``.

    The expression E is written once per unit, not once per face, and the
    face rows have two entries each: on networks where most units cross this
    halves the nonzeros of the two-face form and the interior point solver's work.
    """
    n, n_col = elim.n_crossing, elim.n_var + elim.n_crossing
    if n == 0:
        return Rows(sp.csc_matrix((0, n_col)), np.zeros(0), np.zeros(0))
    rows = np.arange(n)
    z = np.concatenate([cr.columns for cr in elim.crossing])
    w = elim.n_var + rows
    lower = np.concatenate([cr.lower for cr in elim.crossing])
    upper = np.concatenate([cr.upper for cr in elim.crossing])
    slope = np.concatenate([np.full(cr.units.size, cr.slope) for cr in elim.crossing])
    a, d, face_offset = split_face(lower, upper) if not slope.any() else LeakyReLU.split_face(lower, upper, slope)
    expr = sp.vstack([cr.expr for cr in elim.crossing], format="csr")
    expr.resize(n, n_col)
    parts = sp.csr_matrix((np.ones(2 * n), (np.tile(rows, 2), np.concatenate([z, w]))), shape=(n, n_col))
    face = sp.csr_matrix((np.concatenate([a, -d]), (np.tile(rows, 2), np.concatenate([z, w]))), shape=(n, n_col))
    offset = np.concatenate([cr.offset for cr in elim.crossing])
    matrix, row_lo, row_hi = [parts - expr, face], [offset, np.full(n, -np.inf)], [offset, face_offset]
    leaky = np.flatnonzero(slope)
    if leaky.size:  # the LeakyReLU's lower face z ≥ s ẑ: (1 − s) z − s w ≥ 0 (for ReLU the bound z ≥ 0)
        k = np.arange(leaky.size)
        values = np.concatenate([1 - slope[leaky], -slope[leaky]])
        matrix.append(sp.csr_matrix((values, (np.tile(k, 2), np.concatenate([z[leaky], w[leaky]]))), shape=(k.size, n_col)))
        row_lo.append(np.zeros(k.size))
        row_hi.append(np.full(k.size, np.inf))
    return Rows(sp.vstack(matrix, format="csc"), np.concatenate(row_lo), np.concatenate(row_hi))


def split_boxes(elim: Eliminated) -> tuple[np.ndarray, np.ndarray]:
    """The boxes ``[(1 − s) ℓ, 0]`` (``[ℓ, 0]`` for ReLU) of the columns w of :func:`triangle_rows`."""
    lower = np.concatenate([np.zeros(0), *(cr.lower if cr.slope == 0 else (1 - cr.slope) * cr.lower
                                           for cr in elim.crossing)])
    return lower, np.zeros(lower.size)


def big_m_rows(elim: Eliminated) -> Rows:
    """The MILP's rows of §6 on every crossing unit, with ẑ = E v + e substituted.

    ``z − E v ≥ e`` (z ≥ ẑ), ``z − u a ≤ 0`` (z ≤ u·a) and
    ``z − E v − ℓ a ≤ e − ℓ`` (z ≤ ẑ − ℓ(1 − a)); z ≥ 0 and a ∈ [0, 1] are
    column bounds. A has shape (3 |I|, n_var + |I|), the binaries after v.
    """
    n_bin = elim.n_crossing
    n_col = elim.n_var + n_bin
    blocks: list[sp.csr_matrix] = []
    row_lo: list[np.ndarray] = []
    row_hi: list[np.ndarray] = []
    first_bin = elim.n_var
    for cr in elim.crossing:
        n = cr.units.size
        rows = np.arange(n)
        bins = first_bin + rows
        first_bin += n
        expr = sp.hstack([cr.expr, sp.csr_matrix((n, n_bin))], format="csr")
        z = sp.csr_matrix((np.ones(n), (rows, cr.columns)), shape=(n, n_col))
        a = sp.csr_matrix((np.ones(n), (rows, bins)), shape=(n, n_col))
        if cr.slope != 0:  # LeakyReLU: z ≥ ẑ, z ≥ s ẑ, z ≤ s ẑ + (1 − s) u a, z ≤ ẑ − (1 − s) ℓ (1 − a)
            big_u, big_l = LeakyReLU.big_m_rows(cr.lower, cr.upper, cr.slope)
            s_expr = cr.slope * expr
            blocks += [z - expr, z - s_expr - sp.diags(big_u) @ a, z - expr - sp.diags(big_l) @ a, z - s_expr]
            row_lo += [cr.offset, np.full(n, -np.inf), np.full(n, -np.inf), cr.slope * cr.offset]
            row_hi += [np.full(n, np.inf), cr.slope * cr.offset, cr.offset - big_l, np.full(n, np.inf)]
            continue
        big_u, big_l = relu_big_m(cr.lower, cr.upper)
        blocks += [z - expr, z - sp.diags(big_u) @ a, z - expr - sp.diags(big_l) @ a]
        row_lo += [cr.offset, np.full(n, -np.inf), np.full(n, -np.inf)]
        row_hi += [np.full(n, np.inf), np.zeros(n), cr.offset - big_l]
    if not blocks:
        return Rows(sp.csc_matrix((0, n_col)), np.zeros(0), np.zeros(0))
    return Rows(sp.vstack(blocks, format="csc"), np.concatenate(row_lo), np.concatenate(row_hi))


def column_boxes(elim: Eliminated, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Finite boxes of ``v``: the input by the set, each crossing unit's z by [0, u] ([s ℓ, u] under a LeakyReLU)."""
    uppers = [cr.upper for cr in elim.crossing]
    lowers = [np.zeros(cr.units.size) if cr.slope == 0 else cr.slope * cr.lower for cr in elim.crossing]
    return np.concatenate([lo, *lowers]), np.concatenate([hi, *uppers])


_BANNER_SENT = False


def silent_highs():
    """A ``highspy.Highs`` with its output off; nothing of it reaches stdout.

    HiGHS prints its licence banner on stdout when the first instance of a
    process is constructed, before any option can be set: that one is built
    with file descriptor 1 pointing at /dev/null, so stdout stays parseable.
    """
    global _BANNER_SENT
    import highspy

    if not _BANNER_SENT:
        import ctypes
        import os
        import sys

        sys.stdout.flush()
        saved, null = os.dup(1), os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, 1)
            highspy.Highs()
            ctypes.CDLL(None).fflush(None)  # the C library's stdout buffer, before fd 1 is restored
        finally:
            os.dup2(saved, 1)
            os.close(saved)
            os.close(null)
        _BANNER_SENT = True
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    return h


def highs_model(rows: Rows, col_lower: np.ndarray, col_upper: np.ndarray, n_integer: int = 0):
    """A ``highspy.HighsLp`` with zero costs; the last ``n_integer`` columns are integer."""
    import highspy

    inf = highspy.kHighsInf
    n_col = col_lower.size
    model = highspy.HighsLp()
    model.num_col_, model.num_row_ = n_col, rows.matrix.shape[0]
    model.col_cost_ = np.zeros(n_col)
    model.col_lower_ = np.clip(col_lower, -inf, inf)
    model.col_upper_ = np.clip(col_upper, -inf, inf)
    model.row_lower_ = np.clip(rows.lower, -inf, inf)
    model.row_upper_ = np.clip(rows.upper, -inf, inf)
    model.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    model.a_matrix_.start_ = rows.matrix.indptr
    model.a_matrix_.index_ = rows.matrix.indices
    model.a_matrix_.value_ = rows.matrix.data
    if n_integer:
        kinds = highspy.HighsVarType
        model.integrality_ = [kinds.kContinuous] * (n_col - n_integer) + [kinds.kInteger] * n_integer
    return model


def power_of_two_scale(c: np.ndarray) -> float:
    """2^k with ``max|c| · 2^k`` in [1, 2): scaling by it is exact, and a solver sees a unit objective."""
    top = float(np.max(np.abs(c), initial=0.0))
    if top == 0.0:
        return 1.0
    return math.ldexp(1.0, -math.frexp(top)[1] + 1)


def solve_rows(solve: Callable, c: np.ndarray | Tensor) -> object | list:
    """``solve(c)`` for c of shape (n_out,), or a list of ``solve(row)`` on one model for c of shape (m, n_out)."""
    c_arr = c.detach().cpu().double().numpy() if isinstance(c, Tensor) else np.asarray(c, dtype=np.float64)
    if c_arr.ndim == 1:
        return solve(c_arr)
    if c_arr.ndim == 2:
        return [solve(row) for row in c_arr]
    raise ValueError(f"objective c must have shape (n_out,) or (m, n_out), got {c_arr.shape}")


__all__ = [
    "CrossingExpr",
    "Eliminated",
    "Layer",
    "Rows",
    "big_m_rows",
    "column_boxes",
    "eliminate_stable",
    "example_data",
    "leaky_slopes",
    "highs_model",
    "objective_vector",
    "power_of_two_scale",
    "solve_rows",
    "split_boxes",
    "triangle_rows",
]
