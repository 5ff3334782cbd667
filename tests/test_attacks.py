"""FGSM and PGD: they stay in the ball, and on an affine network FGSM is the exact worst case."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import lpverify as lv
from conftest import random_mlp


@given(seed=st.integers(0, 1000), eps=st.sampled_from([0.01, 0.1, 0.3]), clamp=st.booleans(), start=st.booleans())
def test_attacks_stay_in_the_ball_and_box(seed, eps, clamp, start):
    model = random_mlp([4, 16, 3], seed)
    x = torch.rand(8, 4, generator=torch.Generator().manual_seed(seed))
    y = torch.randint(0, 3, (8,), generator=torch.Generator().manual_seed(seed + 1))
    box = {"lower": 0.0, "upper": 1.0} if clamp else {}
    ball = lv.LinfBall(x, eps, **box)
    for x_adv in (
        lv.fgsm(model, x, y, eps, **box),
        lv.pgd(model, x, y, eps, steps=10, step_size=eps / 4, random_start=start, **box,
               generator=torch.Generator().manual_seed(seed)),
    ):
        assert ball.contains(x_adv.unsqueeze(1), tol=1e-7).all()


def test_fgsm_attains_the_exact_minimum_margin_of_an_affine_two_class_model():
    """For f(x) = Wx + b with two classes, the worst margin over the ball is at x − ε sign(w_y − w_j): FGSM's point."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 2))
    x, y = torch.rand(4, 5, dtype=torch.float64), torch.tensor([0, 1, 0, 1])
    model = model.double()
    eps = 0.2
    x_adv = lv.fgsm(model, x, y, eps)
    logits = model(x_adv)
    margin = logits.gather(1, y.view(-1, 1)).squeeze(1) - logits.gather(1, (1 - y).view(-1, 1)).squeeze(1)
    J = lv.margin_bounds(lv.Network.from_torch(model), lv.LinfBall(x, eps), y)
    torch.testing.assert_close(margin, J.gather(1, (1 - y).view(-1, 1)).squeeze(1))


def test_pgd_starts_at_x_by_default_and_validates():
    model = random_mlp([3, 8, 2], seed=0)
    x, y = torch.rand(2, 3), torch.tensor([0, 1])
    torch.testing.assert_close(lv.pgd(model, x, y, 0.1, steps=0), x)
    with pytest.raises(ValueError, match="eps"):
        lv.fgsm(model, x, y, -0.1)
    with pytest.raises(ValueError, match="step_size"):
        lv.pgd(model, x, y, 0.1, step_size=0.0)


def test_pgd_objective_finds_the_minimum_of_a_linear_objective_inside_the_box():
    from lpverify.attacks import pgd_objective

    model = torch.nn.Linear(3, 2).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [0.0, 1.0, 1.0]]))
        model.bias.zero_()
    lower, upper = torch.zeros(1, 3, dtype=torch.float64), torch.ones(1, 3, dtype=torch.float64)
    c = torch.tensor([[[1.0, -1.0]]], dtype=torch.float64)  # f_0 − f_1 = x0 − 3 x1 − 0.5 x2, min −3.5 at (0, 1, 1)
    z, value = pgd_objective(model, lower, upper, c, steps=50, restarts=1)
    assert ((z >= lower) & (z <= upper)).all()
    torch.testing.assert_close(value, torch.tensor([-3.5], dtype=torch.float64))
    torch.testing.assert_close(z, torch.tensor([[0.0, 1.0, 1.0]], dtype=torch.float64))
