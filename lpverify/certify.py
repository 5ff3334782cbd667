"""Certificates and the robust loss from the dual network (Theorem 2, Corollaries 1–2, eq. 17)."""

from __future__ import annotations

import math
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attacks import predict
from .bounds import prepare
from .columns import column_entries
from .dual import dual_bounds_and_objective, dual_objective, forward_objective
from .network import Network
from .rigorous import working_dtype
from .sets import LinfBall
from .specs import margin_objectives

Limit = float | Tensor | None
_Chunk = TypeVar("_Chunk")
_Result = TypeVar("_Result")


def as_network(model: nn.Module | Network, input_shape: tuple[int, ...]) -> Network:
    """The ``Network`` of a torch model, built once per model and input shape (cached).

    The Network references the model's parameters, so it follows training updates.
    """
    if isinstance(model, Network):
        return model
    signature = (tuple(input_shape), tuple(id(m) for m in model.modules()), tuple(id(p) for p in model.parameters()))
    cached = _NETWORKS.get(model)
    if cached is None or cached[0] != signature:
        cached = (signature, Network.from_torch(model, input_shape=input_shape))
        _NETWORKS[model] = cached
    return cached[1]


_NETWORKS: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, Network]]" = weakref.WeakKeyDictionary()


def _slice_limit(limit: Limit, sl: slice | Tensor, x: Tensor) -> Limit:
    """A per-example clamp (shaped like x) follows the batch chunk; a scalar or shared one is kept whole."""
    if isinstance(limit, Tensor) and limit.shape == x.shape:
        return limit[sl]
    return limit


# Examples per forward pass when only predictions are needed.
PREDICT_BATCH = 256
# Working memory per chunk in flight (one per thread, :func:`map_chunks`) the automatic chunks
# aim at, and the share of a hidden layer's units assumed to cross zero where it is not known.
BATCH_MEMORY_BYTES = 128 << 20
CROSSING_SHARE = 0.1


def example_elements(net: Network, first_crossing: Tensor | float) -> Tensor:
    """Tensor entries Algorithm 1 holds per example, given its first hidden layer's crossing count.

    The input columns on their receptive fields
    (:func:`lpverify.columns.column_entries`), one dense column per crossing
    unit of the first hidden layer in the space of the second (padded to the
    chunk's maximum), and :data:`CROSSING_SHARE` of each deeper layer's
    units pushed into the next.
    """
    units = [b.out_features for b in net.blocks]
    fixed = sum(column_entries(net)) + sum(CROSSING_SHARE * n * n_next for n, n_next in zip(units[1:], units[2:]))
    per_unit = units[1] if len(units) > 1 else 0
    return fixed + torch.as_tensor(first_crossing, dtype=torch.float64) * per_unit


def _elements_budget(dtype: torch.dtype) -> float:
    """:data:`BATCH_MEMORY_BYTES` in tensor entries, with about three temporaries of each."""
    return BATCH_MEMORY_BYTES / (3 * torch.finfo(dtype).bits // 8)


def auto_batch_size(net: Network, dtype: torch.dtype = torch.float32) -> int:
    """Examples per chunk when crossing counts are not known: :data:`CROSSING_SHARE` of the first
    hidden layer crossing (:func:`example_elements`) within :data:`BATCH_MEMORY_BYTES`.

    :func:`certify` itself sizes each chunk from its examples' own counts
    (:func:`plan_chunks`). Never changes a certificate: every example's
    bounds are computed on their own.
    """
    per_example = float(example_elements(net, CROSSING_SHARE * net.blocks[0].out_features))
    return int(max(1, min(1024, _elements_budget(dtype) // max(1.0, per_example))))


# A margin whose rigorous bound from float32 intermediate bounds (after the float64 walk) lies
# within this fraction of the margins' scale below zero is recomputed with float64 intermediate
# bounds. What float32 intermediate bounds cost a walked margin is ~1e-5 of that scale (at most
# 6e-5 on the paper's Fashion-MNIST model, where a 2e-2 threshold redid 12% of the examples in
# float64 and none of them changed); the threshold keeps a factor ~15 above it. It decides only
# how much work is redone, never a certificate.
ESCALATE_RELATIVE = 1e-3


def margin_bounds(net: Network, ball: LinfBall, y: Tensor, *, rigorous: bool = True) -> Tensor:
    """Lower bounds J(e_y − e_j) on ``f_y − f_j`` over the ball, (batch, n_classes).

    Column y is 0 (just below 0 when rigorous: the zero objective's allowance).

    Algorithm 1's bounds and, in the same forward pass, Theorem 1 for the
    margins (:func:`lpverify.dual.dual_bounds_and_objective`). ``rigorous``
    (the default) makes every bound hold for the real-valued network
    (MATH.md §11). In float32 the margins' rounding allowance is ~2 % of
    their size, so examples it leaves uncertified get up to two more tries,
    each sound, the best bound kept:

    1. unless even the margins plus twice their allowance are clearly
       negative (:data:`ESCALATE_RELATIVE`): the float64 backward
       walk (:func:`dual_objective`) over the same float32 bounds, whose
       allowance is ~1e-13;
    2. if still undecided (the worst margin within :data:`ESCALATE_RELATIVE`
       of zero), everything again in float64.

    The result is then float64. ``False`` is the plain, differentiable
    evaluation of training.
    """
    c = margin_objectives(y, net.n_outputs).to(ball.center)
    if not rigorous:
        return dual_bounds_and_objective(net, ball, c, rigorous=False)[1]
    J, undecided = _working_margins(net, ball, y, c)
    if undecided.any():
        index = torch.nonzero(undecided).view(-1)
        J[index] = _float64_margins(net, ball.select(index), c[index], J[index])
    return J


def _working_margins(net: Network, ball: LinfBall, y: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """Rigorous margins in the working dtype, with the float64 walk for the uncertified (tries 0–1 of
    :func:`margin_bounds`), and which examples are still undecided; float64.

    An example is walked only if it could gain. The value as computed is
    ``J + allowance`` and lies within ``allowance`` of the exact value over
    the same bounds, so the walk can reach at most ``J + 2·allowance``; an
    example whose worst margin stays clearly negative even there is left
    as it is. A NaN (an overflow) is walked too.
    """
    result = forward_objective(net, ball, c)
    bounds, J = result.bounds, result.J.double()  # exact
    if prepare(net, ball).dtype != torch.float32:
        return J, torch.zeros(len(y), dtype=torch.bool, device=J.device)
    retry = torch.nonzero(~(_worst_margin(J, y) > 0) & _within_reach(J + 2 * result.allowance.double(), y)).view(-1)
    if len(retry):
        walked = dual_objective(net, ball.select(retry), c[retry], bounds.select(retry))
        J[retry] = torch.fmax(J[retry], walked)  # both are lower bounds; fmax skips a NaN
    return J, ~(_worst_margin(J, y) > 0) & _within_reach(J, y)


def _within_reach(J: Tensor, y: Tensor) -> Tensor:
    """Whether the worst margin is not below −:data:`ESCALATE_RELATIVE` of the margins' scale
    (NaN included), (batch,) bool: where more precise arithmetic could still certify."""
    scale = J.detach().abs().nan_to_num(0.0).amax(1).clamp(min=1.0)
    return ~(_worst_margin(J, y) < -ESCALATE_RELATIVE * scale)


def _float64_margins(net: Network, ball: LinfBall, c: Tensor, J: Tensor) -> Tensor:
    """Try 2 of :func:`margin_bounds`: everything in float64, the better of it and ``J`` kept."""
    return torch.fmax(J, dual_bounds_and_objective(net, ball.to(torch.float64), c.double())[1])


def _worst_margin(J: Tensor, y: Tensor) -> Tensor:
    """min_{j ≠ y} J_j per example (+inf with a single class); NaN if any of them is NaN."""
    others = torch.ones_like(J, dtype=torch.bool).scatter(1, y.view(-1, 1).to(J.device), False)
    masked = torch.where(others, J, torch.full_like(J, torch.inf))
    worst = masked.amin(1)
    return torch.where(torch.isnan(masked).any(1), torch.full_like(worst, torch.nan), worst)


def _certified(J: Tensor, y: Tensor) -> Tensor:
    """Certified (Corollary 1): every margin bound j ≠ y is > 0, strictly; a NaN never certifies."""
    return _worst_margin(J, y) > 0


def robust_loss(
    model: nn.Module | Network,
    x: Tensor,
    y: Tensor,
    eps: float | Tensor,
    *,
    lower: Limit = None,
    upper: Limit = None,
) -> tuple[Tensor, Tensor]:
    """The robust cross-entropy of Theorem 2 and the robust error of the batch.

    ``L(−J(C), y)`` bounds the worst-case loss over the ball (eq. 14): the
    margins' lower bounds J act as logits. Returns the mean robust loss
    (differentiable in the model's parameters) and the fraction of examples
    whose plain margin bounds are not all > 0, both scalars. This is
    training's fast path, not a certificate: use :func:`certify` for that.
    """
    if y.shape != x.shape[:1]:
        raise ValueError(f"labels of shape {tuple(y.shape)} do not match the batch of {x.shape[0]} inputs")
    net = as_network(model, tuple(x.shape[1:]))
    J = margin_bounds(net, LinfBall(x, eps, lower, upper), y, rigorous=False)
    loss = F.cross_entropy(-J, y)
    err = (~_certified(J.detach(), y)).float().mean()
    return loss, err


def correctly_classified(net: Network, x: Tensor, y: Tensor) -> Tensor:
    """Whether f_y(x) exceeds every other logit, strictly, in the model's own dtype, (batch,) bool.

    A tie is not a correct prediction, nor is a NaN or infinite logit (an overflow).
    """
    with torch.no_grad():
        logits = net(x)
    finite = torch.isfinite(logits).all(1)
    logits = torch.where(torch.isfinite(logits), logits, torch.zeros_like(logits))
    true = logits.gather(1, y.view(-1, 1).to(logits.device))
    others = torch.ones_like(logits, dtype=torch.bool).scatter(1, y.view(-1, 1).to(logits.device), False)
    return finite & (torch.where(others, true - logits, torch.full_like(logits, torch.inf)) > 0).all(1)


def certify(
    net: Network | nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float | Tensor,
    *,
    lower: Limit = None,
    upper: Limit = None,
    batch_size: int | None = None,
    rigorous: bool = True,
) -> Tensor:
    """Whether each example is certified robust at ε (Corollary 1), (batch,) bool.

    True only if the prediction at x is y (strictly, in the model's dtype)
    and every margin bound j ≠ y is > 0 strictly, after rounding (MATH.md §8,
    §11); a NaN bound is never a certificate. ``lower``/``upper`` clamp the
    input set (e.g. 0 and 1 for pixels). ``eps`` is a scalar or one radius
    per example. Examples are processed in chunks to bound memory, of
    ``batch_size`` or by default sized from their crossing counts
    (:func:`plan_chunks`), formed from examples with similar numbers of
    crossing units and spread
    over torch's CPU threads (:func:`map_chunks`); the few that float32
    leaves undecided are redone in float64 at the end, together. The
    robust error of Corollary 1 is the fraction of False.
    """
    if y.shape != x.shape[:1]:
        raise ValueError(f"labels of shape {tuple(y.shape)} do not match the batch of {x.shape[0]} inputs")
    net = as_network(net, tuple(x.shape[1:]))
    eps_t = eps if isinstance(eps, Tensor) else torch.as_tensor(eps, dtype=torch.float64)  # no float32 rounding
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")

    def ball_of(idx: Tensor) -> LinfBall:
        eps_idx = eps_t if eps_t.ndim == 0 else eps_t[idx]
        return LinfBall(x[idx], eps_idx, _slice_limit(lower, idx, x), _slice_limit(upper, idx, x))

    def first_pass(idx: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """A chunk's certificates, and which of its examples float32 left undecided with their J."""
        with torch.no_grad():
            ball, labels = ball_of(idx), y[idx].to(x.device)
            c = margin_objectives(labels, net.n_outputs).to(ball.center)
            if rigorous:
                J, undecided = _working_margins(net, ball, labels, c)
            else:
                J = dual_bounds_and_objective(net, ball, c, rigorous=False)[1]
                undecided = torch.zeros_like(labels, dtype=torch.bool)
            correct = correctly_classified(net, x[idx], labels)
            retry = torch.nonzero(undecided & correct).view(-1)
            return _certified(J, labels) & correct, idx[retry], J[retry]

    def float64_pass(chunk: tuple[Tensor, Tensor]) -> Tensor:
        idx, J = chunk
        with torch.no_grad():
            labels = y[idx].to(x.device)
            ball = ball_of(idx)
            c = margin_objectives(labels, net.n_outputs).to(ball.center)
            return _certified(_float64_margins(net, ball, c, J), labels)

    ok = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    if x.shape[0] == 0:
        return ok
    chunks = plan_chunks(net, x, eps_t, lower, upper, batch_size)
    workers = chunk_workers(x)
    results = map_chunks(first_pass, chunks, workers)
    for idx, (flags, _, _) in zip(chunks, results):
        ok[idx] = flags
    where, J_all = torch.cat([r[1] for r in results]), torch.cat([r[2] for r in results])
    if len(where):  # float64 last, for all the examples float32 left undecided together
        retry_size = batch_size or auto_batch_size(net, torch.float64)
        retries = list(zip(where.split(retry_size), J_all.split(retry_size)))
        for (idx, _), flags in zip(retries, map_chunks(float64_pass, retries, workers)):
            ok[idx] = flags
    return ok


def chunk_workers(x: Tensor) -> int:
    """Threads :func:`map_chunks` runs chunks on: torch's intra-op thread count on a CPU, else 1."""
    return torch.get_num_threads() if x.device.type == "cpu" else 1


def map_chunks(fn: Callable[[_Chunk], _Result], chunks: list[_Chunk], workers: int) -> list[_Result]:
    """``[fn(c) for c in chunks]``, with the chunks spread over ``workers`` threads, in order.

    Each thread runs its chunk's torch operations single-threaded for the
    duration (the process-wide intra-op thread count is 1 until the call
    returns, then restored). Algorithm 1 on one chunk is thousands of small
    operations, which share out over threads better whole than each one
    over all threads (about 1.2× on 2 cores for the paper's MNIST model).
    The first chunk runs alone, so that the per-network caches
    (:mod:`lpverify.columns`) are built once. Results never depend on the
    threads: every example's bounds are computed on their own.
    """
    if workers <= 1 or len(chunks) <= 2:
        return [fn(chunk) for chunk in chunks]
    first = fn(chunks[0])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return [first, *pool.map(fn, chunks[1:])]
    finally:
        torch.set_num_threads(threads)


def first_crossing_counts(net: Network, x: Tensor, eps: Tensor, lower: Limit, upper: Limit) -> Tensor:
    """How many first-hidden-layer units cross zero for each example, (batch,) int.

    The first layer's bounds are its interval bounds, so this costs one
    layer; deeper layers' counts follow it closely.
    """
    first, counts = net.blocks[0], []
    with torch.no_grad():
        for start in range(0, x.shape[0], PREDICT_BATCH):
            sl = slice(start, start + PREDICT_BATCH)
            ball = prepare(net, LinfBall(x[sl], eps if eps.ndim == 0 else eps[sl], _slice_limit(lower, sl, x),
                                         _slice_limit(upper, sl, x)))
            mid, spread = first(ball.mid), first.abs_linear(ball.rad)
            counts.append(((mid - spread < 0) & (mid + spread > 0)).flatten(1).sum(1))
    return torch.cat(counts) if counts else torch.zeros(0, dtype=torch.long, device=x.device)


def plan_chunks(
    net: Network, x: Tensor, eps: Tensor, lower: Limit = None, upper: Limit = None, batch_size: int | None = None
) -> list[Tensor]:
    """The chunks :func:`certify` processes: lists of example indices covering the batch once.

    Examples are ordered by their first layer's crossing count
    (:func:`first_crossing_counts`). Algorithm 1 pads each example's
    crossing units to its chunk's maximum, so chunks of similar counts
    carry little padding (on the paper's Fashion-MNIST model a chunk's
    maximum in test order is 2.6× its mean). Chunks hold ``batch_size``
    examples, or by default as many as fit :data:`BATCH_MEMORY_BYTES` at
    their largest count (:func:`example_elements`). Never changes a
    certificate: each example's bounds are computed on their own.
    """
    if not isinstance(eps, Tensor):
        eps = torch.as_tensor(eps, dtype=torch.float64)
    counts = first_crossing_counts(net, x, eps, lower, upper)
    order = torch.argsort(counts, stable=True)
    if batch_size is not None:
        return list(order.split(batch_size))
    need = example_elements(net, counts[order].cpu()).tolist()  # nondecreasing along the order
    dtype = working_dtype(x.dtype, *{p.dtype for p in net.parameters()})  # what Algorithm 1 will hold
    budget, sizes, start = _elements_budget(dtype), [], 0
    while start < len(need):
        end = start + 1
        while end < len(need) and end - start < 1024 and (end + 1 - start) * need[end] <= budget:
            end += 1
        sizes.append(end - start)
        start = end
    return list(order.split(sizes))


def detect(
    net: Network | nn.Module,
    x: Tensor,
    eps: float | Tensor,
    *,
    lower: Limit = None,
    upper: Limit = None,
    batch_size: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Detection certificates (Corollary 2): the predicted class and whether it is certified.

    A tie for the top logit at x certifies nothing (:func:`certify` needs a strict prediction).

    If certified, no input within ε of x is classified differently, so x cannot
    be an adversarial example of a correctly classified point within ε.
    Returns (predicted class (batch,), certified (batch,) bool).
    """
    net = as_network(net, tuple(x.shape[1:]))
    pred = predict(net, x, batch_size or PREDICT_BATCH)
    return pred, certify(net, x, pred, eps, lower=lower, upper=upper, batch_size=batch_size)


@dataclass(frozen=True)
class CertifiedRadius:
    """The largest certified ε per example (eq. 17), bracketed.

    ``lower`` is certified (0 where even ε = 0 is not, i.e. a misclassified
    example); ``upper`` is not certified (inf where ``eps_max`` still is);
    ``upper − lower ≤ tol · upper`` on return. ``iterations`` counts the
    certificate evaluations of the whole batch.
    """

    lower: Tensor
    upper: Tensor
    iterations: int
    labels: Tensor


def certified_radius(
    net: Network | nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    tol: float = 1e-3,
    eps_start: float = 1e-3,
    eps_max: float = 1.0,
    lower: Limit = None,
    upper: Limit = None,
    batch_size: int | None = None,
) -> CertifiedRadius:
    """The largest ε with every margin bound > 0 for class y (default: the predicted class).

    The certificate is monotone in ε. The bracket grows geometrically from
    ``eps_start`` (doubling while certified, up to ``eps_max``), so every
    evaluation happens near the answer, where bounds are cheap; then all
    examples are bisected together to relative ``tol``: about
    log2(ε*/eps_start) + log2(1/tol) evaluations of the batch.
    """
    if not 0 < tol < 1:
        raise ValueError(f"tol must lie in (0, 1), got {tol}")
    if not 0 < eps_start <= eps_max:
        raise ValueError(f"need 0 < eps_start <= eps_max, got {eps_start} and {eps_max}")
    net = as_network(net, tuple(x.shape[1:]))
    if y is None:
        y = predict(net, x, batch_size or PREDICT_BATCH)

    def certified(eps: Tensor) -> Tensor:
        return certify(net, x, y, eps, lower=lower, upper=upper, batch_size=batch_size)

    n = x.shape[0]
    lo = torch.zeros(n, dtype=x.dtype, device=x.device)
    hi = torch.full((n,), math.inf, dtype=x.dtype, device=x.device)
    hi = torch.where(certified(lo), hi, lo)  # misclassified: no radius at all
    iterations = 1
    trial = torch.full_like(lo, eps_start)
    growing = torch.isinf(hi)
    while growing.any():  # double until the certificate fails or eps_max holds
        ok = certified(torch.where(growing, trial, lo))
        iterations += 1
        lo = torch.where(growing & ok, trial, lo)
        hi = torch.where(growing & ~ok, trial, hi)
        growing = growing & ok & (trial < eps_max)
        trial = torch.clamp(2 * trial, max=eps_max)
    while True:
        active = torch.isfinite(hi) & (hi - lo > tol * hi)
        if not active.any():
            break
        mid = torch.where(active, (lo + hi) / 2, lo)
        ok = certified(mid)
        iterations += 1
        lo = torch.where(active & ok, mid, lo)
        hi = torch.where(active & ~ok, mid, hi)
    return CertifiedRadius(lo, hi, iterations, y)


def max_certified_eps(net: Network | nn.Module, x: Tensor, y: Tensor | None = None, **options) -> Tensor:
    """The largest ε (to relative ``tol``) at which each example is certified, (batch,).

    Certified at the returned value; not certified at ``value / (1 − tol)``.
    ``options`` are those of :func:`certified_radius` (tol, eps_start,
    eps_max, lower, upper, batch_size), which also reports the bracket and
    the number of iterations.
    """
    return certified_radius(net, x, y, **options).lower
