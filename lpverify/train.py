"""Provable training: the losses of :mod:`lpverify.losses` with schedules, checkpoints and a final report.

Adam on ``κ·CE(f(x), y) + (1 − κ)·CE(−J, y)`` (MATH.md §7, §12), J chosen by
:class:`~lpverify.losses.Loss`. The schedule, per batch (``t`` counts epochs,
fractions included): ``warmup_epochs`` at ε = ``eps_start`` (with κ = 1 at
the start that is plain training), then ``ramp_epochs`` over which ε goes
linearly to ``eps``, κ from ``kappa_start`` to ``kappa_end`` and β from
``beta_start`` to ``beta_end``; the learning rate is multiplied by
``lr_step_factor`` at each epoch of ``lr_steps``.

A run lives in a folder: ``checkpoint.pt`` is written atomically every
``checkpoint_minutes`` and after every epoch, with everything a rerun needs to
continue bit-exactly (weights, optimizer, position in the epoch, the running
sums, the projections' random state; the data order depends only on the seed
and the epoch). ``log.csv`` has a row per epoch. :func:`final_report`
evaluates the trained model on the whole test set with the exact, rigorous
dual bound (:func:`lpverify.certify.certify`, never the training estimate),
PGD and the clean error, and writes ``model.onnx`` beside ``result.json``.
"""

from __future__ import annotations

import io
import json
import math
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .certify import as_network, certify, correctly_classified, margin_bounds, robust_loss
from .io import atomic_write_bytes, atomic_write_text, write_csv
from .losses import training_loss
from .schedule import Schedule, TrainConfig, schedule_at
from .sets import LinfBall

Dataset = tuple[Tensor, Tensor]


@dataclass(frozen=True)
class EpochLog:
    """One row of the training log (losses are means over the epoch's batches, errors fractions).

    ``train_robust_*`` are the training loss's own J (an estimate for
    projections; NaN while κ = 1); ``test_robust_*`` come from the rigorous
    dual bound at the final ε. ``seconds`` is the epoch's training time,
    ``train_seconds`` the run's so far, neither counting evaluation.
    """

    epoch: int
    eps: float
    kappa: float
    beta: float
    lr: float
    train_loss: float
    train_err: float
    train_robust_loss: float
    train_robust_err: float
    test_loss: float
    test_err: float
    test_robust_loss: float
    test_robust_err: float
    seconds: float
    eval_seconds: float
    train_seconds: float


def _check_dataset(name: str, data: Dataset) -> None:
    x, y = data
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(f"{name} set: {x.shape[0]} inputs and {y.shape[0]} labels")


def evaluate(model: nn.Module, data: Dataset, eps: float, robust_examples: int | None, batch_size: int = 100) -> dict[str, float]:
    """Test loss and error; robust loss and certified robust error at ε on the first ``robust_examples`` examples.

    The robust numbers come from the rigorous margins of
    :func:`lpverify.certify.margin_bounds`: an example counts as certified
    only if it is correctly classified and every margin bound is > 0, as in
    :func:`lpverify.certify.certify`.
    """
    x, y = data
    was_training = model.training
    model.eval()
    loss = err = 0.0
    r_loss = r_err = 0.0
    n_robust = x.shape[0] if robust_examples is None else min(robust_examples, x.shape[0])
    net = as_network(model, tuple(x.shape[1:]))
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            xb, yb = x[i : i + batch_size], y[i : i + batch_size]
            logits = model(xb)
            loss += float(F.cross_entropy(logits, yb, reduction="sum"))
            err += float((logits.argmax(1) != yb).sum())
        for i in range(0, n_robust, batch_size):
            xb, yb = x[i : min(i + batch_size, n_robust)], y[i : min(i + batch_size, n_robust)]
            J = margin_bounds(net, LinfBall(xb, eps), yb)  # rigorous
            r_loss += float(F.cross_entropy(-J.nan_to_num(-1e30), yb, reduction="sum"))
            others = torch.ones_like(J, dtype=torch.bool).scatter(1, yb.view(-1, 1), False)
            ok = (torch.where(others, J, torch.full_like(J, math.inf)) > 0).all(1) & correctly_classified(net, xb, yb)
            r_err += float((~ok).sum())
    model.train(was_training)
    return {
        "test_loss": loss / x.shape[0],
        "test_err": err / x.shape[0],
        "test_robust_loss": r_loss / n_robust if n_robust else math.nan,
        "test_robust_err": r_err / n_robust if n_robust else math.nan,
    }


def _config_for_resume(config: TrainConfig) -> dict:
    """What must match to continue a run: everything but the number of epochs and the checkpoint interval."""
    d = config.to_json()
    d.pop("epochs")
    d.pop("checkpoint_minutes")
    return d


@dataclass
class _Position:
    """Where a run stands: the next batch of an epoch, that epoch's running sums, the time spent."""

    epoch: int = 0
    batch: int = 0
    sums: dict[str, float] = field(default_factory=lambda: dict.fromkeys(
        ("n", "loss", "err", "robust_n", "robust_loss", "robust_err"), 0.0))
    epoch_seconds: float = 0.0
    train_seconds: float = 0.0


def train(
    model: nn.Module,
    train_set: Dataset,
    test_set: Dataset,
    config: TrainConfig,
    out_dir: str | Path,
    *,
    progress: bool = True,
    stop_after: int | None = None,
) -> list[EpochLog]:
    """Train ``model`` in place; ``log.csv`` and ``checkpoint.pt`` in ``out_dir``.

    If ``out_dir`` holds a checkpoint of a run with the same settings (the
    number of epochs and the checkpoint interval aside), training continues
    from where it stopped, mid-epoch included, and ends with the same weights
    as an uninterrupted run. ``stop_after`` stops after that many batches of
    this call (a checkpoint is written first), as an interruption would.
    ``progress`` shows a bar on stderr with the ETA, ε and the running losses.
    Returns the log of the finished epochs.
    """
    from tqdm.auto import tqdm

    _check_dataset("training", train_set)
    _check_dataset("test", test_set)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint, log_path = out / "checkpoint.pt", out / "log.csv"
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)  # the projections' randomness
    history: list[EpochLog] = []
    pos = _Position()
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
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        pos = _Position(**state["position"])

    x, y = train_set
    n = x.shape[0]
    n_batches = math.ceil(n / config.batch_size)
    total = max(0, config.epochs * n_batches)
    done = min(total, pos.epoch * n_batches + pos.batch)
    bar = tqdm(total=total, initial=done, desc="training", disable=not progress, file=sys.stderr,
               dynamic_ncols=True, smoothing=0.05)
    last_save, steps = time.perf_counter(), 0

    def save() -> None:
        nonlocal last_save
        _save(checkpoint, model, optimizer, history, config, pos, generator)
        last_save = time.perf_counter()

    try:
        while pos.epoch < config.epochs:
            epoch = pos.epoch
            order = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed * 100_003 + epoch))
            model.train()
            s = pos.sums
            for b in range(pos.batch, n_batches):
                if stop_after is not None and steps >= stop_after:
                    save()
                    return history
                start = time.perf_counter()
                idx = order[b * config.batch_size : (b + 1) * config.batch_size]
                xb, yb = x[idx], y[idx]
                sched = schedule_at(config, epoch + b / n_batches)
                for group in optimizer.param_groups:
                    group["lr"] = sched.lr
                value = training_loss(config.loss, model, xb, yb, sched.eps, kappa=sched.kappa, beta=sched.beta,
                                      projections=config.projections, generator=generator)
                if not torch.isfinite(value.total):
                    raise FloatingPointError(f"epoch {epoch + 1}, batch {b}: the training loss is {float(value.total)}")
                optimizer.zero_grad()
                value.total.backward()
                optimizer.step()
                elapsed = time.perf_counter() - start
                pos.epoch_seconds += elapsed
                pos.train_seconds += elapsed
                k = float(len(yb))
                s["n"] += k
                s["loss"] += float(value.clean) * k
                s["err"] += float(value.clean_err) * k
                if not math.isnan(float(value.robust)):
                    s["robust_n"] += k
                    s["robust_loss"] += float(value.robust) * k
                    s["robust_err"] += float(value.robust_err) * k
                pos.batch, steps = b + 1, steps + 1
                bar.update(1)
                robust_mean = s["robust_loss"] / s["robust_n"] if s["robust_n"] else math.nan
                bar.set_postfix_str(
                    f"epoch {epoch + 1}/{config.epochs} eps {sched.eps:.3f} kappa {sched.kappa:.2f} "
                    f"loss {s['loss'] / s['n']:.3f} err {s['err'] / s['n']:.3f} robust {robust_mean:.3f}",
                    refresh=False,
                )
                if time.perf_counter() - last_save >= 60 * config.checkpoint_minutes:
                    save()
            eval_start = time.perf_counter()
            test = evaluate(model, test_set, config.eps, config.test_robust_examples, config.eval_batch_size)
            end = schedule_at(config, epoch + 1)
            history.append(EpochLog(
                epoch=epoch + 1, eps=end.eps, kappa=end.kappa, beta=end.beta, lr=end.lr,
                train_loss=s["loss"] / s["n"], train_err=s["err"] / s["n"],
                train_robust_loss=s["robust_loss"] / s["robust_n"] if s["robust_n"] else math.nan,
                train_robust_err=s["robust_err"] / s["robust_n"] if s["robust_n"] else math.nan,
                seconds=pos.epoch_seconds, eval_seconds=time.perf_counter() - eval_start,
                train_seconds=pos.train_seconds, **test,
            ))
            pos = _Position(epoch=epoch + 1, train_seconds=pos.train_seconds)
            save()
            write_csv(log_path, [asdict(h) for h in history], [f.name for f in fields(EpochLog)])
            if progress:
                h = history[-1]
                bar.write(f"epoch {h.epoch}: eps {h.eps:.3f}, train err {h.train_err:.4f} (robust {h.train_robust_err:.4f}), "
                          f"test err {h.test_err:.4f} (certified robust err {h.test_robust_err:.4f}), "
                          f"{h.seconds:.0f} s training + {h.eval_seconds:.0f} s evaluation", file=sys.stderr)
    finally:
        bar.close()
    return history


def _save(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, history: list[EpochLog], config: TrainConfig,
          position: _Position, generator: torch.Generator) -> None:
    buffer = io.BytesIO()
    torch.save({
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "history": [asdict(h) for h in history],
        "config": _config_for_resume(config),
        "position": asdict(position),
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
    }, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(model: nn.Module, path: str | Path) -> list[EpochLog]:
    """Load the weights of a training checkpoint into ``model``; returns its log."""
    state = torch.load(Path(path), map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    return [EpochLog(**row) for row in state["history"]]


# -- the final report ----------------------------------------------------------------------------


def final_evaluation(model: nn.Module, test_set: Dataset, eps: float, *, pgd_steps: int = 100,
                     batch_size: int = 500) -> dict[str, float]:
    """Clean, PGD and certified error on the whole test set at ε.

    Certified error: the rigorous certificate of :func:`lpverify.certify.certify`
    (Algorithm 1 and Theorem 1, rounding accounted for), never a training
    estimate. PGD: the paper's attack (``pgd_steps`` steps of 0.01 from x, no
    clamp, MATH.md §9). Inputs are not clamped to [0, 1], as in the paper's
    Table 1.
    """
    from .attacks import attack_error, pgd

    x, y = test_set
    model.eval()
    net = as_network(model, tuple(x.shape[1:]))
    start = time.perf_counter()
    clean = pgd_err = 0
    for i in range(0, len(y), batch_size):
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        wrong = ~correctly_classified(net, xb, yb)
        clean += int(wrong.sum())
        adv = pgd(model, xb, yb, eps, steps=pgd_steps) if pgd_steps else xb
        pgd_err += int((wrong | attack_error(model, adv, yb)).sum())
    attack_seconds = time.perf_counter() - start
    start = time.perf_counter()
    certified = certify(net, x, y, eps)
    n = len(y)
    return {"examples": n, "eps": eps, "clean_error": clean / n, "pgd_error": pgd_err / n,
            "certified_error": float((~certified).sum()) / n, "pgd_steps": pgd_steps,
            "attack_seconds": attack_seconds, "certify_seconds": time.perf_counter() - start}


def export_onnx(model: nn.Module, input_shape: tuple[int, ...], path: str | Path) -> Path:
    """The model as ONNX (opset 17, batch dimension dynamic), written atomically; readable by :func:`lpverify.load_onnx`."""
    buffer = io.BytesIO()
    model = model.eval()
    example = torch.zeros(1, *input_shape, dtype=next(model.parameters()).dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model, example, buffer, dynamo=False, opset_version=17, input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return atomic_write_bytes(path, buffer.getvalue())


RECORD_KEYS = ("dataset", "method", "config", "seed", "epochs", "threads", "train_seconds", "clean_error", "pgd_error",
               "certified_error", "eps", "examples")


def final_report(model: nn.Module, test_set: Dataset, config: TrainConfig, history: list[EpochLog], out_dir: str | Path,
                 *, dataset: str = "", pgd_steps: int = 100, train_examples: int | None = None) -> dict:
    """Evaluate (:func:`final_evaluation`), export ``model.onnx`` and write ``result.json`` in ``out_dir``; returns the record.

    The record holds the method, the whole schedule, the seed, epochs,
    threads, ``train_seconds`` (training only, summed over resumed runs) and
    the clean, PGD and certified errors.
    """
    out = Path(out_dir)
    x, _ = test_set
    record = {
        "dataset": dataset,
        "method": config.loss.value,
        "config": config.to_json(),
        "seed": config.seed,
        "epochs": len(history),
        "threads": torch.get_num_threads(),
        "train_seconds": history[-1].train_seconds if history else 0.0,
        "train_examples": train_examples,
        **final_evaluation(model, test_set, config.eps, pgd_steps=pgd_steps),
        "torch": torch.__version__,
        "model": "model.onnx",
    }
    export_onnx(model, tuple(x.shape[1:]), out / "model.onnx")
    atomic_write_text(out / "result.json", json.dumps(record, indent=2) + "\n")
    return record


# -- entry points ---------------------------------------------------------------------------------


def fit_paper_model(
    name: str, config: TrainConfig, out_dir: str | Path, *, root: str | Path | None = None, progress: bool = True,
    train_examples: int | None = None, report: bool = False, report_examples: int | None = None,
) -> tuple[nn.Module, list[EpochLog]]:
    """A model of the paper's architecture for dataset ``name`` trained with ``config`` in ``out_dir``.

    Seeds the initialisation with ``config.seed``; a rerun resumes (or reuses) the run in ``out_dir``.
    ``train_examples`` keeps the first examples of the training set only. ``report`` ends with
    :func:`final_report` on the whole test set, or its first ``report_examples`` images
    (``model.onnx`` and ``result.json`` in ``out_dir``).
    """
    from .data import load_dataset
    from .zoo import INPUT_SHAPES, paper_model

    torch.manual_seed(config.seed)
    model = paper_model(name)
    (x, y), (xt, yt) = load_dataset(name, "train", root), load_dataset(name, "test", root)
    shape = INPUT_SHAPES[name]
    if train_examples is not None:
        x, y = x[:train_examples], y[:train_examples]
    test = (xt.reshape(-1, *shape), yt)
    history = train(model, (x.reshape(-1, *shape), y), test, config, out_dir, progress=progress)
    if report:
        if report_examples is not None:
            test = (test[0][:report_examples], test[1][:report_examples])
        final_report(model, test, config, history, out_dir, dataset=name, train_examples=train_examples)
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


__all__ = ["EpochLog", "RECORD_KEYS", "Schedule", "TrainConfig", "evaluate", "export_onnx", "final_evaluation",
           "final_report", "fit_paper_model", "load_checkpoint", "schedule_at", "train", "train_full_batch"]
