"""Import a chain-structured ReLU network from ONNX into the :class:`~lpverify.network.Network` IR.

Supported operators (the graph must be a single chain from one input to one
output)::

    Gemm, MatMul, Add, Sub, Mul, Div, Conv, Relu, LeakyRelu, Sigmoid, Tanh,
    Flatten, Reshape, Identity (+ Constant nodes, read as initializers)

Elementwise Add/Sub/Mul/Div by a constant (input normalisation, a MatMul's
bias, ...) are composed into one pending map ``v ↦ s ⊙ v + t`` and folded
exactly into a neighbouring affine layer: into the output of the previous
Dense/Conv of the same block when possible, otherwise into the input of the
next Dense/Conv; when neither is exact (e.g. a per-pixel shift in front of a
zero-padded convolution) it becomes an explicit diagonal Dense op.

An activation after the last affine layer (VNN-COMP's ``mnist_relu_9_200`` has a ReLU there)
becomes an extra identity block, so ``net(x)`` equals the ONNX output exactly.
Weights keep the file's floating dtype (float64 stays float64, anything
else becomes float32).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .activations import RELU, SIGMOID, TANH, Activation, LeakyReLU
from .io import read_maybe_gzipped
from .network import AffineBlock, AffineOp, Conv, Dense, Network, Reshape, Shape, _make_block

SUPPORTED_OPS = ("Gemm", "MatMul", "Add", "Sub", "Div", "Mul", "Conv", "Relu", "LeakyRelu", "Sigmoid", "Tanh",
                 "Flatten", "Reshape", "Identity")
_ELEMENTWISE = ("Add", "Sub", "Mul", "Div")


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


# -- the pending elementwise map and its folding -------------------------------


@dataclass
class _Elementwise:
    """``v ↦ scale ⊙ v + shift`` with float64 arrays of the current per-sample shape."""

    scale: np.ndarray
    shift: np.ndarray

    @classmethod
    def identity(cls, shape: Shape) -> "_Elementwise":
        return cls(np.ones(shape), np.zeros(shape))

    def is_identity(self) -> bool:
        return bool(np.all(self.scale == 1.0) and np.all(self.shift == 0.0))

    def reshape(self, shape: Shape) -> "_Elementwise":
        return _Elementwise(self.scale.reshape(shape), self.shift.reshape(shape))


def _per_channel(arr: np.ndarray) -> np.ndarray | None:
    """The per-channel values of a (C, H, W) array constant over H and W, else None."""
    flat = arr.reshape(arr.shape[0], -1)
    return flat[:, 0] if np.all(flat == flat[:, :1]) else None


def _tensor(arr: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    return torch.from_numpy(np.array(arr, order="C")).to(dtype)  # a copy: initializers may be read-only


def _f64(t: torch.Tensor | None, n: int) -> np.ndarray:
    return np.zeros(n) if t is None else t.detach().double().numpy()


def _fold_after(op: AffineOp, ew: _Elementwise) -> AffineOp | None:
    """``ew ∘ op`` as one op, or None when the op's structure cannot absorb it exactly."""
    if isinstance(op, Dense):
        s, t = ew.scale.reshape(-1), ew.shift.reshape(-1)
        w = op.weight if np.all(s == 1.0) else _tensor(s[:, None] * op.weight.double().numpy(), op.weight.dtype)
        b = s * _f64(op.bias, s.size) + t
        return Dense(w, _tensor(b, op.weight.dtype), op.in_shape)
    if isinstance(op, Conv):
        s, t = _per_channel(ew.scale), _per_channel(ew.shift)
        if s is None or t is None:
            return None
        w = op.weight if np.all(s == 1.0) else _tensor(s[:, None, None, None] * op.weight.double().numpy(), op.weight.dtype)
        b = s * _f64(op.bias, s.size) + t
        return Conv(w, _tensor(b, op.weight.dtype), op.stride, op.padding, op.in_shape)
    return None


def _fold_before(op: AffineOp, ew: _Elementwise) -> AffineOp | None:
    """``op ∘ ew`` as one op, or None when that is not exact (see module docstring)."""
    if isinstance(op, Dense):
        s, t = ew.scale.reshape(-1), ew.shift.reshape(-1)
        w64 = op.weight.double().numpy()
        w = op.weight if np.all(s == 1.0) else _tensor(w64 * s[None, :], op.weight.dtype)
        b = _f64(op.bias, w64.shape[0]) + w64 @ t
        return Dense(w, _tensor(b, op.weight.dtype), op.in_shape)
    if isinstance(op, Conv):
        s, t = _per_channel(ew.scale), _per_channel(ew.shift)
        # Zero padding pads the *shifted* tensor, so a shift folds into the bias only without padding.
        if s is None or t is None or (np.any(t != 0.0) and op.padding != (0, 0)):
            return None
        w64 = op.weight.double().numpy()
        w = op.weight if np.all(s == 1.0) else _tensor(w64 * s[None, :, None, None], op.weight.dtype)
        b = _f64(op.bias, w64.shape[0]) + np.einsum("oikl,i->o", w64, t)
        return Conv(w, _tensor(b, op.weight.dtype), op.stride, op.padding, op.in_shape)
    return None


def _diagonal_ops(ew: _Elementwise, shape: Shape, dtype: torch.dtype) -> list[AffineOp]:
    """The elementwise map as an explicit diagonal Dense (plus a Reshape back to ``shape``)."""
    s, t = ew.scale.reshape(-1), ew.shift.reshape(-1)
    ops: list[AffineOp] = [Dense(_tensor(np.diag(s), dtype), _tensor(t, dtype), shape)]
    if len(shape) > 1:
        ops.append(Reshape((s.size,), shape))
    return ops


def _fold_into_previous(ops: list[AffineOp], ew: _Elementwise) -> list[AffineOp] | None:
    """``ops`` with ``ew`` applied to their output, folded through trailing Reshapes; None if impossible."""
    if not ops:
        return None
    last = ops[-1]
    if isinstance(last, Reshape):
        inner = _fold_into_previous(ops[:-1], ew.reshape(last.in_shape))
        return None if inner is None else [*inner, last]
    folded = _fold_after(last, ew)
    return None if folded is None else [*ops[:-1], folded]


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
        self.pending = _Elementwise.identity(graph_shape)
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

    def _flush_pending(self) -> None:
        """Apply the pending elementwise map to the ops built so far (folded when possible)."""
        if self.pending.is_identity():
            return
        folded = _fold_into_previous(self.ops, self.pending)
        self.ops = folded if folded is not None else [*self.ops, *_diagonal_ops(self.pending, self.shape, self.dtype)]
        self.pending = _Elementwise.identity(self.shape)

    def _add_affine(self, op: AffineOp) -> None:
        """Append a Dense/Conv, folding the pending elementwise map into it or its predecessor."""
        if not self.pending.is_identity():
            folded = _fold_into_previous(self.ops, self.pending)
            if folded is not None:
                self.ops = folded
            else:
                before = _fold_before(op, self.pending)
                if before is not None:
                    op = before
                else:
                    self.ops += _diagonal_ops(self.pending, self.shape, self.dtype)
        self.ops.append(op)
        self.shape = op.out_shape
        self.pending = _Elementwise.identity(self.shape)

    def _set_shape(self, shape: Shape) -> None:
        """A reshape: an op in the IR, and the pending map follows it elementwise."""
        if shape != self.shape:
            self.ops.append(Reshape(self.shape, shape))
            self.pending = self.pending.reshape(shape)
            self.shape = shape

    def _finish(self) -> None:
        self._flush_pending()
        if not self.ops:
            # The graph ends with a ReLU: an identity block keeps the output exact.
            n = math.prod(self.shape)
            self.ops = _diagonal_ops(_Elementwise.identity(self.shape), self.shape, self.dtype)
            assert self.ops[0].out_shape == (n,)
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
        self._flush_pending()
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
        if any(int(d) != 1 for d in attrs.get("dilations", [1, 1])):
            raise self._error(where, "Conv", f"dilations={list(attrs['dilations'])} are not supported; only 1")
        kernel = [int(k) for k in attrs.get("kernel_shape", w.shape[2:])]
        if kernel != list(w.shape[2:]):
            raise self._error(where, "Conv", f"kernel_shape {kernel} disagrees with the weight shape {w.shape}")
        auto_pad = attrs.get("auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
        if auto_pad not in ("NOTSET", "VALID"):
            raise self._error(where, "Conv", f"auto_pad={auto_pad} is not supported; give explicit symmetric pads")
        pads = [int(p) for p in attrs.get("pads", [0, 0, 0, 0])] if auto_pad == "NOTSET" else [0, 0, 0, 0]
        if len(pads) != 4 or pads[0] != pads[2] or pads[1] != pads[3]:
            raise self._error(
                where, "Conv", f"asymmetric pads {pads} (top, left, bottom, right) are not supported; only symmetric padding"
            )
        strides = [int(s) for s in attrs.get("strides", [1, 1])]
        bias = None
        if len(node.input) > 2 and node.input[2]:
            bias = _tensor(_float_array(self._const(node, 2, where)).reshape(-1), self._dtype_of(w))
        conv = Conv(_tensor(_float_array(w), self._dtype_of(w)), bias, (strides[0], strides[1]), (pads[0], pads[1]), self.shape)
        if min(conv.out_shape[1:]) <= 0:
            raise self._error(where, "Conv", f"gives an empty output for input shape {self.shape}")
        self._add_affine(conv)

    def _broadcast_constant(self, node, value: np.ndarray, where: str) -> np.ndarray:
        """A constant operand as a float64 array of the per-sample shape (the batch dim must be 1)."""
        value = value.astype(np.float64)
        if value.ndim == len(self.shape) + 1:
            if value.shape[0] != 1:
                raise self._error(where, node.op_type, f"constant of shape {value.shape} varies over the batch")
            value = value[0]
        if value.ndim > len(self.shape):
            raise self._error(where, node.op_type, f"constant of shape {value.shape} does not broadcast to {self.shape}")
        try:
            return np.broadcast_to(value, self.shape).copy()
        except ValueError:
            raise self._error(
                where, node.op_type, f"constant of shape {value.shape} does not broadcast to the tensor shape {self.shape}"
            ) from None

    def _elementwise(self, node, where: str) -> None:
        op = node.op_type
        const_first = node.input[0] in self.consts
        c = self._broadcast_constant(node, self.consts[node.input[0 if const_first else 1]], where)
        s, t = self.pending.scale, self.pending.shift
        if op == "Add":
            t = t + c
        elif op == "Sub":
            s, t = (-s, c - t) if const_first else (s, t - c)
        elif op == "Mul":
            s, t = s * c, t * c
        else:  # Div
            if const_first:
                raise self._error(where, "Div", "dividing a constant by the tensor (c / x) is not affine")
            if np.any(c == 0):
                raise self._error(where, "Div", "division by a constant containing zeros")
            s, t = s / c, t / c
        self.pending = _Elementwise(s, t)

    _op_add = _op_sub = _op_mul = _op_div = _elementwise


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
