"""The dual network (Theorem 1) and Algorithm 1."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import lpverify as lv
from conftest import assert_bounds_close, random_convnet, random_mlp
from strategies import any_case, dense_cases, lp_ball_cases, sampled_pre_activations


def eye_objectives(net, batch, dtype=torch.float64):
    n = net.n_outputs
    return torch.eye(n, dtype=dtype).expand(batch, n, n)


@given(case=any_case())
def test_dual_bounds_contain_every_sampled_pre_activation(case):
    with torch.no_grad():
        bounds = lv.dual_bounds(case.net, case.ball)
        assert bounds.contains(sampled_pre_activations(case), tol=1e-9)


@given(case=any_case())
def test_first_hidden_layer_dual_bounds_equal_interval_bounds(case):
    with torch.no_grad():
        d, i = lv.dual_bounds(case.net, case.ball), lv.interval_bounds(case.net, case.ball)
    torch.testing.assert_close(d.lower[0], i.lower[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(d.upper[0], i.upper[0], rtol=0, atol=1e-12)


@given(case=st.one_of(any_case(), lp_ball_cases()))
def test_algorithm1_equals_theorem1_on_the_logits(case):
    """The forward column propagation and the backward dual network compute the same J(±e_j), for every ball."""
    with torch.no_grad():
        bounds = lv.dual_bounds(case.net, case.ball)
        c = eye_objectives(case.net, case.ball.batch_size)
        lower = lv.dual_objective(case.net, case.ball, c, bounds)
        upper = -lv.dual_objective(case.net, case.ball, -c, bounds)
    torch.testing.assert_close(lower, bounds.lower[-1], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(upper, bounds.upper[-1], rtol=1e-9, atol=1e-9)


@given(case=any_case(), data=st.data())
def test_dual_objective_with_any_alpha_is_below_every_sampled_value(case, data):
    seed = data.draw(st.integers(0, 2**20))
    with torch.no_grad():
        bounds = lv.dual_bounds(case.net, case.ball)
        gen = torch.Generator().manual_seed(seed)
        alpha = [torch.rand(case.ball.batch_size, *s, generator=gen, dtype=torch.float64) for s in case.net.hidden_shapes]
        c = torch.randn(case.ball.batch_size, 3, case.net.n_outputs, generator=gen, dtype=torch.float64)
        J = lv.dual_objective(case.net, case.ball, c, bounds, alpha)
        logits = sampled_pre_activations(case)[-1].flatten(2)  # (B, n, n_out)
        values = torch.einsum("bmo,bno->bmn", c, logits)
    assert (J.unsqueeze(-1) <= values + 1e-9).all()


@given(case=dense_cases(max_depth=3))
def test_without_crossing_units_J_is_the_exact_minimum(case):
    """A tiny ε makes the network affine on the ball: J equals the minimum, attained at a vertex."""
    ball = lv.LinfBall(case.ball.center, 1e-6)
    with torch.no_grad():
        bounds = lv.dual_bounds(case.net, ball)
        if any(bounds.crossing(i).any() for i in range(len(bounds) - 1)):
            return  # a unit sits at exactly zero pre-activation; the premise does not hold
        c = eye_objectives(case.net, ball.batch_size)
        J = lv.dual_objective(case.net, ball, c, bounds)
        # The affine map's minimum over the box: its gradient's sign picks the vertex.
        x = ball.center.clone().requires_grad_(True)
    with torch.enable_grad():
        for j in range(case.net.n_outputs):
            x.grad = None
            case.net(x)[:, j].sum().backward()
            vertex = (ball.center - 1e-6 * torch.sign(x.grad)).detach()
            torch.testing.assert_close(J[:, j], case.net(vertex)[:, j].detach(), rtol=1e-9, atol=1e-9)


def test_bounds_of_an_example_do_not_depend_on_its_batch():
    model, shape = random_convnet(1, 6, seed=4)
    net = lv.Network.from_torch(model, input_shape=shape)
    x = torch.rand(5, *shape, dtype=torch.float64)
    with torch.no_grad():
        together = lv.dual_bounds(net, lv.LinfBall(x, 0.1))
        alone = lv.dual_bounds(net, lv.LinfBall(x[3:4], 0.1))
    assert_bounds_close(together.select(slice(3, 4)), alone, rtol=1e-12, atol=1e-12)


def test_float32_agrees_with_float64():
    model, shape = random_convnet(1, 7, seed=5)
    net = lv.Network.from_torch(model, input_shape=shape)
    x = torch.rand(3, *shape, dtype=torch.float64)
    x = x.float().double()  # the same centres in both dtypes
    with torch.no_grad():
        b64 = lv.dual_bounds(net, lv.LinfBall(x, 0.05), rigorous=False)
        b32 = lv.dual_bounds(net, lv.LinfBall(x.float(), 0.05), rigorous=False)
        r64 = lv.dual_bounds(net, lv.LinfBall(x, 0.05))
        r32 = lv.dual_bounds(net, lv.LinfBall(x.float(), 0.05))
    assert b32.lower[0].dtype == r32.lower[0].dtype == torch.float32
    assert_bounds_close(b32, b64, rtol=1e-4, atol=1e-4)
    # Rigorous float32 bounds enclose the (nearly exact) rigorous float64 ones, within a small allowance.
    for lo32, up32, lo64, up64 in zip(r32.lower, r32.upper, r64.lower, r64.upper):
        assert (lo32.double() <= lo64 + 1e-12).all() and (up32.double() >= up64 - 1e-12).all()
        assert float((lo64 - lo32.double()).max()) < 1e-3 and float((up32.double() - up64).max()) < 1e-3


def test_bounds_and_J_are_differentiable_in_the_parameters():
    model, shape = random_convnet(1, 6, seed=6)
    net = lv.Network.from_torch(model, input_shape=shape)
    x = torch.rand(2, *shape)
    ball = lv.LinfBall(x, 0.1)
    bounds = lv.dual_bounds(net, ball)
    J = lv.dual_objective(net, ball, lv.margin_objectives(torch.tensor([0, 1]), 4), bounds)
    J.sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(g.abs().sum() > 0 for g in grads)


def test_dual_objective_validates_its_arguments():
    net = lv.Network.from_torch(random_mlp([3, 5, 2], seed=0))
    ball = lv.LinfBall(torch.zeros(2, 3), 0.1)
    bounds = lv.dual_bounds(net, ball)
    with pytest.raises(ValueError, match="shape \\(batch, m, n_out\\)"):
        lv.dual_objective(net, ball, torch.zeros(2, 3), bounds)
    with pytest.raises(ValueError, match="NaN"):
        lv.dual_objective(net, ball, torch.full((2, 1, 2), float("nan")), bounds)
    with pytest.raises(ValueError, match="\\[0, 1\\]"):
        lv.dual_objective(net, ball, torch.ones(2, 1, 2), bounds, [torch.full((2, 5), 1.5)])
    with pytest.raises(ValueError, match="one tensor per hidden layer"):
        lv.dual_objective(net, ball, torch.ones(2, 1, 2), bounds, [])


def test_relu_slope_is_the_dual_diagonal():
    lower = torch.tensor([-2.0, 1.0, -3.0, 0.0, -1.0])
    upper = torch.tensor([2.0, 3.0, -1.0, 0.0, 3.0])
    torch.testing.assert_close(lv.relu_slope(lower, upper), torch.tensor([0.5, 1.0, 0.0, 0.0, 0.75]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_bounds_equal_cpu_bounds():
    model, shape = random_convnet(1, 12, seed=8)
    net = lv.Network.from_torch(model, input_shape=shape)
    x = torch.rand(4, *shape, dtype=torch.float64)
    with torch.no_grad():
        cpu = lv.dual_bounds(net, lv.LinfBall(x, 0.05))
        gpu = lv.dual_bounds(lv.Network.from_torch(model.cuda(), input_shape=shape), lv.LinfBall(x.cuda(), 0.05))
        J = lv.dual_objective(net, lv.LinfBall(x, 0.05), eye_objectives(net, 4), cpu)
    assert gpu.lower[0].is_cuda
    assert_bounds_close(cpu, gpu, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(J, cpu.lower[-1], rtol=1e-9, atol=1e-9)


@given(case=lp_ball_cases())
def test_lp_ball_bounds_contain_every_sampled_pre_activation(case):
    with torch.no_grad():
        dual, interval = lv.dual_bounds(case.net, case.ball), lv.interval_bounds(case.net, case.ball)
        reached = sampled_pre_activations(case)
    assert dual.contains(reached, tol=1e-9) and interval.contains(reached, tol=1e-9)
    torch.testing.assert_close(dual.lower[0], interval.lower[0], rtol=0, atol=1e-12)


def test_lp_ball_of_a_linear_map_is_exact():
    """One affine layer: the bounds are xᵀw + b ± ε‖w‖_q, attained in the ball."""
    w = torch.tensor([[3.0, -4.0]], dtype=torch.float64)
    model = torch.nn.Linear(2, 1).double()
    with torch.no_grad():
        model.weight.copy_(w)
        model.bias.fill_(1.0)
    net = lv.Network.from_torch(torch.nn.Sequential(model))
    x = torch.tensor([[0.5, 0.25]], dtype=torch.float64)
    for p, dual_norm in ((1, 4.0), (2, 5.0)):
        b = lv.dual_bounds(net, lv.LpBall(x, 0.1, p))
        torch.testing.assert_close(b.lower[0], torch.tensor([[1.5 - 1.0 + 1.0 - 0.1 * dual_norm]], dtype=torch.float64))
        torch.testing.assert_close(b.upper[0], torch.tensor([[1.5 - 1.0 + 1.0 + 0.1 * dual_norm]], dtype=torch.float64))


@given(case=any_case(batch=2), data=st.data())
def test_optimized_alpha_never_falls_below_the_paper_slopes_and_stays_sound(case, data):
    seed = data.draw(st.integers(0, 2**20))
    gen = torch.Generator().manual_seed(seed)
    c = torch.randn(case.ball.batch_size, 3, case.net.n_outputs, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        bounds = lv.dual_bounds(case.net, case.ball)
        J = lv.dual_objective(case.net, case.ball, c, bounds)
        logits = sampled_pre_activations(case)[-1].flatten(2)
        values = torch.einsum("bmo,bno->bmn", c, logits)
    J_opt = lv.optimize_alpha(case.net, case.ball, c, bounds, steps=20)
    assert J_opt.shape == J.shape and not J_opt.requires_grad
    assert (J_opt >= J).all()
    assert (J_opt.unsqueeze(-1) <= values + 1e-9).all()


def test_optimized_alpha_improves_a_loose_bound_and_leaves_parameters_alone():
    model = random_mlp([4, 20, 20, 3], seed=3)
    net = lv.Network.from_torch(model)
    x = torch.rand(2, 4, generator=torch.Generator().manual_seed(0))
    ball = lv.LinfBall(x, 0.5)
    bounds = lv.dual_bounds(net, ball)
    c = lv.margin_objectives(torch.tensor([0, 1]), 3).to(x)
    J = lv.dual_objective(net, ball, c, bounds).detach()
    J_opt = lv.optimize_alpha(net, ball, c, bounds, steps=30)
    assert (J_opt - J).max() > 1e-3  # the fixed slopes are not optimal on a net with many crossing units
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(lv.optimize_alpha(net, ball, c, bounds, steps=0), J)
    with pytest.raises(ValueError, match="steps"):
        lv.optimize_alpha(net, ball, c, bounds, steps=-1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_objective_allowance_is_what_rounding_took(dtype):
    """J + allowance is J as computed: in float32 it is the plain walk over the same (rigorous)
    bounds to within float32 rounding, J lies below it by exactly the allowance (≥ 0), and the
    plain evaluation has no allowance."""
    model, shape = random_convnet(2, 10, seed=4, n_out=5)
    net = lv.Network.from_torch(model.to(dtype), input_shape=shape)
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(6, *shape, generator=gen, dtype=dtype)
    ball = lv.LinfBall(x, 0.05, 0.0, 1.0)
    c = torch.randn(6, 4, 5, generator=gen, dtype=dtype)
    with torch.no_grad():
        rig = lv.forward_objective(net, ball, c)
        walk = lv.dual_objective(net, ball.to(torch.float64), c.double(), rig.bounds.to(torch.float64), rigorous=False)
        plain = lv.forward_objective(net, ball, c, rigorous=False)
    computed = (rig.J + rig.allowance).double()
    scale = walk.abs().amax()
    assert (rig.allowance > 0).all() and (rig.J <= computed).all()
    tol = 1e-4 if dtype == torch.float32 else 1e-12
    assert (computed - walk).abs().max() <= tol * scale
    assert (plain.allowance == 0).all()
    if dtype == torch.float32:  # the allowance is what the float64 walk wins back
        assert rig.allowance.max() > 10 * (computed - walk).abs().max()
