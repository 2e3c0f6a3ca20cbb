"""Flag values -> a run's full configuration: the preset, then per-model-type defaults,
then the release's names mapped to ours.

Precedence: a flag given explicitly, then the preset, then the per-model default.
This module and everything it imports are free of TensorFlow and Keras, so a
bad flag is answered at ``--help`` speed; the checks live in engine/validate.py.
"""

import logging
import os
import re
from typing import Collection, Mapping

from data.aug_spec import ROTATION_SUFFIX, drop_hflip, has_hflip, num_views
from data.celeba import release_category
from data.distaug import distaug_has_hflip
from data.registry import canonical_dataset
from engine.flags import FLAG_DEFAULTS, METHODS, NO_DISTAUG
from engine.presets import preset_values
from engine.validate import (FLAG_APPLIES, check_explicit_flags, check_view_counts,
                             validate_config)
from model.registry import has_conv_trunk, model_spec
from util.errors import ConfigError


def check_budget_off(cfg: dict, preset: Mapping, explicit: Collection[str]) -> None:
    """``--train_minutes=0`` means "no clock: train --num_epoch epochs". Under a preset
    whose length is its clock, and without --num_epoch, it would silently train the
    flag's default length: refused, saying what to give instead."""
    if ("train_minutes" in explicit and not cfg.get("train_minutes")
            and preset.get("train_minutes") and "num_epoch" not in explicit):
        raise ConfigError(f"--train_minutes=0 turns off the clock of --preset={cfg['preset']} "
                          f"(it trains for {preset['train_minutes']:g} minutes), and 0 means "
                          f"'train --num_epoch epochs' (default {cfg['num_epoch']}): give a "
                          "positive --train_minutes, or --num_epoch instead")


def resolve_and_check(values: Mapping, explicit: Collection[str] = ()) -> dict:
    """``resolve_config`` and engine/validate.py's ``validate_config``: the configuration of
    a command line, checked before anything is loaded or written. A refusal that blames a
    value the ``--preset`` set, not the user, names the preset (``preset_error``)."""
    try:
        cfg = resolve_config(values, explicit)
        validate_config(cfg)
    except ConfigError as err:
        raise preset_error(err, values, explicit) from None
    return cfg


def preset_error(err: ConfigError, values: Mapping, explicit: Collection[str]) -> ConfigError:
    """``err`` reworded when the flag it blames first was set by ``--preset`` and it names
    no flag the user gave: the preset does not fit the run. When a flag of the preset does
    not apply to the data (FLAG_APPLIES), that is said instead, as the reason."""
    preset = preset_values(values.get("preset"))
    named = re.findall(r"--(\w+)=", str(err))
    if not named or named[0] not in preset or set(named) & set(explicit):
        return err
    cfg = {**FLAG_DEFAULTS, **values, **{k: v for k, v in preset.items() if k not in explicit}}
    cfg["dataset"] = canonical_dataset(cfg["dataset"])
    head = f"--preset={values['preset']} does not fit this run"
    for name in sorted(set(preset) & set(FLAG_APPLIES) - set(explicit)):
        applies, where = FLAG_APPLIES[name]
        if not applies(cfg):
            return ConfigError(f"{head}: the preset sets --{name}={preset[name]}, which applies "
                               f"only to {where}, not to --dataset={cfg['dataset']}; give such "
                               "data, or choose another preset")
    return ConfigError(f"{head}: the preset's {err}")


def resolve_config(values: Mapping, explicit: Collection[str] = ()) -> dict:
    """Flag values -> full config: preset for unset flags, then per-model-type defaults.

    ``explicit``: the flags given on the command line (they beat the preset).
    Raises ConfigError for combinations the resolution itself cannot settle."""
    unknown = set(values) - set(FLAG_DEFAULTS)
    if unknown:
        raise ConfigError(f"unknown config keys {sorted(unknown)}")
    cfg = dict(FLAG_DEFAULTS)
    cfg.update(values)
    preset = preset_values(cfg.get("preset"))
    for key, value in preset.items():
        if key not in explicit:
            cfg[key] = value
    check_budget_off(cfg, preset, explicit)
    if "num_epoch" in explicit and "train_minutes" not in explicit:
        cfg["train_minutes"] = 0.0  # a preset's budget gives way to the epochs asked for
    apply_release_flags(cfg, explicit)
    spec = model_spec(cfg["model_type"])
    given_aug = cfg["aug_list"] is not None
    for key in ("batch_size", "head_dims", "distaug_type", "aug_list", "aug_list_for_test"):
        if cfg[key] is None:
            cfg[key] = spec[key]
    resolve_aug_lists(cfg, given_aug)
    if "export" not in explicit and not has_conv_trunk(cfg["model_type"]):
        cfg["export"] = False  # nothing to export unless asked for (validation refuses that)
    check_explicit_flags(cfg, explicit, fixed=spec.get("fixed", {}))
    cfg.update(spec.get("fixed", {}))  # frozen baselines: num_epoch=0
    check_view_counts(cfg)
    cfg["model_dir"] = run_directory(cfg)
    return cfg


def resolve_aug_lists(cfg: dict, given_aug: bool) -> None:
    """The release's rules for --aug_list that depend on the model and distaug type.

    * rotation (the transformation classifier) with a single-view aug_list:
      the fixed rotation views are appended (one log line says so).
    * a distribution augmentation with horizontal flips (hflip, 2..8): a random
      hflip would make an instance its own negative, so the default aug_list
      drops it (as the release's scripts) and a given one only gets a warning.
    """
    log = logging.getLogger("config")
    if cfg["model_type"] == "rotation" and num_views(cfg["aug_list"]) == 1:
        log.warning("--aug_list=%s has one view: appending %s for the rotation task",
                    cfg["aug_list"], ROTATION_SUFFIX)
        cfg["aug_list"] = cfg["aug_list"] + ROTATION_SUFFIX
    if distaug_has_hflip(cfg["distaug_type"]) and has_hflip(cfg["aug_list"]):
        if given_aug:
            log.warning("--distaug_type=%s already adds flipped copies as new instances, "
                        "and the random hflip in --aug_list=%s makes instances their own "
                        "negatives; the release drops hflip here", cfg["distaug_type"],
                        cfg["aug_list"])
        else:
            cfg["aug_list"] = drop_hflip(cfg["aug_list"])


def apply_release_flags(cfg: dict, explicit: Collection[str] = ()) -> None:
    """The release's names -> ours: --method, dataset aliases, celeba's category."""
    cfg["dataset"] = canonical_dataset(cfg["dataset"])
    method = cfg.get("method")
    if method:
        if method.lower() not in METHODS:
            raise ConfigError(f"--method={method} is unknown; choose UnsupEmbed or Contrastive")
        model_type = METHODS[method.lower()]
        if model_type == "contrastive":
            if str(cfg["distaug_type"]).lower() in NO_DISTAUG[1:]:
                cfg["distaug_type"] = "none"  # the release's 1 = the original images only
            elif cfg["distaug_type"] is not None:
                model_type = "contrastive_da"
        if "model_type" in explicit and cfg["model_type"] != model_type:
            raise ConfigError(f"--method={method} means --model_type={model_type}, but "
                              f"--model_type={cfg['model_type']} was given; pass only one")
        cfg["model_type"] = model_type
    if cfg["dataset"] == "celeba":
        cfg["category"], cfg["celeba_attribute"] = release_category(
            cfg["category"], cfg.get("celeba_attribute"))


def run_directory(cfg: Mapping) -> str:
    """--model_dir, as the release: <model_dir>/<ckpt_prefix>/<file_path> when --file_path is
    given; else --model_dir itself (under --ckpt_prefix); default runs/<dataset>_<category>_
    <model_type>_s<seed>."""
    prefix = cfg.get("ckpt_prefix") or ""
    if cfg.get("file_path"):
        name = cfg["file_path"]
        while "__" in name:  # the release's scripts leave an empty ${PREFIX} in the name
            name = name.replace("__", "_")
        return os.path.join(cfg["model_dir"] or "runs", prefix, name)
    if cfg["model_dir"] is not None:
        return os.path.join(cfg["model_dir"], prefix) if prefix else cfg["model_dir"]
    return os.path.join("runs", prefix,
                        f"{cfg['dataset']}_{cfg['category']}_{cfg['model_type']}_s{cfg['seed']}")
