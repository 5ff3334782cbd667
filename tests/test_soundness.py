"""Soundness, judged exactly: tests built to break a verifier, not to pass (MATH.md §3, §6, §8, §11).

Every bound lpverify calls rigorous is a claim about the real-valued network
over the exact input set. The judge here evaluates the network in rational
arithmetic (``fractions.Fraction``), so no float rounding of the judge can
hide a violation:

* any point of the exact input set gives an upper bound on the true minimum
  of ``cᵀ f`` (MATH.md §6: ``J ≤ p* ≤ true min ≤ cᵀ f(any point)``);
* for one-dimensional inputs the true minimum itself is computed exactly
  (the network is piecewise linear; its breakpoints are found layer by layer);
* for networks that are affine on the box (every ReLU provably on or off),
  the true minimum is attained at a corner and computed exactly.

Margins are pushed to within 1e-9..1e-5 of zero, objectives and weights are
scaled over many orders of magnitude, and networks are built so that float32
rounding hides a negative margin (Jia & Rinard 2021). A certificate (Corollary
1) must never be issued where the exact margin is ≤ 0 somewhere in the set.

Radii and clamps mean the exact real number given. Most property tests pass
them as float64 tensors (``f64``) so that they probe the bounds themselves;
section 6 checks that Python floats (``eps=0.1``) mean the same thing.
"""

from __future__ import annotations

import itertools
import math
import random
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from torch import nn

import lpverify as lv

FAST = settings(max_examples=25, deadline=None, derandomize=True)
FEWER = settings(max_examples=15, deadline=None, derandomize=True)

# ----------------------------------------------------------------------------------------------
# The exact judge: nn.Sequential of Linear / Conv2d / Flatten / ReLU in rational arithmetic.
# ----------------------------------------------------------------------------------------------


def _fractions(t: torch.Tensor) -> list[Fraction]:
    """Every entry of t as an exact rational (float16/bfloat16/float32/float64 are exact in float64)."""
    return [Fraction(v) for v in t.detach().cpu().to(torch.float64).flatten().tolist()]


class ExactNet:
    """A torch ReLU network evaluated in exact rational arithmetic, independent of lpverify's code.

    ``pre_activations(point)`` returns the outputs of every group of consecutive
    affine modules (the hidden pre-activations ẑ_2..ẑ_{k-1}, then the logits),
    each as a flat C-order list, matching ``Bounds.lower[i].flatten(1)``.
    """

    def __init__(self, model: nn.Module, input_shape: tuple[int, ...]):
        modules = list(model) if isinstance(model, nn.Sequential) else [model]
        self.groups: list[list[tuple]] = [[]]
        shape = tuple(input_shape)
        for m in modules:
            if isinstance(m, nn.ReLU):
                self.groups.append([])
            elif isinstance(m, nn.Linear):
                w = _fractions(m.weight)
                b = _fractions(m.bias) if m.bias is not None else [Fraction(0)] * m.out_features
                self.groups[-1].append(("linear", w, b, m.in_features, m.out_features))
                shape = (m.out_features,)
            elif isinstance(m, nn.Flatten):
                shape = (math.prod(shape),)
            elif isinstance(m, nn.Conv2d):
                c_out, c_in, kh, kw = m.weight.shape
                _, h, wd = shape
                sh, sw = m.stride
                ph, pw = m.padding
                oh, ow = (h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1
                w = _fractions(m.weight)
                b = _fractions(m.bias) if m.bias is not None else [Fraction(0)] * c_out
                self.groups[-1].append(("conv", w, b, (c_out, c_in, kh, kw), (c_in, h, wd), (oh, ow), (sh, sw), (ph, pw)))
                shape = (c_out, oh, ow)
            else:
                raise TypeError(f"the judge does not evaluate {m}")
        self.input_shape = tuple(input_shape)

    @staticmethod
    def _apply(op: tuple, z: list[Fraction]) -> list[Fraction]:
        if op[0] == "linear":
            _, w, b, n_in, n_out = op
            return [sum((w[i * n_in + j] * z[j] for j in range(n_in)), b[i]) for i in range(n_out)]
        _, w, b, (c_out, c_in, kh, kw), (_, h, wd), (oh, ow), (sh, sw), (ph, pw) = op
        out = []
        for co in range(c_out):
            for yo in range(oh):
                for xo in range(ow):
                    acc = b[co]
                    for ci in range(c_in):
                        for ki in range(kh):
                            yi = yo * sh - ph + ki
                            if not 0 <= yi < h:
                                continue
                            for kj in range(kw):
                                xi = xo * sw - pw + kj
                                if 0 <= xi < wd:
                                    acc += w[((co * c_in + ci) * kh + ki) * kw + kj] * z[(ci * h + yi) * wd + xi]
                    out.append(acc)
        return out

    def pre_activations(self, point: list[Fraction]) -> list[list[Fraction]]:
        z = list(point)
        out = []
        for i, group in enumerate(self.groups):
            if i > 0:
                z = [v if v > 0 else Fraction(0) for v in z]
            for op in group:
                z = self._apply(op, z)
            out.append(z)
        return out

    def logits(self, point: list[Fraction]) -> list[Fraction]:
        return self.pre_activations(point)[-1]

    def objective(self, c: list[Fraction], point: list[Fraction]) -> Fraction:
        return sum((ci * fi for ci, fi in zip(c, self.logits(point))), Fraction(0))

    # -- exact minima -------------------------------------------------------------------------

    def breakpoints_1d(self, lo: Fraction, hi: Fraction) -> list[Fraction]:
        """All points of [lo, hi] where some unit changes sign, plus the ends (one input only).

        Layer by layer: between consecutive known breakpoints every earlier unit
        has a constant sign, so the next layer's pre-activations are affine
        there and each crosses zero at most once, at a point found exactly.
        Between the returned points the whole network is affine.
        """
        assert math.prod(self.input_shape) == 1
        points = sorted({lo, hi})
        for layer in range(len(self.groups) - 1):
            values = [self.pre_activations([p])[layer] for p in points]
            new = set(points)
            for (a, va), (b, vb) in zip(zip(points, values), zip(points[1:], values[1:])):
                for ua, ub in zip(va, vb):
                    if (ua < 0 < ub) or (ub < 0 < ua):
                        new.add(a + (b - a) * ua / (ua - ub))
            points = sorted(new)
        return points

    def min_1d(self, c: list[Fraction], lo: Fraction, hi: Fraction) -> Fraction:
        """The exact ``min_{z∈[lo,hi]} cᵀ f(z)`` of a one-input network."""
        return min(self.objective(c, [p]) for p in self.breakpoints_1d(lo, hi))

    def affine_on_box(self, lo: list[Fraction], hi: list[Fraction]) -> bool:
        """Whether no hidden unit changes sign on the box (then the network is affine there).

        Checked at the corners, layer by layer: if every unit of the earlier
        layers keeps its sign, the next layer is affine on the box and its sign
        at the corners decides its sign everywhere.
        """
        corners = list(itertools.product(*[sorted({a, b}) for a, b in zip(lo, hi)]))
        if len(corners) > 256:
            return False  # too many to check: treated as not known to be affine
        pre = [self.pre_activations(list(p)) for p in corners]
        for layer in range(len(self.groups) - 1):
            for unit in range(len(pre[0][layer])):
                vals = [p[layer][unit] for p in pre]
                if min(vals) < 0 < max(vals):
                    return False
        return True

    def min_affine_box(self, c: list[Fraction], lo: list[Fraction], hi: list[Fraction]) -> Fraction:
        """The exact minimum over the box of a network that is affine there (checked)."""
        assert self.affine_on_box(lo, hi)
        return min(self.objective(c, list(p)) for p in itertools.product(*[sorted({a, b}) for a, b in zip(lo, hi)]))


def exact_box(x: torch.Tensor, eps: float, lower=None, upper=None) -> tuple[list[Fraction], list[Fraction]]:
    """The exact l_inf box of one example: ``[max(x − ε, lower), min(x + ε, upper)]`` in rationals."""
    xs, e = _fractions(x), Fraction(float(eps))
    lo = [v - e for v in xs]
    hi = [v + e for v in xs]
    if lower is not None:
        lo = [max(a, Fraction(float(lower))) for a in lo]
    if upper is not None:
        hi = [min(a, Fraction(float(upper))) for a in hi]
    return lo, hi


def box_points(lo: list[Fraction], hi: list[Fraction], n_random: int, rng: random.Random) -> list[list[Fraction]]:
    """All corners (up to 2⁶ of them) and n_random rational points of the box."""
    pts = []
    if len(lo) <= 6:
        pts += [list(p) for p in itertools.product(*zip(lo, hi))]
    else:
        for _ in range(32):
            pts.append([a if rng.random() < 0.5 else b for a, b in zip(lo, hi)])
    for _ in range(n_random):
        pts.append([a + (b - a) * Fraction(rng.randint(0, 1000), 1000) for a, b in zip(lo, hi)])
    return pts


def f64(v):
    """A radius or clamp as a float64 tensor: the exact value meant, whatever the library does with Python floats.

    The property tests pass radii this way so that they probe the bounds, not the parsing of
    arguments; the Python-float path has tests of its own (section 6).
    """
    return None if v is None else torch.tensor(float(v), dtype=torch.float64)


def make_mlp(layers: list[tuple[np.ndarray, np.ndarray]], dtype: torch.dtype = torch.float32) -> nn.Sequential:
    """nn.Sequential of Linear/ReLU with the given float64 weights rounded to dtype (the judge reads the rounded ones)."""
    mods: list[nn.Module] = []
    for i, (w, b) in enumerate(layers):
        lin = nn.Linear(w.shape[1], w.shape[0], dtype=dtype)  # the float64 values rounded once, to dtype
        with torch.no_grad():
            lin.weight.copy_(torch.as_tensor(np.asarray(w, dtype=np.float64)))
            lin.bias.copy_(torch.as_tensor(np.asarray(b, dtype=np.float64)))
        mods.append(lin)
        if i < len(layers) - 1:
            mods.append(nn.ReLU())
    model = nn.Sequential(*mods)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def random_layers(widths: list[int], rng: np.random.Generator, bias: float = 0.5) -> list[tuple[np.ndarray, np.ndarray]]:
    return [
        (rng.standard_normal((b, a)) / math.sqrt(a), rng.standard_normal(b) * bias)
        for a, b in zip(widths, widths[1:])
    ]


def set_output_bias(model: nn.Sequential, index: int, value: float) -> None:
    last = [m for m in model if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        last.bias[index] = value


def margin_c(n_out: int, y: int, j: int) -> list[Fraction]:
    c = [Fraction(0)] * n_out
    c[y] += 1
    c[j] -= 1
    return c


def fraction_le(value: float, exact: Fraction) -> bool:
    """``value ≤ exact`` decided exactly; NaN is never ≤ anything."""
    return not math.isnan(value) and Fraction(value) <= exact


def all_bounds_and_objectives(net: lv.Network, ball, c: torch.Tensor) -> tuple[dict[str, torch.Tensor], lv.Bounds]:
    """Every rigorous lower bound lpverify offers for c over the ball, (batch, m) each, float64; and the dual bounds."""
    dual = lv.dual_bounds(net, ball)
    interval = lv.interval_bounds(net, ball)
    out = {
        "dual_objective(dual_bounds)": lv.dual_objective(net, ball, c, dual),
        "dual_objective(interval_bounds)": lv.dual_objective(net, ball, c, interval),
        "interval_objective": lv.interval_objective(net, ball, c),
        "optimize_alpha": lv.optimize_alpha(net, ball, c, dual, steps=5),
    }
    return {k: v.double() for k, v in out.items()}, dual


MAIN = "dual_objective(dual_bounds)"


def judge_min(judge: ExactNet, c: list[Fraction], lo: list[Fraction], hi: list[Fraction], rng: random.Random) -> tuple[Fraction, bool]:
    """The exact min of cᵀf over the box where it can be computed (one input, or affine on the box), else
    the least value at the corners and some random points: an upper bound on the min. Returns (value, exact)."""
    if len(lo) == 1:
        return judge.min_1d(c, lo[0], hi[0]), True
    if judge.affine_on_box(lo, hi):
        return judge.min_affine_box(c, lo, hi), True
    return min(judge.objective(c, p) for p in box_points(lo, hi, 16, rng)), False


def check_bounds_contain(bounds: lv.Bounds, judge: ExactNet, points_per_example: list[list[list[Fraction]]], what: str):
    """``lower ≤ ẑ ≤ upper`` at every given exact point, compared in rationals.

    An infinite bound holds trivially; a NaN bound claims nothing (the objectives then give NaN, never a number).
    """

    def rationals(t: torch.Tensor, missing: float) -> list:
        return [Fraction(v) if math.isfinite(v) else (missing if math.isnan(v) else v) for v in t.double().flatten().tolist()]

    for b, points in enumerate(points_per_example):
        lows = [rationals(t[b], -math.inf) for t in bounds.lower]
        highs = [rationals(t[b], math.inf) for t in bounds.upper]
        for p in points:
            for layer, z in enumerate(judge.pre_activations(p)):
                for unit, v in enumerate(z):
                    assert lows[layer][unit] <= v <= highs[layer][unit], (
                        f"{what}: layer {layer} unit {unit} at point {[float(q) for q in p]}: exact {float(v)!r} "
                        f"outside [{float(lows[layer][unit])!r}, {float(highs[layer][unit])!r}]"
                    )


# ----------------------------------------------------------------------------------------------
# 1. Margins within 1e-9..1e-5 of zero, judged exactly.
# ----------------------------------------------------------------------------------------------

TARGETS = st.builds(
    lambda sign, exponent: sign * 10.0**exponent,
    st.sampled_from([-1.0, 1.0]),
    st.floats(-9.0, -5.0),
) | st.just(0.0)
EPSILONS = [0.0, 1e-7, 1e-3, 0.1, 1 / 3, 0.5]


def _tune_margin(model: nn.Sequential, input_shape: tuple[int, ...], minimum, target: float) -> Fraction:
    """Set the output bias b_0 (in the model's dtype) so that the exact min of f_0 − f_1 lands near ``target``.

    ``minimum(judge)`` computes the min with a judge of the current weights; returns the min after tuning.
    """
    set_output_bias(model, 0, 0.0)
    g = minimum(ExactNet(model, input_shape))
    set_output_bias(model, 0, float(Fraction(target) - g))
    return minimum(ExactNet(model, input_shape))


def _assert_sound_margin(model, net, x, eps, exact_min: Fraction, lower=None, upper=None):
    """Every rigorous bound on f_0 − f_1 is ≤ the exact min; certify(y=0) never claims a min ≤ 0."""
    ball = lv.LinfBall(x, f64(eps), f64(lower), f64(upper))
    c = torch.tensor([[[1.0, -1.0]]])
    bounds, dual = all_bounds_and_objectives(net, ball, c)
    for name, J in bounds.items():
        value = float(J[0, 0])
        if bool(dual.finite()[0]) and name == MAIN:
            assert not math.isnan(value), f"{name} is NaN although the bounds are finite"
        assert math.isnan(value) or fraction_le(value, exact_min), (
            f"{name} = {value!r} exceeds the exact minimum {float(exact_min)!r} ({exact_min}) "
            f"of f_0 - f_1 over x={x.tolist()} ± {eps}"
        )
    cert = lv.certify(model, x, torch.tensor([0]), f64(eps), lower=f64(lower), upper=f64(upper))
    if exact_min <= 0:
        assert not bool(cert[0]), (
            f"certified class 0 although the exact minimum margin f_0 - f_1 over x={x.tolist()} ± {eps} "
            f"is {float(exact_min)!r} <= 0"
        )
    margins = lv.margin_bounds(net, ball, torch.tensor([0]))
    assert fraction_le(float(margins[0, 1]), exact_min) or math.isnan(float(margins[0, 1]))
    return bool(cert[0]), bounds


def _affine_piece_case(n_in, hidden, on, slack, out_exponent, target, eps, seed, dynamic_range=0.0):
    """A net whose every ReLU is on or off over the box (biases placed by interval reasoning), margin tuned."""
    rng = np.random.default_rng(seed)
    x = torch.tensor(rng.uniform(-1, 1, (1, n_in)), dtype=torch.float32)
    layers = random_layers([n_in, *hidden, 2], rng)
    if dynamic_range:  # entries spread over 10^±dynamic_range: small terms next to huge ones
        layers = [(w * 10.0 ** rng.uniform(-dynamic_range, dynamic_range, w.shape), b) for w, b in layers]
    # Biases that keep each hidden unit on (or off) over the box: |Wz| ≤ Σ|W| max|z|, z from the layer before.
    zmax = np.abs(x.double().numpy()[0]) + eps
    for k, (w, b) in enumerate(layers[:-1]):
        reach = np.abs(w) @ zmax
        signs = np.array([1.0 if on[(k * 4 + j) % len(on)] else -1.0 for j in range(w.shape[0])])
        b[:] = signs * (reach * slack + 1e-3)
        zmax = np.where(signs > 0, reach + b, 0.0) * 1.01
    layers[-1] = (layers[-1][0] * 10.0**out_exponent, np.zeros(2))
    model = make_mlp(layers)
    judge = ExactNet(model, (n_in,))
    lo, hi = exact_box(x[0], eps)
    affine = judge.affine_on_box(lo, hi)
    exact_min = _tune_margin(model, (n_in,), lambda j: judge_min(j, margin_c(2, 0, 1), lo, hi, random.Random(seed))[0], target)
    net = lv.Network.from_torch(model)
    certified, bounds = _assert_sound_margin(model, net, x, eps, exact_min)
    if not affine:
        return
    # Not vacuous: on an affine piece J is the true min up to the rounding allowance (MATH.md §4).
    J = float(bounds[MAIN][0, 0])
    scale = sum(abs(v) for v in _fractions(model[-1].weight)) * 10 + 1
    assert math.isfinite(J) and Fraction(J) >= exact_min - Fraction(float(scale)) * Fraction(1, 10**4), (J, float(exact_min))
    with torch.no_grad():
        logits = model(x)[0]  # certify also asks for a strict prediction in the model's own dtype
    if slack >= 1.01 and exact_min > Fraction(1, 10**7) and logits[0] > logits[1]:
        # Units far from their kinks, margin ≥ 1e-7: the float64 re-check leaves an allowance ~1e-16, so this certifies.
        assert certified, f"not certified although the exact min margin is {float(exact_min)!r} and J = {J!r}"


@FAST
@given(
    n_in=st.integers(1, 3),
    hidden=st.lists(st.integers(2, 4), min_size=1, max_size=2),
    on=st.lists(st.booleans(), min_size=8, max_size=8),
    slack=st.sampled_from([1.0 + 1e-6, 1.01, 2.0]),
    out_exponent=st.sampled_from([-4, -3, -2, 0]),
    target=TARGETS,
    eps=st.sampled_from(EPSILONS),
    seed=st.integers(0, 2**20),
)
def test_near_zero_margin_on_an_affine_piece_is_never_overclaimed(n_in, hidden, on, slack, out_exponent, target, eps, seed):
    """Every ReLU provably on or off over the box: the exact min is at a corner; margin tuned to ±1e-9..1e-5."""
    _affine_piece_case(n_in, hidden, on, slack, out_exponent, target, eps, seed)


@settings(max_examples=10, deadline=None, derandomize=True)
@given(
    n_in=st.integers(1, 2),
    width=st.sampled_from([64, 200, 400]),
    on=st.lists(st.booleans(), min_size=5, max_size=5),
    out_exponent=st.sampled_from([-3, 0]),
    target=TARGETS,
    eps=st.sampled_from([0.0, 1e-3, 0.1]),
    seed=st.integers(0, 2**20),
)
def test_near_zero_margin_of_a_wide_layer_with_a_large_dynamic_range(n_in, width, on, out_exponent, target, eps, seed):
    """Hundreds of products of sizes 1e-5..1e5 summed: the rounding allowance γ_n must count all of them."""
    _affine_piece_case(n_in, [width], on, 1.01, out_exponent, target, eps, seed, dynamic_range=5.0)


@FAST
@given(
    hidden=st.lists(st.integers(2, 4), min_size=1, max_size=3),
    out_exponent=st.sampled_from([-4, -2, 0]),
    target=TARGETS,
    eps=st.sampled_from(EPSILONS + [1.0]),
    seed=st.integers(0, 2**20),
)
def test_near_zero_margin_of_a_one_input_network_judged_by_its_exact_minimum(hidden, out_exponent, target, eps, seed):
    """Any one-input ReLU net (units do cross zero): the exact min comes from its breakpoints."""
    rng = np.random.default_rng(seed)
    x = torch.tensor(rng.uniform(-1, 1, (1, 1)), dtype=torch.float32)
    layers = random_layers([1, *hidden, 2], rng)
    layers[-1] = (layers[-1][0] * 10.0**out_exponent, np.zeros(2))
    model = make_mlp(layers)
    (lo,), (hi,) = exact_box(x[0], eps)
    exact_min = _tune_margin(model, (1,), lambda j: j.min_1d(margin_c(2, 0, 1), lo, hi), target)
    _assert_sound_margin(model, lv.Network.from_torch(model), x, eps, exact_min)


@FEWER
@given(
    hidden=st.lists(st.integers(2, 4), min_size=1, max_size=2),
    target=TARGETS,
    clamp=st.sampled_from([(0.0, 1.0), (0.1, 0.7), (1 / 3, 2 / 3)]),
    eps=st.sampled_from([0.1, 1 / 3, 1.0]),
    seed=st.integers(0, 2**20),
)
def test_near_zero_margin_with_a_clamped_box(hidden, target, clamp, eps, seed):
    """The clamp [lower, upper] (not float32-representable) enters the exact set; the judge uses it exactly."""
    rng = np.random.default_rng(seed)
    x = torch.tensor(rng.uniform(*clamp, (1, 1)), dtype=torch.float32)  # inside the clamp: the set is not empty
    layers = random_layers([1, *hidden, 2], rng)
    layers[-1] = (layers[-1][0] * 1e-3, np.zeros(2))
    model = make_mlp(layers)
    (lo,), (hi,) = exact_box(x[0], eps, *clamp)
    exact_min = _tune_margin(model, (1,), lambda j: j.min_1d(margin_c(2, 0, 1), lo, hi), target)
    _assert_sound_margin(model, lv.Network.from_torch(model), x, eps, exact_min, *clamp)


# ----------------------------------------------------------------------------------------------
# 2. Objective scalings 1e-12..1e12 and weight scalings 1e-8..1e8.
# ----------------------------------------------------------------------------------------------


@FAST
@given(
    n_in=st.integers(1, 3),
    hidden=st.lists(st.integers(2, 4), min_size=0, max_size=2),
    weight_exponents=st.lists(st.integers(-8, 8), min_size=3, max_size=3),
    c_exponent=st.integers(-12, 12),
    eps=st.sampled_from([0.0, 1e-6, 0.05, 0.3, 1.0]),
    x_dtype=st.sampled_from([torch.float32, torch.float64]),
    model_dtype=st.sampled_from([torch.float32, torch.float32, torch.float64]),
    seed=st.integers(0, 2**20),
)
def test_scaled_objectives_and_weights_stay_below_every_exact_point_value(
    n_in, hidden, weight_exponents, c_exponent, eps, x_dtype, model_dtype, seed
):
    rng = np.random.default_rng(seed)
    layers = random_layers([n_in, *hidden, 3], rng)
    layers = [(w * 10.0**k, b * 10.0**sum(weight_exponents[: i + 1])) for i, ((w, b), k) in enumerate(zip(layers, weight_exponents))]
    model = make_mlp(layers, model_dtype)
    net = lv.Network.from_torch(model)
    judge = ExactNet(model, (n_in,))
    x = torch.tensor(rng.uniform(-1, 1, (2, n_in)), dtype=x_dtype)
    ball = lv.LinfBall(x, f64(eps))
    c64 = torch.tensor(rng.standard_normal((2, 2, 3))) * 10.0**c_exponent
    c = c64.float()  # the objective actually passed (float32): the judge uses these exact values
    bounds, dual = all_bounds_and_objectives(net, ball, c)
    pyrng = random.Random(seed)
    points = []
    for b in range(2):
        lo, hi = exact_box(x[b], eps)
        points.append(box_points(lo, hi, 6, pyrng))
        for m in range(2):
            cf = _fractions(c[b, m])
            if n_in == 1:
                true_min = judge.min_1d(cf, lo[0], hi[0])
            else:
                true_min = min(judge.objective(cf, p) for p in points[-1])  # ≥ the true min
            for name, J in bounds.items():
                value = float(J[b, m])
                if math.isnan(value):
                    assert not bool(dual.finite()[b]) or name != MAIN, f"{name} NaN with finite bounds"
                    continue
                assert Fraction(value) <= true_min, (
                    f"{name} = {value!r} > exact value {float(true_min)!r} (objective row {m} of example {b}, "
                    f"weight exponents {weight_exponents}, c exponent {c_exponent}, eps {eps})"
                )
    check_bounds_contain(dual, judge, points, "dual_bounds")
    check_bounds_contain(lv.interval_bounds(net, ball), judge, points, "interval_bounds")
    # Certificates for the scaled network: never where some point's exact margin is ≤ 0.
    y = torch.tensor([0, 2])
    cert = lv.certify(model, x, y, f64(eps))
    for b in range(2):
        if cert[b]:
            for p in points[b]:
                f = judge.logits(p)
                assert all(f[int(y[b])] > f[j] for j in range(3) if j != int(y[b])), (
                    f"certified example {b} (label {int(y[b])}) but the exact logits at {[float(q) for q in p]} "
                    f"are {[float(v) for v in f]}"
                )


@FEWER
@given(
    scale_exponent=st.sampled_from([-20, -16, -13, 11, 12]),
    eps=st.sampled_from([0.0, 1e-3, 0.25]),
    seed=st.integers(0, 2**20),
)
def test_extreme_weight_scales_near_float32_underflow_and_overflow(scale_exponent, eps, seed):
    """Three layers scaled by 1e-20..1e12: values underflow to float32 subnormals and zero, or reach 1e36 near its max."""
    rng = np.random.default_rng(seed)
    layers = [(w * 10.0**scale_exponent, b * 10.0 ** (scale_exponent * (i + 1))) for i, (w, b) in enumerate(random_layers([1, 3, 3, 2], rng))]
    model = make_mlp(layers)
    judge = ExactNet(model, (1,))
    x = torch.tensor(rng.uniform(-1, 1, (1, 1)), dtype=torch.float32)
    (lo,), (hi,) = exact_box(x[0], eps)
    c = margin_c(2, 0, 1)
    exact_min = judge.min_1d(c, lo, hi)
    net = lv.Network.from_torch(model)
    bounds, dual = all_bounds_and_objectives(net, lv.LinfBall(x, f64(eps)), torch.tensor([[[1.0, -1.0]]]))
    for name, J in bounds.items():
        value = float(J[0, 0])
        assert math.isnan(value) or Fraction(value) <= exact_min, (name, value, float(exact_min))
    cert = bool(lv.certify(model, x, torch.tensor([0]), f64(eps))[0])
    assert not (cert and exact_min <= 0), f"certified with exact min margin {float(exact_min)!r}"


@FAST
@given(
    n_in=st.integers(1, 3),
    x_exponent=st.sampled_from([-40, -39, -38, -30, 0, 30, 38]),
    eps=st.sampled_from([0.0, 1e-45, 1e-44, 1e-40, 1e-38, 1e-30, 1e-3]),
    relative=st.booleans(),
    clamp=st.sampled_from([None, (0.0, None), (-1e-39, 1e-39)]),
    weight_scale=st.sampled_from([1e-20, 1.0, 1e20]),
    bias_scale=st.sampled_from([0.0, 1e-40, 1.0]),
    seed=st.integers(0, 2**20),
)
def test_subnormal_and_huge_centres_radii_and_weights(n_in, x_exponent, eps, relative, clamp, weight_scale, bias_scale, seed):
    """Centres and radii from float32 subnormals (1e-45) to 1e38, weights 1e±20: boxes, bounds and objectives hold."""
    rng = np.random.default_rng(seed)
    eps = eps * (10.0**x_exponent if relative else 1.0)
    x = torch.tensor(rng.uniform(-1, 1, (2, n_in)) * 10.0**x_exponent, dtype=torch.float32)
    limits = clamp or (None, None)
    try:
        ball = lv.LinfBall(x, f64(eps), f64(limits[0]), f64(limits[1]))
    except ValueError as err:  # only an empty clamped set may be refused
        assert "empty" in str(err)
        return
    layers = [(w * weight_scale, b * bias_scale) for w, b in random_layers([n_in, 3, 2], rng)]
    model = make_mlp(layers)
    judge = ExactNet(model, (n_in,))
    net = lv.Network.from_torch(model)
    points = []
    for b in range(2):
        lo, hi = exact_box(x[b], eps, *limits)
        for i in range(n_in):
            assert Fraction(float(ball.lo[b, i])) <= lo[i] and Fraction(float(ball.hi[b, i])) >= hi[i]
            mid, rad = Fraction(float(ball.mid[b, i])), Fraction(float(ball.rad[b, i]))
            assert mid - rad <= lo[i] and mid + rad >= hi[i], (float(mid), float(rad), float(lo[i]), float(hi[i]))
        points.append(box_points(lo, hi, 4, random.Random(seed)))
    check_bounds_contain(lv.dual_bounds(net, ball), judge, points, "dual_bounds")
    check_bounds_contain(lv.interval_bounds(net, ball), judge, points, "interval_bounds")
    c = torch.tensor([[[1.0, -1.0]], [[-1.0, 1.0]]])
    objectives, _ = all_bounds_and_objectives(net, ball, c)
    cert = lv.certify(net, x, torch.tensor([0, 1]), f64(eps), lower=f64(limits[0]), upper=f64(limits[1]))
    for b in range(2):
        values = [judge.objective(_fractions(c[b, 0]), p) for p in points[b]]
        for name, J in objectives.items():
            value = float(J[b, 0])
            assert math.isnan(value) or Fraction(value) <= min(values), (name, value, float(min(values)))
        assert not (bool(cert[b]) and min(values) <= 0), f"certified example {b} with an exact margin {float(min(values))!r}"


# ----------------------------------------------------------------------------------------------
# 3. Floating-point-adversarial networks (Jia & Rinard 2021; Zombori et al. 2021).
# ----------------------------------------------------------------------------------------------


def _two_path_model(big_exponent: int, c_frac: float, delta_frac: float) -> tuple[nn.Sequential, float, float]:
    """f_0 − f_1 = relu(B x) − relu(B x + c) + δ: exactly δ − c on x > 0, but float32 rounds B x + c to B x."""
    big = 2.0**big_exponent
    c = 2.0 ** (big_exponent - 25) * c_frac  # below half an ulp of B in float32
    delta = c * delta_frac
    layers = [
        (np.array([[big], [big]]), np.array([0.0, c])),
        (np.array([[1.0, -1.0], [0.0, 0.0]]), np.array([delta, 0.0])),
    ]
    return make_mlp(layers), c, delta


@FAST
@given(
    big_exponent=st.integers(10, 60),
    c_frac=st.floats(0.05, 0.95),
    delta_frac=st.floats(0.01, 2.0),
    eps=st.sampled_from([0.0, 2.0**-30, 1e-9, 1e-4]),
)
def test_rounding_that_hides_a_negative_margin_is_not_certified(big_exponent, c_frac, delta_frac, eps):
    model, c, delta = _two_path_model(big_exponent, c_frac, delta_frac)
    x = torch.tensor([[1.0]])
    judge = ExactNet(model, (1,))
    (lo,), (hi,) = exact_box(x[0], eps)
    exact_min = judge.min_1d(margin_c(2, 0, 1), lo, hi)
    assert exact_min == Fraction(float(model[-1].bias[0])) - Fraction(float(model[0].bias[1]))  # δ − c exactly
    _assert_sound_margin(model, lv.Network.from_torch(model), x, eps, exact_min)


def test_the_two_path_construction_really_fools_float32_evaluation():
    """The premise of the test above: float32 says margin δ > 0 where the exact margin is δ − c < 0."""
    model, c, delta = _two_path_model(30, 0.5, 0.5)
    x = torch.tensor([[1.0]])
    with torch.no_grad():
        f = model(x)[0]
    assert float(f[0] - f[1]) > 0
    assert Fraction(delta) - Fraction(c) < 0
    assert not bool(lv.certify(model, x, torch.tensor([0]), 0.0)[0])
    assert not bool(lv.certify(model, x, torch.tensor([0]), 1e-6)[0])


@pytest.mark.parametrize("big_exponent, c_frac, delta_frac", [(24, 0.9, 0.5), (30, 0.5, 0.99), (40, 0.3, 0.1), (12, 0.7, 1.5)])
@pytest.mark.parametrize("eps", [0.0, 1e-9])
def test_every_verification_method_on_the_two_path_network(big_exponent, c_frac, delta_frac, eps):
    """The Jia & Rinard trap for complete verifiers: LP, LP-all and MILP included."""
    model, c, delta = _two_path_model(big_exponent, c_frac, delta_frac)
    net = lv.Network.from_torch(model)
    x = torch.tensor([[1.0]])
    (lo,), (hi,) = exact_box(x[0], eps)
    exact_min = ExactNet(model, (1,)).min_1d(margin_c(2, 0, 1), lo, hi)
    ball = lv.LinfBall(x, f64(eps))
    for method in lv.METHODS:
        verdict = lv.verify(net, ball, torch.tensor([[[1.0, -1.0]]]), method=method)[0]
        assert verdict.status != "verified" or exact_min > 0, (
            f"{method} verified f_0 - f_1 > 0 although its exact minimum is {float(exact_min)!r}"
        )
        if not math.isnan(verdict.bound):
            assert Fraction(verdict.bound) <= exact_min, (method, verdict.bound, float(exact_min))


@FAST
@given(
    big_exponent=st.integers(8, 40),
    n_pairs=st.integers(1, 6),
    k_frac=st.floats(0.1, 10.0),
    delta_frac=st.floats(0.01, 0.99),
    eps=st.sampled_from([0.0, 1e-12, 1e-6]),
    seed=st.integers(0, 2**20),
)
def test_a_unit_whose_positive_preactivation_rounds_to_zero(big_exponent, n_pairs, k_frac, delta_frac, eps, seed):
    """ẑ = Σ (B x_a − B x_b) + c x_c with c below float32's resolution of B: exactly c > 0, in float32 often 0.

    The unit is on; a verifier that trusts the float value treats it as off and
    drops the −K·h term from the margin f_0 − f_1 = δ − K h (δ < K c: negative).
    """
    rng = np.random.default_rng(seed)
    big = 2.0**big_exponent
    small = 2.0 ** (big_exponent - 26)
    n_in = 2 * n_pairs + 1
    w = np.zeros((1, n_in))
    order = rng.permutation(n_in)  # the small term sits anywhere in the summation order
    for p in range(n_pairs):
        w[0, order[2 * p]], w[0, order[2 * p + 1]] = big, -big
    w[0, order[-1]] = small
    k = k_frac
    delta = float(np.float32(k * small * delta_frac))
    layers = [(w, np.zeros(1)), (np.array([[-k], [0.0]]), np.array([delta, 0.0]))]
    model = make_mlp(layers)
    judge = ExactNet(model, (n_in,))
    x = torch.ones(1, n_in)
    lo, hi = exact_box(x[0], eps)
    exact_min, _ = judge_min(judge, margin_c(2, 0, 1), lo, hi, random.Random(seed))  # an upper bound if the unit crosses
    if eps == 0.0:
        assert exact_min < 0  # δ − K c < 0 by construction
    _assert_sound_margin(model, lv.Network.from_torch(model), x, eps, exact_min)


@FAST
@given(
    big_exponent=st.integers(4, 30),
    ulps=st.integers(1, 4),
    delta_frac=st.floats(-2.0, 2.0),
    eps=st.sampled_from([0.0, 1e-7, 1e-3, 0.1]),
    x0=st.sampled_from([0.5, 1.0, 0.7, 3.0]),
)
def test_huge_weights_cancelling_to_a_tiny_difference(big_exponent, ulps, delta_frac, eps, x0):
    """f_0 − f_1 = B relu(a x) − B relu(a' x) + δ with a, a' a few float32 ulps apart: a tiny path under a huge one."""
    a = np.float32(0.75)
    a2 = a
    for _ in range(ulps):
        a2 = np.nextafter(a2, np.float32(2.0), dtype=np.float32)
    big = 2.0**big_exponent
    diff = big * (float(a2) - float(a)) * x0  # the exact scale of the cancellation at x0
    delta = float(np.float32(diff * delta_frac))
    layers = [
        (np.array([[float(a)], [float(a2)]]), np.zeros(2)),
        (np.array([[-big, big], [0.0, 0.0]]), np.array([0.0, 0.0])),
    ]
    model = make_mlp(layers)
    set_output_bias(model, 0, delta)
    judge = ExactNet(model, (1,))
    x = torch.tensor([[x0]])
    (lo,), (hi,) = exact_box(x[0], eps)
    exact_min = judge.min_1d(margin_c(2, 0, 1), lo, hi)
    _assert_sound_margin(model, lv.Network.from_torch(model), x, eps, exact_min)


# ----------------------------------------------------------------------------------------------
# 4. Dead and constant networks; ties.
# ----------------------------------------------------------------------------------------------


@FAST
@given(
    n_in=st.integers(1, 5),
    hidden=st.lists(st.integers(2, 6), min_size=1, max_size=3),
    n_out=st.integers(2, 4),
    eps=st.sampled_from([0.0, 1e-6, 0.1, 1.0]),
    bias=st.sampled_from([0.0, 0.5, -3.0, 1e-30]),
    seed=st.integers(0, 2**20),
)
def test_a_dead_network_with_equal_logits_certifies_nothing(n_in, hidden, n_out, eps, bias, seed):
    rng = np.random.default_rng(seed)
    layers = random_layers([n_in, *hidden, n_out], rng)
    for w, b in layers[:-1]:
        b[:] = -(np.abs(w).sum(1) * 2.0 + 100.0)  # every unit off on [-1-ε, 1+ε]^n
    layers[-1][1][:] = bias  # equal output biases: the logits are constant and tied
    model = make_mlp(layers)
    net = lv.Network.from_torch(model)
    x = torch.tensor(rng.uniform(-1, 1, (n_out, n_in)), dtype=torch.float32)
    y = torch.arange(n_out)
    assert not lv.certify(model, x, y, eps).any()
    assert not lv.certify(net, x, y, 0.0).any()
    J = lv.margin_bounds(net, lv.LinfBall(x, eps), y)
    others = ~torch.eye(n_out, dtype=torch.bool)[y]
    assert (J[others] <= 0).all(), J  # the exact margins are 0: J = 0 is the best allowed, never above
    pred, ok = lv.detect(net, x, eps)
    assert not ok.any()


def test_a_dead_network_with_a_winning_bias_certifies_at_any_eps():
    """Not vacuous: constant logits [1, 0, 0] have margin exactly 1 everywhere, so class 0 certifies even at ε = 1e3."""
    rng = np.random.default_rng(0)
    layers = random_layers([3, 5, 3], rng)
    layers[0][1][:] = -(np.abs(layers[0][0]).sum(1) * 2000.0 + 100.0)
    layers[1][1][:] = [1.0, 0.0, 0.0]
    model = make_mlp(layers)
    x = torch.zeros(2, 3)
    assert lv.certify(model, x, torch.tensor([0, 0]), torch.tensor([0.0, 1e3])).all()
    assert not lv.certify(model, x, torch.tensor([1, 2]), 0.0).any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_logits_tied_exactly_at_x_certify_nothing_at_eps_zero(dtype):
    # f(x) = W x + b with W = [[1, 2], [2, 1]], b = [0.25, 0.25]: at x = (1, 1) both logits are exactly 3.25.
    model = make_mlp([(np.array([[1.0, 2.0], [2.0, 1.0]]), np.array([0.25, 0.25]))], dtype)
    x = torch.tensor([[1.0, 1.0], [0.1, 0.1]], dtype=dtype)  # 0.1 is not exact, but the tie is (both rows sum alike)
    for y in (0, 1):
        assert not lv.certify(model, x, torch.full((2,), y), 0.0).any()
    net = lv.Network.from_torch(model)
    J = lv.margin_bounds(net, lv.LinfBall(x, 0.0), torch.tensor([0, 1]))
    assert (J[:, 0] <= 0).all() and (J[:, 1] <= 0).all(), J
    # The same tie behind a hidden layer of units that are all on.
    hidden = make_mlp([(np.eye(2), np.array([1.0, 1.0])), (np.array([[1.0, 2.0], [2.0, 1.0]]), np.array([0.5, 0.5]))], dtype)
    assert not lv.certify(hidden, x, torch.tensor([0, 1]), 0.0).any()
    assert not lv.certify(hidden, x, torch.tensor([1, 0]), 0.0).any()


def test_identical_logit_rows_tie_everywhere():
    rng = np.random.default_rng(3)
    layers = random_layers([4, 6, 3], rng)
    layers[-1][0][2] = layers[-1][0][1]
    layers[-1][1][2] = layers[-1][1][1]
    layers[-1][1][0] = -50.0  # class 0 never wins
    model = make_mlp(layers)
    x = torch.tensor(rng.uniform(-1, 1, (5, 4)), dtype=torch.float32)
    for eps in (0.0, 0.01):
        for y in (1, 2):
            assert not lv.certify(model, x, torch.full((5,), y), eps).any()


# ----------------------------------------------------------------------------------------------
# 5. Half precision: upcast with a warning, still sound.
# ----------------------------------------------------------------------------------------------


@FEWER
@given(
    dtype=st.sampled_from([torch.float16, torch.bfloat16]),
    hidden=st.lists(st.integers(2, 4), min_size=1, max_size=2),
    target=TARGETS,
    eps=st.sampled_from([0.0, 1e-3, 0.1, 1 / 3]),
    seed=st.integers(0, 2**20),
)
def test_half_precision_models_are_upcast_with_a_warning_and_judged_exactly(dtype, hidden, target, eps, seed):
    rng = np.random.default_rng(seed)
    layers = random_layers([1, *hidden, 2], rng)
    layers[-1] = (layers[-1][0] * 0.01, np.zeros(2))
    model = make_mlp(layers, dtype)
    judge = ExactNet(model, (1,))
    x = torch.tensor(rng.uniform(-1, 1, (1, 1))).to(dtype)
    (lo,), (hi,) = exact_box(x[0], eps)
    exact_min = _tune_margin(model, (1,), lambda j: j.min_1d(margin_c(2, 0, 1), lo, hi), target)
    judge = ExactNet(model, (1,))  # with the tuned output bias
    net = lv.Network.from_torch(model)
    with pytest.warns(UserWarning):
        ball = lv.LinfBall(x, f64(eps))
    assert ball.dtype == torch.float32
    with pytest.warns(UserWarning):
        bounds = lv.dual_bounds(net, ball)
    with pytest.warns(UserWarning):
        J = lv.dual_objective(net, ball, torch.tensor([[[1.0, -1.0]]]), bounds)
    assert fraction_le(float(J[0, 0]), exact_min), (float(J[0, 0]), float(exact_min))
    with pytest.warns(UserWarning):
        cert = lv.certify(model, x, torch.tensor([0]), f64(eps))
    if exact_min <= 0:
        assert not cert[0], f"{dtype}: certified with exact min margin {float(exact_min)!r}"
    check_bounds_contain(bounds, judge, [[[p] for p in judge.breakpoints_1d(lo, hi)]], f"{dtype} dual_bounds")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_centre_with_float32_weights_warns_and_is_exact(dtype):
    model = make_mlp(random_layers([3, 4, 2], np.random.default_rng(1)))
    x = torch.tensor([[0.1, -0.3, 0.7]]).to(dtype)
    with pytest.warns(UserWarning):
        ball = lv.LinfBall(x, 0.05)
    assert ball.center.dtype == torch.float32
    assert _fractions(ball.center) == _fractions(x)  # upcasting half precision is exact
    net = lv.Network.from_torch(model)
    bounds = lv.dual_bounds(net, ball)
    judge = ExactNet(model, (3,))
    lo, hi = exact_box(x[0], 0.05)
    check_bounds_contain(bounds, judge, [box_points(lo, hi, 10, random.Random(0))], "half centre")


# ----------------------------------------------------------------------------------------------
# 6. Input sets rounded outward; exact membership.
# ----------------------------------------------------------------------------------------------

AWKWARD_EPS = [0.1, 1 / 3, 2 / 3, 1e-7, 1e-30, 0.0, 3.0, 2.0**-24 + 2.0**-60, 1e20]


def _next_float_above(q: Fraction, dtype=np.float64) -> float:
    r = dtype(float(q))
    while Fraction(float(r)) <= q:
        r = np.nextafter(r, dtype(np.inf), dtype=dtype)
    return float(r)


def _last_float_at_most(q: Fraction, dtype=np.float64) -> float:
    r = dtype(float(q))
    while Fraction(float(r)) > q:
        r = np.nextafter(r, dtype(-np.inf), dtype=dtype)
    return float(r)


@FAST
@given(
    eps=st.sampled_from(AWKWARD_EPS),
    x_dtype=st.sampled_from([torch.float32, torch.float64]),
    clamp=st.sampled_from([None, (0.0, 1.0), (0.1, 0.9), (-1 / 3, 1 / 3)]),
    python_floats=st.booleans(),
    seed=st.integers(0, 2**20),
)
def test_ball_boxes_contain_the_exact_set(eps, x_dtype, clamp, python_floats, seed):
    """Fraction(lo) ≤ x − ε and Fraction(hi) ≥ x + ε (clamped), for ε and clamps given as Python floats or float64."""
    rng = np.random.default_rng(seed)
    x = torch.tensor(rng.uniform(-1, 1, (2, 3)) * 10.0 ** rng.integers(-3, 3), dtype=x_dtype)
    if clamp is not None:
        x = x.clamp(clamp[0] / 2 + clamp[1] / 2 - 0.05, clamp[0] / 2 + clamp[1] / 2 + 0.05)
    arg = (lambda v: v) if python_floats else f64
    limits = clamp or (None, None)
    ball = lv.LinfBall(x, arg(eps), arg(limits[0]), arg(limits[1]))
    e = Fraction(float(eps))
    assert Fraction(float(ball.eps[0])) >= e
    for b in range(2):
        lo, hi = exact_box(x[b], eps, *(clamp or (None, None)))
        for i in range(3):
            assert Fraction(float(ball.lo[b, i])) <= lo[i], (float(ball.lo[b, i]), float(lo[i]))
            assert Fraction(float(ball.hi[b, i])) >= hi[i], (float(ball.hi[b, i]), float(hi[i]))
            mid, rad = Fraction(float(ball.mid[b, i])), Fraction(float(ball.rad[b, i]))
            assert mid - rad <= lo[i] and mid + rad >= hi[i], "mid ± rad does not enclose the exact box"
    for p in (1, 2):
        lp = lv.LpBall(x, arg(eps), p)
        for b in range(2):
            for i, xi in enumerate(_fractions(x[b])):
                assert Fraction(float(lp.lo[b, i])) <= xi - e and Fraction(float(lp.hi[b, i])) >= xi + e


@FAST
@given(
    eps=st.sampled_from([0.1, 1 / 3, 1e-7, 0.0, 0.25]),
    x_dtype=st.sampled_from([torch.float32, torch.float64]),
    point_dtype=st.sampled_from([np.float32, np.float64]),
    clamp=st.sampled_from([None, (-0.5, 0.5), (-1 / 3, 0.1)]),
    python_floats=st.booleans(),
    seed=st.integers(0, 2**20),
)
def test_contains_exactly_rejects_one_ulp_outside(eps, x_dtype, point_dtype, clamp, python_floats, seed):
    """The first float past each face of the exact set is outside; the last float before it is inside."""
    rng = np.random.default_rng(seed)
    x = torch.tensor(rng.uniform(-0.3, 0.05, (1, 2)), dtype=x_dtype)
    limits = clamp or (None, None)
    arg = (lambda v: v) if python_floats else f64
    ball = lv.LinfBall(x, arg(eps), arg(limits[0]), arg(limits[1]))
    tdtype = torch.float32 if point_dtype == np.float32 else torch.float64
    lo, hi = exact_box(x[0], eps, *limits)
    # Coordinate 1 sits inside: the float of the point dtype nearest the middle of its interval.
    inner = float(point_dtype(float((lo[1] + hi[1]) / 2)))
    assume(lo[1] <= Fraction(inner) <= hi[1])
    for face, outside, inside in (
        (hi[0], _next_float_above(hi[0], point_dtype), _last_float_at_most(hi[0], point_dtype)),
        (lo[0], -_next_float_above(-lo[0], point_dtype), -_last_float_at_most(-lo[0], point_dtype)),
    ):
        z = torch.tensor([[[outside, inner], [inside, inner]]], dtype=tdtype)
        assert _fractions(z[0, 0])[0] == Fraction(outside) and _fractions(z[0, 1])[0] == Fraction(inside)
        got = ball.contains_exactly(z)
        expected = [False, lo[0] <= Fraction(inside) <= hi[0]]
        assert got[0].tolist() == expected, (float(face), outside, inside, got)
        assert bool(ball.contains(z)[0, 1]) or not expected[1], "a point of the exact set lies outside the rounded box"
    for p in (1, 2):
        lp = lv.LpBall(x, arg(eps), p)
        xs, e = _fractions(x[0]), Fraction(float(eps))
        edge = xs[0] + e
        above, below = _next_float_above(edge, point_dtype), _last_float_at_most(edge, point_dtype)
        z = torch.tensor([[[above, float(xs[1])], [below, float(xs[1])]]], dtype=torch.float64)
        got = lp.contains_exactly(z)
        assert not bool(got[0, 0]), f"l{p} ball contains a point {above!r} one ulp past x + eps"
        assert bool(got[0, 1]) == (abs(Fraction(below) - xs[0]) <= e)


def test_a_finite_eps_beyond_float32s_range_is_accepted_and_certifies_nothing_false():
    """ε = 1e39 is a finite float64 (beyond float32's 3.4e38): a valid radius, not "NaN or inf".

    The margin 2x_0 − 2.5x_1 + 3 of this affine net is negative somewhere in every ball of radius ≥ 1,
    so certify must answer False, whatever dtype it computes in (float32 rounds such a box to ±inf).
    """
    model = make_mlp([(np.array([[1.0, -2.0], [-1.0, 0.5]]), np.array([3.0, 0.0]))])
    x = torch.zeros(1, 2)
    assert bool(lv.certify(model, x, torch.tensor([0]), 0.0)[0])  # margin 3 at x
    for eps in (1.0, 1e39, 1e300):
        assert not bool(lv.certify(model, x, torch.tensor([0]), eps)[0]), eps
        assert not bool(lv.certify(model, x, torch.tensor([0]), f64(eps))[0]), eps


def _float64_line(slope: float, offset: float) -> nn.Sequential:
    """A float64 model with f_0 − f_1 = slope·x + offset (one input, no hidden layer)."""
    return make_mlp([(np.array([[slope], [0.0]]), np.array([offset, 0.0]))], torch.float64)


@pytest.mark.parametrize("eps", [0.7, 1e-6, 1e-4, 2.0**-24 + 2.0**-60, 0.9])
def test_certify_with_a_python_float_eps_covers_the_whole_ball(eps):
    """ε = 0.7 means the real number 0.7 (its float64 value), not float32(0.7) = 0.699999988.

    f_0 − f_1 = b − z with b a float64 just below ε: at z = −ε, inside the ball,
    the exact margin b − ε is negative, so class 0 must not be certified.
    """
    e = Fraction(eps)
    b = float(e * (1 - Fraction(1, 10**12)))  # between float32(ε) (when it rounds down) and ε
    model = _float64_line(-1.0, b)
    x = torch.zeros(1, 1, dtype=torch.float64)
    judge = ExactNet(model, (1,))
    exact_min = judge.min_1d(margin_c(2, 0, 1), -e, e)
    assert exact_min < 0
    net = lv.Network.from_torch(model)
    J = lv.margin_bounds(net, lv.LinfBall(x, eps), torch.tensor([0]))[0, 1]
    assert fraction_le(float(J), exact_min), f"margin bound {float(J)!r} > exact min {float(exact_min)!r} at eps={eps!r}"
    assert not bool(lv.certify(model, x, torch.tensor([0]), eps)[0]), f"certified at eps={eps!r}, exact min {float(exact_min)!r}"
    assert not bool(lv.detect(net, x, eps)[1][0])


@pytest.mark.parametrize("lower, upper", [(0.1, None), (None, 0.7), (1 / 3, 2 / 3), (0.1, 0.3)])
def test_certify_with_python_float_clamps_covers_the_whole_clamped_box(lower, upper):
    """lower=0.1 means the real 0.1, not float32(0.1) = 0.10000000149 (which cuts a sliver off the set)."""
    x = torch.full((1, 1), 0.2 if upper is not None and upper < 0.5 else 0.5, dtype=torch.float64)
    eps = 0.5  # exact in every dtype: only the clamp is at stake
    lo, hi = exact_box(x[0], eps, lower, upper)
    for face, slope in ((lo[0], 1.0), (hi[0], -1.0)):
        # f_0 − f_1 = slope·(z − face) − tiny: negative exactly at the face, positive a sliver inside it.
        tiny = (abs(face) + 1) * Fraction(1, 10**12)
        model = _float64_line(slope, float(-slope * face - tiny))
        exact_min = ExactNet(model, (1,)).min_1d(margin_c(2, 0, 1), lo[0], hi[0])
        assert exact_min < 0
        cert = lv.certify(model, x, torch.tensor([0]), eps, lower=lower, upper=upper)
        assert not bool(cert[0]), f"certified with clamp [{lower!r}, {upper!r}] although the exact min is {float(exact_min)!r}"


# ----------------------------------------------------------------------------------------------
# 7. Bounds from arbitrary multipliers.
# ----------------------------------------------------------------------------------------------


@FAST
@given(
    n_in=st.integers(1, 3),
    hidden=st.lists(st.integers(2, 4), min_size=1, max_size=2),
    mult_exponent=st.integers(-30, 30),
    kind=st.sampled_from(["normal", "sparse", "positive", "negative", "zero", "mixed-scale"]),
    eps=st.sampled_from([0.0, 0.01, 0.3, 1.0]),
    ball_kind=st.sampled_from(["linf", "l1", "l2"]),
    seed=st.integers(0, 2**20),
)
def test_random_multipliers_never_exceed_an_exact_point_value(n_in, hidden, mult_exponent, kind, eps, ball_kind, seed):
    rng = np.random.default_rng(seed)
    model = make_mlp(random_layers([n_in, *hidden, 3], rng))
    net = lv.Network.from_torch(model)
    judge = ExactNet(model, (n_in,))
    x = torch.tensor(rng.uniform(-1, 1, (2, n_in)), dtype=torch.float32)
    ball = lv.LinfBall(x, f64(eps)) if ball_kind == "linf" else lv.LpBall(x, f64(eps), 1 if ball_kind == "l1" else 2)
    bounds = lv.dual_bounds(net, ball)
    m = 2
    c = torch.tensor(rng.standard_normal((2, m, 3)), dtype=torch.float32)
    mults = []
    for width in hidden:
        g = rng.standard_normal((2, m, width))
        if kind == "sparse":
            g = g * (rng.random(g.shape) < 0.3)
        elif kind == "positive":
            g = np.abs(g)
        elif kind == "negative":
            g = -np.abs(g)
        elif kind == "zero":
            g = np.zeros_like(g)
        elif kind == "mixed-scale":
            g = g * 10.0 ** rng.integers(-30, 30, g.shape)
        mults.append(torch.tensor(g * 10.0**mult_exponent))
    J = lv.objective_from_multipliers(net, ball, c, bounds, mults)
    assert J.shape == (2, m)
    # Any slopes α ∈ [0, 1] give a valid J too (weak duality, MATH.md §3): the endpoints and random ones.
    alpha = [torch.tensor(rng.choice([0.0, 1.0, rng.random()], size=(2, m, width))) for width in hidden]
    results = {
        "objective_from_multipliers": J,
        "dual_objective(random alpha)": lv.dual_objective(net, ball, c, bounds, alpha),
        "dual_objective": lv.dual_objective(net, ball, c, bounds),
        "interval_objective": lv.interval_objective(net, ball, c),
    }
    pyrng = random.Random(seed)
    all_points = []
    for b in range(2):
        xs = _fractions(x[b])
        e = Fraction(float(eps))
        if ball_kind == "linf":
            lo, hi = exact_box(x[b], eps)
            points = box_points(lo, hi, 4, pyrng)
        else:  # vertices x ± ε e_i lie in both the l1 and the l2 ball, and so does any l1-convex combination
            points = [[v + (s * e if i == k else 0) for i, v in enumerate(xs)] for k in range(n_in) for s in (-1, 1)]
            for _ in range(4):
                u = [Fraction(pyrng.randint(-100, 100)) for _ in range(n_in)]
                norm = sum(abs(v) for v in u) or Fraction(1)
                points.append([v + e * ui / norm for v, ui in zip(xs, u)])
        all_points.append(points)
        for k in range(m):
            cf = _fractions(c[b, k])
            if n_in == 1 and ball_kind == "linf":
                bound = judge.min_1d(cf, lo[0], hi[0])
            else:
                bound = min(judge.objective(cf, p) for p in points)
            for name, result in results.items():
                value = float(result[b, k])
                assert not math.isnan(value), f"{name}: NaN from finite multipliers and finite bounds"
                assert Fraction(value) <= bound, (
                    f"{name} = {value!r} > exact value {float(bound)!r} "
                    f"({kind} multipliers ×1e{mult_exponent}, {ball_kind} ball, eps {eps}, example {b}, row {k})"
                )
    check_bounds_contain(bounds, judge, all_points, f"dual_bounds over an {ball_kind} ball")
    check_bounds_contain(lv.interval_bounds(net, ball), judge, all_points, f"interval_bounds over an {ball_kind} ball")


def test_the_dual_networks_own_multipliers_reproduce_dual_objective():
    """Not vacuous: with ν from the dual network itself the safe bound is (nearly) J of Theorem 1."""
    torch.manual_seed(0)
    model = make_mlp(random_layers([3, 5, 4, 3], np.random.default_rng(7)))
    net = lv.Network.from_torch(model)
    x = torch.rand(2, 3)
    ball = lv.LinfBall(x, 0.1)
    bounds = lv.dual_bounds(net, ball)
    c = torch.tensor(np.random.default_rng(8).standard_normal((2, 3, 3)), dtype=torch.float32)
    J = lv.dual_objective(net, ball, c, bounds)
    # ν of Theorem 1, walked by hand in float64 (eq. 5-7 with α = u/(u − ℓ)).
    lins = [m for m in model if isinstance(m, nn.Linear)]
    nu = -c.double()
    mults = []
    for i in range(len(lins) - 1, 0, -1):
        nu_hat = nu @ lins[i].weight.double()
        lo, up = bounds.lower[i - 1].double().unsqueeze(1), bounds.upper[i - 1].double().unsqueeze(1)
        nu = lv.relu_slope(lo, up) * nu_hat
        mults.insert(0, nu)
    safe = lv.objective_from_multipliers(net, ball, c, bounds, mults)
    torch.testing.assert_close(safe, J, rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# 8. NaN and inf are errors, never bounds.
# ----------------------------------------------------------------------------------------------


def _small_model() -> nn.Sequential:
    return make_mlp(random_layers([3, 4, 2], np.random.default_rng(0)))


def test_nan_or_inf_inputs_and_radii_raise():
    model, net = _small_model(), lv.Network.from_torch(_small_model())
    x = torch.rand(2, 3)
    bad_x = x.clone()
    bad_x[1, 2] = float("nan")
    y = torch.tensor([0, 1])
    with pytest.raises(ValueError):
        lv.LinfBall(bad_x, 0.1)
    with pytest.raises(ValueError):
        lv.LpBall(bad_x, 0.1, 2)
    with pytest.raises(ValueError):
        lv.certify(model, bad_x, y, 0.1)
    with pytest.raises(ValueError):
        lv.certify(net, bad_x, y, 0.0)
    for eps in (float("nan"), float("inf"), torch.tensor([0.1, float("nan")]), -1e-30):
        with pytest.raises(ValueError):
            lv.LinfBall(x, eps)
        with pytest.raises(ValueError):
            lv.certify(model, x, y, eps)
    with pytest.raises(ValueError):
        lv.LinfBall(x, 0.1, lower=float("nan"))
    with pytest.raises(ValueError):
        lv.certify(model, x, y, 0.1, upper=torch.tensor([1.0, float("nan"), 1.0]))
    inf_x = x.clone()
    inf_x[0, 0] = float("inf")
    with pytest.raises(ValueError):
        lv.certify(model, inf_x, y, 0.1)


@pytest.mark.parametrize("where", ["weight0", "bias0", "weight1", "bias1"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_raise_naming_the_problem(where, value):
    model = _small_model()
    lins = [m for m in model if isinstance(m, nn.Linear)]
    param = getattr(lins[int(where[-1])], where[:-1])
    with torch.no_grad():
        param.view(-1)[1] = value
    net = lv.Network.from_torch(model)
    x, y = torch.rand(2, 3), torch.tensor([0, 1])
    ball = lv.LinfBall(x, 0.1)
    word = "NaN" if math.isnan(value) else "inf"
    for call in (
        lambda: lv.dual_bounds(net, ball),
        lambda: lv.interval_bounds(net, ball),
        lambda: lv.certify(model, x, y, 0.1),
        lambda: lv.certify(net, x, y, 0.0),
        lambda: lv.margin_bounds(net, ball, y),
    ):
        with pytest.raises(ValueError, match=f"contains {word}"):
            call()


def test_nan_objective_and_nan_multipliers_give_no_bound():
    model = _small_model()
    net = lv.Network.from_torch(model)
    ball = lv.LinfBall(torch.rand(2, 3), 0.1)
    bounds = lv.dual_bounds(net, ball)
    c = torch.ones(2, 1, 2)
    c[0, 0, 1] = float("nan")
    with pytest.raises(ValueError):
        lv.dual_objective(net, ball, c, bounds)
    good_c = torch.tensor([[[1.0, -1.0]], [[1.0, -1.0]]])
    for bad in (float("nan"), float("inf"), -float("inf")):
        mult = torch.zeros(2, 1, 4, dtype=torch.float64)
        mult[0, 0, 2] = bad
        try:
            J = lv.objective_from_multipliers(net, ball, good_c, bounds, [mult])
        except ValueError:
            continue
        # No finite claim may come out of a non-finite multiplier, except -inf (a valid, useless bound).
        assert math.isnan(float(J[0, 0])) or float(J[0, 0]) == -math.inf, (bad, J)
        assert math.isfinite(float(J[1, 0]))  # the other example is unaffected
    # Non-finite bounds give NaN, never a number.
    inf_bounds = lv.Bounds(
        tuple(torch.full_like(t, -math.inf) for t in bounds.lower), tuple(torch.full_like(t, math.inf) for t in bounds.upper)
    )
    J = lv.dual_objective(net, ball, good_c, inf_bounds)
    assert torch.isnan(J).all(), J


def test_logits_that_overflow_certify_nothing_and_predict_refuses_them():
    """Finite float32 weights near the top of the range: the logits overflow to inf (and inf − inf = NaN)."""
    model = make_mlp([(np.array([[3e38, -3e38], [3e38, 3e38]]), np.array([0.0, 0.0]))])
    x = torch.tensor([[10.0, 1.0], [1.0, 10.0]])
    for eps in (0.0, 0.1):
        assert not lv.certify(model, x, torch.tensor([0, 1]), f64(eps)).any()
        assert not lv.certify(model, x, torch.tensor([1, 0]), f64(eps)).any()
    with pytest.raises(ValueError):
        lv.predict(model, x)


def test_predict_refuses_nan_logits():
    model = _small_model()
    x = torch.rand(3, 3)
    x[1, 0] = float("nan")
    with pytest.raises(ValueError):
        lv.predict(model, x)
    nan_model = _small_model()
    with torch.no_grad():
        nan_model[0].bias[0] = float("nan")
    with pytest.raises(ValueError):
        lv.predict(nan_model, torch.rand(3, 3))


# ----------------------------------------------------------------------------------------------
# 8b. Every rung of lv.verify, on properties tuned to within 1e-14..1e-5 of zero.
# ----------------------------------------------------------------------------------------------


@settings(max_examples=8, deadline=None, derandomize=True)
@given(
    hidden=st.lists(st.integers(2, 3), min_size=1, max_size=2),
    target=st.builds(lambda s, e: s * 10.0**e, st.sampled_from([-1.0, 1.0]), st.sampled_from([-14, -9, -7, -5])),
    eps=st.sampled_from([0.0, 1e-3, 0.1, 1 / 3]),
    seed=st.integers(0, 2**20),
)
@example(hidden=[2], target=-1e-14, eps=0.0, seed=98)  # MILP "violated" with Verdict.bound above the exact min
def test_no_verification_method_verifies_a_property_whose_exact_minimum_is_not_positive(hidden, target, eps, seed):
    """c·f + d with d (float64) chosen so that the exact min lands within ~1e-16 of ``target``."""
    rng = np.random.default_rng(seed)
    model = make_mlp(random_layers([1, *hidden, 2], rng))
    judge = ExactNet(model, (1,))
    net = lv.Network.from_torch(model)
    x = torch.tensor(rng.uniform(-1, 1, (1, 1)), dtype=torch.float32)
    (lo,), (hi,) = exact_box(x[0], eps)
    cf = margin_c(2, 0, 1)
    g = judge.min_1d(cf, lo, hi)
    d = float(Fraction(target) - g)
    exact_min = g + Fraction(d)
    ball = lv.LinfBall(x, f64(eps))
    c = torch.tensor([[[1.0, -1.0]]])
    dt = torch.tensor([[d]], dtype=torch.float64)
    for method in lv.METHODS:
        verdict = lv.verify(net, ball, c, dt, method=method)[0]
        if verdict.status == "verified":
            assert exact_min > 0, f"{method} verified a property whose exact minimum is {float(exact_min)!r}"
        witness_value = None
        if verdict.status == "violated":
            w = [Fraction(float(v)) for v in np.asarray(verdict.witness, dtype=np.float64).ravel()]
            assert lo <= w[0] <= hi, f"{method}: witness {w} outside the exact set"
            witness_value = judge.objective(cf, w) + Fraction(d)
        if not math.isnan(verdict.bound):  # Verdict.bound: "a rigorous lower bound on min c·f + d", whatever the status
            assert Fraction(verdict.bound) <= exact_min, (
                f"{method}: Verdict.bound {verdict.bound!r} > exact min {float(exact_min)!r} "
                f"(status {verdict.status}, exact value at the witness "
                f"{None if witness_value is None else float(witness_value)!r})"
            )
    for method in ("interval", "dual", "dual-opt", "lp", "lp-all"):
        low = lv.objective_bounds(net, ball, c, method)
        assert math.isnan(float(low[0, 0])) or Fraction(float(low[0, 0])) <= g, (method, float(low[0, 0]), float(g))


# ----------------------------------------------------------------------------------------------
# 9. The largest certified radius, against the exact radius of an affine network.
# ----------------------------------------------------------------------------------------------


@FEWER
@given(n_in=st.integers(1, 4), n_out=st.integers(2, 4), seed=st.integers(0, 2**20))
def test_max_certified_eps_is_below_the_exact_radius(n_in, n_out, seed):
    """f = W x + b: the margin over the ε-box is m_j(x) − ε‖w_y − w_j‖₁, so the exact radius is min_j m_j / ‖·‖₁."""
    rng = np.random.default_rng(seed)
    model = make_mlp(random_layers([n_in, n_out], rng))
    judge = ExactNet(model, (n_in,))
    x = torch.tensor(rng.uniform(-1, 1, (2, n_in)), dtype=torch.float32)
    radius = lv.certified_radius(model, x, tol=1e-3, eps_max=1.0)
    w = _fractions(model[0].weight)
    for b in range(2):
        f = judge.logits(_fractions(x[b]))
        y = int(radius.labels[b])
        if any(f[j] >= f[y] for j in range(n_out) if j != y):
            assert float(radius.lower[b]) == 0.0  # a tie or float-only winner certifies no radius
            continue
        exact = min(
            (f[y] - f[j]) / sum(abs(w[y * n_in + i] - w[j * n_in + i]) for i in range(n_in))
            for j in range(n_out)
            if j != y
        )
        got = Fraction(float(radius.lower[b]))
        assert got < exact, f"certified radius {float(got)!r} >= exact radius {float(exact)!r}"
        if exact < Fraction(1, 2):
            assert got >= exact * Fraction(99, 100) * Fraction(998, 1000), (float(got), float(exact))  # not vacuous


# ----------------------------------------------------------------------------------------------
# 10. A convolutional network, judged exactly at the corners of its box.
# ----------------------------------------------------------------------------------------------


@FEWER
@given(
    seed=st.integers(0, 2**20),
    eps=st.sampled_from([0.0, 1e-4, 0.05, 1 / 3]),
    clamp=st.booleans(),
    arch=st.sampled_from(["conv-dense", "conv-conv"]),
)
def test_conv_network_bounds_and_certificates_hold_at_exact_corners(seed, eps, clamp, arch):
    """conv-conv: disjoint 2×2 patches then a 1×1 convolution, so Algorithm 1 packs the input columns by colour."""
    gen = torch.Generator().manual_seed(seed)
    if arch == "conv-dense":
        shape = (1, 3, 3)
        model = nn.Sequential(
            nn.Conv2d(1, 2, 2, stride=1, padding=0), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 2 * 2, 3), nn.ReLU(), nn.Linear(3, 2)
        )
    else:
        shape = (1, 4, 4)
        model = nn.Sequential(
            nn.Conv2d(1, 2, 2, stride=2, padding=0), nn.ReLU(), nn.Conv2d(2, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2)
        )
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
            p.requires_grad_(False)
    judge = ExactNet(model, shape)
    net = lv.Network.from_torch(model, input_shape=shape)
    x = torch.rand(2, *shape, generator=gen)
    limits = (0.0, 1.0) if clamp else (None, None)
    ball = lv.LinfBall(x, f64(eps), f64(limits[0]), f64(limits[1]))
    c = torch.tensor([[[1.0, -1.0]], [[-1.0, 1.0]]])
    objectives, dual = all_bounds_and_objectives(net, ball, c)
    pyrng = random.Random(seed)
    points = []
    for b in range(2):
        lo, hi = exact_box(x[b].flatten(), eps, *limits)
        pts = box_points(lo, hi, 8, pyrng)
        points.append(pts)
        cf = _fractions(c[b, 0])
        best = min(judge.objective(cf, p) for p in pts)
        for name, J in objectives.items():
            assert fraction_le(float(J[b, 0]), best) or math.isnan(float(J[b, 0])), (name, float(J[b, 0]), float(best))
    check_bounds_contain(dual, judge, points, "conv dual_bounds")
    y = torch.tensor([0, 1])
    cert = lv.certify(net, x, y, f64(eps), lower=f64(limits[0]), upper=f64(limits[1]))
    for b in range(2):
        if cert[b]:
            for p in points[b]:
                f = judge.logits(p)
                assert f[int(y[b])] > f[1 - int(y[b])], f"certified conv example {b} violated at an exact corner"
