"""Input sets: the box, the clamp, the support function and validation."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import lpverify as lv


def test_unclamped_ball_is_center_plus_minus_eps():
    x = torch.tensor([[0.2, -1.0, 3.0]])
    ball = lv.LinfBall(x, 0.5)
    torch.testing.assert_close(ball.lo, x - 0.5)
    torch.testing.assert_close(ball.hi, x + 0.5)
    assert ball.mid is x  # no rounding: the support function is exactly xᵀv + ε‖v‖₁


def test_clamp_and_per_example_eps():
    x = torch.tensor([[0.05, 0.5, 0.95], [0.5, 0.5, 0.5]])
    ball = lv.LinfBall(x, torch.tensor([0.1, 0.0]), lower=0.0, upper=1.0)
    torch.testing.assert_close(ball.lo, torch.tensor([[0.0, 0.4, 0.85], [0.5, 0.5, 0.5]]))
    torch.testing.assert_close(ball.hi, torch.tensor([[0.15, 0.6, 1.0], [0.5, 0.5, 0.5]]))


@given(seed=st.integers(0, 10_000), eps=st.floats(0.0, 2.0), clamp=st.booleans())
def test_support_function_is_the_max_over_vertices(seed, eps, clamp):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 3, generator=gen, dtype=torch.float64)
    ball = lv.LinfBall(x, eps, *(0.0, 1.0) if clamp else (None, None))
    v = torch.randn(2, 4, 3, generator=gen, dtype=torch.float64)
    corners = torch.tensor(list(itertools.product([0.0, 1.0], repeat=3)), dtype=torch.float64)
    points = ball.lo[:, None] + corners[None] * (ball.hi - ball.lo)[:, None]  # (2, 8, 3)
    brute = torch.einsum("bmn,bpn->bmp", v, points).max(-1).values
    torch.testing.assert_close(ball.support(v), brute)


def test_samples_lie_in_the_ball():
    ball = lv.LinfBall(torch.rand(3, 1, 4, 4), 0.2, lower=0.0, upper=1.0)
    for vertices in (False, True):
        pts = ball.sample(50, vertices=vertices, generator=torch.Generator().manual_seed(0))
        assert pts.shape == (3, 50, 1, 4, 4)
        assert ball.contains(pts).all()


def test_select_keeps_one_example():
    ball = lv.LinfBall(torch.rand(4, 3), torch.tensor([0.1, 0.2, 0.3, 0.4]), lower=0.0, upper=1.0)
    one = ball.select(2)
    assert one.batch_size == 1 and float(one.eps) == pytest.approx(0.3)
    torch.testing.assert_close(one.lo, ball.lo[2:3])


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        ((torch.zeros(2, 3), -0.1), {}, "eps must be >= 0"),
        ((torch.tensor([[0.0, float("nan")]]), 0.1), {}, "NaN"),
        ((torch.zeros(2, 3), torch.tensor([0.1, 0.2, 0.3])), {}, "shape \\(batch,\\)"),
        ((torch.zeros(2, 3), float("inf")), {}, "NaN or inf"),
        ((torch.full((1, 2), 5.0), 0.1), {"lower": 0.0, "upper": 1.0}, "empty"),
        ((torch.zeros(3), 0.1), {}, "batch-first"),
        ((torch.zeros(2, 3, dtype=torch.long), 0.1), {}, "floating-point"),
    ],
)
def test_bad_input_sets_raise(args, kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        lv.LinfBall(*args, **kwargs)


@pytest.mark.parametrize("p", [1, 2])
def test_lp_ball_samples_lie_in_the_ball_and_vertices_on_its_sphere(p):
    x = torch.randn(3, 2, 4, dtype=torch.float64)
    ball = lv.LpBall(x, torch.tensor([0.5, 1.0, 0.0], dtype=torch.float64), p)
    gen = torch.Generator().manual_seed(0)
    inside, boundary = ball.sample(500, generator=gen), ball.sample(200, vertices=True, generator=gen)
    assert inside.shape == (3, 500, 2, 4)
    assert ball.contains(inside, tol=1e-12).all() and ball.contains(boundary, tol=1e-12).all()
    norms = torch.linalg.vector_norm((boundary - x.unsqueeze(1)).flatten(2), ord=p, dim=-1)
    torch.testing.assert_close(norms, ball.eps.unsqueeze(1).expand_as(norms))
    # Uniform inside: points are spread through the ball, not on the sphere.
    inner = torch.linalg.vector_norm((inside[0] - x[0]).flatten(1), ord=p, dim=-1)
    assert inner.min() < 0.5 * 0.5 and inner.max() > 0.9 * 0.5


@pytest.mark.parametrize("p", [1, 2])
def test_lp_ball_support_is_attained_and_dominates_samples(p):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 6, generator=gen, dtype=torch.float64)
    v = torch.randn(2, 3, 6, generator=gen, dtype=torch.float64)
    ball = lv.LpBall(x, 0.7, p)
    h = ball.support(v)
    values = torch.einsum("bmd,bnd->bmn", v, ball.sample(2000, generator=gen))
    assert (values <= h.unsqueeze(-1) + 1e-12).all()
    # The maximiser: x + ε v/‖v‖₂ (p = 2) or x + ε sign(v_k) e_k at the largest |v_k| (p = 1).
    if p == 2:
        best = x.unsqueeze(1) + 0.7 * v / v.norm(dim=-1, keepdim=True)
    else:
        k = v.abs().argmax(-1, keepdim=True)
        best = x.unsqueeze(1) + torch.zeros_like(v).scatter(-1, k, 0.7 * v.gather(-1, k).sign())
    torch.testing.assert_close(h, (v * best).sum(-1))


def test_lp_ball_rejects_bad_arguments():
    x = torch.zeros(1, 3)
    with pytest.raises(ValueError, match="p = 1 or p = 2"):
        lv.LpBall(x, 0.1, p=3)
    with pytest.raises(ValueError, match="LinfBall"):
        lv.LpBall(x, 0.1, p=float("inf"))
    with pytest.raises(ValueError, match="eps must be >= 0"):
        lv.LpBall(x, -0.1, p=2)
    with pytest.raises(ValueError, match="NaN"):
        lv.LpBall(torch.tensor([[float("nan"), 0.0]]), 0.1, p=1)
