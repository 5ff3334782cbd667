"""Complete verification by branch and bound (MATH.md §13).

The property is the one :func:`lpverify.verify.verify_property` reads: rows
``c_rᵀ f(z) + d_r`` grouped into disjuncts; disjunct k is *excluded* on a
region when some row r of k has ``c_rᵀ f(z) + d_r > 0`` there, and the
property holds when every disjunct is excluded on the whole input set.

ReLU splitting (the default): a leaf is the input set with some crossing
units split into ẑ ≥ 0 (the unit becomes I⁺ with ℓ = 0) or ẑ ≤ 0 (I⁻ with
u = 0), one more unit state of :mod:`lpverify.relu`. Its bound is Theorem 1
over the root's bounds tightened by the splits, with free slopes α on the
crossing units and split multipliers β ≥ 0 (β-CROWN): ν = ν̂ + β on a unit
split active, ν = −β on a unit split inactive, which adds β·ẑ (resp. −β·ẑ),
≥ 0 on the leaf, to the Lagrangian; β = 0 is the plain dual. α and β are
chosen by Adam in the working dtype, batched over leaves; the bound used for
any decision is the rigorous evaluation (float64, outward-rounded, valid for
ANY multipliers: :func:`lpverify.dual.dual_objective_with`) of the best
iterate's multipliers. A leaf whose bound is > 0 is closed; the others are
split on the unit of largest BaBSR score ``[ν̂_j]₊ · (−ℓ_j u_j / (u_j − ℓ_j))``
(the triangle's offset term the split removes). Leaves are bounded in
batches, lowest bound first. A leaf with no crossing unit left is a linear
piece: the LP (HiGHS) over its exact encoding closes it by its safe bound or
yields a point to check.

Input splitting (inputs of at most ``input_split_dims`` values): leaves are
boxes, halved along the widest side; each is bounded by Algorithm 1 and the
dual with optimised slopes on that box.

Verdicts: *verified* only when every leaf is closed by a rigorous bound;
*violated* only from a point that :func:`lpverify.verify.check_witness`
accepts (exact membership, model dtype and float64) for every row of one
disjunct. The falsifier (:mod:`lpverify.falsify`) runs first, and again
during the search from the leaves' candidate points (the input vertex each
leaf's dual picks).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .bounds import Bounds, interval_bounds
from .dual import dual_bounds, dual_objective_with
from .falsify import disjunct_values, falsify
from .lp import build_lp
from .network import Network
from .relu import crossing, dual_step, relu_slope
from .rigorous import to_dtype_down, to_dtype_up
from .sets import Ball, LinfBall
from .verify import Status, Verdict, check_witness


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BabOptions:
    """The knobs of :func:`bab`.

    Attributes:
        batch: leaves bounded together (each split gives two children).
        steps: Adam steps on α, β per batch of leaves.
        root_steps: Adam steps on the root's slopes.
        refine_steps: Adam steps per layer tightening the root's intermediate bounds (0: Algorithm 1's).
        refine_share: the share of the time left that the tightening may take.
        lr_alpha, lr_beta: Adam step sizes.
        max_leaves: open leaves kept at most; beyond it the search stops (unknown).
        input_split_dims: inputs of at most this many values are split instead of ReLUs.
        restarts, attack_steps: the falsifier's restarts and steps before branching.
        attack_every: rerun the falsifier from the leaves' points every this many batches.
        lp_leaves: close fully split leaves with the LP of their linear piece.
        seed: the falsifier's random seed.
    """

    batch: int = 256
    steps: int = 20
    root_steps: int = 100
    refine_steps: int = 20
    refine_share: float = 0.4
    lr_alpha: float = 0.1
    lr_beta: float = 0.05
    max_leaves: int = 100_000
    input_split_dims: int = 8
    restarts: int = 100
    attack_steps: int = 50
    attack_every: int = 10
    lp_leaves: bool = True
    seed: int = 0


@dataclass(frozen=True)
class Property:
    """Rows ``c_rᵀ f(z) + d_r`` (m, n_out), (m,) and each row's disjunct ``owner`` (m,)."""

    c: Tensor
    d: Tensor
    owner: Tensor

    @property
    def n_disjuncts(self) -> int:
        return int(self.owner.max()) + 1 if self.owner.numel() else 0

    def padded(self) -> tuple[Tensor, Tensor]:
        """Per disjunct its rows, padded by repeating its first row: (K, R, n_out), (K, R)."""
        groups = [torch.nonzero(self.owner == k).view(-1) for k in range(self.n_disjuncts)]
        width = max(len(g) for g in groups)
        index = torch.stack([torch.cat([g, g[:1].expand(width - len(g))]) for g in groups])
        return self.c[index], self.d[index]


def check_property_witness(net: Network, ball: Ball, prop: Property, z: Tensor | np.ndarray) -> tuple[bool, Verdict | None]:
    """Whether z convicts some disjunct: every row of it ≤ 0 by :func:`check_witness` (both dtypes, exact set).

    Disjuncts are tried in the order of their float64 value at z; those
    clearly positive there are not checked.
    """
    z = torch.as_tensor(np.asarray(z, dtype=np.float64))
    with torch.no_grad():
        y = net.detached(torch.float64)(z.view(1, *net.input_shape))
    values = disjunct_values(y, prop.c, prop.d, prop.owner, prop.n_disjuncts)[0]
    for k in torch.argsort(values):
        if values[k] > 1e-3:
            break
        rows = torch.nonzero(prop.owner == k).view(-1)
        found = []
        for r in rows:
            ok, point, value, model_value, _ = check_witness(net, ball, prop.c[r : r + 1], prop.d[r : r + 1], z)
            if not ok:
                break
            found.append((value, model_value, point, int(r)))
        else:
            value, model_value, point, r = max(found, key=lambda t: t[0])
            return True, Verdict(Status.VIOLATED, math.nan, 0.0, witness=point.reshape(net.input_shape),
                                 value=value, model_value=model_value, reason=f"disjunct {int(k)} (row {r}) violated")
    return False, None


def adaptive_slopes(lower: Tensor, upper: Tensor) -> Tensor:
    """CROWN's lower slopes: 1 where u ≥ −ℓ, else 0 (on crossing units; any α ∈ [0, 1] is valid)."""
    return (upper >= -lower).to(lower.dtype)


def refine_bounds(net: Network, ball: Ball, bounds: Bounds, steps: int, options: "BabOptions | None" = None,
                  deadline: float = math.inf) -> Bounds:
    """Tighter bounds on hidden layers 2.. (α-CROWN's intermediate bounds), ball of batch 1.

    Layer by layer, over the bounds refined so far: every unit is bounded by
    the dual with CROWN's adaptive slopes (one walk for ±e_j of all units),
    then the units still crossing get slopes optimised per objective (Adam,
    ``steps``); each result is the rigorous evaluation of its slopes, and a
    bound only ever tightens (intersection with the previous one).
    """
    options = options or BabOptions()
    lower, upper = list(bounds.lower), list(bounds.upper)
    for i in range(1, len(net.blocks) - 1):
        if time.perf_counter() >= deadline:
            break
        sub = net.prefix(i + 1)
        lo, up = lower[i].flatten(1)[0], upper[i].flatten(1)[0]
        for optimise in (False, True):
            units = torch.nonzero(crossing(lo, up)).view(-1) if optimise else torch.arange(lo.numel())
            if units.numel() == 0 or (optimise and steps <= 0):
                break
            k = len(units)
            eye = torch.zeros(1, 2 * k, lo.numel(), dtype=torch.float64)
            eye[0, torch.arange(k), units] = 1.0
            eye[0, torch.arange(k) + k, units] = -1.0
            sub_bounds = Bounds(tuple(lower[: i + 1]), tuple(upper[: i + 1]))
            alpha = [adaptive_slopes(l.flatten(1), u.flatten(1)).unsqueeze(1).expand(1, 2 * k, -1)
                     for l, u in sub_bounds.hidden]
            if optimise:
                splits = [torch.zeros(1, a.shape[2], dtype=torch.int8) for a in alpha]
                alpha, _ = _optimise(sub.detached(sub.dtype), ball, sub_bounds, eye.to(sub.dtype), splits, alpha, [],
                                     steps, options, deadline)
            with torch.no_grad():
                J = dual_objective_with(sub.detached(torch.float64), ball, eye, sub_bounds,
                                        split_multipliers([torch.zeros(1, a.shape[2], dtype=torch.int8) for a in alpha],
                                                          alpha, None))[0]
            new_lo = to_dtype_down(J[:k].nan_to_num(nan=-math.inf), lo.dtype)
            new_up = to_dtype_up((-J[k:]).nan_to_num(nan=math.inf), lo.dtype)
            lo, up = lo.clone(), up.clone()
            lo[units] = torch.maximum(lo[units], new_lo)
            up[units] = torch.minimum(up[units], new_up)
            lower[i], upper[i] = lo.view_as(lower[i]), up.view_as(upper[i])
    return Bounds(tuple(lower), tuple(upper))


# -- leaves of ReLU splitting ----------------------------------------------------------------


def split_bounds(root: Bounds, splits: list[Tensor]) -> Bounds:
    """The root's bounds (batch 1) under each leaf's splits (N, n_i) in {−1, 0, 1}: ℓ = 0 or u = 0 on split units."""
    n = splits[0].shape[0]
    lower, upper = [], []
    for i, (lo, up) in enumerate(zip(root.lower, root.upper)):
        lo, up = lo.expand(n, *lo.shape[1:]), up.expand(n, *up.shape[1:])
        if i < len(splits):
            s = splits[i].view(n, *lo.shape[1:])
            lo = torch.where(s > 0, lo.clamp(min=0), lo)
            up = torch.where(s < 0, up.clamp(max=0), up)
        lower.append(lo)
        upper.append(up)
    return Bounds(tuple(lower), tuple(upper))


def split_multipliers(splits: list[Tensor], alpha: list[Tensor] | None, beta: list[Tensor] | None,
                      record: dict | None = None):
    """The multipliers of a leaf (for :func:`lpverify.dual.dual_objective_with`).

    Crossing units: eq. 7 with slopes α (B, m, n_i) (None: u/(u − ℓ)); units
    split active: ν̂ + β; split inactive: −β (β (B, m, n_i) ≥ 0; None: 0).
    ``record`` receives each hidden layer's ν̂ and ν (for branching and the
    leaves' points).
    """

    def multipliers(i: int, nu_hat: Tensor, lower: Tensor, upper: Tensor) -> Tensor:
        shape = nu_hat.shape
        a = None if alpha is None else alpha[i].to(nu_hat).view(shape)
        nu = dual_step(nu_hat, lower, upper, a)
        if beta:
            s = splits[i].view(shape[0], 1, *shape[2:])
            b = beta[i].to(nu_hat).view(shape)
            nu = torch.where(s > 0, nu + b, torch.where(s < 0, nu - b, nu))
        if record is not None:
            record[i] = (nu_hat.detach(), nu.detach())
        return nu

    return multipliers


def leaf_bounds(
    net: Network,
    ball: Ball,
    root: Bounds,
    c: Tensor,
    splits: list[Tensor],
    alpha: list[Tensor] | None = None,
    beta: list[Tensor] | None = None,
    *,
    rigorous: bool = True,
    record: dict | None = None,
) -> Tensor:
    """Rigorous lower bounds (N, m) on ``min c_rᵀ f(z)`` over each leaf (the set ``ball`` of batch 1 under its splits).

    ``c`` (N, m, n_out); ``splits`` one (N, n_i) tensor per hidden layer;
    ``alpha``/``beta`` (N, m, n_i) per hidden layer or None (the plain dual).
    """
    n = c.shape[0]
    balls = ball.select(torch.zeros(n, dtype=torch.long))
    bounds = split_bounds(root, splits)
    return dual_objective_with(net, balls, c, bounds, split_multipliers(splits, alpha, beta, record), rigorous=rigorous)


def _optimise(net: Network, balls: Ball, bounds: Bounds, c: Tensor, splits: list[Tensor], alpha0: list[Tensor],
              beta0: list[Tensor], steps: int, options: BabOptions, deadline: float = math.inf
              ) -> tuple[list[Tensor], list[Tensor]]:
    """Adam on α ∈ [0, 1] and β ≥ 0, maximising the plain (working-dtype) bound; the best iterate per objective.

    A hand-written Adam (the textbook update, projected after each step):
    the multipliers need no optimiser state beyond this loop. Subnormal
    numbers are flushed to zero while it runs (speed only: the iterate is
    evaluated rigorously afterwards, with subnormals kept).
    """
    n, m = c.shape[:2]
    dtype = bounds.dtype
    params = [a.to(dtype).clone() for a in alpha0] + [b.to(dtype).clone() for b in beta0]
    n_alpha = len(alpha0)
    best_p = [p.clone() for p in params]
    if steps == 0:
        return best_p[:n_alpha], best_p[n_alpha:]
    lrs = [options.lr_alpha] * n_alpha + [options.lr_beta] * len(beta0)
    moment1 = [torch.zeros_like(p) for p in params]
    moment2 = [torch.zeros_like(p) for p in params]
    best = torch.full((n, m), -math.inf, dtype=dtype)
    flush = torch.set_flush_denormal(True)
    try:
        for step in range(steps + 1):
            with torch.enable_grad():
                for p in params:
                    p.requires_grad_(True)
                mult = split_multipliers(splits, params[:n_alpha], params[n_alpha:])
                value = dual_objective_with(net, balls, c, bounds, mult, rigorous=False)
                better = value.detach() > best
                best = torch.where(better, value.detach(), best)
                keep = better.unsqueeze(-1)
                for kept, p in zip(best_p, params):
                    kept.copy_(torch.where(keep, p.detach(), kept))
                if step == steps or time.perf_counter() >= deadline:
                    break
                grads = torch.autograd.grad(value.sum(), params, allow_unused=True)
            t = step + 1
            with torch.no_grad():
                for j, (p, g) in enumerate(zip(params, grads)):
                    if g is None:
                        continue
                    moment1[j].mul_(0.9).add_(g, alpha=0.1)
                    moment2[j].mul_(0.999).addcmul_(g, g, value=0.001)
                    step_size = lrs[j] / (1 - 0.9**t)
                    denom = (moment2[j] / (1 - 0.999**t)).sqrt_().add_(1e-8)
                    p = p.detach()
                    p.addcdiv_(moment1[j], denom, value=step_size)  # ascent
                    params[j] = p.clamp_(0.0, 1.0) if j < n_alpha else p.clamp_(min=0.0)
    finally:
        if flush:
            torch.set_flush_denormal(False)
    return best_p[:n_alpha], best_p[n_alpha:]


TOP_UNITS = 4  # branching candidates kept per leaf (a leaf may be split on several at once)


@dataclass
class _Leaves:
    """Open leaves, stacked.

    disjunct (N,); splits per hidden layer (N, n_i) int8; warm-start α and β
    per hidden layer (N, R, n_i) float16; bound (N,) float64 (rigorous);
    branch (N, TOP_UNITS, 2): the best units to split as (layer, unit), −1 padding.
    """

    disjunct: Tensor
    splits: list[Tensor]
    alpha: list[Tensor]
    beta: list[Tensor]
    bound: Tensor
    branch: Tensor

    def __len__(self) -> int:
        return self.disjunct.shape[0]

    def take(self, index: Tensor) -> "_Leaves":
        return _Leaves(self.disjunct[index], [s[index] for s in self.splits], [a[index] for a in self.alpha],
                       [b[index] for b in self.beta], self.bound[index], self.branch[index])

    @staticmethod
    def cat(parts: list["_Leaves"]) -> "_Leaves":
        parts = [p for p in parts if len(p)] or parts[:1]
        return _Leaves(torch.cat([p.disjunct for p in parts]),
                       [torch.cat(s) for s in zip(*(p.splits for p in parts))],
                       [torch.cat(a) for a in zip(*(p.alpha for p in parts))],
                       [torch.cat(b) for b in zip(*(p.beta for p in parts))],
                       torch.cat([p.bound for p in parts]), torch.cat([p.branch for p in parts]))


def branching_scores(record: dict, bounds: Bounds, splits: list[Tensor]) -> list[Tensor]:
    """BaBSR scores per hidden layer (N, n_i): ``[ν̂_j]₊ · (−ℓ_j u_j / (u_j − ℓ_j))`` summed over a leaf's rows.

    The triangle's offset term that splitting unit j removes from the bound
    (plus a tiny tie-break by ``min(−ℓ, u)·|ν̂|``); −1 on units that do not
    cross or are split already.
    """
    scores = []
    for i in range(len(splits)):
        nu_hat = record[i][0].flatten(2)  # (N, R, n_i)
        lo, up = bounds.lower[i].flatten(1), bounds.upper[i].flatten(1)
        cross = crossing(lo, up) & (splits[i] == 0)
        width = torch.where(cross, up - lo, torch.ones_like(up))
        offset = torch.where(cross, -lo * up / width, torch.zeros_like(up))
        score = nu_hat.clamp(min=0).sum(1).to(offset) * offset
        score = score + 1e-6 * torch.minimum(-lo, up).clamp(min=0) * nu_hat.abs().sum(1).to(offset)
        scores.append(torch.where(cross, score, torch.full_like(score, -1.0)))
    return scores


def _top_units(scores: list[Tensor], n: int) -> Tensor:
    """The TOP_UNITS best (layer, unit) per leaf, (N, TOP_UNITS, 2), −1 where fewer units cross."""
    if not scores:
        return torch.full((n, TOP_UNITS, 2), -1, dtype=torch.long)
    flat = torch.cat(scores, 1)
    sizes = torch.tensor([0] + [s.shape[1] for s in scores]).cumsum(0)
    k = min(TOP_UNITS, flat.shape[1])
    value, index = flat.topk(k, dim=1)
    layer = torch.searchsorted(sizes, index, right=True) - 1
    unit = index - sizes[layer]
    out = torch.stack([layer, unit], 2)
    out = torch.where((value < 0).unsqueeze(-1), torch.full_like(out, -1), out)
    if k < TOP_UNITS:
        out = torch.cat([out, torch.full((n, TOP_UNITS - k, 2), -1, dtype=torch.long)], 1)
    return out


class _Search:
    """One run of :func:`bab` (the state shared by its steps)."""

    def __init__(self, net: Network, ball: LinfBall, prop: Property, options: BabOptions, deadline: float):
        self.net, self.ball, self.prop, self.options, self.deadline = net, ball, prop, options, deadline
        self.work = net.detached(net.dtype if net.dtype in (torch.float32, torch.float64) else torch.float32)
        self.net64 = net.detached(torch.float64)  # the rigorous evaluations' weights, cast once
        self.generator = torch.Generator().manual_seed(options.seed)
        self.c_pad, self.d_pad = prop.padded()  # (K, R, n_out), (K, R)
        self.bounded = 0  # leaves bounded
        self.closed_min = math.inf  # the lowest bound of a closed leaf
        self.unresolved = 0  # fully split leaves neither closed nor falsified
        self.unresolved_min = math.inf  # their lowest bound
        self.open: _Leaves | None = None  # leaves left open by the deadline or the leaf limit
        self.open_boxes = 0  # the same for input splitting
        self.witness: Verdict | None = None
        self._balls: dict[int, Ball] = {}

    def balls(self, n: int) -> Ball:
        """The input set repeated for n leaves (cached: building a ball rounds its box)."""
        if n not in self._balls:
            self._balls[n] = self.ball.select(torch.zeros(n, dtype=torch.long))
        return self._balls[n]

    # candidates -------------------------------------------------------------------------
    def try_points(self, z: Tensor) -> bool:
        """Check the most promising of some points (n, *input_shape); a convicting one ends the search."""
        if z.numel() == 0:
            return False
        with torch.no_grad():
            values = disjunct_values(self.work(z.to(self.work.dtype)), self.prop.c, self.prop.d, self.prop.owner,
                                     self.prop.n_disjuncts).min(1).values
        for j in torch.argsort(values)[:3]:
            if values[j] > 1e-3:
                break
            ok, verdict = check_property_witness(self.net, self.ball, self.prop, z[j].detach().double())
            if ok:
                self.witness = verdict
                return True
        return False

    def attack(self, starts: Tensor | None = None, restarts: int | None = None) -> bool:
        z, _ = falsify(self.work, self.ball.lo[0], self.ball.hi[0], self.prop.c, self.prop.d, self.prop.owner,
                       restarts=restarts or self.options.restarts, steps=self.options.attack_steps, starts=starts,
                       generator=self.generator, deadline=self.deadline)
        return self.try_points(z)

    # ReLU splitting ----------------------------------------------------------------------
    def root_bounds(self) -> Bounds:
        """Algorithm 1's bounds ∩ interval bounds, tightened by CROWN's adaptive slopes (one walk per layer)."""
        with torch.no_grad():
            bounds = dual_bounds(self.net, self.ball).intersect(interval_bounds(self.net, self.ball))
        return refine_bounds(self.net, self.ball, bounds, 0, self.options, self.deadline)

    def bound_leaves(self, leaves: _Leaves, steps: int) -> tuple[_Leaves, Tensor]:
        """Optimise and rigorously evaluate leaves: the leaves with bounds, slopes, β and branching; their points."""
        n = len(leaves)
        c, d = self.c_pad[leaves.disjunct], self.d_pad[leaves.disjunct]
        balls = self.balls(n)
        bounds = split_bounds(self.root, leaves.splits)
        alpha, beta = _optimise(self.work, balls, bounds, c, leaves.splits, leaves.alpha, leaves.beta, steps,
                                self.options, self.deadline)
        record: dict = {}
        with torch.no_grad():
            value = dual_objective_with(self.net64, balls, c, bounds, split_multipliers(leaves.splits, alpha, beta, record))
            rows = torch.nextafter(value + d.to(value), torch.tensor(-math.inf, dtype=value.dtype))
            bound = torch.nan_to_num(rows, nan=-math.inf).max(1).values  # the disjunct is excluded by its best row
            branch = _top_units(branching_scores(record, bounds, leaves.splits), n)
            first = self.net64.blocks[0]
            nu2 = record[0][1] if 0 in record else -c.to(value)  # ν_2 (ν_k = −c without a hidden layer)
            nu_hat1 = first.transpose(nu2.reshape(-1, *first.out_shape)).reshape(-1, *self.net.input_shape)
            lo, hi = self.ball.lo[0].to(nu_hat1), self.ball.hi[0].to(nu_hat1)
            points = torch.where(nu_hat1 > 0, hi, lo)  # the input vertex each leaf's dual picks
        self.bounded += n
        half = torch.float16
        out = _Leaves(leaves.disjunct, leaves.splits, [a.to(half) for a in alpha], [b.to(half) for b in beta],
                      bound, branch)
        return out, points

    def fully_split(self, leaves: _Leaves) -> Tensor:
        """Close fully split leaves by the LP of their linear piece; True where closed."""
        closed = torch.zeros(len(leaves), dtype=torch.bool)
        for j in range(len(leaves)):
            if not self.options.lp_leaves or time.perf_counter() >= self.deadline:
                continue
            one = leaves.take(torch.tensor([j]))
            bounds = split_bounds(self.root, one.splits)
            k = int(one.disjunct[0])
            model = build_lp(self.net, self.ball, bounds)
            best = -math.inf
            for r in torch.nonzero(self.prop.owner == k).view(-1):
                left = self.deadline - time.perf_counter()  # the LP's safe bound holds after a time limit too
                res = model.solve(self.prop.c[r].double().numpy(), time_limit=None if math.isinf(left) else max(left, 0.0))
                if math.isfinite(res.bound):
                    best = max(best, float(np.nextafter(res.bound + float(self.prop.d[r]), -np.inf)))
                if res.input is not None and self.try_points(torch.as_tensor(res.input).view(1, *self.net.input_shape)):
                    return closed
            if best > 0:
                closed[j] = True
                self.closed_min = min(self.closed_min, best)
        return closed

    def relu_split(self) -> Verdict | None:
        opts = self.options
        self.root = self.root_bounds()
        K, R = self.c_pad.shape[:2]
        zeros = lambda t: torch.zeros(K, R, t.flatten(1).shape[1], dtype=torch.float16)  # noqa: E731
        leaves = _Leaves(
            torch.arange(K),
            [torch.zeros(K, lo.flatten(1).shape[1], dtype=torch.int8) for lo, _ in self.root.hidden],
            [relu_slope(lo, up).flatten(1).unsqueeze(1).expand(K, R, -1).to(torch.float16) for lo, up in self.root.hidden],
            [zeros(lo) for lo, _ in self.root.hidden],
            torch.full((K,), -math.inf, dtype=torch.float64),
            torch.full((K, TOP_UNITS, 2), -1, dtype=torch.long),
        )
        leaves, points = self.bound_leaves(leaves, opts.root_steps)
        log.debug("root: bounds %s, %.1f s left", leaves.bound.tolist(), self.deadline - time.perf_counter())
        if self.try_points(points):
            return self.witness
        closed = leaves.bound > 0
        if opts.refine_steps > 0 and not bool(closed.all()):  # worth tightening the layers: optimised slopes
            if closed.any():
                self.closed_min = min(self.closed_min, float(leaves.bound[closed].min()))
            leaves = leaves.take(~closed)
            budget = self.deadline if math.isinf(self.deadline) else \
                time.perf_counter() + opts.refine_share * (self.deadline - time.perf_counter())
            self.root = refine_bounds(self.net, self.ball, self.root, opts.refine_steps, opts, budget)
            leaves, points = self.bound_leaves(leaves, opts.root_steps)
            log.debug("refined root: bounds %s, %.1f s left", leaves.bound.tolist(), self.deadline - time.perf_counter())
            if self.try_points(points):
                return self.witness
        batches = 0
        while True:
            closed = leaves.bound > 0
            if closed.any():
                self.closed_min = min(self.closed_min, float(leaves.bound[closed].min()))
            leaves = leaves.take(~closed)
            flat = leaves.branch[:, 0, 0] < 0
            if flat.any():
                log.debug("%d fully split leaves to the LP", int(flat.sum()))
                done = leaves.take(flat)
                shut = self.fully_split(done)
                if self.witness is not None:
                    return self.witness
                if (~shut).any():
                    self.unresolved += int((~shut).sum())
                    self.unresolved_min = min(self.unresolved_min, float(done.bound[~shut].min()))
                leaves = leaves.take(~flat)
            if len(leaves) == 0:
                return None
            if time.perf_counter() >= self.deadline or len(leaves) > opts.max_leaves:
                self.open = leaves
                return None
            order = torch.argsort(leaves.bound)
            pick, rest = leaves.take(order[: max(1, opts.batch // 2)]), leaves.take(order[max(1, opts.batch // 2):])
            children = self.branch(pick, max(1, opts.batch // len(pick)))
            children, points = self.bound_leaves(children, opts.steps)
            if self.try_points(points):
                return self.witness
            batches += 1
            log.debug("batch %d: %d leaves open, lowest bound %.4g, %d bounded, %.1f s left", batches, len(rest) + len(children),
                      float(children.bound.min()), self.bounded, self.deadline - time.perf_counter())
            if opts.attack_every and batches % opts.attack_every == 0:
                low = torch.argsort(children.bound)[:8]
                starts = points.view(len(children), -1, *self.net.input_shape)[low].reshape(-1, *self.net.input_shape)
                if self.attack(starts=starts, restarts=max(1, opts.restarts // 4)):
                    return self.witness
            leaves = _Leaves.cat([rest, children])

    def branch(self, pick: _Leaves, fan: int) -> _Leaves:
        """Children of each leaf: its best unit split active (+1) and inactive (−1), and, while
        ``fan`` (the children a leaf may have) allows, its next best units too (2^k children)."""
        for k in range(TOP_UNITS):
            if 2 ** (k + 1) > fan and k > 0:
                break
            layer, unit = pick.branch[:, k, 0], pick.branch[:, k, 1]
            if k > 0 and bool((layer < 0).any()):
                break
            rows = torch.arange(len(pick))
            splits = []
            for i, s in enumerate(pick.splits):
                pos, neg = s.clone(), s.clone()
                mine = layer == i
                pos[rows[mine], unit[mine]] = 1
                neg[rows[mine], unit[mine]] = -1
                splits.append(torch.cat([pos, neg]))
            two = lambda t: torch.cat([t, t])  # noqa: E731
            pick = _Leaves(two(pick.disjunct), splits, [two(a) for a in pick.alpha], [two(b) for b in pick.beta],
                           two(pick.bound), two(pick.branch))
        return pick

    # input splitting ---------------------------------------------------------------------
    def input_split(self) -> Verdict | None:
        opts = self.options
        c_pad, d_pad = self.c_pad, self.d_pad
        K = c_pad.shape[0]
        lo0, hi0 = self.ball.lo.double(), self.ball.hi.double()
        scale = (hi0 - lo0).flatten(1).clamp(min=1e-300)
        lo, hi, disj = lo0.repeat(K, *([1] * (lo0.ndim - 1))), hi0.repeat(K, *([1] * (hi0.ndim - 1))), torch.arange(K)
        while True:
            if time.perf_counter() >= self.deadline:
                self.open_boxes = len(disj)
                return None
            take = min(len(disj), opts.batch)
            blo, bhi, bd = lo[:take], hi[:take], disj[:take]
            lo, hi, disj = lo[take:], hi[take:], disj[take:]
            width = float((bhi - blo).max())
            box = LinfBall((blo + bhi) / 2, width, lower=blo, upper=bhi)
            with torch.no_grad():
                bounds = dual_bounds(self.net, box)
            c, d = c_pad[bd], d_pad[bd]
            none = [torch.zeros(take, lo_.flatten(1).shape[1], dtype=torch.int8) for lo_, _ in bounds.hidden]
            alpha = [adaptive_slopes(l_.flatten(1), u_.flatten(1)).unsqueeze(1).expand(-1, c.shape[1], -1)
                     for l_, u_ in bounds.hidden]
            alpha, _ = _optimise(self.work, box, bounds, c.to(bounds.dtype), none, alpha, [], opts.steps, opts,
                                 self.deadline)
            with torch.no_grad():
                value = dual_objective_with(self.net64, box, c, bounds, split_multipliers(none, alpha, None))
            rows = torch.nextafter(value + d.to(value), torch.tensor(-math.inf, dtype=value.dtype))
            bound = torch.nan_to_num(rows, nan=-math.inf).max(1).values
            self.bounded += take
            if self.try_points(box.mid.to(self.net.dtype)):
                return self.witness
            closed = bound > 0
            if closed.any():
                self.closed_min = min(self.closed_min, float(bound[closed].min()))
            blo, bhi, bd = blo[~closed], bhi[~closed], bd[~closed]
            if len(bd) == 0:
                if len(disj) == 0:
                    return None
                continue
            if len(disj) + 2 * len(bd) > opts.max_leaves:
                self.open_boxes = len(disj) + len(bd)
                return None
            dim = ((bhi - blo).flatten(1) / scale).argmax(1)
            rows_ = torch.arange(len(bd))
            mid = ((blo + bhi) / 2).flatten(1)[rows_, dim]
            left_hi, right_lo = bhi.clone().flatten(1), blo.clone().flatten(1)
            left_hi[rows_, dim] = mid
            right_lo[rows_, dim] = mid
            lo = torch.cat([lo, blo, right_lo.view_as(blo)])
            hi = torch.cat([hi, left_hi.view_as(bhi), bhi])
            disj = torch.cat([disj, bd, bd])


def bab(
    net: Network,
    ball: LinfBall,
    c: Tensor,
    d: Tensor | None = None,
    owner: Tensor | None = None,
    *,
    time_limit: float | None = None,
    options: BabOptions = BabOptions(),
) -> Verdict:
    """Decide a property on one example by falsification and branch and bound.

    Args:
        net: the network; ball: the input set (an l_inf ball or box, batch 1).
        c: rows (m, n_out); d: offsets (m,) (default 0); owner: each row's
            disjunct (m,) (default: every row its own disjunct, so the
            property is ``c_rᵀ f(z) + d_r > 0`` for every row, as in :func:`lpverify.verify.verify`).
        time_limit: wall-clock seconds (None: until decided or ``max_leaves``).

    Returns:
        a :class:`~lpverify.verify.Verdict`: verified (every leaf closed by a
        rigorous bound; ``bound`` the lowest of them, a lower bound on the
        property's margin), violated (a checked witness), or unknown (``bound``
        the lowest open leaf's rigorous bound, the reason says how many leaves are open).
    """
    start = time.perf_counter()
    deadline = math.inf if time_limit is None else start + time_limit
    if not isinstance(ball, LinfBall) or ball.batch_size != 1:
        raise ValueError("branch and bound takes one l_inf ball or box (batch 1)")
    c = torch.as_tensor(c, dtype=torch.float64).reshape(-1, net.n_outputs)
    d = torch.zeros(c.shape[0], dtype=torch.float64) if d is None else torch.as_tensor(d, dtype=torch.float64).reshape(-1)
    owner = torch.arange(c.shape[0]) if owner is None else torch.as_tensor(owner, dtype=torch.long).reshape(-1)
    if c.shape[0] == 0:
        return Verdict(Status.VERIFIED, math.inf, time.perf_counter() - start)
    prop = Property(c, d, owner)
    search = _Search(net, ball, prop, options, deadline)

    def done(verdict: Verdict | None) -> Verdict:
        elapsed = time.perf_counter() - start
        if verdict is not None:  # a witness
            return Verdict(verdict.status, verdict.bound, elapsed, verdict.witness, verdict.value,
                           f"{verdict.reason}; {search.bounded} leaves bounded", verdict.model_value)
        opened = search.open
        open_bound = min(search.unresolved_min, float(opened.bound.min()) if opened is not None else math.inf)
        n_open = (0 if opened is None else len(opened)) + search.open_boxes + search.unresolved
        if n_open == 0:
            return Verdict(Status.VERIFIED, search.closed_min, elapsed, reason=f"{search.bounded} leaves bounded")
        late = time.perf_counter() >= deadline
        why = "time limit" if late else f"more than {options.max_leaves} open leaves"
        if search.unresolved and not late:
            why = "fully split leaves neither closed nor falsified"
        bound = min(open_bound, search.closed_min) if search.open_boxes == 0 else math.nan
        return Verdict(Status.UNKNOWN, bound, elapsed, reason=f"{why}: {n_open} leaves open, {search.bounded} bounded")

    with torch.no_grad():
        found = search.attack()
        log.debug("falsifier: %s after %.1f s", "found" if found else "nothing", time.perf_counter() - start)
        if found:
            return done(search.witness)
    if math.prod(net.input_shape) <= options.input_split_dims:
        return done(search.input_split())
    return done(search.relu_split())


__all__ = ["BabOptions", "Property", "bab", "check_property_witness", "leaf_bounds", "split_bounds", "split_multipliers"]
