"""Learning-rate schedule of the paper: single-cycle cosine decay to 0, stepped per epoch."""

import math

import keras
import tensorflow as tf


class EpochCosineDecay(keras.optimizers.schedules.LearningRateSchedule):
    """lr(step) = base * 0.5 * (1 + cos(pi * epoch / epochs)), epoch = step // steps_per_epoch.

    Being a function of the optimizer's iteration count, it resumes correctly
    from a checkpoint without a callback.
    """

    def __init__(self, base_lr, steps_per_epoch, epochs):
        self.base_lr = float(base_lr)
        self.steps_per_epoch = int(steps_per_epoch)
        self.epochs = int(epochs)

    def __call__(self, step):
        epoch = tf.math.floordiv(tf.cast(step, tf.int64), self.steps_per_epoch)
        frac = tf.minimum(tf.cast(epoch, tf.float32) / float(max(self.epochs, 1)), 1.0)
        return self.base_lr * 0.5 * (1.0 + tf.cos(math.pi * frac))

    def get_config(self):
        return dict(base_lr=self.base_lr, steps_per_epoch=self.steps_per_epoch,
                    epochs=self.epochs)


def constant_or_cosine(sched_type, base_lr, steps_per_epoch, epochs):
    if sched_type == "cos":
        return EpochCosineDecay(base_lr, steps_per_epoch, epochs)
    if sched_type == "constant":
        return float(base_lr)
    from util.errors import ConfigError
    raise ConfigError(f"--sched_type={sched_type} is unknown; choose cos or constant")
