"""Algorithm 1's columns, stored on their receptive fields (structured propagation).

Algorithm 1 (MATH.md §4, eq. 9–10) runs the relaxed network forwards on
columns: the radius-scaled input identity and one column ``d_j W e_j`` per
crossing unit. Through a convolution a column stays local: on the paper's
MNIST model the image of one input pixel after both convolutions touches at
most 288 of the 1,568 units, and a crossing unit of the first layer reaches
128. :class:`Columns` keeps K columns per example as values on an index set
(the columns' structural support), so a push through a layer costs what the
receptive fields need, not the dense ``K × n_in × n_out`` product:

* through a convolution, columns that share their support across the batch
  (the input identity) are multiplied by the gathered sub-matrix of each
  column's receptive field (:func:`conv_plan`, built once per structure);
* through a dense layer, each column meets only the weight rows of its
  support;
* anything else is pushed densely, which is always correct.

The values are exactly the entries of the dense columns (padding entries are
zero), so bounds do not depend on the representation except through the
summation order; :mod:`lpverify.dual` accounts for rounding by the number of
summands, which padding does not change.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .network import AffineBlock, Conv, Dense, Network

# Upper limit on the elements of one intermediate tensor of a push (chunks over the batch).
CHUNK_ELEMENTS = 1 << 24
# A sparse column set whose support covers more than this fraction of its layer is stored densely.
DENSE_FRACTION = 0.5
# Columns keep their receptive fields; False gives the dense identity push (the tests' reference).
STRUCTURED = True


@dataclass(frozen=True)
class Columns:
    """K columns per example of a layer of ``size`` units.

    Attributes:
        values: (B, K, s), or (1, K, s) when shared by the batch.
        index: ``None`` for dense columns (s = size); else the flat unit of
            each value, (K, s) when every example shares it or (B, K, s);
            the index ``size`` (one past the layer) marks padding, whose
            value is zero.
        size: the number of units of the layer.
    """

    values: Tensor
    index: Tensor | None
    size: int

    @property
    def batch(self) -> int:
        return self.values.shape[0]

    @property
    def k(self) -> int:
        return self.values.shape[1]

    def _flat_index(self, batch: int) -> Tensor:
        """The index as (batch, K·s), for scatters and gathers over the padded layer (size + 1 slots)."""
        assert self.index is not None
        index = self.index if self.index.ndim == 3 else self.index.unsqueeze(0)
        return index.reshape(index.shape[0], -1).expand(batch, -1)

    def to_dense(self) -> Tensor:
        """The columns as a dense (B, K, size) tensor."""
        if self.index is None:
            return self.values
        batch, k, _ = self.values.shape
        out = self.values.new_zeros(batch, k * (self.size + 1))
        offsets = torch.arange(k, device=self.values.device).view(1, k, 1) * (self.size + 1)
        index = (self.index if self.index.ndim == 3 else self.index.unsqueeze(0)) + offsets
        out.scatter_add_(1, index.reshape(index.shape[0], -1).expand(batch, -1), self.values.reshape(batch, -1))
        return out.view(batch, k, self.size + 1)[:, :, : self.size]

    def scaled(self, slope: Tensor) -> "Columns":
        """``D ⊙ col`` for every column: slope (B, *layer shape), the relaxed ReLU of eq. 7."""
        flat = slope.flatten(1)
        if self.index is None:
            return Columns(self.values * flat.unsqueeze(1), None, self.size)
        batch = flat.shape[0]
        padded = torch.cat([flat, flat.new_zeros(batch, 1)], 1)
        d = padded.gather(1, self._flat_index(batch)).view(batch, self.k, -1)
        return Columns(self.values * d, self.index, self.size)

    def unit_sum(self, values: Tensor) -> Tensor:
        """``Σ_k values[:, k]`` placed on the units, (B, size), for values laid out like ``self.values``."""
        if self.index is None:
            return values.sum(1)
        batch = values.shape[0]
        out = values.new_zeros(batch, self.size + 1)
        out.scatter_add_(1, self._flat_index(batch), values.reshape(batch, -1))
        return out[:, : self.size]

    def norm(self, q: float) -> Tensor:
        """Per unit j, ``‖(col_k[j])_k‖_q`` over the columns (the input set's term of eq. 10), (B, size)."""
        if q == 1:
            return self.unit_sum(self.values.abs())
        if q == 2:
            return self.unit_sum(self.values * self.values).sqrt()
        if q == float("inf"):
            if self.index is None:
                return self.values.abs().amax(1)
            batch = self.values.shape[0]
            out = self.values.new_zeros(batch, self.size + 1)
            out.scatter_reduce_(1, self._flat_index(batch), self.values.abs().reshape(batch, -1), "amax")
            return out[:, : self.size]
        raise ValueError(f"unsupported dual exponent q = {q}")

    def weighted_parts(self, coef: Tensor) -> tuple[Tensor, Tensor]:
        """``Σ_k coef_k [col_k]₊`` and ``Σ_k coef_k [−col_k]₊`` per unit (B, size), coef (B, K)."""
        if self.index is None:  # (B, 1, K) @ (B, K, n): one batched product each
            c = coef.unsqueeze(1)
            return (c @ self.values.clamp(min=0)).squeeze(1), (c @ (-self.values).clamp(min=0)).squeeze(1)
        c = coef.unsqueeze(2)
        return self.unit_sum(c * self.values.clamp(min=0)), self.unit_sum(c * (-self.values).clamp(min=0))


def input_columns(block: AffineBlock, rad: Tensor) -> Columns:
    """``W_1 e_p rad_p`` for every input unit p: the radius-scaled identity after the first block.

    ``rad`` (B, n_in). A lone convolution gives sparse columns (its column
    supports), anything else dense ones.
    """
    op = block.ops[0] if len(block.ops) == 1 else None
    if STRUCTURED and isinstance(op, Conv):
        rows, widx = (t.to(rad.device) for t in op.column_support())
        w = _padded_weight(op, rad)
        return Columns(w[widx].unsqueeze(0) * rad.unsqueeze(2), rows, block.out_features)
    n_in = block.in_features
    eye = torch.eye(n_in, dtype=rad.dtype, device=rad.device).view(n_in, *block.in_shape)
    basis = block.linear(eye).flatten(1)  # (n_in, n_out)
    return Columns(basis.unsqueeze(0) * rad.unsqueeze(2), None, block.out_features)


def unit_columns(block: AffineBlock, index: Tensor, scale: Tensor) -> Columns:
    """``scale_k W e_{index_k}``: the columns of some input units of a block, index and scale (B, K)."""
    op = block.ops[0] if len(block.ops) == 1 else None
    if STRUCTURED and isinstance(op, Conv):
        rows, widx = (t.to(index.device) for t in op.column_support())
        w = _padded_weight(op, scale)
        return Columns(w[widx[index]] * scale.unsqueeze(2), rows[index], block.out_features)
    cols = block.unit_columns(index, scale).flatten(2) * scale.unsqueeze(2)
    return Columns(cols, None, block.out_features)


def push(block: AffineBlock, cols: Columns) -> Columns:
    """``W col`` for every column (no bias): the linear part of a block applied to a column set.

    Shared supports meet a lone convolution's or dense layer's gathered
    weights; per-example supports (crossing units) are scattered densely
    first, where one GEMM beats gathering a weight row per entry.
    """
    op = block.ops[0] if len(block.ops) == 1 else None
    if cols.index is not None and cols.index.ndim == 2 and isinstance(op, Conv):
        return _push_conv_shared(op, cols)
    if cols.index is not None and cols.index.ndim == 2 and isinstance(op, Dense):
        rows = _gathered(op, cols.index, cols.values, _dense_rows)  # (K, s, n_out)
        out = torch.bmm(cols.values.transpose(0, 1), rows)  # (K, B, s) @ (K, s, n_out)
        return Columns(out.transpose(0, 1), None, math.prod(op.out_shape))
    return Columns(_push_dense(block, cols.to_dense()), None, block.out_features)


def combine(cols: Columns, c: Tensor) -> Columns:
    """``cᵀ col`` for every column: c (B, m, size) → dense columns over the m objectives."""
    return Columns(cols.to_dense() @ c.transpose(1, 2), None, c.shape[1])


def column_widths(net: Network) -> list[int]:
    """The stored width of the input columns after each block (the units their supports reach)."""
    first = net.blocks[0]
    op = first.ops[0] if len(first.ops) == 1 else None
    index = op.column_support()[0] if STRUCTURED and isinstance(op, Conv) else None
    widths = [first.out_features if index is None else index.shape[1]]
    for block in net.blocks[1:]:
        op = block.ops[0] if len(block.ops) == 1 else None
        if index is not None and isinstance(op, Conv):
            index = conv_support(op, index)
            if index.shape[1] > DENSE_FRACTION * block.out_features:
                index = None
        else:
            index = None
        widths.append(block.out_features if index is None else index.shape[1])
    return widths


def _padded_weight(op: Conv | Dense, like: Tensor) -> Tensor:
    """The flat weight with one trailing zero (the padding entries' weight), in the dtype of ``like``."""
    w = op.weight.to(device=like.device, dtype=like.dtype).flatten()
    return torch.cat([w, w.new_zeros(1)])


def _push_dense(block: AffineBlock, values: Tensor) -> Tensor:
    """Dense columns (B or 1, K, n_in) through the block, chunked over the batch → (B, K, n_out)."""
    batch, k = values.shape[:2]
    op = block.ops[0] if len(block.ops) == 1 else None
    if isinstance(op, Dense):  # one GEMM: (B·K, n_in) @ (n_in, n_out)
        return values @ op.weight.to(values).T
    step = max(1, CHUNK_ELEMENTS // max(1, k * max(block.in_features, block.out_features)))
    out = []
    for start in range(0, batch, step):
        x = values[start : start + step]
        n = x.shape[0]
        out.append(block.linear(x.reshape(n * k, *block.in_shape)).view(n, k, block.out_features))
    return out[0] if len(out) == 1 else torch.cat(out)


def _push_conv_shared(op: Conv, cols: Columns) -> Columns:
    """Columns with a shared support through a convolution: each column times its receptive field's sub-matrix."""
    assert cols.index is not None
    out_index = conv_support(op, cols.index)
    sub = _gathered(op, cols.index, cols.values, _conv_submatrices)  # (K, s_in, s_out)
    out = torch.bmm(cols.values.transpose(0, 1), sub).transpose(0, 1)  # (B, K, s_out)
    n_out = math.prod(op.out_shape)
    result = Columns(out, out_index.to(out.device), n_out)
    if out_index.shape[1] > DENSE_FRACTION * n_out:
        return Columns(result.to_dense(), None, n_out)
    return result


def _dense_rows(op: Dense, index: Tensor, like: Tensor) -> Tensor:
    """``Wᵀ[index]``: the weight rows each column's support meets, (K, s, n_out); padding meets zeros."""
    weight_t = op.weight.to(like).T
    return torch.cat([weight_t, weight_t.new_zeros(1, weight_t.shape[1])])[index.to(like.device)]


def _conv_submatrices(op: Conv, index: Tensor, like: Tensor) -> Tensor:
    """Each column's receptive-field sub-matrix, transposed: (K, s_in, s_out)."""
    _, table = conv_plan(op, index)
    return _padded_weight(op, like)[table.to(like.device)].transpose(1, 2)


# The gathered weights of each op for the support, dtype and device it saw last, with the
# weight's version: one entry per op, so memory stays at one copy in the working dtype.
_GATHERED: "weakref.WeakKeyDictionary[Conv | Dense, tuple]" = weakref.WeakKeyDictionary()


def _gathered(op: Conv | Dense, index: Tensor, like: Tensor, gather) -> Tensor:
    """``gather(op, index, like)``, cached while the weight is unchanged and no gradient is wanted.

    Training differentiates through the gather, so it is recomputed there;
    certification reuses it across batches.
    """
    if torch.is_grad_enabled() and op.weight.requires_grad:
        return gather(op, index, like)
    key = (_structure_key(index), like.dtype, like.device, gather, op.weight._version, op.weight.data_ptr())
    hit = _GATHERED.get(op)
    if hit is None or hit[0] != key:
        hit = _GATHERED[op] = (key, gather(op, index, like))
    return hit[1]


def _structure_key(index: Tensor) -> bytes:
    """A key for a support: its shape and entries."""
    return bytes(str(tuple(index.shape)), "ascii") + index.cpu().numpy().tobytes()


_SUPPORTS: "weakref.WeakKeyDictionary[Conv, dict[bytes, Tensor]]" = weakref.WeakKeyDictionary()


def conv_support(op: Conv, index: Tensor) -> Tensor:
    """The output supports (K, s_out), padded with n_out, of columns with supports ``index`` (K, s_in); cached."""
    supports = _SUPPORTS.setdefault(op, {})
    key = _structure_key(index)
    if key not in supports:
        supports[key] = conv_plan(op, index)[0]
    return supports[key]


def conv_plan(op: Conv, index: Tensor) -> tuple[Tensor, Tensor]:
    """The output supports and sub-matrices of columns with supports ``index`` (K, s_in) under a convolution.

    Returns ``out_index`` (K, s_out), padded with n_out, and ``table``
    (K, s_out, s_in) of flat weight indices, padded with the weight's size
    (the zero appended by :func:`_padded_weight`): entry (k, a, b) is the
    weight linking input unit ``index[k, b]`` to output unit
    ``out_index[k, a]``. Structural; the table is only needed to gather
    the weights, which are cached instead.
    """
    return _build_conv_plan(op, index.cpu().numpy())


def _build_conv_plan(op: Conv, index: np.ndarray) -> tuple[Tensor, Tensor]:
    import scipy.sparse as sp

    rows, cols, widx = op.entries()
    n_out, n_in, pad_w = math.prod(op.out_shape), math.prod(op.in_shape), op.weight.numel()
    matrix = sp.csc_matrix((widx + 1, (rows, cols)), shape=(n_out, n_in))  # +1 keeps weight index 0 stored
    k, s_in = index.shape
    supports = []
    for col in range(k):
        positions = np.flatnonzero(index[col] < n_in)
        sub = matrix[:, index[col, positions]].tocoo()
        out_rows, slot = np.unique(sub.row, return_inverse=True)
        supports.append((out_rows, slot, positions[sub.col], sub.data - 1))
    s_out = max(1, max(len(s[0]) for s in supports))
    out_index = np.full((k, s_out), n_out, dtype=np.int64)
    table = np.full((k, s_out, s_in), pad_w, dtype=np.int64)
    for col, (out_rows, slot, position, weight) in enumerate(supports):
        out_index[col, : len(out_rows)] = out_rows
        table[col, slot, position] = weight
    return torch.from_numpy(out_index), torch.from_numpy(table)
