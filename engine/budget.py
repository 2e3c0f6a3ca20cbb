"""A wall-clock budget for training (``--train_minutes``): as many epochs as fit, with a
learning-rate schedule that ends when the budget does.

A user with a CPU and a deadline knows minutes, not epochs; a step takes 3x
longer on one machine than on another. The run therefore starts training
with an open number of epochs, times the steps after the first few (which
trace and compile the graph), and then plans: the steps that fit into the
rest of the budget at that pace, rounded down to whole epochs (at least one
more than done). Epochs also cost time outside their steps (the callbacks at
their end, a checkpoint now and then, a new input iterator), so each epoch is
timed from its start to the next epoch's start, and during the first quarter
of the plan these times refine it: the epochs of their mean length (which
counts the checkpoint every few epochs; a median would not) that fit into
what is left. Later the plan only shrinks, and only when it would end more
than half an epoch late, so the cosine is not bent near its end without need.
The plan is set in the schedule (engine/schedules.py reads
its length from a variable, so the cosine reaches its end at the last planned
step), in the checkpoint and evaluation callbacks (they save and skip the
last epoch) and in the progress bar; training stops after the planned epoch.
It is written to ``stats/budget.json`` when it is made and each time it is
refined, so a resumed run keeps its schedule instead of planning again, and
``summary.json`` records it under ``meta.budget``. A run ends within its
budget plus about an epoch.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import keras
import numpy as np

from util.atomic import write_json_atomic

if TYPE_CHECKING:
    import tensorflow as tf

#: steps left out of the timing: the first ones trace and compile the step function
SKIPPED_STEPS = 3
#: steps timed before the plan is made
TIMED_STEPS = 10
#: the most epochs a budget run can plan (the fit loop's bound before the plan exists)
MAX_EPOCHS = 1_000_000


class EpochPlan:
    """The number of epochs a run trains for: known at the start, or planned during
    training by ``TrainingBudget``; the callbacks that act at the last epoch read it."""

    def __init__(self, epochs: int) -> None:
        self.epochs = int(epochs)

    def is_last(self, done: int) -> bool:
        return int(done) >= self.epochs


def stored_plan(path: Path | str) -> Optional[dict]:
    """The plan of an earlier attempt of this run (``stats/budget.json``), or None."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "planned_epochs" in record else None


class BudgetProgbar(keras.callbacks.ProgbarLogger):
    """Keras's progress bar, whose epoch count follows the plan ("Epoch 3/?" before it)."""

    def __init__(self, plan: EpochPlan) -> None:
        super().__init__()
        self.plan = plan

    def on_epoch_begin(self, epoch: int, logs: Optional[dict] = None) -> None:
        self._reset_progbar()
        self._maybe_init_progbar()
        if self.verbose:
            total = "?" if self.plan.epochs >= MAX_EPOCHS else self.plan.epochs
            print(f"Epoch {epoch + 1}/{total}", flush=True)


class TrainingBudget(keras.callbacks.Callback):
    """Times the first steps, plans the epochs that fit ``minutes``, stops after them.

    ``epochs_var`` is the schedule's length (a tf.Variable), ``plan`` the EpochPlan the
    other callbacks read, ``record_path`` where the plan is written (None: not written),
    ``initial_epoch`` where this fit starts.
    """

    def __init__(self, minutes: float, steps_per_epoch: int, epochs_var: tf.Variable,
                 plan: EpochPlan, record_path: Optional[Path | str] = None, initial_epoch: int = 0,
                 log: Callable[[str], None] = print,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        super().__init__()
        self.seconds = float(minutes) * 60.0
        self.steps_per_epoch = int(steps_per_epoch)
        self.epochs_var, self.plan = epochs_var, plan
        self.record_path = record_path
        self.initial_epoch = int(initial_epoch)
        self.log, self.clock = log, clock
        self.stamps, self.epoch_seconds = [], []
        self.record = None
        self.refine_until = 0

    def on_train_begin(self, logs: Optional[dict] = None) -> None:
        self.start = self.clock()

    def on_epoch_begin(self, epoch: int, logs: Optional[dict] = None) -> None:
        now = self.clock()
        if epoch > self.initial_epoch + 1:  # the first epoch also traced the step function
            self.epoch_seconds.append(now - self.epoch_start)
        self.epoch_start = now

    def on_train_batch_end(self, batch: int, logs: Optional[dict] = None) -> None:
        if self.record is not None:
            return
        self.stamps.append(self.clock())
        if len(self.stamps) >= SKIPPED_STEPS + TIMED_STEPS:
            self.make_plan()

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        now, done = self.clock(), epoch + 1
        # until a whole epoch (start to next start) is timed, this one's steps stand in
        measured = self.epoch_seconds or ([now - self.epoch_start]
                                          if epoch > self.initial_epoch else [])
        if self.record is None and len(self.stamps) > SKIPPED_STEPS + 1:
            self.make_plan()  # a short epoch: plan on the steps timed so far
        elif self.record is not None and measured:
            self.refine(done, now, float(np.mean(measured)), early=done <= self.refine_until)
        if self.record is not None and self.plan.is_last(done):
            self.model.stop_training = True

    def refine(self, done: int, now: float, per_epoch: float, early: bool) -> None:
        """The epochs of ``per_epoch`` seconds that fit into the rest of the budget; once
        not ``early``, only a plan that would end more than half an epoch late changes."""
        left = self.seconds - (now - self.start)
        planned = min(MAX_EPOCHS, max(done, done + int(left // max(per_epoch, 1e-9))))
        late = (self.plan.epochs - done) * per_epoch - left > 0.5 * per_epoch
        if planned != self.plan.epochs and (early or late):
            self.apply(planned)
            self.record.update(planned_epochs=planned,
                               planned_steps=planned * self.steps_per_epoch)
            self.log(f"budget: epochs take {per_epoch:.1f} s -> {planned} epochs")
        self.record["epoch_seconds"] = round(per_epoch, 3)
        self.write()

    def write(self) -> None:
        if self.record_path is not None:
            write_json_atomic(self.record_path, self.record)

    def make_plan(self) -> None:
        """Sets the planned epochs from the median step time of the timed steps."""
        timed = np.diff(self.stamps[SKIPPED_STEPS - 1:]) if len(self.stamps) > SKIPPED_STEPS \
            else np.diff(self.stamps)
        step_seconds = float(np.median(timed))
        now = self.clock()
        elapsed = now - self.start
        steps_done = self.initial_epoch * self.steps_per_epoch + len(self.stamps)
        steps_left = max(0.0, (self.seconds - elapsed) / max(step_seconds, 1e-9))
        epochs_done = steps_done // self.steps_per_epoch
        planned = min(MAX_EPOCHS, max(epochs_done + 1,
                                      int((steps_done + steps_left) // self.steps_per_epoch)))
        self.apply(planned)
        self.refine_until = max(epochs_done + 2, planned // 4)
        self.record = {"train_minutes": self.seconds / 60.0, "planned_epochs": planned,
                       "planned_steps": planned * self.steps_per_epoch,
                       "steps_per_epoch": self.steps_per_epoch,
                       "step_seconds": round(step_seconds, 4),
                       "warmup_seconds": round(elapsed, 2), "timed_steps": len(timed)}
        self.write()
        self.log(f"budget: {self.seconds / 60:g} min at {step_seconds:.3f} s/step -> "
                 f"{planned} epochs of {self.steps_per_epoch} steps "
                 f"({planned * self.steps_per_epoch} steps)")

    def apply(self, epochs: int) -> None:
        self.plan.epochs = int(epochs)
        self.epochs_var.assign(int(epochs))


class TrainingLength:
    """How long a run trains, asked in one place: ``--num_epoch`` epochs, or the epochs
    that fit ``--train_minutes`` (``by_clock``), planned while training and kept in
    ``record_path`` (stats/budget.json) for a resumed run."""

    def __init__(self, num_epoch: int, train_minutes: Optional[float],
                 record_path: Optional[Path | str] = None) -> None:
        self.num_epoch = int(num_epoch)
        self.minutes = float(train_minutes or 0.0)
        self.record_path = record_path
        #: the schedule's length (a tf.Variable made by ``schedule_variable``) when by_clock
        self.schedule_epochs = None

    @property
    def by_clock(self) -> bool:
        return self.minutes > 0

    def schedule_variable(self, strategy: tf.distribute.Strategy) -> Optional[tf.Variable]:
        """The schedule's length as a variable of ``strategy`` for a clock run (None for a
        fixed number of epochs, whose schedule knows its length)."""
        import tensorflow as tf

        if self.by_clock:
            with strategy.scope():
                self.schedule_epochs = tf.Variable(MAX_EPOCHS, dtype=tf.int64, trainable=False,
                                                   name="schedule_epochs")
        return self.schedule_epochs

    def plan(self, steps_per_epoch: int, initial_epoch: int, log: Callable[[str], None] = print,
             write: bool = True) -> tuple[EpochPlan, Optional[TrainingBudget]]:
        """(EpochPlan, the budget callback or None): a fixed plan; the plan of an earlier
        attempt of a clock run; or one the budget callback makes while training.
        ``write``: whether this process records the plan (the chief)."""
        if not self.by_clock:
            return EpochPlan(self.num_epoch), None
        stored = stored_plan(self.record_path)
        if stored is not None:
            self.schedule_epochs.assign(int(stored["planned_epochs"]))
            return EpochPlan(stored["planned_epochs"]), None
        plan = EpochPlan(MAX_EPOCHS)
        return plan, TrainingBudget(self.minutes, steps_per_epoch, self.schedule_epochs, plan,
                                    self.record_path if write else None, initial_epoch, log)

    def progress_bars(self, plan: EpochPlan) -> list:
        """A clock run's progress bar, whose epoch count follows the plan ("Epoch 3/?"
        until it is made); none otherwise (Keras's own)."""
        return [BudgetProgbar(plan)] if self.by_clock else []

    def record(self, plan: EpochPlan) -> Optional[dict]:
        """summary.json's ``meta.budget``: the plan (stats/budget.json) and the epochs run;
        None for a fixed number of epochs."""
        if not self.by_clock:
            return None
        return dict(stored_plan(self.record_path) or {}, epochs=int(plan.epochs))
