"""Pre-activation bounds: the ``Bounds`` type and naive layer-wise (interval) bounds.

``Bounds`` is what every bound method returns (interval, dual, LP) and what the
dual objective, the LP and the MILP read: ``lower[i] ≤ ẑ_{i+2} ≤ upper[i]`` for
the output of every affine block ``i``, the logits last. Units of a hidden
layer split into I⁻ (u ≤ 0), I⁺ (ℓ ≥ 0) and the crossing set I (ℓ < 0 < u).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .network import Network
from .relu import crossing
from .rigorous import enclosing_mid_rad, error_bound, lower_bound, widen, working_dtype
from .sets import Ball, LinfBall


@dataclass(frozen=True)
class Bounds:
    """Elementwise bounds on every pre-activation ẑ_2..ẑ_k, each (batch, *shape)."""

    lower: tuple[Tensor, ...]
    upper: tuple[Tensor, ...]

    def __post_init__(self) -> None:
        if len(self.lower) != len(self.upper) or not self.lower:
            raise ValueError("Bounds needs one (lower, upper) pair per affine block")
        for i, (lo, up) in enumerate(zip(self.lower, self.upper)):
            if lo.shape != up.shape:
                raise ValueError(f"layer {i}: lower {tuple(lo.shape)} and upper {tuple(up.shape)} differ in shape")

    def __len__(self) -> int:
        return len(self.lower)

    @property
    def batch_size(self) -> int:
        return self.lower[0].shape[0]

    @property
    def hidden(self) -> tuple[tuple[Tensor, Tensor], ...]:
        """(ℓ, u) of the layers that pass through a ReLU (all but the logits)."""
        return tuple(zip(self.lower[:-1], self.upper[:-1]))

    @property
    def output(self) -> tuple[Tensor, Tensor]:
        """(ℓ, u) of the logits ẑ_k."""
        return self.lower[-1], self.upper[-1]

    @property
    def dtype(self) -> torch.dtype:
        return self.lower[0].dtype

    def crossing(self, layer: int) -> Tensor:
        """Mask of the crossing units I (ℓ < 0 < u) of a layer."""
        return crossing(self.lower[layer], self.upper[layer])

    def n_crossing(self) -> Tensor:
        """Number of crossing units per example and hidden layer, (batch, n_hidden); (batch, 0) without a hidden layer."""
        counts = [self.crossing(i).flatten(1).sum(1) for i in range(len(self) - 1)]
        if not counts:
            return torch.zeros(self.batch_size, 0, dtype=torch.int64, device=self.lower[0].device)
        return torch.stack(counts, dim=1)

    def finite(self) -> Tensor:
        """Per example: every bound is finite (a NaN or inf bound certifies nothing), (batch,) bool."""
        ok = torch.ones(self.batch_size, dtype=torch.bool, device=self.lower[0].device)
        for lo, up in zip(self.lower, self.upper):
            ok &= torch.isfinite(lo).flatten(1).all(1) & torch.isfinite(up).flatten(1).all(1)
        return ok

    def to(self, dtype: torch.dtype) -> "Bounds":
        """The bounds in a wider dtype (exact); narrowing is refused since it would round them inward."""
        if torch.promote_types(dtype, self.dtype) != dtype:
            raise ValueError(f"bounds in {self.dtype} cannot be narrowed to {dtype} without rounding them")
        return Bounds(tuple(t.to(dtype) for t in self.lower), tuple(t.to(dtype) for t in self.upper))

    def intersect(self, other: "Bounds") -> "Bounds":
        """Elementwise tightest of two sound bounds (still sound)."""
        if len(other) != len(self):
            raise ValueError(f"cannot intersect bounds of {len(self)} and {len(other)} layers")
        return Bounds(
            tuple(torch.maximum(a, b) for a, b in zip(self.lower, other.lower)),
            tuple(torch.minimum(a, b) for a, b in zip(self.upper, other.upper)),
        )

    def select(self, index: int | slice | Tensor) -> "Bounds":
        """The bounds of some examples (an int keeps a batch of one)."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return Bounds(tuple(t[index] for t in self.lower), tuple(t[index] for t in self.upper))

    def contains(self, pre_activations: list[Tensor], tol: float = 0.0) -> bool:
        """Whether the given ẑ_2..ẑ_k (each (batch, n, *shape)) lie within the bounds."""
        return all(
            bool(((z >= lo.unsqueeze(1) - tol) & (z <= up.unsqueeze(1) + tol)).all())
            for z, lo, up in zip(pre_activations, self.lower, self.upper)
        )


def check_compatible(net: Network, ball: Ball) -> None:
    """Raise a ValueError naming the mismatch between a network and an input set."""
    if ball.shape != net.input_shape:
        raise ValueError(
            f"input set of shape {ball.shape} does not match the network's input shape {net.input_shape}"
        )


def prepare(net: Network, ball: Ball) -> Ball:
    """The input set in the dtype bounds are computed in, after checking network and set.

    The dtype is the widest of the set's and the parameters' (at least
    float32): weights are never rounded to a narrower input, and half
    precision is upcast with a note. NaN or inf parameters are a ValueError.
    """
    check_compatible(net, ball)
    net.check_finite()
    dtype = working_dtype(ball.dtype, *{p.dtype for p in net.parameters()})
    return ball.to(dtype)


def interval_bounds(net: Network, ball: Ball, *, rigorous: bool = True) -> Bounds:
    """Naive layer-wise bounds (Appendix B): push a box through every layer.

    For ``ẑ = Wz + b`` with z in the box of midpoint m and radius r, ẑ lies in
    the box of midpoint ``Wm + b`` and radius ``|W| r``; the ReLU maps
    [ℓ, u] to [ℓ⁺, u⁺], any other activation (monotone) to [σ(ℓ), σ(u)]. An l_p ball's first layer takes the exact radius of
    :meth:`~lpverify.sets.LpBall.spread`. Differentiable in the network parameters.

    ``rigorous`` (the default) widens every layer by the rounding error of its
    computation, ``γ_n (|W|(|m| + r) + |b|)`` (MATH.md §11), and keeps each
    box's midpoint and radius enclosing, so the bounds hold for the
    real-valued network.
    """
    ball = prepare(net, ball)
    lower, upper = [], []
    mid, rad = ball.mid, ball.rad
    for i, block in enumerate(net.blocks):
        if i == 0 and not isinstance(ball, LinfBall):
            eye = torch.eye(block.in_features, dtype=mid.dtype, device=mid.device).view(-1, *block.in_shape)
            new_mid, new_rad = block(mid), ball.spread(block.linear(eye))
        else:
            new_mid, new_rad = block(mid), block.abs_linear(rad)
        lo, hi = new_mid - new_rad, new_mid + new_rad
        if rigorous:
            n = block.rounding_depth + (block.in_features if i == 0 else 0) + 4
            lo, hi = widen(lo, hi, error_bound(block.abs_forward(mid.abs() + rad), n))
        lower.append(lo)
        upper.append(hi)
        act = net.activations[i] if i < len(net.activations) else None
        if act is None or act.is_relu:
            lo, hi = torch.relu(lo), torch.relu(hi)
        else:  # a monotone activation maps [ℓ, u] to [σ(ℓ), σ(u)], rounded outward
            lo, hi = act.image(lo, hi, rigorous=rigorous)
        if rigorous:
            mid, rad = enclosing_mid_rad(lo, hi)
        else:
            mid, rad = (hi + lo) / 2, (hi - lo) / 2
    return Bounds(tuple(lower), tuple(upper))


def interval_objective(
    net: Network, ball: Ball, c: Tensor, bounds: Bounds | None = None, *, rigorous: bool = True
) -> Tensor:
    """The naive layer-wise lower bound on ``cᵀ f(z)`` over the ball, (batch, m) for c (batch, m, n_out).

    The last hidden layer's post-activations lie in the box ``[ℓ⁺, u⁺]`` of
    ``bounds`` (interval bounds by default); ``cᵀ(W z + b)`` is minimised over
    that box exactly. Sound with any valid bounds; ``rigorous`` subtracts the
    rounding error of the computation (MATH.md §11).
    """
    ball = prepare(net, ball)
    if c.ndim != 3 or c.shape[0] != ball.batch_size or c.shape[2] != net.n_outputs:
        raise ValueError(f"objective c must have shape (batch, m, n_out), got {tuple(c.shape)}")
    bounds = interval_bounds(net, ball, rigorous=rigorous) if bounds is None else bounds
    if rigorous:  # the objective's own arithmetic in float64: c is never rounded, the allowance is tiny
        ball, bounds = ball.to(torch.float64), bounds.to(torch.float64)
    else:
        bounds = bounds.to(ball.dtype)
    last = net.blocks[-1]
    batch, m = c.shape[:2]
    c = c.to(ball.mid)
    v = last.transpose(c.reshape(batch * m, *last.out_shape)).reshape(batch, m, -1)  # Wᵀc
    if len(net.blocks) == 1:  # min over the ball itself: cᵀb − h(−Wᵀc)
        v = v.view(batch, m, *ball.shape)
        value = c @ last.bias(c).flatten() - ball.support(-v)
        zmax, box_magnitude = ball.abs_max(), ball.support_magnitude(v)
    else:
        lo, hi = bounds.lower[-2].clamp(min=0), bounds.upper[-2].clamp(min=0)
        act = net.activations[-1]
        if not act.is_relu:  # the image box of the last activation (bounds are float64 here when rigorous)
            lo, hi = act.image(bounds.lower[-2], bounds.upper[-2], rigorous=rigorous)
        mid, rad = enclosing_mid_rad(lo, hi) if rigorous else ((hi + lo) / 2, (hi - lo) / 2)
        mid, rad = mid.flatten(1).unsqueeze(1), rad.flatten(1).unsqueeze(1)
        value = (v * mid).sum(-1) - (v.abs() * rad).sum(-1) + c @ last.bias(c).flatten()
        zmax = hi if act.is_relu else torch.maximum(lo.abs(), hi.abs())
        box_magnitude = (v.abs() * (mid.abs() + rad)).sum(-1)
    if not rigorous:
        return value
    residual = (c.abs() * last.abs_forward(zmax).flatten(1).unsqueeze(1)).sum(-1)
    n = last.rounding_depth + 2 * last.in_features + 8
    value = lower_bound(value, error_bound(residual + box_magnitude, n))
    return torch.where(bounds.finite().unsqueeze(1), value, torch.full_like(value, float("nan")))
