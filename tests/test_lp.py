"""The LP of eq. 19: the CVXPY and direct HiGHS builds, their results, and failure reporting."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import lpverify as lv
from conftest import random_convnet, random_mlp
from lpverify.relu import split_face
from strategies import any_case, lp_ball_cases, sampled_pre_activations


def one(case, i=0):
    with torch.no_grad():
        bounds = lv.dual_bounds(case.net, case.ball)
    return case.ball.select(i), bounds.select(i)


@settings(max_examples=15)
@given(case=any_case(batch=1), data=st.data())
def test_cvxpy_and_direct_highs_agree(case, data):
    ball, bounds = one(case)
    c = np.asarray(data.draw(st.lists(st.floats(-2, 2), min_size=case.net.n_outputs, max_size=case.net.n_outputs)))
    direct = lv.solve_lp(case.net, ball, c, bounds, backend="highs")
    readable = lv.solve_lp(case.net, ball, c, bounds, backend="cvxpy")
    assert direct.optimal and readable.optimal
    assert direct.value == pytest.approx(readable.value, rel=1e-6, abs=1e-7)


@given(case=any_case(batch=1))
def test_solution_is_a_point_of_the_relaxation(case):
    ball, bounds = one(case)
    c = np.linspace(-1, 1, case.net.n_outputs)
    result = lv.solve_lp(case.net, ball, c, bounds)
    assert result.optimal and result.status == "optimal"
    lo, hi = ball.lo[0].numpy(), ball.hi[0].numpy()
    assert (result.input >= lo - 1e-7).all() and (result.input <= hi + 1e-7).all()
    assert float(c @ result.output) == pytest.approx(result.value, abs=1e-7)
    assert len(result.duals) == len(case.net.blocks) - 1


@settings(max_examples=10)
@given(case=any_case(batch=1))
def test_interior_point_and_simplex_agree(case):
    ball, bounds = one(case)
    c = np.linspace(1, -1, case.net.n_outputs)
    simplex = lv.HighsLP(case.net, ball, bounds, solver="simplex").solve(c)
    ipm = lv.HighsLP(case.net, ball, bounds, solver="ipm").solve(c)
    assert simplex.optimal and ipm.optimal
    assert ipm.value == pytest.approx(simplex.value, rel=1e-6, abs=1e-7)


def test_solver_follows_model_size():
    assert lv.lp.choose_solver(10_000) == "simplex"
    assert lv.lp.choose_solver(lv.lp.IPM_NONZEROS + 1) == "ipm"
    with pytest.raises(ValueError, match="unknown LP solver"):
        lv.HighsLP(tiny_net(), lv.LinfBall(torch.zeros(1, 1), 0.1), lv.interval_bounds(tiny_net(), lv.LinfBall(torch.zeros(1, 1), 0.1)), solver="barrier")


@given(case=any_case(batch=1))
def test_warm_started_solves_equal_cold_solves(case):
    ball, bounds = one(case)
    gen = np.random.default_rng(case.seed)
    objectives = gen.normal(size=(4, case.net.n_outputs))
    model = lv.build_lp(case.net, ball, bounds)
    warm = [model.solve(c).value for c in objectives]
    cold = [lv.solve_lp(case.net, ball, c, bounds).value for c in objectives]
    np.testing.assert_allclose(warm, cold, rtol=1e-7, atol=1e-7)


def test_without_crossing_units_lp_duals_are_the_dual_network():
    """With no crossing unit, the multipliers of ẑ_{i+1} = W_i z_i + b_i are unique and equal ν (eq. 5–7)."""
    net = lv.Network.from_torch(random_mlp([3, 6, 5, 2], seed=11))
    x = torch.rand(1, 3, dtype=torch.float64)
    ball = lv.LinfBall(x, 1e-5)
    with torch.no_grad():
        bounds = lv.dual_bounds(net, ball)
    assert int(bounds.n_crossing().sum()) == 0
    c = np.array([1.0, -2.0])
    mats = net.sparse()
    nus, nu = [], -c
    for i in range(len(mats) - 1, 0, -1):
        slope = (bounds.lower[i - 1][0] >= 0).double().numpy()
        nu = slope * (mats[i][0].T @ nu)
        nus.insert(0, nu)
    for backend in lv.lp.BACKENDS:
        result = lv.solve_lp(net, ball, c, bounds, backend=backend)
        for got, expected in zip(result.duals, nus):
            np.testing.assert_allclose(got, expected, atol=1e-7)
        with torch.no_grad():
            J = lv.dual_objective(net, ball, torch.tensor(c).view(1, 1, 2), bounds)
        assert result.value == pytest.approx(float(J), abs=1e-8)


def tiny_net() -> lv.Network:
    """ẑ_2 = x + 5 (one unit), f = ẑ_2 relu'd: reachable ẑ_2 ∈ [4.9, 5.1] for x ∈ [-0.1, 0.1]."""
    model = torch.nn.Sequential(torch.nn.Linear(1, 1), torch.nn.ReLU(), torch.nn.Linear(1, 1))
    with torch.no_grad():
        for layer in (model[0], model[2]):
            layer.weight.fill_(1.0)
        model[0].bias.fill_(5.0)
        model[2].bias.fill_(0.0)
    return lv.Network.from_torch(model)


def test_infeasible_relaxation_is_reported_not_bounded():
    """Bounds [−1, 1] on a unit that is always near 5 leave the triangle empty: no value."""
    net, ball = tiny_net(), lv.LinfBall(torch.zeros(1, 1, dtype=torch.float64), 0.1)
    wrong = lv.Bounds((torch.tensor([[-1.0]]), torch.tensor([[-10.0]])), (torch.tensor([[1.0]]), torch.tensor([[10.0]])))
    for backend in lv.lp.BACKENDS:
        result = lv.solve_lp(net, ball, np.ones(1), wrong, backend=backend)
        assert not result.optimal and math.isnan(result.value)
        assert result.status.startswith("not optimal")


def test_nan_bounds_are_reported_not_solved():
    net, ball = tiny_net(), lv.LinfBall(torch.zeros(1, 1, dtype=torch.float64), 0.1)
    nan = lv.Bounds((torch.tensor([[float("nan")]]), torch.zeros(1, 1)), (torch.ones(1, 1), torch.ones(1, 1)))
    for backend in lv.lp.BACKENDS:
        result = lv.solve_lp(net, ball, np.ones(1), nan, backend=backend)
        assert not result.optimal and math.isnan(result.value) and "NaN" in result.status


def test_tiny_net_lp_is_exact():
    net, ball = tiny_net(), lv.LinfBall(torch.zeros(1, 1, dtype=torch.float64), 0.1)
    with torch.no_grad():
        bounds = lv.dual_bounds(net, ball)
    assert lv.solve_lp(net, ball, np.ones(1), bounds).value == pytest.approx(4.9)
    assert lv.solve_lp(net, ball, -np.ones(1), bounds).value == pytest.approx(-5.1)


def test_bad_lp_arguments_raise():
    net = lv.Network.from_torch(random_mlp([2, 3, 2], seed=1))
    ball = lv.LinfBall(torch.zeros(2, 2, dtype=torch.float64), 0.1)
    with torch.no_grad():
        bounds = lv.dual_bounds(net, ball)
    with pytest.raises(ValueError, match="one example"):
        lv.solve_lp(net, ball, np.ones(2), bounds)
    with pytest.raises(ValueError, match="2 entries"):
        lv.solve_lp(net, ball.select(0), np.ones(3), bounds.select(0))
    with pytest.raises(ValueError, match="unknown LP backend"):
        lv.solve_lp(net, ball.select(0), np.ones(2), bounds.select(0), backend="gurobi")


@settings(max_examples=8)
@given(case=lp_ball_cases(batch=1))
def test_lp_over_an_lp_ball_lies_between_the_dual_and_the_sampled_values(case):
    """l1 keeps the LP linear (HiGHS through CVXPY); l2 makes it a cone program (Clarabel)."""
    with torch.no_grad():
        bounds = lv.dual_bounds(case.net, case.ball)
        c = torch.randn(1, 2, case.net.n_outputs, generator=torch.Generator().manual_seed(case.seed), dtype=torch.float64)
        J = lv.dual_objective(case.net, case.ball, c, bounds)[0]
        logits = sampled_pre_activations(case, n=200)[-1][0].flatten(1)
        sampled = (logits @ c[0].T).min(0).values
    model = lv.build_lp(case.net, case.ball, bounds)
    assert isinstance(model, lv.CvxpyLP)
    for j in range(2):
        r = model.solve(c[0, j])
        assert r.optimal
        assert float(J[j]) <= r.value + 1e-6 and r.value <= float(sampled[j]) + 1e-6
        z = torch.as_tensor(r.input).view(1, 1, *case.ball.shape)
        assert case.ball.contains(z, tol=1e-6).all()
    with pytest.raises(TypeError, match="cvxpy"):
        lv.HighsLP(case.net, case.ball, bounds)


def crossing_case(kind: str, seed: int) -> tuple[lv.Network, lv.LinfBall, lv.Bounds]:
    """A random dense or conv net and a ball wide enough that most hidden units cross zero."""
    gen = torch.Generator().manual_seed(seed)
    if kind == "dense":
        net = lv.Network.from_torch(random_mlp([6, 32, 32, 24, 5], seed=seed).double())
        ball = lv.LinfBall(torch.rand(1, 6, generator=gen, dtype=torch.float64), 1.0)
    else:
        model, shape = random_convnet(1, 10, seed)
        net = lv.Network.from_torch(model.double(), input_shape=shape)
        ball = lv.LinfBall(torch.rand(1, *shape, generator=gen, dtype=torch.float64), 0.5)
    with torch.no_grad():
        bounds = lv.dual_bounds(net, ball)
    return net, ball, bounds


@pytest.mark.parametrize("kind", ["dense", "conv"])
@pytest.mark.parametrize("seed", range(3))
def test_direct_model_equals_cvxpy_with_many_crossing_units(kind, seed):
    """Both HiGHS algorithms on the split model reach CVXPY's optimum; the safe bound sits just below it."""
    net, ball, bounds = crossing_case(kind, seed)
    hidden = sum(math.prod(s) for s in net.hidden_shapes)
    assert int(bounds.n_crossing().sum()) >= 0.6 * hidden
    objectives = np.random.default_rng(seed).normal(size=(3, net.n_outputs))
    readable = lv.CvxpyLP(net, ball, bounds)
    expected = [readable.solve(c).value for c in objectives]
    for solver in lv.lp.SOLVERS:
        model = lv.HighsLP(net, ball, bounds, solver=solver)
        for c, value in zip(objectives, expected):
            r = model.solve(c)
            assert r.optimal and model.solver == solver
            assert r.value == pytest.approx(value, rel=1e-6, abs=1e-7)
            assert r.bound <= value + 1e-9 * max(1.0, abs(value))
            assert value - r.bound <= 1e-6 * max(1.0, abs(value))
            # The bound is the safe bound of the reported multipliers, not the solver's value.
            nus = [torch.as_tensor(d).view(1, 1, *s) for d, s in zip(r.duals, net.hidden_shapes)]
            with torch.no_grad():
                again = lv.objective_from_multipliers(net, ball, torch.as_tensor(c).view(1, 1, -1), bounds, nus)
            assert r.bound == pytest.approx(float(again), rel=1e-12, abs=1e-12)


def test_split_face_passes_through_the_triangles_outer_vertices():
    """With ẑ = z + w, the face a z − d w ≤ −dℓ holds with equality at (ℓ, 0) and (u, u) and strictly at (0, 0)."""
    lower, upper = np.array([-2.0, -0.5, -1e-3, -7.0]), np.array([1.0, 3.0, 5.0, 1e-4])
    a, d, offset = split_face(lower, upper)
    np.testing.assert_allclose(a * 0.0 - d * lower, offset, rtol=1e-15)  # (ẑ, z) = (ℓ, 0): z = 0, w = ℓ
    np.testing.assert_allclose(a * upper - d * 0.0, offset, rtol=1e-15)  # (u, u): z = u, w = 0
    assert (offset > 0).all()
    np.testing.assert_allclose(a + d, 1.0, rtol=1e-15)


def test_solve_batch_in_worker_processes_equals_one_model_per_example():
    """Two examples on four workers: each example's three objectives are split in two parts, results kept in order."""
    net = lv.Network.from_torch(random_mlp([4, 16, 16, 3], seed=3).double())
    gen = torch.Generator().manual_seed(3)
    ball = lv.LinfBall(torch.rand(2, 4, generator=gen, dtype=torch.float64), 0.5)
    with torch.no_grad():
        bounds = lv.dual_bounds(net, ball)
    c = torch.randn(2, 3, 3, generator=gen, dtype=torch.float64)
    batched = lv.solve_batch(net, ball, c, bounds, workers=4)
    assert [len(r) for r in batched] == [3, 3]
    for b in range(2):
        for got, want in zip(batched[b], lv.solve_lp(net, ball.select(b), c[b], bounds.select(b))):
            assert got.optimal and got.value == pytest.approx(want.value, rel=1e-9, abs=1e-9)
            assert got.bound == pytest.approx(want.bound, rel=1e-9, abs=1e-9)
    with pytest.raises(ValueError, match="shape"):
        lv.solve_batch(net, ball, c[0], bounds)
