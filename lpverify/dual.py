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

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from .activations import dual_step as general_step, graph_minimum
from .bounds import Bounds, prepare
from .columns import (
    Columns,
    block_macs,
    combine,
    group_norm,
    input_columns,
    merged,
    push,
    push_cost,
    unit_column_parts,
    unit_columns,
)
from .network import Network
from .relu import crossing, dual_step, dual_term, local_minimum, relu_slope, sound_slope
from .rigorous import error_bound, lower_bound, widen
from .sets import Ball

# Algorithm 1 hands over to backward walks where they are cheaper; False keeps it forward (the tests' reference).
AUTO_DIRECTION = True

# ν_i from ν̂_i: (hidden layer index, ν̂ (B, m, *s), ℓ (B, 1, *s), u (B, 1, *s)) → ν (B, m, *s).
Multipliers = Callable[[int, Tensor, Tensor, Tensor], Tensor]


def _check_objective(net: Network, ball: Ball, c: Tensor) -> None:
    if c.ndim != 3 or c.shape[0] != ball.batch_size or c.shape[2] != net.n_outputs:
        raise ValueError(
            f"objective c must have shape (batch, m, n_out) = ({ball.batch_size}, m, {net.n_outputs}), "
            f"got {tuple(c.shape)}"
        )
    if not torch.isfinite(c).all():
        raise ValueError("objective c contains NaN or inf")


def _check_bounds(net: Network, ball: Ball, bounds: Bounds) -> None:
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
    ball: Ball,
    c: Tensor,
    bounds: Bounds,
    alpha: Sequence[Tensor] | None = None,
    *,
    rigorous: bool = True,
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
        rigorous: bound the rounding error and subtract it (the default;
            MATH.md §11), so J holds for the real-valued network; the walk
            then runs in float64. ``False`` is the plain, differentiable
            evaluation in the working dtype that training uses.

    Returns:
        J, shape (B, m) (float64 when rigorous). For every α ∈ [0, 1] it is ≤
        the LP optimum p*(c); nan where a bound is not finite.
    """
    ball = prepare(net, ball)
    _check_objective(net, ball, c)
    _check_bounds(net, ball, bounds)
    n_hidden = len(net.blocks) - 1
    if alpha is not None and len(alpha) != n_hidden:
        raise ValueError(f"alpha needs one tensor per hidden layer ({n_hidden}), got {len(alpha)}")
    batch = c.shape[0]

    def slopes(i: int, nu_hat: Tensor, lower: Tensor, upper: Tensor) -> Tensor:
        a = None if alpha is None else _broadcast_alpha(alpha[i], batch, tuple(nu_hat.shape[2:]))
        if not net.activations[i].is_relu:  # the line per sign of ν̂ (MATH.md §3 generalised)
            return general_step(net.activations[i], nu_hat, lower, upper, a)
        return dual_step(nu_hat, lower, upper, a)

    if rigorous:  # the walk is cheap beside Algorithm 1; float64 makes its rounding allowance ~1e-13
        ball = ball.to(torch.float64)
    return _backward(net, ball, c, bounds.to(ball.dtype), slopes, rigorous)


def residual_magnitudes(net: Network, ball: Ball, bounds: Bounds) -> list[Tensor]:
    """Per block, ``|W_i| max|z_i| + |b_i|`` (batch, n_out_i): what bounds the transposes' rounding.

    Depends on the set and the bounds only, so many objectives on one example
    (the LP's rows) share it.
    """
    z_max = [ball.abs_max()] + [
        bounds.upper[i].clamp(min=0) if act.is_relu else act.abs_max(bounds.lower[i], bounds.upper[i])
        for i, act in enumerate(net.activations)
    ]
    return [block.abs_forward(z).flatten(1) for block, z in zip(net.blocks, z_max)]


def objective_from_multipliers(
    net: Network,
    ball: Ball,
    c: Tensor,
    bounds: Bounds,
    multipliers: Sequence[Tensor],
    residuals: Sequence[Tensor] | None = None,
) -> Tensor:
    """A rigorous lower bound on ``min_{z∈B} cᵀ f(z)`` from ANY multipliers ν_2..ν_{k-1}.

    The multipliers of the equalities ``ẑ_{i+1} = W_i z_i + b_i`` (one tensor
    (B, m, *shape_i) per hidden layer, Theorem 1's sign) may come from
    anywhere, an LP solver's duals included: each unit's term is minimised
    over its relaxation set exactly (:func:`lpverify.relu.local_minimum`), so
    the bound never relies on the multipliers being optimal or even feasible.
    This is the safe bound of Neumaier & Shcherbina (MATH.md §11) with the
    triangle of each crossing unit kept whole. Computed in float64;
    ``residuals`` are :func:`residual_magnitudes` of the float64 network,
    set and bounds, when the caller keeps them.
    """
    ball = prepare(net, ball).to(torch.float64)
    net = net.detached(torch.float64)
    _check_objective(net, ball, c)
    _check_bounds(net, ball, bounds)
    if len(multipliers) != len(net.blocks) - 1:
        raise ValueError(f"need one multiplier tensor per hidden layer ({len(net.blocks) - 1}), got {len(multipliers)}")

    def given(i: int, nu_hat: Tensor, lower: Tensor, upper: Tensor) -> Tensor:
        nu = torch.as_tensor(multipliers[i], dtype=nu_hat.dtype, device=nu_hat.device)
        if nu.numel() != nu_hat.numel():
            raise ValueError(f"multipliers of hidden layer {i} have {nu.numel()} entries, expected {tuple(nu_hat.shape)}")
        return nu.reshape(nu_hat.shape)

    return _backward(net, ball, c, bounds.to(torch.float64), given, rigorous=True, residuals=residuals)


def dual_objective_with(
    net: Network,
    ball: Ball,
    c: Tensor,
    bounds: Bounds,
    multipliers: Multipliers,
    *,
    rigorous: bool = True,
    residuals: Sequence[Tensor] | None = None,
) -> Tensor:
    """Theorem 1's bound with the multipliers ν_i chosen by a callable from the ν̂_i the walk computes.

    ``multipliers(i, ν̂, ℓ, u)`` returns ν of hidden layer i (0-based) from
    ν̂ (B, m, *s_i) and the layer's bounds (B, 1, *s_i); it sees the ν̂ of the
    walk itself, so a caller can record them (branching heuristics) or add
    split multipliers β (branch and bound, MATH.md §13). Rigorous mode (the
    default) is valid for ANY numbers the callable returns, as in
    :func:`objective_from_multipliers`, and runs in float64. The plain mode
    (differentiable, working dtype) sums ``ℓ_j [ν_j]₊``, which is Theorem 1's
    value only when ν is :func:`~lpverify.relu.dual_step`'s on crossing
    units, ≤ 0 on I⁻ units with u = 0 and equal to ν̂ plus something ≥ 0 on
    I⁺ units with ℓ = 0 (the two sides of a split).
    """
    ball = prepare(net, ball)
    _check_objective(net, ball, c)
    _check_bounds(net, ball, bounds)
    if rigorous:
        ball = ball.to(torch.float64)
    return _backward(net, ball, c, bounds.to(ball.dtype), multipliers, rigorous, residuals=residuals)


def _backward(
    net: Network,
    ball: Ball,
    c: Tensor,
    bounds: Bounds,
    multipliers: Multipliers,
    rigorous: bool,
    residuals: Sequence[Tensor] | None = None,
) -> Tensor:
    """Run the dual network backwards (eq. 5–7) and sum Theorem 1's terms; see :func:`dual_objective`.

    Rigorous mode: for any numbers ν, ν̂ actually computed,
    ``cᵀẑ_k ≥ −Σ ν_{i+1}ᵀb_i − h(ν̂_1) + Σ_j local_j − Σ_i r_iᵀz_i`` where
    ``r_i = W_iᵀν_{i+1} − ν̂_i`` is the transpose's rounding error,
    ``|r_iᵀ z_i| ≤ γ |ν_{i+1}|ᵀ |W_i| max|z_i|``; every sum's own rounding is
    bounded by γ times the magnitude accumulated beside it.
    """
    batch, m = c.shape[:2]
    c = c.to(ball.center)
    nu = (-c).reshape(batch * m, *net.output_shape)  # ν_k = −c
    objective = torch.zeros(batch, m, dtype=c.dtype, device=c.device)
    magnitude = torch.zeros_like(objective)
    if rigorous and residuals is None:
        residuals = residual_magnitudes(net, ball, bounds)
    for i in range(len(net.blocks) - 1, -1, -1):
        block = net.blocks[i]
        nu_flat = nu.reshape(batch, m, -1)
        objective = objective - nu_flat @ block.bias(nu).flatten()  # − ν_{i+1}ᵀ b_i
        if rigorous:  # bias rounding and the transpose's residual, both within |ν|ᵀ(|W| max|z| + |b|)
            magnitude = magnitude + (nu_flat.abs() * residuals[i].unsqueeze(1)).sum(-1)
        nu_hat = block.transpose(nu).reshape(batch, m, *block.in_shape)  # ν̂_i = W_iᵀ ν_{i+1}
        if i == 0:
            objective = objective - ball.support(nu_hat)  # − h(ν̂_1)
            if rigorous:
                magnitude = magnitude + ball.support_magnitude(nu_hat)
            break
        lower, upper = bounds.lower[i - 1].unsqueeze(1), bounds.upper[i - 1].unsqueeze(1)
        nu_i = multipliers(i - 1, nu_hat, lower, upper)
        act = net.activations[i - 1]
        if not act.is_relu:  # min over the graph of σ on [ℓ, u], valid for any ν (activations.graph_minimum)
            term, term_magnitude = graph_minimum(act, nu_i, nu_hat, lower, upper, rigorous=rigorous)
            objective = objective + term.flatten(2).sum(-1)
            if rigorous:
                magnitude = magnitude + term_magnitude.flatten(2).sum(-1)
        elif rigorous:
            term, term_magnitude = local_minimum(nu_i, nu_hat, lower, upper)
            objective = objective + term.flatten(2).sum(-1)
            magnitude = magnitude + term_magnitude.flatten(2).sum(-1)
        else:
            objective = objective + dual_term(nu_i, lower).flatten(2).sum(-1)  # Σ_{j∈I} ℓ_j [ν_j]₊
        nu = nu_i.reshape(batch * m, *block.in_shape)
    if not rigorous:
        return objective
    units = sum(b.in_features for b in net.blocks)
    depth = max(b.rounding_depth for b in net.blocks) + 2 * units + 8 * len(net.blocks) + 32
    objective = lower_bound(objective, error_bound(magnitude, depth))
    return torch.where(bounds.finite().unsqueeze(1), objective, torch.full_like(objective, float("nan")))


def _broadcast_alpha(a: Tensor, batch: int, shape: tuple[int, ...]) -> Tensor:
    if tuple(a.shape) == (batch, *shape):
        a = a.unsqueeze(1)
    elif a.ndim != len(shape) + 2 or a.shape[0] != batch or tuple(a.shape[2:]) != shape:
        raise ValueError(f"alpha of shape {tuple(a.shape)} must be (batch, *{shape}) or (batch, m, *{shape})")
    if (a < 0).any() or (a > 1).any() or torch.isnan(a).any():
        raise ValueError("alpha must lie in [0, 1]: J is a bound only for such slopes")
    return a


def dual_bounds(net: Network, ball: Ball, *, rigorous: bool = True) -> Bounds:
    """Layer-wise bounds of Algorithm 1 (eq. 9–10) for every pre-activation, logits included.

    The relaxed network L (every ReLU replaced by its slope D, eq. 7) is run
    forwards on:

    * ``offset``: the box midpoint, biases included → ``L(mid)``;
    * ``cols_in``: the input identity scaled by the box radius (n_in columns);
    * per earlier hidden layer, one column ``d_j W e_j`` per crossing unit j,
      with that unit's lower bound ℓ_j as coefficient (the ``−ℓ d`` offset of
      the triangle's upper face).

    For a unit of layer m:
    ``ℓ = offset − ‖cols_in‖ + Σ ℓ_j [−col_j]₊`` and
    ``u = offset + ‖cols_in‖ − Σ ℓ_j [col_j]₊``, which is J(e_j) and −J(−e_j),
    with ‖·‖ the input set's dual norm over the columns. The first hidden
    layer's bounds are therefore its interval bounds. Columns live on their
    receptive fields (:mod:`lpverify.columns`), so a convolution's unit costs
    its patch, not the whole input. Examples of a batch have different
    numbers of crossing units; columns are padded to the batch maximum with
    zero coefficients.

    Per layer, the cheaper direction: where walking a layer's units back
    (2·n_i objectives through the blocks before it) costs less than pushing
    the columns through it (a narrow layer after wide ones, many crossing
    units), that layer and the ones after it are bounded by backward walks
    (:func:`lpverify.backward.backward_from`), which give the same J(±e_j).

    ``rigorous`` (the default; MATH.md §11): the slopes are rounded up
    (:func:`lpverify.relu.sound_slope`, still a valid relaxation), and each
    layer is widened by ``γ_n s_m``, where the magnitude ``s_m`` is the same
    forward pass on absolute values,
    ``s_{m+1} = |W_m| D_m (s_m + |ℓ_m| [I_m]) + |b_m|``, ``s_2 = |W_1|(|mid| + rad) + |b_1|``,
    and n counts the roundings chained into one bound: the bounds then hold
    for the real-valued network. ``False`` is the plain evaluation (training).
    """
    return _algorithm1(net, prepare(net, ball), rigorous)[0]


def dual_bounds_and_objective(net: Network, ball: Ball, c: Tensor, *, rigorous: bool = True) -> tuple[Bounds, Tensor]:
    """Algorithm 1's bounds and J(c) of Theorem 1 (α = u/(u − ℓ)) in one forward pass.

    The objectives c (B, m, n_out) act as one more linear layer after the
    logits: J(c) is that layer's lower bound in Algorithm 1 (eq. 10), which
    is Theorem 1's J(c) with the paper's slopes, computed from the columns
    already at hand instead of a backward pass per objective. Rigorous mode
    widens it like every layer (the magnitude |c|ᵀ s_k). Certification's
    margins use this; :func:`dual_objective` takes any bounds and slopes.

    Returns:
        the bounds of :func:`dual_bounds` and J, shape (B, m), nan where a
        bound is not finite.
    """
    result = forward_objective(net, ball, c, rigorous=rigorous)
    return result.bounds, result.J


@dataclass(frozen=True)
class ForwardObjective:
    """What :func:`forward_objective` returns.

    ``J`` (B, m) is the sound lower bound; ``allowance`` (B, m) is what
    rounding may have cost it: ``J + allowance`` is the value as computed
    (zero allowance when not rigorous), within ``allowance`` of the exact
    value over the same bounds. A margin with ``J + 2·allowance`` clearly
    negative cannot be certified by more precise arithmetic over the same
    bounds, so certification skips retrying it.
    """

    bounds: Bounds
    J: Tensor
    allowance: Tensor


def forward_objective(net: Network, ball: Ball, c: Tensor, *, rigorous: bool = True) -> ForwardObjective:
    """:func:`dual_bounds_and_objective`, with the rounding allowance of J beside it."""
    ball = prepare(net, ball)
    _check_objective(net, ball, c)
    bounds, J, allowance = _algorithm1(net, ball, rigorous, c.to(ball.center))
    return ForwardObjective(bounds, J, allowance)


def _algorithm1(
    net: Network, ball: Ball, rigorous: bool, c: Tensor | None = None
) -> tuple[Bounds, Tensor | None, Tensor | None]:
    """Algorithm 1 (see :func:`dual_bounds`), with the objectives c as an optional last layer:
    the bounds, J(c) and J's rounding allowance (None without c)."""
    if not net.is_relu:  # other activations: a backward pass per layer (lpverify.backward)
        from .backward import layerwise_bounds

        return layerwise_bounds(net, ball, rigorous, c)
    first = net.blocks[0]
    cols_in = input_columns(net, ball.rad.flatten(1))  # groups of columns
    offset = first(ball.mid)
    spread = group_norm(cols_in, ball.q).view_as(offset)
    lo, up = offset - spread, offset + spread
    relu_cols: list[tuple[Tensor, Columns]] = []  # (ℓ coefficients (B, K), the crossing units' columns)
    if rigorous:
        magnitude = first.abs_forward(ball.abs_max())
        depth = first.rounding_depth + first.in_features + 8
        lo, up = widen(lo, up, error_bound(magnitude, depth))
    lower, upper = [lo], [up]

    for i, block in enumerate(net.blocks[1:], 1):
        lo, up = lower[-1], upper[-1]
        slope = sound_slope(lo, up) if rigorous else relu_slope(lo, up)
        new = _crossing_units(lo, up, slope)
        n_new = 0 if new is None else new[0].shape[1]
        if AUTO_DIRECTION and _backward_cheaper(net, i, cols_in, relu_cols, n_new, rigorous):
            from .backward import backward_from

            return backward_from(net, ball, lower, upper, rigorous, c)
        cols_in = merged([push(block, cols.scaled(slope)) for cols in cols_in])
        relu_cols = [(coef, push(block, cols.scaled(slope))) for coef, cols in relu_cols]
        fresh = None  # the new columns' terms, where their sparse form gives them cheaply
        if new is not None:
            coef, index, vals = new
            fresh = unit_column_parts(block, index, vals, coef)
            relu_cols.append((coef, unit_columns(block, index, vals)))
        if rigorous:
            scaled = torch.where(crossing(lo, up), magnitude + lo.abs(), magnitude)
            magnitude = block.abs_forward(slope * scaled)
            depth += block.rounding_depth + 4 + n_new
        offset = block(slope * offset)
        lo, up = _bounds_from_columns(offset, group_norm(cols_in, ball.q).view_as(offset), relu_cols, fresh)
        if rigorous:
            lo, up = widen(lo, up, error_bound(magnitude, depth))
        lower.append(lo)
        upper.append(up)
    bounds = Bounds(tuple(lower), tuple(upper))
    if c is None:
        return bounds, None, None

    # c as a last linear layer: combine every column, then eq. 10's lower bound.
    offset_c = (c @ offset.flatten(1).unsqueeze(2)).squeeze(2)
    relu_c = [(coef, combine(cols, c)) for coef, cols in relu_cols]
    J, _ = _bounds_from_columns(offset_c, group_norm([combine(cols, c) for cols in cols_in], ball.q), relu_c)
    allowance = torch.zeros_like(J)
    if rigorous:
        magnitude_c = (c.abs() @ magnitude.flatten(1).unsqueeze(2)).squeeze(2)
        allowance = error_bound(magnitude_c, depth + c.shape[2] + 4)
        J = lower_bound(J, allowance)
    J = torch.where(bounds.finite().unsqueeze(1) & torch.isfinite(J), J, torch.full_like(J, float("nan")))
    return bounds, J, allowance


def _backward_cheaper(
    net: Network,
    i: int,
    cols_in: list[Columns],
    relu_cols: list[tuple[Tensor, Columns]],
    n_new: int,
    rigorous: bool,
) -> bool:
    """Whether block i's bounds cost less by backward walks than by pushing the columns through it.

    The forward cost is the columns' entries times their rows of W_i (the
    input columns, the crossing columns so far and the ``n_new`` new ones of
    the layer before, padded to the batch maximum); the backward cost is 2·n_i objectives walked through blocks
    1..i (:func:`lpverify.backward.backward_cost`). Once walking back, the
    remaining layers walk back too: no column reaches them.
    """
    from .backward import backward_cost

    block = net.blocks[i]
    forward = sum(push_cost(block, cols) for cols in cols_in)
    forward += sum(push_cost(block, cols) for _, cols in relu_cols)
    forward += n_new * block_macs(block) / max(1, block.in_features)
    return backward_cost(net, i, rigorous) < forward


def _crossing_units(lower: Tensor, upper: Tensor, slope: Tensor) -> tuple[Tensor, Tensor, Tensor] | None:
    """The crossing units of a layer, padded to the batch maximum K.

    Returns their lower bounds ℓ_j (B, K), flat indices j (B, K) and slopes
    d_j (B, K), zero on padding; or None if no unit crosses zero. Unit j's
    column is ``d_j W e_j``.
    """
    lo, up, sl = lower.flatten(1), upper.flatten(1), slope.flatten(1)
    mask = (lo < 0) & (up > 0)
    k = int(mask.sum(1).max())
    if k == 0:
        return None
    index = torch.topk(mask.to(lo.dtype), k, dim=1).indices  # crossing units first
    valid = mask.gather(1, index)
    zero = torch.zeros((), dtype=lo.dtype, device=lo.device)
    coef = torch.where(valid, lo.gather(1, index), zero)
    vals = torch.where(valid, sl.gather(1, index), zero)
    return coef, index, vals


def _bounds_from_columns(
    offset: Tensor,
    spread: Tensor,
    relu_cols: list[tuple[Tensor, Columns]],
    fresh: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """ℓ and u of one layer (eq. 10) from ``L(mid)``, the input columns' norm and the crossing columns.

    ``fresh``: the last crossing columns' ``Σ ℓ_k [±col_k]₊``, when already computed.
    """
    lower, upper = offset - spread, offset + spread
    for i, (coef, cols) in enumerate(relu_cols):  # Σ_k ℓ_k [∓col_k]₊
        given = fresh is not None and i == len(relu_cols) - 1
        positive, negative = fresh if given else cols.weighted_parts(coef)
        lower = lower + negative.view_as(lower)
        upper = upper - positive.view_as(upper)
    return lower, upper


def optimize_alpha(
    net: Network,
    ball: Ball,
    c: Tensor,
    bounds: Bounds,
    *,
    steps: int = 50,
    lr: float = 0.05,
    rigorous: bool = True,
) -> Tensor:
    """``max_α J(c, α)`` over slopes α ∈ [0, 1] of the crossing units (Theorem 1 with free α).

    For other activations α picks slopes by :meth:`lpverify.activations.Activation.alpha_slopes`
    (sigmoid, tanh: one slope per unit and objective, every unit optimised).

    Every α ∈ [0, 1] gives a valid lower bound (MATH.md §3), so this is a
    sound tightening of :func:`dual_objective`. Each objective gets its own
    slopes, shape (B, m, *s_i) per hidden layer, warm-started at the paper's
    α = u/(u − ℓ) and improved by Adam ascent on J projected back to [0, 1].
    The best iterate of every objective is kept, so the result is never below
    ``dual_objective(net, ball, c, bounds)``; with ``rigorous`` (the default)
    the best iterate's slopes are evaluated rigorously at the end. The bounds
    of the hidden layers stay fixed and no gradient reaches the network
    parameters.

    Returns:
        the best J found, shape (B, m), detached.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    bounds = Bounds(tuple(t.detach() for t in bounds.lower), tuple(t.detach() for t in bounds.upper))
    with torch.no_grad():
        start = dual_objective(net, ball, c, bounds, rigorous=rigorous)
    batch, m = start.shape
    alphas = [
        (relu_slope(lo, up) if act.is_relu else act.initial_alpha(lo, up).to(lo.dtype))
        .unsqueeze(1).expand(batch, m, *lo.shape[1:]).clone().requires_grad_(True)
        for act, (lo, up) in zip(net.activations, bounds.hidden)
    ]
    if not alphas or steps == 0:
        return start
    best_alphas = [a.detach().clone() for a in alphas]
    best = torch.full_like(start, -torch.inf)
    optimizer = torch.optim.Adam(alphas, lr=lr)
    for step in range(steps + 1):
        value = dual_objective(net, ball, c, bounds, alphas, rigorous=False)  # the ascent's own objective
        better = value.detach() > best
        best = torch.where(better, value.detach(), best)
        for kept, a in zip(best_alphas, alphas):
            kept.copy_(torch.where(better.view(batch, m, *([1] * (a.ndim - 2))), a.detach(), kept))
        if step == steps:
            break
        grads = torch.autograd.grad(-value.sum(), alphas)  # only α's gradients, none on the parameters
        for a, g in zip(alphas, grads):
            a.grad = g
        optimizer.step()
        with torch.no_grad():
            for a in alphas:
                a.clamp_(0.0, 1.0)
    if rigorous:  # the slopes of the best iterate, evaluated rigorously
        with torch.no_grad():
            best = dual_objective(net, ball, c, bounds, best_alphas, rigorous=True)
    return _fmax(start, best)


def _fmax(a: Tensor, b: Tensor) -> Tensor:
    """Elementwise max that keeps a NaN of either side (a NaN bound stays unknown)."""
    return torch.where(torch.isnan(a) | torch.isnan(b), torch.full_like(a, float("nan")), torch.maximum(a, b))
