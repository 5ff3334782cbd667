"""Hypothesis strategies: random dense and convolutional ReLU networks with an input set."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from hypothesis import strategies as st

import lpverify as lv
from conftest import random_convnet, random_mlp


@dataclass
class Case:
    net: lv.Network
    ball: lv.LinfBall
    seed: int


@st.composite
def dense_cases(draw, max_depth: int = 4, max_width: int = 12, batch: int = 2) -> Case:
    n_in = draw(st.integers(1, 5))
    hidden = draw(st.lists(st.integers(2, max_width), min_size=0, max_size=max_depth - 1))
    n_out = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**20))
    eps = draw(st.sampled_from([0.01, 0.05, 0.1, 0.3, 1.0]))
    clamp = draw(st.booleans())
    net = lv.Network.from_torch(random_mlp([n_in, *hidden, n_out], seed))
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.rand(batch, n_in, generator=gen, dtype=torch.float64)
    ball = lv.LinfBall(x, eps, *((0.0, 1.0) if clamp else (None, None)))
    return Case(net, ball, seed)


@st.composite
def conv_cases(draw, batch: int = 2) -> Case:
    channels = draw(st.integers(1, 2))
    side = draw(st.integers(4, 7))
    seed = draw(st.integers(0, 2**20))
    eps = draw(st.sampled_from([0.01, 0.05, 0.1, 0.2]))
    model, shape = random_convnet(channels, side, seed)
    net = lv.Network.from_torch(model, input_shape=shape)
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.rand(batch, *shape, generator=gen, dtype=torch.float64)
    return Case(net, lv.LinfBall(x, eps), seed)


def any_case(batch: int = 2):
    return st.one_of(dense_cases(batch=batch), conv_cases(batch=batch))


def sampled_pre_activations(case: Case, n: int = 300) -> list[torch.Tensor]:
    """ẑ_2..ẑ_k at n uniform points and n vertices of each example's ball, each (batch, 2n, *shape)."""
    gen = torch.Generator().manual_seed(case.seed)
    pts = torch.cat([case.ball.sample(n, generator=gen), case.ball.sample(n, vertices=True, generator=gen)], 1)
    batch, m = pts.shape[:2]
    pre = case.net.pre_activations(pts.flatten(0, 1))
    return [z.view(batch, m, *z.shape[1:]) for z in pre]


@st.composite
def lp_ball_cases(draw, batch: int = 2) -> Case:
    """A dense or conv case whose input set is an l1 or l2 ball of the same centre."""
    case = draw(any_case(batch=batch))
    p = draw(st.sampled_from([1, 2]))
    eps = draw(st.sampled_from([0.05, 0.3, 1.0]))
    return Case(case.net, lv.LpBall(case.ball.center, eps, p), case.seed)
