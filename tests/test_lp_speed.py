"""benchmarks/lp_speed.py: the direct and CVXPY models timed on the same margin LPs."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

from conftest import random_convnet

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_lp_speed_rows_time_both_models_on_the_same_lps():
    spec = importlib.util.spec_from_file_location("benchmarks_lp_speed", BENCHMARKS / "lp_speed.py")
    lp_speed = importlib.util.module_from_spec(spec)
    sys.modules["benchmarks_lp_speed"] = lp_speed
    spec.loader.exec_module(lp_speed)
    model, shape = random_convnet(1, 8, seed=2, n_out=5)
    images = torch.rand(2, *shape, generator=torch.Generator().manual_seed(2))
    rows = lp_speed.lp_speed_rows({"tiny": model.double()}, images, threads=1, targets=3, cvxpy_targets=2)
    assert len(rows) == 1
    row = rows[0]
    assert (row["model"], row["images"], row["direct_lps"], row["cvxpy_lps"]) == ("tiny", 2, 6, 4)
    assert row["direct_solver"] == "simplex" and row["cvxpy_unfinished"] == 0 and row["crossing"] > 0
    assert row["max_rel_diff"] <= 1e-6  # the same optima from both builds
    assert row["direct_s_per_lp"] > 0 and row["speedup"] == row["cvxpy_s_per_lp"] / row["direct_s_per_lp"]
