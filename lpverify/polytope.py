"""The adversarial polytope in a 2D output space: true (sampled) and convex outer (support functions).

For one input set B(x) and a network with two outputs:

* the true set ``f(B(x))``, approximated by the image of a dense grid over a
  2D input box (:func:`sampled_image`), cells included so it can be drawn
  filled;
* the convex outer polytope of eq. 19 through its support function
  ``h(d) = max_{relaxation} dᵀ ẑ_k = −LP(−d)`` (:func:`support_lp`), and the
  dual network's outer half-spaces ``dᵀ ẑ_k ≤ −J(−d)`` (:func:`support_dual`),
  each turned into a polygon by intersecting its half-spaces
  (:func:`polygon`).

The nesting ``sampled ⊆ LP polygon ⊆ dual polygon`` holds in every direction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import ConvexHull, HalfspaceIntersection

from .bounds import Bounds
from .dual import dual_objective
from .lp import build_lp
from .network import Network
from .sets import LinfBall


@dataclass(frozen=True)
class SampledImage:
    """The image of a ``grid × grid`` lattice over the input box: points (grid, grid, 2)."""

    points: np.ndarray

    def cells(self) -> np.ndarray:
        """The images of the lattice cells as quadrilaterals, (n_cells, 4, 2), to draw the region filled."""
        p = self.points
        return np.stack([p[:-1, :-1], p[1:, :-1], p[1:, 1:], p[:-1, 1:]], axis=2).reshape(-1, 4, 2)

    def support(self, directions: np.ndarray) -> np.ndarray:
        """max over the sampled points of dᵀy, for directions (k, 2) → (k,)."""
        return (self.points.reshape(-1, 2) @ directions.T).max(0)


def directions(k: int) -> np.ndarray:
    """k unit vectors evenly spread on the circle, the four axis directions among them when 4 divides k."""
    angles = 2 * math.pi * np.arange(k) / k
    return np.stack([np.cos(angles), np.sin(angles)], 1)


def _check_2d(net: Network, ball: LinfBall, need_2d_input: bool) -> None:
    if ball.batch_size != 1:
        raise ValueError(f"the polytope is drawn for one example; got a batch of {ball.batch_size}")
    if net.n_outputs != 2:
        raise ValueError(f"the output space must be 2D to draw, the network has {net.n_outputs} outputs")
    if need_2d_input and math.prod(ball.shape) != 2:
        raise ValueError(f"sampling a grid needs a 2D input, the input has shape {ball.shape}")


def sampled_image(net: Network, ball: LinfBall, grid: int = 300) -> SampledImage:
    """f over a grid × grid lattice of the (2D) input box, corners and edges included."""
    _check_2d(net, ball, need_2d_input=True)
    lo, hi = ball.lo[0].reshape(2), ball.hi[0].reshape(2)
    t = torch.linspace(0, 1, grid, dtype=ball.center.dtype, device=ball.center.device)
    u, v = torch.meshgrid(lo[0] + t * (hi[0] - lo[0]), lo[1] + t * (hi[1] - lo[1]), indexing="ij")
    with torch.no_grad():
        out = net(torch.stack([u.ravel(), v.ravel()], 1).reshape(-1, *ball.shape))
    return SampledImage(out.reshape(grid, grid, 2).cpu().double().numpy())


def support_lp(net: Network, ball: LinfBall, bounds: Bounds, dirs: np.ndarray) -> np.ndarray:
    """The LP's support function ``h(d) = −min_{relaxation} (−d)ᵀ ẑ_k`` for directions (k, 2).

    One model, re-solved per direction. A direction whose LP is not optimal
    gets +inf: no half-space, never a wrong one.
    """
    _check_2d(net, ball, need_2d_input=False)
    model = build_lp(net, ball, bounds)
    values = []
    for d in dirs:
        result = model.solve(-np.asarray(d, dtype=np.float64))
        values.append(-result.value if result.optimal else math.inf)
    return np.asarray(values)


def support_dual(net: Network, ball: LinfBall, bounds: Bounds, dirs: np.ndarray) -> np.ndarray:
    """The dual network's outer bound ``−J(−d)`` on max dᵀ ẑ_k, for directions (k, 2) at once."""
    _check_2d(net, ball, need_2d_input=False)
    c = -torch.as_tensor(dirs, dtype=ball.center.dtype, device=ball.center.device).unsqueeze(0)
    with torch.no_grad():
        return -dual_objective(net, ball, c, bounds)[0].cpu().double().numpy()


def polygon(dirs: np.ndarray, support: np.ndarray, interior: np.ndarray) -> np.ndarray:
    """The polygon ``{y : dᵀy ≤ h(d) for every d}`` as ordered vertices (n, 2).

    ``interior`` must lie strictly inside it (the network's output at x does,
    for ε > 0). Directions with an infinite support are left out.
    """
    keep = np.isfinite(support)
    if keep.sum() < 3:
        raise ValueError("need at least three finite support values to bound a polygon")
    halfspaces = np.hstack([dirs[keep], -support[keep][:, None]])  # d·y − h ≤ 0
    try:
        points = HalfspaceIntersection(halfspaces, np.asarray(interior, dtype=np.float64)).intersections
    except Exception as err:  # scipy raises QhullError or ValueError for a bad interior point
        raise ValueError(f"the half-spaces do not bound a polygon around {interior}: {err}") from err
    hull = ConvexHull(points)
    return points[hull.vertices]
