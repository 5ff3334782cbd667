"""Attacks for the empirical columns of Table 1 (MATH.md §9): lower bounds on the robust error.

Defaults follow the paper: FGSM is one signed-gradient step of size ε; PGD
takes 100 steps of 0.01 from x itself, projected onto the ℓ∞ ball, with no
[0, 1] clamp. ``random_start`` and ``lower``/``upper`` give the usual
variant (random start, pixels kept in the box).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

Model = Callable[[Tensor], Tensor]


def _loss_gradient(model: Model, x: Tensor, y: Tensor) -> Tensor:
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        loss = F.cross_entropy(model(x), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    return grad


def _project(x_adv: Tensor, x: Tensor, eps: Tensor, lower: float | Tensor | None, upper: float | Tensor | None) -> Tensor:
    """Onto the ℓ∞ ball of radius ε around x, then onto the box [lower, upper] when given."""
    x_adv = torch.maximum(torch.minimum(x_adv, x + eps), x - eps)
    if lower is not None:
        x_adv = torch.maximum(x_adv, torch.as_tensor(lower, dtype=x.dtype, device=x.device))
    if upper is not None:
        x_adv = torch.minimum(x_adv, torch.as_tensor(upper, dtype=x.dtype, device=x.device))
    return x_adv


def _eps_like(eps: float | Tensor, x: Tensor) -> Tensor:
    eps_t = torch.as_tensor(eps, dtype=x.dtype, device=x.device)
    if (eps_t < 0).any() or not torch.isfinite(eps_t).all():
        raise ValueError(f"eps must be finite and >= 0, got {eps}")
    return eps_t.view(-1, *([1] * (x.ndim - 1))) if eps_t.ndim == 1 else eps_t


def fgsm(
    model: Model,
    x: Tensor,
    y: Tensor,
    eps: float | Tensor,
    *,
    lower: float | Tensor | None = None,
    upper: float | Tensor | None = None,
) -> Tensor:
    """``x + ε·sign(∇ₓ CE(f(x), y))`` (projected onto the box when one is given)."""
    eps_t = _eps_like(eps, x)
    return _project(x + eps_t * _loss_gradient(model, x, y).sign(), x, eps_t, lower, upper).detach()


def pgd(
    model: Model,
    x: Tensor,
    y: Tensor,
    eps: float | Tensor,
    *,
    steps: int = 100,
    step_size: float = 0.01,
    random_start: bool = False,
    lower: float | Tensor | None = None,
    upper: float | Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Projected gradient ascent on the cross-entropy in the ℓ∞ ball; returns the last iterate."""
    if steps < 0 or step_size <= 0:
        raise ValueError(f"need steps >= 0 and step_size > 0, got {steps} and {step_size}")
    eps_t = _eps_like(eps, x)
    x_adv = x.detach().clone()
    if random_start:
        noise = torch.rand(x.shape, generator=generator, dtype=x.dtype, device="cpu").to(x.device)
        x_adv = _project(x + (2 * noise - 1) * eps_t, x, eps_t, lower, upper)
    for _ in range(steps):
        x_adv = _project(x_adv + step_size * _loss_gradient(model, x_adv, y).sign(), x, eps_t, lower, upper).detach()
    return x_adv


def predict(model: Model, x: Tensor, batch_size: int = 500) -> Tensor:
    """The predicted class of each input, (batch,), evaluated in chunks without gradients.

    NaN or inf logits (from a NaN input, say) are a ValueError: argmax would
    quietly call them class 0, and an attack would count them as successes.
    """
    with torch.no_grad():
        logits = torch.cat([model(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)])
    if not torch.isfinite(logits).all():
        raise ValueError("the logits contain NaN or inf: no class can be predicted (is the input finite?)")
    return logits.argmax(1)


def attack_error(model: Model, x_adv: Tensor, y: Tensor, batch_size: int = 500) -> Tensor:
    """Whether each adversarial input is misclassified, (batch,) bool."""
    return predict(model, x_adv, batch_size) != y


def pgd_objective(
    model: Model,
    lower: Tensor,
    upper: Tensor,
    c: Tensor,
    d: Tensor | None = None,
    *,
    steps: int = 100,
    restarts: int = 5,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Search the box [lower, upper] for a point where some row ``c_rᵀ f(z) + d_r`` is smallest.

    A falsifier for the properties of :func:`lpverify.verify`: signed
    gradient descent on ``min_r c_rᵀ f(z) + d_r`` with a step of a tenth of
    the box's largest half-width decaying linearly, from the box centre and
    ``restarts − 1`` random starts. Every iterate is evaluated; the best one
    is kept.

    Args:
        model: the network; ``lower``/``upper``: the box, (batch, *input_shape).
        c: objectives (batch, m, n_out); ``d``: offsets (batch, m), default 0.

    Returns:
        the best point (batch, *input_shape) and its objective value (batch,).
    """
    if steps < 0 or restarts < 1:
        raise ValueError(f"need steps >= 0 and restarts >= 1, got {steps} and {restarts}")
    d = torch.zeros(c.shape[:2], dtype=lower.dtype, device=lower.device) if d is None else d.to(lower)
    c = c.to(lower)

    def objective(z: Tensor) -> Tensor:
        return ((c * model(z).unsqueeze(1)).sum(-1) + d).min(1).values

    width = ((upper - lower) / 2).flatten(1).max(1).values.view(-1, *([1] * (lower.ndim - 1)))
    best = (lower + upper) / 2
    with torch.no_grad():
        best_value = objective(best)
    for start in range(restarts):
        z = best.clone() if start == 0 else lower + torch.rand(lower.shape, generator=generator, dtype=lower.dtype).to(lower.device) * (upper - lower)
        for step in range(steps + 1):
            with torch.enable_grad():
                z = z.detach().requires_grad_(True)
                value = objective(z)
                (grad,) = torch.autograd.grad(value.sum(), z)
            better = value.detach() < best_value
            best = torch.where(better.view(-1, *([1] * (lower.ndim - 1))), z.detach(), best)
            best_value = torch.where(better, value.detach(), best_value)
            size = 0.1 * width * (1 - step / (steps + 1))
            z = torch.minimum(torch.maximum(z.detach() - size * grad.sign(), lower), upper)
    return best, best_value
