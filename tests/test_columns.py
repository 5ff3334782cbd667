"""Algorithm 1's columns on their receptive fields: exactly the dense identity push."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import lpverify as lv
from lpverify import columns
from lpverify.columns import Columns, conv_plan
from lpverify.network import Conv
from conftest import assert_bounds_close


@st.composite
def conv_nets(draw):
    """2–3 convolutions (kernel, stride, padding, channels drawn), then an optional dense layer."""
    channels = draw(st.integers(1, 3))
    side = draw(st.integers(5, 11))
    shape = (channels, side, side)
    layers: list[nn.Module] = []
    for _ in range(draw(st.integers(2, 3))):
        kernel = draw(st.integers(1, 4))
        stride = draw(st.integers(1, 3))
        padding = draw(st.integers(0, kernel - 1))
        if (side + 2 * padding - kernel) // stride + 1 < 1:
            break
        out = draw(st.integers(1, 4))
        layers += [nn.Conv2d(channels, out, kernel, stride=stride, padding=padding), nn.ReLU()]
        channels, side = out, (side + 2 * padding - kernel) // stride + 1
    layers.append(nn.Flatten())
    if draw(st.booleans()):
        layers += [nn.Linear(channels * side * side, 7), nn.ReLU()]
        layers.append(nn.Linear(7, 3))
    else:
        layers.append(nn.Linear(channels * side * side, 3))
    seed = draw(st.integers(0, 2**20))
    gen = torch.Generator().manual_seed(seed)
    model = nn.Sequential(*layers)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.3 if p.ndim == 1 else 1.0 / max(1, p[0].numel()) ** 0.5))
    x = torch.rand(3, *shape, generator=gen, dtype=torch.float64)
    eps = draw(st.sampled_from([0.02, 0.1, 0.3]))
    return lv.Network.from_torch(model, input_shape=shape), lv.LinfBall(x, eps)


def dense_reference(monkeypatch, fn):
    """``fn()`` with every column stored densely, pushed in one example per chunk."""
    with monkeypatch.context() as m:
        m.setattr(columns, "STRUCTURED", False)
        m.setattr(columns, "CHUNK_ELEMENTS", 64)
        return fn()


@settings(max_examples=40, deadline=None)
@given(case=conv_nets(), rigorous=st.booleans())
def test_receptive_fields_give_the_dense_push_bounds(case, rigorous):
    net, ball = case
    with torch.no_grad(), pytest.MonkeyPatch.context() as monkeypatch:
        structured = lv.dual_bounds(net, ball, rigorous=rigorous)
        dense = dense_reference(monkeypatch, lambda: lv.dual_bounds(net, ball, rigorous=rigorous))
    assert_bounds_close(structured, dense, rtol=1e-6, atol=1e-9)


@settings(max_examples=25, deadline=None)
@given(case=conv_nets())
def test_objective_from_the_forward_pass_is_theorem_1(case):
    """J(c) as one more Algorithm 1 layer equals the backward walk over the same bounds (plain), and
    the rigorous one lies below both and below every sampled value."""
    net, ball = case
    gen = torch.Generator().manual_seed(0)
    c = torch.randn(ball.batch_size, 4, net.n_outputs, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        bounds, J = lv.dual_bounds_and_objective(net, ball, c, rigorous=False)
        walk = lv.dual_objective(net, ball, c, bounds, rigorous=False)
        torch.testing.assert_close(J, walk, rtol=1e-9, atol=1e-9)
        assert_bounds_close(bounds, lv.dual_bounds(net, ball, rigorous=False), rtol=0, atol=0)
        _, J_rigorous = lv.dual_bounds_and_objective(net, ball, c)
        assert (J_rigorous <= J).all()
        z = ball.sample(200, generator=gen)  # (B, 200, *shape)
        values = torch.einsum("bso,bmo->bsm", net(z.flatten(0, 1)).view(ball.batch_size, 200, -1), c)
        assert (J_rigorous.unsqueeze(1) <= values).all()


def test_conv_plan_holds_the_matrix_entries():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1)
    op = Conv(conv.weight.detach().double(), None, (2, 2), (1, 1), (2, 7, 7))
    matrix = op.sparse()[0].toarray()
    n_in, n_out = matrix.shape[1], matrix.shape[0]
    index = torch.tensor([[0, 5, n_in, 40], [97, n_in, n_in, 3]])  # two columns, with padding
    out_index, table = conv_plan(op, index)
    weight = torch.cat([op.weight.flatten(), torch.zeros(1, dtype=torch.float64)])
    for k in range(2):
        for a, row in enumerate(out_index[k].tolist()):
            for b, col in enumerate(index[k].tolist()):
                expected = matrix[row, col] if row < n_out and col < n_in else 0.0
                assert float(weight[table[k, a, b]]) == expected
        # Every output row the column reaches is in its support.
        cols = [c for c in index[k].tolist() if c < n_in]
        reached = set(matrix[:, cols].nonzero()[0].tolist())
        assert reached == {r for r in out_index[k].tolist() if r < n_out}


def test_sparse_columns_reduce_like_dense_ones():
    gen = torch.Generator().manual_seed(1)
    batch, k, s, size = 3, 4, 5, 9
    # One entry per unit and column, as supports are; index `size` is padding, with value zero.
    index = torch.stack([torch.randperm(size + 1, generator=gen)[:s] for _ in range(k)])
    values = torch.randn(k, s, batch, generator=gen, dtype=torch.float64)
    values = torch.where((index == size).unsqueeze(2), torch.zeros_like(values), values)
    sparse = Columns(values, index, size)
    dense = sparse.to_dense()
    assert dense.shape == (batch, k, size)
    for b in range(batch):  # entry by entry
        for col in range(k):
            for slot in range(s):
                if index[col, slot] < size:
                    assert dense[b, col, index[col, slot]] == values[col, slot, b]
    assert int((dense != 0).sum()) == int((values != 0).sum())
    as_dense = Columns(dense, None, size)
    slope = torch.rand(batch, size, generator=gen, dtype=torch.float64)
    coef = -torch.rand(batch, k, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(sparse.scaled(slope).to_dense(), dense * slope.unsqueeze(1))
    for q in (1.0, 2.0, float("inf")):
        torch.testing.assert_close(sparse.norm(q), as_dense.norm(q))
    torch.testing.assert_close(as_dense.norm(1.0), dense.abs().sum(1))
    for got, want in zip(sparse.weighted_parts(coef), as_dense.weighted_parts(coef)):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(as_dense.weighted_parts(coef)[0], (coef.unsqueeze(2) * dense.clamp(min=0)).sum(1))


def test_cached_weights_follow_an_in_place_update():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, stride=2), nn.ReLU(), nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 2 * 2, 3))
    net = lv.Network.from_torch(model, input_shape=(1, 9, 9))
    ball = lv.LinfBall(torch.rand(2, 1, 9, 9), 0.1)
    with torch.no_grad():
        lv.dual_bounds(net, ball)  # fills the caches
        model[2].weight.mul_(-0.5)
        model[5].weight.add_(0.25)
        updated = lv.dual_bounds(net, ball)
    fresh = lv.Network.from_torch(nn.Sequential(*[m for m in model]), input_shape=(1, 9, 9))
    with torch.no_grad():
        assert_bounds_close(updated, lv.dual_bounds(fresh, ball), rtol=0, atol=0)


def test_paper_architecture_keeps_receptive_fields():
    """On the MNIST model an input pixel's column reaches at most 288 of the 1,568 second-layer units;
    the pixels are grouped by that width, each pixel in exactly one group."""
    net = lv.Network.from_torch(lv.zoo.conv_small(), input_shape=(1, 28, 28))
    groups = columns.input_columns(net, torch.full((1, 784), 0.1))
    members = torch.cat([m for m, _ in columns.column_groups(net)])
    assert torch.equal(members.sort().values, torch.arange(784))  # every pixel reaches the second layer
    widths = []
    for cols in groups:
        assert cols.index is not None and cols.values.shape[1:] == (cols.index.shape[1], 1)
        pushed = columns.push(net.blocks[1], cols.scaled(torch.ones(1, 16, 14, 14)))
        assert pushed.index is not None
        counts = (pushed.index < 1568).sum(1)
        assert bool((counts == pushed.index.shape[1]).all())  # no padding within a group
        widths.append(pushed.index.shape[1])
    assert max(widths) == 288 and len(set(widths)) == len(widths)
    entries = columns.column_entries(net)
    assert entries[2:] == [784 * 100, 784 * 10] and entries[1] < 784 * 288
