"""lpverify: the convex outer adversarial polytope of Wong & Kolter (ICML 2018), side by side.

Public API (re-exported names only)::

    import lpverify as lv
    net = lv.Network.from_torch(model)
    ball = lv.LinfBall(x, eps)
    b = lv.interval_bounds(net, ball)        # Appendix B
    b = lv.dual_bounds(net, ball)            # Algorithm 1
    J = lv.dual_objective(net, ball, c, b)   # Theorem 1, (batch, m)
    r = lv.solve_lp(net, ball, c, b)         # eq. 19, one example; r.bound is its safe bound
    rs = lv.solve_batch(net, ball, c, b, workers=2)  # eq. 19 for every example, 2 processes
    ok = lv.certify(net, x, y, eps)          # Corollary 1, rigorous (SOUNDNESS.md)
    J = lv.objective_from_multipliers(net, ball, c, b, nus)  # a safe bound from any multipliers

    J = lv.optimize_alpha(net, ball, c, b)   # Theorem 1, optimised slopes
    b = lv.lp_bounds(net, ball)              # LP-all
    r = lv.solve_milp(net, ball, c, b)       # exact (MATH.md §6)
    v = lv.verify(net, ball, c, method="lp") # verdicts by any method
    net = lv.load_onnx("net.onnx"); prop = lv.read_vnnlib("prop.vnnlib")
"""

from . import data, zoo
from .bounds import Bounds, interval_bounds, interval_objective
from .activations import RELU, SIGMOID, TANH, Activation, LeakyReLU, ReLU, Sigmoid, Tanh
from .attacks import attack_error, fgsm, pgd, predict
from .certify import CertifiedRadius, certified_radius, certify, detect, margin_bounds, max_certified_eps, robust_loss
from .dual import (
    ForwardObjective,
    dual_bounds,
    dual_bounds_and_objective,
    dual_objective,
    forward_objective,
    objective_from_multipliers,
    optimize_alpha,
)
from .relu import relu_slope
from .lp import CvxpyLP, HighsLP, LPResult, build_lp, solve_batch, solve_lp
from .lpall import lp_bounds
from .milp import MILPResult, build_milp, solve_milp
from .network import AffineBlock, Network
from .onnx_import import OnnxImportError, load_onnx
from .ops import Normalize
from .sets import Ball, LinfBall, LpBall
from .specs import margin_objectives, robustness_objectives
from .verify import (
    METHODS,
    Status,
    Verdict,
    applicable_methods,
    check_witness,
    objective_bounds,
    verify,
    verify_property,
)
from .vnnlib import VnnlibError, VnnlibProperty, read_vnnlib

__all__ = [
    "Activation",
    "AffineBlock",
    "applicable_methods",
    "LeakyReLU",
    "ReLU",
    "RELU",
    "Sigmoid",
    "SIGMOID",
    "Tanh",
    "TANH",
    "attack_error",
    "Ball",
    "Bounds",
    "build_lp",
    "build_milp",
    "certified_radius",
    "CertifiedRadius",
    "certify",
    "check_witness",
    "CvxpyLP",
    "data",
    "detect",
    "dual_bounds",
    "dual_bounds_and_objective",
    "forward_objective",
    "ForwardObjective",
    "dual_objective",
    "fgsm",
    "HighsLP",
    "interval_bounds",
    "interval_objective",
    "LinfBall",
    "load_onnx",
    "lp_bounds",
    "LpBall",
    "LPResult",
    "margin_bounds",
    "margin_objectives",
    "max_certified_eps",
    "METHODS",
    "MILPResult",
    "Network",
    "Normalize",
    "OnnxImportError",
    "objective_bounds",
    "optimize_alpha",
    "pgd",
    "predict",
    "read_vnnlib",
    "relu_slope",
    "robust_loss",
    "robustness_objectives",
    "objective_from_multipliers",
    "Status",
    "solve_batch",
    "solve_lp",
    "solve_milp",
    "Verdict",
    "verify",
    "verify_property",
    "VnnlibError",
    "VnnlibProperty",
    "zoo",
]
__version__ = "0.1.0"
