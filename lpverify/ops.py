"""Affine ops without learned matrices: elementwise maps, batch norm, average pooling, permutations.

Each class implements the :class:`lpverify.network.AffineOp` protocol, so
every bound method (interval, Algorithm 1, the rigorous walks, the LP and
MILP through the sparse export, branch and bound) handles it like a dense or
convolutional layer. None of them is multiplied into a neighbouring layer's
weights: that product would round, and the network verified must be the one
given (SOUNDNESS.md, "The object that is certified").

What each op computes, in real arithmetic, is stated in its docstring; the
rigorous accounting (MATH.md §11) counts its roundings through ``fan`` (the
products summed for one entry) plus one per op for its bias or division
(:attr:`lpverify.network.AffineBlock.rounding_depth`):

* :class:`Elementwise` ``x ⊙ s + t`` or ``x ⊘ s + t``: one product or
  quotient and one addition, ``fan = 1``;
* :class:`BatchNorm`: an :class:`Elementwise` whose constants are computed
  once from the statistics (see its docstring for the exact numbers);
* :class:`AvgPool` ``(Σ_window x) ⊘ d``: a sum of at most ``kh·kw`` terms
  (the transpose: of at most ``⌈kh/sh⌉·⌈kw/sw⌉``), then one division;
* :class:`Permute`: no arithmetic.

A division by a constant is a true division in the verified network (1/3 is
not rounded to a float); the float64 sparse export holds the double nearest
each ``1/c``, which only steers which multipliers an LP solver returns, never
a certificate (those come from the walk over these ops).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Sequence

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor, nn

Shape = tuple[int, ...]


def _numel(shape: Shape) -> int:
    return math.prod(shape)


def _cast(t: Tensor, like: Tensor) -> Tensor:
    """A parameter in the dtype and on the device of ``like`` (a no-op when they match)."""
    return t.to(device=like.device, dtype=like.dtype)


def one_hot_columns(op, index: Tensor, like: Tensor) -> Tensor:
    """Columns ``W e_k`` of any op for flat input units ``index`` (B, K) → (B, K, *out_shape), by ``op.linear``."""
    batch, k = index.shape
    eye = like.new_zeros(batch * k, _numel(op.in_shape)).scatter_(1, index.reshape(-1, 1).to(like.device), 1.0)
    return op.linear(eye.view(batch * k, *op.in_shape)).reshape(batch, k, *op.out_shape)


def channel_view(t: Tensor, in_shape: Shape) -> Tensor:
    """A per-channel vector (C,) shaped to broadcast over (N, C, *rest): (C, 1, …, 1)."""
    return t.reshape(-1, *([1] * (len(in_shape) - 1)))


# -- elementwise maps -----------------------------------------------------------


class _Diagonal:
    """The shared behaviour of diagonal maps ``x ↦ x ⊙ s + t`` (``x ⊘ s + t`` when ``divide``).

    Subclasses give :meth:`constants`: ``scale`` and ``shift`` (either may be
    None), each broadcastable to ``in_shape``, in the dtype that defines the
    verified network; they are cast exactly to the working dtype.
    """

    in_shape: Shape
    divide: bool

    def constants(self) -> tuple[Tensor | None, Tensor | None]:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def out_shape(self) -> Shape:
        return self.in_shape

    def _apply(self, x: Tensor, scale: Tensor | None, absolute: bool = False) -> Tensor:
        if scale is None:
            return x
        s = _cast(scale, x)
        if absolute:
            s = s.abs()
        return x / s if self.divide else x * s

    def linear(self, x: Tensor) -> Tensor:
        return self._apply(x, self.constants()[0])

    def forward(self, x: Tensor) -> Tensor:
        scale, shift = self.constants()
        y = self._apply(x, scale)
        return y if shift is None else y + _cast(shift, y)

    def transpose(self, v: Tensor) -> Tensor:
        """A diagonal matrix is its own transpose."""
        return self.linear(v)

    def abs_linear(self, r: Tensor) -> Tensor:
        return self._apply(r, self.constants()[0], absolute=True)

    def abs_bias(self, like: Tensor) -> Tensor | None:
        shift = self.constants()[1]
        return None if shift is None else _cast(shift, like).abs()

    fan = 1

    def _diagonal64(self) -> tuple[np.ndarray, np.ndarray]:
        scale, shift = self.constants()
        n = _numel(self.in_shape)
        s = np.ones(n) if scale is None else np.broadcast_to(scale.detach().cpu().double().numpy(), self.in_shape).ravel()
        t = np.zeros(n) if shift is None else np.broadcast_to(shift.detach().cpu().double().numpy(), self.in_shape).ravel()
        return (1.0 / s if self.divide else s), t

    def sparse(self) -> tuple[sp.csr_matrix, np.ndarray]:
        """``diag(s)`` (``diag(1/s)`` in float64 for a division) and the shift, flattened in C order."""
        d, t = self._diagonal64()
        return sp.diags(d, format="csr"), t.copy()

    def pattern(self) -> sp.csr_matrix:
        return sp.identity(_numel(self.in_shape), format="csr")

    def unit_columns(self, index: Tensor, like: Tensor) -> Tensor:
        return one_hot_columns(self, index, like)


def _check_broadcast(name: str, t: Tensor | None, in_shape: Shape) -> None:
    if t is None:
        return
    try:
        shape = torch.broadcast_shapes(tuple(t.shape), in_shape)
    except RuntimeError:
        shape = None
    if shape != tuple(in_shape):
        raise ValueError(f"{name} of shape {tuple(t.shape)} does not broadcast to the per-sample shape {in_shape}")


@dataclass(frozen=True, eq=False)
class Elementwise(_Diagonal):
    """``x ↦ x ⊙ scale + shift`` (``x ⊘ scale + shift`` with ``divide``): input normalisation, ONNX Add/Sub/Mul/Div.

    ``scale`` and ``shift`` broadcast against ``in_shape`` like numpy arrays
    (per channel: (C, 1, 1)); either may be None. The verified network
    multiplies (or divides) by ``scale`` and adds ``shift`` exactly as stored.
    """

    scale: Tensor | None
    shift: Tensor | None
    in_shape: Shape
    divide: bool = False

    def __post_init__(self) -> None:
        _check_broadcast("scale", self.scale, self.in_shape)
        _check_broadcast("shift", self.shift, self.in_shape)
        if self.divide and self.scale is None:
            raise ValueError("an elementwise division needs a divisor (scale)")
        if self.divide and bool((self.scale == 0).any()):
            raise ValueError("division by a constant containing zeros")

    def constants(self) -> tuple[Tensor | None, Tensor | None]:
        return self.scale, self.shift

    def parameters(self) -> tuple[Tensor, ...]:
        return tuple(t for t in (self.scale, self.shift) if t is not None)


@dataclass(frozen=True, eq=False)
class BatchNorm(_Diagonal):
    """Batch normalisation with fixed statistics (eval mode) as ``x ↦ x ⊙ s + t`` per channel.

    The verified network uses the constants (per channel, ``dtype`` being the
    parameters' dtype, ``fl`` rounding to nearest)::

        s = fl_dtype( γ / √(var + eps) )          computed in float64
        t = fl_dtype( β − mean · s )              computed in float64 from the rounded s

    i.e. ``s (x − mean) + β`` up to the one rounding of t. They are computed
    afresh from the referenced tensors at every use (a handful of numbers), so
    the op follows training updates of γ and β and is differentiable in them,
    and always in ``dtype`` whatever the working dtype: the float32 and the
    float64 evaluations describe one network.
    """

    weight: Tensor | None  # γ (C,)
    bias: Tensor | None  # β (C,)
    running_mean: Tensor
    running_var: Tensor
    eps: float
    in_shape: Shape
    dtype: torch.dtype
    divide: bool = False

    def __post_init__(self) -> None:
        channels = self.in_shape[0]
        for name in ("weight", "bias", "running_mean", "running_var"):
            t = getattr(self, name)
            if t is not None and tuple(t.shape) != (channels,):
                raise ValueError(f"batch norm {name} of shape {tuple(t.shape)} does not match {channels} channels")

    def constants(self) -> tuple[Tensor, Tensor]:
        var = self.running_var.detach().double()
        gamma = self.weight.double() if self.weight is not None else torch.ones_like(var)
        scale = (gamma / torch.sqrt(var + self.eps)).to(self.dtype)
        beta = self.bias.double() if self.bias is not None else torch.zeros_like(var)
        shift = (beta - self.running_mean.detach().double() * scale.double()).to(self.dtype)
        return channel_view(scale, self.in_shape), channel_view(shift, self.in_shape)

    def parameters(self) -> tuple[Tensor, ...]:
        return tuple(t for t in (self.weight, self.bias, self.running_mean, self.running_var) if t is not None)


# -- average pooling --------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class AvgPool:
    """2-D average pooling per channel: ``y = (Σ_window x) ⊘ d`` with zero padding, floor output size.

    ``d`` per output position: ``kh·kw`` (torch's ``count_include_pad=True``),
    the number of window entries inside the input (``False``), or
    ``divisor_override``. The sum is exact in the verified network, then one
    true division.
    """

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    in_shape: Shape  # (c, h, w)
    count_include_pad: bool = True
    divisor_override: int | None = None

    def __post_init__(self) -> None:
        if len(self.in_shape) != 3:
            raise ValueError(f"average pooling expects a (channels, height, width) input, got {self.in_shape}")
        if min(*self.kernel, *self.stride) <= 0 or min(self.padding) < 0:
            raise ValueError(f"kernel {self.kernel} and stride {self.stride} must be positive, padding {self.padding} ≥ 0")
        if any(2 * p > k for p, k in zip(self.padding, self.kernel)):
            raise ValueError(f"padding {self.padding} must be at most half the kernel {self.kernel}")
        if min(self.out_shape[1:]) <= 0:
            raise ValueError(f"a {self.kernel} pooling window does not fit the input {self.in_shape}")

    @property
    def out_shape(self) -> Shape:
        c, h, w = self.in_shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.padding
        return (c, (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1)

    @cached_property
    def _divisors(self) -> np.ndarray:
        """The divisor of every output position, (oh, ow) (integers, held as float64)."""
        _, oh, ow = self.out_shape
        if self.divisor_override is not None:
            return np.full((oh, ow), float(self.divisor_override))
        if self.count_include_pad:
            return np.full((oh, ow), float(self.kernel[0] * self.kernel[1]))
        counts = []
        for size, out, k, s, p in zip(self.in_shape[1:], (oh, ow), self.kernel, self.stride, self.padding):
            start = np.arange(out) * s - p
            counts.append(np.minimum(start + k, size) - np.maximum(start, 0))
        return np.outer(counts[0], counts[1]).astype(np.float64)

    def _divisor(self, like: Tensor) -> Tensor:
        return torch.from_numpy(self._divisors).to(device=like.device, dtype=like.dtype)

    def _window_sums(self, x: Tensor) -> Tensor:
        # divisor_override=1: torch divides each window sum by 1, which is exact.
        return F.avg_pool2d(x, self.kernel, self.stride, self.padding, ceil_mode=False,
                            count_include_pad=True, divisor_override=1)

    def forward(self, x: Tensor) -> Tensor:
        return self._window_sums(x) / self._divisor(x)

    linear = forward
    abs_linear = forward  # every weight is positive

    def abs_bias(self, like: Tensor) -> None:
        return None

    def transpose(self, v: Tensor) -> Tensor:
        """``Wᵀ v``: each window's share ``v ⊘ d`` summed back onto the inputs it covers."""
        c, h, w = self.in_shape
        _, oh, ow = self.out_shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.padding
        u = (v / self._divisor(v)).reshape(-1, 1, oh, ow)
        ones = v.new_ones(1, 1, kh, kw)
        extra = (h - ((oh - 1) * sh - 2 * ph + kh), w - ((ow - 1) * sw - 2 * pw + kw))
        return F.conv_transpose2d(u, ones, None, self.stride, self.padding, output_padding=extra).view(v.shape[0], c, h, w)

    @property
    def fan(self) -> int:
        """Terms summed for one entry, forwards (a window) or transposed (the windows covering a pixel)."""
        (kh, kw), (sh, sw) = self.kernel, self.stride
        return max(kh * kw, (-(-kh // sh)) * (-(-kw // sw)))

    @cached_property
    def _triplets(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row, column, flat output position) of every structural nonzero of the (n_out, n_in) matrix."""
        c, h, w = self.in_shape
        _, oh, ow = self.out_shape
        ch, ki, kj, yo, xo = np.meshgrid(np.arange(c), np.arange(self.kernel[0]), np.arange(self.kernel[1]),
                                         np.arange(oh), np.arange(ow), indexing="ij")
        yi = yo * self.stride[0] - self.padding[0] + ki
        xi = xo * self.stride[1] - self.padding[1] + kj
        inside = (yi >= 0) & (yi < h) & (xi >= 0) & (xi < w)
        rows = ((ch * oh + yo) * ow + xo)[inside]
        cols = ((ch * h + yi) * w + xi)[inside]
        return rows, cols, (yo * ow + xo)[inside]

    def _matrix(self, values: np.ndarray) -> sp.csr_matrix:
        rows, cols, _ = self._triplets
        return sp.csr_matrix((values, (rows, cols)), shape=(_numel(self.out_shape), _numel(self.in_shape)))

    def sparse(self) -> tuple[sp.csr_matrix, np.ndarray]:
        """Entries ``1/d`` (the double nearest it) on each window, no bias."""
        return self._matrix(1.0 / self._divisors.ravel()[self._triplets[2]]), np.zeros(_numel(self.out_shape))

    def pattern(self) -> sp.csr_matrix:
        return self._matrix(np.ones(self._triplets[0].size))

    def unit_columns(self, index: Tensor, like: Tensor) -> Tensor:
        return one_hot_columns(self, index, like)

    def parameters(self) -> tuple[Tensor, ...]:
        return ()


# -- permutations ---------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Permute:
    """A permutation of the per-sample dimensions (ONNX Transpose): ``y = x.permute(0, *(p + 1 for p in perm))``."""

    perm: tuple[int, ...]
    in_shape: Shape

    def __post_init__(self) -> None:
        if sorted(self.perm) != list(range(len(self.in_shape))):
            raise ValueError(f"{self.perm} is not a permutation of the {len(self.in_shape)} per-sample dimensions")

    @property
    def out_shape(self) -> Shape:
        return tuple(self.in_shape[p] for p in self.perm)

    def forward(self, x: Tensor) -> Tensor:
        return x.permute(0, *(p + 1 for p in self.perm)).contiguous()

    linear = forward
    abs_linear = forward

    def abs_bias(self, like: Tensor) -> None:
        return None

    fan = 1

    def transpose(self, v: Tensor) -> Tensor:
        inverse = np.argsort(self.perm)
        return v.permute(0, *(int(p) + 1 for p in inverse)).contiguous()

    def sparse(self) -> tuple[sp.csr_matrix, np.ndarray]:
        n = _numel(self.in_shape)
        source = np.arange(n).reshape(self.in_shape).transpose(self.perm).ravel()
        return sp.csr_matrix((np.ones(n), (np.arange(n), source)), shape=(n, n)), np.zeros(n)

    def pattern(self) -> sp.csr_matrix:
        return self.sparse()[0]

    def unit_columns(self, index: Tensor, like: Tensor) -> Tensor:
        return one_hot_columns(self, index, like)

    def parameters(self) -> tuple[Tensor, ...]:
        return ()


# -- torch modules ------------------------------------------------------------------


class Normalize(nn.Module):
    """Per-channel input normalisation ``(x − mean) / std`` as a torch module.

    ``mean`` and ``std`` are sequences (one value per channel of an image
    input, held as (C, 1, 1)) or tensors broadcastable to the per-sample input
    shape (for a flat input of n features: shape (n,) given as a tensor of
    shape (1, n)). ``Network.from_torch`` turns
    it into two exact ops, a shift by ``−mean`` and a true division by ``std``
    (no ``1/std`` is rounded).
    """

    def __init__(self, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor, dtype: torch.dtype = torch.float32):
        super().__init__()
        mean_t, std_t = (torch.as_tensor(v, dtype=dtype) for v in (mean, std))
        # A 1-D sequence holds one value per channel of an image: (C, 1, 1).
        mean_t, std_t = (t.view(-1, 1, 1) if t.ndim == 1 else t for t in (mean_t, std_t))
        if bool((std_t == 0).any()) or not bool(torch.isfinite(std_t).all() and torch.isfinite(mean_t).all()):
            raise ValueError("Normalize needs finite means and finite, nonzero standard deviations")
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def _trim(t: Tensor, in_shape: Shape, name: str, pos: int, m: nn.Module) -> Tensor:
    """A module's constant as torch broadcasts it against (N, *in_shape): a leading batch dimension of 1 dropped."""
    while t.ndim > len(in_shape) and t.shape[0] == 1:
        t = t[0]
    try:
        _check_broadcast(name, t, in_shape)
    except ValueError as e:
        raise ValueError(f"module {pos} ({m}): {e}") from None
    return t


def convert_normalize(pos: int, m: Normalize, shape: Shape) -> list:
    """A Normalize module as ``x + (−mean)`` then ``x ⊘ std`` (the negation is exact)."""
    mean, std = _trim(m.mean, shape, "mean", pos, m), _trim(m.std, shape, "std", pos, m)
    return [Elementwise(None, -mean, shape), Elementwise(std, None, shape, divide=True)]


def convert_batchnorm(pos: int, m: nn.modules.batchnorm._BatchNorm, shape: Shape) -> BatchNorm:
    """An eval-mode ``BatchNorm1d``/``BatchNorm2d`` (its running statistics) as a :class:`BatchNorm` op."""
    if m.running_mean is None or m.running_var is None:
        raise ValueError(
            f"module {pos} ({m}) keeps no running statistics (track_running_stats=False), so its output depends on "
            "the batch; lpverify verifies batch norm with fixed statistics only"
        )
    rank = {nn.BatchNorm1d: (1, 2), nn.BatchNorm2d: (3,)}.get(type(m))
    if rank is None or len(shape) not in rank or shape[0] != m.num_features:
        expected = "(C,) or (C, L)" if isinstance(m, nn.BatchNorm1d) else "(C, H, W)"
        raise ValueError(f"module {pos} ({m}) expects input {expected} with C={m.num_features} but receives {shape}")
    if not bool((m.running_var.detach().double() + float(m.eps) > 0).all()):
        raise ValueError(f"module {pos} ({m}) has running_var + eps ≤ 0 in some channel; its scale is undefined")
    dtype = m.weight.dtype if m.weight is not None else m.running_var.dtype
    return BatchNorm(m.weight, m.bias, m.running_mean, m.running_var, float(m.eps), shape, dtype)


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def convert_avgpool(pos: int, m: nn.AvgPool2d, shape: Shape) -> AvgPool:
    """An ``nn.AvgPool2d`` (floor mode) as an :class:`AvgPool` op."""
    if m.ceil_mode:
        raise ValueError(f"module {pos} ({m}): ceil_mode=True is not supported; use ceil_mode=False")
    if len(shape) != 3:
        raise ValueError(f"module {pos} ({m}) expects input (channels, height, width) but receives {shape}")
    kernel = _pair(m.kernel_size)
    stride = kernel if m.stride is None or m.stride == [] else _pair(m.stride)
    try:
        return AvgPool(kernel, stride, _pair(m.padding), shape, bool(m.count_include_pad), m.divisor_override)
    except ValueError as e:
        raise ValueError(f"module {pos} ({m}): {e}") from None


def convert_adaptive_avgpool(pos: int, m: nn.AdaptiveAvgPool2d, shape: Shape) -> AvgPool:
    """An ``nn.AdaptiveAvgPool2d`` whose output size divides the input size: a fixed-window pooling."""
    if len(shape) != 3:
        raise ValueError(f"module {pos} ({m}) expects input (channels, height, width) but receives {shape}")
    size = m.output_size if isinstance(m.output_size, (tuple, list)) else (m.output_size, m.output_size)
    out = tuple(shape[1 + i] if s is None else int(s) for i, s in enumerate(size))
    if any(o <= 0 or n % o for n, o in zip(shape[1:], out)):
        raise ValueError(
            f"module {pos} ({m}): output size {out} does not divide the input size {shape[1:]}; "
            "only equal, non-overlapping windows (e.g. output_size=1) are supported"
        )
    kernel = (shape[1] // out[0], shape[2] // out[1])
    return AvgPool(kernel, kernel, (0, 0), shape)


def reshaped_shape(pos: int, m: nn.Flatten | nn.Unflatten, shape: Shape) -> Shape:
    """The per-sample shape after a Flatten or Unflatten (dimension 0 of the module is the batch)."""
    rank = len(shape) + 1
    if isinstance(m, nn.Flatten):
        start, end = (d + rank if d < 0 else d for d in (m.start_dim, m.end_dim))
        if not 1 <= start <= end < rank:
            raise ValueError(f"module {pos} ({m}) cannot flatten dimensions {m.start_dim}..{m.end_dim} "
                             f"of a (batch, {', '.join(map(str, shape))}) input; the batch dimension stays")
        return (*shape[: start - 1], _numel(shape[start - 1 : end]), *shape[end:])
    dim = m.dim + rank if isinstance(m.dim, int) and m.dim < 0 else m.dim
    sizes = tuple(int(s) for s in m.unflattened_size)
    if not isinstance(dim, int) or not 1 <= dim < rank or _numel(sizes) != shape[dim - 1]:
        raise ValueError(f"module {pos} ({m}) cannot unflatten dimension {m.dim} of a (batch, "
                         f"{', '.join(map(str, shape))}) input into {sizes}")
    return (*shape[: dim - 1], *sizes, *shape[dim:])


__all__ = [
    "AvgPool",
    "BatchNorm",
    "Elementwise",
    "Normalize",
    "Permute",
    "channel_view",
    "convert_adaptive_avgpool",
    "convert_avgpool",
    "convert_batchnorm",
    "convert_normalize",
    "one_hot_columns",
    "reshaped_shape",
]
