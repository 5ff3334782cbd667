"""A falsifier for linear output properties: batched PGD with many restarts (MATH.md §9, §13).

A property's unsafe region is a disjunction of conjunctions of output rows:
disjunct k holds at z when ``c_r ᵀ f(z) + d_r ≤ 0`` for every row r of k
(:meth:`lpverify.vnnlib.VnnlibProperty.objectives`; a margin property has one
row per disjunct). The falsifier minimises the margin loss

    value(z) = min_k max_{r ∈ k} c_rᵀ f(z) + d_r

over the input box: value ≤ 0 is a candidate counterexample. Restarts are
spread over the disjuncts, each descending on its own disjunct's
``max_r`` (a margin-targeted loss: gradient steps on the overall minimum
only ever pull one row), from the box centre, random corners, uniform random
points and any given starts (e.g. the points branch and bound's leaves
suggest). Signed-gradient steps with a step size decaying from half the box's
half-width to zero. Nothing here is a verdict: a candidate becomes a
counterexample only through :func:`lpverify.verify.check_witness`.
"""

from __future__ import annotations

import math
import time

import torch
from torch import Tensor

from .network import Network


def disjunct_values(outputs: Tensor, c: Tensor, d: Tensor, owner: Tensor, n_disjuncts: int) -> Tensor:
    """``max_{r ∈ k} c_rᵀ y + d_r`` per point and disjunct: (n, n_disjuncts) for outputs y (n, n_out)."""
    rows = outputs @ c.T.to(outputs) + d.to(outputs)  # (n, m)
    out = torch.full((outputs.shape[0], n_disjuncts), -math.inf, dtype=rows.dtype, device=rows.device)
    return out.scatter_reduce(1, owner.to(rows.device).expand_as(rows), rows, reduce="amax")


def falsify(
    net: Network,
    lo: Tensor,
    hi: Tensor,
    c: Tensor,
    d: Tensor,
    owner: Tensor | None = None,
    *,
    restarts: int = 100,
    steps: int = 50,
    starts: Tensor | None = None,
    generator: torch.Generator | None = None,
    deadline: float = math.inf,
) -> tuple[Tensor, Tensor]:
    """Search the box [lo, hi] (each of shape input_shape) for points where the property fails.

    Args:
        net: the network; runs in its own dtype.
        c, d, owner: the rows (m, n_out), offsets (m,) and each row's
            disjunct (m,); ``owner`` None makes every row its own disjunct.
        restarts: points descended together (at least one per disjunct).
        steps: signed-gradient steps.
        starts: extra starting points (s, *input_shape), clipped to the box.
        deadline: a ``time.perf_counter()`` value; the descent stops there.

    Returns:
        candidates (n, *input_shape) sorted by value, and their values (n,)
        (the model's dtype): the best point of every restart.
    """
    if restarts < 1 or steps < 0:
        raise ValueError(f"need restarts >= 1 and steps >= 0, got {restarts} and {steps}")
    dtype = net.dtype
    lo, hi = lo.to(dtype).reshape(net.input_shape), hi.to(dtype).reshape(net.input_shape)
    c = torch.as_tensor(c).to(dtype)
    d = torch.as_tensor(d).to(dtype)
    owner = torch.arange(c.shape[0]) if owner is None else torch.as_tensor(owner, dtype=torch.long)
    n_disj = int(owner.max()) + 1 if owner.numel() else 0
    if n_disj == 0:
        raise ValueError("the property has no rows")
    n = max(restarts, n_disj)
    target = torch.arange(n) % n_disj  # the disjunct each restart descends on
    u = torch.rand((n, *net.input_shape), generator=generator, dtype=dtype)
    kind = torch.arange(n) // n_disj  # 0: centre, odd: uniform, even: corners
    corners = (u > 0.5).to(dtype)
    frac = torch.where((kind % 2 == 0).view(-1, *([1] * lo.ndim)), corners, u)
    frac[kind == 0] = 0.5
    z = torch.minimum(torch.maximum(lo + frac * (hi - lo), lo), hi)  # the sum may round past hi
    if starts is not None and starts.numel():
        s = torch.minimum(torch.maximum(starts.to(dtype).reshape(-1, *net.input_shape), lo), hi)
        z = torch.cat([s.repeat_interleave(n_disj, 0), z])  # each start descends on every disjunct
        target = torch.cat([torch.arange(len(s) * n_disj) % n_disj, target])
    half = (hi - lo) / 2
    best_z, best_v = z.clone(), torch.full((len(z),), math.inf, dtype=dtype)
    for step in range(steps + 1):
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            values = disjunct_values(net(z), c, d, owner, n_disj)  # (n, K)
            own = values.gather(1, target.view(-1, 1)).squeeze(1)
            (grad,) = torch.autograd.grad(own.sum(), z)
        overall = values.detach().min(1).values
        better = overall < best_v
        best_v = torch.where(better, overall, best_v)
        best_z[better] = z.detach()[better]
        if step == steps or time.perf_counter() >= deadline or bool((best_v <= 0).any()) and step >= steps // 4:
            break
        size = half * (0.5 * (1 + math.cos(math.pi * step / steps)) * 0.5)
        z = torch.minimum(torch.maximum(z.detach() - size * grad.sign(), lo), hi)
    order = torch.argsort(best_v)
    return best_z[order], best_v[order]


__all__ = ["disjunct_values", "falsify"]
