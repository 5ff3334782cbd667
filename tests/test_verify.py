"""Verdicts by every method: the ladder's order, checked counterexamples, VNNLIB properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import lpverify as lv
from lpverify.verify import COMPLETE_METHODS, METHODS, objective_bounds, property_ball, verify, verify_property
from lpverify.vnnlib import parse_vnnlib
import time

from conftest import random_mlp, shared_path

LADDER = ("dual", "dual-opt", "lp", "lp-all", "milp")


def _toy(seed: int, widths=(2, 8, 8, 3)) -> lv.Network:
    return lv.Network.from_torch(random_mlp(list(widths), seed).double())


@settings(max_examples=12)
@given(seed=st.integers(0, 10_000), eps=st.sampled_from([0.02, 0.1, 0.3]))
def test_a_tighter_method_verifies_whatever_a_looser_one_verifies(seed, eps):
    net = _toy(seed)
    x = torch.rand(3, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    y = net(x).argmax(1)
    ball = lv.LinfBall(x, eps)
    c = lv.robustness_objectives(y, 3).double()
    verdicts = {m: verify(net, ball, c, method=m) for m in METHODS}
    for b in range(3):
        statuses = [verdicts[m][b].status for m in LADDER]
        first = statuses.index("verified") if "verified" in statuses else len(statuses)
        assert all(s == "verified" for s in statuses[first:]), statuses
        # No time limit: the MILP convicts whatever is false; only the safe LP-all bound verifies.
        assert (verdicts["milp"][b].status == "verified") == (verdicts["lp-all"][b].status == "verified")
        assert verdicts["milp"][b].status in ("verified", "violated") or "MILP optimal" in verdicts["milp"][b].reason
        if verdicts["interval"][b].status == "verified":
            assert verdicts["lp"][b].status == "verified"
        exact = verdicts["milp"][b]
        if exact.status == "violated":
            assert ball.select(b).contains(torch.as_tensor(exact.witness).view(1, 1, 2), tol=1e-9).all()
            margins = (c[b] @ net(torch.as_tensor(exact.witness).view(1, 2))[0]).detach()
            assert float(margins.min()) <= 1e-9
            assert abs(float(margins.min()) - exact.value) < 1e-8
        # The relaxations' bounds never exceed the exact minimum.
        for m in ("interval", "dual", "dual-opt", "lp", "lp-all"):
            if verdicts[m][b].status == "verified":
                assert exact.status != "violated"
        # The exact rung's bound (LP-all's safe bound) is the tightest relaxation's.
        if exact.status == "verified":
            for m in ("interval", "dual", "dual-opt", "lp"):
                if verdicts[m][b].status == "verified":
                    assert verdicts[m][b].bound <= exact.bound + 1e-6


def test_objective_bounds_order_on_one_example():
    net = _toy(7, (3, 16, 16, 4))
    x = torch.rand(2, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ball = lv.LinfBall(x, 0.2)
    c = torch.randn(2, 5, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    b = {m: objective_bounds(net, ball, c, m) for m in ("dual", "dual-opt", "lp", "lp-all")}
    assert (b["dual"] <= b["dual-opt"] + 1e-9).all()
    assert (b["dual-opt"] <= b["lp"] + 1e-7).all()
    assert (b["lp"] <= b["lp-all"] + 1e-7).all()


def test_unknown_method_and_milp_bounds_are_rejected():
    net = _toy(0)
    ball = lv.LinfBall(torch.zeros(1, 2, dtype=torch.float64), 0.1)
    c = torch.zeros(1, 1, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="unknown method 'exact'"):
        verify(net, ball, c, method="exact")
    with pytest.raises(ValueError, match="verify"):
        objective_bounds(net, ball, c, "milp")
    with pytest.raises(ValueError, match="offsets"):
        verify(net, ball, c, torch.zeros(2, 2), method="dual")


def _margin_property(lo: np.ndarray, hi: np.ndarray, label: int, n_out: int = 3) -> str:
    lines = [f"(declare-const X_{i} Real)" for i in range(lo.size)] + [f"(declare-const Y_{j} Real)" for j in range(n_out)]
    for i in range(lo.size):
        lines += [f"(assert (>= X_{i} {float(lo[i])!r}))", f"(assert (<= X_{i} {float(hi[i])!r}))"]
    others = " ".join(f"(and (>= Y_{j} Y_{label}))" for j in range(n_out) if j != label)
    lines.append(f"(assert (or {others}))")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("eps", [0.01, 0.5])
def test_a_vnnlib_margin_property_gets_the_same_verdict_as_the_robustness_query(eps):
    net = _toy(3)
    x = np.array([0.4, 0.6])
    label = int(net(torch.as_tensor(x).view(1, 2)).argmax())
    prop = parse_vnnlib(_margin_property(x - eps, x + eps, label))
    ball = property_ball(net, prop)
    torch.testing.assert_close(ball.lo[0], torch.as_tensor(x - eps))
    direct = verify(net, lv.LinfBall(torch.as_tensor(x).view(1, 2), eps), lv.robustness_objectives(torch.tensor([label]), 3).double(),
                    method="milp")[0]
    via_property = verify_property(net, prop, "milp")
    assert via_property.status == direct.status
    if via_property.status == "violated":
        assert prop.violated_by(net(torch.as_tensor(via_property.witness).view(1, 2))[0].detach().numpy())


def test_a_property_of_the_wrong_size_is_rejected():
    net = _toy(3)
    prop = parse_vnnlib(_margin_property(np.zeros(3), np.ones(3), 0))
    with pytest.raises(ValueError, match="3 inputs"):
        verify_property(net, prop)


@pytest.mark.shared
@pytest.mark.parametrize("method", ["lp", "lp-all", "milp"])
def test_time_limits_are_wall_time_with_model_building_included(method):
    """On the deepest VNN-COMP MNIST net every LP method stops within 10% + 1 s of its limit."""
    from lpverify.vnnlib import read_vnnlib

    root = shared_path("data", "vnncomp", "mnist_fc")
    net = lv.load_onnx(root / "onnx" / "mnist-net_256x6.onnx.gz", input_shape=(784,))
    prop = read_vnnlib(root / "vnnlib" / "prop_0_0.05.vnnlib.gz", 784, 10)
    start = time.perf_counter()
    verdict = verify_property(net, prop, method, time_limit=1.5)
    assert time.perf_counter() - start <= 1.1 * 1.5 + 1.0
    assert verdict.status == "unknown"  # far from provable at ε = 0.05, and no counterexample found in time


def test_the_safe_lp_bound_holds_on_ill_scaled_l2_balls():
    """The conic LP over an l2 ball, on badly scaled nets: the safe bound never exceeds a point's value."""
    gen = torch.Generator().manual_seed(3)
    for seed, scale in ((0, 1e-6), (1, 1e6), (2, 1e3)):
        net = lv.Network.from_torch(random_mlp([3, 6, 6, 2], seed).double())
        with torch.no_grad():
            net.blocks[0].ops[0].weight.mul_(scale)
        x = torch.rand(1, 3, generator=gen, dtype=torch.float64)
        ball = lv.LpBall(x, 0.3, p=2)
        bounds = lv.dual_bounds(net, ball)
        points = ball.sample(400, generator=gen)[0]
        with torch.no_grad():
            values = net(points)
        for c in (np.array([1.0, -1.0]), np.array([-1e-9, 1e-9])):
            result = lv.solve_lp(net, ball, c, bounds, backend="cvxpy")
            assert math.isfinite(result.bound)  # a bound is claimed ...
            assert result.bound <= float((values.numpy() @ c).min())  # ... and holds at every sampled point


@pytest.mark.parametrize("method", METHODS)
def test_an_all_zero_objective_row_is_a_tie_not_a_crash(method):
    """c = 0 makes the row's value 0 everywhere: never > 0, so never verified (the MILP convicts it,
    any point is a counterexample); with d > 0 it holds everywhere."""
    net = _toy(4)
    ball = lv.LinfBall(torch.rand(2, 2, dtype=torch.float64), 0.1)
    c = torch.zeros(2, 1, 3, dtype=torch.float64)
    expected = "violated" if method in COMPLETE_METHODS else "unknown"  # the complete methods convict it
    assert [v.status for v in verify(net, ball, c, method=method)] == [expected, expected]
    d = torch.full((2, 1), 0.5, dtype=torch.float64)
    assert [v.status for v in verify(net, ball, c, d, method=method)] == ["verified", "verified"]


@pytest.mark.parametrize("eps, truth", [(0.5, "verified"), (2.0, "violated")])
def test_scaled_objectives_change_no_verdict(eps, truth):
    """The solvers see the objective scaled by a power of two: a 1e±11 margin gets the unit one's verdicts."""
    net = _toy(21, (2, 10, 10, 3))
    x = torch.tensor([[0.3, 0.7]], dtype=torch.float64)
    c = lv.robustness_objectives(net(x).argmax(1), 3).double()
    ball = lv.LinfBall(x, eps)
    reference = {m: verify(net, ball, c, method=m)[0].status for m in ("dual", "lp", "lp-all", "milp")}
    assert reference["milp"] == truth
    for scale in (1e-11, 1e11):
        assert {m: verify(net, ball, c * scale, method=m)[0].status for m in reference} == reference
