"""lpverify: the convex outer adversarial polytope of Wong & Kolter (ICML 2018), side by side.

Public API (re-exported names only)::

    import lpverify as lv
    net = lv.Network.from_torch(model)
    ball = lv.LinfBall(x, eps)
    b = lv.interval_bounds(net, ball)        # Appendix B
    b = lv.dual_bounds(net, ball)            # Algorithm 1
    J = lv.dual_objective(net, ball, c, b)   # Theorem 1, (batch, m)
    r = lv.solve_lp(net, ball, c, b)         # eq. 19, one example
    ok = lv.certify(net, x, y, eps)          # Corollary 1
"""

from . import data, zoo
from .bounds import Bounds, interval_bounds, interval_objective
from .certify import certify, margin_bounds
from .dual import dual_bounds, dual_objective, relu_slope
from .lp import CvxpyLP, HighsLP, LPResult, build_lp, solve_lp
from .network import AffineBlock, Network
from .sets import LinfBall
from .specs import margin_objectives

__all__ = [
    "AffineBlock",
    "Bounds",
    "CvxpyLP",
    "HighsLP",
    "LPResult",
    "LinfBall",
    "Network",
    "build_lp",
    "certify",
    "data",
    "dual_bounds",
    "dual_objective",
    "interval_bounds",
    "interval_objective",
    "margin_bounds",
    "margin_objectives",
    "relu_slope",
    "solve_lp",
    "zoo",
]
__version__ = "0.1.0"
