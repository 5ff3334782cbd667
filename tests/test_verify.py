"""Verdicts by every method: the ladder's order, checked counterexamples, VNNLIB properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import lpverify as lv
from lpverify.verify import METHODS, objective_bounds, property_ball, verify, verify_property
from lpverify.vnnlib import parse_vnnlib
from conftest import random_mlp

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
        assert verdicts["milp"][b].status in ("verified", "violated")  # no time limit: exact
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
                assert exact.status == "verified"
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
