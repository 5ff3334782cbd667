"""Layer-wise bounds for networks with activations other than ReLU (MATH.md §4 by backward passes).

Algorithm 1 proper (:func:`lpverify.dual.dual_bounds`) runs the relaxed
network forwards on columns, one per crossing ReLU; its structured column
arithmetic (:mod:`lpverify.columns`) is written for the ReLU triangle, whose
only offset is ``−ℓ d`` on crossing units. A general linear relaxation
(:mod:`lpverify.activations`) has an intercept on every unit, so networks
with a LeakyReLU, Sigmoid or Tanh layer take the equivalent definition of
eq. 9–10 instead: the bounds of layer m are ``ℓ_j = J(e_j)`` and
``u_j = −J(−e_j)`` of the sub-network ending at ẑ_m, all units of the layer
at once as a batch of objectives ``c = [I; −I]`` walked backwards by
Theorem 1 (:func:`lpverify.dual.dual_objective`, the CROWN form) over the
bounds already found. Each layer is intersected with its interval bounds
(both are sound). Rigorous mode runs every walk in outward-rounded float64
(MATH.md §11) and rounds the results outward into the working dtype.

The cost is one backward pass per layer for twice its width in objectives,
batched over examples and chunked to bound memory: fine for fully connected
networks of a few thousand units per layer, slower than the column form on
large convolutional ones.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .bounds import Bounds, interval_bounds
from .network import Network
from .rigorous import to_dtype_down, to_dtype_up
from .sets import Ball

# Upper limit on the entries of one objective chunk's widest dual variable (B · objectives · units).
CHUNK_ELEMENTS = 1 << 24


def layerwise_bounds(
    net: Network, ball: Ball, rigorous: bool, c: Tensor | None = None
) -> tuple[Bounds, Tensor | None, Tensor | None]:
    """Every layer's bounds by backward passes, and optionally J(c) over them (see the module docstring).

    ``ball`` is prepared (working dtype). Returns the bounds (working dtype),
    J (B, m) or None, and J's rounding allowance (zero: the walk's rounding
    is already subtracted) or None; what :func:`lpverify.dual.forward_objective` returns.
    """
    from .dual import dual_objective

    dtype = ball.dtype
    naive = interval_bounds(net, ball, rigorous=rigorous)
    lower: list[Tensor] = []
    upper: list[Tensor] = []
    for i, block in enumerate(net.blocks):
        sub = net.prefix(i + 1)
        placeholder = torch.zeros(ball.batch_size, *block.out_shape, dtype=dtype, device=ball.center.device)
        earlier = Bounds(tuple(lower) + (placeholder,), tuple(upper) + (placeholder,))
        lo, up = _unit_bounds(sub, ball, earlier, rigorous, dual_objective)
        lower.append(torch.maximum(lo, naive.lower[i]))
        upper.append(torch.minimum(up, naive.upper[i]))
    bounds = Bounds(tuple(lower), tuple(upper))
    if c is None:
        return bounds, None, None
    J = dual_objective(net, ball, c, bounds, rigorous=rigorous)
    if rigorous:
        J = to_dtype_down(J, dtype)
    J = torch.where(bounds.finite().unsqueeze(1) & torch.isfinite(J), J, torch.full_like(J, float("nan")))
    return bounds, J, torch.zeros_like(J)


def _unit_bounds(sub: Network, ball: Ball, earlier: Bounds, rigorous: bool, dual_objective) -> tuple[Tensor, Tensor]:
    """``J(e_j)`` and ``−J(−e_j)`` for every output unit j of ``sub``, (B, *out_shape) each, in ball's dtype."""
    batch, n = ball.batch_size, sub.n_outputs
    widest = max(b.in_features for b in sub.blocks) + n
    step = max(1, CHUNK_ELEMENTS // max(1, 2 * batch * widest))
    eye = torch.eye(n, dtype=ball.dtype, device=ball.center.device)
    lows, highs = [], []
    for start in range(0, n, step):
        rows = eye[start : start + step]
        c = torch.cat([rows, -rows]).unsqueeze(0).expand(batch, -1, -1)
        J = dual_objective(sub, ball, c, earlier, rigorous=rigorous)
        k = rows.shape[0]
        lows.append(J[:, :k])
        highs.append(-J[:, k:])
    lo, up = torch.cat(lows, 1), torch.cat(highs, 1)
    if rigorous:
        lo, up = to_dtype_down(lo, ball.dtype), to_dtype_up(up, ball.dtype)
    return lo.view(batch, *sub.output_shape), up.view(batch, *sub.output_shape)


__all__ = ["layerwise_bounds"]
