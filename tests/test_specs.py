"""Margin objectives (Theorem 2's e_y 1ᵀ − I)."""

from __future__ import annotations

import pytest
import torch

import lpverify as lv


def test_margin_objectives_rows_are_e_y_minus_e_j():
    C = lv.margin_objectives(torch.tensor([2, 0]), 3)
    assert C.shape == (2, 3, 3)
    torch.testing.assert_close(C[0], torch.tensor([[-1.0, 0.0, 1.0], [0.0, -1.0, 1.0], [0.0, 0.0, 0.0]]))
    logits = torch.tensor([[0.3, -1.0, 2.0], [1.0, 4.0, -2.0]])
    margins = torch.einsum("bjo,bo->bj", C, logits)
    torch.testing.assert_close(margins[1], logits[1, 0] - logits[1])


@pytest.mark.parametrize(
    "y, message",
    [(torch.tensor([3]), "\\[0, 3\\)"), (torch.tensor([-1]), "\\[0, 3\\)"), (torch.tensor([[0]]), "shape"), (torch.tensor([0.0]), "integers")],
)
def test_bad_labels_raise(y, message):
    with pytest.raises((ValueError, TypeError), match=message):
        lv.margin_objectives(y, 3)


def test_robustness_objectives_drop_the_true_class_row():
    y = torch.tensor([2, 0])
    c = lv.robustness_objectives(y, 4)
    assert c.shape == (2, 3, 4)
    assert (c[:, :, 2][0] == 1).all() and (c[:, :, 0][1] == 1).all()
    logits = torch.tensor([[0.0, 1.0, 3.0, 2.0], [5.0, 1.0, 2.0, 4.0]])
    torch.testing.assert_close((c * logits.unsqueeze(1)).sum(-1), torch.tensor([[3.0, 2.0, 1.0], [4.0, 3.0, 1.0]]))
