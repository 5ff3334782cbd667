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
  and the crossing units' z, so only two rows per crossing unit remain (its
  equality and the triangle's upper face, ẑ split as z + w), and the output
  layer is folded into the cost. Built once per example and re-solved for
  each objective, by simplex from the previous basis (warm start) on small
  models and by interior point on large ones; the multipliers ν of the
  eliminated equalities are recovered from the crossing units' equality duals.

What is certified: :attr:`LPResult.bound`, the safe bound of MATH.md §11
computed from the solver's multipliers by
:func:`lpverify.dual.objective_from_multipliers` in outward-rounded float64.
It is valid whatever the solver returned (an early stop, a tolerance, a
wrong sign), because each unit's term is minimised over its relaxation set
exactly. ``value``, the solver's objective, is reported for comparison and
is never a bound. The objective is scaled by a power of two before solving
(exact), so the solver's absolute tolerances meet a well-scaled problem.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from .activations import LeakyReLU
from .bounds import Bounds, prepare
from .dual import objective_from_multipliers, residual_magnitudes
from .encoding import (
    Eliminated,
    Layer,
    power_of_two_scale,
    silent_highs,
    column_boxes,
    eliminate_stable,
    example_data,
    highs_model,
    leaky_slopes,
    objective_vector,
    solve_rows,
    split_boxes,
    triangle_rows,
)
from .network import Network
from .sets import Ball, LinfBall

BACKENDS = ("highs", "cvxpy")
SOLVERS = ("simplex", "ipm")
# Above this many constraint nonzeros the direct model is solved by interior point:
# warm-started simplex wins on small models (a few ms per re-solve on the robust MNIST
# model), while on large degenerate ones it needs tens of thousands of iterations per
# objective. On the random-init MNIST model at ε = 0.01, 0.015 and 0.02 (179k, 258k and
# 332k nonzeros) simplex takes 0.54, 1.35 and 3.5 s per margin LP, interior point
# 0.76, 1.08 and 2.1 s; at ε = 0.1 (590k) simplex 200-300 s, interior point 8-10 s.
IPM_NONZEROS = 250_000


def choose_solver(nonzeros: int) -> str:
    """HiGHS's LP algorithm for a model of this size: "simplex" or "ipm"."""
    return "ipm" if nonzeros > IPM_NONZEROS else "simplex"


@dataclass(frozen=True)
class LPResult:
    """The outcome of one LP solve.

    Attributes:
        value: the solver's optimum of cᵀẑ_k; ``nan`` unless ``status == "optimal"``.
            Not a certificate: see ``bound``.
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
        bound: the safe lower bound on the LP optimum (hence on
            ``min_{z∈B} cᵀ f(z)``) from the solver's multipliers, valid in
            exact arithmetic whatever the solver did; ``nan`` when the solver
            returned no multipliers.
    """

    value: float
    status: str
    time: float
    input: np.ndarray | None = None
    output: np.ndarray | None = None
    duals: tuple[np.ndarray, ...] = ()
    backend: str = "highs"
    build_time: float = 0.0
    bound: float = math.nan

    @property
    def optimal(self) -> bool:
        return self.status == "optimal" and math.isfinite(self.value)


def _failed(status: str, backend: str, elapsed: float = 0.0, build_time: float = 0.0) -> LPResult:
    return LPResult(value=math.nan, status=status, time=elapsed, backend=backend, build_time=build_time)


class _LPModel:
    """What both builds share: input checks, the invalid-bounds verdict, build-time accounting."""

    backend = ""

    def _prepare(self, net: Network, ball: Ball, bounds: Bounds) -> tuple[np.ndarray, np.ndarray, list[Layer]] | None:
        """The box and layers of the example, or None (with ``self.invalid`` set) if no LP can be built."""
        self._start = time.perf_counter()
        self.net = net
        self._ball = prepare(net, ball).to(torch.float64)  # the safe bounds' set, built once
        self._bounds = bounds.to(torch.float64)
        self._residuals: list[Tensor] | None = None
        self.input_shape = net.input_shape
        self._solves = 0
        prepared = example_data(net, ball, bounds)
        self.invalid: str | None = prepared if isinstance(prepared, str) else None
        if self.invalid is not None:
            self._built()
            return None
        return prepared

    def _built(self) -> None:
        self.build_time = time.perf_counter() - self._start

    def safe_bound(self, c: np.ndarray, duals: tuple[np.ndarray, ...] | None) -> float:
        """The certified lower bound from multipliers ν_2..ν_{k-1} (MATH.md §11); nan without them."""
        if duals is None or len(duals) != len(self.net.blocks) - 1:
            return math.nan
        if not all(np.isfinite(d).all() for d in duals):
            return math.nan
        c_t = torch.as_tensor(c, dtype=torch.float64).view(1, 1, -1)
        nus = [torch.as_tensor(d, dtype=torch.float64).view(1, 1, -1) for d in duals]
        with torch.no_grad():
            if self._residuals is None:
                self._residuals = residual_magnitudes(self.net.detached(torch.float64), self._ball, self._bounds)
            bound = objective_from_multipliers(self.net, self._ball, c_t, self._bounds, nus, self._residuals)
        return float(bound[0, 0])

    def _begin(self, c: np.ndarray | Tensor) -> tuple[np.ndarray, float]:
        """The checked objective, and the build time charged to this solve (the first one)."""
        c = objective_vector(self.net, c)
        build = self.build_time if self._solves == 0 else 0.0
        self._solves += 1
        return c, build


class HighsLP(_LPModel):
    """eq. 19 for one example as a direct sparse HiGHS model, re-solved per objective.

    Stable units are eliminated: every pre-activation is written as an affine
    expression ``ẑ_i = E_i v + e_i`` of the only free variables ``v``, the
    input z_1 and the post-activations z of the crossing units. I⁻ units
    contribute nothing (z = 0), I⁺ units pass their expression on (z = ẑ).
    Each crossing unit's ẑ is split as ``z + w`` with ``w ∈ [ℓ, 0]``, so the
    faces z ≥ 0 and z ≥ ẑ of its triangle are bounds and two rows remain
    (:func:`lpverify.encoding.triangle_rows`): the equality ``z + w = E v + e``
    and the upper face ``z ≤ d (ẑ − ℓ)``. The objective
    ``cᵀ(W_k z_{k-1} + b_k)`` is a cost on v.

    ``solver`` is HiGHS's algorithm, "simplex" (re-solves warm-start from the
    last basis) or "ipm" (interior point with crossover); by default it
    follows the model's size (:func:`choose_solver`).
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
        slopes = leaky_slopes(net)
        elim = eliminate_stable(net.sparse(), layers, slopes)
        rows = triangle_rows(elim)
        self._multipliers = _multiplier_map(net.sparse(), layers, elim, slopes)
        self._out_map, self._out_offset = elim.out_map, elim.out_offset  # ẑ_k = out_map v + out_offset
        self._cost_map = elim.out_map.T.tocsr()  # c ↦ the cost of v
        self.n_col, self.n_row = rows.matrix.shape[1], rows.matrix.shape[0]
        col_lower, col_upper = column_boxes(elim, lo, hi)
        w_lower, w_upper = split_boxes(elim)
        model = highs_model(rows, np.concatenate([col_lower, w_lower]), np.concatenate([col_upper, w_upper]))
        self.solver = solver or choose_solver(rows.matrix.nnz)
        self._time_limit = time_limit
        self._highs = silent_highs()
        self._highs.setOptionValue("output_flag", False)
        self._highs.setOptionValue("solver", self.solver)
        self._highs.passModel(model)
        self._status_optimal = highspy.HighsModelStatus.kOptimal
        self._v_cols = np.arange(elim.n_var, dtype=np.int32)  # the columns with a cost; w's stay 0
        self._built()

    def solve(self, c: np.ndarray | Tensor, *, time_limit: float | None = None) -> LPResult:
        """min cᵀ ẑ_k over the relaxation; a simplex solve warm-starts from the previous basis.

        The objective is solved scaled by a power of two; ``bound`` is the
        safe bound of the unscaled objective from the solver's multipliers,
        also after a time limit or a non-optimal status when HiGHS still
        reports multipliers. ``time_limit`` overrides the model's for this solve.
        """
        c, build = self._begin(c)
        if self.invalid is not None:
            return _failed(self.invalid, "highs", build_time=build)
        h = self._highs
        scale = power_of_two_scale(c)
        c_scaled = c * scale
        start = time.perf_counter()
        try:
            limit = self._time_limit if time_limit is None else time_limit
            h.setOptionValue("time_limit", math.inf if limit is None else max(float(limit), 1e-3))
            h.changeColsCost(self._v_cols.size, self._v_cols, self._cost_map @ c_scaled)
            h.run()
            status = h.getModelStatus()
            sol = h.getSolution()
            objective = h.getInfo().objective_function_value
            duals = self._nu(c_scaled, np.asarray(sol.row_dual)) if sol.dual_valid else None
            bound = self.safe_bound(c_scaled, duals) / scale
        except Exception as err:  # a solver failure is reported, never turned into a bound
            return _failed(f"solver error: {err}", "highs", time.perf_counter() - start, build)
        elapsed = time.perf_counter() - start
        if status != self._status_optimal:
            failed = _failed(f"not optimal: {h.modelStatusToString(status)}", "highs", elapsed, build)
            return LPResult(**{**failed.__dict__, "bound": bound})
        value = (objective + float(c_scaled @ self._out_offset)) / scale
        if not math.isfinite(value):
            return _failed("not optimal: non-finite objective", "highs", elapsed, build)
        v = np.asarray(sol.col_value)[: self._v_cols.size]
        return LPResult(
            value=value,
            status="optimal",
            time=elapsed,
            input=v[: math.prod(self.input_shape)].reshape(self.input_shape),
            output=self._out_map @ v + self._out_offset,
            duals=tuple(d / scale for d in duals) if duals is not None else (),
            backend="highs",
            build_time=build,
            bound=bound,
        )

    def _nu(self, c: np.ndarray, row_dual: np.ndarray) -> tuple[np.ndarray, ...]:
        """ν_2..ν_{k-1} of the eliminated equalities ẑ_{i+1} = W_i z_i + b_i.

        Each equality's multiplier y_j (HiGHS's sign, ∂p*/∂b): on I the dual of
        the unit's row ``z + w − E v = e`` itself; on I⁺, eliminated, the next
        layer's ``(Wᵀ y)_j`` (``(Wᵀ c)_j`` after the last hidden layer) by
        stationarity in ẑ_j; on I⁻ 0 (s times that under a LeakyReLU). Theorem 1's ν is −y.
        """
        y_next = c
        out: list[np.ndarray] = []
        for size, pos, pass_on, cross, rows, factor in reversed(self._multipliers):
            y = np.zeros(size)
            y[pos] = pass_on @ y_next if factor is None else factor * (pass_on @ y_next)
            y[cross] = row_dual[rows]
            out.insert(0, -y)
            y_next = y
        return tuple(out)


def _multiplier_map(
    mats: list[tuple[sp.csr_matrix, np.ndarray]], layers: list[Layer], elim: Eliminated, slopes: list[float]
) -> list[tuple[int, np.ndarray, sp.csr_matrix, np.ndarray, np.ndarray, np.ndarray | None]]:
    """Per hidden layer, what :meth:`HighsLP._nu` reads: (units, the eliminated units that pass ẑ on (I⁺, and
    I⁻ under a LeakyReLU), their rows of ``W_{i+1}ᵀ``, I, I's equality rows, their factors 1 or s (None: all 1))."""
    first = np.cumsum([0] + [cr.units.size for cr in elim.crossing])
    out = []
    for i, (layer, cr, slope) in enumerate(zip(layers, elim.crossing, slopes)):
        passed = layer.pos if slope == 0 else layer.pos | layer.neg
        pos = np.flatnonzero(passed)
        factor = None if slope == 0 else np.where(layer.pos[pos], 1.0, slope)
        out.append((layer.pos.size, pos, mats[i + 1][0].T.tocsr()[pos], cr.units, np.arange(first[i], first[i + 1]), factor))
    return out


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
        slopes = leaky_slopes(net)
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
        for (w, b), layer, slope in zip(mats[:-1], layers, slopes):
            zhat = cp.Variable(b.size)
            equality = zhat == w @ z + b
            constraints.append(equality)
            self._equalities.append(equality)
            z = cp.Variable(b.size)
            neg, pos, cross = (np.flatnonzero(m) for m in (layer.neg, layer.pos, layer.cross))
            lo_c, up_c = layer.lower[cross], layer.upper[cross]
            if neg.size:
                constraints.append(z[neg] == 0 if slope == 0 else z[neg] == slope * zhat[neg])
            if pos.size:
                constraints.append(z[pos] == zhat[pos])
            if cross.size and slope != 0:  # the LeakyReLU's triangle: z ≥ ẑ, z ≥ s ẑ, below the chord
                s_arr = np.full(cross.size, slope)
                face_a, face_d, face_b = LeakyReLU.split_face(lo_c, up_c, s_arr)
                constraints += [z[cross] >= slope * zhat[cross], z[cross] >= zhat[cross],
                                z[cross] <= cp.multiply(face_d, zhat[cross]) + face_b]
            elif cross.size:
                constraints += [
                    z[cross] >= 0,
                    z[cross] >= zhat[cross],
                    cp.multiply(up_c - lo_c, z[cross]) <= cp.multiply(up_c, zhat[cross] - lo_c),
                ]
        w_out, b_out = mats[-1]
        self.logits = w_out @ z + b_out
        self.problem = cp.Problem(cp.Minimize(self.c @ self.logits), constraints)
        self._built()

    def solve(self, c: np.ndarray | Tensor, *, time_limit: float | None = None) -> LPResult:
        """min cᵀ ẑ_k; ``bound`` is the safe bound from the equalities' duals.

        ``time_limit`` (seconds) is handed to the solver (HiGHS or Clarabel);
        CVXPY's own compilation of the problem is not interrupted.
        """
        import cvxpy as cp

        c, build = self._begin(c)
        if self.invalid is not None:
            return _failed(self.invalid, "cvxpy", build_time=build)
        scale = power_of_two_scale(c)
        self.c.value = c * scale
        start = time.perf_counter()
        try:
            limits = {} if time_limit is None else {"time_limit": max(float(time_limit), 1e-3)}
            self.problem.solve(solver=self.solver, **limits)
            duals = None
            if all(e.dual_value is not None for e in self._equalities):
                duals = tuple(np.asarray(e.dual_value, dtype=np.float64).ravel() for e in self._equalities)
            bound = self.safe_bound(c * scale, duals) / scale
        except Exception as err:  # cvxpy raises SolverError, ValueError, ...: reported, never a bound
            return _failed(f"solver error: {type(err).__name__}: {err}", "cvxpy", time.perf_counter() - start, build)
        elapsed = time.perf_counter() - start
        if self.problem.status != cp.OPTIMAL or self.problem.value is None or not math.isfinite(self.problem.value):
            failed = _failed(f"not optimal: {self.problem.status}", "cvxpy", elapsed, build)
            return LPResult(**{**failed.__dict__, "bound": bound})
        return LPResult(
            value=float(self.problem.value) / scale,
            status="optimal",
            time=elapsed,
            input=np.asarray(self.z_in.value).reshape(self.net.input_shape),
            output=np.asarray(self.logits.value),
            duals=tuple(d / scale for d in duals) if duals is not None else (),
            backend="cvxpy",
            build_time=build,
            bound=bound,
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


def solve_batch(
    net: Network,
    ball: Ball,
    c: np.ndarray | Tensor,
    bounds: Bounds,
    *,
    backend: str | None = None,
    workers: int = 1,
) -> list[list[LPResult]]:
    """Solve eq. 19 for every example of a batch and each of its m objectives.

    ``c`` has shape (B, m, n_out). Each example gets one model, re-solved for
    its m objectives (warm starts). HiGHS solves an LP on one core, so
    ``workers`` > 1 solves that many examples at once, each in a spawned
    process with one torch thread; with fewer examples than workers, each
    example's objectives are split into parts solved on separate models.
    Returns B lists of m results, in order.
    """
    c = np.asarray(c.detach().cpu().double() if isinstance(c, Tensor) else c, dtype=np.float64)
    if c.ndim != 3 or c.shape[0] != ball.batch_size:
        raise ValueError(f"objectives must have shape (batch, m, n_out) with batch {ball.batch_size}, got {c.shape}")
    batch = ball.batch_size
    parts = max(1, min(c.shape[1], workers // batch))
    jobs = [(net, ball.select(b), bounds.select(b), part, backend) for b in range(batch) for part in np.array_split(c[b], parts)]
    if workers <= 1 or len(jobs) <= 1:
        results = [_solve_example(*job) for job in jobs]
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        spawn = multiprocessing.get_context("spawn")  # a forked torch can hang in its thread pool
        with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=spawn, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            results = list(pool.map(_solve_example, *zip(*jobs)))
    return [[r for part in results[b * parts : (b + 1) * parts] for r in part] for b in range(batch)]


def _solve_example(net: Network, ball: Ball, bounds: Bounds, c: np.ndarray, backend: str | None) -> list[LPResult]:
    """The LPs of objectives c (m, n_out) of one example, on one model."""
    return solve_lp(net, ball, c, bounds, backend)


__all__ = ["LPResult", "HighsLP", "CvxpyLP", "build_lp", "solve_batch", "solve_lp"]
