"""Training losses beside the robust loss of Theorem 2 (MATH.md §7, §12).

Every loss is ``κ·CE(f(x), y) + (1 − κ)·CE(−J, y)`` where J (batch,
n_classes) are lower bounds, or for :attr:`Loss.PROJECTION` estimates, of
the margins ``f_y − f_j`` over the ℓ∞ ball; :class:`Loss` chooses how J is
computed:

* ``EXACT``: Algorithm 1 and Theorem 1 (:func:`lpverify.certify.margin_bounds`
  without rounding allowances), the paper's robust loss;
* ``PROJECTION``: Algorithm 1 with the ℓ1 terms estimated from k Cauchy
  projections (Wong, Schmidt, Metzen & Kolter 2018), the margins by the exact
  dual walk over those estimated bounds. An estimate, not a bound: for
  training only, never for a certificate. Where the batch's first hidden
  layer has at most k crossing units per hidden layer, the exact loss is no
  more work and is used instead (:func:`projections_pay`);
* ``IBP``: interval bounds (Appendix B) with the margins' last layer elided
  into the objective (:func:`lpverify.bounds.interval_objective`);
* ``CROWN_IBP``: interval bounds for the hidden layers and the dual network
  (Theorem 1, α = u/(u − ℓ)) over them for the margins; mixed with the IBP
  margins as ``β·J_crown + (1 − β)·J_ibp`` (a convex combination of lower
  bounds is a lower bound);
* ``STANDARD``: no robust term (κ is taken as 1).

All are batched and differentiable in the network parameters; none of them
bounds rounding errors (:func:`lpverify.certify.certify` does that).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .bounds import Bounds, interval_bounds, interval_objective, prepare
from .dual import dual_objective
from .network import Network
from .relu import crossing, relu_slope
from .schedule import Loss
from .sets import LinfBall
from .specs import robustness_objectives


@dataclass(frozen=True)
class LossValue:
    """One batch's training loss and its parts (scalars; ``total`` carries the gradient).

    ``robust`` is the mean ``CE(−J, y)`` and ``robust_err`` the fraction of
    examples with some ``J_j ≤ 0`` (j ≠ y); both NaN when not computed (κ = 1).
    """

    total: Tensor
    clean: Tensor
    clean_err: Tensor
    robust: Tensor
    robust_err: Tensor


def cauchy(shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """i.i.d. standard Cauchy samples ``tan(π(U − ½))`` (drawn on the CPU, so a seeded generator reproduces them)."""
    u = torch.rand(shape, generator=generator, dtype=torch.float64)
    return torch.tan(math.pi * (u - 0.5)).to(device=like.device, dtype=like.dtype)


def _median_abs(v: Tensor) -> Tensor:
    """``median_k |v_k|`` over dim 1: the Cauchy estimate of an ℓ1 norm (the median of |Cauchy| is 1).

    The lower median, as ``Tensor.median`` gives it, by ``kthvalue`` (the same value, faster on the CPU).
    """
    return v.abs().kthvalue((v.shape[1] + 1) // 2, dim=1).values


def projected_bounds(net: Network, ball: LinfBall, k: int = 50, *, generator: torch.Generator | None = None) -> Bounds:
    """Algorithm 1 (eq. 9–10) with its ℓ1 terms estimated from ``k`` Cauchy projections (MATH.md §12).

    For a unit of layer m, Algorithm 1 needs ``‖cols_in‖₁`` (the input
    identity pushed through the relaxed network) and, per earlier hidden
    layer, ``Σ_j ℓ_j [∓col_j]₊ = −½ Σ_j |ℓ_j col_j| ∓ ½ Σ_j ℓ_j col_j`` over
    its crossing units j. The linear sums are one pushed column each, exact;
    every ``‖·‖₁`` is ``median_k |Σ_p v_p R_pk|`` with R i.i.d. standard
    Cauchy, k pushed columns instead of one per input or crossing unit. The
    first hidden layer's radius is estimated too (the median is consistent,
    not unbiased). Without a clamp every example's radius is one number, so
    the input's k projections are shared by the batch and pushed through the
    first layer once, as in the paper's code; the crossing units' projection
    matrices are shared by the batch too (drawn once per layer, not once per
    example). Examples' estimates are then correlated, which training does
    not mind; each is still the median of k Cauchy projections. A layer where
    at most k units cross in every example keeps one exact column per
    crossing unit instead (fewer columns, no estimate): late in training,
    when few units cross, the loss is then mostly exact. Not a bound:
    training only.

    Args:
        net, ball: the network and an ℓ∞ ball (clamped or not).
        k: projections per ℓ1 term.
        generator: the source of the Cauchy samples (seed it to reproduce).

    Returns:
        estimated bounds of every layer, logits included, (batch, *shape) each.
    """
    if k < 1:
        raise ValueError(f"need k >= 1 projections, got {k}")
    ball = prepare(net, ball)
    if ball.q != 1:
        raise ValueError("random projections estimate ℓ1 norms: they need an ℓ∞ ball")
    batch = ball.batch_size
    first = net.blocks[0]
    rad = ball.rad.flatten(1)
    if bool((rad == rad[:, :1]).all()):  # one radius per example (no clamp): one push of k columns serves the batch
        r_in = cauchy((k, *ball.shape), ball.mid, generator)
        scale = rad[:, 0].view(batch, 1, *([1] * len(first.out_shape)))
        shared = first.linear(r_in).unsqueeze(0)  # (1, k, *s)
        proj_in = shared * scale
        spread = _median_abs(shared) * scale.squeeze(1)  # median_k |r·P_k| = r·median_k |P_k| for r > 0
    else:
        r_in = cauchy((batch, k, *ball.shape), ball.mid, generator) * ball.rad.unsqueeze(1)
        proj_in = first.linear(r_in.reshape(batch * k, *ball.shape)).view(batch, k, *first.out_shape)
        spread = _median_abs(proj_in)
    offset = first(ball.mid)
    lower, upper = [offset - spread], [offset + spread]
    # Per earlier hidden layer: (Σ_j ℓ_j col_j (batch, 1, *s), Σ_j ℓ_j R_jk col_j (batch, k, *s)).
    # Per earlier hidden layer: (Σ_j ℓ_j col_j (batch, 1, *s), Σ_j ℓ_j R_jk col_j (batch, k, *s)), or
    # (None, the columns ℓ_j col_j themselves (batch, K, *s)) where at most k units cross (_fresh_columns).
    layers: list[tuple[Tensor | None, Tensor]] = []
    for block in net.blocks[1:]:
        lo, up = lower[-1], upper[-1]
        slope = relu_slope(lo, up)
        new = _fresh_columns(lo, slope, crossing(lo, up), k, generator)
        carried = layers + ([] if new is None else [new])
        parts = [proj_in] + [t for pair in carried for t in pair if t is not None]
        d = slope.unsqueeze(1)  # D of this layer on the old columns (the new ones carry their d_j already)
        n_old = 1 + sum(1 for pair in layers for t in pair if t is not None)
        parts = [d * p if i < n_old else p for i, p in enumerate(parts)]
        widths = [p.shape[1] for p in parts]
        pushed = block.linear(torch.cat(parts, 1).reshape(-1, *block.in_shape)).view(batch, -1, *block.out_shape)
        pieces = iter(torch.split(pushed, widths, dim=1))
        proj_in = next(pieces)
        layers = [(None if linear is None else next(pieces), next(pieces)) for linear, _ in carried]
        offset = block(slope * offset)
        spread = _median_abs(proj_in)
        lo, up = offset - spread, offset + spread
        for linear, cols in layers:
            if linear is None:  # exact: Σ_j |ℓ_j col_j| and Σ_j ℓ_j col_j
                l1, lin = cols.abs().sum(1), cols.sum(1)
            else:
                l1, lin = _median_abs(cols), linear.squeeze(1)
            lo = lo - (l1 + lin) / 2
            up = up + (l1 - lin) / 2
        lower.append(lo)
        upper.append(up)
    return Bounds(tuple(lower), tuple(upper))


def _fresh_columns(lower: Tensor, slope: Tensor, cross: Tensor, k: int,
                   generator: torch.Generator | None) -> tuple[Tensor | None, Tensor] | None:
    """A layer's crossing units as columns for :func:`projected_bounds`, (batch, ·, *s).

    None where no unit of the batch crosses. Where at most k units cross in
    every example, their K columns ``ℓ_j d_j e_j`` themselves (None, columns):
    no more columns than k projections, and exact. Otherwise
    ``(Σ_j ℓ_j d_j e_j, its k Cauchy projections)``, one projection matrix
    for the batch.
    """
    batch = lower.shape[0]
    fresh = torch.where(cross, lower * slope, torch.zeros_like(lower))  # ℓ_j d_j on I
    n = int(cross.flatten(1).sum(1).max()) if batch else 0
    if n == 0:
        return None
    if n <= k:
        flat = fresh.flatten(1)
        index = torch.topk(cross.flatten(1).to(flat.dtype), n, dim=1).indices  # crossing units first, then zeros
        cols = flat.new_zeros(batch, n, flat.shape[1]).scatter(2, index.unsqueeze(2), flat.gather(1, index).unsqueeze(2))
        return None, cols.view(batch, n, *lower.shape[1:])
    fresh = fresh.unsqueeze(1)
    return fresh, fresh * cauchy((1, k, *lower.shape[1:]), lower, generator)


def projections_pay(net: Network, ball: LinfBall, k: int) -> bool:
    """Whether k Cauchy projections cost less than Algorithm 1's own columns for this batch.

    The projections push k columns per ℓ1 term (the input's and each hidden
    layer's), whatever the network's state; Algorithm 1 pushes the input
    columns on their receptive fields (about as much work as k dense
    projections on the paper's networks) and one column per crossing unit,
    most of them the first hidden layer's, which travel furthest. So the
    projections pay only where the first hidden layer has more than k
    crossing units per hidden layer in some example of the batch: early in
    training, not at the end (on the paper's trained MNIST network at
    ε = 0.1 a batch of 50 has at most about 110 of them, and the exact step
    costs 0.3 s against the projections' 0.45 s). That layer's bounds are
    its interval bounds, in one pass.
    """
    with torch.no_grad():
        first = interval_bounds(net.prefix(1), ball, rigorous=False)
        most = int(crossing(first.lower[0], first.upper[0]).flatten(1).sum(1).max()) if ball.batch_size else 0
    return most > k * (len(net.blocks) - 1)


def margin_estimates(
    loss: Loss,
    net: Network,
    ball: LinfBall,
    y: Tensor,
    *,
    beta: float = 1.0,
    projections: int = 50,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The margins' J (batch, n_classes) that ``loss`` trains on; column y is 0.

    Lower bounds on ``f_y − f_j`` over the ball for EXACT, IBP and CROWN_IBP
    (up to rounding), an estimate for PROJECTION. ``beta`` mixes CROWN-IBP
    with IBP; ``projections`` and ``generator`` serve PROJECTION.
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must lie in [0, 1], got {beta}")
    if loss is Loss.EXACT:
        from .certify import margin_bounds

        return margin_bounds(net, ball, y, rigorous=False)
    c = robustness_objectives(y, net.n_outputs).to(ball.center)  # the n − 1 rows e_y − e_j, j ≠ y
    if loss is Loss.PROJECTION:
        if not net.is_relu:
            raise ValueError("the projection loss estimates Algorithm 1's ReLU columns; for a network with "
                             f"{', '.join(sorted({a.name for a in net.activations if not a.is_relu}))} activations "
                             "use the exact, IBP or CROWN-IBP loss")
        if not projections_pay(net, ball, projections):
            from .certify import margin_bounds

            return margin_bounds(net, ball, y, rigorous=False)
        bounds = projected_bounds(net, ball, projections, generator=generator)
        return _with_zero_row(dual_objective(net, ball, c, bounds, rigorous=False), y)
    if loss in (Loss.IBP, Loss.CROWN_IBP):
        bounds = interval_bounds(net, ball, rigorous=False)
        use_crown = loss is Loss.CROWN_IBP and beta > 0
        use_ibp = loss is Loss.IBP or beta < 1
        J_crown = dual_objective(net, ball, c, bounds, rigorous=False) if use_crown else None
        J_ibp = interval_objective(net, ball, c, bounds, rigorous=False) if use_ibp else None
        if J_crown is None:
            return _with_zero_row(J_ibp, y)
        if J_ibp is None:
            return _with_zero_row(J_crown, y)
        return _with_zero_row(beta * J_crown + (1 - beta) * J_ibp, y)
    raise ValueError(f"{loss} has no margin bounds")


def _with_zero_row(J: Tensor, y: Tensor) -> Tensor:
    """(batch, n − 1) bounds of the rows j ≠ y → (batch, n) with J_y = 0 (the margin of y over itself)."""
    batch, m = J.shape
    keep = ~torch.eye(m + 1, dtype=torch.bool, device=J.device)[y.to(J.device)]
    out = J.new_zeros(batch, m + 1)
    return out.masked_scatter(keep, J)


def training_loss(
    loss: Loss,
    model: nn.Module | Network,
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    kappa: float = 0.0,
    beta: float = 1.0,
    projections: int = 50,
    generator: torch.Generator | None = None,
    lower: float | Tensor | None = None,
    upper: float | Tensor | None = None,
) -> LossValue:
    """``κ·CE(f(x), y) + (1 − κ)·CE(−J, y)`` with J from :func:`margin_estimates` over the ε-ball.

    With κ = 1 (or ``Loss.STANDARD``) the robust term is skipped (NaN in the result).
    ``lower``/``upper`` clamp the ball (e.g. to [0, 1]).
    """
    from .certify import as_network

    if y.shape != x.shape[:1]:
        raise ValueError(f"labels of shape {tuple(y.shape)} do not match the batch of {x.shape[0]} inputs")
    if not 0.0 <= kappa <= 1.0:
        raise ValueError(f"kappa must lie in [0, 1], got {kappa}")
    logits = model(x)
    clean = F.cross_entropy(logits, y)
    clean_err = (logits.detach().argmax(1) != y).float().mean()
    nan = torch.tensor(math.nan)
    if loss is Loss.STANDARD or kappa == 1.0:
        return LossValue(clean, clean.detach(), clean_err, nan, nan)
    net = as_network(model, tuple(x.shape[1:]))
    J = margin_estimates(loss, net, LinfBall(x, eps, lower, upper), y, beta=beta, projections=projections,
                         generator=generator)
    robust = F.cross_entropy(-J, y)
    others = torch.ones_like(J, dtype=torch.bool).scatter(1, y.view(-1, 1), False)
    robust_err = (~(torch.where(others, J.detach(), torch.full_like(J, math.inf)) > 0).all(1)).float().mean()
    total = robust if kappa == 0.0 else kappa * clean + (1 - kappa) * robust
    return LossValue(total, clean.detach(), clean_err, robust.detach(), robust_err)


__all__ = ["Loss", "LossValue", "cauchy", "margin_estimates", "projected_bounds", "projections_pay", "training_loss"]
