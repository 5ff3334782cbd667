"""The exact MILP of MATH.md §6: equal to brute-force minima, the chain of bounds, checked witnesses, failures."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

import lpverify as lv
from conftest import random_convnet, random_mlp
from lpverify.milp import MILPResult, build_milp, forward64, solve_milp
from strategies import dense_cases


def small_net(data, n_in: int, max_depth: int = 2, max_width: int = 8) -> tuple[lv.Network, lv.LinfBall, int]:
    """A dense net with n_in inputs, ≤ max_depth hidden layers of ≤ max_width units, and a ball of batch 1."""
    hidden = data.draw(st.lists(st.integers(2, max_width), min_size=1, max_size=max_depth), label="hidden")
    n_out = data.draw(st.integers(1, 3), label="n_out")
    seed = data.draw(st.integers(0, 2**20), label="seed")
    eps = data.draw(st.sampled_from([0.05, 0.2, 0.5, 1.0]), label="eps")
    clamp = data.draw(st.booleans(), label="clamp")
    net = lv.Network.from_torch(random_mlp([n_in, *hidden, n_out], seed))
    x = torch.rand(1, n_in, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    return net, lv.LinfBall(x, eps, *((0.0, 1.0) if clamp else (None, None))), seed


def objective(data, n_out: int) -> np.ndarray:
    """A random objective, never (near) zero: a zero c makes every check trivial."""
    c = np.asarray(data.draw(st.lists(st.floats(-2, 2), min_size=n_out, max_size=n_out), label="c"))
    if np.abs(c).max() < 1e-3:
        c[0] = 1.0
    return c


def torch_value(net: lv.Network, c: np.ndarray, x: np.ndarray) -> float:
    """cᵀ f(x) by the torch forward pass in float64 (independent of the MILP's float64 matrices)."""
    with torch.no_grad():
        out = net(torch.as_tensor(x, dtype=torch.float64).reshape(1, *net.input_shape))
    return float(out[0].double() @ torch.as_tensor(c))


def exact_min_1d(net: lv.Network, lo: float, hi: float, c: np.ndarray) -> float:
    """min cᵀ f over [lo, hi] for a scalar input, by enumerating the linear pieces.

    Between consecutive breakpoints of layers < i the pre-activations of layer
    i are affine, so their zeros are found by interpolating the endpoint values;
    the minimum of the final piecewise-linear function is at a breakpoint.
    """
    def pre(x: float) -> list[np.ndarray]:
        with torch.no_grad():
            return [z[0].double().numpy() for z in net.pre_activations(torch.tensor([[x]], dtype=torch.float64))]

    points = [lo, hi] if hi > lo else [lo]
    for layer in range(len(net.blocks) - 1):
        found = set(points)
        for a, b in zip(points, points[1:]):
            za, zb = pre(a)[layer], pre(b)[layer]
            sign_change = ((za < 0) & (zb > 0)) | ((za > 0) & (zb < 0))
            t = za[sign_change] / (za[sign_change] - zb[sign_change])
            found.update((a + t * (b - a)).tolist())
        points = sorted(found)
    return min(float(c @ pre(x)[-1]) for x in points)


def pattern_min(net: lv.Network, ball: lv.LinfBall, c: np.ndarray, max_patterns: int = 512) -> float | None:
    """min cᵀ f over the box by one LP in x per activation pattern (None if there are too many).

    Units that interval bounds prove stable keep their phase; every pattern of
    the others fixes f to an affine map on the polyhedron where that pattern
    holds (ẑ ≥ 0 for on units, ẑ ≤ 0 for off ones), minimised by scipy.
    """
    bounds = lv.interval_bounds(net, ball)
    mats = [(w.toarray(), b) for w, b in net.sparse()]
    lo, hi = ball.lo[0].double().numpy().ravel(), ball.hi[0].double().numpy().ravel()
    fixed_on = [bounds.lower[i][0].detach().double().numpy().ravel() >= 0 for i in range(len(mats) - 1)]
    free = [(i, j) for i in range(len(mats) - 1) for j in np.flatnonzero(bounds.crossing(i)[0].flatten().numpy())]
    if 2 ** len(free) > max_patterns:
        return None
    best = math.inf
    for bits in itertools.product((False, True), repeat=len(free)):
        on = [m.copy() for m in fixed_on]
        for (i, j), bit in zip(free, bits):
            on[i][j] = bit
        a_mat, a_off = np.eye(lo.size), np.zeros(lo.size)
        rows, rhs = [], []
        for (w, b), s in zip(mats[:-1], on):
            a_mat, a_off = w @ a_mat, w @ a_off + b
            rows.append(np.where(s[:, None], -a_mat, a_mat))
            rhs.append(np.where(s, a_off, -a_off))
            a_mat, a_off = a_mat * s[:, None], a_off * s
        w, b = mats[-1]
        a_mat, a_off = w @ a_mat, w @ a_off + b
        a_ub, b_ub = np.vstack(rows), np.concatenate(rhs)
        res = linprog(c @ a_mat, A_ub=a_ub, b_ub=b_ub, bounds=list(zip(lo, hi)), method="highs")
        if res.status == 0:
            best = min(best, res.fun + float(c @ a_off))
    return best


def dual(net: lv.Network, ball: lv.LinfBall) -> lv.Bounds:
    with torch.no_grad():
        return lv.dual_bounds(net, ball)


def assert_sound(result: MILPResult, net: lv.Network, ball: lv.LinfBall, c: np.ndarray) -> None:
    """What every result with a witness must satisfy: a point of the ball, its true value, bound ≤ value."""
    assert result.witness is not None and result.witness.shape == net.input_shape
    lo, hi = ball.lo[0].double().numpy(), ball.hi[0].double().numpy()
    assert (result.witness >= lo).all() and (result.witness <= hi).all()
    assert bool(ball.contains(torch.as_tensor(result.witness).view(1, 1, *net.input_shape)).all())
    assert result.value == pytest.approx(torch_value(net, c, result.witness), abs=1e-6)
    assert float(c @ result.output) == result.value
    assert not result.bound > result.value  # nan passes: no bound claimed


def close(a: float, b: float, tol: float = 1e-6) -> bool:
    return abs(a - b) <= tol * (1 + abs(a) + abs(b))


# --- (1) the optimum is the true minimum -----------------------------------------------------------


@settings(max_examples=20)
@given(data=st.data())
def test_one_input_optimum_equals_piecewise_linear_enumeration(data):
    net, ball, _ = small_net(data, n_in=1, max_depth=3)
    c = objective(data, net.n_outputs)
    result = solve_milp(net, ball, c, dual(net, ball))
    exact = exact_min_1d(net, float(ball.lo), float(ball.hi), c)
    assert result.optimal, result.status
    assert close(result.value, exact), (result.value, exact)
    assert result.bound <= exact + 1e-6 * (1 + abs(exact))
    assert close(result.bound, exact, 1e-5)
    assert_sound(result, net, ball, c)


@settings(max_examples=15)
@given(data=st.data())
def test_optimum_equals_activation_pattern_enumeration(data):
    net, ball, _ = small_net(data, n_in=data.draw(st.integers(2, 3), label="n_in"), max_width=5)
    c = objective(data, net.n_outputs)
    exact = pattern_min(net, ball, c)
    assume(exact is not None)
    result = solve_milp(net, ball, c, dual(net, ball))
    assert result.optimal, result.status
    assert close(result.value, exact), (result.value, exact)
    assert result.bound <= exact + 1e-6 * (1 + abs(exact))
    assert close(result.bound, exact, 1e-5)


@settings(max_examples=10)
@given(data=st.data())
def test_two_input_optimum_within_lipschitz_of_a_grid(data):
    """On a grid of spacing h: grid min − L h/2 ≤ true min ≤ grid min (L: the l_inf Lipschitz constant)."""
    net, ball, _ = small_net(data, n_in=2)
    c = objective(data, net.n_outputs)
    result = solve_milp(net, ball, c, dual(net, ball))
    assert result.optimal, result.status
    n = 301
    t = torch.linspace(0, 1, n, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
    pts = ball.lo + grid * (ball.hi - ball.lo)
    with torch.no_grad():
        grid_min = float((net(pts).double() @ torch.as_tensor(c)).min())
    lipschitz = np.abs(c)
    for w, _ in reversed(net.sparse()):
        lipschitz = abs(w).T @ lipschitz
    spacing = float((ball.hi - ball.lo).max()) / (n - 1)
    assert result.value <= grid_min + 1e-9 * (1 + abs(grid_min))
    assert result.value >= grid_min - lipschitz.sum() * spacing / 2 - 1e-9
    assert result.bound <= grid_min + 1e-9 * (1 + abs(grid_min))


def test_known_optimum_of_a_hand_made_net():
    """f(x) = relu(x) + relu(−x) − 0.5 = |x| − 0.5 on [−1, 2]: min −0.5 at 0, max 1.5 at 2; both cross."""
    model = torch.nn.Sequential(torch.nn.Linear(1, 2), torch.nn.ReLU(), torch.nn.Linear(2, 1))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0], [-1.0]]))
        model[0].bias.zero_()
        model[2].weight.fill_(1.0)
        model[2].bias.fill_(-0.5)
    net = lv.Network.from_torch(model)
    ball = lv.LinfBall(torch.tensor([[0.5]], dtype=torch.float64), 1.5)
    bounds = lv.interval_bounds(net, ball)
    assert int(bounds.n_crossing().sum()) == 2
    low, high = solve_milp(net, ball, np.array([[1.0], [-1.0]]), bounds)
    assert low.optimal and low.value == pytest.approx(-0.5, abs=1e-9) and low.bound == pytest.approx(-0.5, abs=1e-6)
    assert float(low.witness[0]) == pytest.approx(0.0, abs=1e-9)
    assert high.optimal and high.value == pytest.approx(-1.5, abs=1e-9)
    assert float(high.witness[0]) == pytest.approx(2.0)
    assert lv.solve_lp(net, ball, np.ones(1), bounds).value <= low.bound + 1e-9


def test_milp_closes_the_gap_the_lp_leaves():
    """A 2-6-1 net whose triangle LP is 0.39 below the true minimum: the MILP is not the relaxation."""
    net = lv.Network.from_torch(random_mlp([2, 6, 1], seed=10))
    ball = lv.LinfBall(torch.zeros(1, 2, dtype=torch.float64), 1.0)
    bounds = lv.interval_bounds(net, ball)
    c = np.ones(1)
    result = solve_milp(net, ball, c, bounds)
    exact = pattern_min(net, ball, c)
    assert result.optimal and close(result.value, exact) and close(result.bound, exact, 1e-5)
    assert lv.solve_lp(net, ball, c, bounds).value < exact - 0.3


# --- (2), (3): the chain of §6 and checked witnesses -----------------------------------------------


@settings(max_examples=15)
@given(case=dense_cases(max_depth=3, max_width=8, batch=1), data=st.data())
def test_chain_dual_lp_milp_samples(case, data):
    net, ball = case.net, case.ball
    c = objective(data, net.n_outputs)
    bounds = dual(net, ball)
    result = solve_milp(net, ball, c, bounds)
    assert result.optimal, result.status
    assert_sound(result, net, ball, c)
    with torch.no_grad():
        J = float(lv.dual_objective(net, ball, torch.as_tensor(c).view(1, 1, -1), bounds))
    lp = lv.solve_lp(net, ball, c, bounds)
    assert lp.optimal
    tol = 1e-6 * (1 + abs(result.value))
    assert J <= lp.value + tol
    assert lp.value <= result.bound + tol  # the MILP's root relaxation is the LP's triangle
    assert result.bound <= result.value
    gen = torch.Generator().manual_seed(case.seed)
    pts = torch.cat([ball.sample(200, generator=gen), ball.sample(200, vertices=True, generator=gen)], 1)[0]
    with torch.no_grad():
        sampled = (net(pts).double() @ torch.as_tensor(c)).min()
    assert result.value <= float(sampled) + 1e-9 * (1 + abs(float(sampled)))


@settings(max_examples=8)
@given(
    channels=st.integers(1, 2),
    side=st.integers(4, 6),
    seed=st.integers(0, 2**20),
    eps=st.sampled_from([0.02, 0.05, 0.1]),
)
def test_conv_net_milp_is_sound_and_below_samples(channels, side, seed, eps):
    model, shape = random_convnet(channels, side, seed)
    net = lv.Network.from_torch(model, input_shape=shape)
    x = torch.rand(1, *shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    ball = lv.LinfBall(x, eps, 0.0, 1.0)
    bounds = dual(net, ball)
    c = np.array([1.0, -1.0, 0.5, 0.0])
    result = solve_milp(net, ball, c, bounds, time_limit=20)
    assert result.optimal, result.status
    assert_sound(result, net, ball, c)
    assert lv.solve_lp(net, ball, c, bounds).value <= result.bound + 1e-6 * (1 + abs(result.bound))
    pts = ball.sample(300, generator=torch.Generator().manual_seed(seed))[0]
    with torch.no_grad():
        assert result.value <= float((net(pts).double() @ torch.as_tensor(c)).min()) + 1e-9


def test_margin_objectives_give_verdicts_consistent_with_samples():
    net = lv.Network.from_torch(random_mlp([3, 8, 8, 4], seed=5))
    x = torch.rand(1, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        y = int(net(x).argmax())
    verdicts = {}
    for eps in (1e-3, 3.0):
        ball = lv.LinfBall(x, eps)
        results = solve_milp(net, ball, lv.margin_objectives(torch.tensor([y]), 4)[0], dual(net, ball))
        assert len(results) == 4 and all(r.optimal for r in results)
        assert results[y].value == 0.0 and results[y].verdict == "unknown"  # row y is c = 0: 0 is not > 0
        for t, r in enumerate(results):
            with torch.no_grad():
                margin = net(torch.as_tensor(r.witness).view(1, 3))[0]
            assert r.value == pytest.approx(float(margin[y] - margin[t]), abs=1e-6)
        verdicts[eps] = [r.verdict for r in results]
    assert verdicts[1e-3] == ["unknown"] * 4  # no violation; only a safe bound may verify
    assert "violated" in verdicts[3.0]
    for t in (t for t, v in enumerate(verdicts[3.0]) if v == "violated"):
        with torch.no_grad():  # a counterexample: the witness ranks t above y
            margin = net(torch.as_tensor(results[t].witness).view(1, 3))[0]
        assert margin[t] > margin[y]


def test_verdict_never_reads_the_unchecked_solver_bound():
    assert MILPResult(value=2.0, bound=0.5, status="optimal").verdict == "unknown"
    assert MILPResult(value=0.0, bound=0.0, status="optimal").verdict == "unknown"
    assert MILPResult(value=-1.0, bound=-2.0, status="optimal").verdict == "violated"
    assert MILPResult(value=-1.0, bound=math.nan, status="time limit").verdict == "violated"
    assert MILPResult(value=1.0, bound=-1.0, status="time limit").verdict == "unknown"
    assert MILPResult(value=math.nan, bound=math.nan, status="infeasible").verdict == "unknown"


def test_forward64_is_the_network():
    net = lv.Network.from_torch(random_mlp([4, 7, 5, 3], seed=2))
    x = torch.rand(4, dtype=torch.float64)
    pre = forward64(net.sparse(), x.numpy())
    with torch.no_grad():
        expected = net.pre_activations(x.view(1, 4))
    for got, want in zip(pre, expected, strict=True):
        np.testing.assert_allclose(got, want[0].double().numpy(), rtol=1e-12, atol=1e-12)


# --- (4) interrupted solves are never proven optima --------------------------------------------------


def hard_case() -> tuple[lv.Network, lv.LinfBall, lv.Bounds]:
    net = lv.Network.from_torch(random_mlp([10, 40, 40, 1], seed=3))
    ball = lv.LinfBall(torch.rand(1, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64), 0.5)
    bounds = dual(net, ball)
    assert int(bounds.n_crossing().sum()) > 50
    return net, ball, bounds


@pytest.mark.parametrize(
    "limit", [dict(time_limit=1e-4), dict(time_limit=0.05), dict(node_limit=0), dict(node_limit=1)]
)
def test_interrupted_solve_is_not_an_optimum(limit):
    net, ball, bounds = hard_case()
    c = np.ones(1)
    result = solve_milp(net, ball, c, bounds, **limit)
    assert result.status in ("time limit", "node limit")
    assert not result.optimal
    assert math.isnan(result.bound) or result.bound <= result.value
    # The default seed (the ball's centre) is an incumbent from the start: the value is attained.
    assert result.value <= torch_value(net, c, ball.center[0].numpy()) + 1e-9
    assert_sound(result, net, ball, c)
    # A bound claimed by an interrupted solve is still below every attained value (the optimum is −0.3647).
    pts = ball.sample(2000, generator=torch.Generator().manual_seed(2))[0]
    with torch.no_grad():
        assert not result.bound > float((net(pts).double() @ torch.as_tensor(c)).min())
    assert not result.bound > -0.3646


def test_start_point_seeds_the_search():
    net, ball, bounds = hard_case()
    c = np.ones(1)
    gen = torch.Generator().manual_seed(1)
    pts = ball.sample(500, generator=gen)[0]
    with torch.no_grad():
        best = pts[(net(pts).double() @ torch.as_tensor(c)).argmin()]
    result = solve_milp(net, ball, c, bounds, time_limit=1e-4, start=best)
    assert result.status == "time limit" and result.value <= torch_value(net, c, best.numpy()) + 1e-9
    assert_sound(result, net, ball, c)
    with pytest.raises(ValueError, match="input shape"):
        solve_milp(net, ball, c, bounds, start=np.zeros(3))


# --- (5) invalid bounds and bad arguments -------------------------------------------------------------


def tiny_net() -> lv.Network:
    """ẑ_2 = x + 5 (one unit), f = relu(ẑ_2): ẑ_2 ∈ [4.9, 5.1] for x ∈ [−0.1, 0.1]."""
    model = torch.nn.Sequential(torch.nn.Linear(1, 1), torch.nn.ReLU(), torch.nn.Linear(1, 1))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[0].bias.fill_(5.0)
        model[2].weight.fill_(1.0)
        model[2].bias.fill_(0.0)
    return lv.Network.from_torch(model)


def one_layer_bounds(lower: float, upper: float) -> lv.Bounds:
    """Bounds [lower, upper] on tiny_net's hidden unit (and loose ones on its output)."""
    lows, highs = (torch.tensor([[lower]]), torch.tensor([[-10.0]])), (torch.tensor([[upper]]), torch.tensor([[10.0]]))
    return lv.Bounds(lows, highs)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_bounds_are_reported_not_solved(bad):
    net, ball = tiny_net(), lv.LinfBall(torch.zeros(1, 1, dtype=torch.float64), 0.1)
    result = solve_milp(net, ball, np.ones(1), one_layer_bounds(bad, 6.0))
    assert math.isnan(result.value) and math.isnan(result.bound) and result.witness is None
    assert not result.optimal and result.status.startswith("invalid bounds") and "NaN or infinite" in result.status


def test_bounds_excluding_the_whole_ball_are_infeasible():
    net, ball = tiny_net(), lv.LinfBall(torch.zeros(1, 1, dtype=torch.float64), 0.1)
    result = solve_milp(net, ball, np.ones(1), one_layer_bounds(-1.0, 1.0))
    assert result.status == "infeasible" and math.isnan(result.value) and math.isnan(result.bound)


def test_bounds_caught_wrong_at_the_witness_give_no_bound():
    """[4.95, 5.2] calls the unit stable but misses ẑ_2 ∈ [4.9, 4.95): the MILP's 'optimum' 4.95 is no bound."""
    net, ball = tiny_net(), lv.LinfBall(torch.zeros(1, 1, dtype=torch.float64), 0.1)
    result = solve_milp(net, ball, np.ones(1), one_layer_bounds(4.95, 5.2))
    assert result.status.startswith("invalid bounds") and "hidden layer 0" in result.status
    assert math.isnan(result.bound) and not result.optimal
    assert result.value == pytest.approx(4.9)  # still an attained value: the witness x = −0.1
    assert float(result.witness[0]) == pytest.approx(-0.1)


def test_network_without_hidden_layers_is_an_lp():
    model = torch.nn.Linear(3, 2)
    net = lv.Network.from_torch(model)
    x = torch.rand(1, 3, dtype=torch.float64)
    ball = lv.LinfBall(x, 0.2)
    c = np.array([1.0, -2.0])
    result = solve_milp(net, ball, c, lv.interval_bounds(net, ball))
    w, b = net.sparse()[0]
    v = w.T @ c
    exact = float(v @ x[0].numpy() - np.abs(v).sum() * 0.2 + c @ b)
    assert result.optimal and result.value == pytest.approx(exact) and result.bound == pytest.approx(exact)


def test_bad_milp_arguments_raise():
    net = lv.Network.from_torch(random_mlp([2, 3, 2], seed=1))
    ball = lv.LinfBall(torch.zeros(2, 2, dtype=torch.float64), 0.1)
    bounds = dual(net, ball)
    with pytest.raises(ValueError, match="one example"):
        solve_milp(net, ball, np.ones(2), bounds)
    one_ball, one_bounds = ball.select(0), bounds.select(0)
    with pytest.raises(ValueError, match="2 entries"):
        solve_milp(net, one_ball, np.ones(3), one_bounds)
    with pytest.raises(ValueError, match="time_limit"):
        solve_milp(net, one_ball, np.ones(2), one_bounds, time_limit=0)
    with pytest.raises(ValueError, match="shape"):
        solve_milp(net, one_ball, np.ones((1, 1, 2)), one_bounds)


def test_model_is_reused_across_objectives():
    net = lv.Network.from_torch(random_mlp([2, 6, 3], seed=4))
    ball = lv.LinfBall(torch.rand(1, 2, dtype=torch.float64), 0.5)
    bounds = dual(net, ball)
    model = build_milp(net, ball, bounds)
    objectives = np.random.default_rng(0).normal(size=(3, 3))
    reused = [model.solve(c) for c in objectives]
    fresh = [solve_milp(net, ball, c, bounds) for c in objectives]
    assert reused[0].build_time > 0 and reused[1].build_time == 0.0
    for r, f in zip(reused, fresh):
        assert r.optimal and f.optimal and r.value == pytest.approx(f.value, abs=1e-9)


def test_a_per_solve_time_limit_applies_to_that_solve_only():
    net, ball, bounds = hard_case()
    model = build_milp(net, ball, bounds)
    c = np.ones(1)
    cut = model.solve(c, time_limit=1e-4)
    assert cut.status == "time limit" and not cut.optimal
    full = model.solve(c)
    assert full.optimal and abs(full.value - (-0.3647)) < 1e-3


def test_a_start_point_returned_as_the_optimum_is_flagged():
    """Seeded at the minimiser of an affine net, the solver hands the seed back: flagged, never a certificate."""
    net = lv.Network.from_torch(torch.nn.Sequential(torch.nn.Linear(2, 2)).double())
    with torch.no_grad():
        net.blocks[0].ops[0].weight.copy_(torch.tensor([[1.0, 2.0], [0.0, 0.0]]))
        net.blocks[0].ops[0].bias.zero_()
    ball = lv.LinfBall(torch.zeros(1, 2, dtype=torch.float64), 1.0)
    bounds = lv.dual_bounds(net, ball)
    c = np.array([1.0, 0.0])
    corner = ball.lo[0].numpy()  # the box the MILP sees is rounded outward: its corner is the minimiser
    seeded = solve_milp(net, ball, c, bounds, start=corner)
    assert seeded.value == pytest.approx(-3.0) and seeded.start_returned and seeded.verdict == "violated"
    elsewhere = solve_milp(net, ball, c, bounds, start=np.array([1.0, 1.0]))
    assert elsewhere.value == pytest.approx(-3.0) and not elsewhere.start_returned
