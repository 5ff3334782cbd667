"""Shared fixtures: the ../shared data and weights, and random networks for property tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings
from torch import nn

settings.register_profile(
    "lpverify",
    deadline=None,
    max_examples=25,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "lpverify"))

SHARED = Path(os.environ.get("LPVERIFY_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))


def shared_path(*parts: str) -> Path:
    """A path under ../shared; skips the test where it is absent, fails under CI=true."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        message = f"{path} is not available (set LPVERIFY_SHARED to the shared data folder)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + "; CI=true requires it")
        pytest.skip(message)
    return path


def assert_bounds_close(a, b, rtol: float, atol: float) -> None:
    """Two Bounds agree layer by layer (b is moved to a's device and dtype)."""
    assert len(a) == len(b)
    for x, y in zip(a.lower + a.upper, b.lower + b.upper):
        torch.testing.assert_close(x, y.to(x), rtol=rtol, atol=atol)


def random_mlp(widths: list[int], seed: int, bias_scale: float = 0.5) -> nn.Sequential:
    """Dense ReLU net with the given layer widths, weights N(0, 1/n_in)."""
    from lpverify.zoo import random_mlp as zoo_random_mlp

    return zoo_random_mlp(widths, seed, bias_std=bias_scale)


def random_convnet(channels: int, side: int, seed: int, n_out: int = 4) -> tuple[nn.Sequential, tuple[int, int, int]]:
    """Conv(stride 2, pad 1) – ReLU – Conv(pad 1) – ReLU – Flatten – Linear – ReLU – Linear."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    c1, c2 = 3, 4
    model = nn.Sequential(
        nn.Conv2d(channels, c1, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(c1, c2, 3, stride=1, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(c2 * ((side + 1) // 2) ** 2, 12),
        nn.ReLU(),
        nn.Linear(12, n_out),
    )
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.5 if p.ndim == 1 else 1.0 / max(1, p[0].numel()) ** 0.5))
    return model, (channels, side, side)
