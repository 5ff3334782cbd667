"""Input sets B(x) (MATH.md §1) and their support functions h (Theorem 1).

Every set is batch-first: one set per example. The bound methods read only
``lo``/``hi`` (the bounding box, for interval bounds and the LP) and
``support`` (for the dual objective J).
"""

from __future__ import annotations

import torch
from torch import Tensor


def _as_batch_eps(eps: float | Tensor, batch: int, like: Tensor) -> Tensor:
    eps_t = torch.as_tensor(eps, dtype=like.dtype, device=like.device)
    if eps_t.ndim == 0:
        eps_t = eps_t.expand(batch)
    elif eps_t.shape != (batch,):
        raise ValueError(f"eps must be a scalar or have shape (batch,) = ({batch},), got {tuple(eps_t.shape)}")
    if not torch.isfinite(eps_t).all():
        raise ValueError("eps contains NaN or inf")
    if (eps_t < 0).any():
        raise ValueError(f"eps must be >= 0, got min eps = {eps_t.min().item():g}")
    return eps_t


def _as_limit(value: float | Tensor | None, like: Tensor, name: str) -> Tensor | None:
    if value is None:
        return None
    t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if torch.isnan(t).any():
        raise ValueError(f"{name} contains NaN")
    try:
        return torch.broadcast_to(t, like.shape)
    except RuntimeError as err:
        raise ValueError(f"{name} of shape {tuple(t.shape)} does not broadcast to the input shape {tuple(like.shape)}") from err


class LinfBall:
    """``{z : ‖z − x‖_∞ ≤ ε, lower ≤ z ≤ upper}`` for each example of a batch.

    Args:
        center: x, shape (batch, *input_shape), finite.
        eps: a scalar or one radius per example, shape (batch,); ε ≥ 0.
        lower, upper: optional box clamp (e.g. 0 and 1 for pixels), scalars or
            tensors broadcastable to ``center``.

    The set is the box ``[lo, hi]`` with ``lo = max(x − ε, lower)`` and
    ``hi = min(x + ε, upper)``, stored as midpoint ``mid`` and radius ``rad``;
    without a clamp ``mid = x`` and ``rad = ε`` exactly, so the support
    function is the paper's ``xᵀv + ε‖v‖₁``.
    """

    def __init__(
        self,
        center: Tensor,
        eps: float | Tensor,
        lower: float | Tensor | None = None,
        upper: float | Tensor | None = None,
    ):
        if not isinstance(center, Tensor):
            raise TypeError(f"center must be a torch.Tensor, got {type(center).__name__}")
        if center.ndim < 2:
            raise ValueError(f"center must be batch-first (batch, *input_shape), got shape {tuple(center.shape)}")
        if not center.is_floating_point():
            raise TypeError(f"center must be a floating-point tensor, got {center.dtype}")
        if not torch.isfinite(center).all():
            raise ValueError("center contains NaN or inf")
        self.center = center
        self.eps = _as_batch_eps(eps, center.shape[0], center)
        self.lower = _as_limit(lower, center, "lower")
        self.upper = _as_limit(upper, center, "upper")

        radius = self.eps.view(-1, *([1] * (center.ndim - 1)))
        if self.lower is None and self.upper is None:
            self.mid, self.rad = center, radius.expand_as(center)
            self.lo, self.hi = center - radius, center + radius
        else:
            lo, hi = center - radius, center + radius
            if self.lower is not None:
                lo = torch.maximum(lo, self.lower)
            if self.upper is not None:
                hi = torch.minimum(hi, self.upper)
            if (lo > hi).any():
                raise ValueError("the box clamp [lower, upper] does not intersect the eps-ball: the input set is empty")
            self.lo, self.hi = lo, hi
            self.mid, self.rad = (hi + lo) / 2, (hi - lo) / 2

    @property
    def batch_size(self) -> int:
        return self.center.shape[0]

    @property
    def shape(self) -> tuple[int, ...]:
        """The input shape, without the batch dimension."""
        return tuple(self.center.shape[1:])

    def __repr__(self) -> str:
        clamp = "" if self.lower is None and self.upper is None else ", clamped"
        return f"LinfBall(batch={self.batch_size}, shape={self.shape}{clamp})"

    def support(self, v: Tensor) -> Tensor:
        """``h(v) = max_{z∈B} vᵀz = vᵀmid + |v|ᵀrad`` for v of shape (batch, m, *shape) → (batch, m)."""
        mid, rad = self.mid.unsqueeze(1), self.rad.unsqueeze(1)
        return (v * mid + v.abs() * rad).flatten(2).sum(-1)

    def select(self, index: int | slice | Tensor) -> "LinfBall":
        """The ball of some examples (an int keeps a batch of one)."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return LinfBall(
            self.center[index],
            self.eps[index],
            None if self.lower is None else self.lower[index],
            None if self.upper is None else self.upper[index],
        )

    def sample(self, n: int, *, vertices: bool = False, generator: torch.Generator | None = None) -> Tensor:
        """n points of the set per example, shape (batch, n, *shape).

        Uniform in the box, or (``vertices=True``) random corners of it, where
        piecewise-linear functions tend to take their extremes.
        """
        size = (self.batch_size, n, *self.shape)
        u = torch.rand(size, generator=generator, dtype=self.center.dtype, device="cpu").to(self.center.device)
        if vertices:
            u = (u > 0.5).to(u.dtype)
        return self.lo.unsqueeze(1) + u * (self.hi - self.lo).unsqueeze(1)

    def contains(self, z: Tensor, tol: float = 0.0) -> Tensor:
        """Whether each point of z (batch, n, *shape) lies in the set; (batch, n) bool."""
        inside = (z >= self.lo.unsqueeze(1) - tol) & (z <= self.hi.unsqueeze(1) + tol)
        return inside.flatten(2).all(-1)
