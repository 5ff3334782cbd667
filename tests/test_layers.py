"""Affine layers beyond Linear/Conv (lpverify/ops.py): batch norm, average pooling, normalisation, permutations.

Each op must equal torch (eval mode) and the ONNX reference evaluator, export
the exact Jacobian of its forward pass, have a transpose that is the adjoint
of its linear part, and keep every bound method sound: the chain
J ≤ LP ≤ MILP ≤ f(points) and the rigorous bounds around exact values.
"""

from __future__ import annotations

import math
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

import lpverify as lv
from lpverify.network import AffineBlock
from lpverify.ops import AvgPool, BatchNorm, Elementwise, Permute
from strategies import Case, sampled_pre_activations

F64 = torch.float64


def randomise_batchnorms(model: nn.Module, gen: torch.Generator) -> nn.Module:
    """Random running statistics and affine parameters, so no batch norm is near the identity."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                m.running_mean.copy_(torch.rand(c, generator=gen) * 2 - 1)
                m.running_var.copy_(torch.rand(c, generator=gen) * 2 + 0.25)
                m.weight.copy_(torch.rand(c, generator=gen) * 2 - 1)
                m.bias.copy_(torch.rand(c, generator=gen) - 0.5)
    return model


def layer_model(seed: int, pool: str, side: int = 4) -> tuple[nn.Sequential, tuple[int, int, int]]:
    """Normalize – Conv – BN – ReLU – pool – Conv – ReLU – global average – Flatten – BN1d – Linear – ReLU – Linear."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    pools = {
        "avg2": nn.AvgPool2d(2),
        "avg3": nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
        "avg3_pad": nn.AvgPool2d(3, stride=1, padding=1),
    }
    model = nn.Sequential(
        lv.Normalize([0.4, 0.6], [0.3, 0.2]),
        nn.Conv2d(2, 3, 3, padding=1),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        pools[pool],
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.BatchNorm1d(4),
        nn.Linear(4, 5),
        nn.ReLU(),
        nn.Linear(5, 3),
    )
    return randomise_batchnorms(model, gen).eval(), (2, side, side)


# -- random ops and their matrices ---------------------------------------------------


@st.composite
def ops(draw):
    """One op of each new kind with random constants, in float64."""
    kind = draw(st.sampled_from(["scale", "divide", "shift", "batchnorm", "avgpool", "permute"]))
    seed = draw(st.integers(0, 2**16))
    gen = torch.Generator().manual_seed(seed)
    c, h, w = draw(st.integers(1, 3)), draw(st.integers(2, 6)), draw(st.integers(2, 6))
    shape = (c, h, w)
    const_shape = draw(st.sampled_from([(), (c, 1, 1), shape]))
    if kind in ("scale", "divide", "shift"):
        value = torch.rand(const_shape, generator=gen, dtype=F64) + 0.5
        if kind == "shift":
            return Elementwise(None, value - 1.0, shape)
        return Elementwise(value * (1 - 2 * (torch.rand(const_shape, generator=gen) < 0.5)), None, shape,
                           divide=kind == "divide")
    if kind == "batchnorm":
        stats = [torch.rand(c, generator=gen, dtype=F64) + 0.1 for _ in range(4)]
        return BatchNorm(stats[0] - 0.5, stats[1], stats[2], stats[3], 1e-5, shape, F64)
    if kind == "permute":
        perm = draw(st.permutations(range(3)))
        return Permute(tuple(perm), shape)
    kh, kw = draw(st.integers(1, h)), draw(st.integers(1, w))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2)))
    include = draw(st.booleans())
    override = draw(st.sampled_from([None, None, 5]))
    return AvgPool((kh, kw), stride, padding, shape, include, override)


@settings(max_examples=60)
@given(op=ops())
def test_sparse_export_is_the_jacobian_and_transpose_the_adjoint(op):
    n_in, n_out = math.prod(op.in_shape), math.prod(op.out_shape)
    eye = torch.eye(n_in, dtype=F64).view(n_in, *op.in_shape)
    with torch.no_grad():
        jacobian = op.linear(eye).reshape(n_in, n_out).T.numpy()  # column k = W e_k
        bias = op.forward(torch.zeros(1, *op.in_shape, dtype=F64)).flatten().numpy()
    w, b = op.sparse()
    assert w.shape == (n_out, n_in)
    np.testing.assert_array_equal(w.toarray(), jacobian)  # exact: every entry is one float64 operation on 1
    np.testing.assert_array_equal(b, bias)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, *op.in_shape, generator=gen, dtype=F64)
    v = torch.randn(3, *op.out_shape, generator=gen, dtype=F64)
    with torch.no_grad():
        np.testing.assert_allclose(op.forward(x).flatten(1).numpy(), x.flatten(1).numpy() @ w.T + b, rtol=1e-13, atol=1e-13)
        lhs = (op.linear(x) * v).flatten(1).sum(1)  # ⟨Ax, v⟩
        rhs = (x * op.transpose(v)).flatten(1).sum(1)  # ⟨x, Aᵀv⟩
        torch.testing.assert_close(lhs, rhs, rtol=1e-12, atol=1e-12)
        assert op.transpose(v).shape == (3, *op.in_shape)
        r = x.abs()
        np.testing.assert_allclose(op.abs_linear(r).flatten(1).numpy(), r.flatten(1).numpy() @ abs(w).T.toarray(),
                                   rtol=1e-13, atol=1e-13)
        bias_abs = op.abs_bias(r)
        np.testing.assert_array_equal(np.zeros(n_out) if bias_abs is None else
                                      np.broadcast_to(bias_abs.numpy(), op.out_shape).ravel(), np.abs(b))
        index = torch.randint(0, n_in, (2, 3), generator=gen)
        cols = op.unit_columns(index, torch.zeros((), dtype=F64)).flatten(2).numpy()
        np.testing.assert_array_equal(cols, w.toarray().T[index.numpy()])
    assert not ((w.toarray() != 0) & (op.pattern().toarray() == 0)).any()
    # fan bounds the terms summed for one entry, forwards (a row) and transposed (a column).
    nonzeros = (w.toarray() != 0)
    assert op.fan >= max(nonzeros.sum(1).max(), nonzeros.sum(0).max())


def test_average_pool_matches_torch_for_every_padding_rule():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 2, 7, 6, generator=gen, dtype=F64)
    for kwargs in [dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
                   dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 0), divisor_override=4), dict(kernel_size=2)]:
        pool = nn.AvgPool2d(**kwargs)
        net = lv.Network.from_torch(nn.Sequential(pool), input_shape=(2, 7, 6))
        torch.testing.assert_close(net(x), pool(x), rtol=1e-15, atol=1e-15)


# -- torch and ONNX agree with the IR ------------------------------------------------


def export(model: nn.Module, shape: tuple[int, ...], path: Path) -> Path:
    """The TorchScript exporter, keeping batch norm unfused (the eval exporter folds it into a preceding conv)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.zeros(1, *shape), str(path), dynamo=False, input_names=["x"], output_names=["y"],
                          training=torch.onnx.TrainingMode.PRESERVE)
    return path


@settings(max_examples=8)
@given(seed=st.integers(0, 2**16), pool=st.sampled_from(["avg2", "avg3", "avg3_pad"]))
def test_forward_equals_torch_and_the_onnx_reference(tmp_path_factory, seed, pool):
    pytest.importorskip("onnx")
    model, shape = layer_model(seed, pool, side=6)
    net = lv.Network.from_torch(model, input_shape=shape)
    assert [type(op).__name__ for op in net.blocks[0].ops] == ["Elementwise", "Elementwise", "Conv", "BatchNorm"]
    x = torch.rand(16, *shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(net(x), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(net.detached(F64)(x.double()), model.double()(x.double()), rtol=1e-6, atol=1e-6)
    model.float()
    path = export(model, shape, tmp_path_factory.mktemp("onnx") / "layers.onnx")
    onnx_net = lv.load_onnx(path)
    assert [[type(op).__name__ for op in b.ops] for b in onnx_net.blocks] == [
        [type(op).__name__ for op in b.ops] for b in net.blocks
    ]
    reference = lv.onnx_import.reference_outputs(path, x.numpy())
    with torch.no_grad():
        np.testing.assert_allclose(onnx_net(x).numpy(), reference, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(onnx_net(x).numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)


def test_zoo_bn_pool_convnet_round_trips_through_onnx(tmp_path):
    pytest.importorskip("onnx")
    torch.manual_seed(4)
    model = randomise_batchnorms(lv.zoo.bn_pool_convnet(in_size=8, n_classes=3, width=2), torch.Generator().manual_seed(4)).eval()
    net = lv.Network.from_torch(model, input_shape=(1, 8, 8))
    assert [b.out_shape for b in net.blocks] == [(2, 8, 8), (4, 4, 4), (3,)]
    x = torch.rand(10, 1, 8, 8)
    path = export(model, (1, 8, 8), tmp_path / "zoo.onnx")
    with torch.no_grad():
        torch.testing.assert_close(net(x), model(x), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(lv.load_onnx(path)(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-5)


def test_flatten_unflatten_identity_and_transpose(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(2), nn.Unflatten(2, (3, 4)), nn.Identity(), nn.Flatten(), nn.Linear(24, 3))
    net = lv.Network.from_torch(model, input_shape=(2, 4, 3))
    assert len(net.blocks) == 1 and [type(op).__name__ for op in net.blocks[0].ops] == ["Dense"]  # reshapes fold away
    x = torch.randn(5, 2, 4, 3)
    torch.testing.assert_close(net(x), model(x))
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).standard_normal((3, 24)).astype(np.float32)
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]), helper.make_node("Flatten", ["t"], ["f"]),
             helper.make_node("Gemm", ["f", "w"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], [numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(tmp_path / "t.onnx"))
    net = lv.load_onnx(tmp_path / "t.onnx")
    assert isinstance(net.blocks[0].ops[0], Permute) and net.blocks[0].ops[0].out_shape == (4, 3, 2)
    np.testing.assert_allclose(net(x).numpy(), x.permute(0, 2, 3, 1).reshape(5, -1).numpy() @ w.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(net(x).numpy(), lv.onnx_import.reference_outputs(tmp_path / "t.onnx", x.numpy()), rtol=1e-5,
                               atol=1e-5)


def test_train_mode_batch_norm_uses_its_running_statistics_and_follows_updates():
    gen = torch.Generator().manual_seed(3)
    model = randomise_batchnorms(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)), gen)
    net = lv.Network.from_torch(model.train())  # train mode: still the running statistics
    x = torch.randn(6, 3, generator=gen)
    with torch.no_grad():
        torch.testing.assert_close(net(x), model.eval()(x))
        model[1].weight.mul_(2.0)
        torch.testing.assert_close(net(x), model(x))  # the constants are recomputed from the module's tensors
    # Differentiable in γ and β, as often as asked (no graph is kept between evaluations).
    ball = lv.LinfBall(x[:2].double(), 0.05)
    for _ in range(2):
        model.zero_grad()
        lv.dual_bounds(net, ball, rigorous=False).lower[-1].sum().backward()
        assert model[1].weight.grad.abs().sum() > 0 and model[1].bias.grad.abs().sum() > 0


def test_batch_norm_constants_are_one_network_in_every_dtype():
    model, shape = layer_model(5, "avg2")
    net = lv.Network.from_torch(model, input_shape=shape)
    bn32, bn64 = net.blocks[0].ops[3], net.detached(F64).blocks[0].ops[3]
    for a, b in zip(bn32.constants(), bn64.constants()):
        assert a.dtype == torch.float32 and torch.equal(a, b)  # float64 walks read the same float32 constants
    m = model[2]
    scale = (m.weight.double() / torch.sqrt(m.running_var.double() + m.eps)).float()
    assert torch.equal(bn32.constants()[0].flatten(), scale)


# -- the bound methods on these layers ------------------------------------------------


@settings(max_examples=6)
@given(seed=st.integers(0, 2**16), pool=st.sampled_from(["avg2", "avg3", "avg3_pad"]), eps=st.sampled_from([0.02, 0.1]))
def test_chain_J_le_lp_le_milp_le_sampled_values(seed, pool, eps):
    model, shape = layer_model(seed, pool)
    net = lv.Network.from_torch(model, input_shape=shape)
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(1, *shape, generator=gen, dtype=F64)
    case = Case(net, lv.LinfBall(x, eps, 0.0, 1.0), seed)
    c = torch.randn(1, 2, net.n_outputs, generator=gen, dtype=F64)
    with torch.no_grad():
        interval = lv.interval_bounds(net, case.ball)
        dual = lv.dual_bounds(net, case.ball)
        J = lv.dual_objective(net, case.ball, c, dual)[0]
        pre = sampled_pre_activations(case, n=150)
        values = (pre[-1][0].flatten(1) @ c[0].T).min(0).values
    for i, z in enumerate(pre[:-1]):  # every reachable pre-activation inside both boxes
        for b in (interval, dual):
            assert (b.lower[i].unsqueeze(1) <= z).all() and (z <= b.upper[i].unsqueeze(1)).all()
    lp, milp = lv.build_lp(net, case.ball, dual), lv.build_milp(net, case.ball, dual)
    for j in range(2):
        r, m = lp.solve(c[0, j]), milp.solve(c[0, j])
        assert r.optimal and m.optimal
        chain = [float(J[j]), r.bound, r.value, m.value, float(values[j])]
        assert all(a <= b + 1e-6 * (1 + abs(b)) for a, b in zip(chain, chain[1:])), chain


def fused(model: nn.Sequential) -> nn.Sequential:
    """The same network with each batch norm multiplied into the layer before it (torch's fusion, float32)."""
    layers: list[nn.Module] = []
    for m in model:
        if isinstance(m, nn.BatchNorm2d):
            layers[-1] = fuse_conv_bn_eval(layers[-1], m)
        elif isinstance(m, nn.BatchNorm1d):
            layers[-1] = fuse_linear_bn_eval(layers[-1], m)
        else:
            layers.append(m)
    return nn.Sequential(*layers).eval()


def test_batch_norm_model_certifies_what_its_fused_counterpart_certifies():
    gen = torch.Generator().manual_seed(11)
    torch.manual_seed(11)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 4 * 4, 20), nn.BatchNorm1d(20), nn.ReLU(), nn.Linear(20, 5))
    model = randomise_batchnorms(model, gen).eval()
    shape = (1, 8, 8)
    x = torch.rand(40, *shape, generator=gen)
    with torch.no_grad():
        y = model(x).argmax(1)
    off = torch.ones(40, 5, dtype=torch.bool).scatter_(1, y.unsqueeze(1), False)
    # float32, as trained: torch's fusion rounds the products, so the two networks differ by ~1e-7 per weight.
    net, net_fused = (lv.Network.from_torch(m, input_shape=shape) for m in (model, fused(model)))
    assert len(net.blocks[0].ops) == 2 and len(net_fused.blocks[0].ops) == 1
    for eps in (0.005, 0.05):
        ball = lv.LinfBall(x, eps)
        with torch.no_grad():
            J, J_fused = (lv.margin_bounds(n, ball, y, rigorous=False)[off] for n in (net, net_fused))
            J_rigorous = lv.margin_bounds(net, ball, y)[off].view(40, -1)
        torch.testing.assert_close(J, J_fused, rtol=1e-4, atol=1e-6)
        clear = J_rigorous.min(1).values.abs() > 1e-3  # margins not within rounding of zero
        ours, theirs = lv.certify(net, x, y, eps), lv.certify(net_fused, x, y, eps)
        assert torch.equal(ours[clear], theirs[clear]) and int(clear.sum()) >= 30
    assert 0 < int(ours.sum()) < 40  # at ε = 0.05 some but not all examples are certified
    # float64: the fusion is exact to ~1e-16, and the rigorous bounds agree to ~1e-11 relative.
    model64 = model.double()
    net64, fused64 = (lv.Network.from_torch(m, input_shape=shape) for m in (model64, fused(model64)))
    with torch.no_grad():
        J, J_fused = (lv.margin_bounds(n, lv.LinfBall(x.double(), 0.02), y)[off] for n in (net64, fused64))
    torch.testing.assert_close(J, J_fused, rtol=1e-9, atol=1e-12)


def test_rigorous_bounds_contain_the_exact_value_with_true_divisions():
    """A network dividing by 3 (pooling), 0.3 and 7 (normalisation): exact values in rational arithmetic."""
    gen = torch.Generator().manual_seed(2)
    model = nn.Sequential(lv.Normalize([0.1], [0.3], dtype=F64), nn.Conv2d(1, 2, 2), nn.ReLU(),
                          nn.AvgPool2d((1, 3)), nn.Flatten(), nn.Linear(4, 2)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=F64))
    net = lv.Network.from_torch(model, input_shape=(1, 3, 4))
    x = torch.rand(1, 1, 3, 4, generator=gen, dtype=F64)

    def exact(point: np.ndarray) -> list[Fraction]:
        z = [Fraction(float(v)) for v in point.ravel()]
        z = [(v - Fraction(0.1)) / Fraction(0.3) for v in z]
        for i, (w, b) in enumerate(block_matrices):
            z = [max(v, Fraction(0)) for v in z] if i else z
            z = [sum((Fraction(float(wij)) * v for wij, v in zip(row, z) if wij), Fraction(float(bi))) for row, bi in zip(w, b)]
        return z

    # The exact affine maps: the conv's float64 matrix; the pooling's 1/3 and the division kept exact.
    conv_w, conv_b = net.blocks[0].ops[2].sparse()
    block_matrices = [(conv_w.toarray(), conv_b)]
    pool = np.kron(np.eye(4), np.ones(3))  # (4, 12): sums of three, divided below
    lin_w, lin_b = net.blocks[1].ops[1].sparse()
    value = exact(x.numpy())
    hidden = [max(v, Fraction(0)) for v in value]
    pooled = [sum((hidden[j] for j in np.nonzero(row)[0]), Fraction(0)) / 3 for row in pool]
    out = [sum((Fraction(float(w)) * p for w, p in zip(row, pooled)), Fraction(float(b))) for row, b in zip(lin_w.toarray(), lin_b)]
    ball = lv.LinfBall(x, 0.0)
    with torch.no_grad():
        for bounds in (lv.interval_bounds(net, ball), lv.dual_bounds(net, ball)):
            lo, hi = bounds.lower[0].flatten(), bounds.upper[0].flatten()
            assert all(Fraction(float(a)) <= v <= Fraction(float(b)) for a, v, b in zip(lo, value, hi))
        c = torch.eye(2, dtype=F64).unsqueeze(0)
        J = lv.dual_objective(net, ball, c, lv.dual_bounds(net, ball))[0]
    assert all(Fraction(float(j)) <= v for j, v in zip(J, out))
    assert all(abs(float(j) - float(v)) < 1e-10 for j, v in zip(J, out))


def test_rounding_depth_counts_the_new_ops():
    pool = AvgPool((3, 3), (1, 1), (1, 1), (2, 5, 5))
    scale = Elementwise(torch.tensor(2.0), torch.tensor(1.0), (2, 5, 5))
    assert pool.fan == 9 and scale.fan == 1
    assert AffineBlock((scale, pool)).rounding_depth == (1 + 1) + (9 + 1)  # product + shift; 8 sums + 1 division (+1)


# -- clear errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "model, shape, message",
    [
        (nn.Sequential(nn.AvgPool2d(2, ceil_mode=True)), (1, 5, 5), r"module 0 \(AvgPool2d.*ceil_mode=True is not supported"),
        (nn.Sequential(nn.BatchNorm2d(2, track_running_stats=False)), (2, 3, 3), r"module 0 \(BatchNorm2d.*running statistics"),
        (nn.Sequential(nn.BatchNorm2d(3)), (2, 3, 3), r"module 0 \(BatchNorm2d.*C=3"),
        (nn.Sequential(nn.Conv2d(2, 2, 3, groups=2)), (2, 3, 3), r"module 0 \(Conv2d.*groups=1"),
        (nn.Sequential(nn.AdaptiveAvgPool2d(2)), (1, 5, 5), r"module 0 \(AdaptiveAvgPool2d.*does not divide"),
        (nn.Sequential(nn.AvgPool2d(3)), (1, 2, 2), r"module 0 \(AvgPool2d.*does not fit"),
        (nn.Sequential(nn.Flatten(0)), (1, 2, 2), r"module 0 \(Flatten.*batch dimension stays"),
        (nn.Sequential(lv.Normalize([0.1, 0.2, 0.3], [1.0, 1.0, 1.0])), (2, 3, 3), r"module 0 \(Normalize.*does not broadcast"),
    ],
)
def test_unsupported_settings_raise_naming_the_module(model, shape, message):
    with pytest.raises(ValueError, match=message):
        lv.Network.from_torch(model, input_shape=shape)


def test_batch_norm_with_a_negative_variance_is_rejected():
    bn = nn.BatchNorm1d(3, eps=0.0)
    with torch.no_grad():
        bn.running_var[1] = -1.0
    with pytest.raises(ValueError, match=r"module 0 \(BatchNorm1d.*running_var \+ eps"):
        lv.Network.from_torch(nn.Sequential(bn))


def test_normalize_rejects_a_zero_std():
    with pytest.raises(ValueError, match="nonzero standard deviations"):
        lv.Normalize([0.0], [0.0])


@pytest.mark.parametrize(
    "node, message",
    [
        (dict(op_type="AveragePool", kernel_shape=[2, 2], ceil_mode=1), "ceil_mode=1 is not supported"),
        (dict(op_type="AveragePool", kernel_shape=[3, 3], pads=[1, 0, 0, 0]), r"asymmetric pads \[1, 0, 0, 0\]"),
        (dict(op_type="Transpose", perm=[1, 0, 2, 3]), "must keep the batch dimension first"),
        (dict(op_type="BatchNormalization", training_mode=1), "training mode"),
    ],
)
def test_unsupported_onnx_settings_raise_naming_the_node(tmp_path, node, message):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    op_type = node.pop("op_type")
    inputs = ["x", "s", "b", "m", "v"] if op_type == "BatchNormalization" else ["x"]
    nodes = [helper.make_node(op_type, inputs, ["y"], name="bad_node", **node)]
    inits = [numpy_helper.from_array(np.ones(2, np.float32), n) for n in "sbmv"] if len(inputs) > 1 else []
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    path = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)]), str(path))
    with pytest.raises(ValueError, match=rf"bad_node.*{message}"):
        lv.load_onnx(path)
