"""Objectives c for the dual and the LP: margins of Theorem 2 and Corollaries 1–2."""

from __future__ import annotations

import torch
from torch import Tensor


def margin_objectives(y: Tensor, n_classes: int) -> Tensor:
    """``C = e_y 1ᵀ − I`` per example (Theorem 2), shape (batch, n_classes, n_classes).

    Row j is the objective ``c_j = e_y − e_j``: ``c_jᵀ f(x) = f_y(x) − f_j(x)``,
    the margin of the true class over class j. Row y is zero. A lower bound
    ≥ 0 on every row certifies that no input of the set changes the class.
    """
    if y.ndim != 1:
        raise ValueError(f"labels must have shape (batch,), got {tuple(y.shape)}")
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise TypeError(f"labels must be integers, got {y.dtype}")
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes}), got range [{int(y.min())}, {int(y.max())}]")
    eye = torch.eye(n_classes, device=y.device)
    return eye[y].unsqueeze(1) - eye.unsqueeze(0)


def robustness_objectives(y: Tensor, n_classes: int) -> Tensor:
    """The rows ``e_y − e_t`` for every t ≠ y, shape (batch, n_classes − 1, n_classes).

    :func:`margin_objectives` without its zero row: the property "the class
    stays y" is ``c_tᵀ f(z) > 0`` for every row (see :func:`lpverify.verify`).
    """
    c = margin_objectives(y, n_classes)
    keep = ~torch.eye(n_classes, dtype=torch.bool, device=y.device)[y]  # (batch, n_classes)
    return c[keep].view(len(y), n_classes - 1, n_classes)
