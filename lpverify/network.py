"""The network representation: affine blocks separated by activations (MATH.md §1).

A k-layer network is ``ẑ_{i+1} = A_i(z_i)``, ``z_i = max(ẑ_i, 0)``, with
``z_1 = x`` and ``f(x) = ẑ_k``. Consecutive affine modules of a torch model
(Linear, Conv2d, Flatten, batch norm, average pooling, normalisation) are
grouped into one :class:`AffineBlock`, so block ``i`` (0-based) is the paper's
``W_{i+1}, b_{i+1}`` and its output is the pre-activation ``ẑ_{i+2}``. The
ops other than Dense, Conv and Reshape live in :mod:`lpverify.ops`.

Every block applies itself (``forward``), its linear part (``linear``), the
transpose of its linear part (``transpose``, ``W_iᵀ`` of eq. 5) and its
elementwise absolute value (``abs_linear``, Appendix B) to batched tensors,
following the device and dtype of the tensor it is given. It also exports an
exact ``scipy.sparse`` matrix and bias, convolutions included, which is what
the LP and MILP read, so all methods see the same numbers.

Parameters are referenced, not copied: bounds computed through a ``Network``
are differentiable in the torch module's parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from functools import cached_property
from typing import Protocol, Sequence

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .activations import ACTIVATION_MODULES, RELU, Activation, from_module
from .ops import (
    Normalize,
    Shape,
    _cast,
    _numel,
    convert_adaptive_avgpool,
    convert_avgpool,
    convert_batchnorm,
    convert_normalize,
    reshaped_shape,
)

SUPPORTED_MODULES = (
    "nn.Linear, nn.Conv2d (zero padding, no dilation or groups), nn.Flatten, nn.Unflatten, "
    "nn.BatchNorm1d/2d (running statistics), nn.AvgPool2d (ceil_mode=False), nn.AdaptiveAvgPool2d "
    "(output size dividing the input), nn.Identity, lpverify.Normalize, "
    "and the activations nn.ReLU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh"
)
_MODULES = (nn.Linear, nn.Conv2d, nn.Flatten, nn.Unflatten, nn.BatchNorm1d, nn.BatchNorm2d, nn.AvgPool2d,
            nn.AdaptiveAvgPool2d, nn.Identity, Normalize, *ACTIVATION_MODULES)


class AffineOp(Protocol):
    """One affine map between tensor shapes; every method is batch-first (N, *shape)."""

    in_shape: Shape
    out_shape: Shape

    def forward(self, x: Tensor) -> Tensor: ...
    def linear(self, x: Tensor) -> Tensor: ...
    def transpose(self, v: Tensor) -> Tensor: ...
    def abs_linear(self, r: Tensor) -> Tensor: ...
    def abs_bias(self, like: Tensor) -> Tensor | None: ...
    @property
    def fan(self) -> int: ...
    def sparse(self) -> tuple[sp.csr_matrix, np.ndarray]: ...
    def pattern(self) -> sp.csr_matrix | None: ...
    def unit_columns(self, index: Tensor, like: Tensor) -> Tensor: ...
    def parameters(self) -> tuple[Tensor, ...]: ...


@dataclass(frozen=True, eq=False)
class Dense:
    """``x ↦ W·flatten(x) + b``; ``in_shape`` may be multi-dimensional (a folded Flatten)."""

    weight: Tensor  # (n_out, n_in)
    bias: Tensor | None  # (n_out,)
    in_shape: Shape

    @property
    def out_shape(self) -> Shape:
        return (self.weight.shape[0],)

    def linear(self, x: Tensor) -> Tensor:
        return x.flatten(1) @ _cast(self.weight, x).T

    def forward(self, x: Tensor) -> Tensor:
        y = self.linear(x)
        return y if self.bias is None else y + _cast(self.bias, y)

    def transpose(self, v: Tensor) -> Tensor:
        return (v @ _cast(self.weight, v)).view(v.shape[0], *self.in_shape)

    def abs_linear(self, r: Tensor) -> Tensor:
        return r.flatten(1) @ _cast(self.weight, r).abs().T

    def abs_bias(self, like: Tensor) -> Tensor | None:
        return None if self.bias is None else _cast(self.bias, like).abs()

    @property
    def fan(self) -> int:
        """The most products summed for one entry, forwards (a row) or transposed (a column)."""
        return max(self.weight.shape)

    def sparse(self) -> tuple[sp.csr_matrix, np.ndarray]:
        w = self.weight.detach().cpu().double().numpy()
        b = np.zeros(w.shape[0]) if self.bias is None else self.bias.detach().cpu().double().numpy()
        return sp.csr_matrix(w), b

    def pattern(self) -> None:
        """A dense matrix has no structural zeros worth tracking."""
        return None

    def unit_columns(self, index: Tensor, like: Tensor) -> Tensor:
        """Columns ``W e_k`` for input units ``index`` (B, K) → (B, K, n_out)."""
        return _cast(self.weight, like).T[index]

    def parameters(self) -> tuple[Tensor, ...]:
        return (self.weight,) if self.bias is None else (self.weight, self.bias)


@dataclass(frozen=True, eq=False)
class Conv:
    """A 2D convolution with zero padding (``nn.Conv2d`` with dilation 1 and groups 1)."""

    weight: Tensor  # (c_out, c_in, kh, kw)
    bias: Tensor | None  # (c_out,)
    stride: tuple[int, int]
    padding: tuple[int, int]
    in_shape: Shape  # (c_in, h, w)

    @property
    def out_shape(self) -> Shape:
        c_out, _, kh, kw = self.weight.shape
        _, h, w = self.in_shape
        oh = (h + 2 * self.padding[0] - kh) // self.stride[0] + 1
        ow = (w + 2 * self.padding[1] - kw) // self.stride[1] + 1
        return (c_out, oh, ow)

    def linear(self, x: Tensor) -> Tensor:
        return F.conv2d(x, _cast(self.weight, x), None, self.stride, self.padding)

    def forward(self, x: Tensor) -> Tensor:
        b = None if self.bias is None else _cast(self.bias, x)
        return F.conv2d(x, _cast(self.weight, x), b, self.stride, self.padding)

    def transpose(self, v: Tensor) -> Tensor:
        # The rows/columns that the forward convolution's floor division dropped
        # come back as output_padding, so the result has exactly in_shape.
        _, kh, kw = self.weight.shape[1:]
        _, oh, ow = self.out_shape
        _, h, w = self.in_shape
        pad_h = h - ((oh - 1) * self.stride[0] - 2 * self.padding[0] + kh)
        pad_w = w - ((ow - 1) * self.stride[1] - 2 * self.padding[1] + kw)
        return F.conv_transpose2d(
            v, _cast(self.weight, v), None, self.stride, self.padding, output_padding=(pad_h, pad_w)
        )

    def abs_linear(self, r: Tensor) -> Tensor:
        return F.conv2d(r, _cast(self.weight, r).abs(), None, self.stride, self.padding)

    def abs_bias(self, like: Tensor) -> Tensor | None:
        return None if self.bias is None else _cast(self.bias, like).abs().view(-1, 1, 1)

    @property
    def fan(self) -> int:
        """The most products summed for one entry, forwards or transposed."""
        c_out, c_in, kh, kw = self.weight.shape
        sh, sw = self.stride
        return max(c_in * kh * kw, c_out * (-(-kh // sh)) * (-(-kw // sw)))

    @cached_property
    def _triplets(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row, column, flat weight index) of every structural nonzero of the (n_out, n_in) matrix."""
        c_out, c_in, kh, kw = self.weight.shape
        _, h, wd = self.in_shape
        _, oh, ow = self.out_shape
        co, ci, ki, kj, yo, xo = np.meshgrid(
            np.arange(c_out), np.arange(c_in), np.arange(kh), np.arange(kw),
            np.arange(oh), np.arange(ow), indexing="ij",
        )
        yi = yo * self.stride[0] - self.padding[0] + ki
        xi = xo * self.stride[1] - self.padding[1] + kj
        inside = (yi >= 0) & (yi < h) & (xi >= 0) & (xi < wd)
        rows = ((co * oh + yo) * ow + xo)[inside]
        cols = ((ci * h + yi) * wd + xi)[inside]
        widx = (((co * c_in + ci) * kh + ki) * kw + kj)[inside]
        return rows, cols, widx

    def _matrix(self, values: np.ndarray) -> sp.csr_matrix:
        rows, cols, _ = self._triplets
        return sp.csr_matrix((values, (rows, cols)), shape=(_numel(self.out_shape), _numel(self.in_shape)))

    def sparse(self) -> tuple[sp.csr_matrix, np.ndarray]:
        """The convolution as an exact (n_out, n_in) float64 matrix in C-order flattening."""
        w = self.weight.detach().cpu().double().numpy().ravel()
        bias = np.zeros(self.weight.shape[0]) if self.bias is None else self.bias.detach().cpu().double().numpy()
        return self._matrix(w[self._triplets[2]]), np.repeat(bias, math.prod(self.out_shape[1:]))

    def pattern(self) -> sp.csr_matrix:
        """Where the matrix can be nonzero whatever the weights."""
        return self._matrix(np.ones(self._triplets[0].size))

    def entries(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row, column, flat weight index) of every structural nonzero of the (n_out, n_in) matrix."""
        return self._triplets

    def column_support(self) -> tuple[Tensor, Tensor]:
        """Per input unit, the output rows of its column (padded with n_out) and their flat weight indices (padded with the weight's size)."""
        return self._column_table

    @cached_property
    def _column_table(self) -> tuple[Tensor, Tensor]:
        rows, cols, widx = self._triplets
        n_in, pad_w = _numel(self.in_shape), self.weight.numel()
        order = np.argsort(cols, kind="stable")
        counts = np.bincount(cols, minlength=n_in)
        width = int(counts.max())
        slot = np.arange(order.size) - np.repeat(np.cumsum(counts) - counts, counts)
        out_rows = np.full((n_in, width), _numel(self.out_shape), dtype=np.int64)
        w_index = np.full((n_in, width), pad_w, dtype=np.int64)
        out_rows[cols[order], slot] = rows[order]
        w_index[cols[order], slot] = widx[order]
        return torch.from_numpy(out_rows), torch.from_numpy(w_index)

    def unit_columns(self, index: Tensor, like: Tensor) -> Tensor:
        """Columns ``W e_k`` for input units ``index`` (B, K) → (B, K, *out_shape): a gather, no convolution."""
        out_rows, w_index = (t.to(index.device) for t in self._column_table)
        w = _cast(self.weight, like).flatten()
        w = torch.cat([w, w.new_zeros(1)])
        batch, k = index.shape
        n_out = _numel(self.out_shape)
        cols = like.new_zeros(batch, k, n_out + 1).scatter_add(2, out_rows[index], w[w_index[index]])
        return cols[:, :, :n_out].reshape(batch, k, *self.out_shape)

    def parameters(self) -> tuple[Tensor, ...]:
        return (self.weight,) if self.bias is None else (self.weight, self.bias)


@dataclass(frozen=True, eq=False)
class Reshape:
    """A reshape (``nn.Flatten`` not followed by a Linear): a permutation-free identity."""

    in_shape: Shape
    out_shape: Shape

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], *self.out_shape)

    linear = forward
    abs_linear = forward

    def abs_bias(self, like: Tensor) -> None:
        return None

    fan = 1

    def transpose(self, v: Tensor) -> Tensor:
        return v.reshape(v.shape[0], *self.in_shape)

    def sparse(self) -> tuple[sp.csr_matrix, np.ndarray]:
        n = _numel(self.in_shape)
        return sp.identity(n, format="csr"), np.zeros(n)

    def pattern(self) -> sp.csr_matrix:
        return sp.identity(_numel(self.in_shape), format="csr")

    def unit_columns(self, index: Tensor, like: Tensor) -> Tensor:
        n = _numel(self.in_shape)
        eye = like.new_zeros(*index.shape, n).scatter(2, index.unsqueeze(2), 1.0)
        return eye.view(*index.shape, *self.out_shape)

    def parameters(self) -> tuple[Tensor, ...]:
        return ()


@dataclass(frozen=True, eq=False)
class AffineBlock:
    """A composition of affine ops with no ReLU between them: ``W_i z + b_i``.

    ``abs_linear`` of a block holding several weighted ops applies ``|W|`` op by
    op, a sound over-estimate of ``|W_composed|``. Consecutive Linear layers are
    kept apart, not multiplied out: a product of float weights would round, and
    the network verified must be the one given.
    """

    ops: tuple[AffineOp, ...]

    @property
    def in_shape(self) -> Shape:
        return self.ops[0].in_shape

    @property
    def out_shape(self) -> Shape:
        return self.ops[-1].out_shape

    @property
    def in_features(self) -> int:
        return _numel(self.in_shape)

    @property
    def out_features(self) -> int:
        return _numel(self.out_shape)

    def __call__(self, x: Tensor) -> Tensor:
        return self.forward(x)

    def forward(self, x: Tensor) -> Tensor:
        """``W z + b`` for z of shape (N, *in_shape)."""
        for op in self.ops:
            x = op.forward(x)
        return x

    def linear(self, x: Tensor) -> Tensor:
        """``W z`` (no bias) for z of shape (N, *in_shape)."""
        for op in self.ops:
            x = op.linear(x)
        return x

    def transpose(self, v: Tensor) -> Tensor:
        """``Wᵀ v`` for v of shape (N, *out_shape): one step of the dual network (eq. 5)."""
        for op in reversed(self.ops):
            v = op.transpose(v)
        return v

    def abs_linear(self, r: Tensor) -> Tensor:
        """``|W| r`` for r ≥ 0 of shape (N, *in_shape) (interval radius, Appendix B)."""
        for op in self.ops:
            r = op.abs_linear(r)
        return r

    def abs_forward(self, r: Tensor) -> Tensor:
        """``|W_L|(…(|W_1| r + |b_1|)…) + |b_L|`` for r ≥ 0: the magnitude of ``forward`` (MATH.md §11)."""
        for op in self.ops:
            r = op.abs_linear(r)
            b = op.abs_bias(r)
            if b is not None:
                r = r + b
        return r

    @property
    def rounding_depth(self) -> int:
        """Chained roundings in one entry of ``forward``, ``linear`` or ``transpose``: the op fans plus the biases."""
        return sum(op.fan + 1 for op in self.ops)

    def bias(self, like: Tensor) -> Tensor:
        """The block's total bias ``b_i`` (shape out_shape), in the dtype/device of ``like``."""
        zero = torch.zeros((1, *self.in_shape), dtype=like.dtype, device=like.device)
        return self.forward(zero)[0]

    def sparse(self) -> tuple[sp.csr_matrix, np.ndarray]:
        """The exact (out_features, in_features) float64 matrix and bias of the block."""
        mat, bias = self.ops[0].sparse()
        for op in self.ops[1:]:
            m, b = op.sparse()
            mat, bias = (m @ mat).tocsr(), m @ bias + b
        return mat, bias

    def unit_columns(self, index: Tensor, like: Tensor) -> Tensor:
        """Columns ``W e_k`` for flat input units ``index`` (B, K) → (B, K, *out_shape), in the dtype of ``like``."""
        cols = self.ops[0].unit_columns(index, like)
        batch, k = index.shape
        for op in self.ops[1:]:
            cols = op.linear(cols.flatten(0, 1)).view(batch, k, *op.out_shape)
        return cols

    def pattern(self) -> sp.csr_matrix | None:
        """Structural nonzeros of W (independent of the weight values), or None if dense."""
        mat = None
        for op in self.ops:
            m = op.pattern()
            if m is None:
                return None
            mat = m if mat is None else (m @ mat).tocsr()
        return mat

    def parameters(self) -> tuple[Tensor, ...]:
        return tuple(p for op in self.ops for p in op.parameters())


class Network:
    """A network ``f(x) = A_{k-1}(σ_{k-2}(... σ_1(A_1(x))))`` over affine blocks.

    ``net(x)`` runs it on x of shape (batch, *input_shape); ``net.blocks[i]`` is
    the paper's affine layer i+1. The hidden pre-activations ẑ_2..ẑ_{k-1} are
    the outputs of ``blocks[:-1]``; ``net.activations[i]`` is the activation
    after ``blocks[i]`` (:mod:`lpverify.activations`; ReLU by default).
    """

    def __init__(self, blocks: Sequence[AffineBlock], activations: Sequence[Activation] | None = None):
        if not blocks:
            raise ValueError("a Network needs at least one affine block")
        acts = (RELU,) * (len(blocks) - 1) if activations is None else tuple(activations)
        if len(acts) != len(blocks) - 1 or not all(isinstance(a, Activation) for a in acts):
            raise ValueError(f"a Network of {len(blocks)} blocks needs {len(blocks) - 1} activations, got {acts}")
        self.activations: tuple[Activation, ...] = acts
        for i, (a, b) in enumerate(zip(blocks, blocks[1:])):
            if a.out_shape != b.in_shape:
                raise ValueError(
                    f"block {i} outputs shape {a.out_shape} but block {i + 1} expects {b.in_shape}"
                )
        self.blocks: tuple[AffineBlock, ...] = tuple(blocks)
        self._sparse_cache: tuple[tuple[tuple[int, int], ...], list[tuple[sp.csr_matrix, np.ndarray]]] | None = None

    # -- shapes -------------------------------------------------------------
    @property
    def input_shape(self) -> Shape:
        return self.blocks[0].in_shape

    @property
    def output_shape(self) -> Shape:
        return self.blocks[-1].out_shape

    @property
    def n_outputs(self) -> int:
        return self.blocks[-1].out_features

    @property
    def hidden_shapes(self) -> tuple[Shape, ...]:
        """Shapes of the pre-activations that pass through an activation (ẑ_2..ẑ_{k-1})."""
        return tuple(b.out_shape for b in self.blocks[:-1])

    def parameters(self) -> tuple[Tensor, ...]:
        return tuple(p for b in self.blocks for p in b.parameters())

    @property
    def is_relu(self) -> bool:
        """Every hidden layer is a ReLU (the paper's networks: every method applies)."""
        return all(a.is_relu for a in self.activations)

    @property
    def piecewise_linear(self) -> bool:
        """Every activation is piecewise linear (ReLU, LeakyReLU): the LP and the exact MILP apply."""
        return all(a.piecewise_linear for a in self.activations)

    def prefix(self, n_blocks: int) -> "Network":
        """The sub-network of the first ``n_blocks`` blocks (its output: the pre-activations of that block)."""
        return Network(self.blocks[:n_blocks], self.activations[: n_blocks - 1])

    @property
    def dtype(self) -> torch.dtype:
        """The widest dtype of the parameters (float16 for a network without any: it widens nothing)."""
        dtype = torch.float16
        for p in self.parameters():
            dtype = torch.promote_types(dtype, p.dtype)
        return dtype

    def _version(self) -> tuple:
        return tuple((id(p), p._version) for p in self.parameters())

    def check_finite(self) -> None:
        """A ValueError naming the first parameter that holds NaN or inf (cached until a parameter changes)."""
        key = self._version()
        if getattr(self, "_finite_key", None) == key:
            return
        for i, block in enumerate(self.blocks):
            for j, p in enumerate(block.parameters()):
                if not bool(torch.isfinite(p).all()):
                    kind = "NaN" if bool(torch.isnan(p).any()) else "inf"
                    raise ValueError(f"parameter {j} of affine block {i} (shape {tuple(p.shape)}) contains {kind}")
        self._finite_key = key

    def detached(self, dtype: torch.dtype) -> "Network":
        """The same network with detached copies of its parameters in a wider dtype (exact), cached.

        For evaluations that need no gradient and run many times on the same
        weights (the LP's safe bounds): the casts are paid once.
        """
        if torch.promote_types(dtype, self.dtype) != dtype:
            raise ValueError(f"cannot narrow a {self.dtype} network to {dtype} without rounding its weights")
        key = (dtype, self._version())
        cached = getattr(self, "_detached", None)
        if cached is not None and cached[0] == key:
            return cached[1]

        def cast(op: AffineOp) -> AffineOp:
            changes = {f.name: getattr(op, f.name).detach().to(dtype) for f in fields(op)
                       if isinstance(getattr(op, f.name), Tensor)}
            return replace(op, **changes) if changes else op

        net = Network([AffineBlock(tuple(cast(op) for op in b.ops)) for b in self.blocks], self.activations)
        net._finite_key = net._version()
        self._detached = (key, net)
        return net

    def __repr__(self) -> str:
        shapes = " -> ".join(str(s) for s in (self.input_shape, *(b.out_shape for b in self.blocks)))
        kinds = "" if self.is_relu else f", activations {', '.join(a.name for a in self.activations)}"
        return f"Network({len(self.blocks)} affine blocks: {shapes}{kinds})"

    # -- evaluation ---------------------------------------------------------
    def __call__(self, x: Tensor) -> Tensor:
        return self.pre_activations(x)[-1]

    def pre_activations(self, x: Tensor) -> list[Tensor]:
        """``[ẑ_2, ..., ẑ_k]`` for x of shape (batch, *input_shape).

        Computed in the wider of x's and the parameters' dtypes: weights are
        never rounded to a narrower input.
        """
        self.check_input(x)
        x = x.to(torch.promote_types(x.dtype, self.dtype))
        out = []
        for i, block in enumerate(self.blocks):
            x = block(x if i == 0 else self.activations[i - 1].forward(x))
            out.append(x)
        return out

    def check_input(self, x: Tensor) -> None:
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"input of shape {tuple(x.shape)} does not match the network's input shape "
                f"(batch, {', '.join(map(str, self.input_shape))})"
            )

    # -- export -------------------------------------------------------------
    def sparse(self) -> list[tuple[sp.csr_matrix, np.ndarray]]:
        """Exact float64 ``(W_i, b_i)`` of every block, cached until a parameter changes."""
        key = tuple((id(p), p._version) for p in self.parameters())
        if self._sparse_cache is None or self._sparse_cache[0] != key:
            self._sparse_cache = (key, [b.sparse() for b in self.blocks])
        return self._sparse_cache[1]

    # -- construction -------------------------------------------------------
    @classmethod
    def from_torch(cls, module: nn.Module, input_shape: Sequence[int] | None = None) -> "Network":
        """Build a Network from an ``nn.Sequential`` of the modules in ``SUPPORTED_MODULES``.

        The activations are ReLU, LeakyReLU (slope in [0, 1]), Sigmoid and Tanh
        (:mod:`lpverify.activations`).

        ``input_shape`` (without the batch dimension) is required unless the
        first layer is a Linear or BatchNorm1d (then ``(in_features,)``).
        Consecutive affine modules become one block; none is multiplied into
        another. Batch norm always uses its running statistics (what eval mode
        computes), whatever the module's mode; without them it is refused.
        """
        modules = _flatten_sequential(module)
        if not modules:
            raise ValueError("cannot build a Network from an empty module")
        shape = _initial_shape(modules[0], input_shape)
        blocks: list[AffineBlock] = []
        activations: list[Activation] = []
        ops: list[AffineOp] = []
        for pos, m in enumerate(modules):
            act = from_module(m)
            if act is not None:
                if not ops:
                    where = "first layer" if not blocks else f"a second consecutive {act.name}"
                    raise ValueError(f"module {pos} ({m}) is {where}; an activation must follow an affine layer")
                blocks.append(_make_block(ops))
                activations.append(act)
                ops = []
                continue
            for op in _convert(pos, m, shape):
                ops.append(op)
                shape = op.out_shape
        if not ops:
            raise ValueError(f"the network ends with a {activations[-1].name}; lpverify expects affine logits as output")
        blocks.append(_make_block(ops))
        return cls(blocks, activations)


def _flatten_sequential(module: nn.Module) -> list[nn.Module]:
    if isinstance(module, nn.Sequential):
        return [m for child in module for m in _flatten_sequential(child)]
    if isinstance(module, _MODULES):
        return [module]
    raise ValueError(
        f"unsupported module {module.__class__.__name__} ({module}); "
        f"lpverify builds networks from an nn.Sequential of {SUPPORTED_MODULES}"
    )


def _initial_shape(first: nn.Module, input_shape: Sequence[int] | None) -> Shape:
    if input_shape is not None:
        shape = tuple(int(s) for s in input_shape)
        if any(s <= 0 for s in shape):
            raise ValueError(f"input_shape must be positive, got {shape}")
        return shape
    if isinstance(first, nn.Linear):
        return (first.in_features,)
    if isinstance(first, nn.BatchNorm1d):
        return (first.num_features,)
    raise ValueError(
        f"input_shape is required when the first layer is {first.__class__.__name__}, "
        "e.g. Network.from_torch(model, input_shape=(1, 28, 28))"
    )


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _convert(pos: int, m: nn.Module, shape: Shape) -> list[AffineOp]:
    """One torch module as affine ops on inputs of ``shape`` (none for an identity), or a ValueError naming it."""
    if isinstance(m, nn.Linear):
        if _numel(shape) != m.in_features or (len(shape) > 1 and shape[-1] != _numel(shape)):
            if len(shape) > 1:
                raise ValueError(
                    f"module {pos} ({m}) receives shape {shape}; flatten first (nn.Flatten) so it sees "
                    f"{_numel(shape)} features"
                )
            raise ValueError(f"module {pos} ({m}) expects {m.in_features} features but receives {shape}")
        return [Dense(m.weight, m.bias, shape)]
    if isinstance(m, nn.Conv2d):
        return [_convert_conv(pos, m, shape)]
    if isinstance(m, (nn.Flatten, nn.Unflatten)):
        return [Reshape(shape, reshaped_shape(pos, m, shape))]
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return [convert_batchnorm(pos, m, shape)]
    if isinstance(m, nn.AvgPool2d):
        return [convert_avgpool(pos, m, shape)]
    if isinstance(m, nn.AdaptiveAvgPool2d):
        return [convert_adaptive_avgpool(pos, m, shape)]
    if isinstance(m, Normalize):
        return convert_normalize(pos, m, shape)
    if isinstance(m, nn.Identity):
        return []
    raise ValueError(f"unsupported module {pos}: {m}; lpverify supports {SUPPORTED_MODULES}")


def _convert_conv(pos: int, m: nn.Conv2d, shape: Shape) -> Conv:
    if isinstance(m.padding, str):
        if m.padding != "valid":
            raise ValueError(f"module {pos} ({m}): padding='{m.padding}' is not supported; give integers")
        padding = (0, 0)
    else:
        padding = _pair(m.padding)
    if m.groups != 1 or _pair(m.dilation) != (1, 1) or m.padding_mode != "zeros":
        raise ValueError(
            f"module {pos} ({m}): only groups=1, dilation=1 and zero padding are supported"
        )
    if len(shape) != 3 or shape[0] != m.in_channels:
        raise ValueError(
            f"module {pos} ({m}) expects input (channels={m.in_channels}, height, width) but receives {shape}"
        )
    conv = Conv(m.weight, m.bias, _pair(m.stride), padding, shape)
    if min(conv.out_shape[1:]) <= 0:
        raise ValueError(f"module {pos} ({m}) gives an empty output for input shape {shape}")
    return conv


def _make_block(ops: list[AffineOp]) -> AffineBlock:
    """Group ops into a block, folding a Flatten into the following Linear (exact: no arithmetic)."""
    merged: list[AffineOp] = []
    for op in ops:
        prev = merged[-1] if merged else None
        if isinstance(op, Dense) and isinstance(prev, Reshape):
            merged[-1] = Dense(op.weight, op.bias, prev.in_shape)
        elif isinstance(op, Reshape) and isinstance(prev, Reshape):
            merged[-1] = Reshape(prev.in_shape, op.out_shape)
        else:
            merged.append(op)
    return AffineBlock(tuple(merged))
