"""Training settings and schedules, torch-free (the CLI builds its options from them).

:class:`Loss` names the training losses of :mod:`lpverify.losses`;
:class:`TrainConfig` is one run's settings, its defaults the recipe of
``lpverify train``; :func:`schedule_at` gives ε, κ, β and the learning rate at
any point of training (MATH.md §7, §12).
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, fields
from enum import Enum


class Loss(Enum):
    """How a training loss bounds the margins (see :mod:`lpverify.losses`)."""

    STANDARD = "standard"  # plain cross-entropy
    EXACT = "exact"  # Algorithm 1 and Theorem 1 (the paper)
    PROJECTION = "projection"  # Algorithm 1 with Cauchy projections (an estimate, training only)
    IBP = "ibp"  # interval bounds
    CROWN_IBP = "crown-ibp"  # interval bounds, the dual network for the last layer


@dataclass(frozen=True)
class TrainConfig:
    """Settings of a training run. The defaults are the recipe that ``lpverify train`` uses on MNIST at ε = 0.1.

    CROWN-IBP (β = 1 throughout: the dual network over interval bounds, which
    the exact dual certificate follows closely), one epoch of plain training,
    ε 0 → 0.1 and κ 1 → 0 over 15 epochs, 40 epochs, the learning rate ×0.2 at
    epochs 28 and 35. On the paper's MNIST network, 2 threads: about 61 s per
    epoch, 41 minutes in all, and 5.64% certified error on the test set (the
    paper: 5.82% after 100 epochs of the exact loss); ``benchmarks/train_fast.py``.

    The paper's MNIST settings: ``loss=Loss.EXACT, epochs=100, eps_start=0.05,
    warmup_epochs=0, ramp_epochs=50, kappa_start=0, kappa_end=0``.
    """

    epochs: int = 40
    lr: float = 1e-3
    batch_size: int = 50
    loss: Loss = Loss.CROWN_IBP
    eps: float = 0.1  # final training ε, also the ε of the test-set metrics
    eps_start: float = 0.0  # ε during the warm-up and at the start of the ramp
    warmup_epochs: float = 1.0  # epochs at eps_start, κ = kappa_start, β = beta_start
    ramp_epochs: float = 15.0  # epochs of the linear ramps eps_start → eps, κ and β
    kappa_start: float = 1.0  # weight of the clean cross-entropy
    kappa_end: float = 0.0
    beta_start: float = 1.0  # CROWN-IBP's weight of the dual bound against the interval bound
    beta_end: float = 1.0
    projections: int = 50  # Cauchy projections per ℓ1 term (Loss.PROJECTION)
    lr_steps: tuple[float, ...] = (28.0, 35.0)  # epochs at which the learning rate is multiplied by lr_step_factor
    lr_step_factor: float = 0.2
    seed: int = 0
    test_robust_examples: int | None = 1000  # test examples certified after each epoch (None: all)
    eval_batch_size: int = 100
    checkpoint_minutes: float = 5.0  # a checkpoint at least this often, besides one per epoch

    def __post_init__(self) -> None:
        if not isinstance(self.loss, Loss):
            object.__setattr__(self, "loss", Loss(self.loss))
        object.__setattr__(self, "lr_steps", tuple(float(s) for s in self.lr_steps))
        if self.epochs < 0 or self.batch_size < 1 or self.lr <= 0 or self.projections < 1:
            raise ValueError(f"need epochs >= 0, batch_size >= 1, lr > 0 and projections >= 1 in {self}")
        if min(self.eps, self.eps_start, self.warmup_epochs, self.ramp_epochs, self.checkpoint_minutes) < 0:
            raise ValueError(f"eps, eps_start, warmup_epochs, ramp_epochs and checkpoint_minutes must be >= 0 in {self}")
        for name in ("kappa_start", "kappa_end", "beta_start", "beta_end"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if self.lr_step_factor <= 0:
            raise ValueError(f"lr_step_factor must be > 0, got {self.lr_step_factor}")

    def to_json(self) -> dict:
        """The settings as JSON values (the loss by name)."""
        d = asdict(self)
        d["loss"] = self.loss.value
        d["lr_steps"] = list(self.lr_steps)
        return d


@dataclass(frozen=True)
class Schedule:
    """The schedule's values at one point of training."""

    eps: float
    kappa: float
    beta: float
    lr: float


def schedule_at(config: TrainConfig, t: float) -> Schedule:
    """ε, κ, β and the learning rate after ``t`` epochs (fractional: epoch + batch / batches)."""
    if config.ramp_epochs > 0:
        p = min(1.0, max(0.0, (t - config.warmup_epochs) / config.ramp_epochs))
    else:
        p = 1.0 if t >= config.warmup_epochs else 0.0
    lr = config.lr * config.lr_step_factor ** sum(1 for s in config.lr_steps if t >= s)
    return Schedule(
        eps=config.eps_start + p * (config.eps - config.eps_start),
        kappa=config.kappa_start + p * (config.kappa_end - config.kappa_start),
        beta=config.beta_start + p * (config.beta_end - config.beta_start),
        lr=lr,
    )


def epsilon_at(config: TrainConfig, epoch: int, batch: int, n_batches: int) -> float:
    """ε of the schedule at a batch of an epoch."""
    return schedule_at(config, epoch + batch / n_batches).eps


# -- command-line options (lpverify train, benchmarks) ---------------------------------------------

_HELP = {
    "epochs": "epochs",
    "lr": "Adam learning rate",
    "batch_size": "examples per step",
    "loss": "training loss: " + ", ".join(m.value for m in Loss),
    "eps": "final training ε (also the ε of the evaluation)",
    "eps_start": "ε during the warm-up and at the start of the ramp",
    "warmup_epochs": "epochs at eps-start before the ramp",
    "ramp_epochs": "epochs of the linear ramps of ε, κ and β",
    "kappa_start": "κ, the clean cross-entropy's weight, before the ramp",
    "kappa_end": "κ after the ramp",
    "beta_start": "β (CROWN-IBP: weight of the dual bound against IBP) before the ramp",
    "beta_end": "β after the ramp",
    "projections": "Cauchy projections per l1 term (--loss projection)",
    "lr_steps": "epochs at which the learning rate is multiplied by --lr-step-factor",
    "lr_step_factor": "learning-rate factor at each of --lr-steps",
    "seed": "seed of the initialisation, data order and projections",
    "test_robust_examples": "test images certified after each epoch",
    "eval_batch_size": "examples per evaluation batch",
    "checkpoint_minutes": "minutes between checkpoints (besides one per epoch)",
}


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per :class:`TrainConfig` field (``--ramp-epochs``…), its default shown."""
    default = TrainConfig()
    for f in fields(TrainConfig):
        value = getattr(default, f.name)
        flag = "--" + f.name.replace("_", "-")
        help_ = f"{_HELP[f.name]} (default: {value.value if isinstance(value, Loss) else value})"
        if f.name == "loss":
            parser.add_argument(flag, choices=[m.value for m in Loss], default=value.value, help=help_)
        elif f.name == "lr_steps":
            parser.add_argument(flag, type=float, nargs="*", default=list(value), help=help_)
        elif f.name == "test_robust_examples":
            parser.add_argument(flag, type=int, default=value, help=help_)
        else:
            parser.add_argument(flag, type=type(value), default=value, help=help_)


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` of options added by :func:`add_train_arguments` (a ValueError names a bad one)."""
    return TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})


__all__ = ["Loss", "Schedule", "TrainConfig", "add_train_arguments", "epsilon_at", "schedule_at", "train_config_from_args"]
