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

    def crossing(self, layer: int) -> Tensor:
        """Mask of the crossing units I (ℓ < 0 < u) of a layer."""
        return (self.lower[layer] < 0) & (self.upper[layer] > 0)

    def n_crossing(self) -> Tensor:
        """Number of crossing units per example and hidden layer, (batch, n_hidden)."""
        return torch.stack([self.crossing(i).flatten(1).sum(1) for i in range(len(self) - 1)], dim=1)

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


def basis_spread(ball: Ball, basis: Tensor) -> Tensor:
    """``max_{z∈B} (W_1 (z − mid))_j`` from the columns ``basis = W_1 e_p``, shape (n_in, *s_2) → (batch, *s_2).

    ``Σ_p rad_p |W_1 e_p|`` for an l_inf ball and ``ε ‖W_1ᵀ e_j‖_q`` for an
    l_p ball: exact, the first layer's bounds by any method.
    """
    if isinstance(ball, LinfBall):
        return (ball.rad.flatten(1) @ basis.abs().flatten(1)).view(-1, *basis.shape[1:])
    norms = ball.dual_norm(basis, dim=0)
    return ball.eps.view(-1, *([1] * norms.ndim)) * norms


def interval_bounds(net: Network, ball: Ball) -> Bounds:
    """Naive layer-wise bounds (Appendix B): push a box through every layer.

    For ``ẑ = Wz + b`` with z in the box of midpoint m and radius r, ẑ lies in
    the box of midpoint ``Wm + b`` and radius ``|W| r``; the ReLU maps
    [ℓ, u] to [ℓ⁺, u⁺]. An l_p ball's first layer takes the exact radius of
    :func:`basis_spread`. Differentiable in the network parameters.
    """
    check_compatible(net, ball)
    lower, upper = [], []
    mid, rad = ball.mid, ball.rad
    for i, block in enumerate(net.blocks):
        if i == 0 and not isinstance(ball, LinfBall):
            eye = torch.eye(block.in_features, dtype=mid.dtype, device=mid.device).view(-1, *block.in_shape)
            mid, rad = block(mid), basis_spread(ball, block.linear(eye))
        else:
            mid, rad = block(mid), block.abs_linear(rad)
        lo, hi = mid - rad, mid + rad
        lower.append(lo)
        upper.append(hi)
        lo, hi = torch.relu(lo), torch.relu(hi)
        mid, rad = (hi + lo) / 2, (hi - lo) / 2
    return Bounds(tuple(lower), tuple(upper))


def interval_objective(net: Network, ball: Ball, c: Tensor, bounds: Bounds | None = None) -> Tensor:
    """The naive layer-wise lower bound on ``cᵀ f(z)`` over the ball, (batch, m) for c (batch, m, n_out).

    The last hidden layer's post-activations lie in the box ``[ℓ⁺, u⁺]`` of
    ``bounds`` (interval bounds by default); ``cᵀ(W z + b)`` is minimised over
    that box exactly. Sound with any valid bounds.
    """
    check_compatible(net, ball)
    if c.ndim != 3 or c.shape[0] != ball.batch_size or c.shape[2] != net.n_outputs:
        raise ValueError(f"objective c must have shape (batch, m, n_out), got {tuple(c.shape)}")
    bounds = interval_bounds(net, ball) if bounds is None else bounds
    last = net.blocks[-1]
    batch, m = c.shape[:2]
    c = c.to(ball.mid)
    if len(net.blocks) == 1:  # min over the ball itself: cᵀb − h(−Wᵀc)
        v = last.transpose(c.reshape(batch * m, *last.out_shape)).reshape(batch, m, *ball.shape)
        return c @ last.bias(c).flatten() - ball.support(-v)
    lo, hi = bounds.lower[-2].clamp(min=0), bounds.upper[-2].clamp(min=0)
    v = last.transpose(c.reshape(batch * m, *last.out_shape)).reshape(batch, m, -1)  # Wᵀc
    mid, rad = ((hi + lo) / 2).flatten(1).unsqueeze(1), ((hi - lo) / 2).flatten(1).unsqueeze(1)
    return (v * mid).sum(-1) - (v.abs() * rad).sum(-1) + c @ last.bias(c).flatten()
