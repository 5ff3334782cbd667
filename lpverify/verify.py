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
==========  ===========================================================

The chain ``interval, dual ≤ dual-opt ≤ lp ≤ lp-all ≤ milp ≤ f`` holds row by
row except that interval and dual are not ordered. Only the MILP can say
*violated*, and only with a witness whose violation was checked by a float64
forward pass of the network.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .bounds import Bounds, interval_objective
from .dual import dual_bounds, dual_objective, optimize_alpha
from .lp import build_lp, solve_rows
from .lpall import lp_bounds
from .milp import build_milp, forward64
from .network import Network
from .sets import Ball, LinfBall
from .vnnlib import VnnlibProperty

METHODS = ("interval", "dual", "dual-opt", "lp", "lp-all", "milp")


@dataclass(frozen=True)
class Verdict:
    """The outcome of verifying one example's property.

    Attributes:
        status: "verified", "violated" (a checked counterexample exists) or "unknown".
        bound: a lower bound on ``min_r min_z c_rᵀf(z) + d_r`` (nan if a solve failed).
        time: seconds spent on this example.
        witness: for "violated", an input of the ball where some row is ≤ 0.
        value: for "violated", the violated row's value at the witness (≤ 0).
        reason: why the status is not "verified" (solver status, time limit, ...).
    """

    status: str
    bound: float
    time: float
    witness: np.ndarray | None = None
    value: float = math.nan
    reason: str = ""


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")


def objective_bounds(
    net: Network,
    ball: Ball,
    c: Tensor,
    method: str,
    *,
    alpha_steps: int = 50,
    backend: str | None = None,
) -> Tensor:
    """Lower bounds on ``min_{z∈B} c_rᵀ f(z)`` by a relaxation, (batch, m) for c (batch, m, n_out).

    ``method`` is one of :data:`METHODS` except "milp" (see :func:`verify`).
    An LP that does not end optimal gives ``nan``: never a bound.
    """
    _check_method(method)
    if method == "milp":
        raise ValueError("the MILP gives verdicts, not a relaxation's bounds: use verify(..., method='milp')")
    c = c.to(ball.center)
    with torch.no_grad():
        if method == "interval":
            return interval_objective(net, ball, c)
        bounds = dual_bounds(net, ball)
        if method == "dual":
            return dual_objective(net, ball, c, bounds)
    if method == "dual-opt":
        return optimize_alpha(net, ball, c, bounds, steps=alpha_steps)
    if method == "lp-all":
        bounds = lp_bounds(net, ball, bounds, backend=backend)
    out = torch.full(c.shape[:2], math.nan, dtype=torch.float64)
    for b in range(ball.batch_size):
        results = solve_rows(build_lp(net, ball.select(b), bounds.select(b), backend).solve, c[b])
        out[b] = torch.tensor([r.value for r in results], dtype=torch.float64)
    return out


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
        time_limit: seconds per example for the MILP (None: no limit).
        alpha_steps: Adam steps of "dual-opt".

    Returns:
        one :class:`Verdict` per example.
    """
    _check_method(method)
    d = torch.zeros(c.shape[:2], dtype=torch.float64) if d is None else d
    if d.shape != c.shape[:2]:
        raise ValueError(f"offsets d must have shape {tuple(c.shape[:2])}, got {tuple(d.shape)}")
    if method == "milp":
        return [_verify_milp(net, ball.select(b), c[b], d[b], time_limit) for b in range(ball.batch_size)]
    verdicts = []
    start = time.perf_counter()
    lows = objective_bounds(net, ball, c, method, alpha_steps=alpha_steps).detach().cpu().double()
    per_example = (time.perf_counter() - start) / max(1, ball.batch_size)
    for low, off in zip(lows, d.detach().cpu().double()):
        bound = float((low + off).min()) if low.numel() else math.inf
        if math.isnan(bound):
            verdicts.append(Verdict("unknown", math.nan, per_example, reason="a bound is not available (solver failure)"))
        elif bound > 0:
            verdicts.append(Verdict("verified", bound, per_example))
        else:
            verdicts.append(Verdict("unknown", bound, per_example, reason=f"{method} bound {bound:.4g} <= 0"))
    return verdicts


def _verify_milp(net: Network, ball: Ball, c: Tensor, d: Tensor, time_limit: float | None) -> Verdict:
    """The exact verdict of one example: the MILP per row, the most doubtful rows first.

    Rows are ordered by their LP bound (lowest first) so that a violation is
    found early; a row whose LP bound is already > 0 needs no MILP. Stops at
    the first checked counterexample.
    """
    start = time.perf_counter()
    deadline = math.inf if time_limit is None else start + time_limit
    c64, d64 = c.detach().cpu().double(), d.detach().cpu().double()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LP-all cut short by the deadline keeps sound bounds
        bounds = lp_bounds(net, ball, dual_bounds(net, ball), time_limit=time_limit)
    lp = np.array([r.value for r in solve_rows(build_lp(net, ball, bounds).solve, c64)]) + d64.numpy()
    exact = build_milp(net, ball, bounds)
    worst, reasons = math.inf, []
    for r in np.argsort(np.nan_to_num(lp, nan=-np.inf)):
        if lp[r] > 0:
            worst = min(worst, float(lp[r]))
            continue
        left = deadline - time.perf_counter()
        if left <= 0:
            reasons.append("time limit")
            worst = math.nan
            break
        res = exact.solve(c64[r], time_limit=None if math.isinf(left) else left)
        offset = float(d64[r])
        if res.witness is not None and res.value + offset <= 0:
            return Verdict("violated", res.value + offset, time.perf_counter() - start, witness=res.witness,
                           value=res.value + offset, reason=f"row {r} violated")
        if res.optimal and res.bound + offset > 0:  # only an optimal solve certifies
            worst = min(worst, res.bound + offset)
            continue
        worst = math.nan
        reasons.append(f"row {r}: {res.status}")
    elapsed = time.perf_counter() - start
    if reasons or math.isnan(worst):
        return Verdict("unknown", worst, elapsed, reason="; ".join(reasons) or "no bound")
    return Verdict("verified", worst, elapsed)


def property_ball(net: Network, prop: VnnlibProperty) -> LinfBall:
    """The input box of a VNNLIB property as a ball of batch 1 (centre, half-width, clamped to the box)."""
    if prop.n_inputs != math.prod(net.input_shape):
        raise ValueError(f"the property constrains {prop.n_inputs} inputs but the network takes {net.input_shape}")
    if prop.n_outputs != net.n_outputs:
        raise ValueError(f"the property reads {prop.n_outputs} outputs but the network has {net.n_outputs}")
    lo = torch.as_tensor(prop.input_lower, dtype=torch.float64).view(1, *net.input_shape)
    hi = torch.as_tensor(prop.input_upper, dtype=torch.float64).view(1, *net.input_shape)
    return LinfBall((lo + hi) / 2, float(((hi - lo) / 2).max()), lower=lo, upper=hi)


def verify_property(
    net: Network, prop: VnnlibProperty, method: str = "dual", *, time_limit: float | None = None, alpha_steps: int = 50
) -> Verdict:
    """Verify a VNNLIB property: "verified" = unsat (no input of the box reaches the unsafe region).

    Each disjunct of the unsafe region is excluded by one of its rows having
    a lower bound > 0. When every disjunct is a single row (the MNIST
    benchmarks' margins) this is :func:`verify` on those rows, and the MILP
    can also find a counterexample ("violated" = sat), re-checked against the
    property with a float64 forward pass. A disjunct of several rows is only
    proved, never falsified (its verdict is "unknown" unless excluded).
    """
    _check_method(method)
    start = time.perf_counter()
    ball = property_ball(net, prop)
    c_np, d_np, owner = prop.objectives()
    c = torch.as_tensor(c_np, dtype=torch.float64).unsqueeze(0)
    d = torch.as_tensor(d_np, dtype=torch.float64).unsqueeze(0)
    if any(a.shape[0] == 0 for a, _ in prop.disjuncts):
        return Verdict("violated", -math.inf, time.perf_counter() - start, witness=ball.mid[0].numpy(), value=0.0,
                       reason="a disjunct has no constraints: every input is unsafe")
    if all(a.shape[0] == 1 for a, _ in prop.disjuncts):
        verdict = verify(net, ball, c, d, method, time_limit=time_limit, alpha_steps=alpha_steps)[0]
        if verdict.status == "violated":
            y = forward64(net.sparse(), verdict.witness)[-1]
            if not (prop.input_contains(verdict.witness, tol=1e-9) and prop.violated_by(y)):
                return Verdict("unknown", math.nan, verdict.time, reason="a counterexample failed its float64 re-check")
        return verdict
    relaxation = "lp-all" if method == "milp" else method
    low = objective_bounds(net, ball, c, relaxation, alpha_steps=alpha_steps)[0].detach().cpu().double().numpy()
    elapsed = time.perf_counter() - start
    if np.isnan(low).any():
        return Verdict("unknown", math.nan, elapsed, reason="a bound is not available (solver failure)")
    best = np.full(len(prop.disjuncts), -np.inf)  # per disjunct: its best row's bound
    np.maximum.at(best, owner, low + d_np)
    if prop.verified_by(low):
        return Verdict("verified", float(best.min()), elapsed)
    return Verdict("unknown", float(best.min()), elapsed, reason="some disjunct is not excluded")


__all__ = ["METHODS", "Verdict", "objective_bounds", "property_ball", "verify", "verify_property"]
