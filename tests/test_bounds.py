"""Interval bounds (Appendix B) and the Bounds type."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given

import lpverify as lv
from conftest import random_mlp
from strategies import any_case, sampled_pre_activations



@given(case=any_case())
def test_interval_bounds_contain_every_sampled_pre_activation(case):
    bounds = lv.interval_bounds(case.net, case.ball)
    assert bounds.contains(sampled_pre_activations(case), tol=1e-9)


def test_interval_bounds_of_one_affine_layer_are_exact():
    net = lv.Network.from_torch(random_mlp([3, 4], seed=0))
    x = torch.rand(1, 3, dtype=torch.float64)
    ball = lv.LinfBall(x, 0.2)
    w, b = net.blocks[0].ops[0].weight.double(), net.blocks[0].ops[0].bias.double()
    # The minimum of an affine map over a box sits at the vertex x - eps*sign(w).
    expected = x @ w.T + b - 0.2 * w.abs().sum(1)
    torch.testing.assert_close(lv.interval_bounds(net, ball).lower[0], expected)


def test_bounds_select_intersect_and_counts():
    lo1, up1 = torch.tensor([[-1.0, 0.5, -2.0]]), torch.tensor([[1.0, 2.0, -0.5]])
    lo2, up2 = torch.tensor([[-0.5, 0.0, -3.0]]), torch.tensor([[2.0, 1.0, -1.0]])
    out = (torch.zeros(1, 1), torch.ones(1, 1))
    a = lv.Bounds((lo1, out[0]), (up1, out[1]))
    b = lv.Bounds((lo2, out[0]), (up2, out[1]))
    both = a.intersect(b)
    torch.testing.assert_close(both.lower[0], torch.tensor([[-0.5, 0.5, -2.0]]))
    torch.testing.assert_close(both.upper[0], torch.tensor([[1.0, 1.0, -1.0]]))
    assert a.n_crossing().tolist() == [[1]]
    assert a.crossing(0).tolist() == [[True, False, False]]
    assert a.select(0).batch_size == 1


def test_bounds_reject_mismatched_shapes():
    with pytest.raises(ValueError, match="differ in shape"):
        lv.Bounds((torch.zeros(1, 2),), (torch.zeros(1, 3),))


def test_bound_methods_reject_a_ball_of_the_wrong_shape():
    net = lv.Network.from_torch(random_mlp([3, 4, 2], seed=0))
    ball = lv.LinfBall(torch.zeros(1, 5), 0.1)
    for method in (lv.interval_bounds, lv.dual_bounds):
        with pytest.raises(ValueError, match="does not match the network's input shape"):
            method(net, ball)


@given(case=any_case())
def test_interval_objective_is_below_every_sampled_value_and_below_J(case):
    gen = torch.Generator().manual_seed(case.seed)
    c = torch.randn(case.ball.batch_size, 3, case.net.n_outputs, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        naive = lv.interval_objective(case.net, case.ball, c)
        logits = sampled_pre_activations(case)[-1].flatten(2)
    assert (naive.unsqueeze(-1) <= torch.einsum("bmo,bno->bmn", c, logits) + 1e-9).all()


def test_interval_objective_on_unit_objectives_is_the_interval_bound():
    """For c = e_j the naive objective bound is the logits' interval lower bound."""
    net = lv.Network.from_torch(random_mlp([3, 7, 6, 4], seed=3))
    ball = lv.LinfBall(torch.rand(2, 3, dtype=torch.float64), 0.2)
    with torch.no_grad():
        naive = lv.interval_objective(net, ball, torch.eye(4, dtype=torch.float64).expand(2, 4, 4))
        torch.testing.assert_close(naive, lv.interval_bounds(net, ball).lower[-1])


def test_a_network_without_hidden_layers_has_no_crossing_units():
    net = lv.Network.from_torch(torch.nn.Sequential(torch.nn.Linear(3, 2)))
    bounds = lv.dual_bounds(net, lv.LinfBall(torch.rand(4, 3), 0.1))
    assert bounds.n_crossing().shape == (4, 0)
