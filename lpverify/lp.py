"""The exact LP over the convex outer adversarial polytope (eq. 3, 4, 19).

For one example, an objective c and pre-activation bounds ℓ, u::

    minimize   cᵀ ẑ_k
    subject to z_1 ∈ [lo, hi]                      (the input box)
               ẑ_{i+1} = W_i z_i + b_i             i = 1 .. k-1
               z_i = 0                             on I⁻ (u ≤ 0)
               z_i = ẑ_i                           on I⁺ (ℓ ≥ 0)
               z ≥ 0, z ≥ ẑ, (u − ℓ) z ≤ u (ẑ − ℓ)  on I (the ReLU triangle)

Two builds that must agree:

* :class:`CvxpyLP`: the model as written above, every unit a variable, solved
  by CVXPY with HiGHS. Readable; slow on real networks.
* :class:`HighsLP`: a direct sparse HiGHS model with the stable units
  eliminated: every ẑ is substituted by its affine expression in the input
  and the crossing units' z, so only the triangle rows of crossing units
  remain, and the output layer is folded into the cost. Built once per
  example and re-solved for each objective from the previous basis (warm
  start); the multipliers ν of the eliminated equalities are recovered from
  the triangle rows' duals.

A solve whose status is not optimal has ``value = nan``: it is never a bound.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import scipy.sparse as sp
from torch import Tensor

from .bounds import Bounds, check_compatible
from .network import Network
from .sets import Ball, LinfBall

BACKENDS = ("highs", "cvxpy")
SOLVERS = ("simplex", "ipm")
# Above this many constraint nonzeros the direct model is solved by interior point:
# warm-started simplex wins on small models (a few ms per re-solve), while on large
# degenerate ones (thousands of crossing units) IPM with crossover is 5-20x faster.
IPM_NONZEROS = 250_000


def choose_solver(nonzeros: int) -> str:
    """HiGHS's LP algorithm for a model of this size: "simplex" or "ipm"."""
    return "ipm" if nonzeros > IPM_NONZEROS else "simplex"


@dataclass(frozen=True)
class LPResult:
    """The outcome of one LP solve.

    Attributes:
        value: the optimum of cᵀẑ_k; ``nan`` unless ``status == "optimal"``.
        status: "optimal", or why there is no bound (solver status or error).
        time: seconds spent solving (model building excluded; see ``build_time``).
        input: z_1 at the optimum, shape input_shape (None without a solution).
        output: ẑ_k at the optimum, shape (n_out,) (None without a solution).
        duals: ν_2 .. ν_{k-1}, the multipliers of the equalities
            ẑ_{i+1} = W_i z_i + b_i, one flat array per hidden layer, in the
            sign convention of Theorem 1 (with no crossing unit they equal the
            dual network's ν). Zero on I⁻ units of the direct model.
        backend: "highs" or "cvxpy".
        build_time: seconds spent building the model this solve used.
    """

    value: float
    status: str
    time: float
    input: np.ndarray | None = None
    output: np.ndarray | None = None
    duals: tuple[np.ndarray, ...] = ()
    backend: str = "highs"
    build_time: float = 0.0

    @property
    def optimal(self) -> bool:
        return self.status == "optimal" and math.isfinite(self.value)


def _failed(status: str, backend: str, elapsed: float = 0.0, build_time: float = 0.0) -> LPResult:
    return LPResult(value=math.nan, status=status, time=elapsed, backend=backend, build_time=build_time)


@dataclass(frozen=True)
class _Layer:
    """One hidden layer's bounds (float64, flat) and its unit split."""

    lower: np.ndarray
    upper: np.ndarray
    neg: np.ndarray = field(init=False)  # I⁻
    pos: np.ndarray = field(init=False)  # I⁺
    cross: np.ndarray = field(init=False)  # I

    def __post_init__(self) -> None:
        neg = self.upper <= 0
        pos = ~neg & (self.lower >= 0)
        object.__setattr__(self, "neg", neg)
        object.__setattr__(self, "pos", pos)
        object.__setattr__(self, "cross", ~neg & ~pos)


def _one_example(net: Network, ball: Ball, bounds: Bounds) -> tuple[np.ndarray, np.ndarray, list[_Layer]] | str:
    """Box and per-layer bounds as float64 numpy, or the reason they cannot make an LP."""
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
        layers.append(_Layer(lower, upper))
    return lo, hi, layers


def _objective(net: Network, c: np.ndarray | Tensor) -> np.ndarray:
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


@dataclass(frozen=True)
class Eliminated:
    """A network with its stable units eliminated (MATH.md §2, §6).

    The free variables are ``v = (z_1, z of the crossing units of layer 1, of
    layer 2, ...)``, ``n_var`` in all, the input first. ``crossing`` gives, per
    hidden layer, the affine expressions of the crossing units' ẑ; the logits
    are ``ẑ_k = out_map @ v + out_offset``. Exact for any assignment of the
    crossing units' z only if the bounds are valid (I⁻ really off, I⁺ really on).
    """

    n_input: int
    n_var: int
    crossing: tuple[CrossingExpr, ...]
    out_map: sp.csr_matrix  # (n_out, n_var)
    out_offset: np.ndarray  # (n_out,)


def eliminate_stable(mats: list[tuple[sp.csr_matrix, np.ndarray]], layers: list[_Layer]) -> Eliminated:
    """Substitute the stable units: I⁻ gives z = 0, I⁺ passes its expression on (z = ẑ).

    ``mats`` are the exact (W_i, b_i) of :meth:`Network.sparse`; ``layers`` the
    hidden layers' bounds. Each crossing unit gets one new variable z, so both
    the LP (the triangle, §2) and the MILP (§6) add only rows on crossing units.
    """
    n_in = mats[0][0].shape[1]
    post = sp.identity(n_in, format="csr")  # z_1 = x, as a map from v
    post_offset = np.zeros(n_in)
    n_var = n_in
    parts: list[tuple[np.ndarray, np.ndarray, sp.csr_matrix, np.ndarray, np.ndarray, np.ndarray]] = []
    for (w, b), layer in zip(mats[:-1], layers):
        # Expressions of the units not in I⁻ only: nothing reads the others.
        active = np.flatnonzero(~layer.neg)
        expr = (w[active] @ post).tocsr()  # ẑ_active = expr v + offset
        offset = w[active] @ post_offset + b[active]
        cross = np.flatnonzero(layer.cross)
        in_active = np.flatnonzero(layer.cross[active])  # rows of expr that cross
        new_vars = n_var + np.arange(cross.size)
        n_var += cross.size
        expr.resize(expr.shape[0], n_var)
        parts.append((cross, new_vars, expr[in_active], offset[in_active], layer.lower[cross], layer.upper[cross]))
        # z of this layer as a map from v: ẑ on I⁺, the new variable on I, 0 on I⁻.
        on = layer.pos[active]
        n_units = layer.pos.size
        keep = sp.csr_matrix((np.ones(on.sum()), (active[on], np.flatnonzero(on))), shape=(n_units, active.size))
        chosen = sp.csr_matrix((np.ones(cross.size), (cross, new_vars)), shape=(n_units, n_var))
        post = (keep @ expr + chosen).tocsr()
        post_offset = np.zeros(n_units)
        post_offset[active[on]] = offset[on]
    crossing = []
    for units, columns, expr, offset, lower, upper in parts:
        expr.resize(expr.shape[0], n_var)  # earlier layers' expressions were built before later variables existed
        crossing.append(CrossingExpr(units, columns, expr, offset, lower, upper))
    w_out, b_out = mats[-1]
    return Eliminated(n_in, n_var, tuple(crossing), (w_out @ post).tocsr(), w_out @ post_offset + b_out)


class _LPModel:
    """What both builds share: input checks, the invalid-bounds verdict, build-time accounting."""

    backend = ""

    def _prepare(self, net: Network, ball: Ball, bounds: Bounds) -> tuple[np.ndarray, np.ndarray, list[_Layer]] | None:
        """The box and layers of the example, or None (with ``self.invalid`` set) if no LP can be built."""
        self._start = time.perf_counter()
        self.net = net
        self.input_shape = net.input_shape
        self._solves = 0
        prepared = _one_example(net, ball, bounds)
        self.invalid: str | None = prepared if isinstance(prepared, str) else None
        if self.invalid is not None:
            self._built()
            return None
        return prepared

    def _built(self) -> None:
        self.build_time = time.perf_counter() - self._start

    def _begin(self, c: np.ndarray | Tensor) -> tuple[np.ndarray, float]:
        """The checked objective, and the build time charged to this solve (the first one)."""
        c = _objective(self.net, c)
        build = self.build_time if self._solves == 0 else 0.0
        self._solves += 1
        return c, build


class HighsLP(_LPModel):
    """eq. 19 for one example as a direct sparse HiGHS model, re-solved per objective.

    Stable units are eliminated: every pre-activation is written as an affine
    expression ``ẑ_i = E_i v + e_i`` of the only free variables ``v``, the
    input z_1 and the post-activations z of the crossing units. I⁻ units
    contribute nothing (z = 0), I⁺ units pass their expression on (z = ẑ).
    What is left are two rows per crossing unit, the triangle's faces
    ``z ≥ ẑ`` and ``z ≤ d (ẑ − ℓ)`` with d = u/(u − ℓ) (z ≥ 0 is a bound),
    and the objective ``cᵀ(W_k z_{k-1} + b_k)`` as a cost on v.

    ``solver`` is HiGHS's algorithm, "simplex" (re-solves warm-start from the
    last basis) or "ipm"; by default it follows the model's size
    (:func:`choose_solver`).
    """

    def __init__(
        self,
        net: Network,
        ball: LinfBall,
        bounds: Bounds,
        *,
        time_limit: float | None = None,
        solver: str | None = None,
    ):
        if solver is not None and solver not in SOLVERS:
            raise ValueError(f"unknown LP solver {solver!r}; choose one of {SOLVERS}")
        if not isinstance(ball, LinfBall):
            raise TypeError(
                f"the direct HiGHS model takes an LinfBall; an l{ball.p} ball needs the conic model (backend='cvxpy')"
            )
        import highspy

        prepared = self._prepare(net, ball, bounds)
        if prepared is None:
            return
        lo, hi, layers = prepared
        elim = eliminate_stable(net.sparse(), layers)
        n_var = elim.n_var
        # Two faces per crossing unit, z ≥ ẑ and z ≤ d (ẑ − ℓ) with d = u/(u − ℓ) (z ≥ 0 is a bound).
        face_rows: list[sp.csr_matrix] = []
        row_lo, row_hi = [], []
        self._layers = layers
        self._crossing: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (units, first face row, d)
        n_row = 0
        for cr in elim.crossing:
            n_cross = cr.units.size
            select = sp.csr_matrix((np.ones(n_cross), (np.arange(n_cross), cr.columns)), shape=(n_cross, n_var))
            d = cr.upper / (cr.upper - cr.lower)
            face_rows += [(select - cr.expr).tocsr(), (select - sp.diags(d) @ cr.expr).tocsr()]
            row_lo += [cr.offset, np.full(n_cross, -np.inf)]
            row_hi += [np.full(n_cross, np.inf), d * (cr.offset - cr.lower)]
            self._crossing.append((cr.units, n_row + np.arange(n_cross), d))
            n_row += 2 * n_cross
        self._out_map, self._out_offset = elim.out_map, elim.out_offset  # ẑ_k = out_map v + out_offset
        self.n_col, self.n_row = n_var, n_row
        a = sp.vstack(face_rows, format="csc") if face_rows else sp.csc_matrix((0, n_var))
        col_lo = np.concatenate([lo, np.zeros(n_var - lo.size)])
        col_hi = np.concatenate([hi, np.full(n_var - lo.size, np.inf)])

        inf = highspy.kHighsInf
        model = highspy.HighsLp()
        model.num_col_, model.num_row_ = n_var, n_row
        model.col_cost_ = np.zeros(n_var)
        model.col_lower_ = np.clip(col_lo, -inf, inf)
        model.col_upper_ = np.clip(col_hi, -inf, inf)
        model.row_lower_ = np.clip(np.concatenate(row_lo), -inf, inf) if row_lo else np.zeros(0)
        model.row_upper_ = np.clip(np.concatenate(row_hi), -inf, inf) if row_hi else np.zeros(0)
        model.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        model.a_matrix_.start_ = a.indptr
        model.a_matrix_.index_ = a.indices
        model.a_matrix_.value_ = a.data
        self.solver = solver or choose_solver(a.nnz)
        self._highs = highspy.Highs()
        self._highs.setOptionValue("output_flag", False)
        self._highs.setOptionValue("solver", self.solver)
        if time_limit is not None:
            self._highs.setOptionValue("time_limit", float(time_limit))
        self._highs.passModel(model)
        self._status_optimal = highspy.HighsModelStatus.kOptimal
        self._all_cols = np.arange(n_var, dtype=np.int32)
        self._built()

    def solve(self, c: np.ndarray | Tensor) -> LPResult:
        """min cᵀ ẑ_k over the relaxation; warm-started from the previous solve's basis."""
        c, build = self._begin(c)
        if self.invalid is not None:
            return _failed(self.invalid, "highs", build_time=build)
        h = self._highs
        start = time.perf_counter()
        try:
            h.changeColsCost(self.n_col, self._all_cols, self._out_map.T @ c)
            h.run()
            status = h.getModelStatus()
        except Exception as err:  # a solver failure is reported, never turned into a bound
            return _failed(f"solver error: {err}", "highs", time.perf_counter() - start, build)
        elapsed = time.perf_counter() - start
        if status != self._status_optimal:
            return _failed(f"not optimal: {h.modelStatusToString(status)}", "highs", elapsed, build)
        value = h.getInfo().objective_function_value + float(c @ self._out_offset)
        if not math.isfinite(value):
            return _failed("not optimal: non-finite objective", "highs", elapsed, build)
        sol = h.getSolution()
        v = np.asarray(sol.col_value)
        return LPResult(
            value=value,
            status="optimal",
            time=elapsed,
            input=v[: math.prod(self.input_shape)].reshape(self.input_shape),
            output=self._out_map @ v + self._out_offset,
            duals=self._nu(c, np.asarray(sol.row_dual)),
            backend="highs",
            build_time=build,
        )

    def _nu(self, c: np.ndarray, row_dual: np.ndarray) -> tuple[np.ndarray, ...]:
        """ν_2..ν_{k-1} of the eliminated equalities ẑ_{i+1} = W_i z_i + b_i, from the face duals.

        Stationarity in each eliminated ẑ_j gives its equality's multiplier y_j
        (HiGHS's sign, ∂p*/∂b): on I⁺ the next layer's ``Wᵀ y`` (``Wᵀ c`` after
        the last hidden layer), on I the face duals ``λ_j + d_j μ_j``, on I⁻ 0.
        Theorem 1's ν is −y.
        """
        mats = self.net.sparse()
        y_next = c
        out: list[np.ndarray] = []
        for i in range(len(self._layers) - 1, -1, -1):
            layer, (cross, rows, d) = self._layers[i], self._crossing[i]
            y = np.where(layer.pos, mats[i + 1][0].T @ y_next, 0.0)
            y[cross] = row_dual[rows] + d * row_dual[rows + cross.size]
            out.insert(0, -y)
            y_next = y
        return tuple(out)


class CvxpyLP(_LPModel):
    """eq. 19 for one example written plainly in CVXPY, one variable per unit.

    An l_inf or l1 ball keeps it an LP, solved with HiGHS; an l2 ball makes it
    a second-order cone program, solved with Clarabel.
    """

    def __init__(self, net: Network, ball: Ball, bounds: Bounds):
        import cvxpy as cp

        prepared = self._prepare(net, ball, bounds)
        if prepared is None:
            return
        lo, hi, layers = prepared
        mats = net.sparse()
        self.c = cp.Parameter(net.n_outputs)
        self.z_in = cp.Variable(lo.size)
        z = self.z_in
        constraints = [z >= lo, z <= hi]
        self.solver = cp.HIGHS
        if not isinstance(ball, LinfBall):  # ‖z − x‖_p ≤ ε on top of its bounding box
            center = ball.center.detach().cpu().double().numpy().ravel()
            constraints.append(cp.norm(z - center, ball.p) <= float(ball.eps[0]))
            self.solver = cp.HIGHS if ball.p == 1 else cp.CLARABEL
        self._equalities = []
        for (w, b), layer in zip(mats[:-1], layers):
            zhat = cp.Variable(b.size)
            equality = zhat == w @ z + b
            constraints.append(equality)
            self._equalities.append(equality)
            z = cp.Variable(b.size)
            neg, pos, cross = (np.flatnonzero(m) for m in (layer.neg, layer.pos, layer.cross))
            lo_c, up_c = layer.lower[cross], layer.upper[cross]
            if neg.size:
                constraints.append(z[neg] == 0)
            if pos.size:
                constraints.append(z[pos] == zhat[pos])
            if cross.size:
                constraints += [
                    z[cross] >= 0,
                    z[cross] >= zhat[cross],
                    cp.multiply(up_c - lo_c, z[cross]) <= cp.multiply(up_c, zhat[cross] - lo_c),
                ]
        w_out, b_out = mats[-1]
        self.logits = w_out @ z + b_out
        self.problem = cp.Problem(cp.Minimize(self.c @ self.logits), constraints)
        self._built()

    def solve(self, c: np.ndarray | Tensor) -> LPResult:
        import cvxpy as cp

        c, build = self._begin(c)
        if self.invalid is not None:
            return _failed(self.invalid, "cvxpy", build_time=build)
        self.c.value = c
        start = time.perf_counter()
        try:
            self.problem.solve(solver=self.solver)
        except cp.error.SolverError as err:
            return _failed(f"solver error: {err}", "cvxpy", time.perf_counter() - start, build)
        elapsed = time.perf_counter() - start
        if self.problem.status != cp.OPTIMAL or self.problem.value is None or not math.isfinite(self.problem.value):
            return _failed(f"not optimal: {self.problem.status}", "cvxpy", elapsed, build)
        return LPResult(
            value=float(self.problem.value),
            status="optimal",
            time=elapsed,
            input=np.asarray(self.z_in.value).reshape(self.net.input_shape),
            output=np.asarray(self.logits.value),
            duals=tuple(np.asarray(e.dual_value, dtype=np.float64).ravel() for e in self._equalities),
            backend="cvxpy",
            build_time=build,
        )


def build_lp(net: Network, ball: Ball, bounds: Bounds, backend: str | None = None) -> HighsLP | CvxpyLP:
    """The LP of one example, ready to ``solve(c)`` for many objectives.

    ``backend`` None picks the direct HiGHS model for an l_inf ball and the
    CVXPY model (the only one that takes l1 and l2 balls) otherwise.
    """
    if backend is None:
        backend = "highs" if isinstance(ball, LinfBall) else "cvxpy"
    if backend == "highs":
        return HighsLP(net, ball, bounds)
    if backend == "cvxpy":
        return CvxpyLP(net, ball, bounds)
    raise ValueError(f"unknown LP backend {backend!r}; choose one of {BACKENDS}")


def solve_lp(
    net: Network,
    ball: Ball,
    c: np.ndarray | Tensor,
    bounds: Bounds,
    backend: str | None = None,
) -> LPResult | list[LPResult]:
    """Solve eq. 19 for one example (``ball`` and ``bounds`` of batch 1).

    ``c`` of shape (n_out,) gives one :class:`LPResult`; (m, n_out) gives a
    list, solved on one model with warm starts.
    """
    return solve_rows(build_lp(net, ball, bounds, backend).solve, c)


def solve_rows(solve: Callable, c: np.ndarray | Tensor) -> object | list:
    """``solve(c)`` for c of shape (n_out,), or a list of ``solve(row)`` on one model for c of shape (m, n_out)."""
    c_arr = c.detach().cpu().double().numpy() if isinstance(c, Tensor) else np.asarray(c, dtype=np.float64)
    if c_arr.ndim == 1:
        return solve(c_arr)
    if c_arr.ndim == 2:
        return [solve(row) for row in c_arr]
    raise ValueError(f"objective c must have shape (n_out,) or (m, n_out), got {c_arr.shape}")


__all__ = ["LPResult", "HighsLP", "CvxpyLP", "build_lp", "solve_lp"]
