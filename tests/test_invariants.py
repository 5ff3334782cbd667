"""The chain every bound method must respect, on the same network and numbers (MATH.md §6):

    J(c, any α) ≤ J(c, α*) ≤ LP(c) ≤ LP over LP-all bounds ≤ MILP = min ≤ cᵀ f(x')

for every sampled or attacked x' of the ball,

and interval/dual bounds both contain every reachable pre-activation.
"""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import lpverify as lv
from lpverify.attacks import pgd_objective
from strategies import any_case, sampled_pre_activations

TOL = 1e-7


@settings(max_examples=30)
@given(case=any_case(batch=1), data=st.data())
def test_weak_duality_and_soundness_chain(case, data):
    net, ball = case.net, case.ball
    with torch.no_grad():
        bounds = lv.dual_bounds(net, ball)
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**20)))
    c = torch.randn(1, 3, net.n_outputs, generator=gen, dtype=torch.float64)
    alphas = [[torch.rand(1, *s, generator=gen, dtype=torch.float64) for s in net.hidden_shapes] for _ in range(3)]
    with torch.no_grad():
        J_default = lv.dual_objective(net, ball, c, bounds)[0]
        J_random = [lv.dual_objective(net, ball, c, bounds, a)[0] for a in alphas]
        logits = sampled_pre_activations(case)[-1][0].flatten(1)  # (n, n_out)
        sampled_min = (logits @ c[0].T).min(0).values  # (m,)
    model = lv.build_lp(net, ball, bounds)
    for j in range(c.shape[1]):
        lp = model.solve(c[0, j])
        assert lp.optimal
        assert J_default[j] <= lp.value + TOL
        for J in J_random:
            assert J[j] <= lp.value + TOL
        assert lp.value <= sampled_min[j] + TOL


@settings(max_examples=10)
@given(case=any_case(batch=1))
def test_tighter_bounds_give_a_tighter_lp(case):
    """Tighter (intersected) bounds give a smaller relaxation: LP(intersection) ≥ LP(interval)."""
    net, ball = case.net, case.ball
    with torch.no_grad():
        interval = lv.interval_bounds(net, ball)
        both = interval.intersect(lv.dual_bounds(net, ball))
    c = np.ones(net.n_outputs)
    loose = lv.solve_lp(net, ball, c, interval)
    tight = lv.solve_lp(net, ball, c, both)
    assert loose.optimal and tight.optimal
    assert loose.value <= tight.value + TOL


@settings(max_examples=10)
@given(case=any_case(batch=1), data=st.data())
def test_the_full_ladder_of_bounds(case, data):
    """J(u/(u−ℓ)) ≤ J(α*) ≤ LP ≤ LP over LP-all ≤ MILP = min ≤ cᵀf(x') for sampled and attacked x'.

    Each LP appears twice: its safe bound (the certificate) just below the solver's optimum.
    """
    net, ball = case.net, case.ball
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**20)))
    c = torch.randn(1, 2, net.n_outputs, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        dual = lv.dual_bounds(net, ball)
        J = lv.dual_objective(net, ball, c, dual)[0]
        tight = lv.lp_bounds(net, ball, dual)
        logits = sampled_pre_activations(case, n=200)[-1][0].flatten(1)
        sampled = (logits @ c[0].T).min(0).values
    J_opt = lv.optimize_alpha(net, ball, c, dual, steps=25)[0]
    attacked = [float(pgd_objective(net, ball.lo, ball.hi, c[:, j : j + 1], steps=30, restarts=2, generator=gen)[1][0])
                for j in range(2)]
    lp, lp_all = lv.build_lp(net, ball, dual), lv.build_lp(net, ball, tight)
    exact = lv.build_milp(net, ball, tight)
    for j in range(2):
        r1, r2, m = lp.solve(c[0, j]), lp_all.solve(c[0, j]), exact.solve(c[0, j])
        assert r1.optimal and r2.optimal and m.optimal
        chain = [float(J[j]), float(J_opt[j]), r1.bound, r1.value, r2.bound, r2.value, m.bound, m.value]
        assert r1.bound <= r1.value and r2.bound <= r2.value  # safe bounds never above the solver's optimum
        assert all(a <= b + 1e-6 * (1 + abs(b)) for a, b in zip(chain, chain[1:])), chain
        assert m.value - m.bound <= 1e-5 * (1 + abs(m.value))  # optimal: the bound is the minimum
        assert m.value <= float(sampled[j]) + 1e-7 and m.value <= attacked[j] + 1e-7
