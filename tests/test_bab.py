"""Branch and bound (MATH.md §13): exact on small nets, rigorous leaves, checked witnesses, parallel = serial."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

import lpverify as lv
from lpverify.bab import BabOptions, Property, bab, check_property_witness, leaf_bounds, split_bounds
from lpverify.dual import dual_bounds, dual_objective
from lpverify.falsify import falsify
from lpverify.pool import pool_map
from lpverify.verify import METHODS, check_witness, verify, verify_property
from lpverify.vnnlib import parse_vnnlib

from conftest import random_mlp

FAST = dict(root_steps=20, steps=10, refine_steps=5, restarts=20, attack_steps=20)  # small nets need few steps
NO_ATTACK = BabOptions(**{**FAST, "restarts": 1, "attack_steps": 0}, attack_every=0, input_split_dims=0)  # BaB alone


def _net(seed: int, widths: list[int]) -> lv.Network:
    return lv.Network.from_torch(random_mlp(widths, seed).double())


def _box(seed: int, n_in: int, eps: float) -> lv.LinfBall:
    x = torch.rand(1, n_in, generator=torch.Generator().manual_seed(seed + 7), dtype=torch.float64)
    return lv.LinfBall(x, eps)


def exact_minimum(net: lv.Network, lo: np.ndarray, hi: np.ndarray, c: np.ndarray,
                  fixed: list[np.ndarray] | None = None) -> float:
    """``min cᵀ f(x)`` over the box by enumerating activation patterns, one LP per linear piece (HiGHS).

    ``fixed`` (per hidden layer, entries in {−1, 0, 1}) keeps only the patterns
    of a branch-and-bound leaf: +1 units on (ẑ ≥ 0), −1 units off (ẑ ≤ 0).
    +inf when no pattern is feasible.
    """
    mats = [m.toarray() if hasattr(m, "toarray") else m for m, _ in net.sparse()]
    biases = [b for _, b in net.sparse()]
    sizes = [w.shape[0] for w in mats[:-1]]
    fixed = fixed or [np.zeros(n) for n in sizes]
    n_in = mats[0].shape[1]
    best = math.inf
    choices = [[(s,) if s != 0 else (1, -1) for s in f] for f in fixed]
    for pattern in itertools.product(*[itertools.product(*ch) for ch in choices]):
        A, a = np.eye(n_in), np.zeros(n_in)
        rows, rhs = [], []
        for (W, b), p in zip(zip(mats[:-1], biases[:-1]), pattern):
            Z, z0 = W @ A, W @ a + b
            p = np.array(p)
            for j, s in enumerate(p):  # on: −ẑ_j ≤ 0; off: ẑ_j ≤ 0
                rows.append(-s * Z[j])
                rhs.append(s * z0[j])
            on = (p > 0).astype(float)
            A, a = on[:, None] * Z, on * z0
        F, f0 = mats[-1] @ A, mats[-1] @ a + biases[-1]
        res = linprog(c @ F, A_ub=np.array(rows) if rows else None, b_ub=np.array(rhs) if rhs else None,
                      bounds=list(zip(lo, hi)), method="highs")
        if res.status == 0:
            best = min(best, res.fun + c @ f0)
    return best


@st.composite
def small_problems(draw, max_in: int = 3):
    n_in = draw(st.integers(2, max_in))
    hidden = draw(st.lists(st.integers(2, 4), min_size=1, max_size=2))
    seed = draw(st.integers(0, 2**16))
    eps = draw(st.sampled_from([0.1, 0.3, 1.0]))
    net = _net(seed, [n_in, *hidden, 2])
    ball = _box(seed, n_in, eps)
    c = torch.tensor([[1.0, -1.0]], dtype=torch.float64)
    return net, ball, c


@settings(max_examples=10)
@given(problem=small_problems(), side=st.sampled_from([1.0, -1.0]))
def test_relu_splitting_decides_like_the_enumeration_of_patterns(problem, side):
    net, ball, c = problem
    true_min = exact_minimum(net, ball.lo[0].numpy(), ball.hi[0].numpy(), c[0].numpy())
    delta = side * (0.02 * (1 + abs(true_min)))
    d = torch.tensor([-true_min + delta], dtype=torch.float64)  # the property's margin is exactly delta
    v = bab(net, ball, c, d, time_limit=None, options=NO_ATTACK)
    assert v.status == ("verified" if side > 0 else "violated"), v.reason
    if side > 0:
        assert v.bound <= delta + 1e-9  # a lower bound on the true margin
    else:
        assert true_min + float(d[0]) - 1e-9 <= v.value <= 0  # a real point: never below the true minimum


@settings(max_examples=4)
@given(seed=st.integers(0, 2**16), side=st.sampled_from([1.0, -1.0]))
def test_input_splitting_decides_like_the_enumeration_of_patterns(seed, side):
    net, ball = _net(seed, [2, 6, 4, 2]), _box(seed, 2, 0.5)
    c = torch.tensor([[1.0, -1.0]], dtype=torch.float64)
    true_min = exact_minimum(net, ball.lo[0].numpy(), ball.hi[0].numpy(), c[0].numpy())
    delta = side * 0.05 * (1 + abs(true_min))
    d = torch.tensor([-true_min + delta], dtype=torch.float64)
    v = bab(net, ball, c, d, time_limit=None, options=BabOptions(**{**FAST, "restarts": 1, "attack_steps": 0}, attack_every=0))
    assert v.status == ("verified" if side > 0 else "violated"), v.reason
    if side > 0:
        assert v.bound <= delta + 1e-9


@settings(max_examples=10)
@given(problem=small_problems(), seed=st.integers(0, 1000))
def test_every_leaf_bound_is_at_most_the_leafs_true_minimum(problem, seed):
    net, ball, c = problem
    root = dual_bounds(net, ball)
    gen = torch.Generator().manual_seed(seed)
    n = 6
    splits = []
    for lo, up in root.hidden:  # random splits of crossing units (and some of stable ones)
        s = torch.randint(-1, 2, (n, lo.shape[1]), generator=gen).to(torch.int8)
        splits.append(s)
    alpha = [torch.rand(n, 1, s.shape[1], generator=gen, dtype=torch.float64) for s in splits]
    beta = [3 * torch.rand(n, 1, s.shape[1], generator=gen, dtype=torch.float64) for s in splits]
    cs = c.unsqueeze(0).expand(n, 1, 2)
    bounds = leaf_bounds(net, ball, root, cs, splits, alpha, beta)
    for k in range(n):
        truth = exact_minimum(net, ball.lo[0].numpy(), ball.hi[0].numpy(), c[0].numpy(),
                              [s[k].numpy().astype(float) for s in splits])
        assert not float(bounds[k, 0].detach()) > truth + 1e-9, (k, float(bounds[k, 0].detach()), truth)


def test_beta_zero_reproduces_the_plain_dual_and_beta_tightens():
    net, ball = _net(3, [3, 8, 8, 2]), _box(3, 3, 0.4)
    root = dual_bounds(net, ball)
    c = torch.tensor([[[1.0, -1.0]]], dtype=torch.float64).expand(4, 1, 2)
    gen = torch.Generator().manual_seed(0)
    splits = [torch.where(root.crossing(i)[0], torch.randint(-1, 2, (4, lo.shape[1]), generator=gen), 0).to(torch.int8)
              for i, (lo, _) in enumerate(root.hidden)]
    assert any(bool((s != 0).any()) for s in splits)
    zero = [torch.zeros(4, 1, s.shape[1], dtype=torch.float64) for s in splits]
    plain = dual_objective(net, ball.select(torch.zeros(4, dtype=torch.long)), c, split_bounds(root, splits))
    assert torch.equal(leaf_bounds(net, ball, root, c, splits, None, zero), plain)
    assert torch.equal(leaf_bounds(net, ball, root, c, splits, None, None), plain)
    # A β > 0 changes the bound (it is wired in), and BaB's optimised β never loses to β = 0.
    ones = [torch.ones_like(z) for z in zero]
    assert not torch.equal(leaf_bounds(net, ball, root, c, splits, None, ones), plain)


@settings(max_examples=8)
@given(problem=small_problems(max_in=4), scale=st.sampled_from([0.0, 0.5, 1.0]))
def test_verified_never_coexists_with_a_violating_point(problem, scale):
    net, ball, c = problem
    points = torch.cat([ball.sample(2000, generator=torch.Generator().manual_seed(1))[0],
                        ball.sample(500, vertices=True, generator=torch.Generator().manual_seed(2))[0]])
    values = (net(points) @ c[0]).detach()
    d = torch.tensor([-float(values.min()) * scale + 1e-3], dtype=torch.float64)  # between the sampled min and far above
    v = bab(net, ball, c, d, time_limit=None, options=BabOptions(**FAST))
    z, attacked = falsify(net, ball.lo[0], ball.hi[0], c, d, restarts=20, steps=30)
    if float((values + d).min()) <= 0 or float(attacked.min()) <= 0:
        assert v.status != "verified"
    if v.status == "violated":  # the witness reproduces, independently of the checks inside
        w = torch.as_tensor(v.witness).view(1, -1)
        net = net.detached(torch.float64)
        assert bool(ball.contains_exactly(w.view(1, 1, -1))[0, 0])
        assert float(net(w)[0] @ c[0] + d[0]) <= 0
        assert float(net(w)[0] @ c[0] + d[0]) == pytest.approx(v.value, abs=1e-12)
    assert v.status in ("verified", "violated"), v.reason  # small nets are decided


def test_falsifier_witnesses_reproduce_in_the_box():
    net = lv.Network.from_torch(random_mlp([5, 16, 16, 3], 11))
    x = torch.rand(1, 5, generator=torch.Generator().manual_seed(0))
    ball = lv.LinfBall(x, 0.5)
    c = torch.tensor([[1.0, -1.0, 0.0], [1.0, 0.0, -1.0]])
    d = torch.zeros(2)
    z, values = falsify(net, ball.lo[0], ball.hi[0], c, d, restarts=30, steps=20)
    assert ((z >= ball.lo) & (z <= ball.hi)).all()
    again = (net(z) @ c.T + d).min(1).values.detach()
    assert torch.allclose(again, values, atol=1e-6)
    assert torch.all(values[1:] >= values[:-1])  # sorted, best first
    # It beats the centre and a random point, which is what a falsifier is for.
    centre = float((net(ball.mid) @ c.T).min().detach())
    assert float(values[0]) <= centre


def test_a_disjunct_is_convicted_only_when_all_its_rows_are_violated():
    net = lv.Network.from_torch(random_mlp([2, 6, 3], 5).double())
    ball = _box(5, 2, 0.2)
    y = net(ball.mid)[0].detach()
    c = torch.eye(3, dtype=torch.float64)[:2]  # rows y0 + d0 ≤ 0 and y1 + d1 ≤ 0
    z = ball.mid[0]
    # At the centre a row with offset −y − 1 is −1 (violated), one with −y + 1 is +1.
    both = Property(c, torch.stack([-y[0] - 1, -y[1] - 1]), torch.tensor([0, 0]))
    one = Property(c, torch.stack([-y[0] - 1, -y[1] + 1]), torch.tensor([0, 0]))
    split = Property(c, torch.stack([-y[0] + 1, -y[1] - 1]), torch.tensor([0, 1]))
    assert check_property_witness(net, ball, both, z)[0]
    assert not check_property_witness(net, ball, one, z)[0]
    assert check_property_witness(net, ball, split, z)[0]


def test_bab_is_a_verify_method_and_decides_a_disjunction_of_conjunctions():
    assert "bab" in METHODS
    net = lv.Network.from_torch(random_mlp([2, 8, 8, 2], 2).double())
    ball = _box(2, 2, 0.2)
    verdicts = verify(net, ball, torch.tensor([[[1.0, -1.0]]], dtype=torch.float64), method="bab", time_limit=None)
    assert verdicts[0].status in ("verified", "violated")
    lo, hi = ball.lo[0].tolist(), ball.hi[0].tolist()
    y = net(ball.mid)[0].detach().tolist()
    head = "".join(f"(declare-const X_{i} Real)\n" for i in range(2)) + "".join(f"(declare-const Y_{i} Real)\n" for i in range(2))
    box = "".join(f"(assert (>= X_{i} {lo[i]!r}))\n(assert (<= X_{i} {hi[i]!r}))\n" for i in range(2))
    # Unsafe: (Y_0 >= far above its range and Y_1 anything) or (Y_0 <= y0 + 1 and Y_1 <= y1 + 1): the centre violates.
    sat = head + box + f"(assert (or (and (>= Y_0 1e6)) (and (<= Y_0 {y[0] + 1!r}) (<= Y_1 {y[1] + 1!r}))))\n"
    unsat = head + box + "(assert (or (and (>= Y_0 1e6)) (and (>= Y_1 1e6) (<= Y_0 1e7))))\n"
    v_sat = verify_property(net, parse_vnnlib(sat), "bab", time_limit=None)
    v_unsat = verify_property(net, parse_vnnlib(unsat), "bab", time_limit=None)
    assert v_sat.status == "violated" and v_unsat.status == "verified"
    ok, *_ = check_witness(net, ball, torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64),
                           torch.tensor([-(y[0] + 1), -(y[1] + 1)], dtype=torch.float64), v_sat.witness)
    assert ok


def _decide(seed: int) -> str:
    net, ball = _net(seed, [2, 6, 6, 2]), _box(seed, 2, 0.3)
    return str(bab(net, ball, torch.tensor([[1.0, -1.0]], dtype=torch.float64), time_limit=None,
                   options=BabOptions(**FAST, input_split_dims=0)).status)


def test_parallel_and_serial_runs_give_the_same_verdicts():
    seeds = [0, 1, 2, 3]
    serial = pool_map(_decide, seeds, workers=1)
    assert pool_map(_decide, seeds, workers=2) == serial
    assert set(serial) <= {"verified", "violated"}
