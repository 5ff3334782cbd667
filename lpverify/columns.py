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

import torch
import torch.nn.functional as F
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
    """K columns per example of a layer of ``size`` units: dense, or on a support shared by the batch.

    Attributes:
        values: dense columns (B, K, size); or, with an ``index``, their
            entries on the support as (K, s, B), batch last, so that the
            products and scatters of a column run over contiguous rows of B.
        index: ``None`` (dense) or (K, s): the flat unit of each entry, the
            same for every example; the index ``size`` (one past the layer)
            marks padding, whose value is zero.
        size: the number of units of the layer.
    """

    values: Tensor
    index: Tensor | None
    size: int

    def to_dense(self) -> Tensor:
        """The columns as a dense (B, K, size) tensor."""
        if self.index is None:
            return self.values
        k, s, batch = self.values.shape
        flat = (self.index + torch.arange(k, device=self.index.device).unsqueeze(1) * (self.size + 1)).view(-1)
        out = self.values.new_zeros(k * (self.size + 1), batch).index_add_(0, flat, self.values.reshape(k * s, batch))
        return out.view(k, self.size + 1, batch)[:, : self.size].permute(2, 0, 1)

    def scaled(self, slope: Tensor) -> "Columns":
        """``D ⊙ col`` for every column: slope (B, *layer shape), the relaxed ReLU of eq. 7."""
        flat = slope.flatten(1)
        if self.index is None:
            return Columns(self.values * flat.unsqueeze(1), None, self.size)
        padded = torch.cat([flat.T, flat.new_zeros(1, flat.shape[0])])  # (size + 1, B), zero for padding
        d = padded.index_select(0, self.index.view(-1)).view_as(self.values)
        return Columns(self.values * d, self.index, self.size)

    def _unit_sum(self, values: Tensor) -> Tensor:
        """``Σ_k`` of entries laid out like ``self.values``, placed on the units: (B, size)."""
        assert self.index is not None
        batch = values.shape[2]
        out = values.new_zeros(self.size + 1, batch).index_add_(0, self.index.view(-1), values.reshape(-1, batch))
        return out[: self.size].T.contiguous()

    def norm(self, q: float) -> Tensor:
        """Per unit j, ``‖(col_k[j])_k‖_q`` over the columns (the input set's term of eq. 10), (B, size)."""
        if q not in (1, 2, float("inf")):
            raise ValueError(f"unsupported dual exponent q = {q}")
        if self.index is None:
            return torch.linalg.vector_norm(self.values, ord=q, dim=1)
        if q == 1:
            return self._unit_sum(self.values.abs())
        if q == 2:
            return self._unit_sum(self.values * self.values).sqrt()
        batch = self.values.shape[2]
        out = self.values.new_zeros(self.size + 1, batch)
        rows = self.index.view(-1, 1).expand(-1, batch)
        out.scatter_reduce_(0, rows, self.values.abs().reshape(-1, batch), "amax")
        return out[: self.size].T.contiguous()

    def weighted_parts(self, coef: Tensor) -> tuple[Tensor, Tensor]:
        """``Σ_k coef_k [col_k]₊`` and ``Σ_k coef_k [−col_k]₊`` per unit (B, size), coef (B, K)."""
        if self.index is None:  # (B, 1, K) @ (B, K, n); [−v]₊ = [v]₊ − v
            c = coef.unsqueeze(1)
            positive = (c @ self.values.clamp(min=0)).squeeze(1)
            return positive, positive - (c @ self.values).squeeze(1)
        c = coef.T.unsqueeze(1)  # (K, 1, B)
        return self._unit_sum(c * self.values.clamp(min=0)), self._unit_sum(c * (-self.values).clamp(min=0))


def input_columns(net: Network, rad: Tensor) -> list[Columns]:
    """``W_1 e_p rad_p`` for every input unit p: the radius-scaled identity after the first block.

    ``rad`` (B, n_in). After a lone convolution the columns are sparse (its
    column supports), in groups of equal width at the last layer they stay
    sparse in (:func:`column_groups`), so little of any bmm is padding;
    otherwise one dense group.
    """
    block = net.blocks[0]
    op = block.ops[0] if len(block.ops) == 1 else None
    if STRUCTURED and isinstance(op, Conv):
        rows, widx = (t.to(rad.device) for t in op.column_support())
        w = _padded_weight(op, rad)
        groups = []
        for members, width in column_groups(net):
            members = members.to(rad.device)
            values = w[widx[members, :width]].unsqueeze(2) * rad.T[members].unsqueeze(1)  # (K_g, width, B)
            groups.append(Columns(values, rows[members, :width], block.out_features))
        return groups
    n_in = block.in_features
    eye = torch.eye(n_in, dtype=rad.dtype, device=rad.device).view(n_in, *block.in_shape)
    basis = block.linear(eye).flatten(1)  # (n_in, n_out)
    return [Columns(basis.unsqueeze(0) * rad.unsqueeze(2), None, block.out_features)]


_GROUPS: "weakref.WeakKeyDictionary[Network, list[tuple[Tensor, int]]]" = weakref.WeakKeyDictionary()


def column_groups(net: Network) -> list[tuple[Tensor, int]]:
    """The input units grouped by the width of their column at the last layer where it is sparse.

    Returns (members, width after the first block) per group; units the
    first block never reads (a stride skips them) are in none. Structural, cached
    per network. Only for a network whose first block is a lone
    convolution.
    """
    if net not in _GROUPS:
        rows = net.blocks[0].ops[0].column_support()[0]
        index, final = rows, (rows < net.blocks[0].out_features).sum(1)
        for block in net.blocks[1:]:
            op = block.ops[0] if len(block.ops) == 1 else None
            if not isinstance(op, Conv):
                break
            index = _build_conv_plan(op, index)[0]  # the whole set's plan is not kept
            if index.shape[1] > DENSE_FRACTION * block.out_features:
                break
            final = (index < block.out_features).sum(1)
        in_width = (rows < net.blocks[0].out_features).sum(1)
        groups = [torch.nonzero(final == w).view(-1) for w in torch.unique(final)]
        widths = [int(in_width[members].max()) for members in groups]
        _GROUPS[net] = [(members, w) for members, w in zip(groups, widths) if w > 0]  # 0: a zero column
    return _GROUPS[net]


def group_norm(groups: list[Columns], q: float) -> Tensor:
    """:meth:`Columns.norm` over the columns of all groups together, (B, size)."""
    norms = [g.norm(q) for g in groups]
    if q == 1:
        return torch.stack(norms).sum(0)
    if q == 2:
        return torch.stack(norms).square().sum(0).sqrt()
    return torch.stack(norms).amax(0)


def merged(groups: list[Columns]) -> list[Columns]:
    """Dense groups joined into one (one product per push instead of one per group)."""
    if len(groups) < 2 or any(g.index is not None for g in groups):
        return groups
    return [Columns(torch.cat([g.values for g in groups], 1), None, groups[0].size)]


def unit_columns(block: AffineBlock, index: Tensor, scale: Tensor) -> Columns:
    """``scale_k W e_{index_k}``: the columns of some input units of a block, index and scale (B, K), dense."""
    cols = block.unit_columns(index, scale).flatten(2) * scale.unsqueeze(2)
    return Columns(cols, None, block.out_features)


def unit_column_parts(block: AffineBlock, index: Tensor, scale: Tensor, coef: Tensor) -> tuple[Tensor, Tensor] | None:
    """:meth:`Columns.weighted_parts` of :func:`unit_columns` from a lone convolution's column
    supports (each a few entries), without the dense columns; None for any other block."""
    op = block.ops[0] if len(block.ops) == 1 else None
    if not (STRUCTURED and isinstance(op, Conv)):
        return None
    rows, widx = (t.to(index.device) for t in op.column_support())
    values = _padded_weight(op, scale)[widx[index]] * scale.unsqueeze(2)  # (B, K, width)
    weighted = coef.unsqueeze(2) * values.clamp(min=0), coef.unsqueeze(2) * (-values).clamp(min=0)
    batch, size = index.shape[0], block.out_features
    flat = rows[index].view(batch, -1)
    return tuple(  # type: ignore[return-value]
        values.new_zeros(batch, size + 1).scatter_add_(1, flat, w.view(batch, -1))[:, :size] for w in weighted
    )


def push(block: AffineBlock, cols: Columns) -> Columns:
    """``W col`` for every column (no bias): the linear part of a block applied to a column set.

    Columns on a shared support meet a lone convolution's or dense layer's
    weights gathered on that support (cached); dense columns are pushed
    through the block itself.
    """
    op = block.ops[0] if len(block.ops) == 1 else None
    if cols.index is not None and isinstance(op, Conv):
        return _push_conv_shared(op, cols)
    if cols.index is not None and isinstance(op, Dense):
        rows = _gathered(op, cols.index, cols.values, _dense_rows)  # (K, s, n_out)
        out = torch.bmm(rows.transpose(1, 2), cols.values)  # (K, n_out, B)
        return Columns(out.permute(2, 0, 1).contiguous(), None, math.prod(op.out_shape))
    return Columns(_push_dense(block, cols.to_dense()), None, block.out_features)


def combine(cols: Columns, c: Tensor) -> Columns:
    """``cᵀ col`` for every column: c (B, m, size) → dense columns over the m objectives."""
    return Columns(cols.to_dense() @ c.transpose(1, 2), None, c.shape[1])


def block_macs(block: AffineBlock) -> int:
    """Multiply-adds of one pass of a vector through the block (forwards or transposed): the cost model's unit."""
    total = 0
    for op in block.ops:
        if isinstance(op, Dense):
            total += op.weight.numel()
        elif isinstance(op, Conv):
            total += math.prod(op.out_shape) * math.prod(op.weight.shape[1:])
        else:  # elementwise, pooling, reshapes: a few operations per output
            total += math.prod(op.out_shape) * max(1, int(getattr(op, "fan", 1)))
    return total


def push_cost(block: AffineBlock, cols: Columns) -> float:
    """Estimated multiply-adds per example of :func:`push` for ``cols``: each stored entry meets its row of W."""
    k = cols.values.shape[0] if cols.index is not None else cols.values.shape[1]
    entries = k * (cols.index.shape[1] if cols.index is not None else cols.size)
    return entries * block_macs(block) / max(1, block.in_features)


def column_entries(net: Network) -> list[int]:
    """Per block, the entries per example the input columns hold after it (summed over groups)."""
    first = net.blocks[0]
    op = first.ops[0] if len(first.ops) == 1 else None
    if not (STRUCTURED and isinstance(op, Conv)):
        return [first.in_features * block.out_features for block in net.blocks]
    rows = op.column_support()[0]
    entries = [0] * len(net.blocks)
    for members, width in column_groups(net):
        index: Tensor | None = rows[members, :width]
        entries[0] += index.numel()
        for i, block in enumerate(net.blocks[1:], 1):
            op = block.ops[0] if len(block.ops) == 1 else None
            index = conv_support(op, index) if index is not None and isinstance(op, Conv) else None
            if index is not None and index.shape[1] > DENSE_FRACTION * block.out_features:
                index = None
            entries[i] += len(members) * (block.out_features if index is None else index.shape[1])
    return entries


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
    """Columns on a shared support through a convolution: each column times its receptive field's sub-matrix."""
    assert cols.index is not None
    out_index = conv_support(op, cols.index).to(cols.values.device)
    sub = _gathered(op, cols.index, cols.values, _conv_submatrices)  # (K, s_out, s_in)
    result = Columns(torch.bmm(sub, cols.values), out_index, math.prod(op.out_shape))  # (K, s_out, B)
    if out_index.shape[1] > DENSE_FRACTION * result.size:
        return Columns(result.to_dense(), None, result.size)
    return result


def _dense_rows(op: Dense, index: Tensor, like: Tensor) -> Tensor:
    """The rows of Wᵀ each column's support meets, (K, s, n_out); padding meets zeros."""
    weight_t = op.weight.to(like).T
    padded = torch.cat([weight_t, weight_t.new_zeros(1, weight_t.shape[1])])
    return padded.index_select(0, index.to(like.device).view(-1)).view(*index.shape, -1)


def _conv_submatrices(op: Conv, index: Tensor, like: Tensor) -> Tensor:
    """Each column's receptive-field sub-matrix, (K, s_out, s_in)."""
    _, table = conv_plan(op, index)
    return _padded_weight(op, like).index_select(0, table.to(like.device).view(-1)).view(table.shape)


# The gathered weights of each op, per support, for the dtype, device and weight version it saw
# last: a new dtype or an updated weight clears the op's entries, so memory stays at one copy.
_GATHERED: "weakref.WeakKeyDictionary[Conv | Dense, tuple[tuple, dict]]" = weakref.WeakKeyDictionary()


def _gathered(op: Conv | Dense, index: Tensor, like: Tensor, gather) -> Tensor:
    """``gather(op, index, like)``, cached while the weight is unchanged and no gradient is wanted.

    Training differentiates through the gather, so it is recomputed there;
    certification reuses it across batches.
    """
    if torch.is_grad_enabled() and op.weight.requires_grad:
        return gather(op, index, like)
    state = (like.dtype, like.device, op.weight._version, op.weight.data_ptr())
    entry = _GATHERED.get(op)
    if entry is None or entry[0] != state:
        entry = _GATHERED[op] = (state, {})
    key = (_structure_key(index), gather)
    if key not in entry[1]:
        entry[1][key] = gather(op, index, like)
    return entry[1][key]


def _structure_key(index: Tensor) -> bytes:
    """A key for a support: its shape and entries."""
    return bytes(str(tuple(index.shape)), "ascii") + index.cpu().numpy().tobytes()


_PLANS: "weakref.WeakKeyDictionary[Conv, dict[bytes, tuple[Tensor, Tensor]]]" = weakref.WeakKeyDictionary()


def conv_support(op: Conv, index: Tensor) -> Tensor:
    """The output supports (K, s_out), padded with n_out, of columns with supports ``index`` (K, s_in)."""
    return conv_plan(op, index)[0]


def conv_plan(op: Conv, index: Tensor) -> tuple[Tensor, Tensor]:
    """The output supports and sub-matrices of columns with supports ``index`` (K, s_in) under a convolution.

    Returns ``out_index`` (K, s_out), padded with n_out, and ``table``
    (K, s_out, s_in) of flat weight indices, padded with the weight's size
    (the zero appended by :func:`_padded_weight`): entry (k, a, b) is the
    weight linking input unit ``index[k, b]`` to output unit
    ``out_index[k, a]``. Structural, so cached per convolution and support
    (on the CPU).
    """
    plans = _PLANS.setdefault(op, {})
    key = _structure_key(index)
    if key not in plans:
        plans[key] = _build_conv_plan(op, index.cpu())
    return plans[key]


def _build_conv_plan(op: Conv, index: Tensor, chunk: int = 128) -> tuple[Tensor, Tensor]:
    """:func:`conv_plan` for chunks of columns (bounded scratch memory), padded to one width."""
    parts = [_conv_plan_chunk(op, index[start : start + chunk]) for start in range(0, index.shape[0], chunk)]
    s_out = max(p[0].shape[1] for p in parts)
    n_out, pad_w = math.prod(op.out_shape), op.weight.numel()
    out_index = torch.cat([F.pad(p[0], (0, s_out - p[0].shape[1]), value=n_out) for p in parts])
    table = torch.cat([F.pad(p[1], (0, 0, 0, s_out - p[1].shape[1]), value=pad_w) for p in parts])
    return out_index, table


def _conv_plan_chunk(op: Conv, index: Tensor) -> tuple[Tensor, Tensor]:
    """Vectorised: each support unit's own column (:meth:`Conv.column_support`), merged per column."""
    unit_rows, unit_weights = op.column_support()  # (n_in + 1 with padding, width) below
    n_out, pad_w = math.prod(op.out_shape), op.weight.numel()
    unit_rows = torch.cat([unit_rows, torch.full_like(unit_rows[:1], n_out)])
    unit_weights = torch.cat([unit_weights, torch.full_like(unit_weights[:1], pad_w)])
    index = index.clamp(max=unit_rows.shape[0] - 1)  # padding → the padding unit
    rows, weights = unit_rows[index], unit_weights[index]  # (K, s_in, width)
    k, s_in, _ = rows.shape
    present = torch.zeros(k, n_out + 1, dtype=torch.bool)
    present.scatter_(1, rows.reshape(k, -1), True)
    present[:, n_out] = False
    counts = present.sum(1)
    s_out = max(1, int(counts.max()))
    order = torch.sort((~present[:, :n_out]).to(torch.int8), dim=1, stable=True).indices[:, :s_out]
    out_index = torch.where(torch.arange(s_out) < counts.unsqueeze(1), order, torch.full_like(order, n_out))
    slot = present.cumsum(1) - 1  # the slot of each output row of a column
    table = torch.full((k, s_out + 1, s_in), pad_w, dtype=torch.int32 if pad_w < 2**31 else torch.int64)
    row_slot = torch.where(rows < n_out, slot.gather(1, rows.reshape(k, -1)).view_as(rows), s_out)  # padding → spare slot
    position = torch.arange(s_in).view(1, s_in, 1).expand_as(rows)
    table[torch.arange(k).view(k, 1, 1).expand_as(rows), row_slot, position] = weights.to(table.dtype)
    return out_index, table[:, :s_out].contiguous()
