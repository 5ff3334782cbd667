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
from .attacks import attack_error, fgsm, pgd, predict
from .certify import CertifiedRadius, certified_radius, certify, detect, margin_bounds, max_certified_eps, robust_loss
from .dual import dual_bounds, dual_objective, relu_slope
from .lp import CvxpyLP, HighsLP, LPResult, build_lp, solve_lp
from .network import AffineBlock, Network
from .sets import LinfBall
from .specs import margin_objectives

__all__ = [
    "AffineBlock",
    "CertifiedRadius",
    "Bounds",
    "CvxpyLP",
    "HighsLP",
    "LPResult",
    "LinfBall",
    "Network",
    "attack_error",
    "build_lp",
    "certified_radius",
    "certify",
    "data",
    "detect",
    "dual_bounds",
    "dual_objective",
    "fgsm",
    "interval_bounds",
    "interval_objective",
    "margin_bounds",
    "margin_objectives",
    "max_certified_eps",
    "pgd",
    "predict",
    "relu_slope",
    "robust_loss",
    "solve_lp",
    "zoo",
]
__version__ = "0.1.0"
