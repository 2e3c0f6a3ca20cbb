"""Rebuilding a finished run (re-export, explain, benchmarks) without retraining."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from engine.checkpoints import inspect_checkpoints
from engine.experiment import load_data, make_evaluator, model_from_config
from engine.flags import FLAG_DEFAULTS
from engine.resume import restore_checkpoint
from engine.validate import validate_config
from util.errors import ConfigError
from util.paths import require_dir

if TYPE_CHECKING:
    from data.base import OneClassData
    from detect.evaluator_base import Evaluator
    from model.base import OneClassModel


def _same_kind(value, default):
    """A recorded flag value of the flag's type (an int where a float is expected is fine)."""
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def read_run_config(run_dir: Path | str) -> dict:
    """The run's configuration (stats/hparams.json over today's defaults); ConfigError when
    the directory is not a run or the file cannot be read."""
    run_dir = require_dir(run_dir, "run directory")
    hp = run_dir / "stats" / "hparams.json"
    if not hp.is_file():
        raise ConfigError(f"{run_dir} is not a run directory (no stats/hparams.json)")
    try:
        recorded = json.loads(hp.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"{hp} cannot be read: {err}") from None
    if not isinstance(recorded, dict):
        raise ConfigError(f"{hp} does not hold a run configuration")
    for key, value in recorded.items():
        default = FLAG_DEFAULTS.get(key)
        if default is not None and value is not None and not _same_kind(value, default):
            raise ConfigError(f"{hp} is invalid: {key}={value!r} is a {type(value).__name__}, "
                              f"the flag takes a {type(default).__name__}")
    cfg = dict(FLAG_DEFAULTS)
    cfg.update(recorded)
    return cfg


def run_inputs(run_dir: Path | str) -> list:
    """(label, path) of what rebuilding a run reads: its checkpoints and stats/."""
    run_dir = Path(run_dir)
    return [("input", run_dir / "ckpt"), ("input", run_dir / "stats")]


def load_run(run_dir: Path | str,
             cfg: Optional[dict] = None) -> tuple[dict, OneClassModel, OneClassData, Evaluator]:
    """(cfg, model, data, evaluator) of a run: the model from its configuration and its
    last checkpoint, the data and the evaluator as the run had them."""
    import tensorflow as tf

    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir) if cfg is None else cfg
    ckpt = inspect_checkpoints(run_dir / "ckpt")
    if ckpt is None and int(cfg.get("num_epoch", 0)) > 0:
        raise ConfigError(f"{run_dir} has no checkpoint under ckpt/")
    checks = validate_config(cfg)
    data = load_data(cfg, checks)
    model = model_from_config(cfg, checks.input_shape)
    restore_checkpoint(tf.train.Checkpoint(model=model), ckpt)
    return cfg, model, data, make_evaluator(cfg, checks)
