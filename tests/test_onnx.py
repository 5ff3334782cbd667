"""ONNX import: torch exports, the VNN-COMP networks, normalisation as exact elementwise ops, clear errors."""

from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

import lpverify as lv  # noqa: E402
from conftest import shared_path  # noqa: E402
from lpverify.network import Conv, Dense  # noqa: E402
from lpverify.ops import Elementwise  # noqa: E402
from lpverify.onnx_import import OnnxImportError, load_onnx  # noqa: E402

MNIST_FC = ("mnist-net_256x2", "mnist-net_256x4", "mnist-net_256x6")
# Test-set accuracies published with the benchmarks (mnistfc readme; eran: shared/data/README.md).
ACCURACY = {"mnist-net_256x2": 0.9808, "mnist-net_256x4": 0.9764, "mnist-net_256x6": 0.9689, "mnist_relu_9_200": 0.9495}


def export(model: nn.Module, shape: tuple[int, ...], path: Path) -> Path:
    """The legacy TorchScript exporter: the dynamo one needs onnxscript, which lpverify does not depend on."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), torch.zeros(1, *shape), str(path), dynamo=False, input_names=["x"], output_names=["y"])
    return path


def make_model(nodes, initializers: dict[str, np.ndarray], in_shape, out_shape, path: Path, elem=TensorProto.FLOAT) -> Path:
    """A hand-built single-input, single-output ONNX model (opset 13) saved to ``path``."""
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", elem, list(in_shape))],
        [helper.make_tensor_value_info("y", elem, list(out_shape))],
        [numpy_helper.from_array(v, k) for k, v in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def reference(path: Path, x: np.ndarray) -> np.ndarray:
    """The ONNX reference evaluator's output, one example at a time (the files fix the batch to 1)."""
    raw = path.read_bytes()
    model = onnx.load_model_from_string(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)
    ev = ReferenceEvaluator(model)
    name = model.graph.input[0].name
    shape = [d.dim_value or 1 for d in model.graph.input[0].type.tensor_type.shape.dim]
    return np.concatenate([ev.run(None, {name: xi.reshape(shape)})[0].reshape(1, -1) for xi in x])


def outputs(net: lv.Network, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return net(torch.from_numpy(x).reshape(len(x), *net.input_shape)).flatten(1).numpy()


rng = np.random.default_rng(0)
f32 = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731


# -- (a) torch exports ---------------------------------------------------------


def test_conv_small_export_round_trips(tmp_path):
    torch.manual_seed(0)
    model = lv.zoo.conv_small()
    path = export(model, (1, 28, 28), tmp_path / "conv_small.onnx")
    net = lv.load_onnx(path)
    assert net.input_shape == (1, 28, 28)
    # Same paper layer structure as from_torch: conv | conv | flatten+linear | linear.
    assert [b.out_shape for b in net.blocks] == [(16, 14, 14), (32, 7, 7), (100,), (10,)]
    assert [type(op) for b in net.blocks for op in b.ops] == [Conv, Conv, Dense, Dense]
    assert net.blocks[0].ops[0].stride == (2, 2) and net.blocks[0].ops[0].padding == (1, 1)
    x = torch.rand(8, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(net(x), model(x), rtol=1e-5, atol=1e-5)
    # A flat input shape puts an exact reshape in front.
    flat = load_onnx(path, input_shape=(784,))
    assert flat.input_shape == (784,)
    with torch.no_grad():
        torch.testing.assert_close(flat(x.view(8, 784)), model(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"input_shape \(785,\) has 785 elements"):
        load_onnx(path, input_shape=(785,))


def test_mlp_export_round_trips_and_gzip_loads_identically(tmp_path):
    model = lv.zoo.random_mlp([6, 20, 20, 3], seed=3)
    path = export(model, (6,), tmp_path / "mlp.onnx")
    net = load_onnx(path)
    assert [b.out_shape for b in net.blocks] == [(20,), (20,), (3,)]
    assert net.blocks[0].ops[0].weight.dtype == torch.float32
    x = torch.randn(50, 6)
    with torch.no_grad():
        torch.testing.assert_close(net(x), model(x), rtol=1e-5, atol=1e-5)
    gz = tmp_path / "mlp.onnx.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    net_gz = load_onnx(gz)
    for a, b in zip(net.parameters(), net_gz.parameters()):
        assert torch.equal(a, b)


# -- (b) the VNN-COMP networks -----------------------------------------------------


@pytest.fixture(scope="module")
def mnist_test():
    x, y = lv.data.load_dataset("mnist", "test", shared_path("data"))
    return x.numpy(), y.numpy()


@pytest.mark.shared
@pytest.mark.parametrize("name", MNIST_FC)
def test_mnist_fc_networks_match_the_reference_evaluator(name, mnist_test):
    path = shared_path("data", "vnncomp", "mnist_fc", "onnx", f"{name}.onnx.gz")
    net = load_onnx(path)
    depth = int(name[-1])
    assert net.input_shape == (784, 1)  # the ONNX input is [1, 784, 1]: flat pixels in [0, 1]
    assert [b.out_shape for b in net.blocks] == [(256,)] * depth + [(10,)]
    assert all(len(b.ops) == 1 and isinstance(b.ops[0], Dense) for b in net.blocks)
    x, y = mnist_test
    np.testing.assert_allclose(outputs(net, x[:40]), reference(path, x[:40]), rtol=1e-5, atol=1e-5)
    accuracy = (outputs(net, x).argmax(1) == y).mean()
    assert accuracy == pytest.approx(ACCURACY[name], abs=2e-4)


@pytest.mark.shared
def test_eran_relu_network_matches_the_reference_evaluator(mnist_test):
    path = shared_path("data", "vnncomp", "eran_2021", "nets", "mnist_relu_9_200.onnx")
    net = lv.load_onnx(path)
    assert net.input_shape == (1, 28, 28)
    # 9 Gemm layers, then the trailing ReLU becomes an exact identity block.
    assert [b.out_shape for b in net.blocks] == [(200,)] * 8 + [(10,), (10,)]
    last = net.blocks[-1].ops[0]
    assert torch.equal(last.weight, torch.eye(10)) and torch.equal(last.bias, torch.zeros(10))
    x, y = mnist_test
    ours = outputs(net, x[:40])
    np.testing.assert_allclose(ours, reference(path, x[:40]), rtol=1e-5, atol=1e-5)
    assert ours.min() >= 0 and (ours == 0).any()  # the ReLU on the logits is really applied
    assert (outputs(net, x).argmax(1) == y).mean() == pytest.approx(ACCURACY["mnist_relu_9_200"], abs=2e-4)


@pytest.mark.shared
def test_eran_sigmoid_network_matches_the_reference_evaluator(mnist_test):
    path = shared_path("data", "vnncomp", "eran_2021", "nets", "ffnnSIGMOID__Point_6x200.onnx")
    net = lv.load_onnx(path)
    assert [a.name for a in net.activations] == ["Sigmoid"] * 6
    assert [b.out_shape for b in net.blocks] == [(200,)] * 6 + [(10,)]
    x, y = mnist_test
    np.testing.assert_allclose(outputs(net, x[:40]), reference(path, x[:40]), rtol=1e-5, atol=1e-5)
    assert (outputs(net, x[:500]).argmax(1) == y[:500]).mean() > 0.95  # published: 0.9766 on all 10,000


# -- (c) elementwise maps: exact ops holding the file's constants ---------------------


@pytest.mark.parametrize("const_shape", [(1, 1, 1, 1), (1, 2, 1, 1), (2, 3, 3)], ids=["scalar", "per-channel", "per-element"])
def test_sub_div_normalisation_becomes_exact_elementwise_ops(tmp_path, const_shape):
    mean = rng.uniform(0.1, 0.5, const_shape).astype(np.float32)
    std = rng.uniform(0.2, 0.4, const_shape).astype(np.float32)
    w1, b1, w2, b2 = f32(7, 18), f32(7), f32(4, 7), f32(4)
    nodes = [
        helper.make_node("Sub", ["x", "mean"], ["s"], name="sub"),
        helper.make_node("Div", ["s", "std"], ["d"], name="div"),
        helper.make_node("Flatten", ["d"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "w1", "b1"], ["h"], name="fc1", transB=1),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], name="fc2", transB=1),
    ]
    inits = {"mean": mean, "std": std, "w1": w1, "b1": b1, "w2": w2, "b2": b2}
    path = make_model(nodes, inits, (1, 2, 3, 3), (1, 4), tmp_path / "norm.onnx")
    net = load_onnx(path)
    # Nothing is multiplied into the weights (that would round): a shift, a true division, then the Gemm as stored.
    sub, div, dense = net.blocks[0].ops
    assert isinstance(sub, Elementwise) and sub.scale is None and not sub.divide
    assert isinstance(div, Elementwise) and div.shift is None and div.divide
    assert torch.equal(sub.shift, torch.from_numpy(-mean.reshape(mean.shape[-3:])))
    assert torch.equal(div.scale, torch.from_numpy(std.reshape(std.shape[-3:])))
    assert torch.equal(dense.weight, torch.from_numpy(w1)) and torch.equal(dense.bias, torch.from_numpy(b1))
    assert net.input_shape == (2, 3, 3)
    x = rng.uniform(0, 1, (30, 2, 3, 3)).astype(np.float32)
    z = ((x - mean) / std).reshape(30, -1) @ w1.T + b1
    expected = np.maximum(z, 0) @ w2.T + b2
    np.testing.assert_allclose(outputs(net, x), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(outputs(net, x), reference(path, x), rtol=1e-5, atol=1e-5)
    # In float64 the IR computes exactly what numpy does in float64 with the same operation order.
    x64 = x.astype(np.float64)
    z64 = ((x64 - mean) / std).reshape(30, -1) @ w1.T.astype(np.float64) + b1
    with torch.no_grad():
        first = net.blocks[0](torch.from_numpy(x64)).numpy()
    np.testing.assert_allclose(first, z64, rtol=1e-13, atol=1e-13)


def test_float64_graph_keeps_float64_constants(tmp_path):
    mean, std = np.array([[0.25]]), np.array([[0.3]])
    w, b = rng.standard_normal((3, 5)), rng.standard_normal(3)
    nodes = [
        helper.make_node("Sub", ["x", "mean"], ["s"]),
        helper.make_node("Div", ["s", "std"], ["d"]),
        helper.make_node("Gemm", ["d", "w", "b"], ["y"], transB=1),
    ]
    path = make_model(nodes, {"mean": mean, "std": std, "w": w, "b": b}, (1, 5), (1, 3), tmp_path / "f64.onnx", TensorProto.DOUBLE)
    net = load_onnx(path)
    assert [p.dtype for p in net.parameters()] == [torch.float64] * 4
    x = rng.uniform(0, 1, (10, 5))
    np.testing.assert_allclose(outputs(net, x), ((x - 0.25) / 0.3) @ w.T + b, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("padding", [0, 1])
def test_normalised_conv_net_with_matmul_add_mul_reshape_matches_reference(tmp_path, padding):
    side = 6
    out = side + 2 * padding - 2
    nodes = [
        helper.make_node("Constant", [], ["mean"], value=numpy_helper.from_array(np.array([0.3, 0.6], np.float32).reshape(1, 2, 1, 1))),
        helper.make_node("Sub", ["x", "mean"], ["s"]),
        helper.make_node("Mul", ["s", "k"], ["m"]),  # multiply by the inverse std
        helper.make_node("Identity", ["m"], ["i"]),
        helper.make_node("Conv", ["i", "cw"], ["c"], pads=[padding] * 4, strides=[1, 1], kernel_shape=[3, 3]),
        helper.make_node("Add", ["cadd", "c"], ["ca"]),  # a per-channel constant after a bias-free conv, constant first
        helper.make_node("Relu", ["ca"], ["r"]),
        helper.make_node("Reshape", ["r", "shape"], ["f"]),
        helper.make_node("MatMul", ["f", "mw"], ["h"]),
        helper.make_node("Add", ["h", "mb"], ["hb"]),
        helper.make_node("Sub", ["one", "hb"], ["y"]),  # c − x: scale −1, shift c
    ]
    inits = {
        "k": np.array([2.0, 4.0], np.float32).reshape(2, 1, 1),
        "cw": f32(3, 2, 3, 3),
        "cadd": f32(1, 3, 1, 1),
        "shape": np.array([1, -1], np.int64),
        "mw": f32(3 * out * out, 5),
        "mb": f32(5),
        "one": np.ones((1, 5), np.float32),
    }
    path = make_model(nodes, inits, (1, 2, side, side), (1, 5), tmp_path / "conv.onnx")
    net = load_onnx(path)
    assert [b.out_shape for b in net.blocks] == [(3, out, out), (5,)]
    # The Adds after the bias-free Conv and MatMul become their biases as stored (no arithmetic).
    assert [type(op) for op in net.blocks[0].ops] == [Elementwise, Elementwise, Conv]
    assert torch.equal(net.blocks[0].ops[2].bias, torch.from_numpy(inits["cadd"].reshape(3)))
    assert [type(op) for op in net.blocks[1].ops] == [Dense, Elementwise]
    assert torch.equal(net.blocks[1].ops[0].bias, torch.from_numpy(inits["mb"]))
    x = rng.uniform(0, 1, (12, 2, side, side)).astype(np.float32)
    np.testing.assert_allclose(outputs(net, x), reference(path, x), rtol=1e-5, atol=1e-5)


def test_add_after_a_biased_layer_stays_a_separate_shift(tmp_path):
    """b + c would round: the shift is its own op, and the Gemm keeps its bias as stored."""
    w, b, c = f32(3, 4), f32(3), f32(1, 3)
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["h"], transB=1), helper.make_node("Add", ["h", "c"], ["y"])]
    path = make_model(nodes, {"w": w, "b": b, "c": c}, (1, 4), (1, 3), tmp_path / "add.onnx")
    dense, shift = load_onnx(path).blocks[0].ops
    assert torch.equal(dense.bias, torch.from_numpy(b)) and torch.equal(shift.shift, torch.from_numpy(c[0]))


# -- (d) unsupported graphs ------------------------------------------------------------


def test_unsupported_activation_is_rejected_naming_op_and_node(tmp_path):
    nodes = [
        helper.make_node("Gemm", ["x", "w"], ["h"], name="fc", transB=1),
        helper.make_node("Elu", ["h"], ["y"], name="elu_1"),
    ]
    path = make_model(nodes, {"w": f32(3, 4)}, (1, 4), (1, 3), tmp_path / "elu.onnx")
    with pytest.raises(ValueError) as info:
        load_onnx(path)
    message = str(info.value)
    assert "unsupported ONNX op 'Elu' (node 'elu_1')" in message
    assert "lpverify supports Gemm, MatMul, Add, Sub, Div, Mul, Conv, Relu, LeakyRelu, Sigmoid, Tanh" in message


@pytest.mark.parametrize("op, attrs, expected", [("Sigmoid", {}, "Sigmoid"), ("Tanh", {}, "Tanh"),
                                                  ("LeakyRelu", {"alpha": 0.25}, "LeakyReLU(0.25)")])
def test_activation_ops_import_and_match_the_reference(tmp_path, op, attrs, expected):
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1", transB=1),
        helper.make_node(op, ["h"], ["a"], name="act", **attrs),
        helper.make_node("Gemm", ["a", "w2"], ["y"], name="fc2", transB=1),
    ]
    path = make_model(nodes, {"w1": f32(5, 4), "b1": f32(5), "w2": f32(3, 5)}, (1, 4), (1, 3), tmp_path / "act.onnx")
    net = load_onnx(path)
    assert [a.name for a in net.activations] == [expected]
    x = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32) * 3
    np.testing.assert_allclose(outputs(net, x), reference(path, x), rtol=1e-5, atol=1e-6)


def test_asymmetric_pads_are_rejected(tmp_path):
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="conv0", pads=[1, 0, 0, 0])]
    path = make_model(nodes, {"w": f32(2, 1, 3, 3)}, (1, 1, 5, 5), (1, 2, 4, 3), tmp_path / "pads.onnx")
    with pytest.raises(OnnxImportError, match=r"conv0.*asymmetric pads \[1, 0, 0, 0\]"):
        load_onnx(path)


def test_branching_graph_is_rejected(tmp_path):
    nodes = [
        helper.make_node("Gemm", ["x", "w"], ["h"], name="fc", transB=1),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Add", ["r", "h"], ["y"], name="skip"),  # a residual connection
    ]
    path = make_model(nodes, {"w": f32(4, 4)}, (1, 4), (1, 4), tmp_path / "branch.onnx")
    with pytest.raises(OnnxImportError, match=r"branches at tensor 'h'.*chain"):
        load_onnx(path)


# -- (e) unreadable files -----------------------------------------------------------


def test_corrupt_and_missing_files_name_the_path(tmp_path):
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(np.random.default_rng(1).bytes(4096))
    with pytest.raises(ValueError, match="garbage.onnx"):
        load_onnx(bad)
    truncated = tmp_path / "truncated.onnx.gz"
    truncated.write_bytes(gzip.compress(b"\x08\x07" * 500)[:40])
    with pytest.raises(ValueError, match="truncated.onnx.gz"):
        load_onnx(truncated)
    with pytest.raises(FileNotFoundError, match="nowhere.onnx"):
        load_onnx(tmp_path / "nowhere.onnx")
