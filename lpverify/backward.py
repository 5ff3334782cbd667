"""Layer-wise bounds by backward passes (MATH.md §4, eq. 9–10 read as objectives).

The bounds of layer m are ``ℓ_j = J(e_j)`` and ``u_j = −J(−e_j)`` of the
sub-network ending at ẑ_m: all units of the layer at once as a batch of
objectives ``c = [I; −I]`` walked backwards by Theorem 1
(:func:`lpverify.dual.dual_objective`, the CROWN form) over the bounds
already found. Rigorous mode runs every walk in outward-rounded float64
(MATH.md §11) and rounds the results outward into the working dtype.

Two users:

* networks with a LeakyReLU, Sigmoid or Tanh layer (:func:`layerwise_bounds`):
  Algorithm 1's structured columns (:mod:`lpverify.columns`) are written for
  the ReLU triangle, whose only offset is ``−ℓ d`` on crossing units, while
  a general linear relaxation (:mod:`lpverify.activations`) has an intercept
  on every unit; each layer is also intersected with its interval bounds;
* Algorithm 1 itself (:func:`backward_from`), from the layer on where the
  walks cost less than pushing the columns forward (:func:`backward_cost`
  against :func:`lpverify.columns.push_cost`): narrow layers after wide
  ones, where the columns outnumber twice the layer's width.

The cost is one backward pass per layer for twice its width in objectives,
batched over examples and chunked to bound memory.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .bounds import Bounds, interval_bounds
from .columns import block_macs
from .network import Network
from .rigorous import to_dtype_down, to_dtype_up
from .sets import Ball

# Upper limit on the entries of one objective chunk's widest dual variable (B · objectives · units).
CHUNK_ELEMENTS = 1 << 24
# Cost of a rigorous walk against a plain one (float64, the magnitudes and local minima beside the values).
RIGOROUS_FACTOR = 4.0


def layerwise_bounds(
    net: Network, ball: Ball, rigorous: bool, c: Tensor | None = None
) -> tuple[Bounds, Tensor | None, Tensor | None]:
    """Every layer's bounds by backward passes, and optionally J(c) over them (see the module docstring).

    ``ball`` is prepared (working dtype). Returns the bounds (working dtype),
    J (B, m) or None, and J's rounding allowance (zero: the walk's rounding
    is already subtracted) or None; what :func:`lpverify.dual.forward_objective` returns.
    """
    naive = interval_bounds(net, ball, rigorous=rigorous)
    return backward_from(net, ball, [], [], rigorous, c, naive)


def backward_from(
    net: Network,
    ball: Ball,
    lower: list[Tensor],
    upper: list[Tensor],
    rigorous: bool,
    c: Tensor | None = None,
    naive: Bounds | None = None,
) -> tuple[Bounds, Tensor | None, Tensor | None]:
    """The bounds of blocks ``len(lower)`` onwards by backward passes over the bounds already found, then J(c).

    Algorithm 1 hands over here at the layer where walking its units back
    costs less than pushing its columns on (:func:`lpverify.dual.dual_bounds`);
    a unit's bound is the same J(±e_j) either way. ``naive``: interval bounds
    each layer is intersected with (both sound), or None.
    """
    from .dual import dual_objective

    dtype = ball.dtype
    lower, upper = list(lower), list(upper)
    for i in range(len(lower), len(net.blocks)):
        block = net.blocks[i]
        sub = net.prefix(i + 1)
        placeholder = torch.zeros(ball.batch_size, *block.out_shape, dtype=dtype, device=ball.center.device)
        earlier = Bounds(tuple(lower) + (placeholder,), tuple(upper) + (placeholder,))
        lo, up = _unit_bounds(sub, ball, earlier, rigorous, dual_objective)
        if naive is not None:
            lo, up = torch.maximum(lo, naive.lower[i]), torch.minimum(up, naive.upper[i])
        lower.append(lo)
        upper.append(up)
    bounds = Bounds(tuple(lower), tuple(upper))
    if c is None:
        return bounds, None, None
    J = dual_objective(net, ball, c, bounds, rigorous=rigorous)
    if rigorous:
        J = to_dtype_down(J, dtype)
    J = torch.where(bounds.finite().unsqueeze(1) & torch.isfinite(J), J, torch.full_like(J, float("nan")))
    return bounds, J, torch.zeros_like(J)


def backward_cost(net: Network, block: int, rigorous: bool) -> float:
    """Estimated multiply-adds per example of the bounds of ``block``'s outputs by backward walks.

    Twice the block's width in objectives, each walked through the blocks up
    to it; rigorous walks run in float64 with their magnitudes beside them.
    """
    walk = sum(block_macs(b) for b in net.blocks[: block + 1])
    return 2 * net.blocks[block].out_features * walk * (RIGOROUS_FACTOR if rigorous else 1.0)


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


__all__ = ["backward_cost", "backward_from", "layerwise_bounds"]
