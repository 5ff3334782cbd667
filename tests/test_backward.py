"""Backward walks for layer-wise bounds, and Algorithm 1's per-layer choice of direction."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import lpverify as lv
from lpverify import backward, dual
from lpverify.columns import block_macs
from conftest import assert_bounds_close, random_mlp


def handovers(monkeypatch) -> list[int]:
    """Record the block at which Algorithm 1 hands over to backward walks (one entry per call)."""
    seen: list[int] = []
    original = backward.backward_from

    def spy(net, ball, lower, upper, *args, **kwargs):
        seen.append(len(lower))
        return original(net, ball, lower, upper, *args, **kwargs)

    monkeypatch.setattr(backward, "backward_from", spy)
    return seen


def forward_only(monkeypatch, fn):
    with monkeypatch.context() as m:
        m.setattr(dual, "AUTO_DIRECTION", False)
        return fn()


def bottleneck(seed: int = 0, dtype=torch.float64) -> lv.Network:
    """784 → 10 → 200 → 10: the logits are cheaper walked back than the 784 + crossing columns pushed to them."""
    return lv.Network.from_torch(random_mlp([784, 10, 200, 10], seed).to(dtype), input_shape=(784,))


@pytest.mark.parametrize("rigorous", [True, False])
def test_a_bottleneck_net_walks_back_with_the_same_bounds_and_objective(monkeypatch, rigorous):
    net = bottleneck()
    gen = torch.Generator().manual_seed(1)
    ball = lv.LinfBall(torch.rand(4, 784, generator=gen, dtype=torch.float64), 0.05)
    c = torch.randn(4, 3, 10, generator=gen, dtype=torch.float64)
    seen = handovers(monkeypatch)
    with torch.no_grad():
        auto = dual.forward_objective(net, ball, c, rigorous=rigorous)
        assert seen == [2], "the 10 logits after the 200-unit layer are cheaper walked back than 794 columns pushed"
        reference = forward_only(monkeypatch, lambda: dual.forward_objective(net, ball, c, rigorous=rigorous))
    assert seen == [2]
    assert bool(((auto.bounds.upper[1] > 0) & (auto.bounds.lower[1] < 0)).any()), "units must cross"
    assert_bounds_close(auto.bounds, reference.bounds, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(auto.J, reference.J, rtol=1e-6, atol=1e-9)
    if rigorous:  # the handed-over objective is a float64 walk: its rounding is already subtracted
        assert bool((auto.allowance == 0).all())


def test_the_choice_compares_the_two_costs(monkeypatch):
    """The cost model: 2·n_i objectives through blocks 1..i against the columns' entries times their rows."""
    net = bottleneck()
    walk = sum(block_macs(b) for b in net.blocks[:2])
    assert block_macs(net.blocks[0]) == 784 * 10 and block_macs(net.blocks[1]) == 10 * 200
    assert backward.backward_cost(net, 1, rigorous=False) == 2 * 200 * walk
    assert backward.backward_cost(net, 1, rigorous=True) == 2 * 200 * walk * backward.RIGOROUS_FACTOR
    # The paper's MNIST net keeps its columns: they live on receptive fields, the walks cross both convolutions.
    from lpverify.zoo import paper_model

    torch.manual_seed(0)
    paper = lv.Network.from_torch(paper_model("mnist"), input_shape=(1, 28, 28))
    seen = handovers(monkeypatch)
    with torch.no_grad():
        lv.dual_bounds(paper, lv.LinfBall(torch.rand(1, 1, 28, 28), 0.1))
    assert seen == []


@st.composite
def narrowing_nets(draw):
    """Dense ReLU nets whose widths jump up and down, at radii where many units cross."""
    widths = [draw(st.integers(2, 60))] + [draw(st.sampled_from([1, 2, 3, 30, 60])) for _ in range(draw(st.integers(1, 3)))]
    widths.append(draw(st.integers(1, 4)))
    seed = draw(st.integers(0, 2**20))
    net = lv.Network.from_torch(random_mlp(widths, seed).double(), input_shape=(widths[0],))
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(3, widths[0], generator=gen, dtype=torch.float64)
    return net, lv.LinfBall(x, draw(st.sampled_from([0.01, 0.1, 0.5]))), draw(st.booleans())


@settings(max_examples=30, deadline=None)
@given(case=narrowing_nets())
def test_either_direction_gives_the_same_bounds(case):
    """Whatever layer the handover happens at (or none), Algorithm 1's bounds and J(±e) are the same."""
    net, ball, rigorous = case
    c = torch.cat([torch.eye(net.n_outputs), -torch.eye(net.n_outputs)]).double().expand(3, -1, -1)
    with torch.no_grad(), pytest.MonkeyPatch.context() as monkeypatch:
        auto = dual.forward_objective(net, ball, c, rigorous=rigorous)
        reference = forward_only(monkeypatch, lambda: dual.forward_objective(net, ball, c, rigorous=rigorous))
    assert_bounds_close(auto.bounds, reference.bounds, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(auto.J, reference.J, rtol=1e-6, atol=1e-9)


def test_handover_happens_in_the_property_above(monkeypatch):
    """The property is not vacuous: the strategy's nets do hand over, at more than one layer."""
    seen = handovers(monkeypatch)
    blocks = set()
    for widths in ([50, 2, 60, 60, 2], [60, 3, 60, 3], [40, 1, 60, 2]):
        net = lv.Network.from_torch(random_mlp(widths, 0).double(), input_shape=(widths[0],))
        with torch.no_grad():
            lv.dual_bounds(net, lv.LinfBall(torch.rand(2, widths[0], dtype=torch.float64), 0.5))
        blocks.update(seen)
        seen.clear()
    assert blocks and blocks <= {1, 2, 3}


def test_certificates_do_not_depend_on_the_direction(monkeypatch):
    net = bottleneck(seed=3, dtype=torch.float32)
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(6, 784, generator=gen)
    y = net(x).argmax(1)
    counts = []
    for eps in (0.0005, 0.002, 0.01):
        auto = lv.certify(net, x, y, eps)
        reference = forward_only(monkeypatch, lambda: lv.certify(net, x, y, eps))
        assert torch.equal(auto, reference)
        counts.append(int(auto.sum()))
    assert counts[0] > counts[-1], f"the radii must span certified and uncertified examples: {counts}"


def test_handed_over_float32_bounds_hold_in_exact_arithmetic(monkeypatch):
    """Rigorous float32 bounds after a handover contain every sampled pre-activation, computed with fractions."""
    from fractions import Fraction

    seen = handovers(monkeypatch)
    model = random_mlp([784, 10, 200, 10], 0)  # float32; the logits are handed over (see the bottleneck above)
    net = lv.Network.from_torch(model, input_shape=(784,))
    gen = torch.Generator().manual_seed(4)
    x = torch.rand(1, 784, generator=gen)
    eps = 0.05
    c = torch.zeros(1, 2, 10)
    c[0, 0, :2], c[0, 1, :2] = torch.tensor([1.0, -1.0]), torch.tensor([-1.0, 1.0])
    with torch.no_grad():
        result = dual.forward_objective(net, lv.LinfBall(x, eps), c)
    assert seen == [2] and result.bounds.lower[0].dtype == torch.float32
    assert bool(((result.bounds.lower[1] < 0) & (result.bounds.upper[1] > 0)).any()), "units must cross"
    layers = [(l.weight.detach().double().numpy(), l.bias.detach().double().numpy()) for l in model if hasattr(l, "weight")]
    exact_layers = [([[Fraction(v) for v in row] for row in w], [Fraction(v) for v in b]) for w, b in layers]
    signs = torch.randint(0, 2, (12, 784), generator=gen).float() * 2 - 1  # corners of the box, then inner points
    inner = torch.rand(4, 784, generator=gen) * 2 - 1
    for direction in torch.cat([signs, inner]):
        point = [Fraction(float(v)) + Fraction(eps) * Fraction(float(d)) for v, d in zip(x[0], direction)]
        z = point
        for i, (w, b) in enumerate(exact_layers):
            pre = [sum((wij * zj for wij, zj in zip(row, z)), Fraction(0)) + bi for row, bi in zip(w, b)]
            lo, up = result.bounds.lower[i][0].tolist(), result.bounds.upper[i][0].tolist()
            assert all(Fraction(l) <= p <= Fraction(u) for l, p, u in zip(lo, pre, up)), f"layer {i}"
            z = [max(p, Fraction(0)) for p in pre]
        margins = [pre[0] - pre[1], pre[1] - pre[0]]
        assert all(Fraction(float(j)) <= m for j, m in zip(result.J[0], margins))
