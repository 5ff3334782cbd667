"""LP-all: every pre-activation bounded by the exact LP of the relaxation (MATH.md §2).

Algorithm 1 bounds layer m from the dual network with fixed slopes, a lower
bound on the LP. LP-all instead solves the LP of eq. 19 for each unit of
layer m, minimised and maximised, over the relaxation built from the LP
bounds of layers < m, then moves on to layer m + 1. It is the tightest bound
the triangle relaxation can give layer by layer, and the most expensive: two
LPs per unit.

Soundness: each unit's new bound is the LP's safe bound
(:attr:`lpverify.lp.LPResult.bound`, MATH.md §11), valid whatever the solver
returned, rounded outward into the bounds' dtype; a solve without
multipliers leaves the unit's incoming bound (``bounds``, Algorithm 1 by
default) in place.
"""

from __future__ import annotations

import math
import time
import warnings

import numpy as np
import torch
from tqdm import tqdm

from .bounds import Bounds
from .dual import dual_bounds
from .lp import build_lp
from .network import Network
from .rigorous import to_dtype_down, to_dtype_up
from .sets import Ball


def lp_bounds(
    net: Network,
    ball: Ball,
    bounds: Bounds | None = None,
    *,
    all_units: bool = False,
    backend: str | None = None,
    time_limit: float | None = None,
    progress: bool = False,
) -> Bounds:
    """Bounds of every pre-activation from an LP per unit, layer by layer ("LP-all").

    Args:
        net: the network.
        ball: the input sets, batch of B examples (solved one by one).
        bounds: sound starting bounds, default :func:`dual_bounds`. The result
            is intersected with them, so it is never looser. The first layer
            is exact already and is kept. To also use the interval bounds
            (with fixed slopes the dual bounds are not always inside them),
            pass ``dual_bounds(net, ball).intersect(interval_bounds(net, ball))``.
        all_units: solve every unit of every layer. By default a hidden unit
            that ``bounds`` already finds stable keeps those bounds: a tighter
            bound would not change any triangle (stable units are exact).
            The logits are always solved.
        backend: the LP backend (see :func:`lpverify.build_lp`).
        time_limit: seconds for the whole call; when they are spent, the
            units not solved yet keep their starting bounds (still sound).
        progress: a progress bar over the examples.

    Returns:
        Bounds inside ``bounds``, each layer's LP over the relaxation from the
        earlier layers' returned bounds.
    """
    seed = dual_bounds(net, ball) if bounds is None else bounds
    if seed.batch_size != ball.batch_size or len(seed) != len(net.blocks):
        raise ValueError(
            f"starting bounds of batch {seed.batch_size} and {len(seed)} layers do not fit a batch of "
            f"{ball.batch_size} on a network of {len(net.blocks)} blocks"
        )
    lower = [t.detach().clone() for t in seed.lower]
    upper = [t.detach().clone() for t in seed.upper]
    prefixes = [net.prefix(i + 1) for i in range(len(net.blocks))]
    deadline = math.inf if time_limit is None else time.perf_counter() + time_limit
    failed = 0
    for b in tqdm(range(ball.batch_size), disable=not progress, desc="LP-all", unit="example"):
        one = ball.select(b)
        for i in range(1, len(net.blocks)):
            lo, up = lower[i][b].view(-1), upper[i][b].view(-1)  # views: updates land in lower/upper
            units = _units_to_solve(lo, up, all_units or i == len(net.blocks) - 1)
            if units.size == 0:
                continue
            earlier = Bounds(tuple(t[b : b + 1] for t in lower[:i]), tuple(t[b : b + 1] for t in upper[:i]))
            if time.perf_counter() >= deadline:
                failed += 2 * units.size
                continue
            model = build_lp(prefixes[i], one, earlier, backend)
            failed += _tighten_layer(model, lo, up, units, deadline)
    if failed:
        warnings.warn(f"{failed} LP solves gave no safe bound or were cut by the time limit; "
                      "those units keep their starting bounds", stacklevel=2)
    return Bounds(tuple(lower), tuple(upper))


def _units_to_solve(lo: torch.Tensor, up: torch.Tensor, every: bool) -> np.ndarray:
    """Flat indices of the units of a layer that get LPs: all, or the crossing ones."""
    if every:
        return np.arange(lo.numel())
    return torch.nonzero((lo < 0) & (up > 0)).view(-1).cpu().numpy()


def _tighten_layer(model, lo: torch.Tensor, up: torch.Tensor, units: np.ndarray, deadline: float = math.inf) -> int:
    """min and max of each unit's pre-activation by LP, written into ``lo``/``up``.

    Returns the number of solves that failed or were not run before the deadline.
    """
    failed = 0
    c = np.zeros(lo.numel())
    for n, j in enumerate(units):
        if time.perf_counter() >= deadline:
            return failed + 2 * (units.size - n)
        c[j] = 1.0
        left = None if math.isinf(deadline) else max(deadline - time.perf_counter(), 1e-3)
        low = model.solve(c, time_limit=left)
        left = None if math.isinf(deadline) else max(deadline - time.perf_counter(), 1e-3)
        high = model.solve(-c, time_limit=left)
        c[j] = 0.0
        if math.isfinite(low.bound):  # the safe bound, rounded down into the bounds' dtype
            value = to_dtype_down(torch.tensor(low.bound, dtype=torch.float64), lo.dtype)
            lo[j] = torch.maximum(lo[j], value)
        if math.isfinite(high.bound):
            value = to_dtype_up(torch.tensor(-high.bound, dtype=torch.float64), up.dtype)
            up[j] = torch.minimum(up[j], value)
        failed += (not math.isfinite(low.bound)) + (not math.isfinite(high.bound))
    return failed


__all__ = ["lp_bounds"]
