"""The dual network (Theorem 1) and its layer-wise bounds (Algorithm 1).

Two evaluations of the same quantity J(c, α) (MATH.md §3):

* :func:`dual_objective` runs the dual network backwards for a batch of
  objectives c and any slopes α ∈ [0, 1]: one transposed pass per objective.
* :func:`dual_bounds` computes ℓ, u of every layer (eq. 9–10) by running the
  *relaxed network* forwards on the columns that matter: the input identity
  (scaled by the box radius) and one column per crossing unit of each earlier
  layer. With α = u/(u − ℓ) the dual network is linear, so J(±e_j) for all
  units j of a layer comes out of these columns at once.

Everything is torch, batch-first, differentiable in the network parameters and
on the device/dtype of the input set's tensors.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .bounds import Bounds, check_compatible
from .network import AffineBlock, Network
from .sets import LinfBall

# Upper limit on the elements of one chunk pushed through a block at once.
CHUNK_ELEMENTS = 1 << 24


def relu_slope(lower: Tensor, upper: Tensor) -> Tensor:
    """The diagonal D of the linear dual network (eq. 7 with α = u/(u − ℓ)).

    0 on I⁻ (u ≤ 0), 1 on I⁺ (ℓ ≥ 0) and u/(u − ℓ) on crossing units, written
    as one formula ``u⁺ / (u⁺ − ℓ⁻)`` so that no branch divides by zero (a NaN
    in an unused branch of ``torch.where`` would still poison gradients).
    """
    up = upper.clamp(min=0)
    den = up - lower.clamp(max=0)
    positive = den > 0
    return torch.where(positive, up / torch.where(positive, den, torch.ones_like(den)), torch.zeros_like(den))


def _check_objective(net: Network, ball: LinfBall, c: Tensor) -> None:
    if c.ndim != 3 or c.shape[0] != ball.batch_size or c.shape[2] != net.n_outputs:
        raise ValueError(
            f"objective c must have shape (batch, m, n_out) = ({ball.batch_size}, m, {net.n_outputs}), "
            f"got {tuple(c.shape)}"
        )
    if not torch.isfinite(c).all():
        raise ValueError("objective c contains NaN or inf")


def _check_bounds(net: Network, ball: LinfBall, bounds: Bounds) -> None:
    if len(bounds) < len(net.blocks) - 1:
        raise ValueError(f"bounds cover {len(bounds)} layers but the network has {len(net.blocks) - 1} hidden layers")
    for i, shape in enumerate(net.hidden_shapes):
        if tuple(bounds.lower[i].shape) != (ball.batch_size, *shape):
            raise ValueError(
                f"bounds of hidden layer {i} have shape {tuple(bounds.lower[i].shape)}, "
                f"expected {(ball.batch_size, *shape)}"
            )


def dual_objective(
    net: Network,
    ball: LinfBall,
    c: Tensor,
    bounds: Bounds,
    alpha: Sequence[Tensor] | None = None,
) -> Tensor:
    """J(c, α) of Theorem 1 (eq. 6–7): a lower bound on ``min_{z∈B(x)} cᵀ f(z)``.

    Args:
        net: the network.
        ball: the input set, batch of B examples.
        c: objectives, shape (B, m, n_out).
        bounds: valid pre-activation bounds of the hidden layers (any method).
        alpha: slopes of the crossing units, one tensor per hidden layer of
            shape (B, *shape_i) or (B, m, *shape_i) with values in [0, 1];
            ``None`` uses α = u/(u − ℓ), the paper's choice.

    Returns:
        J, shape (B, m). For every α ∈ [0, 1] it is ≤ the LP optimum p*(c).
    """
    check_compatible(net, ball)
    _check_objective(net, ball, c)
    _check_bounds(net, ball, bounds)
    n_hidden = len(net.blocks) - 1
    if alpha is not None and len(alpha) != n_hidden:
        raise ValueError(f"alpha needs one tensor per hidden layer ({n_hidden}), got {len(alpha)}")
    batch, m = c.shape[:2]
    c = c.to(ball.center)

    nu = (-c).reshape(batch * m, *net.output_shape)  # ν_k = −c
    objective = torch.zeros(batch, m, dtype=c.dtype, device=c.device)
    for i in range(n_hidden, -1, -1):
        block = net.blocks[i]
        bias = block.bias(nu).flatten()
        objective = objective - nu.reshape(batch, m, -1) @ bias  # − ν_{i+1}ᵀ b_i
        nu_hat = block.transpose(nu).reshape(batch, m, *block.in_shape)  # ν̂_i = W_iᵀ ν_{i+1}
        if i == 0:
            return objective - ball.support(nu_hat)  # − h(ν̂_1)
        lower, upper = bounds.lower[i - 1].unsqueeze(1), bounds.upper[i - 1].unsqueeze(1)
        slope = relu_slope(lower, upper)
        if alpha is None:
            nu_i = slope * nu_hat
        else:
            a = _broadcast_alpha(alpha[i - 1], batch, block.in_shape)
            crossing = (lower < 0) & (upper > 0)
            nu_i = torch.where(crossing, slope * nu_hat.clamp(min=0) - a * (-nu_hat).clamp(min=0), slope * nu_hat)
        # + Σ_{j∈I} ℓ_j [ν_j]₊ ; ℓ⁻ vanishes on I⁺ and ν vanishes on I⁻, so no mask is needed.
        objective = objective + (lower.clamp(max=0) * nu_i.clamp(min=0)).flatten(2).sum(-1)
        nu = nu_i.reshape(batch * m, *block.in_shape)
    raise AssertionError("unreachable")


def _broadcast_alpha(a: Tensor, batch: int, shape: tuple[int, ...]) -> Tensor:
    if tuple(a.shape) == (batch, *shape):
        a = a.unsqueeze(1)
    elif a.ndim != len(shape) + 2 or a.shape[0] != batch or tuple(a.shape[2:]) != shape:
        raise ValueError(f"alpha of shape {tuple(a.shape)} must be (batch, *{shape}) or (batch, m, *{shape})")
    if (a < 0).any() or (a > 1).any() or torch.isnan(a).any():
        raise ValueError("alpha must lie in [0, 1]: J is a bound only for such slopes")
    return a


def dual_bounds(net: Network, ball: LinfBall) -> Bounds:
    """Layer-wise bounds of Algorithm 1 (eq. 9–10) for every pre-activation, logits included.

    The relaxed network L (every ReLU replaced by its slope D, eq. 7) is run
    forwards on:

    * ``offset``: the box midpoint, biases included → ``L(mid)``;
    * ``cols_in``: the input identity scaled by the box radius (n_in columns);
    * per earlier hidden layer, one column ``d_j e_j`` per crossing unit j, with
      that unit's lower bound ℓ_j as coefficient (the ``−ℓ d`` offset of the
      triangle's upper face).

    For a unit of layer m:
    ``ℓ = offset − Σ|cols_in| + Σ ℓ_j [−col_j]₊`` and
    ``u = offset + Σ|cols_in| − Σ ℓ_j [col_j]₊``, which is J(e_j) and −J(−e_j).
    The first hidden layer's bounds are therefore its interval bounds.
    Examples of a batch have different numbers of crossing units; columns are
    padded to the batch maximum with zero coefficients.
    """
    check_compatible(net, ball)
    first = net.blocks[0]
    n_in = first.in_features
    ref = ball.mid
    eye = torch.eye(n_in, dtype=ref.dtype, device=ref.device).view(n_in, *first.in_shape)
    basis = first.linear(eye)  # W_1 e_p, shared by the batch: (n_in, *s_2)
    rad = ball.rad.flatten(1)  # (B, n_in)

    offset = first(ball.mid)
    spread = (rad @ basis.abs().flatten(1)).view_as(offset)
    lower, upper = [offset - spread], [offset + spread]

    cols_in: Tensor | None = None  # (B, n_in, *s_m), materialised after the first ReLU
    relu_cols: list[tuple[Tensor, Tensor]] = []  # (ℓ coefficients (B, K), columns (B, K, *s_m))
    for block in net.blocks[1:]:
        lo, up = lower[-1], upper[-1]
        slope = relu_slope(lo, up)
        if cols_in is None:
            scale = rad.view(*rad.shape, *([1] * len(block.out_shape)))
            cols_in = _push(block, slope, basis.unsqueeze(0)) * scale
        else:
            cols_in = _push(block, slope, cols_in)
        relu_cols = [(coef, _push(block, slope, cols)) for coef, cols in relu_cols]
        new = _crossing_columns(lo, up, slope)
        if new is not None:
            coef, cols = new
            relu_cols.append((coef, _push(block, None, cols)))
        offset = block(slope * offset)
        lo, up = _bounds_from_columns(offset, cols_in, relu_cols)
        lower.append(lo)
        upper.append(up)
    return Bounds(tuple(lower), tuple(upper))


def _push(block: AffineBlock, slope: Tensor | None, cols: Tensor) -> Tensor:
    """``W (D ⊙ col)`` for every column: cols (1 or B, K, *in) → (B, K, *out), chunked over the batch.

    ``cols`` with a leading 1 is shared by the batch (it broadcasts against the slope).
    """
    batch = cols.shape[0] if slope is None else slope.shape[0]
    k = cols.shape[1]
    per_example = k * max(block.in_features, block.out_features)
    step = max(1, CHUNK_ELEMENTS // max(1, per_example))
    out = []
    for start in range(0, batch, step):
        sl = slice(start, start + step)
        x = cols if cols.shape[0] == 1 and slope is not None else cols[sl]
        if slope is not None:
            x = slope[sl].unsqueeze(1) * x
        n = x.shape[0]
        out.append(block.linear(x.reshape(n * k, *block.in_shape)).view(n, k, *block.out_shape))
    return out[0] if len(out) == 1 else torch.cat(out)


def _crossing_columns(lower: Tensor, upper: Tensor, slope: Tensor) -> tuple[Tensor, Tensor] | None:
    """One column ``d_j e_j`` per crossing unit, padded to the batch maximum K.

    Returns the coefficients ℓ_j (B, K) (zero on padding) and the columns
    (B, K, *shape), or None if no unit crosses zero.
    """
    batch, shape = lower.shape[0], lower.shape[1:]
    lo, up, sl = lower.flatten(1), upper.flatten(1), slope.flatten(1)
    mask = (lo < 0) & (up > 0)
    k = int(mask.sum(1).max())
    if k == 0:
        return None
    idx = torch.topk(mask.to(lo.dtype), k, dim=1).indices  # crossing units first
    valid = mask.gather(1, idx)
    coef = torch.where(valid, lo.gather(1, idx), torch.zeros((), dtype=lo.dtype, device=lo.device))
    vals = torch.where(valid, sl.gather(1, idx), torch.zeros((), dtype=lo.dtype, device=lo.device))
    cols = torch.zeros(batch, k, lo.shape[1], dtype=lo.dtype, device=lo.device)
    cols = cols.scatter(2, idx.unsqueeze(2), vals.unsqueeze(2))
    return coef, cols.view(batch, k, *shape)


def _bounds_from_columns(
    offset: Tensor, cols_in: Tensor, relu_cols: list[tuple[Tensor, Tensor]]
) -> tuple[Tensor, Tensor]:
    """ℓ and u of one layer from its propagated columns (eq. 10)."""
    spread = cols_in.abs().sum(1)
    lower, upper = offset - spread, offset + spread
    for coef, cols in relu_cols:
        c = coef.view(*coef.shape, *([1] * (cols.ndim - 2)))
        lower = lower + (c * (-cols).clamp(min=0)).sum(1)
        upper = upper - (c * cols.clamp(min=0)).sum(1)
    return lower, upper


def column_count(bounds: Bounds, n_inputs: int) -> int:
    """Columns Algorithm 1 propagates for these bounds (batch maximum per layer): a cost measure."""
    return n_inputs + sum(int(bounds.crossing(i).flatten(1).sum(1).max()) for i in range(len(bounds) - 1))
