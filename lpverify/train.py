"""Training with the standard or the robust loss (Theorem 2; MATH.md §7).

Adam, an ε schedule (linear warm-up from ``eps_start`` to ``eps``, as the paper
does for MNIST: 0.05 → 0.1 over 50 epochs), a per-epoch CSV log of normal and
robust loss and error on the training batches and the test set, a progress
bar, and a checkpoint written atomically after every epoch. Rerunning with
the same output folder resumes after the last finished epoch; the order of
the training data depends only on the seed and the epoch, so a resumed run
equals an uninterrupted one.
"""

from __future__ import annotations

import io
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .certify import certify, robust_loss
from .io import atomic_write_bytes, write_csv

Dataset = tuple[Tensor, Tensor]


@dataclass(frozen=True)
class TrainConfig:
    """Settings of a training run; the paper's MNIST settings are the defaults with ``epochs=100, warmup_epochs=50``."""

    epochs: int = 20
    lr: float = 1e-3
    batch_size: int = 50
    robust: bool = True
    eps: float = 0.1  # final ε, also the ε of the test-set robust metrics
    eps_start: float = 0.05  # ε at the start of the warm-up
    warmup_epochs: int = 0  # epochs of the linear schedule eps_start → eps (0: eps throughout)
    seed: int = 0
    test_robust_examples: int | None = 1000  # test examples certified each epoch (None: all)
    eval_batch_size: int = 100

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError(f"need epochs >= 0, batch_size >= 1 and lr > 0 in {self}")
        if self.eps < 0 or self.eps_start < 0 or self.warmup_epochs < 0:
            raise ValueError(f"eps, eps_start and warmup_epochs must be >= 0 in {self}")


@dataclass(frozen=True)
class EpochLog:
    """One row of the training log (losses are means, errors fractions)."""

    epoch: int
    eps: float
    train_loss: float
    train_err: float
    train_robust_loss: float
    train_robust_err: float
    test_loss: float
    test_err: float
    test_robust_loss: float
    test_robust_err: float
    seconds: float


def epsilon_at(config: TrainConfig, epoch: int, batch: int, n_batches: int) -> float:
    """The schedule: linear from ``eps_start`` to ``eps`` over the first ``warmup_epochs``, per batch."""
    if config.warmup_epochs == 0:
        return config.eps
    progress = (epoch + batch / n_batches) / config.warmup_epochs
    return config.eps_start + min(1.0, progress) * (config.eps - config.eps_start)


def _check_dataset(name: str, data: Dataset) -> None:
    x, y = data
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(f"{name} set: {x.shape[0]} inputs and {y.shape[0]} labels")


def evaluate(model: nn.Module, data: Dataset, eps: float, robust_examples: int | None, batch_size: int = 100) -> dict[str, float]:
    """Test loss and error, and robust loss and error at ε on the first ``robust_examples`` examples."""
    x, y = data
    was_training = model.training
    model.eval()
    loss = err = 0.0
    r_loss = r_err = 0.0
    n_robust = x.shape[0] if robust_examples is None else min(robust_examples, x.shape[0])
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            xb, yb = x[i : i + batch_size], y[i : i + batch_size]
            logits = model(xb)
            loss += float(F.cross_entropy(logits, yb, reduction="sum"))
            err += float((logits.argmax(1) != yb).sum())
        for i in range(0, n_robust, batch_size):
            xb, yb = x[i : min(i + batch_size, n_robust)], y[i : min(i + batch_size, n_robust)]
            rl, _ = robust_loss(model, xb, yb, eps)
            r_loss += float(rl) * len(yb)
            r_err += float((~certify(model, xb, yb, eps)).sum())  # the rigorous certificate, not training's estimate
    model.train(was_training)
    return {
        "test_loss": loss / x.shape[0],
        "test_err": err / x.shape[0],
        "test_robust_loss": r_loss / n_robust if n_robust else math.nan,
        "test_robust_err": r_err / n_robust if n_robust else math.nan,
    }


def _config_for_resume(config: TrainConfig) -> dict:
    """What must match to continue a run: everything but the number of epochs."""
    d = asdict(config)
    d.pop("epochs")
    return d


def train(
    model: nn.Module,
    train_set: Dataset,
    test_set: Dataset,
    config: TrainConfig,
    out_dir: str | Path,
    *,
    progress: bool = True,
) -> list[EpochLog]:
    """Train ``model`` in place; writes ``log.csv`` and ``checkpoint.pt`` to ``out_dir`` after every epoch.

    If ``out_dir`` holds a checkpoint of a run with the same settings (the
    number of epochs aside), training resumes after its last epoch. Returns
    the whole log.
    """
    from tqdm.auto import tqdm

    _check_dataset("training", train_set)
    _check_dataset("test", test_set)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint, log_path = out / "checkpoint.pt", out / "log.csv"
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    history: list[EpochLog] = []
    if checkpoint.is_file():
        try:
            state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        except Exception as err:
            raise ValueError(f"{checkpoint}: cannot be read as a checkpoint ({err}); move it away to start afresh") from err
        if state.get("config") != _config_for_resume(config):
            raise ValueError(
                f"{checkpoint} was written with settings {state.get('config')}, not {_config_for_resume(config)}; "
                "use another output folder or the same settings"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history = [EpochLog(**row) for row in state["history"]]

    x, y = train_set
    n = x.shape[0]
    n_batches = math.ceil(n / config.batch_size)
    for epoch in range(len(history), config.epochs):
        start = time.perf_counter()
        order = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed * 100_003 + epoch))
        sums = {"loss": 0.0, "err": 0.0, "robust_loss": 0.0, "robust_err": 0.0}
        model.train()
        bar = tqdm(range(n_batches), desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress, leave=False)
        for b in bar:
            idx = order[b * config.batch_size : (b + 1) * config.batch_size]
            xb, yb = x[idx], y[idx]
            eps = epsilon_at(config, epoch, b, n_batches)
            logits = model(xb)
            ce = F.cross_entropy(logits, yb)
            if config.robust:
                loss, r_err = robust_loss(model, xb, yb, eps)
                r_loss = loss
            else:
                loss, r_loss, r_err = ce, torch.tensor(math.nan), torch.tensor(math.nan)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"epoch {epoch + 1}, batch {b}: the training loss is {float(loss)}")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            k = len(yb)
            sums["loss"] += float(ce.detach()) * k
            sums["err"] += float((logits.argmax(1) != yb).sum())
            sums["robust_loss"] += float(r_loss.detach()) * k
            sums["robust_err"] += float(r_err) * k
            bar.set_postfix(eps=f"{eps:.3f}", loss=f"{float(loss.detach()):.3f}")
        test = evaluate(model, test_set, config.eps, config.test_robust_examples, config.eval_batch_size)
        history.append(EpochLog(
            epoch=epoch + 1,
            eps=epsilon_at(config, epoch, n_batches, n_batches),
            train_loss=sums["loss"] / n,
            train_err=sums["err"] / n,
            train_robust_loss=sums["robust_loss"] / n,
            train_robust_err=sums["robust_err"] / n,
            seconds=time.perf_counter() - start,
            **test,
        ))
        _save(checkpoint, model, optimizer, history, config)
        write_csv(log_path, [asdict(h) for h in history], [f.name for f in fields(EpochLog)])
        if progress:
            h = history[-1]
            print(f"epoch {h.epoch}: eps {h.eps:.3f}, train err {h.train_err:.4f} (robust {h.train_robust_err:.4f}), "
                  f"test err {h.test_err:.4f} (robust {h.test_robust_err:.4f}), {h.seconds:.0f} s", flush=True)
    return history


def _save(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, history: list[EpochLog], config: TrainConfig) -> None:
    buffer = io.BytesIO()
    torch.save({
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "history": [asdict(h) for h in history],
        "config": _config_for_resume(config),
    }, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(model: nn.Module, path: str | Path) -> list[EpochLog]:
    """Load the weights of a training checkpoint into ``model``; returns its log."""
    state = torch.load(Path(path), map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    return [EpochLog(**row) for row in state["history"]]


def fit_paper_model(
    name: str, config: TrainConfig, out_dir: str | Path, *, root: str | Path | None = None, progress: bool = True,
    train_examples: int | None = None,
) -> tuple[nn.Module, list[EpochLog]]:
    """A model of the paper's architecture for dataset ``name`` trained with ``config`` in ``out_dir``.

    Seeds the initialisation with ``config.seed``; a rerun resumes (or reuses) the run in ``out_dir``.
    ``train_examples`` keeps the first examples of the training set only.
    """
    from .data import load_dataset
    from .zoo import INPUT_SHAPES, paper_model

    torch.manual_seed(config.seed)
    model = paper_model(name)
    (x, y), (xt, yt) = load_dataset(name, "train", root), load_dataset(name, "test", root)
    shape = INPUT_SHAPES[name]
    if train_examples is not None:
        x, y = x[:train_examples], y[:train_examples]
    history = train(model, (x.reshape(-1, *shape), y), (xt.reshape(-1, *shape), yt), config, out_dir, progress=progress)
    return model.eval(), history


def train_full_batch(
    model: nn.Module, x: Tensor, y: Tensor, *, robust: bool, eps: float, steps: int, lr: float = 1e-3, log_every: int = 100
) -> list[dict[str, float]]:
    """Full-batch Adam on the standard or the robust loss (the 2D toy of Appendix B.1); logs every ``log_every`` steps."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    log = []
    for step in range(1, steps + 1):
        loss = robust_loss(model, x, y, eps)[0] if robust else F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % log_every == 0 or step == steps:
            with torch.no_grad():
                r_loss, r_err = robust_loss(model, x, y, eps)
                err = float((model(x).argmax(1) != y).float().mean())
            log.append({"robust": robust, "step": step, "loss": float(loss.detach()), "err": err,
                        "robust_loss": float(r_loss), "robust_err": float(r_err)})
    return log
