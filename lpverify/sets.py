"""Input sets B(x) (MATH.md §1) and their support functions h (Theorem 1).

Every set is batch-first: one set per example. The bound methods read

* ``lo``/``hi``: the bounding box (the LP's variable bounds, the MILP);
* ``mid``/``rad`` and ``dual_norm``: the set is ``mid + {δ : ‖δ / rad‖_p ≤ 1}``,
  so ``max_{z∈B} vᵀz = vᵀmid + ‖rad ⊙ v‖_q`` with q the dual exponent
  (1/p + 1/q = 1). This is the support function h of Theorem 1, and what the
  interval and dual bounds push through the first layer.

:class:`LinfBall` (the paper's threat model, optionally clamped to a box) and
:class:`LpBall` (p = 1 or 2) share that interface; ``Ball`` is either.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Protocol, Union

import torch
from torch import Tensor

from .rigorous import down, enclosing_mid_rad, to_dtype_down, to_dtype_up, up, working_dtype


def _as_batch_eps(eps: float | Tensor, batch: int) -> Tensor:
    """ε per example as float64 (exact for any float input), checked."""
    if isinstance(eps, Tensor) and not eps.is_floating_point() and eps.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"eps must be a float or a floating-point tensor, got {eps.dtype}")
    # A Python number goes straight to float64 (torch's default float32 would round it first).
    eps_t = eps.detach().to("cpu", torch.float64) if isinstance(eps, Tensor) else torch.as_tensor(eps, dtype=torch.float64)
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
    """A box limit as float64 (exact), broadcast to the centre's shape."""
    if value is None:
        return None
    if isinstance(value, Tensor):
        t = value.detach().to(like.device, torch.float64)
    else:
        t = torch.as_tensor(value, dtype=torch.float64, device=like.device)
    if torch.isnan(t).any():
        raise ValueError(f"{name} contains NaN")
    try:
        return torch.broadcast_to(t, like.shape)
    except RuntimeError as err:
        raise ValueError(f"{name} of shape {tuple(t.shape)} does not broadcast to the input shape {tuple(like.shape)}") from err


def _check_center(center: Tensor) -> torch.dtype:
    """The working dtype of a centre (half precision is upcast), after checking it."""
    if not isinstance(center, Tensor):
        raise TypeError(f"center must be a torch.Tensor, got {type(center).__name__}")
    if center.ndim < 2:
        raise ValueError(f"center must be batch-first (batch, *input_shape), got shape {tuple(center.shape)}")
    if not center.is_floating_point():
        raise TypeError(f"center must be a floating-point tensor, got {center.dtype}")
    if not torch.isfinite(center).all():
        raise ValueError("center (the input x) contains NaN or inf")
    return working_dtype(center.dtype)


def _fractions(t: Tensor) -> list[Fraction]:
    return [Fraction(v) for v in t.detach().cpu().double().flatten().tolist()]


class InputSet(Protocol):
    """What every bound method reads from an input set B(x), batch-first.

    ``lo``/``hi`` and ``mid``/``rad`` are rounded outward in the working dtype:
    the box ``[mid − rad, mid + rad]`` contains the exact set, so bounds over
    it hold for the exact set (MATH.md §11).
    """

    center: Tensor
    eps: Tensor
    lo: Tensor
    hi: Tensor
    mid: Tensor
    rad: Tensor
    q: float  # the dual exponent: h(v) = vᵀmid + ‖rad ⊙ v‖_q on the box, ε‖v‖_q on a ball

    @property
    def batch_size(self) -> int: ...
    @property
    def shape(self) -> tuple[int, ...]: ...
    @property
    def dtype(self) -> torch.dtype: ...
    def support(self, v: Tensor) -> Tensor: ...
    def support_magnitude(self, v: Tensor) -> Tensor: ...
    def spread(self, basis: Tensor) -> Tensor: ...
    def dual_norm(self, v: Tensor, dim: int) -> Tensor: ...
    def select(self, index: int | slice | Tensor) -> "InputSet": ...
    def to(self, dtype: torch.dtype) -> "InputSet": ...
    def sample(self, n: int, *, vertices: bool = False, generator: torch.Generator | None = None) -> Tensor: ...
    def contains(self, z: Tensor, tol: float = 0.0) -> Tensor: ...
    def contains_exactly(self, z: Tensor) -> Tensor: ...
    def project(self, z: Tensor, dtype: torch.dtype) -> Tensor: ...


class _Centered:
    """What every ball shares: a batch of centres ``center`` (batch, *input_shape)."""

    center: Tensor

    @property
    def batch_size(self) -> int:
        return self.center.shape[0]

    @property
    def shape(self) -> tuple[int, ...]:
        """The input shape, without the batch dimension."""
        return tuple(self.center.shape[1:])

    @property
    def dtype(self) -> torch.dtype:
        """The working dtype: float32 or float64."""
        return self.center.dtype

    def abs_max(self) -> Tensor:
        """``|mid| + rad``: a bound on |z| over the set, (batch, *shape)."""
        return self.mid.abs() + self.rad


class LinfBall(_Centered):
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

    q = 1.0  # the dual exponent of l_inf

    def __init__(
        self,
        center: Tensor,
        eps: float | Tensor,
        lower: float | Tensor | None = None,
        upper: float | Tensor | None = None,
    ):
        dtype = _check_center(center)
        self.center = center.to(dtype)
        self.eps_exact = _as_batch_eps(eps, center.shape[0]).to(center.device)
        self.lower = _as_limit(lower, center, "lower")
        self.upper = _as_limit(upper, center, "upper")
        self.eps = to_dtype_up(self.eps_exact, dtype)

        x64 = self.center.double()
        radius = self.eps_exact.view(-1, *([1] * (center.ndim - 1)))
        lo, hi = down(x64 - radius), up(x64 + radius)
        if self.lower is not None:
            lo = torch.maximum(lo, self.lower)
        if self.upper is not None:
            hi = torch.minimum(hi, self.upper)
        if (lo > hi).any():
            raise ValueError("the box clamp [lower, upper] does not intersect the eps-ball: the input set is empty")
        self.lo, self.hi = to_dtype_down(lo, dtype), to_dtype_up(hi, dtype)
        if self.lower is None and self.upper is None:
            # The paper's support function xᵀv + ε‖v‖₁, with ε rounded up.
            self.mid, self.rad = self.center, self.eps.view_as(radius).expand_as(self.center)
        else:
            self.mid, self.rad = enclosing_mid_rad(self.lo, self.hi)

    def __repr__(self) -> str:
        clamp = "" if self.lower is None and self.upper is None else ", clamped"
        return f"LinfBall(batch={self.batch_size}, shape={self.shape}{clamp})"

    p = math.inf

    @staticmethod
    def dual_norm(v: Tensor, dim: int) -> Tensor:
        """``‖v‖₁`` along ``dim``: the dual of the l_inf norm."""
        return v.abs().sum(dim)

    def support(self, v: Tensor) -> Tensor:
        """``h(v) = max_{z∈B} vᵀz = vᵀmid + |v|ᵀrad`` for v of shape (batch, m, *shape) → (batch, m)."""
        mid, rad = self.mid.unsqueeze(1), self.rad.unsqueeze(1)
        return (v * mid + v.abs() * rad).flatten(2).sum(-1)

    def support_magnitude(self, v: Tensor) -> Tensor:
        """The magnitude of :meth:`support`'s computation, ``|v|ᵀ(|mid| + rad)``, (batch, m)."""
        return (v.abs() * self.abs_max().unsqueeze(1)).flatten(2).sum(-1)

    def spread(self, basis: Tensor) -> Tensor:
        """``max_{z∈B} (W (z − mid))_j = Σ_p rad_p |W e_p|`` from the columns ``basis = W e_p`` (n_in, *s) → (batch, *s)."""
        return (self.rad.flatten(1) @ basis.abs().flatten(1)).view(-1, *basis.shape[1:])

    def select(self, index: int | slice | Tensor) -> "LinfBall":
        """The ball of some examples (an int keeps a batch of one)."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return LinfBall(
            self.center[index],
            self.eps_exact[index],
            None if self.lower is None else self.lower[index],
            None if self.upper is None else self.upper[index],
        )

    def to(self, dtype: torch.dtype) -> "LinfBall":
        """The same exact set, its box rounded outward in another working dtype."""
        if dtype == self.dtype:
            return self
        return LinfBall(self.center.to(dtype), self.eps_exact, self.lower, self.upper)

    def project(self, z: Tensor, dtype: torch.dtype) -> Tensor:
        """Points of dtype inside the exact set, near z (batch, n, *shape): clipped to the box rounded inward.

        How a solver's witness, found on the outward box, becomes a candidate
        counterexample (MATH.md §11: clip, then check with :meth:`contains_exactly`).
        """
        x64 = self.center.double().unsqueeze(1)
        radius = self.eps_exact.view(-1, 1, *([1] * len(self.shape)))
        lo, hi = up(x64 - radius), down(x64 + radius)
        if self.lower is not None:
            lo = torch.maximum(lo, self.lower.unsqueeze(1))
        if self.upper is not None:
            hi = torch.minimum(hi, self.upper.unsqueeze(1))
        lo, hi = to_dtype_up(lo, dtype), to_dtype_down(hi, dtype)
        inner = torch.minimum(torch.maximum(z.to(dtype), lo), hi)
        return torch.where(lo <= hi, inner, self.center.unsqueeze(1).to(dtype).expand_as(inner))

    def contains_exactly(self, z: Tensor) -> Tensor:
        """Whether each point of z (batch, n, *shape) lies in the exact set, decided in rational arithmetic."""
        out = torch.zeros(z.shape[:2], dtype=torch.bool)
        for b in range(z.shape[0]):
            x = _fractions(self.center[b])
            eps = Fraction(float(self.eps_exact[b]))
            low = None if self.lower is None else _fractions(self.lower[b])
            high = None if self.upper is None else _fractions(self.upper[b])
            for k in range(z.shape[1]):
                point = _fractions(z[b, k])
                out[b, k] = all(
                    abs(p - c) <= eps and (low is None or p >= low[i]) and (high is None or p <= high[i])
                    for i, (p, c) in enumerate(zip(point, x))
                )
        return out

    def sample(self, n: int, *, vertices: bool = False, generator: torch.Generator | None = None) -> Tensor:
        """n points of the set per example, shape (batch, n, *shape).

        Uniform in the box, or (``vertices=True``) random corners of it, where
        piecewise-linear functions tend to take their extremes; every point lies
        in the exact set (the box rounded inward).
        """
        size = (self.batch_size, n, *self.shape)
        u = torch.rand(size, generator=generator, dtype=self.center.dtype, device="cpu").to(self.center.device)
        if vertices:
            u = (u > 0.5).to(u.dtype)
        points = self.lo.unsqueeze(1) + u * (self.hi - self.lo).unsqueeze(1)
        return self.project(points, self.dtype)  # onto the box rounded inward: points of the exact set

    def contains(self, z: Tensor, tol: float = 0.0) -> Tensor:
        """Whether each point of z (batch, n, *shape) lies in the set; (batch, n) bool."""
        inside = (z >= self.lo.unsqueeze(1) - tol) & (z <= self.hi.unsqueeze(1) + tol)
        return inside.flatten(2).all(-1)


class LpBall(_Centered):
    """``{z : ‖z − x‖_p ≤ ε}`` for p = 1 or 2, one ball per example (MATH.md §1).

    The support function is ``h(v) = xᵀv + ε‖v‖_q`` with q the dual exponent
    (∞ for p = 1, 2 for p = 2), which is all the dual bounds need. The LP over
    an l2 ball is a second-order cone program (``backend="cvxpy"``). The
    bounding box ``[x − ε, x + ε]`` is exposed as ``lo``/``hi``; it contains
    the ball and is only used where a box is enough to be sound.

    Args:
        center: x, shape (batch, *input_shape), finite.
        eps: a scalar or one radius per example, shape (batch,); ε ≥ 0.
        p: 1 or 2 (use :class:`LinfBall` for p = ∞).
    """

    def __init__(self, center: Tensor, eps: float | Tensor, p: float = 2):
        dtype = _check_center(center)
        if p == math.inf:
            raise ValueError("LpBall takes p = 1 or p = 2; use LinfBall for p = inf")
        if p not in (1, 2):
            raise ValueError(f"LpBall supports p = 1 or p = 2, got p = {p}")
        self.center = center.to(dtype)
        self.p = int(p)
        self.q = math.inf if self.p == 1 else 2.0
        self.eps_exact = _as_batch_eps(eps, center.shape[0]).to(center.device)
        self.eps = to_dtype_up(self.eps_exact, dtype)
        radius = self.eps_exact.view(-1, *([1] * (center.ndim - 1)))
        x64 = self.center.double()
        self.lo, self.hi = to_dtype_down(down(x64 - radius), dtype), to_dtype_up(up(x64 + radius), dtype)
        self.mid, self.rad = self.center, self.eps.view_as(radius).expand_as(self.center)

    def __repr__(self) -> str:
        return f"LpBall(p={self.p}, batch={self.batch_size}, shape={self.shape})"

    def dual_norm(self, v: Tensor, dim: int) -> Tensor:
        """``‖v‖_q`` along ``dim``, q the dual exponent of p."""
        return torch.linalg.vector_norm(v, ord=self.q, dim=dim)

    def support(self, v: Tensor) -> Tensor:
        """``h(v) = vᵀx + ε‖v‖_q`` for v of shape (batch, m, *shape) → (batch, m)."""
        linear = (v * self.center.unsqueeze(1)).flatten(2).sum(-1)
        return linear + self.eps.unsqueeze(1) * self.dual_norm(v.flatten(2), dim=-1)

    def support_magnitude(self, v: Tensor) -> Tensor:
        """The magnitude of :meth:`support`'s computation, ``|v|ᵀ|x| + ε‖v‖₁`` (‖v‖₁ bounds every dual norm)."""
        flat = v.abs().flatten(2)
        return (flat * self.center.abs().flatten(1).unsqueeze(1)).sum(-1) + self.eps.unsqueeze(1) * flat.sum(-1)

    def spread(self, basis: Tensor) -> Tensor:
        """``ε ‖Wᵀ e_j‖_q`` from the columns ``basis = W e_p`` (n_in, *s) → (batch, *s): exact for the ball."""
        norms = self.dual_norm(basis, dim=0)
        return self.eps.view(-1, *([1] * norms.ndim)) * norms

    def select(self, index: int | slice | Tensor) -> "LpBall":
        """The ball of some examples (an int keeps a batch of one)."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return LpBall(self.center[index], self.eps_exact[index], self.p)

    def to(self, dtype: torch.dtype) -> "LpBall":
        """The same exact ball in another working dtype."""
        if dtype == self.dtype:
            return self
        return LpBall(self.center.to(dtype), self.eps_exact, self.p)

    def project(self, z: Tensor, dtype: torch.dtype) -> Tensor:
        """Points of dtype inside the exact ball, near z (batch, n, *shape): pulled toward x until exactly inside."""
        x = self.center.unsqueeze(1).to(torch.float64)
        delta = z.to(torch.float64) - x
        norm = torch.linalg.vector_norm(delta.flatten(2), ord=self.p, dim=-1)
        eps = self.eps_exact.view(-1, 1)
        scale = torch.where(norm > eps, eps / norm.clamp(min=1e-300), torch.ones_like(norm))
        shape = (*scale.shape, *([1] * len(self.shape)))
        point = (x + delta * scale.view(shape)).to(dtype)
        for _ in range(8):  # rounding can leave a point just outside: shrink a little and retry
            outside = ~self.contains_exactly(point)
            if not outside.any():
                break
            scale = torch.where(outside, scale * (1 - 1e-6), scale)
            point = (x + delta * scale.view(shape)).to(dtype)
        return point

    def contains_exactly(self, z: Tensor) -> Tensor:
        """Whether each point of z (batch, n, *shape) lies in the exact ball, decided in rational arithmetic."""
        out = torch.zeros(z.shape[:2], dtype=torch.bool)
        for b in range(z.shape[0]):
            x = _fractions(self.center[b])
            eps = Fraction(float(self.eps_exact[b]))
            for k in range(z.shape[1]):
                diff = [abs(p - c) for p, c in zip(_fractions(z[b, k]), x)]
                out[b, k] = sum(diff) <= eps if self.p == 1 else sum(d * d for d in diff) <= eps * eps
        return out

    def sample(self, n: int, *, vertices: bool = False, generator: torch.Generator | None = None) -> Tensor:
        """n points of the ball per example, shape (batch, n, *shape).

        Uniform in the ball, or (``vertices=True``) on its boundary: the
        corners ``x ± ε e_i`` for p = 1, uniform on the sphere for p = 2.
        """
        batch, dims = self.batch_size, math.prod(self.shape)
        opts = {"generator": generator, "dtype": self.center.dtype}
        if self.p == 1 and vertices:
            axis = torch.randint(dims, (batch, n), generator=generator)
            sign = torch.randint(2, (batch, n), generator=generator) * 2 - 1
            u = torch.zeros(batch, n, dims, dtype=self.center.dtype).scatter_(2, axis.unsqueeze(2), sign.unsqueeze(2).to(self.center.dtype))
        elif self.p == 1:
            # Uniform in the l1 ball: the first dims of a normalised vector of dims+1 exponentials, random signs.
            e = -torch.log(torch.rand(batch, n, dims + 1, **opts).clamp(min=1e-300))
            sign = torch.randint(2, (batch, n, dims), generator=generator) * 2 - 1
            u = e[..., :dims] / e.sum(-1, keepdim=True) * sign
        else:
            g = torch.randn(batch, n, dims, **opts)
            u = g / torch.linalg.vector_norm(g, dim=-1, keepdim=True).clamp(min=1e-300)
            if not vertices:
                u = u * torch.rand(batch, n, 1, **opts) ** (1.0 / dims)
        u = u.to(self.center.device).view(batch, n, *self.shape)
        return self.center.unsqueeze(1) + self.eps.view(-1, 1, *([1] * len(self.shape))) * u

    def contains(self, z: Tensor, tol: float = 0.0) -> Tensor:
        """Whether each point of z (batch, n, *shape) lies in the ball; (batch, n) bool."""
        dist = torch.linalg.vector_norm((z - self.center.unsqueeze(1)).flatten(2), ord=self.p, dim=-1)
        return dist <= self.eps.unsqueeze(1) + tol


Ball = Union[LinfBall, LpBall]
