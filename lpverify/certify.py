"""Certificates from the dual network (Corollary 1): is every margin bound ≥ 0?"""

from __future__ import annotations

import torch
from torch import Tensor

from .dual import dual_bounds, dual_objective
from .network import Network
from .sets import LinfBall
from .specs import margin_objectives


def margin_bounds(net: Network, ball: LinfBall, y: Tensor) -> Tensor:
    """Lower bounds J(e_y − e_j) on ``f_y − f_j`` over the ball, (batch, n_classes); column y is 0.

    Algorithm 1 bounds for the hidden layers, then Theorem 1 for the margins.
    """
    bounds = dual_bounds(net, ball)
    c = margin_objectives(y, net.n_outputs).to(ball.center)
    return dual_objective(net, ball, c, bounds)


def certify(
    net: Network,
    x: Tensor,
    y: Tensor,
    eps: float | Tensor,
    *,
    lower: float | Tensor | None = None,
    upper: float | Tensor | None = None,
    batch_size: int = 32,
) -> Tensor:
    """Whether each example is certified robust at ε (Corollary 1), (batch,) bool.

    True only if every margin bound is ≥ 0; a NaN bound is never a certificate.
    ``lower``/``upper`` clamp the input set (e.g. 0 and 1 for pixels).
    Examples are processed in chunks of ``batch_size`` to bound memory.
    """
    if y.shape != x.shape[:1]:
        raise ValueError(f"labels of shape {tuple(y.shape)} do not match the batch of {x.shape[0]} inputs")
    eps_t = torch.as_tensor(eps, dtype=x.dtype, device=x.device)
    out = []
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            sl = slice(start, start + batch_size)
            eps_sl = eps_t if eps_t.ndim == 0 else eps_t[sl]
            ball = LinfBall(x[sl], eps_sl, lower, upper)
            bound = margin_bounds(net, ball, y[sl].to(x.device))
            out.append((bound >= 0).all(dim=1))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool, device=x.device)
