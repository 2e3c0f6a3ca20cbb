"""The optimizer named by --optim_type, as in the release.

* ``sgd``: SGD with --momentum (0.9) and, with --nesterov, Nesterov momentum.
* ``adam``: Adam with the AMSGrad variant (keras defaults: beta_1 0.9,
  beta_2 0.999, epsilon 1e-7), as the release builds it.

The L2 penalty is part of the loss (model/base.py), not of the optimizer.
"""

import keras

from util.errors import ConfigError

OPTIM_TYPES = ("sgd", "adam")


def make_base_optimizer(cfg: dict,
                        learning_rate: float | keras.optimizers.schedules.LearningRateSchedule,
                        ) -> keras.optimizers.Optimizer:
    """``learning_rate``: a float or a LearningRateSchedule."""
    kind = cfg.get("optim_type", "sgd")
    if kind == "sgd":
        return keras.optimizers.SGD(learning_rate=learning_rate, momentum=cfg["momentum"],
                                    nesterov=bool(cfg.get("nesterov", False)))
    if kind == "adam":
        return keras.optimizers.Adam(learning_rate=learning_rate, amsgrad=True)
    raise ConfigError(f"--optim_type={kind} is unknown; choose one of {', '.join(OPTIM_TYPES)}")
