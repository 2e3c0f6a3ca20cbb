"""Keras callbacks for the training loop: NaN guard, checkpoints, epoch stats, evaluation."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, Optional

import keras
import numpy as np
import tensorflow as tf

from util.atomic import append_jsonl, read_jsonl, write_text_atomic

if TYPE_CHECKING:
    from engine.budget import EpochPlan


def _as_float(value):
    try:
        return float(np.asarray(value))
    except (TypeError, ValueError):
        return float("nan")


class StopOnNaN(keras.callbacks.Callback):
    """Stops training as soon as the loss is not finite; remembers where.

    Checked every ``every`` batches and at each epoch end (a host sync per
    check), before the checkpoint callback runs so a NaN model is never saved.
    """

    def __init__(self, every: int = 20) -> None:
        super().__init__()
        self.every = every
        self.bad_epoch = None
        self.epoch = 0

    def on_epoch_begin(self, epoch: int, logs: Optional[dict] = None) -> None:
        self.epoch = epoch

    def _check(self, logs, batch=None):
        if self.bad_epoch is None and logs and not math.isfinite(_as_float(logs.get("loss", 0.0))):
            self.bad_epoch = self.epoch
            self.bad_batch = batch
            self.model.stop_training = True

    def on_train_batch_end(self, batch: int, logs: Optional[dict] = None) -> None:
        if batch % self.every == 0:
            self._check(logs, batch)

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        self._check(logs)

    @property
    def triggered(self) -> bool:
        return self.bad_epoch is not None


def is_last_epoch(done: int, total_epochs: int | EpochPlan) -> bool:
    """Whether epoch ``done`` (1-based) is the last: ``total_epochs`` is a number or an
    engine.budget.EpochPlan, whose epochs a --train_minutes run plans while training."""
    if hasattr(total_epochs, "is_last"):
        return total_epochs.is_last(done)
    return done == total_epochs


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves model + optimizer + epoch every ``every`` epochs and at the last one."""

    def __init__(self, manager: tf.train.CheckpointManager, epoch_var: tf.Variable, every: int,
                 total_epochs: int | EpochPlan, nan_guard: Optional[StopOnNaN] = None) -> None:
        super().__init__()
        self.manager = manager
        self.epoch_var = epoch_var
        self.every = max(1, int(every))
        self.total_epochs = total_epochs
        self.nan_guard = nan_guard

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        if self.nan_guard is not None and self.nan_guard.triggered:
            return
        done = epoch + 1
        if done % self.every == 0 or is_last_epoch(done, self.total_epochs):
            self.epoch_var.assign(done)
            self.manager.save(checkpoint_number=done)


class EpochStats(keras.callbacks.Callback):
    """Adds learning rate, steps/s and images/s (every view counted) to the epoch logs."""

    def __init__(self, steps_per_epoch: int, batch_size: int, views_per_image: int) -> None:
        super().__init__()
        self.steps = steps_per_epoch
        self.images_per_step = batch_size * views_per_image
        self.t0 = None
        self.history = []

    def on_epoch_begin(self, epoch: int, logs: Optional[dict] = None) -> None:
        self.lr = _as_float(self.model.optimizer.learning_rate)  # the rate this epoch uses
        self.t0 = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        elapsed = time.perf_counter() - self.t0
        if logs is not None:
            logs["learning_rate"] = self.lr
            logs["steps_per_sec"] = self.steps / elapsed
            logs["images_per_sec"] = self.steps * self.images_per_step / elapsed
            self.history.append(logs["images_per_sec"])


class PeriodicEvaluation(keras.callbacks.Callback):
    """Every ``every`` epochs: detector AUCs to TensorBoard and stats/eval_history.jsonl.

    ``evaluate`` is a function model -> {key: AUC}; the final evaluation is run
    by the entry point, so the last epoch is skipped here. Every worker evaluates
    (feature extraction is a collective under a multi-worker strategy); only the
    chief passes a ``log_dir`` and ``history_path``.
    """

    def __init__(self, evaluate: Callable[[keras.Model], dict], every: int,
                 total_epochs: int | EpochPlan, log_dir: Optional[Path | str],
                 history_path: Optional[Path | str]) -> None:
        super().__init__()
        self.evaluate = evaluate
        self.every = int(every)
        self.total_epochs = total_epochs
        self.writer = tf.summary.create_file_writer(str(log_dir)) if log_dir else None
        self.history_path = history_path

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        done = epoch + 1
        if self.every <= 0 or done % self.every or is_last_epoch(done, self.total_epochs):
            return
        if self.model.stop_training:
            return
        results = self.evaluate(self.model)
        write_eval(self.writer, self.history_path, done, results)


def record_history(history_path: Path | str, epoch: int, results: Mapping) -> None:
    """One JSON line per evaluated epoch: appended whole, or the file atomically rewritten
    when that epoch is already there (a resumed or re-evaluated run), never duplicated."""
    record = {"epoch": int(epoch), **results}
    records = read_jsonl(history_path)
    raw = Path(history_path).read_bytes() if Path(history_path).exists() else b""
    torn = bool(raw) and not raw.endswith(b"\n")  # left by a crash of an older writer
    if torn or any(r.get("epoch") == epoch for r in records):
        kept = [r for r in records if r.get("epoch") != epoch] + [record]
        kept.sort(key=lambda r: r.get("epoch", 0))
        write_text_atomic(history_path,
                          "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
    else:
        append_jsonl(history_path, record)


def write_eval(writer: Optional[tf.summary.SummaryWriter], history_path: Optional[Path | str],
               epoch: int, results: Mapping) -> None:
    """Logs one evaluation (AUC per key) to TensorBoard and to stats/eval_history.jsonl.

    ``writer``/``history_path`` None (a non-chief worker) writes nothing."""
    if writer is not None:
        with writer.as_default():
            for key, value in results.items():
                tag = key.replace(".", "/", 1) if key.startswith("uniformity.") else f"auc/{key}"
                tf.summary.scalar(tag, value, step=epoch)
        writer.flush()
    if history_path is not None:
        record_history(history_path, epoch, results)


def nan_message(model: keras.Model, cfg: Mapping, epoch: int, checkpoint: Optional[str]) -> str:
    """Why the loss became NaN, blaming the learning rate only when the weights diverged."""
    weights_finite = all(bool(np.all(np.isfinite(w))) for w in model.get_weights())
    where = (f"the loss became NaN/inf in epoch {epoch + 1}; training stopped and the last "
             f"good checkpoint is kept ({checkpoint or 'none'}).")
    if not weights_finite:
        cause = (f"The weights diverged: lower --learning_rate (now {cfg['learning_rate']}, "
                 f"momentum {cfg['momentum']}).")
        if cfg["mixed_precision"] == "fp16":
            cause += " With --mixed_precision=fp16, also try bf16 or none."
    else:
        cause = ("The weights are finite, so the loss itself overflowed: "
                 + ("check --temperature (now %g) and the embedding size." % cfg["temperature"]
                    if "contrastive" in cfg["model_type"] else
                    "check the input data and --mixed_precision."))
    return f"{where} {cause}"
