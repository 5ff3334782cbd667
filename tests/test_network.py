"""Network IR: grouping, forward/transpose/sparse agreement, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import lpverify as lv
from conftest import random_convnet, random_mlp



def conv_model(stride: int, padding: int, side: int, seed: int) -> tuple[nn.Sequential, tuple[int, int, int]]:
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, stride=stride, padding=padding), nn.ReLU(), nn.Flatten(), nn.Linear(1, 1)
    )
    out = (side + 2 * padding - 3) // stride + 1
    model[3] = nn.Linear(3 * out * out, 5)
    return model, (2, side, side)


def test_from_torch_matches_module_and_groups_affine_layers():
    model, shape = random_convnet(1, 8, seed=0)
    net = lv.Network.from_torch(model, input_shape=shape)
    assert len(net.blocks) == 4  # conv | conv | flatten+linear | linear: the paper's layer numbering
    assert net.hidden_shapes == ((3, 4, 4), (4, 4, 4), (12,))
    x = torch.rand(5, *shape)
    torch.testing.assert_close(net(x), model(x))


def test_paper_architecture_has_four_blocks():
    net = lv.Network.from_torch(lv.zoo.conv_small(), input_shape=(1, 28, 28))
    assert [b.out_shape for b in net.blocks] == [(16, 14, 14), (32, 7, 7), (100,), (10,)]


def test_linear_chain_is_kept_apart_so_no_product_of_weights_rounds():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 6), nn.Linear(6, 3), nn.ReLU(), nn.Linear(3, 2), nn.Linear(2, 2))
    net = lv.Network.from_torch(model)
    assert len(net.blocks) == 2 and all(len(b.ops) == 2 for b in net.blocks)
    assert net.blocks[0].ops[0].weight is model[0].weight
    x = torch.randn(7, 4)
    torch.testing.assert_close(net(x), model(x))


@given(stride=st.integers(1, 3), padding=st.integers(0, 2), side=st.integers(4, 9), seed=st.integers(0, 1000))
def test_conv_block_equals_its_sparse_export(stride, padding, side, seed):
    model, shape = conv_model(stride, padding, side, seed)
    net = lv.Network.from_torch(model, input_shape=shape)
    block = net.blocks[0]
    w, b = block.sparse()
    z = torch.randn(3, *shape, dtype=torch.float64)
    expected = block(z).detach().flatten(1).numpy()
    np.testing.assert_allclose(expected, (w @ z.flatten(1).numpy().T).T + b, atol=1e-12)
    # The transpose is the sparse matrix's transpose (odd sizes need output_padding).
    v = torch.randn(3, *block.out_shape, dtype=torch.float64)
    np.testing.assert_allclose(block.transpose(v).detach().flatten(1).numpy(), (w.T @ v.flatten(1).numpy().T).T, atol=1e-12)
    # abs_linear is |W| r and the structural pattern covers every nonzero.
    r = torch.rand(2, *shape, dtype=torch.float64)
    np.testing.assert_allclose(block.abs_linear(r).detach().flatten(1).numpy(), (abs(w) @ r.flatten(1).numpy().T).T, atol=1e-12)
    assert not ((w.toarray() != 0) & (block.pattern().toarray() == 0)).any()


@given(seed=st.integers(0, 1000))
def test_unit_columns_are_columns_of_the_matrix(seed):
    model, shape = random_convnet(2, 7, seed)
    net = lv.Network.from_torch(model, input_shape=shape)
    for block in net.blocks:
        w, _ = block.sparse()
        gen = torch.Generator().manual_seed(seed)
        index = torch.randint(0, block.in_features, (2, 5), generator=gen)
        cols = block.unit_columns(index, torch.zeros((), dtype=torch.float64)).detach().flatten(2).numpy()
        np.testing.assert_allclose(cols, w.toarray().T[index.numpy()], atol=1e-12)


def test_sparse_export_of_whole_network_reproduces_forward():
    model, shape = random_convnet(1, 6, seed=3)
    net = lv.Network.from_torch(model, input_shape=shape)
    x = torch.rand(4, *shape, dtype=torch.float64)
    z = x.flatten(1).numpy().T
    for i, (w, b) in enumerate(net.sparse()):
        z = w @ (z if i == 0 else np.maximum(z, 0)) + b[:, None]
    np.testing.assert_allclose(z.T, net(x).detach().numpy(), atol=1e-12)


def test_sparse_cache_follows_parameter_updates():
    model = random_mlp([3, 4, 2], seed=0)
    net = lv.Network.from_torch(model)
    before = net.sparse()[0][0].toarray().copy()
    with torch.no_grad():
        model[0].weight.add_(1.0)
    np.testing.assert_allclose(net.sparse()[0][0].toarray(), before + 1.0)


def test_float32_parameters_run_in_float64():
    model = random_mlp([5, 8, 3], seed=2)
    net = lv.Network.from_torch(model)
    x = torch.randn(4, 5, dtype=torch.float64)
    assert net(x).dtype == torch.float64
    torch.testing.assert_close(net(x).float(), model(x.float()), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "model, kwargs, message",
    [
        (nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2), nn.BatchNorm1d(2, track_running_stats=False)), {},
         r"module 3 \(BatchNorm1d.*track_running_stats=False"),
        (nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Dropout()), {}, "unsupported module Dropout"),
        (nn.Sequential(nn.Linear(3, 4), nn.ELU(), nn.Linear(4, 2)), {}, "ELU"),
        (nn.Sequential(nn.Linear(3, 4), nn.LeakyReLU(2.0), nn.Linear(4, 2)), {}, r"slope must lie in \[0, 1\]"),
        (nn.Sequential(nn.Linear(3, 4), nn.Sigmoid()), {}, "ends with a Sigmoid"),
        (nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2)), {}, "input_shape is required"),
        (nn.Sequential(nn.ReLU(), nn.Linear(3, 2)), {}, "first layer"),
        (nn.Sequential(nn.Linear(3, 4), nn.ReLU()), {}, "ends with a ReLU"),
        (nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.ReLU(), nn.Linear(4, 2)), {}, "second consecutive ReLU"),
        (nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(5, 2)), {}, "expects 5 features"),
        (nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Linear(8, 2)), {"input_shape": (1, 4, 4)}, "flatten first"),
        (nn.Sequential(nn.Conv2d(1, 2, 3, dilation=2), nn.Flatten(), nn.Linear(2, 2)), {"input_shape": (1, 5, 5)}, "dilation"),
        (nn.Sequential(nn.Conv2d(2, 2, 3, groups=2), nn.Flatten(), nn.Linear(2, 2)), {"input_shape": (2, 3, 3)}, "groups"),
        (nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(2, 2)), {"input_shape": (1, 3, 3)}, "channels=3"),
        (nn.Sequential(), {}, "empty"),
    ],
)
def test_unsupported_models_raise_naming_the_problem(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        lv.Network.from_torch(model, **kwargs)


def test_input_of_wrong_shape_is_rejected():
    net = lv.Network.from_torch(random_mlp([3, 4, 2], seed=0))
    with pytest.raises(ValueError, match="does not match the network's input shape"):
        net(torch.zeros(2, 4))
