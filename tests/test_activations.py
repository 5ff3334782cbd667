"""Activations beyond ReLU: sound linear bounds, the IR and import, and the chain J ≤ LP ≤ MILP ≤ f."""

from __future__ import annotations

import math
from fractions import Fraction

import mpmath
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import lpverify as lv
from lpverify.activations import RELU, SIGMOID, TANH, LeakyReLU, dual_step, graph_minimum, linear_bounds
from lpverify.bounds import interval_bounds, interval_objective
from lpverify.dual import dual_bounds, dual_objective, forward_objective, optimize_alpha

ACTIVATIONS = [RELU, LeakyReLU(0.1), LeakyReLU(0.5), SIGMOID, TANH]
MODULES = {"ReLU": nn.ReLU, "LeakyReLU(0.1)": lambda: nn.LeakyReLU(0.1), "Sigmoid": nn.Sigmoid, "Tanh": nn.Tanh}
mpmath.mp.dps = 60


def exact(act, x: float) -> mpmath.mpf:
    """σ(x) to 60 digits (piecewise-linear ones exactly)."""
    x = mpmath.mpf(x)
    if act in (SIGMOID,):
        return 1 / (1 + mpmath.exp(-x))
    if act in (TANH,):
        return mpmath.tanh(x)
    return x if x >= 0 else mpmath.mpf(act.slope) * x


def line(a: float, b: float, x: float) -> mpmath.mpf:
    """``a x + b`` for floats, exactly (Fractions, then to 60 digits)."""
    value = Fraction(a) * Fraction(x) + Fraction(b)
    return mpmath.mpf(value.numerator) / value.denominator


# Intervals: ordinary, degenerate (ℓ = u), very wide, very large |ℓ|, u near 0 on either side.
FLOATS = st.one_of(
    st.floats(-8, 8),
    st.sampled_from([0.0, -0.0, 1e-300, -1e-300, 5e-324, 1e-9, -1e-9, 30.0, -30.0, 700.0, -745.0, 1e6, -1e6, 1e15]),
)


@st.composite
def intervals(draw):
    a, b = draw(FLOATS), draw(FLOATS)
    if draw(st.booleans()):
        b = a  # degenerate
    return min(a, b), max(a, b)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(ACTIVATIONS), st.lists(intervals(), min_size=1, max_size=6), st.booleans())
def test_lines_hold_for_the_real_function(act, boxes, optimised):
    lower = torch.tensor([lo for lo, _ in boxes], dtype=torch.float64)
    upper = torch.tensor([hi for _, hi in boxes], dtype=torch.float64)
    alpha = torch.rand(lower.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(len(boxes)))
    lb = linear_bounds(act, lower, upper, alpha if optimised else None)
    for j, (lo, hi) in enumerate(boxes):
        a_l, b_l, a_u, b_u = (float(t[j]) for t in (lb.a_l, lb.b_l, lb.a_u, lb.b_u))
        assert all(math.isfinite(v) for v in (a_l, b_l, a_u, b_u))
        points = {lo, hi, lo / 2 + hi / 2, *np.linspace(lo, hi, 9).tolist()}
        for x in points:
            if not lo <= x <= hi:
                continue
            f = exact(act, x)
            assert line(a_l, b_l, x) <= f, (act, lo, hi, x, "lower")
            assert line(a_u, b_u, x) >= f, (act, lo, hi, x, "upper")


@pytest.mark.parametrize("act", [RELU, LeakyReLU(0.1), LeakyReLU(0.5)])
@pytest.mark.parametrize("lo, hi", [(-3.0, -1.0), (0.5, 2.0), (-2.0, 3.0), (-1e-3, 4.0), (2.0, 2.0), (-5.0, 0.0)])
def test_piecewise_linear_lines_are_exact_where_they_should_be(act, lo, hi):
    lb = linear_bounds(act, torch.tensor([lo], dtype=torch.float64), torch.tensor([hi], dtype=torch.float64))
    a_l, b_l, a_u, b_u = (float(t[0]) for t in (lb.a_l, lb.b_l, lb.a_u, lb.b_u))
    f = lambda x: x if x >= 0 else act.slope * x  # noqa: E731
    tol = 1e-12 * (1 + abs(lo) + abs(hi))
    assert abs(a_u * lo + b_u - f(lo)) <= tol and abs(a_u * hi + b_u - f(hi)) <= tol  # the chord / the line itself
    if hi <= 0 or lo >= 0:  # stable: both lines are the function
        assert abs(a_l * lo + b_l - f(lo)) <= tol and abs(a_l * hi + b_l - f(hi)) <= tol
    else:  # crossing: the lower line goes through the kink, slope within [s, 1]
        assert abs(b_l) <= tol and act.slope <= a_l <= 1


@pytest.mark.parametrize("act", [SIGMOID, TANH])
def test_smooth_lines_touch_and_are_tight(act):
    x = torch.tensor([-40.0, -2.0, 0.0, 1.5, 700.0], dtype=torch.float64)
    lb = linear_bounds(act, x, x)  # ℓ = u: both lines pass (within a few ulps) through σ(x)
    gap = (lb.a_u * x + lb.b_u) - (lb.a_l * x + lb.b_l)
    assert (gap >= 0).all() and (gap <= 1e-13).all()
    lo, hi = torch.tensor([-1.0, -3.0, 1.0]), torch.tensor([1.0, -1.0, 3.0])
    lb = linear_bounds(act, lo.double(), hi.double())
    grid = torch.stack([torch.linspace(a, b, 201, dtype=torch.float64) for a, b in zip(lo.tolist(), hi.tolist())], 1)
    f = act.forward(grid)
    worst = ((lb.a_u * grid + lb.b_u - f).amax(0), (f - lb.a_l * grid - lb.b_l).amax(0))
    # CROWN-quality lines: far below the constant bounds [σ(ℓ), σ(u)] (0.46 for sigmoid on [−1, 1]).
    scale = 0.25 if act is SIGMOID else 1.0
    assert all((w <= 0.12 * scale * 4).all() for w in worst), worst
    assert (lb.a_l > 0).all() and (lb.a_u > 0).all()


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(ACTIVATIONS), st.integers(0, 2**16), st.booleans())
def test_graph_minimum_is_below_the_graph_for_any_multipliers(act, seed, from_step):
    gen = torch.Generator().manual_seed(seed)
    lo = torch.randn(64, dtype=torch.float64, generator=gen) * 3
    hi = lo + torch.rand(64, dtype=torch.float64, generator=gen) * 4
    nu_hat = torch.randn(64, dtype=torch.float64, generator=gen)
    nu_hat[::7] = 0.0
    nu = dual_step(act, nu_hat, lo, hi) if from_step else torch.randn(64, dtype=torch.float64, generator=gen)
    term, magnitude = graph_minimum(act, nu, nu_hat, lo, hi)
    grid = lo + (hi - lo) * torch.linspace(0, 1, 401, dtype=torch.float64).unsqueeze(1)
    true_min = (nu * grid - nu_hat * act.forward(grid)).amin(0)
    assert (term <= true_min + 1e-12 * magnitude).all()
    if from_step:  # Theorem 1's term with the lines themselves: close to the best line's value
        lb = linear_bounds(act, lo, hi)
        expected = -nu_hat.clamp(min=0) * lb.b_u + (-nu_hat).clamp(min=0) * lb.b_l
        torch.testing.assert_close(term, expected, rtol=1e-9, atol=1e-9)


# -- the IR, torch and ONNX ---------------------------------------------------------------


def model_with(name: str, seed: int, widths=(3, 6, 5, 2)) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths, widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(MODULES[name]())
    return nn.Sequential(*layers).double().requires_grad_(False)


@pytest.mark.parametrize("name", list(MODULES))
def test_forward_equals_torch_and_onnx(name, tmp_path):
    model = model_with(name, 0)
    net = lv.Network.from_torch(model)
    assert [a.name for a in net.activations] == [MODULES[name]().__class__.__name__.replace("LeakyReLU", "LeakyReLU(0.1)")] * 2
    x = torch.randn(20, 3, dtype=torch.float64) * 3
    torch.testing.assert_close(net(x), model(x), rtol=1e-12, atol=1e-12)
    onnx = pytest.importorskip("onnx")
    from lpverify.onnx_import import reference_outputs

    path = tmp_path / "net.onnx"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.float().eval(), torch.zeros(1, 3), str(path), dynamo=False, input_names=["x"], output_names=["y"])
    loaded = lv.load_onnx(path)
    assert [a.name for a in loaded.activations] == [a.name.replace("0.1", f"{np.float32(0.1):g}") for a in net.activations]
    ours = loaded(x.float()).double().numpy()
    np.testing.assert_allclose(ours, reference_outputs(path, x.numpy()), rtol=1e-5, atol=1e-5)
    assert onnx is not None


# -- the chain on small random networks -----------------------------------------------------


def case(name: str, seed: int, eps: float = 0.3):
    net = lv.Network.from_torch(model_with(name, seed))
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, dtype=torch.float64, generator=gen)
    ball = lv.LinfBall(x, eps)
    pts = torch.cat([ball.sample(400, generator=gen), ball.sample(100, vertices=True, generator=gen)], 1)
    pre = [z.view(2, 500, *z.shape[1:]) for z in net.pre_activations(pts.flatten(0, 1))]
    c = torch.randn(2, 3, net.n_outputs, dtype=torch.float64, generator=gen)
    f_min = torch.einsum("bmo,bno->bmn", c, pre[-1]).amin(-1)
    return net, ball, pre, c, f_min


@pytest.mark.parametrize("name", list(MODULES))
@pytest.mark.parametrize("seed", [0, 1])
def test_bounds_contain_samples_and_dual_below_f(name, seed):
    net, ball, pre, c, f_min = case(name, seed)
    for rigorous in (True, False):
        bounds = dual_bounds(net, ball, rigorous=rigorous)
        assert bounds.contains(pre, tol=0.0 if rigorous else 1e-12)  # plain: vertices reach the bounds up to rounding
    naive = interval_bounds(net, ball)
    assert naive.contains(pre)
    bounds = dual_bounds(net, ball)
    if not net.is_relu:  # layer-wise backward bounds are intersected with the interval bounds
        for lo, up, nlo, nup in zip(bounds.lower, bounds.upper, naive.lower, naive.upper):
            assert (lo >= nlo).all() and (up <= nup).all()
    J = dual_objective(net, ball, c, bounds)
    J_opt = optimize_alpha(net, ball, c, bounds, steps=20)
    J_fwd = forward_objective(net, ball, c).J
    J_int = interval_objective(net, ball, c)
    for low in (J, J_opt, J_fwd, J_int):
        assert torch.isfinite(low).all() and (low <= f_min).all()
    assert (J_opt >= J).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_leaky_relu_chain_dual_lp_milp_f(seed):
    net, ball, pre, c, f_min = case("LeakyReLU(0.1)", seed, eps=0.5)
    bounds = dual_bounds(net, ball)
    J = dual_objective(net, ball, c, bounds)
    for b in range(2):
        lp = lv.build_lp(net, ball.select(b), bounds.select(b))
        milp = lv.build_milp(net, ball.select(b), bounds.select(b))
        for r in range(c.shape[1]):
            res = lp.solve(c[b, r])
            exact = milp.solve(c[b, r])
            assert res.optimal and exact.optimal
            tol = 1e-7 * (1 + abs(res.value))
            assert J[b, r] <= res.value + tol and res.bound <= res.value + tol
            assert res.bound >= float(J[b, r]) - 1e-6 * (1 + abs(res.value))  # the safe bound reaches the LP
            assert res.value <= exact.value + tol and exact.value <= f_min[b, r] + tol


def test_leaky_relu_generic_dual_matches_relu_arithmetic():
    """LeakyReLU(0) runs the general relaxation; over the same bounds it must agree with the ReLU arithmetic."""
    model = model_with("ReLU", 3)
    relu_net = lv.Network.from_torch(model)
    leaky_net = lv.Network(relu_net.blocks, [LeakyReLU(0.0)] * 2)
    assert not leaky_net.is_relu
    net, ball, pre, c, f_min = case("ReLU", 3)
    bounds = dual_bounds(relu_net, ball)
    for rigorous in (True, False):
        J_relu = dual_objective(relu_net, ball, c, bounds, rigorous=rigorous)
        J_leaky = dual_objective(leaky_net, ball, c, bounds, rigorous=rigorous)
        torch.testing.assert_close(J_leaky, J_relu, rtol=1e-9, atol=1e-9)
    generic = dual_bounds(leaky_net, ball)
    assert generic.contains(pre)


# -- verdicts ---------------------------------------------------------------------------------


def test_sigmoid_network_refuses_exact_methods_with_a_clear_message():
    net, ball, pre, c, f_min = case("Sigmoid", 0)
    assert lv.applicable_methods(net) == ("interval", "dual", "dual-opt")
    for method in ("milp", "bab", "lp", "lp-all"):
        with pytest.raises(ValueError, match=r"Sigmoid.*the methods that do: interval, dual, dual-opt"):
            lv.verify(net, ball, c, method=method)
    leaky, lball, *_ = case("LeakyReLU(0.1)", 0)
    with pytest.raises(ValueError, match=r"LeakyReLU\(0.1\).*splits ReLU units only.*milp"):
        lv.verify(leaky, lball, c, method="bab")


@pytest.mark.parametrize("name", ["Sigmoid", "Tanh", "LeakyReLU(0.1)"])
def test_verdicts_are_sound_on_both_sides_of_the_margin(name):
    net, ball, pre, c, f_min = case(name, 4)
    J = dual_objective(net, ball, c, dual_bounds(net, ball))
    methods = [m for m in lv.applicable_methods(net) if m != "lp-all"]
    for method in methods:
        false = lv.verify(net, ball, c, -f_min - 1e-9, method=method)  # a sampled point violates it
        assert all(v.status != "verified" for v in false)
        if method in ("dual", "dual-opt", "lp", "milp"):
            true = lv.verify(net, ball, c, -J + 1e-4, method=method)
            assert all(v.status == "verified" for v in true), (method, [v.reason for v in true])
    y = net(ball.center).argmax(1)
    assert lv.certify(net, ball.center, y, 1e-7).all()  # the prediction at x, margins barely perturbed
    gen = torch.Generator().manual_seed(0)
    for eps in (0.5, 3.0, 50.0):  # a certified example has no sampled point of its ball predicting another class
        wide = lv.LinfBall(ball.center, eps)
        certified = lv.certify(net, ball.center, y, eps)
        pts = torch.cat([wide.sample(300, generator=gen), wide.sample(100, vertices=True, generator=gen)], 1)
        flipped = (net(pts.flatten(0, 1)).argmax(1).view(2, -1) != y.unsqueeze(1)).any(1)
        assert not (certified & flipped).any()
