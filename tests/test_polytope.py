"""The 2D adversarial polytope: sampled ⊆ LP polygon ⊆ dual polygon, exact when affine."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import lpverify as lv
from lpverify import polytope as P


def setting(seed: int, eps: float, widths=(2, 40, 40, 2)):
    net = lv.Network.from_torch(lv.zoo.random_mlp(list(widths), seed))
    x = torch.rand(1, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    ball = lv.LinfBall(x, eps)
    with torch.no_grad():
        bounds = lv.dual_bounds(net, ball)
    return net, ball, bounds


@settings(max_examples=8)
@given(seed=st.integers(0, 10_000), eps=st.sampled_from([0.02, 0.1, 0.3]))
def test_sampled_inside_lp_inside_dual_in_every_direction(seed, eps):
    net, ball, bounds = setting(seed, eps)
    dirs = P.directions(32)
    sampled = P.sampled_image(net, ball, grid=60).support(dirs)
    lp, dual = P.support_lp(net, ball, bounds, dirs), P.support_dual(net, ball, bounds, dirs)
    assert (sampled <= lp + 1e-7).all() and (lp <= dual + 1e-7).all()
    # Every sampled output lies in the LP polygon (its vertices bound it in every direction).
    poly = P.polygon(dirs, lp, interior=net(ball.center).detach().numpy()[0])
    image = P.sampled_image(net, ball, grid=60).points.reshape(-1, 2)
    assert ((image @ dirs.T) <= (poly @ dirs.T).max(0) + 1e-7).all()


def test_lp_polygon_inside_the_interval_box_when_its_bounds_are_tighter():
    net, ball, bounds = setting(3, 0.1)
    dirs = P.directions(16)  # includes ±e_1 and ±e_2
    lp = P.support_lp(net, ball, bounds, dirs)
    interval = lv.interval_bounds(net, ball)
    lo, hi = interval.lower[-1][0].detach().numpy(), interval.upper[-1][0].detach().numpy()
    axis_lp = np.array([lp[0], lp[4], -lp[8], -lp[12]])  # max y1, max y2, min y1, min y2
    assert axis_lp[0] <= hi[0] and axis_lp[1] <= hi[1] and axis_lp[2] >= lo[0] and axis_lp[3] >= lo[1]
    poly = P.polygon(dirs, lp, interior=net(ball.center).detach().numpy()[0])
    assert ((poly >= lo - 1e-7) & (poly <= hi + 1e-7)).all()


def test_with_a_tiny_eps_the_outer_polygon_is_the_exact_image():
    net, ball, bounds = setting(5, 1e-4)
    assert int(bounds.n_crossing().sum()) == 0  # the network is affine on the box
    dirs = P.directions(24)
    sampled = P.sampled_image(net, ball, grid=5).support(dirs)  # the box's corners are grid points
    np.testing.assert_allclose(P.support_lp(net, ball, bounds, dirs), sampled, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(P.support_dual(net, ball, bounds, dirs), sampled, rtol=1e-6, atol=1e-9)


def test_polygon_of_a_square_and_bad_input():
    dirs = P.directions(4)
    square = P.polygon(dirs, np.ones(4), interior=np.zeros(2))
    assert sorted(map(tuple, np.round(square, 9))) == [(-1, -1), (-1, 1), (1, -1), (1, 1)]
    with pytest.raises(ValueError, match="three finite"):
        P.polygon(dirs, np.array([1.0, np.inf, np.inf, 1.0]), interior=np.zeros(2))
    net = lv.Network.from_torch(lv.zoo.random_mlp([2, 5, 3], 0))
    with pytest.raises(ValueError, match="2D"):
        P.sampled_image(net, lv.LinfBall(torch.zeros(1, 2), 0.1))
