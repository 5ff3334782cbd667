"""Import a chain-structured ReLU network from ONNX into the :class:`~lpverify.network.Network` IR.

Supported operators (the graph must be a single chain from one input to one
output)::

    Gemm, MatMul, Add, Sub, Mul, Div, Conv, Relu, LeakyRelu, Sigmoid, Tanh, Flatten,
    Reshape, Identity, BatchNormalization, AveragePool, GlobalAveragePool, Transpose
    (+ Constant nodes, read as initializers)

Elementwise Add/Sub/Mul/Div by a constant (input normalisation, a MatMul's
bias, ...) become :class:`~lpverify.ops.Elementwise` ops with the file's
constants as stored: a Div stays a true division, and no constant is
multiplied into a neighbouring layer's weights (that product would round).
The one fold is exact: an Add or Sub right after a Gemm, MatMul or Conv that
has no bias becomes that bias (a Conv's only when constant over the image).
BatchNormalization (inference form) becomes a :class:`~lpverify.ops.BatchNorm`
op, AveragePool/GlobalAveragePool an :class:`~lpverify.ops.AvgPool`, and
Transpose a :class:`~lpverify.ops.Permute`.

An activation after the last affine layer (VNN-COMP's ``mnist_relu_9_200`` has a ReLU there)
becomes an extra identity block, so ``net(x)`` equals the ONNX output exactly.
Weights keep the file's floating dtype (float64 stays float64, anything
else becomes float32).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .activations import RELU, SIGMOID, TANH, Activation, LeakyReLU
from .io import read_maybe_gzipped
from .network import AffineBlock, AffineOp, Conv, Dense, Network, Reshape, Shape, _make_block
from .ops import AvgPool, BatchNorm, Elementwise, Permute

SUPPORTED_OPS = (
    "Gemm", "MatMul", "Add", "Sub", "Div", "Mul", "Conv", "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Flatten", "Reshape",
    "Identity", "BatchNormalization", "AveragePool", "GlobalAveragePool", "Transpose",
)


class OnnxImportError(ValueError):
    """An ONNX file cannot be read or uses something lpverify cannot represent; the message says what."""


def _onnx():
    try:
        import onnx
    except ImportError as e:  # pragma: no cover - onnx is a declared dependency
        raise ImportError("ONNX import needs the 'onnx' package: pip install onnx") from e
    return onnx


# -- reading -----------------------------------------------------------------


def _read_model(path: Path):
    """The ModelProto stored in ``path`` (plain or gzipped), or a clear error naming the file."""
    onnx = _onnx()
    raw = read_maybe_gzipped(path, "ONNX", OnnxImportError)
    try:
        model = onnx.load_model_from_string(raw)
    except Exception as e:  # protobuf raises DecodeError / RuntimeWarning subclasses
        raise OnnxImportError(f"{path} is not a valid ONNX model (protobuf parse failed: {e})") from e
    if not model.graph.node or not model.graph.input or not model.graph.output:
        raise OnnxImportError(
            f"{path} is not a valid ONNX model: its graph has {len(model.graph.node)} nodes, "
            f"{len(model.graph.input)} inputs and {len(model.graph.output)} outputs (corrupt file?)"
        )
    return model


def _float_array(arr: np.ndarray) -> np.ndarray:
    """Keep float64; any other floating (or integer weight) dtype becomes float32."""
    return arr if arr.dtype == np.float64 else arr.astype(np.float32)


def _constants(model) -> dict[str, np.ndarray]:
    """Initializers and the values of Constant nodes, by tensor name."""
    onnx = _onnx()
    from onnx import numpy_helper

    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "Constant":
            continue
        attr = {a.name: a for a in node.attribute}
        if "value" in attr:
            value = numpy_helper.to_array(attr["value"].t)
        elif "value_float" in attr or "value_floats" in attr:
            value = np.asarray(onnx.helper.get_attribute_value(attr.get("value_float") or attr["value_floats"]), np.float32)
        elif "value_int" in attr or "value_ints" in attr:
            value = np.asarray(onnx.helper.get_attribute_value(attr.get("value_int") or attr["value_ints"]), np.int64)
        else:
            raise OnnxImportError(f"Constant node '{node.name}' has no supported value attribute ({sorted(attr)})")
        consts[node.output[0]] = value
    return consts


def _attributes(node) -> dict[str, object]:
    onnx = _onnx()
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _dims(value_info) -> list[int | str]:
    """Static dims as ints, dynamic ones as their symbolic name (or '?')."""
    dims: list[int | str] = []
    for d in value_info.type.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        else:
            dims.append(d.dim_param or "?")
    return dims


def _tensor(arr: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    return torch.from_numpy(np.array(arr, order="C")).to(dtype)  # a copy: initializers may be read-only


def _identity_ops(shape: Shape, dtype: torch.dtype) -> list[AffineOp]:
    """An exact identity as an explicit Dense (plus a Reshape back to ``shape``)."""
    n = math.prod(shape)
    ops: list[AffineOp] = [Dense(torch.eye(n, dtype=dtype), torch.zeros(n, dtype=dtype), shape)]
    if len(shape) > 1:
        ops.append(Reshape((n,), shape))
    return ops


def _absorbed_bias(op: AffineOp, shift: np.ndarray) -> AffineOp | None:
    """A bias-free Dense or Conv with ``shift`` (per-sample shape) as its bias, when that is exact; else None."""
    if isinstance(op, Dense) and op.bias is None:
        return Dense(op.weight, _tensor(np.broadcast_to(shift, op.out_shape), shift_dtype(shift)), op.in_shape)
    if isinstance(op, Conv) and op.bias is None:
        flat = np.broadcast_to(shift, op.out_shape).reshape(op.out_shape[0], -1)
        if np.all(flat == flat[:, :1]):
            return Conv(op.weight, _tensor(flat[:, 0], shift_dtype(shift)), op.stride, op.padding, op.in_shape)
    return None


def shift_dtype(arr: np.ndarray) -> torch.dtype:
    return torch.float64 if arr.dtype == np.float64 else torch.float32


# -- the chain walk ------------------------------------------------------------


class _Importer:
    """Walks the nodes of a chain graph, building affine blocks."""

    def __init__(self, path: Path, model, input_shape: Sequence[int] | None):
        self.path = path
        self.graph = model.graph
        self.consts = _constants(model)
        self.dtype = self._weight_dtype()
        self.input_name, graph_shape = self._graph_input()
        self.shape: Shape = graph_shape
        self.blocks: list[AffineBlock] = []
        self.activations: list[Activation] = []
        self.ops: list[AffineOp] = []
        if input_shape is not None:
            shape = tuple(int(d) for d in input_shape)
            if math.prod(shape) != math.prod(graph_shape) or any(d <= 0 for d in shape):
                raise OnnxImportError(
                    f"input_shape {shape} has {math.prod(shape)} elements but the ONNX input of {path} "
                    f"has shape {graph_shape} ({math.prod(graph_shape)} elements)"
                )
            if shape != graph_shape:
                self.ops.append(Reshape(shape, graph_shape))

    # -- graph structure --------------------------------------------------
    def _weight_dtype(self) -> torch.dtype:
        floats = [v for v in self.consts.values() if np.issubdtype(v.dtype, np.floating) and v.size > 1]
        return torch.float64 if floats and all(v.dtype == np.float64 for v in floats) else torch.float32

    def _graph_input(self) -> tuple[str, Shape]:
        inputs = [i for i in self.graph.input if i.name not in self.consts]
        if len(inputs) != 1:
            names = [i.name for i in inputs]
            raise OnnxImportError(f"{self.path}: the graph must have exactly one (non-constant) input, found {names}")
        dims = _dims(inputs[0])
        if len(dims) < 2:
            raise OnnxImportError(
                f"{self.path}: input '{inputs[0].name}' has shape {dims}; expected a batch dimension first, "
                "e.g. [1, 784] or [N, 1, 28, 28]"
            )
        batch, rest = dims[0], dims[1:]
        if isinstance(batch, int) and batch not in (0, 1):
            raise OnnxImportError(f"{self.path}: input '{inputs[0].name}' has a fixed batch size {batch}; expected 1 or dynamic")
        if not all(isinstance(d, int) and d > 0 for d in rest):
            raise OnnxImportError(f"{self.path}: input '{inputs[0].name}' has non-static dimensions {dims}")
        return inputs[0].name, tuple(int(d) for d in rest)

    def _describe(self, node, index: int) -> str:
        return f"node '{node.name}'" if node.name else f"node #{index} (unnamed)"

    def _check_ops(self) -> None:
        """Every operator is supported (checked first: an unsupported op is the most useful error)."""
        for index, node in enumerate(self.graph.node):
            if node.op_type != "Constant" and node.op_type not in SUPPORTED_OPS:
                raise OnnxImportError(
                    f"unsupported ONNX op '{node.op_type}' ({self._describe(node, index)}) in {self.path}; "
                    f"lpverify supports {', '.join(SUPPORTED_OPS)}"
                )

    def _check_chain(self) -> None:
        """Every non-constant tensor is read by at most one node (or is the single graph output)."""
        readers: dict[str, list[str]] = {}
        for i, node in enumerate(self.graph.node):
            for name in node.input:
                if name and name not in self.consts:
                    readers.setdefault(name, []).append(node.name or f"#{i}")
        for name, who in readers.items():
            if len(who) > 1:
                raise OnnxImportError(
                    f"{self.path}: the graph branches at tensor '{name}' (read by nodes {who}); "
                    "lpverify imports only chain-structured networks"
                )
        if len(self.graph.output) != 1:
            raise OnnxImportError(
                f"{self.path}: the graph must have exactly one output, found {[o.name for o in self.graph.output]}"
            )

    # -- building ---------------------------------------------------------
    def run(self) -> Network:
        self._check_ops()
        self._check_chain()
        current = self.input_name
        for index, node in enumerate(self.graph.node):
            if node.op_type == "Constant":
                continue
            where = self._describe(node, index)
            dynamic = [n for n in node.input if n and n not in self.consts]
            if dynamic != [current]:
                raise OnnxImportError(
                    f"{self.path}: {where} ({node.op_type}) reads {dynamic or 'only constants'} but the chain's "
                    f"current tensor is '{current}'; lpverify imports only chain-structured networks"
                )
            if len(node.output) != 1:
                raise OnnxImportError(f"{self.path}: {where} ({node.op_type}) has {len(node.output)} outputs; expected 1")
            getattr(self, f"_op_{node.op_type.lower()}")(node, where)
            current = node.output[0]
        if current != self.graph.output[0].name:
            raise OnnxImportError(
                f"{self.path}: the chain ends at tensor '{current}' but the graph output is '{self.graph.output[0].name}'"
            )
        self._finish()
        net = Network(self.blocks, self.activations)
        self._check_output(net)
        return net

    def _error(self, where: str, op: str, message: str) -> OnnxImportError:
        return OnnxImportError(f"{self.path}: {where} ({op}): {message}")

    def _const(self, node, position: int, where: str) -> np.ndarray:
        if position >= len(node.input) or not node.input[position]:
            raise self._error(where, node.op_type, f"input {position} is missing")
        name = node.input[position]
        if name not in self.consts:
            raise self._error(where, node.op_type, f"input {position} ('{name}') must be a constant")
        return self.consts[name]

    def _add_affine(self, op: AffineOp) -> None:
        """Append an op and move the current shape to its output."""
        self.ops.append(op)
        self.shape = op.out_shape

    def _set_shape(self, shape: Shape) -> None:
        """A reshape: an op in the IR (no arithmetic)."""
        if shape != self.shape:
            self._add_affine(Reshape(self.shape, shape))

    def _finish(self) -> None:
        if not self.ops:
            # The graph ends with a ReLU: an identity block keeps the output exact.
            self.ops = _identity_ops(self.shape, self.dtype)
        self.blocks.append(_make_block(self.ops))

    def _check_output(self, net: Network) -> None:
        dims = _dims(self.graph.output[0])
        static = dims[1:] if len(dims) >= 2 else dims
        if static and all(isinstance(d, int) and d > 0 for d in static):
            if math.prod(static) != net.n_outputs:  # type: ignore[arg-type]
                raise OnnxImportError(
                    f"{self.path}: the graph output '{self.graph.output[0].name}' has shape {dims} but the imported "
                    f"network has {net.n_outputs} outputs"
                )

    # -- operators --------------------------------------------------------
    def _op_identity(self, node, where: str) -> None:
        return None

    def _activation(self, node, where: str, act: Activation) -> None:
        if not self.ops:
            what = "the network input" if not self.blocks else "another activation"
            raise self._error(where, node.op_type, f"applies a {act.name} directly to {what}; it must follow an affine layer")
        self.blocks.append(_make_block(self.ops))
        self.activations.append(act)
        self.ops = []

    def _op_relu(self, node, where: str) -> None:
        self._activation(node, where, RELU)

    def _op_sigmoid(self, node, where: str) -> None:
        self._activation(node, where, SIGMOID)

    def _op_tanh(self, node, where: str) -> None:
        self._activation(node, where, TANH)

    def _op_leakyrelu(self, node, where: str) -> None:
        slope = float(_attributes(node).get("alpha", 0.01))
        if not 0.0 <= slope <= 1.0:
            raise self._error(where, "LeakyRelu", f"alpha={slope} is not supported; lpverify takes slopes in [0, 1]")
        self._activation(node, where, LeakyReLU(slope))

    def _op_flatten(self, node, where: str) -> None:
        axis = int(_attributes(node).get("axis", 1))
        rank = len(self.shape) + 1
        if axis < 0:
            axis += rank
        if axis != 1:
            raise self._error(where, "Flatten", f"axis={axis} is not supported; only axis=1 (keep the batch dimension)")
        self._set_shape((math.prod(self.shape),))

    def _op_reshape(self, node, where: str) -> None:
        target = [int(v) for v in self._const(node, 1, where).reshape(-1)]
        allowzero = int(_attributes(node).get("allowzero", 0))
        full = (1, *self.shape)
        if len(target) < 1 or target[0] not in (-1, 0, 1):
            raise self._error(where, "Reshape", f"target shape {target} must keep the batch dimension first (1, 0 or -1)")
        rest = target[1:]
        if target[0] == -1 and -1 in rest:
            raise self._error(where, "Reshape", f"target shape {target} has two -1 entries")
        if allowzero == 0:
            for i, v in enumerate(rest):
                if v == 0:
                    if i + 1 >= len(full):
                        raise self._error(where, "Reshape", f"target shape {target} copies a dimension the input lacks")
                    rest[i] = full[i + 1]
        n = math.prod(self.shape)
        if rest.count(-1) > 1 or any(v == 0 or v < -1 for v in rest):
            raise self._error(where, "Reshape", f"cannot interpret target shape {target}")
        if -1 in rest:
            known = math.prod(v for v in rest if v != -1)
            if known == 0 or n % known:
                raise self._error(where, "Reshape", f"cannot reshape {self.shape} to {target}")
            rest[rest.index(-1)] = n // known
        if math.prod(rest) != n:
            raise self._error(where, "Reshape", f"cannot reshape per-sample shape {self.shape} to {target}")
        self._set_shape(tuple(rest))

    def _op_gemm(self, node, where: str) -> None:
        attrs = _attributes(node)
        if int(attrs.get("transA", 0)) != 0:
            raise self._error(where, "Gemm", "transA=1 is not supported")
        if len(self.shape) != 1:
            raise self._error(where, "Gemm", f"receives per-sample shape {self.shape}; flatten it first")
        alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
        b = self._const(node, 1, where)
        if b.ndim != 2:
            raise self._error(where, "Gemm", f"weight must be 2-D, got shape {b.shape}")
        weight = b if int(attrs.get("transB", 0)) else b.T
        if weight.shape[1] != self.shape[0]:
            raise self._error(where, "Gemm", f"weight {b.shape} does not accept {self.shape[0]} features")
        dtype = self._dtype_of(b)
        w = _tensor(_float_array(weight) if alpha == 1.0 else alpha * weight.astype(np.float64), dtype)
        bias = None
        if len(node.input) > 2 and node.input[2]:
            c = self._const(node, 2, where).astype(np.float64)
            try:
                c = np.broadcast_to(c, (1, weight.shape[0]))[0]
            except ValueError:
                raise self._error(where, "Gemm", f"bias of shape {c.shape} does not broadcast to ({weight.shape[0]},)") from None
            bias = _tensor(beta * c, dtype)
        self._add_affine(Dense(w, bias, self.shape))

    def _op_matmul(self, node, where: str) -> None:
        if node.input[0] in self.consts:
            raise self._error(where, "MatMul", "a constant left operand (W @ x) is not supported; use x @ W")
        if len(self.shape) != 1:
            raise self._error(where, "MatMul", f"receives per-sample shape {self.shape}; flatten it first")
        b = self._const(node, 1, where)
        if b.ndim != 2 or b.shape[0] != self.shape[0]:
            raise self._error(where, "MatMul", f"weight of shape {b.shape} does not accept {self.shape[0]} features")
        self._add_affine(Dense(_tensor(_float_array(b).T, self._dtype_of(b)), None, self.shape))

    def _window_pads(self, attrs: dict, where: str, op: str) -> list[int]:
        """A sliding window's pads (top, left, bottom, right): symmetric, no dilation, auto_pad NOTSET or VALID."""
        if any(int(d) != 1 for d in attrs.get("dilations", [1, 1])):
            raise self._error(where, op, f"dilations={list(attrs['dilations'])} are not supported; only 1")
        auto_pad = attrs.get("auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
        if auto_pad not in ("NOTSET", "VALID"):
            raise self._error(where, op, f"auto_pad={auto_pad} is not supported; give explicit symmetric pads")
        pads = [int(p) for p in attrs.get("pads", [0, 0, 0, 0])] if auto_pad == "NOTSET" else [0, 0, 0, 0]
        if len(pads) != 4 or pads[0] != pads[2] or pads[1] != pads[3]:
            raise self._error(
                where, op, f"asymmetric pads {pads} (top, left, bottom, right) are not supported; only symmetric padding"
            )
        return pads

    def _dtype_of(self, arr: np.ndarray) -> torch.dtype:
        return torch.float64 if arr.dtype == np.float64 else torch.float32

    def _op_conv(self, node, where: str) -> None:
        attrs = _attributes(node)
        w = self._const(node, 1, where)
        if w.ndim != 4:
            raise self._error(where, "Conv", f"only 2-D convolutions are supported (weight shape {w.shape})")
        if len(self.shape) != 3 or self.shape[0] != w.shape[1]:
            raise self._error(where, "Conv", f"weight {w.shape} expects ({w.shape[1]}, H, W) but receives {self.shape}")
        if int(attrs.get("group", 1)) != 1:
            raise self._error(where, "Conv", f"group={attrs['group']} is not supported; only group=1")
        kernel = [int(k) for k in attrs.get("kernel_shape", w.shape[2:])]
        if kernel != list(w.shape[2:]):
            raise self._error(where, "Conv", f"kernel_shape {kernel} disagrees with the weight shape {w.shape}")
        pads = self._window_pads(attrs, where, "Conv")
        strides = [int(s) for s in attrs.get("strides", [1, 1])]
        bias = None
        if len(node.input) > 2 and node.input[2]:
            bias = _tensor(_float_array(self._const(node, 2, where)).reshape(-1), self._dtype_of(w))
        conv = Conv(_tensor(_float_array(w), self._dtype_of(w)), bias, (strides[0], strides[1]), (pads[0], pads[1]), self.shape)
        if min(conv.out_shape[1:]) <= 0:
            raise self._error(where, "Conv", f"gives an empty output for input shape {self.shape}")
        self._add_affine(conv)

    def _broadcast_constant(self, node, value: np.ndarray, where: str) -> np.ndarray:
        """A constant operand aligned to the per-sample shape (batch dim dropped, broadcastable), in its float dtype."""
        value = _float_array(np.asarray(value))
        if value.ndim == len(self.shape) + 1:
            if value.shape[0] != 1:
                raise self._error(where, node.op_type, f"constant of shape {value.shape} varies over the batch")
            value = value[0]
        try:
            ok = value.ndim <= len(self.shape) and np.broadcast_shapes(value.shape, self.shape) == self.shape
        except ValueError:
            ok = False
        if not ok:
            raise self._error(
                where, node.op_type, f"constant of shape {value.shape} does not broadcast to the tensor shape {self.shape}"
            )
        return value

    def _elementwise(self, node, where: str) -> None:
        """Add/Sub/Mul/Div by a constant as an exact elementwise op (a bias-free layer's bias for Add/Sub)."""
        op = node.op_type
        const_first = node.input[0] in self.consts
        c = self._broadcast_constant(node, self.consts[node.input[0 if const_first else 1]], where)
        dtype = shift_dtype(c)
        if op in ("Add", "Sub") and not (op == "Sub" and const_first):
            shift = c if op == "Add" else -c  # negation is exact
            absorbed = _absorbed_bias(self.ops[-1], shift) if self.ops else None
            if absorbed is not None:
                self.ops[-1] = absorbed
                return
            self._add_affine(Elementwise(None, _tensor(shift, dtype), self.shape))
        elif op == "Sub":  # c − x
            self._add_affine(Elementwise(torch.tensor(-1.0, dtype=dtype), _tensor(c, dtype), self.shape))
        elif op == "Mul":
            self._add_affine(Elementwise(_tensor(c, dtype), None, self.shape))
        else:  # Div
            if const_first:
                raise self._error(where, "Div", "dividing a constant by the tensor (c / x) is not affine")
            if np.any(c == 0):
                raise self._error(where, "Div", "division by a constant containing zeros")
            self._add_affine(Elementwise(_tensor(c, dtype), None, self.shape, divide=True))

    _op_add = _op_sub = _op_mul = _op_div = _elementwise

    def _op_batchnormalization(self, node, where: str) -> None:
        """BatchNormalization in inference form: Y = scale (X − mean) / √(var + ε) + B, per channel."""
        attrs = _attributes(node)
        if int(attrs.get("training_mode", 0)) != 0 or len([o for o in node.output if o]) > 1:
            raise self._error(where, "BatchNormalization", "training mode (batch statistics) is not supported; "
                              "export the model in eval mode")
        if int(attrs.get("spatial", 1)) != 1:
            raise self._error(where, "BatchNormalization", "spatial=0 is not supported")
        scale, bias, mean, var = (self._const(node, i, where) for i in range(1, 5))
        channels = self.shape[0]
        if any(a.shape != (channels,) for a in (scale, bias, mean, var)):
            raise self._error(where, "BatchNormalization", f"parameters of shapes {[a.shape for a in (scale, bias, mean, var)]} "
                              f"do not match the {channels} channels of {self.shape}")
        dtype = self._dtype_of(_float_array(scale))
        g, b, m, v = (_tensor(_float_array(a), dtype) for a in (scale, bias, mean, var))
        self._add_affine(BatchNorm(g, b, m, v, float(attrs.get("epsilon", 1e-5)), self.shape, dtype))

    def _pool_geometry(self, node, where: str) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
        """Kernel, strides and symmetric pads of a 2-D AveragePool, or a clear error."""
        attrs = _attributes(node)
        kernel = [int(k) for k in attrs.get("kernel_shape", [])]
        if len(kernel) != 2 or len(self.shape) != 3:
            raise self._error(where, "AveragePool", f"only 2-D pooling of (C, H, W) tensors is supported "
                              f"(kernel_shape {kernel}, input {self.shape})")
        if int(attrs.get("ceil_mode", 0)) != 0:
            raise self._error(where, "AveragePool", "ceil_mode=1 is not supported; only floor output sizes")
        pads = self._window_pads(attrs, where, "AveragePool")
        strides = [int(s) for s in attrs.get("strides", [1, 1])]
        return (kernel[0], kernel[1]), (strides[0], strides[1]), (pads[0], pads[1])

    def _op_averagepool(self, node, where: str) -> None:
        kernel, stride, padding = self._pool_geometry(node, where)
        include = bool(int(_attributes(node).get("count_include_pad", 0)))  # ONNX's default excludes the padding
        try:
            self._add_affine(AvgPool(kernel, stride, padding, self.shape, include))
        except ValueError as e:
            raise self._error(where, "AveragePool", str(e)) from None

    def _op_globalaveragepool(self, node, where: str) -> None:
        if len(self.shape) != 3:
            raise self._error(where, "GlobalAveragePool", f"only (C, H, W) tensors are supported, got {self.shape}")
        kernel = (self.shape[1], self.shape[2])
        self._add_affine(AvgPool(kernel, kernel, (0, 0), self.shape))

    def _op_transpose(self, node, where: str) -> None:
        rank = len(self.shape) + 1
        perm = [int(p) for p in _attributes(node).get("perm", list(range(rank))[::-1])]
        if sorted(perm) != list(range(rank)) or perm[0] != 0:
            raise self._error(where, "Transpose", f"perm {perm} must keep the batch dimension first")
        if perm != list(range(rank)):
            self._add_affine(Permute(tuple(p - 1 for p in perm[1:]), self.shape))


def load_onnx(path: str | Path, input_shape: Sequence[int] | None = None) -> Network:
    """Read an ONNX ReLU network (plain or gzipped ``.onnx``) as a :class:`Network`.

    Args:
        path: the ``.onnx`` or ``.onnx.gz`` file.
        input_shape: the per-sample input shape of the returned network. It
            defaults to the graph input's shape without its batch dimension
            (VNN-COMP ``mnist_fc``: ``(784, 1)``; ERAN MNIST: ``(1, 28, 28)``).
            Any shape with as many elements may be given, e.g. ``(784,)``: the
            network then starts with an exact row-major reshape, so flat
            VNNLIB inputs ``X_0 … X_{n-1}`` map to it directly.

    Raises:
        FileNotFoundError: the file does not exist.
        OnnxImportError (a ValueError): a corrupt file, an unsupported operator
            (named with its node), a branching graph, or shapes lpverify cannot
            represent (asymmetric pads, grouped convolutions, ...).
    """
    path = Path(path)
    model = _read_model(path)
    return _Importer(path, model, input_shape).run()


def reference_outputs(path: str | Path, x: np.ndarray) -> np.ndarray:
    """The ONNX file's own outputs on inputs x (n, ...), by ``onnx.reference.ReferenceEvaluator``.

    Independent of lpverify's import: what a counterexample is checked
    against before it is reported. Inputs are cast to float32 (the files'
    input type) and fed one at a time (VNN-COMP files fix the batch to 1).
    """
    from onnx.reference import ReferenceEvaluator

    model = _read_model(Path(path))
    evaluator = ReferenceEvaluator(model)
    graph_input = model.graph.input[0]
    shape = [d.dim_value or 1 for d in graph_input.type.tensor_type.shape.dim]
    x = np.asarray(x, dtype=np.float32)
    return np.concatenate([np.asarray(evaluator.run(None, {graph_input.name: xi.reshape(shape)})[0]).reshape(1, -1) for xi in x])
