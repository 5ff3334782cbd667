"""The activations of hidden layers and their linear relaxations, written once (MATH.md §2, §3, §11).

Every activation σ of lpverify is a monotone scalar function. For valid
pre-activation bounds ℓ ≤ ẑ ≤ u of a unit, each one gives linear bounds::

    a_l ẑ + b_l  ≤  σ(ẑ)  ≤  a_u ẑ + b_u        for every ẑ ∈ [ℓ, u]

and the bound methods read nothing else. The interface separates the two
parts of a line:

* the **slopes** are free: any number gives a valid line once its intercept
  is chosen for it. :meth:`Activation.default_slopes` is the CROWN choice
  (Zhang et al. 2018), :meth:`Activation.alpha_slopes` the optimisable family
  α ∈ [0, 1] (for ReLU α is the lower slope of Theorem 1, eq. 7);
* the **intercepts** are the tightest for the slope: ``b_u(a) ≥ max_{[ℓ,u]}
  σ(ẑ) − a ẑ`` and ``b_l(a) ≤ min_{[ℓ,u]} σ(ẑ) − a ẑ``
  (:meth:`Activation.upper_intercept`, :meth:`Activation.lower_intercept`).
  Rigorous mode computes them in float64 with every operation rounded
  outward and σ evaluated with an error margin (SOUNDNESS.md), so the lines
  hold for the real function whatever the slope; soundness never depends on
  how a slope or a tangent point was found.

The members: :class:`ReLU` and :class:`LeakyReLU` (convex, piecewise linear:
the intercepts are exact vertex evaluations, the relaxation is the triangle of
eq. 3) and :class:`Sigmoid`, :class:`Tanh` (convex on ẑ ≤ 0, concave on ẑ ≥ 0:
on the convex part ``σ − a ẑ`` takes its maximum at an endpoint and is bounded
below by its tangent at any point, on the concave part the other way round).

The dual network of a general relaxation (MATH.md §3 generalised): ν̂ → ν
takes the upper line where ν̂ > 0 and the lower where ν̂ < 0,
``ν = [ν̂]₊ a_u − [ν̂]₋ a_l``, and Theorem 1's sum of ``ℓ [ν]₊`` becomes
``Σ −[ν̂]₊ b_u + [ν̂]₋ b_l`` (:func:`graph_minimum`). The ReLU's own
arithmetic, which the paper's certificates were measured with, stays in
:mod:`lpverify.relu`; the bound methods use it for ReLU layers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from .rigorous import down, to_dtype_down, to_dtype_up, up

# Assumed accuracy of torch's float64 sigmoid and tanh (they are not correctly rounded):
# the computed value is within REL·|value| + ABS of the exact one. 2⁻⁴⁸ is 32 ulps.
SIGMOID_REL_ERROR = 2.0**-48
SIGMOID_ABS_ERROR = 2.0**-1000


def _f64(*ts: Tensor) -> tuple[Tensor, ...]:
    return tuple(t.to(torch.float64) for t in ts)


def _mul_up(x: Tensor, y: Tensor, rigorous: bool) -> Tensor:
    return up(x * y) if rigorous else x * y


def _mul_down(x: Tensor, y: Tensor, rigorous: bool) -> Tensor:
    return down(x * y) if rigorous else x * y


def _sub_up(x: Tensor, y: Tensor, rigorous: bool) -> Tensor:
    return up(x - y) if rigorous else x - y


def _sub_down(x: Tensor, y: Tensor, rigorous: bool) -> Tensor:
    return down(x - y) if rigorous else x - y


def _interval_mul_max(d_lo: Tensor, d_hi: Tensor, x_lo: Tensor, x_hi: Tensor, rigorous: bool) -> Tensor:
    """An upper bound on ``d·x`` over the box ``[d_lo, d_hi] × [x_lo, x_hi]`` (the corners, rounded up)."""
    corners = [_mul_up(d, x, rigorous) for d in (d_lo, d_hi) for x in (x_lo, x_hi)]
    return torch.stack(corners).amax(0)


def _interval_mul_min(d_lo: Tensor, d_hi: Tensor, x_lo: Tensor, x_hi: Tensor, rigorous: bool) -> Tensor:
    """A lower bound on ``d·x`` over the box (the corners, rounded down)."""
    corners = [_mul_down(d, x, rigorous) for d in (d_lo, d_hi) for x in (x_lo, x_hi)]
    return torch.stack(corners).amin(0)


class Activation:
    """A monotone elementwise activation and its linear relaxation (see the module docstring)."""

    name: str = ""
    piecewise_linear: bool = False

    @property
    def is_relu(self) -> bool:
        return False

    # -- evaluation --------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward_np(self, x: np.ndarray) -> np.ndarray:
        """σ in float64 numpy (the LP/MILP witnesses' forward pass)."""
        return self.forward(torch.as_tensor(np.asarray(x, dtype=np.float64))).numpy()

    def to_torch(self) -> nn.Module:
        raise NotImplementedError

    # -- bounds ------------------------------------------------------------
    def value_bounds(self, x: Tensor, rigorous: bool) -> tuple[Tensor, Tensor]:
        """``[lo, hi] ∋ σ(x)`` for float64 x (the exact value of the real function)."""
        raise NotImplementedError

    def image(self, lower: Tensor, upper: Tensor, *, rigorous: bool = True) -> tuple[Tensor, Tensor]:
        """Bounds on σ over [ℓ, u] (σ is monotone): ``[σ(ℓ), σ(u)]`` rounded outward, in ℓ's dtype."""
        lo, _ = self.value_bounds(lower.to(torch.float64), rigorous)
        _, hi = self.value_bounds(upper.to(torch.float64), rigorous)
        if not rigorous:
            return lo.to(lower.dtype), hi.to(upper.dtype)
        return to_dtype_down(lo, lower.dtype), to_dtype_up(hi, upper.dtype)

    def abs_max(self, lower: Tensor, upper: Tensor) -> Tensor:
        """An upper bound on ``|σ(ẑ)|`` over [ℓ, u] (what bounds the rounding of a product with z)."""
        lo, hi = self.image(lower, upper)
        return torch.maximum(lo.abs(), hi.abs())

    def upper_intercept(self, a: Tensor, lower: Tensor, upper: Tensor, rigorous: bool = True) -> Tensor:
        """``b ≥ max_{ẑ∈[ℓ,u]} σ(ẑ) − a ẑ`` (float64): ``a ẑ + b`` is an upper line of σ on [ℓ, u]."""
        raise NotImplementedError

    def lower_intercept(self, a: Tensor, lower: Tensor, upper: Tensor, rigorous: bool = True) -> Tensor:
        """``b ≤ min_{ẑ∈[ℓ,u]} σ(ẑ) − a ẑ`` (float64): ``a ẑ + b`` is a lower line of σ on [ℓ, u]."""
        raise NotImplementedError

    # -- slopes ------------------------------------------------------------
    def default_slopes(self, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
        """The lower and upper slopes used without optimisation (CROWN's; the paper's for ReLU)."""
        raise NotImplementedError

    def alpha_slopes(self, lower: Tensor, upper: Tensor, alpha: Tensor) -> tuple[Tensor, Tensor]:
        """The slopes of the optimisable family, α ∈ [0, 1] per unit."""
        raise NotImplementedError

    def initial_alpha(self, lower: Tensor, upper: Tensor) -> Tensor:
        """The α an ascent starts from (the default slopes where the family contains them)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.name


# -- piecewise linear: ReLU and LeakyReLU --------------------------------------------


@dataclass(frozen=True, eq=True, repr=False)
class LeakyReLU(Activation):
    """``max(ẑ, s ẑ)`` with ``0 ≤ s ≤ 1``: convex, piecewise linear, exact MILP (MATH.md §6).

    The relaxation of a crossing unit (ℓ < 0 < u) is the triangle with vertices
    (ℓ, sℓ), (0, 0), (u, u): upper face the chord ``d = (u − sℓ)/(u − ℓ)``,
    lower lines ``a ẑ`` for any a ∈ [s, 1] (α picks ``a = s + α(1 − s)``).
    Stable units are exact lines.
    """

    slope: float = 0.01

    def __post_init__(self) -> None:
        if not (0.0 <= float(self.slope) <= 1.0) or math.isnan(float(self.slope)):
            raise ValueError(f"LeakyReLU slope must lie in [0, 1], got {self.slope}")

    piecewise_linear = True

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"LeakyReLU({self.slope:g})"

    def forward(self, x: Tensor) -> Tensor:
        return torch.where(x >= 0, x, x * self.slope)

    def forward_np(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return np.where(x >= 0, x, x * self.slope)

    def to_torch(self) -> nn.Module:
        return nn.LeakyReLU(self.slope)

    def value_bounds(self, x: Tensor, rigorous: bool) -> tuple[Tensor, Tensor]:
        s = torch.full_like(x, self.slope)
        neg_lo, neg_hi = _mul_down(s, x, rigorous), _mul_up(s, x, rigorous)
        return torch.where(x >= 0, x, neg_lo), torch.where(x >= 0, x, neg_hi)

    def _g(self, a: Tensor, x: Tensor, rigorous: bool) -> tuple[Tensor, Tensor]:
        """Bounds on ``σ(x) − a x``."""
        lo, hi = self.value_bounds(x, rigorous)
        return _sub_down(lo, _mul_up(a, x, rigorous), rigorous), _sub_up(hi, _mul_down(a, x, rigorous), rigorous)

    def upper_intercept(self, a: Tensor, lower: Tensor, upper: Tensor, rigorous: bool = True) -> Tensor:
        """Convex: the maximum of ``σ − a ẑ`` over [ℓ, u] is at ℓ or at u."""
        a, lower, upper = _f64(a, lower, upper)
        return torch.maximum(self._g(a, lower, rigorous)[1], self._g(a, upper, rigorous)[1])

    def lower_intercept(self, a: Tensor, lower: Tensor, upper: Tensor, rigorous: bool = True) -> Tensor:
        """The minimum of ``σ − a ẑ`` is at a vertex: ℓ, u, or the kink 0 (value 0) inside."""
        a, lower, upper = _f64(a, lower, upper)
        ends = torch.minimum(self._g(a, lower, rigorous)[0], self._g(a, upper, rigorous)[0])
        inside = (lower < 0) & (upper > 0)
        return torch.where(inside, torch.minimum(ends, torch.zeros_like(ends)), ends)

    def chord(self, lower: Tensor, upper: Tensor) -> Tensor:
        """The slope of the upper face: s on u ≤ 0, 1 on ℓ ≥ 0, ``(u − sℓ)/(u − ℓ)`` on crossing units."""
        s = self.slope
        num = upper.clamp(min=0) - s * lower.clamp(max=0)  # one formula, no division by zero (cf. relu_slope)
        den = upper.clamp(min=0) - lower.clamp(max=0)
        positive = den > 0
        d = torch.where(positive, num / torch.where(positive, den, torch.ones_like(den)), torch.zeros_like(den))
        return torch.where(upper <= 0, torch.full_like(d, s), torch.where(lower >= 0, torch.ones_like(d), d))

    def default_slopes(self, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
        d = self.chord(lower, upper)
        return d, d

    def alpha_slopes(self, lower: Tensor, upper: Tensor, alpha: Tensor) -> tuple[Tensor, Tensor]:
        d = self.chord(lower, upper)
        crossing = (lower < 0) & (upper > 0)
        return torch.where(crossing, self.slope + alpha * (1 - self.slope), d), d

    @staticmethod
    def split_face(lower: np.ndarray, upper: np.ndarray, slope: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The LP's upper face of crossing units with ẑ split as ``z + w`` (cf. :func:`lpverify.relu.split_face`):
        ``(1 − d) z − d w ≤ b`` with the chord ``d = (u − sℓ)/(u − ℓ)``, ``1 − d = −(1 − s)ℓ/(u − ℓ)`` and
        ``b = −(1 − s)ℓu/(u − ℓ)``. Returns (1 − d, d, b)."""
        width = upper - lower
        a = -(1 - slope) * lower / width
        return a, (upper - slope * lower) / width, a * upper

    @staticmethod
    def big_m_rows(lower: np.ndarray, upper: np.ndarray, slope: float) -> tuple[np.ndarray, np.ndarray]:
        """The MILP's coefficients ``((1 − s) u, (1 − s) ℓ)`` of the rows ``z ≤ s ẑ + (1 − s) u a`` and
        ``z ≤ ẑ − (1 − s) ℓ (1 − a)`` (MATH.md §6 with s = 0)."""
        return (1 - slope) * upper, (1 - slope) * lower

    def initial_alpha(self, lower: Tensor, upper: Tensor) -> Tensor:
        if self.slope >= 1:
            return torch.zeros_like(lower)
        return ((self.chord(lower, upper) - self.slope) / (1 - self.slope)).clamp(0, 1)


@dataclass(frozen=True, eq=True, repr=False)
class ReLU(LeakyReLU):
    """``max(ẑ, 0)``: the paper's activation and every network's default (arithmetic in :mod:`lpverify.relu`)."""

    slope: float = 0.0

    def __post_init__(self) -> None:
        if self.slope != 0.0:
            raise ValueError("ReLU has slope 0; use LeakyReLU(slope)")

    @property
    def name(self) -> str:  # type: ignore[override]
        return "ReLU"

    @property
    def is_relu(self) -> bool:
        return True

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x)

    def to_torch(self) -> nn.Module:
        return nn.ReLU()


# -- smooth: sigmoid and tanh --------------------------------------------------------


class _SShaped(Activation):
    """A smooth increasing σ, convex on ẑ ≤ 0 and concave on ẑ ≥ 0, with σ' even and largest at 0.

    Subclasses give σ with an error margin (:meth:`value_bounds`), σ' likewise
    (:meth:`derivative_bounds`) and an approximate inverse of σ' on ẑ ≥ 0
    (:meth:`derivative_inverse`, used only to choose tangent points).
    """

    max_derivative: float = 1.0

    def derivative_bounds(self, x: Tensor, rigorous: bool) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def derivative_inverse(self, a: Tensor) -> Tensor:
        raise NotImplementedError

    def _margin(self, v: Tensor, rigorous: bool) -> tuple[Tensor, Tensor]:
        if not rigorous:
            return v, v
        m = v.abs() * SIGMOID_REL_ERROR + SIGMOID_ABS_ERROR
        return down(v - m), up(v + m)

    def _g(self, a: Tensor, x: Tensor, rigorous: bool) -> tuple[Tensor, Tensor]:
        """Bounds on ``g(x) = σ(x) − a x``."""
        lo, hi = self.value_bounds(x, rigorous)
        return _sub_down(lo, _mul_up(a, x, rigorous), rigorous), _sub_up(hi, _mul_down(a, x, rigorous), rigorous)

    def _tangent_bound(self, a: Tensor, t: Tensor, ends: tuple[Tensor, Tensor], rigorous: bool, upper: bool) -> Tensor:
        """``g(t) + g'(t)(x − t)`` bounded over x ∈ ends: above g on a concave part (upper) or below on a convex one."""
        g_lo, g_hi = self._g(a, t, rigorous)
        d_lo, d_hi = self.derivative_bounds(t, rigorous)
        d_lo, d_hi = _sub_down(d_lo, a, rigorous), _sub_up(d_hi, a, rigorous)
        terms = []
        for x in ends:
            x_lo, x_hi = _sub_down(x, t, rigorous), _sub_up(x, t, rigorous)
            if upper:
                terms.append(_interval_mul_max(d_lo, d_hi, x_lo, x_hi, rigorous))
            else:
                terms.append(_interval_mul_min(d_lo, d_hi, x_lo, x_hi, rigorous))
        if upper:
            step = torch.maximum(torch.maximum(terms[0], terms[1]), torch.zeros_like(g_hi))
            return up(g_hi + step) if rigorous else g_hi + step
        step = torch.minimum(torch.minimum(terms[0], terms[1]), torch.zeros_like(g_lo))
        return down(g_lo + step) if rigorous else g_lo + step

    def _tangent_point(self, a: Tensor) -> Tensor:
        """s ≥ 0 with σ'(s) ≈ a (0 above the largest slope, large for a ≤ 0); finite."""
        a = a.detach().clamp(min=1e-300, max=self.max_derivative)
        return self.derivative_inverse(a).nan_to_num(0.0, posinf=1e300).clamp(0, 1e300)

    def upper_intercept(self, a: Tensor, lower: Tensor, upper: Tensor, rigorous: bool = True) -> Tensor:
        """Convex part [ℓ, min(u,0)]: the larger end; concave part [max(ℓ,0), u]: the tangent bound of g at
        the point where σ' = a (clamped into the part), valid at any point by concavity."""
        a, lower, upper = _f64(a, lower, upper)
        ninf = torch.full_like(a, -math.inf)
        q, p = upper.clamp(max=0), lower.clamp(min=0)
        convex = torch.maximum(self._g(a, lower, rigorous)[1], self._g(a, q, rigorous)[1])
        t = torch.minimum(torch.maximum(self._tangent_point(a), p), upper)
        concave = self._tangent_bound(a, t, (p, upper), rigorous, upper=True)
        return torch.maximum(torch.where(lower <= 0, convex, ninf), torch.where(upper >= 0, concave, ninf))

    def lower_intercept(self, a: Tensor, lower: Tensor, upper: Tensor, rigorous: bool = True) -> Tensor:
        """Concave part: the smaller end; convex part: the tangent bound at σ' = a, x ≤ 0."""
        a, lower, upper = _f64(a, lower, upper)
        pinf = torch.full_like(a, math.inf)
        q, p = upper.clamp(max=0), lower.clamp(min=0)
        concave = torch.minimum(self._g(a, p, rigorous)[0], self._g(a, upper, rigorous)[0])
        t = torch.minimum(torch.maximum(-self._tangent_point(a), lower), q)
        convex = self._tangent_bound(a, t, (lower, q), rigorous, upper=False)
        return torch.minimum(torch.where(lower <= 0, convex, pinf), torch.where(upper >= 0, concave, pinf))

    # -- slopes ------------------------------------------------------------
    def _derivative(self, x: Tensor) -> Tensor:
        return self.derivative_bounds(x, rigorous=False)[0]

    def _chord(self, lower: Tensor, upper: Tensor) -> Tensor:
        width = upper - lower
        ok = width > 0
        rise = self.forward(upper) - self.forward(lower)
        return torch.where(ok, rise / torch.where(ok, width, torch.ones_like(width)), self._derivative(lower))

    def _upper_slope(self, lower: Tensor, upper: Tensor) -> Tensor:
        """CROWN's upper line: the chord on ẑ ≤ 0 (and where it is above σ), the tangent at the midpoint on
        ẑ ≥ 0, else the tangent at the d ∈ [0, u] whose tangent passes through (ℓ, σ(ℓ)) (bisection)."""
        chord = self._chord(lower, upper)
        mid = self._derivative((lower + upper) / 2)
        sig_l = self.forward(lower)
        # f(d) = σ(d) + σ'(d)(ℓ − d) − σ(ℓ) increases on d ≥ 0; the chord is an upper line iff f(u) ≤ 0.
        f = lambda d: self.forward(d) + self._derivative(d) * (lower - d) - sig_l  # noqa: E731
        lo, hi = torch.zeros_like(upper), upper.clamp(min=0)
        for _ in range(40):
            m = (lo + hi) / 2
            below = f(m) < 0
            lo, hi = torch.where(below, m, lo), torch.where(below, hi, m)
        crown = torch.where(f(upper.clamp(min=0)) <= 0, chord, self._derivative(hi))
        return torch.where(upper <= 0, chord, torch.where(lower >= 0, mid, crown))

    def default_slopes(self, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
        """Upper slope by :meth:`_upper_slope`; the lower one mirrored (σ(−ẑ) = c − σ(ẑ))."""
        with torch.no_grad():
            lo64, up64 = _f64(lower, upper)
            a_u = self._upper_slope(lo64, up64)
            a_l = self._upper_slope(-up64, -lo64)
        return a_l.to(lower.dtype), a_u.to(lower.dtype)

    def _slope_range(self, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
        """``[min σ', max σ']`` over [ℓ, u]: every useful slope lies within."""
        smallest = torch.minimum(self._derivative(lower), self._derivative(upper))
        largest = self._derivative(torch.minimum(torch.maximum(torch.zeros_like(lower), lower), upper))
        return smallest, largest

    def alpha_slopes(self, lower: Tensor, upper: Tensor, alpha: Tensor) -> tuple[Tensor, Tensor]:
        """One slope for both lines: ``min σ' + α (max σ' − min σ')`` over [ℓ, u] (only one line is used per
        unit and objective: the sign of ν̂ picks it)."""
        smallest, largest = (t.detach() for t in self._slope_range(lower, upper))
        a = smallest + alpha * (largest - smallest)
        return a, a

    def initial_alpha(self, lower: Tensor, upper: Tensor) -> Tensor:
        """α of the chord's slope."""
        smallest, largest = self._slope_range(lower, upper)
        span = largest - smallest
        ok = span > 0
        alpha = (self._chord(lower, upper) - smallest) / torch.where(ok, span, torch.ones_like(span))
        return torch.where(ok, alpha, torch.full_like(alpha, 0.5)).clamp(0, 1)


class Sigmoid(_SShaped):
    """``1 / (1 + e^{−ẑ})``; σ' = σ(ẑ)σ(−ẑ) ≤ 1/4."""

    name = "Sigmoid"
    max_derivative = 0.25

    def __eq__(self, other: object) -> bool:
        return type(other) is Sigmoid

    def __hash__(self) -> int:
        return hash("Sigmoid")

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(x)

    def to_torch(self) -> nn.Module:
        return nn.Sigmoid()

    def value_bounds(self, x: Tensor, rigorous: bool) -> tuple[Tensor, Tensor]:
        lo, hi = self._margin(torch.sigmoid(x), rigorous)
        return lo.clamp(0, 1), hi.clamp(0, 1)

    def derivative_bounds(self, x: Tensor, rigorous: bool) -> tuple[Tensor, Tensor]:
        p_lo, p_hi = self.value_bounds(x, rigorous)
        q_lo, q_hi = self.value_bounds(-x, rigorous)
        return _mul_down(p_lo, q_lo, rigorous).clamp(0, 0.25), _mul_up(p_hi, q_hi, rigorous).clamp(0, 0.25)

    def derivative_inverse(self, a: Tensor) -> Tensor:
        """σ(s) = p = (1 + √(1 − 4a))/2 and 1 − p = a/p, so s = log(p/(1 − p)) = 2 log p − log a."""
        p = (1 + torch.sqrt((1 - 4 * a).clamp(min=0))) / 2
        return 2 * torch.log(p) - torch.log(a)


class Tanh(_SShaped):
    """``tanh ẑ``; tanh' = 1 − tanh² = 4 σ(2ẑ) σ(−2ẑ) ≤ 1 (σ the sigmoid; the doubling is exact)."""

    name = "Tanh"
    max_derivative = 1.0

    def __eq__(self, other: object) -> bool:
        return type(other) is Tanh

    def __hash__(self) -> int:
        return hash("Tanh")

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x)

    def to_torch(self) -> nn.Module:
        return nn.Tanh()

    def value_bounds(self, x: Tensor, rigorous: bool) -> tuple[Tensor, Tensor]:
        lo, hi = self._margin(torch.tanh(x), rigorous)
        return lo.clamp(-1, 1), hi.clamp(-1, 1)

    def derivative_bounds(self, x: Tensor, rigorous: bool) -> tuple[Tensor, Tensor]:
        lo, hi = SIGMOID.derivative_bounds(2 * x, rigorous)
        return (4 * lo).clamp(0, 1), (4 * hi).clamp(0, 1)

    def derivative_inverse(self, a: Tensor) -> Tensor:
        """tanh(s) = t = √(1 − a) and 1 − t = a/(1 + t), so s = atanh t = log(1 + t) − ½ log a."""
        t = torch.sqrt((1 - a).clamp(min=0))
        return torch.log1p(t) - 0.5 * torch.log(a)


RELU = ReLU()
SIGMOID = Sigmoid()
TANH = Tanh()


def from_module(module: nn.Module) -> Activation | None:
    """The activation of a torch module (nn.ReLU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh), or None."""
    if isinstance(module, nn.ReLU):
        return RELU
    if isinstance(module, nn.LeakyReLU):
        return LeakyReLU(float(module.negative_slope))
    if isinstance(module, nn.Sigmoid):
        return SIGMOID
    if isinstance(module, nn.Tanh):
        return TANH
    return None


ACTIVATION_MODULES = (nn.ReLU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh)


# -- the relaxation as the bound methods read it -------------------------------------


@dataclass(frozen=True)
class LinearBounds:
    """``a_l ẑ + b_l ≤ σ(ẑ) ≤ a_u ẑ + b_u`` on [ℓ, u], per unit, in the dtype of the bounds."""

    a_l: Tensor
    b_l: Tensor
    a_u: Tensor
    b_u: Tensor


def linear_bounds(
    act: Activation, lower: Tensor, upper: Tensor, alpha: Tensor | None = None, *, rigorous: bool = True
) -> LinearBounds:
    """The lines of one layer: slopes (default or from α) in ℓ's dtype, then intercepts for exactly
    those slopes, computed in float64 and rounded outward into ℓ's dtype when rigorous."""
    a_l, a_u = act.default_slopes(lower, upper) if alpha is None else act.alpha_slopes(lower, upper, alpha)
    a_l, a_u = a_l.to(lower.dtype), a_u.to(lower.dtype)
    b_l = act.lower_intercept(a_l, lower, upper, rigorous)
    b_u = act.upper_intercept(a_u, lower, upper, rigorous)
    if rigorous:
        return LinearBounds(a_l, to_dtype_down(b_l, lower.dtype), a_u, to_dtype_up(b_u, lower.dtype))
    return LinearBounds(a_l, b_l.to(lower.dtype), a_u, b_u.to(lower.dtype))


def dual_step(act: Activation, nu_hat: Tensor, lower: Tensor, upper: Tensor, alpha: Tensor | None = None) -> Tensor:
    """ν from ν̂ (MATH.md §3 generalised): ``[ν̂]₊ a_u − [ν̂]₋ a_l``, the line each sign of ν̂ needs."""
    a_l, a_u = act.default_slopes(lower, upper) if alpha is None else act.alpha_slopes(lower, upper, alpha)
    return nu_hat.clamp(min=0) * a_u - (-nu_hat).clamp(min=0) * a_l


def graph_minimum(
    act: Activation, nu: Tensor, nu_hat: Tensor, lower: Tensor, upper: Tensor, *, rigorous: bool = True
) -> tuple[Tensor, Tensor]:
    """``min_{ẑ∈[ℓ,u]} ν ẑ − ν̂ σ(ẑ)`` bounded below, for ANY numbers ν, ν̂; and its magnitude.

    With ``a = ν/ν̂`` (any float) and the residual ``r = ν − ν̂ a``:
    ``ν ẑ − ν̂ σ(ẑ) = ν̂ (a ẑ − σ(ẑ)) + r ẑ ≥ −[ν̂]₊ b_u(a) + [ν̂]₋ b_l(a) + min(r ℓ, r u)``,
    which is Theorem 1's local term ``−[ν̂]₊ b_u + [ν̂]₋ b_l`` when ν came from
    :func:`dual_step`. Rigorous mode: b_u, b_l are rigorous; the products and
    r are rounded, which the magnitude ``(|ν| + |ν̂|)(|ℓ| + |u|) + |ν̂|(|b_l| + |b_u|)``
    covers (the caller subtracts ``γ_n`` times it, MATH.md §11). Returns
    (term, magnitude) in ν's dtype; the ν̂ = 0 units get ``min(ν ℓ, ν u)``.
    """
    zero = nu_hat == 0
    safe = torch.where(zero, torch.ones_like(nu_hat), nu_hat)
    a = torch.where(zero, torch.zeros_like(nu), nu / safe)
    r = nu - nu_hat * a
    shape = torch.broadcast_shapes(a.shape, lower.shape)
    lo, hi = lower.expand(shape), upper.expand(shape)
    b_u = act.upper_intercept(a, lo, hi, rigorous).to(nu.dtype)
    b_l = act.lower_intercept(a, lo, hi, rigorous).to(nu.dtype)
    pos, neg = nu_hat.clamp(min=0), (-nu_hat).clamp(min=0)
    term = -pos * b_u + neg * b_l + torch.minimum(r * lower, r * upper)
    magnitude = (nu.abs() + nu_hat.abs()) * (lower.abs() + upper.abs()) + nu_hat.abs() * (b_l.abs() + b_u.abs())
    return term, magnitude


__all__ = [
    "ACTIVATION_MODULES",
    "Activation",
    "LeakyReLU",
    "LinearBounds",
    "RELU",
    "ReLU",
    "SIGMOID",
    "Sigmoid",
    "TANH",
    "Tanh",
    "dual_step",
    "from_module",
    "graph_minimum",
    "linear_bounds",
]
