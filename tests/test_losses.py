"""Training losses (MATH.md §12): projections, IBP, CROWN-IBP, the κ/β mixes; checked against independent code."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lpverify as lv
from lpverify.losses import margin_estimates, projected_bounds, projections_pay, training_loss
from lpverify.schedule import Loss
from conftest import random_convnet, random_mlp

SOUND = (Loss.EXACT, Loss.IBP, Loss.CROWN_IBP)


def linear_layers(model: nn.Sequential) -> list[nn.Linear]:
    return [m for m in model if isinstance(m, nn.Linear)]


def reference_intervals(model: nn.Sequential, x: torch.Tensor, eps: float) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Interval propagation written out for a dense net: pre-activation (lower, upper) of every layer."""
    lo, hi = x - eps, x + eps
    out = []
    for i, lin in enumerate(linear_layers(model)):
        if i:
            lo, hi = lo.clamp(min=0), hi.clamp(min=0)
        mid, rad = (lo + hi) / 2, (hi - lo) / 2
        mid, rad = mid @ lin.weight.T + lin.bias, rad @ lin.weight.abs().T
        lo, hi = mid - rad, mid + rad
        out.append((lo, hi))
    return out


def reference_crown(model: nn.Sequential, x: torch.Tensor, eps: float, c: torch.Tensor, bounds) -> torch.Tensor:
    """Backward linear bound propagation (CROWN) with slopes d = u/(u − ℓ) for both faces, over given bounds.

    Lower bound on cᵀf over the ball: the relaxation z ≥ d ẑ where a coefficient
    is positive and z ≤ d (ẑ − ℓ) where it is negative, per crossing unit.
    """
    layers = linear_layers(model)
    lam = c @ layers[-1].weight  # (B, m, n) coefficients on the last hidden layer's z
    const = c @ layers[-1].bias
    for i in range(len(layers) - 2, -1, -1):
        lo, up = bounds[i]
        d = torch.where(up <= 0, torch.zeros_like(up), torch.where(lo >= 0, torch.ones_like(up), up / (up - lo)))
        cross = (lo < 0) & (up > 0)
        offset = torch.where(cross, -d * lo, torch.zeros_like(lo)).unsqueeze(1)  # upper face's intercept
        const = const + (lam.clamp(max=0) * offset).sum(-1)
        lam = lam * d.unsqueeze(1)  # now on ẑ_i
        const = const + lam @ layers[i].bias
        lam = lam @ layers[i].weight
    return const + (lam * x.unsqueeze(1)).sum(-1) - eps * lam.abs().sum(-1)


@pytest.fixture
def mlp_case():
    model = random_mlp([6, 16, 12, 4], seed=3)
    x = torch.rand(5, 6, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 3, 1])
    return model, lv.Network.from_torch(model), x, y


def test_ibp_margins_match_independent_interval_propagation(mlp_case):
    model, net, x, y = mlp_case
    eps = 0.08
    ref = reference_intervals(model, x, eps)
    got = lv.interval_bounds(net, lv.LinfBall(x, eps), rigorous=False)
    for (lo, hi), a, b in zip(ref, got.lower, got.upper):
        torch.testing.assert_close(a, lo, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(b, hi, rtol=1e-5, atol=1e-5)
    # margins with the last layer elided: min over the last hidden box of cᵀ(W z + b)
    c = lv.margin_objectives(y, 4)
    last = linear_layers(model)[-1]
    lo, hi = (t.clamp(min=0) for t in ref[-2])
    v = c @ last.weight
    expected = (v.clamp(min=0) * lo.unsqueeze(1) + v.clamp(max=0) * hi.unsqueeze(1)).sum(-1) + c @ last.bias
    J = margin_estimates(Loss.IBP, net, lv.LinfBall(x, eps), y)
    torch.testing.assert_close(J, expected, rtol=1e-5, atol=1e-5)


def test_crown_ibp_is_the_dual_objective_over_interval_bounds(mlp_case):
    model, net, x, y = mlp_case
    eps = 0.08
    ball = lv.LinfBall(x, eps)
    c = lv.margin_objectives(y, 4)
    ibp = lv.interval_bounds(net, ball, rigorous=False)
    J = margin_estimates(Loss.CROWN_IBP, net, ball, y)
    torch.testing.assert_close(J, lv.dual_objective(net, ball, c, ibp, rigorous=False), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(J, reference_crown(model, x, eps, c, reference_intervals(model, x, eps)), rtol=1e-4, atol=1e-4)
    # the β mix is the convex combination of the two bounds
    J_ibp = margin_estimates(Loss.IBP, net, ball, y)
    mixed = margin_estimates(Loss.CROWN_IBP, net, ball, y, beta=0.3)
    torch.testing.assert_close(mixed, 0.3 * J + 0.7 * J_ibp, rtol=1e-5, atol=1e-5)
    assert margin_estimates(Loss.CROWN_IBP, net, ball, y, beta=0.0).equal(J_ibp)


def test_projected_bounds_converge_to_algorithm1_within_the_cauchy_median_spread():
    """The median of k |Cauchy| has standard deviation ≈ π / (2√k) around 1 (its density at 1 is 1/π)."""
    model, shape = random_convnet(1, 8, seed=2)
    net = lv.Network.from_torch(model, input_shape=shape)
    x = torch.rand(3, *shape, generator=torch.Generator().manual_seed(0))
    ball = lv.LinfBall(x, 0.3)  # ~50, 100 and 20 crossing units in the three hidden layers
    with torch.no_grad():
        exact = lv.dual_bounds(net, ball, rigorous=False)
    errors = {}
    for k in (64, 4096):
        with torch.no_grad():
            est = projected_bounds(net, ball, k, generator=torch.Generator().manual_seed(7))
        # first layer: offset exact, radius ‖cols‖₁ estimated by the median: relative error ~ N(0, (π/2)²/k)
        radius, radius_est = (exact.upper[0] - exact.lower[0]) / 2, (est.upper[0] - est.lower[0]) / 2
        torch.testing.assert_close((est.upper[0] + est.lower[0]) / 2, (exact.upper[0] + exact.lower[0]) / 2,
                                   rtol=1e-5, atol=1e-5)
        sd = math.pi / (2 * math.sqrt(k))
        assert float(((radius_est - radius).abs() / radius).max()) < 5 * sd
        # every layer: the error relative to the layer's width shrinks like 1/√k
        errors[k] = max(float(((e - t).abs() / (exact.upper[i] - exact.lower[i]).clamp(min=1e-6)).max())
                        for i in range(len(exact)) for e, t in ((est.lower[i], exact.lower[i]), (est.upper[i], exact.upper[i])))
    assert errors[4096] < 5 * math.pi / (2 * math.sqrt(4096)) * 4  # compounded over 3 layers and both faces
    assert errors[4096] < errors[64] / 3  # √(4096/64) = 8 in expectation
    clamped = lv.LinfBall(x, 0.3, 0.0, 1.0)  # radii differ per pixel: per-example projections
    with torch.no_grad():
        exact = lv.dual_bounds(net, clamped, rigorous=False)
        est = projected_bounds(net, clamped, 4096, generator=torch.Generator().manual_seed(8))
    for i in range(len(exact)):
        width = (exact.upper[i] - exact.lower[i]).clamp(min=1e-6)
        assert float(((est.lower[i] - exact.lower[i]).abs() / width).max()) < 0.3
        assert float(((est.upper[i] - exact.upper[i]).abs() / width).max()) < 0.3


def test_projected_bounds_are_exact_at_eps_zero_and_reproducible():
    model, shape = random_convnet(1, 8, seed=4)
    net = lv.Network.from_torch(model, input_shape=shape)
    x = torch.rand(2, *shape, generator=torch.Generator().manual_seed(3))
    est = projected_bounds(net, lv.LinfBall(x, 0.0), 5, generator=torch.Generator().manual_seed(0))
    for lo, up, z in zip(est.lower, est.upper, net.pre_activations(x)):
        torch.testing.assert_close(lo, z.view_as(lo), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(up, z.view_as(up), rtol=1e-5, atol=1e-5)
    ball = lv.LinfBall(x, 0.1)
    a = projected_bounds(net, ball, 7, generator=torch.Generator().manual_seed(11))
    b = projected_bounds(net, ball, 7, generator=torch.Generator().manual_seed(11))
    assert all(p.equal(q) for p, q in zip(a.lower + a.upper, b.lower + b.upper))
    with pytest.raises(ValueError, match="ℓ∞ ball"):
        projected_bounds(net, lv.LpBall(x, 0.1, p=2), 5)


def test_the_projection_loss_is_exact_where_projections_would_cost_more():
    """At most k crossing first-layer units per hidden layer: the exact margins, else the estimate."""
    model, shape = random_convnet(1, 8, seed=2)
    net = lv.Network.from_torch(model, input_shape=shape)
    x = torch.rand(3, *shape, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2])
    hidden = len(net.blocks) - 1
    for eps in (0.3, 1.0):
        ball = lv.LinfBall(x, eps)
        with torch.no_grad():
            first = lv.interval_bounds(net, ball, rigorous=False)
            most = int(((first.lower[0] < 0) & (first.upper[0] > 0)).flatten(1).sum(1).max())
            assert most > 2 * hidden, "units must cross for the comparison to mean anything"
            k_pay, k_exact = (most - 1) // hidden, -(-most // hidden)  # k · hidden < most ≤ k_exact · hidden
            assert projections_pay(net, ball, k_pay) and not projections_pay(net, ball, k_exact)
            exact = margin_estimates(Loss.EXACT, net, ball, y)
            cheap = margin_estimates(Loss.PROJECTION, net, ball, y, projections=k_exact)
            estimate = margin_estimates(Loss.PROJECTION, net, ball, y, projections=k_pay,
                                        generator=torch.Generator().manual_seed(0))
        assert torch.equal(cheap, exact)
        assert not torch.allclose(estimate, exact, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("loss", SOUND)
def test_sound_losses_bound_the_margins_and_the_cross_entropy_at_attack_points(loss, mlp_case):
    model, net, x, y = mlp_case
    eps = 0.05
    J = margin_estimates(loss, net, lv.LinfBall(x, eps), y, beta=0.5)
    x_adv = lv.pgd(model, x, y, eps, steps=30, step_size=0.005)
    samples = lv.LinfBall(x, eps).sample(64, generator=torch.Generator().manual_seed(0))  # (B, n, *shape)
    points = torch.cat([x_adv.unsqueeze(1), samples], 1)
    with torch.no_grad():
        logits = model(points.reshape(-1, 6)).view(len(y), -1, 4)
    margins = logits.gather(2, y.view(-1, 1, 1).expand(-1, logits.shape[1], 1)) - logits  # f_y − f_j
    assert (J.unsqueeze(1) <= margins + 1e-5).all()
    # CE(−J, y) ≥ CE(f(x'), y) example by example, the PGD point included (Theorem 2)
    robust = F.cross_entropy(-J, y, reduction="none")
    with torch.no_grad():
        attacked = F.cross_entropy(model(x_adv), y, reduction="none")
    assert (robust >= attacked - 1e-5).all()


def test_when_no_unit_crosses_every_bound_is_the_true_minimum_and_ibp_is_looser():
    model = random_mlp([4, 8, 8, 3], seed=5)
    net = lv.Network.from_torch(model)
    x = torch.rand(4, 4, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 1, 2, 0])
    eps = 1e-4
    ball = lv.LinfBall(x, eps)
    assert int(lv.interval_bounds(net, ball, rigorous=False).n_crossing().sum()) == 0
    exact = margin_estimates(Loss.EXACT, net, ball, y)
    crown = margin_estimates(Loss.CROWN_IBP, net, ball, y)
    ibp = margin_estimates(Loss.IBP, net, ball, y)
    torch.testing.assert_close(exact, crown, rtol=1e-5, atol=1e-5)
    assert (exact >= ibp - 1e-6).all() and (exact - ibp).abs().max() > 0  # affine on the ball: the dual is exact


@pytest.mark.parametrize("loss", list(Loss))
def test_training_loss_mixes_kappa_and_is_differentiable(loss):
    model, shape = random_convnet(1, 8, seed=6)
    x = torch.rand(4, *shape, generator=torch.Generator().manual_seed(5))
    y = torch.tensor([0, 1, 2, 3])
    value = training_loss(loss, model, x, y, 0.05, kappa=0.25, generator=torch.Generator().manual_seed(0))
    clean = F.cross_entropy(model(x), y)
    if loss is Loss.STANDARD:
        torch.testing.assert_close(value.total, clean)
        assert math.isnan(float(value.robust))
    else:
        torch.testing.assert_close(value.total, 0.25 * clean + 0.75 * value.robust, rtol=1e-5, atol=1e-6)
        assert float(value.robust) >= float(clean.detach()) - 1e-5 or loss is Loss.PROJECTION
        assert 0 <= float(value.robust_err) <= 1
    value.total.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)
    skipped = training_loss(loss, model, x, y, 0.05, kappa=1.0)  # κ = 1: no robust term computed
    assert math.isnan(float(skipped.robust)) and torch.allclose(skipped.total, clean)


def test_exact_loss_is_the_robust_loss_of_theorem_2(mlp_case):
    model, _, x, y = mlp_case
    value = training_loss(Loss.EXACT, model, x, y, 0.05)
    expected, err = lv.robust_loss(model, x, y, 0.05)
    torch.testing.assert_close(value.total, expected)
    assert float(value.robust_err) == pytest.approx(float(err))
