"""Exact (complete) verification: the mixed-integer program of MATH.md §6, solved by HiGHS.

For one example, an objective c and valid pre-activation bounds ℓ, u::

    minimize   cᵀ ẑ_k
    subject to z_1 ∈ [lo, hi]                                  (the input box)
               ẑ_{i+1} = W_i z_i + b_i                         i = 1 .. k-1
               z = 0 on I⁻,  z = ẑ on I⁺
               z ≥ ẑ, z ≥ 0, z ≤ u·a, z ≤ ẑ − ℓ(1 − a),  a ∈ {0, 1}   on I

With valid bounds a = 1 forces z = ẑ ≥ 0 and a = 0 forces z = 0 ≥ ẑ, so the
optimum is the true ``min_{z_1 ∈ B(x)} cᵀ f(z_1)`` and closes the chain of §6::

    J(c, α) ≤ p*(c) ≤ MILP*(c) = true min ≤ cᵀ f(any point of B(x))

The model reuses the LP's elimination of the stable units
(:func:`lpverify.lp.eliminate_stable`): the variables are the input, one z
and one binary a per crossing unit, three rows per crossing unit.

What a result means (:class:`MILPResult`):

* ``value`` is ``cᵀ f(witness)`` recomputed by a float64 forward pass of the
  network's exact matrices at the solver's input, clipped into the box — an
  *attained* value, so ``true min ≤ value`` whatever the solver or the bounds.
* ``bound`` is HiGHS's dual bound: *unchecked*. It holds in exact arithmetic
  only up to the solver's integrality, feasibility and gap tolerances, so it
  is reported for diagnostics and never counted as a certificate (MATH.md
  §11; a rigorous *verified* comes from a safe bound, see
  :func:`lpverify.verify`). It is nan after a failed solve or a failed check.
* For a margin objective ``c = e_y − e_t`` (:func:`lpverify.margin_objectives`)
  the MILP can only convict: ``value < 0`` → violated, the witness is a
  counterexample (re-checked by :func:`lpverify.verify`); otherwise unknown.
  :attr:`MILPResult.verdict`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import scipy.sparse as sp
from torch import Tensor

from .activations import Activation
from .bounds import Bounds
from .encoding import (
    big_m_rows,
    column_boxes,
    eliminate_stable,
    example_data,
    highs_model,
    leaky_slopes,
    objective_vector,
    power_of_two_scale,
    silent_highs,
    solve_rows,
)
from .network import Network
from .sets import LinfBall

# HiGHS's defaults are 1e-4 (relative) and 1e-6; ground truth wants the gap closed.
MIP_REL_GAP = 1e-6
MIP_ABS_GAP = 1e-6
# Relative slack of the soundness checks: the solver works to feasibility
# tolerances of ~1e-6 and the bounds may come from float32 arithmetic.
TOLERANCE = 1e-6
# Relative slack before a witness's pre-activation outside [ℓ, u] convicts the bounds:
# loose, since bounds computed in float32 may miss a tight extreme by rounding.
BOUNDS_SLACK = 1e-5

# Statuses after which HiGHS's dual bound is still a proven bound (the tree search
# was only cut short); every other non-optimal status reports no bound.
_INTERRUPTED = {
    "kTimeLimit": "time limit",
    "kSolutionLimit": "node limit",
    "kIterationLimit": "iteration limit",
    "kInterrupt": "interrupted",
    "kHighsInterrupt": "interrupted",
}


@dataclass(frozen=True)
class MILPResult:
    """The outcome of one exact solve (MATH.md §6).

    Attributes:
        value: ``cᵀ f(witness)`` by a float64 forward pass (not the solver's
            number): an upper bound on the true minimum. nan without a witness.
        bound: HiGHS's proven dual bound on the true minimum (valid when the
            pre-activation bounds are), never above ``value``; nan if unknown
            or a check failed.
        status: "optimal", "time limit", "node limit", "infeasible",
            "invalid bounds: ...", "solver error: ...", ...
        witness: the input z_1 found, shape input_shape, in [lo, hi]; or None.
        output: f(witness) in float64, shape (n_out,); or None.
        time: seconds spent solving (building excluded, see ``build_time``).
        build_time: seconds spent building the model this solve used.
        nodes: branch-and-bound nodes explored.
        solver_value: HiGHS's objective at its incumbent (diagnostics only).
        solver_gap: HiGHS's relative gap ``mip_gap`` at the end.
    """

    value: float
    bound: float
    status: str
    witness: np.ndarray | None = None
    output: np.ndarray | None = None
    time: float = 0.0
    build_time: float = 0.0
    nodes: int = 0
    solver_value: float = math.nan
    solver_gap: float = math.nan
    from_start: bool = False

    @property
    def optimal(self) -> bool:
        """Solved to the gap tolerances with a checked witness and a finite bound."""
        return self.status == "optimal" and math.isfinite(self.value) and math.isfinite(self.bound)

    @property
    def gap(self) -> float:
        """``value − bound``: how far the true minimum may lie below ``value`` (nan if either is)."""
        return self.value - self.bound

    @property
    def verdict(self) -> str:
        """For an objective whose sign matters (a margin): "violated" (value < 0 at the
        witness) or "unknown". Never "verified": the solver's bound is unchecked."""
        if self.value < 0:
            return "violated"
        return "unknown"

    @property
    def start_returned(self) -> bool:
        """The solver called its seed point, unchanged, optimal.

        Seen on small conv nets at ~0.25% of solves with a minimum far below
        the seed's value: harmless for verdicts (only the witness's own value
        is used, and only to convict), but a reason to distrust the solver's
        bound, which :func:`lpverify.verify` then says.
        """
        return self.status == "optimal" and self.from_start


def forward64(
    mats: list[tuple[sp.csr_matrix, np.ndarray]], x: np.ndarray, activations: Sequence[Activation] | None = None
) -> list[np.ndarray]:
    """``[ẑ_2, ..., ẑ_k]`` of the flat input x by the exact float64 matrices of :meth:`Network.sparse`
    (ReLU between them unless ``activations`` are given)."""
    out: list[np.ndarray] = []
    z = np.asarray(x, dtype=np.float64).ravel()
    for i, (w, b) in enumerate(mats):
        if i == 0:
            pass
        elif activations is None or activations[i - 1].is_relu:
            z = np.maximum(z, 0.0)
        else:
            z = activations[i - 1].forward_np(z)
        zhat = w @ z + b
        out.append(zhat)
        z = zhat
    return out


@dataclass(frozen=True)
class _Columns:
    """Where each kind of variable sits in the MILP: input, crossing units' z, binaries a."""

    n_input: int
    n_var: int  # input + z
    n_bin: int

    @property
    def n_col(self) -> int:
        return self.n_var + self.n_bin


class MILPModel:
    """§6 for one example as a HiGHS model: built once, then ``solve(c)`` per objective.

    Build it with :func:`build_milp`. Each solve starts a fresh search (only the
    model is shared), seeded with one input point as its first incumbent.
    """

    def __init__(
        self,
        net: Network,
        ball: LinfBall,
        bounds: Bounds,
        *,
        time_limit: float | None,
        node_limit: int | None,
        mip_rel_gap: float,
        mip_abs_gap: float,
    ):
        import highspy

        if not isinstance(ball, LinfBall):
            raise TypeError(
                f"the MILP is built over a box: got {type(ball).__name__}; an l_inf ball (LinfBall) is required"
            )
        begun = time.perf_counter()
        self.net = net
        self._solves = 0
        prepared = example_data(net, ball, bounds)
        self.invalid: str | None = prepared if isinstance(prepared, str) else None
        if self.invalid is not None:
            self.build_time = time.perf_counter() - begun
            return
        lo, hi, layers = prepared
        self._lo, self._hi, self._layers = lo, hi, layers
        self._center = ball.center.detach().cpu().double().numpy().ravel()
        self._mats = net.sparse()
        elim = eliminate_stable(self._mats, layers, leaky_slopes(net))
        self._elim = elim
        rows = big_m_rows(elim)
        cols = _Columns(elim.n_input, elim.n_var, elim.n_crossing)
        self._cols = cols
        # z ≤ u is implied by z ≤ u·a; as a column bound it tightens nothing but helps presolve.
        col_lo, col_hi = column_boxes(elim, lo, hi)
        model = highs_model(
            rows, np.concatenate([col_lo, np.zeros(cols.n_bin)]), np.concatenate([col_hi, np.ones(cols.n_bin)]), cols.n_bin
        )
        h = silent_highs()
        h.setOptionValue("output_flag", False)
        h.setOptionValue("mip_rel_gap", float(mip_rel_gap))
        h.setOptionValue("mip_abs_gap", float(mip_abs_gap))
        self._time_limit = time_limit
        if node_limit is not None:
            h.setOptionValue("mip_max_nodes", int(node_limit))
        h.passModel(model)
        self._highs = h
        self._highspy = highspy
        self._all_cols = np.arange(cols.n_col, dtype=np.int32)
        self.build_time = time.perf_counter() - begun

    def _assignment(self, x: np.ndarray) -> np.ndarray:
        """The MILP point of the input x (in the box): its crossing units' ``z = σ(ẑ)`` and ``a = [ẑ > 0]``."""
        pre = forward64(self._mats, x, self.net.activations)
        z, a = [], []
        for cr, zhat in zip(self._elim.crossing, pre):
            on = zhat[cr.units] > 0
            z.append(np.where(on, zhat[cr.units], 0.0 if cr.slope == 0 else cr.slope * zhat[cr.units]))
            a.append(on.astype(np.float64))
        return np.concatenate([x, *z, *a])

    def solve(
        self, c: np.ndarray | Tensor, start: np.ndarray | Tensor | None = None, *, time_limit: float | None = None
    ) -> MILPResult:
        """min cᵀ f(z_1) over the box; each solve starts afresh (no incumbent carried over).

        ``start`` (shape input_shape; default the ball's centre, clipped into
        the box) is handed to HiGHS as a first incumbent, e.g. an attack's
        point: the search prunes against it and an interrupted solve still
        reports an attained value. ``time_limit`` overrides the model's limit
        for this solve only.
        """
        c = objective_vector(self.net, c)
        build = self.build_time if self._solves == 0 else 0.0
        self._solves += 1
        if self.invalid is not None:
            return MILPResult(math.nan, math.nan, self.invalid, build_time=build)
        h, cols = self._highs, self._cols
        seed = self._assignment(self._start_point(start))
        started = time.perf_counter()
        limit = self._time_limit if time_limit is None else time_limit
        try:
            h.clearSolver()
            h.setOptionValue("time_limit", math.inf if limit is None else float(limit))
            # Solved scaled by a power of two (exact): the solver's absolute tolerances then
            # meet a unit objective, not one scaled by 1e-11 that stops at its start point.
            scale = power_of_two_scale(c)
            cost = np.concatenate([self._elim.out_map.T @ (c * scale), np.zeros(cols.n_bin)])
            h.changeColsCost(cols.n_col, self._all_cols, cost)
            h.changeObjectiveOffset(float((c * scale) @ self._elim.out_offset))
            h.setSolution(cols.n_col, self._all_cols, seed)
            h.run()
            status = h.getModelStatus()
            info = h.getInfo()
            solution = h.getSolution()
        except Exception as err:  # a solver failure is reported, never turned into a bound
            elapsed = time.perf_counter() - started
            return MILPResult(math.nan, math.nan, f"solver error: {err}", time=elapsed, build_time=build)
        elapsed = time.perf_counter() - started
        pure_lp = cols.n_bin == 0  # HiGHS then reports no node count (−1) and no MIP gap
        stats = dict(
            time=elapsed,
            build_time=build,
            nodes=0 if pure_lp else max(0, int(info.mip_node_count)),
            solver_gap=math.nan if pure_lp else float(info.mip_gap),
        )
        if status == self._highspy.HighsModelStatus.kOptimal:
            outcome = "optimal"
        elif status.name in _INTERRUPTED:
            outcome = _INTERRUPTED[status.name]
        elif status == self._highspy.HighsModelStatus.kInfeasible:
            # Impossible with valid bounds (every point of the ball is feasible): the bounds are wrong.
            return MILPResult(math.nan, math.nan, "infeasible", **stats)
        else:
            return MILPResult(math.nan, math.nan, f"solver error: {h.modelStatusToString(status)}", **stats)
        bound = self._dual_bound(info, outcome) / scale
        feasible = self._highspy.SolutionStatus.kSolutionStatusFeasible
        has_point = solution.value_valid and info.primal_solution_status == feasible
        if not has_point:
            if outcome == "optimal":
                return MILPResult(math.nan, math.nan, "solver error: optimal without a feasible solution", **stats)
            return MILPResult(math.nan, bound, outcome, **stats)
        solver_value = float(info.objective_function_value) / scale
        x = np.asarray(solution.col_value)[: cols.n_input]
        stats["from_start"] = bool(np.array_equal(np.clip(x, self._lo, self._hi), seed[: cols.n_input]))
        return self._checked(c, x, outcome, bound, solver_value, stats)

    def _start_point(self, start: np.ndarray | Tensor | None) -> np.ndarray:
        """A flat input point in the box to seed the search: ``start`` or the ball's centre, clipped."""
        if start is None:
            return np.clip(self._center, self._lo, self._hi)
        x = np.asarray(start.detach().cpu().double() if isinstance(start, Tensor) else start, dtype=np.float64)
        if x.size != self._lo.size:
            raise ValueError(f"start must have the input shape {self.net.input_shape}, got {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("start contains NaN or inf")
        return np.clip(x.ravel(), self._lo, self._hi)

    def _dual_bound(self, info, outcome: str) -> float:
        """HiGHS's proven lower bound (the LP optimum when there is no binary), nan if none."""
        if self._cols.n_bin == 0:
            # A pure LP: only an optimal solve proves anything, and then its optimum is the bound.
            bound = float(info.objective_function_value) if outcome == "optimal" else math.nan
        else:
            bound = float(info.mip_dual_bound)
        return bound if math.isfinite(bound) else math.nan

    def _checked(
        self, c: np.ndarray, x: np.ndarray, outcome: str, bound: float, solver_value: float, stats: dict
    ) -> MILPResult:
        """The witness evaluated in float64 and the soundness checks of §6 applied to it.

        The input must lie in the box (up to the solver's tolerance, then it is
        clipped); its pre-activations must lie within ℓ, u (else the bounds
        were not valid and neither is the MILP's bound); and the attained value
        may not fall below the proven bound.
        """
        lo, hi = self._lo, self._hi
        outside = float(np.max(np.maximum(lo - x, x - hi), initial=0.0))
        if not outside <= TOLERANCE * (1.0 + float(np.max(np.abs(np.concatenate([lo, hi])), initial=0.0))):
            return MILPResult(
                math.nan, math.nan, f"solver error: the solver's input lies {outside:.3g} outside the box", **stats
            )
        x = np.clip(x, lo, hi)
        pre = forward64(self._mats, x, self.net.activations)
        output = pre[-1]
        value = float(c @ output)
        if not math.isfinite(value):
            return MILPResult(math.nan, math.nan, "solver error: non-finite value at the witness", **stats)
        witness = x.reshape(self.net.input_shape)
        result = dict(witness=witness, output=output, solver_value=solver_value, **stats)
        for i, (zhat, layer) in enumerate(zip(pre[:-1], self._layers)):
            slack = BOUNDS_SLACK * (1.0 + np.abs(layer.lower) + np.abs(layer.upper))
            bad = np.flatnonzero((zhat < layer.lower - slack) | (zhat > layer.upper + slack))
            if bad.size:
                j = int(bad[0])
                return MILPResult(
                    value, math.nan,
                    f"invalid bounds: at the witness, unit {j} of hidden layer {i} has ẑ = {zhat[j]:.6g} outside "
                    f"[{layer.lower[j]:.6g}, {layer.upper[j]:.6g}]",
                    **result,
                )
        if math.isfinite(bound) and value < bound - TOLERANCE * (1.0 + abs(value) + abs(bound)):
            return MILPResult(
                value, math.nan,
                f"solver error: the witness's value {value:.9g} lies below the solver's bound {bound:.9g}",
                **result,
            )
        # Within the tolerance a bound above the attained value is rounding: report bound ≤ value.
        return MILPResult(value, min(bound, value), outcome, **result)


def build_milp(
    net: Network,
    ball: LinfBall,
    bounds: Bounds,
    *,
    time_limit: float | None = None,
    node_limit: int | None = None,
    mip_rel_gap: float = MIP_REL_GAP,
    mip_abs_gap: float = MIP_ABS_GAP,
) -> MILPModel:
    """The MILP of one example (MATH.md §6), ready to ``solve(c)`` for many objectives.

    ``time_limit`` (seconds) and ``node_limit`` apply to each solve.
    """
    if time_limit is not None and not time_limit > 0:
        raise ValueError(f"time_limit must be > 0 seconds, got {time_limit}")
    if node_limit is not None and node_limit < 0:
        raise ValueError(f"node_limit must be >= 0, got {node_limit}")
    if not (mip_rel_gap >= 0 and mip_abs_gap >= 0):
        raise ValueError(f"MIP gaps must be >= 0, got mip_rel_gap={mip_rel_gap}, mip_abs_gap={mip_abs_gap}")
    limits = dict(time_limit=time_limit, node_limit=node_limit, mip_rel_gap=mip_rel_gap, mip_abs_gap=mip_abs_gap)
    return MILPModel(net, ball, bounds, **limits)


def solve_milp(
    net: Network,
    ball: LinfBall,
    c: np.ndarray | Tensor,
    bounds: Bounds,
    *,
    time_limit: float | None = None,
    node_limit: int | None = None,
    mip_rel_gap: float = MIP_REL_GAP,
    mip_abs_gap: float = MIP_ABS_GAP,
    start: np.ndarray | Tensor | None = None,
) -> MILPResult | list[MILPResult]:
    """Exactly minimise ``cᵀ f(z_1)`` over the ball of one example (MATH.md §6).

    ``ball`` and ``bounds`` have batch 1 (use ``.select(i)``); ``bounds`` must
    be valid for the ball (any sound method: interval, dual, LP), and the
    tighter they are the fewer binaries and the faster the solve. ``c`` of
    shape (n_out,) gives one :class:`MILPResult`; (m, n_out) gives a list,
    one solve per row on one model. ``start`` seeds each search with an
    input point (default: the ball's centre). Invalid (NaN or infinite)
    bounds give a result with nan value and bound and the reason as its status.
    """
    limits = dict(time_limit=time_limit, node_limit=node_limit, mip_rel_gap=mip_rel_gap, mip_abs_gap=mip_abs_gap)
    model = build_milp(net, ball, bounds, **limits)
    return solve_rows(lambda row: model.solve(row, start), c)


__all__ = ["MILPModel", "MILPResult", "build_milp", "forward64", "solve_milp"]
