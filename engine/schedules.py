"""Learning-rate schedules: the paper's cosine decay and the release's other choices.

Every schedule is a Keras ``LearningRateSchedule`` and a pure function of the
optimizer's iteration count, so a resumed run continues on the same curve
without a callback. Semantics (docs/release_flags.md):

* ``--sched_freq=epoch`` (default) holds the rate for a whole epoch: the step is
  first rounded down to a multiple of ``steps_per_epoch``; ``step`` uses every
  step as it is. ``t`` below is that rounded step and ``T = num_epoch *
  steps_per_epoch`` the length of training.
* ``cos``:      rate = m + (1 - m) * 0.5 * (1 + cos(pi * t / T)), m = --sched_min_rate
* ``halfcos``:  rate = cos(pi * t / T * level / 16), level = --sched_level (0..8);
  level 8 reaches 0 at the end, the default 7 ends at cos(7 pi / 16) ~ 0.195
* ``linear``:   rate = m + (1 - m) * (1 - t / T)
* ``step``:     rate = gamma ** floor(t / (step_size * unit)), gamma = --sched_gamma,
  step_size = --sched_step_size, unit = steps_per_epoch (epoch) or 1 (step)
* ``constant``: rate = 1

The learning rate is ``learning_rate * rate``; t / T is clipped to [0, 1] and
the rate to [0, 1].
"""

import math
from typing import Optional

import keras
import tensorflow as tf

from util.errors import ConfigError

SCHED_TYPES = ("cos", "halfcos", "linear", "step", "constant")


class ReleaseSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """lr(step) = base_lr * rate(t) for one of SCHED_TYPES (see the module docstring)."""

    def __init__(self, base_lr: float, sched_type: str = "cos", steps_per_epoch: int = 1,
                 epochs: int | tf.Variable = 1, freq: str = "epoch", min_rate: float = 0.0,
                 level: int = 7, gamma: float = 0.995, step_size: int = 1) -> None:
        if sched_type not in SCHED_TYPES:
            raise ConfigError(f"--sched_type={sched_type} is unknown; choose one of "
                              f"{', '.join(SCHED_TYPES)}")
        self.base_lr = float(base_lr)
        self.sched_type = sched_type
        self.steps_per_epoch = max(1, int(steps_per_epoch))
        self.epochs = epochs if isinstance(epochs, tf.Variable) else int(epochs)
        self.freq = freq
        self.min_rate = float(min_rate)
        self.level = int(level)
        self.gamma = float(gamma)
        self.step_size = int(step_size)

    def epoch_count(self) -> int:
        """The number of epochs the schedule runs over now."""
        return int(self.epochs.numpy()) if isinstance(self.epochs, tf.Variable) else self.epochs

    @property
    def unit(self) -> int:
        """Steps over which the rate is held constant."""
        return self.steps_per_epoch if self.freq == "epoch" else 1

    def rate(self, step: int | tf.Tensor) -> tf.Tensor:
        unit = self.unit
        t = tf.cast(tf.math.floordiv(tf.cast(step, tf.int64), unit) * unit, tf.float32)
        # epochs may be a variable: a --train_minutes run sets it once the step time is known
        total = tf.maximum(tf.cast(self.epochs, tf.float32) * float(self.steps_per_epoch), 1.0)
        frac = tf.clip_by_value(t / total, 0.0, 1.0)
        m = self.min_rate
        if self.sched_type == "cos":
            rate = m + (1.0 - m) * 0.5 * (1.0 + tf.cos(math.pi * frac))
        elif self.sched_type == "halfcos":
            rate = tf.cos(math.pi * frac * self.level / 16.0)
        elif self.sched_type == "linear":
            rate = m + (1.0 - m) * (1.0 - frac)
        elif self.sched_type == "step":
            period = float(self.step_size * unit)
            rate = tf.pow(self.gamma, tf.floor(t / period))
        else:
            rate = tf.ones_like(t)
        return tf.clip_by_value(rate, 0.0, 1.0)

    def __call__(self, step: int | tf.Tensor) -> tf.Tensor:
        return self.base_lr * self.rate(step)

    def get_config(self) -> dict:
        return dict(base_lr=self.base_lr, sched_type=self.sched_type,
                    steps_per_epoch=self.steps_per_epoch, epochs=self.epoch_count(),
                    freq=self.freq,
                    min_rate=self.min_rate, level=self.level, gamma=self.gamma,
                    step_size=self.step_size)


class EpochCosineDecay(ReleaseSchedule):
    """The paper's schedule: lr * 0.5 * (1 + cos(pi * epoch / epochs)), stepped per epoch."""

    def __init__(self, base_lr: float, steps_per_epoch: int, epochs: int | tf.Variable) -> None:
        super().__init__(base_lr, "cos", steps_per_epoch, epochs, "epoch")

    def get_config(self) -> dict:
        return dict(base_lr=self.base_lr, steps_per_epoch=self.steps_per_epoch,
                    epochs=self.epochs)


def make_schedule(cfg: dict, steps_per_epoch: int,
                  epochs: Optional[tf.Variable] = None) -> ReleaseSchedule:
    """The schedule named by cfg's --sched_* flags for a run of cfg['num_epoch'] epochs, or
    of ``epochs`` (a tf.Variable that a --train_minutes run sets after its warm-up)."""
    return ReleaseSchedule(
        cfg["learning_rate"], cfg["sched_type"], steps_per_epoch,
        cfg["num_epoch"] if epochs is None else epochs,
        freq=cfg.get("sched_freq", "epoch"), min_rate=cfg.get("sched_min_rate", 0.0),
        level=cfg.get("sched_level", 7), gamma=cfg.get("sched_gamma", 0.995),
        step_size=cfg.get("sched_step_size", 1))
