"""LP-all: layer-by-layer LP bounds on every unit."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings

import lpverify as lv
from conftest import assert_bounds_close, random_mlp
from strategies import any_case, lp_ball_cases, sampled_pre_activations


def _inside(inner: lv.Bounds, outer: lv.Bounds, tol: float = 1e-9) -> bool:
    return all(bool((a >= b - tol).all()) for a, b in zip(inner.lower, outer.lower)) and all(
        bool((a <= b + tol).all()) for a, b in zip(inner.upper, outer.upper)
    )


@settings(max_examples=15)
@given(case=any_case(batch=1))
def test_lp_all_bounds_lie_inside_the_dual_bounds_and_contain_every_reachable_value(case):
    with torch.no_grad():
        dual = lv.dual_bounds(case.net, case.ball)
        tight = lv.lp_bounds(case.net, case.ball, dual)
        reached = sampled_pre_activations(case)
    assert _inside(tight, dual)
    assert tight.contains(reached, tol=1e-9)
    # The first layer is exact already: LP-all keeps it.
    torch.testing.assert_close(tight.lower[0], dual.lower[0])


@settings(max_examples=10)
@given(case=any_case(batch=1))
def test_lp_all_solving_every_unit_agrees_on_the_units_that_matter(case):
    """Stable units keep their dual bounds by default; solving them too changes no crossing unit's relaxation."""
    with torch.no_grad():
        dual = lv.dual_bounds(case.net, case.ball)
        some = lv.lp_bounds(case.net, case.ball, dual)
        every = lv.lp_bounds(case.net, case.ball, dual, all_units=True)
    assert _inside(every, some)
    for i in range(len(some) - 1):
        assert torch.equal(some.crossing(i), every.crossing(i))
    torch.testing.assert_close(every.lower[-1], some.lower[-1], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(every.upper[-1], some.upper[-1], rtol=1e-6, atol=1e-6)


def test_lp_all_on_the_logits_equals_the_lp_over_the_same_hidden_bounds():
    net = lv.Network.from_torch(random_mlp([3, 12, 12, 4], seed=5).double())
    x = torch.rand(2, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ball = lv.LinfBall(x, 0.3)
    tight = lv.lp_bounds(net, ball)
    for b in range(2):
        model = lv.build_lp(net, ball.select(b), tight.select(b))
        for j in range(4):
            c = np.eye(4)[j]
            lp = model.solve(c)
            assert lp.optimal
            # The logits' bound is the LP's safe bound: at most the optimum, and within 1e-9 of it.
            assert float(tight.lower[-1][b, j]) <= lp.value
            assert lp.value - float(tight.lower[-1][b, j]) <= 1e-9 * max(1, abs(lp.value))


def test_a_failed_lp_keeps_the_starting_bound(monkeypatch):
    net = lv.Network.from_torch(random_mlp([3, 10, 10, 2], seed=2).double())
    ball = lv.LinfBall(torch.rand(1, 3, dtype=torch.float64), 0.5)
    dual = lv.dual_bounds(net, ball)
    failed = lv.LPResult(value=float("nan"), status="not optimal: forced", time=0.0)
    monkeypatch.setattr(lv.HighsLP, "solve", lambda self, c, time_limit=None: failed)
    with pytest.warns(UserWarning, match="gave no safe bound"):
        kept = lv.lp_bounds(net, ball, dual)
    for a, b in zip(kept.lower + kept.upper, dual.lower + dual.upper):
        assert torch.equal(a, b.detach())


@settings(max_examples=8)
@given(case=lp_ball_cases(batch=1))
def test_lp_all_over_an_lp_ball_uses_the_conic_lp_and_stays_sound(case):
    with torch.no_grad():
        dual = lv.dual_bounds(case.net, case.ball)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tight = lv.lp_bounds(case.net, case.ball, dual)
        reached = sampled_pre_activations(case, n=100)
    assert _inside(tight, dual)
    assert tight.contains(reached, tol=1e-6)


def test_a_spent_time_limit_keeps_the_starting_bounds():
    net = lv.Network.from_torch(random_mlp([3, 10, 10, 2], seed=4).double())
    ball = lv.LinfBall(torch.rand(1, 3, dtype=torch.float64), 0.5)
    dual = lv.dual_bounds(net, ball)
    with pytest.warns(UserWarning, match="time limit"):
        kept = lv.lp_bounds(net, ball, dual, time_limit=0.0)
    for a, b in zip(kept.lower + kept.upper, dual.lower + dual.upper):
        assert torch.equal(a, b.detach())


def test_lp_all_direct_model_equals_cvxpy_with_many_crossing_units():
    """Layer by layer, the warm-started split HiGHS model and the CVXPY model give the same bounds."""
    net = lv.Network.from_torch(random_mlp([5, 16, 16, 3], seed=6).double())
    ball = lv.LinfBall(torch.rand(1, 5, generator=torch.Generator().manual_seed(6), dtype=torch.float64), 1.0)
    with torch.no_grad():
        dual = lv.dual_bounds(net, ball)
        fast = lv.lp_bounds(net, ball, dual, backend="highs")
        readable = lv.lp_bounds(net, ball, dual, backend="cvxpy")
    assert int(dual.n_crossing().sum()) >= 28
    assert_bounds_close(fast, readable, rtol=1e-6, atol=1e-7)
    # LP-all did tighten: the second layer and the logits move inside the dual bounds.
    for i in (1, 2):
        assert bool((fast.lower[i] > dual.lower[i] + 1e-6).any()) and bool((fast.upper[i] < dual.upper[i] - 1e-6).any())
