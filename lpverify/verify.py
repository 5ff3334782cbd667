"""Verify a linear property of the outputs with any rung of the ladder of bounds (MATH.md §6).

A property is a set of objectives, one row per output constraint that must
hold everywhere in the input set::

    c_r ᵀ f(z) + d_r > 0    for every row r and every z ∈ B(x)

(a margin ``f_y − f_t > 0`` is the row c = e_y − e_t, d = 0). Each method
gives a lower bound on ``min_z c_rᵀ f(z) + d_r``; the property is *verified*
when every row's bound is > 0. Ordered from loose and cheap to exact and
expensive, on the same numbers:

==========  ===========================================================
interval    naive layer-wise bounds (Appendix B)
dual        Theorem 1 with Algorithm 1's bounds (the paper)
dual-opt    Theorem 1 with slopes α optimised per objective
lp          the LP of eq. 19 over Algorithm 1's bounds
lp-all      the LP over bounds that are themselves LPs (LP-all)
milp        the exact MILP over LP-all bounds: also finds counterexamples
bab         branch and bound over ReLU splits with rigorous leaves and a
            falsifier (:mod:`lpverify.bab`): complete
==========  ===========================================================

The chain ``interval, dual ≤ dual-opt ≤ lp ≤ lp-all ≤ milp ≤ f`` holds row by
row except that interval and dual are not ordered.

What the statuses promise (SOUNDNESS.md):

* *verified*: every row's bound is > 0, strictly, and every bound is
  rigorous: outward-rounded dual bounds, or the LP's safe bound from its
  multipliers. The MILP solver's own bound is never a certificate, so the
  ``milp`` method verifies exactly what its safe LP-all bound verifies and
  uses the MILP to look for counterexamples.
* *violated*: a witness that lies in the exact input set (checked in
  rational arithmetic) and violates some row both in the model's own dtype
  and in float64; both values are reported.
* *unknown*: anything else, with the reason (a bound ≤ 0, a solver without
  multipliers, a time limit, a witness that failed its checks).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from enum import Enum
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from .bounds import Bounds, interval_objective
from .dual import dual_bounds, dual_objective, optimize_alpha
from .lp import build_lp
from .lpall import lp_bounds
from .milp import build_milp, forward64
from .network import Network
from .sets import Ball, LinfBall
from .vnnlib import VnnlibProperty

class Status(str, Enum):
    """A verdict's status; a ``str`` so that ``status == "verified"`` reads naturally."""

    VERIFIED = "verified"
    VIOLATED = "violated"
    UNKNOWN = "unknown"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Verdict:
    """The outcome of verifying one example's property.

    Attributes:
        status: :class:`Status`: verified, violated (a checked counterexample) or unknown.
        bound: a rigorous lower bound on ``min_r min_z c_rᵀf(z) + d_r`` (nan if none).
        time: seconds spent on this example.
        witness: for "violated", a point of the exact set where some row is ≤ 0.
        value: for "violated", the violated row's value at the witness in float64 (≤ 0).
        reason: why the status is not "verified" (solver status, time limit, ...).
        model_value: for "violated", the same row's value in the model's own dtype (≤ 0).
    """

    status: Status
    bound: float
    time: float
    witness: np.ndarray | None = None
    value: float = math.nan
    reason: str = ""
    model_value: float = math.nan

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", Status(self.status))


def check_witness(
    net: Network, ball: Ball, c: Tensor, d: Tensor, witness: np.ndarray | Tensor
) -> tuple[bool, np.ndarray | None, float, float, str]:
    """Whether a witness convicts the property ``c_rᵀ f(z) + d_r > 0`` (MATH.md §11).

    The witness is first moved into the exact input set in the model's dtype
    (:meth:`~lpverify.sets.InputSet.project`: a solver works on the box rounded
    outward), its membership decided in rational arithmetic; then some row
    must be ≤ 0 both in the model's own dtype and in float64. Returns
    (convicts, the point, its float64 value, its model-dtype value of that
    row, the reason if it does not convict).
    """
    z = torch.as_tensor(np.asarray(witness, dtype=np.float64)).view(1, 1, *net.input_shape)
    if not torch.isfinite(z).all():
        return False, None, math.nan, math.nan, "the witness contains NaN or inf"
    model_dtype = net.dtype if any(True for _ in net.parameters()) else torch.float64
    z = ball.project(z, model_dtype)
    if not bool(ball.contains_exactly(z)[0, 0]):
        return False, None, math.nan, math.nan, "the witness lies outside the exact input set"
    z = z[:, 0]
    c64, d64 = c.detach().cpu().double(), d.detach().cpu().double()
    with torch.no_grad():
        f64 = net(z.double())[0]
        f_model = net(z)[0].double()
    rows64, rows_model = c64 @ f64 + d64, c64 @ f_model + d64
    point = z[0].double().numpy()
    bad = torch.nonzero((rows64 <= 0) & (rows_model <= 0)).view(-1)
    if bad.numel() == 0:
        reason = "no row is violated in both float64 and the model's dtype"
        return False, point, float(rows64.min()), float(rows_model.min()), reason
    r = int(bad[torch.argmin(rows64[bad])])
    return True, point, float(rows64[r]), float(rows_model[r]), ""


@dataclass(frozen=True)
class MethodOptions:
    """What the relaxations may be told: Adam steps of dual-opt, the LP backend, a wall-clock deadline."""

    alpha_steps: int = 50
    backend: str | None = None
    deadline: float = math.inf  # a time.perf_counter() value


BoundFunction = Callable[[Network, Ball, Tensor, MethodOptions], Tensor]


@dataclass(frozen=True)
class BoundMethod:
    """A rung of the ladder: rigorous lower bounds (batch, m) on ``min_{z∈B} c_rᵀ f(z)`` for c (batch, m, n_out)."""

    name: str
    bound: BoundFunction
    summary: str


def _interval(net: Network, ball: Ball, c: Tensor, options: MethodOptions) -> Tensor:
    with torch.no_grad():
        return interval_objective(net, ball, c)


def _dual(net: Network, ball: Ball, c: Tensor, options: MethodOptions) -> Tensor:
    with torch.no_grad():
        return dual_objective(net, ball, c, dual_bounds(net, ball))


def _dual_opt(net: Network, ball: Ball, c: Tensor, options: MethodOptions) -> Tensor:
    with torch.no_grad():
        bounds = dual_bounds(net, ball)
    return optimize_alpha(net, ball, c, bounds, steps=options.alpha_steps)


def _lp(net: Network, ball: Ball, c: Tensor, options: MethodOptions) -> Tensor:
    with torch.no_grad():
        return _lp_rows(net, ball, c, dual_bounds(net, ball), options)


def _lp_all(net: Network, ball: Ball, c: Tensor, options: MethodOptions) -> Tensor:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # units cut by the deadline keep their sound starting bounds
        start = dual_bounds(net, ball)
        limit = None if math.isinf(options.deadline) else max(options.deadline - time.perf_counter(), 1e-3)
        bounds = lp_bounds(net, ball, start, backend=options.backend, time_limit=limit)
        return _lp_rows(net, ball, c, bounds, options)


def _lp_rows(net: Network, ball: Ball, c: Tensor, bounds: Bounds, options: MethodOptions) -> Tensor:
    """The LP's safe bound for every row of every example, never below the dual bound over the same bounds.

    The LP optimum is at least J(c, α) for every α; their rigorous evaluations
    may still cross by rounding, and a row the deadline cut keeps J.
    """
    out = torch.full(c.shape[:2], math.nan, dtype=torch.float64)
    dual = dual_objective(net, ball, c, bounds)
    for b in range(ball.batch_size):
        if time.perf_counter() >= options.deadline:
            break
        model = build_lp(net, ball.select(b), bounds.select(b), options.backend)
        for r, row in enumerate(c[b].detach().cpu().double().numpy()):
            left = options.deadline - time.perf_counter()
            if left <= 0:
                break
            out[b, r] = model.solve(row, time_limit=None if math.isinf(left) else left).bound
    return torch.fmax(out, dual)


BOUND_METHODS: dict[str, BoundMethod] = {
    m.name: m
    for m in (
        BoundMethod("interval", _interval, "naive layer-wise bounds (Appendix B)"),
        BoundMethod("dual", _dual, "Theorem 1 over Algorithm 1's bounds (the paper)"),
        BoundMethod("dual-opt", _dual_opt, "Theorem 1 with slopes optimised per objective"),
        BoundMethod("lp", _lp, "the LP of eq. 19 over Algorithm 1's bounds, safe bound"),
        BoundMethod("lp-all", _lp_all, "the LP over bounds that are themselves LPs, safe bounds"),
    )
}
"""The relaxations by name; a new rung is one more entry."""

METHODS = (*BOUND_METHODS, "milp", "bab")
"""Every method :func:`verify` takes: the relaxations, then the exact rungs (MILP, branch and bound)."""

COMPLETE_METHODS = ("milp", "bab")
"""The methods that give verdicts (and counterexamples), not a relaxation's bounds."""


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")


def applicable_methods(net: Network) -> tuple[str, ...]:
    """The methods that take this network: all for ReLU; no branch and bound (which splits ReLU units)
    for LeakyReLU; the relaxations with linear bounds per unit (interval, dual, dual-opt) for sigmoid and tanh."""
    if net.is_relu:
        return METHODS
    if net.piecewise_linear:
        return tuple(m for m in METHODS if m != "bab")
    return ("interval", "dual", "dual-opt")


def _check_applicable(net: Network, method: str) -> None:
    """A ValueError naming the activation when ``method`` cannot take the network."""
    usable = applicable_methods(net)
    if method in usable:
        return
    others = sorted({a.name for a in net.activations if not (a.is_relu if method == "bab" else a.piecewise_linear)})
    why = ("branch and bound splits ReLU units only" if method == "bab" and net.piecewise_linear
           else "an exact MILP or LP encoding needs piecewise-linear activations")
    raise ValueError(f"method {method!r} does not apply to a network with {', '.join(others)} activations ({why}); "
                     f"the methods that do: {', '.join(usable)}")


def objective_bounds(
    net: Network,
    ball: Ball,
    c: Tensor,
    method: str,
    *,
    alpha_steps: int = 50,
    backend: str | None = None,
    deadline: float = math.inf,
) -> Tensor:
    """Lower bounds on ``min_{z∈B} c_rᵀ f(z)`` by a relaxation, (batch, m) for c (batch, m, n_out).

    ``method`` is a name of :data:`BOUND_METHODS` ("milp" gives verdicts:
    see :func:`verify`). Every bound is rigorous (MATH.md §11); an LP solve
    without multipliers gives ``nan``. ``deadline`` (a
    ``time.perf_counter()`` value) stops the LP methods: rows not solved by
    then are ``nan``.
    """
    _check_method(method)
    _check_applicable(net, method)
    if method not in BOUND_METHODS:
        raise ValueError(f"{method} gives verdicts, not a relaxation's bounds: use verify(..., method={method!r})")
    options = MethodOptions(alpha_steps=alpha_steps, backend=backend, deadline=deadline)
    c = c.to(device=ball.center.device, dtype=torch.promote_types(c.dtype, ball.dtype))  # never rounded
    return BOUND_METHODS[method].bound(net, ball, c, options)


def verify(
    net: Network,
    ball: Ball,
    c: Tensor,
    d: Tensor | None = None,
    method: str = "dual",
    *,
    time_limit: float | None = None,
    alpha_steps: int = 50,
) -> list[Verdict]:
    """Verify ``c_rᵀ f(z) + d_r > 0`` for all rows r and all z in each example's ball.

    Args:
        net: the network.
        ball: the input sets, batch of B.
        c: objectives (B, m, n_out); ``d``: offsets (B, m), default 0.
        method: one of :data:`METHODS`.
        time_limit: wall-clock seconds per example for the LP methods and the
            MILP, model building included (None: no limit); rows left
            unsolved make the verdict unknown.
        alpha_steps: Adam steps of "dual-opt".

    Returns:
        one :class:`Verdict` per example.
    """
    _check_method(method)
    _check_applicable(net, method)
    d = torch.zeros(c.shape[:2], dtype=torch.float64) if d is None else d
    if d.shape != c.shape[:2]:
        raise ValueError(f"offsets d must have shape {tuple(c.shape[:2])}, got {tuple(d.shape)}")
    if method == "milp":
        return [_verify_milp(net, ball.select(b), c[b], d[b], time_limit) for b in range(ball.batch_size)]
    if method == "bab":
        return [_verify_bab(net, ball.select(b), c[b], d[b], None, time_limit) for b in range(ball.batch_size)]
    if method in ("lp", "lp-all"):  # one example at a time, each with its own wall-clock limit
        return [_verify_relaxation(net, ball.select(b), c[b : b + 1], d[b : b + 1], method, time_limit, alpha_steps)[0]
                for b in range(ball.batch_size)]
    return _verify_relaxation(net, ball, c, d, method, time_limit, alpha_steps)


def _verify_relaxation(
    net: Network, ball: Ball, c: Tensor, d: Tensor, method: str, time_limit: float | None, alpha_steps: int
) -> list[Verdict]:
    start = time.perf_counter()
    deadline = math.inf if time_limit is None else start + time_limit
    lows = objective_bounds(net, ball, c, method, alpha_steps=alpha_steps, deadline=deadline).detach().cpu().double()
    per_example = (time.perf_counter() - start) / max(1, ball.batch_size)
    verdicts = []
    for low, off in zip(lows, d.detach().cpu().double()):
        rows = low + off  # rounded down: a bound on the offset row too
        rows = torch.nextafter(rows, torch.full_like(rows, -math.inf)) if rows.numel() else rows
        bound = float(rows.min()) if rows.numel() else math.inf
        if math.isnan(bound):
            late = time.perf_counter() >= deadline
            reason = "time limit" if late else "a bound is not available (solver without multipliers)"
            verdicts.append(Verdict(Status.UNKNOWN, math.nan, per_example, reason=reason))
        elif bound > 0:
            verdicts.append(Verdict(Status.VERIFIED, bound, per_example))
        else:
            verdicts.append(Verdict(Status.UNKNOWN, bound, per_example, reason=f"{method} bound {bound:.4g} <= 0"))
    return verdicts


def _verify_milp(net: Network, ball: Ball, c: Tensor, d: Tensor, time_limit: float | None) -> Verdict:
    """The exact rung of one example: safe LP-all bounds certify, the MILP hunts for counterexamples.

    Rows are ordered by their safe LP bound (lowest first) so that a
    violation is found early; a row whose safe bound is > 0 needs no MILP.
    Stops at the first witness that passes :func:`check_witness`. A MILP that
    claims a positive optimum without a checked certificate leaves the row
    unknown, with the solver's (unchecked) bound in the reason.
    """
    start = time.perf_counter()
    deadline = math.inf if time_limit is None else start + time_limit
    c64, d64 = c.detach().cpu().double(), d.detach().cpu().double()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LP-all cut short by the deadline keeps sound bounds
        start_bounds = dual_bounds(net, ball)
        limit = None if math.isinf(deadline) else max(deadline - time.perf_counter(), 1e-3)
        bounds = lp_bounds(net, ball, start_bounds, time_limit=limit)
        options = MethodOptions(deadline=deadline)
        safe = _lp_rows(net, ball, c64.unsqueeze(0), bounds, options)[0].numpy()
    safe = np.nextafter(safe + d64.numpy(), -np.inf)
    exact = None  # built when a row needs it and time is left
    worst, reasons = math.inf, []
    for r in np.argsort(np.nan_to_num(safe, nan=-np.inf)):
        if safe[r] > 0:
            worst = min(worst, float(safe[r]))
            continue
        worst = math.nan
        left = deadline - time.perf_counter()
        if left <= 0:
            reasons.append("time limit")
            break
        if exact is None:
            exact = build_milp(net, ball, bounds)
            left = deadline - time.perf_counter()
            if left <= 0:
                reasons.append("time limit")
                break
        res = exact.solve(c64[r], time_limit=None if math.isinf(left) else left)
        if res.witness is not None and res.value + float(d64[r]) <= 0:
            ok, point, value, model_value, why = check_witness(net, ball, c64, d64, res.witness)
            if ok:  # the bound stays a rigorous lower bound: the safe one (nan if a row has none)
                lowest = float(np.min(safe)) if not np.isnan(safe).any() else math.nan
                return Verdict(Status.VIOLATED, lowest, time.perf_counter() - start, witness=point.reshape(net.input_shape),
                               value=value, reason=f"row {r} violated", model_value=model_value)
            reasons.append(f"row {r}: MILP witness rejected: {why}")
            continue
        unchecked = f", unchecked solver bound {res.bound + float(d64[r]):.4g}" if math.isfinite(res.bound) else ""
        if res.start_returned:
            unchecked += " (the solver returned its start point as optimal)"
        reasons.append(f"row {r}: safe bound {safe[r]:.4g} <= 0, MILP {res.status}{unchecked}")
    elapsed = time.perf_counter() - start
    if reasons or math.isnan(worst):  # the best safe bound so far: the lowest row's (nan if a row has none)
        lowest = float(np.min(safe)) if safe.size and not np.isnan(safe).any() else math.nan
        return Verdict(Status.UNKNOWN, lowest, elapsed, reason="; ".join(reasons) or "no bound")
    return Verdict(Status.VERIFIED, worst, elapsed)


def _verify_bab(net: Network, ball: Ball, c: Tensor, d: Tensor, owner: Tensor | None, time_limit: float | None) -> Verdict:
    """Branch and bound on one example (:func:`lpverify.bab.bab`); an l_p ball is refused."""
    from .bab import bab  # bab builds on this module's verdicts and witness checks

    if not isinstance(ball, LinfBall):
        raise ValueError("method 'bab' takes l_inf balls and boxes only")
    return bab(net, ball, c, d, owner, time_limit=time_limit)


def property_ball(net: Network, prop: VnnlibProperty) -> LinfBall:
    """The input box of a VNNLIB property as a ball of batch 1 (centre, half-width, clamped to the box)."""
    if prop.n_inputs != math.prod(net.input_shape):
        raise ValueError(f"the property constrains {prop.n_inputs} inputs but the network takes {net.input_shape}")
    if prop.n_outputs != net.n_outputs:
        raise ValueError(f"the property reads {prop.n_outputs} outputs but the network has {net.n_outputs}")
    lo = torch.as_tensor(prop.input_lower, dtype=torch.float64).view(1, *net.input_shape)
    hi = torch.as_tensor(prop.input_upper, dtype=torch.float64).view(1, *net.input_shape)
    # ε the box's largest full width: the ball around the (rounded) midpoint then covers the box,
    # and the clamp makes the set exactly [lo, hi].
    return LinfBall((lo + hi) / 2, float((hi - lo).max()), lower=lo, upper=hi)


def _rechecked(net: Network, prop: VnnlibProperty, verdict: Verdict) -> Verdict:
    """A "violated" verdict re-checked against the property itself with a float64 forward pass of the sparse export."""
    if verdict.status == "violated":
        y = forward64(net.sparse(), verdict.witness, net.activations)[-1]
        if not (prop.input_contains(verdict.witness, tol=0.0) and prop.violated_by(y)):
            return Verdict("unknown", math.nan, verdict.time, reason="a counterexample failed its float64 re-check")
    return verdict


def verify_property(
    net: Network, prop: VnnlibProperty, method: str = "dual", *, time_limit: float | None = None, alpha_steps: int = 50
) -> Verdict:
    """Verify a VNNLIB property: "verified" = unsat (no input of the box reaches the unsafe region).

    Each disjunct of the unsafe region is excluded by one of its rows having
    a lower bound > 0. When every disjunct is a single row (the MNIST
    benchmarks' margins) this is :func:`verify` on those rows, and the MILP
    can also find a counterexample ("violated" = sat), re-checked against the
    property with a float64 forward pass. A disjunct of several rows is only
    proved, never falsified (its verdict is "unknown" unless excluded), except
    by "bab", which decides disjunctions of any shape.
    """
    _check_method(method)
    _check_applicable(net, method)
    start = time.perf_counter()
    ball = property_ball(net, prop)
    c_np, d_np, owner = prop.objectives()
    c = torch.as_tensor(c_np, dtype=torch.float64).unsqueeze(0)
    d = torch.as_tensor(d_np, dtype=torch.float64).unsqueeze(0)
    if any(a.shape[0] == 0 for a, _ in prop.disjuncts):
        return Verdict("violated", -math.inf, time.perf_counter() - start, witness=ball.mid[0].numpy(), value=0.0,
                       reason="a disjunct has no constraints: every input is unsafe")
    if method == "bab":  # disjuncts of any number of rows, falsified as well as proved
        left = None if time_limit is None else max(time_limit - (time.perf_counter() - start), 1e-3)
        verdict = _verify_bab(net, ball, c[0], d[0], torch.as_tensor(owner), left)
        return _rechecked(net, prop, verdict)
    if all(a.shape[0] == 1 for a, _ in prop.disjuncts):
        left = None if time_limit is None else max(time_limit - (time.perf_counter() - start), 1e-3)
        verdict = verify(net, ball, c, d, method, time_limit=left, alpha_steps=alpha_steps)[0]
        return _rechecked(net, prop, verdict)
    relaxation = "lp-all" if method == "milp" else method
    deadline = math.inf if time_limit is None else start + time_limit
    low = objective_bounds(net, ball, c, relaxation, alpha_steps=alpha_steps, deadline=deadline)[0].detach().cpu().double().numpy()
    elapsed = time.perf_counter() - start
    if np.isnan(low).any():
        return Verdict("unknown", math.nan, elapsed, reason="a bound is not available (solver failure)")
    best = np.full(len(prop.disjuncts), -np.inf)  # per disjunct: its best row's bound
    np.maximum.at(best, owner, low + d_np)
    if prop.verified_by(low):
        return Verdict("verified", float(best.min()), elapsed)
    return Verdict("unknown", float(best.min()), elapsed, reason="some disjunct is not excluded")


__all__ = ["applicable_methods", "BOUND_METHODS", "BoundMethod", "COMPLETE_METHODS", "METHODS", "MethodOptions", "Status", "Verdict", "check_witness", "objective_bounds", "property_ball", "verify", "verify_property"]
