"""Every check of a run's configuration that needs no data and no TensorFlow.

``validate_config(cfg)`` runs before any data is loaded, any download starts or
anything is written, and raises ``ConfigError`` with one line naming the flag.
It imports only the TF-free tables (model/spec.py, model/registry.py,
data/aug_spec.py, data/distaug.py, data/registry.py, util/detectors.py), so a
bad command line is answered at ``--help`` speed.
"""

import math
import os
from pathlib import Path

from util.errors import ConfigError

STRATEGIES = ("mirrored", "multi_worker", "one_device")
MAX_SEED = 2 ** 31 - 1


def _number(cfg, key, kind=float):
    value = cfg[key]
    if isinstance(value, bool) or value is None:
        raise ConfigError(f"--{key}={value} must be a number")
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"--{key}={value!r} must be a{'n integer' if kind is int else ' number'}")
    if kind is int and number != value and not isinstance(value, str):
        raise ConfigError(f"--{key}={value} must be an integer")
    if kind is float and not math.isfinite(number):
        raise ConfigError(f"--{key}={value} must be a finite number")
    return number


def _at_least(cfg, key, low, kind=int, what=None):
    value = _number(cfg, key, kind)
    if value < low:
        raise ConfigError(f"--{key}={cfg[key]} must be {what or f'>= {low}'}")
    return value


def _positive(cfg, key, kind=float):
    value = _number(cfg, key, kind)
    if value <= 0:
        raise ConfigError(f"--{key}={cfg[key]} must be > 0")
    return value


def check_model_dir(model_dir):
    """The run directory must be a directory we can create or write to."""
    path = Path(model_dir)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--model_dir={model_dir} is a file, not a directory; "
                          "give a directory path")
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ConfigError(f"--model_dir={model_dir} cannot be created: {probe} is a file")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"--model_dir={model_dir} is not writable ({probe} denies writing)")


def parse_detectors(spec):
    from util.detectors import DETECTORS

    names = [d.strip() for d in str(spec).split(",") if d.strip()]
    unknown = [d for d in names if d not in DETECTORS]
    if unknown or not names:
        raise ConfigError(f"--detectors={spec} names unknown detectors {unknown}; "
                          f"choose from {', '.join(DETECTORS)}")
    repeated = sorted({d for d in names if names.count(d) > 1})
    if repeated:
        raise ConfigError(f"--detectors={spec} repeats {', '.join(repeated)}; "
                          "name each detector once")
    return names


def validate_config(cfg):
    """Checks every flag of a resolved config; returns (input shape, detector names)."""
    from data.aug_spec import parse_aug_list
    from data.base import parse_input_shape
    from data.distaug import distaug_transforms
    from data.registry import DATASETS
    from model.registry import model_spec
    from model.spec import RESNET_SPECS, check_input_shape, parse_head_dims
    from data.protocols_extra import validate_protocol_flags
    from util.calibration import check_calibration_flags
    from util.export import check_export_detector
    from util.distribute import parse_tf_config

    spec = model_spec(cfg["model_type"])
    if str(cfg["dataset"]).strip().lower() not in DATASETS:
        raise ConfigError(f"--dataset={cfg['dataset']} is unknown; choose one of "
                          f"{', '.join(DATASETS)}")
    if not str(cfg["category"]).strip():
        raise ConfigError("--category must name the inlier class (a name or an index)")
    if cfg["dataset"] == "folder" and not cfg["root"]:
        raise ConfigError("--dataset=folder needs --root=DIR (DIR/train/<class>/*)")
    if cfg["root"] and not Path(cfg["root"]).is_dir():
        raise ConfigError(f"--root={cfg['root']} is not a directory")
    if cfg["data_dir"] and Path(cfg["data_dir"]).exists() and not Path(cfg["data_dir"]).is_dir():
        raise ConfigError(f"--data_dir={cfg['data_dir']} is a file, not a directory")
    try:
        shape = check_input_shape(parse_input_shape(cfg["input_shape"]))
    except ConfigError as err:
        message = str(err)
        raise ConfigError(message if "input_shape" in message else
                          f"--input_shape: {message}") from None
    def parse_views(spec):
        return parse_aug_list(spec, size=shape[0])

    for key, parse in (("aug_list", parse_views), ("aug_list_for_test", parse_views),
                       ("distaug_type", distaug_transforms), ("head_dims", parse_head_dims)):
        try:
            parse(cfg[key])
        except ConfigError as err:
            message = str(err)
            raise ConfigError(message if f"--{key}" in message else
                              f"--{key}={cfg[key]}: {message}") from None
    if spec["contrastive"] and not parse_head_dims(cfg["head_dims"]):
        raise ConfigError(f"--head_dims must not be empty for --model_type={cfg['model_type']} "
                          "(the loss needs an embedding); e.g. --head_dims=512x8,128")
    if cfg["net_type"] not in RESNET_SPECS:
        raise ConfigError(f"--net_type={cfg['net_type']} is unknown; choose one of "
                          f"{', '.join(RESNET_SPECS)}")
    width = _positive(cfg, "net_width")
    if width > 16:
        raise ConfigError(f"--net_width={cfg['net_width']} is too large (at most 16)")
    if cfg["stem_width"] is not None:
        _at_least(cfg, "stem_width", 0, what=">= 0 (0 = scale with --net_width)")
    temperature = _positive(cfg, "temperature")
    if temperature < 1e-3:
        raise ConfigError(f"--temperature={cfg['temperature']} is too small: logits / tau "
                          "overflow float32 (use >= 0.001; the paper uses 0.2)")
    if cfg["optim_type"] not in ("sgd", "adam"):
        raise ConfigError(f"--optim_type={cfg['optim_type']} is unknown; choose sgd or adam")
    from util.config import SCHED_FLAGS

    if cfg["sched_type"] not in SCHED_FLAGS:
        raise ConfigError(f"--sched_type={cfg['sched_type']} is unknown; choose one of "
                          f"{', '.join(SCHED_FLAGS)}")
    _positive(cfg, "learning_rate")
    momentum = _number(cfg, "momentum")
    if not 0.0 <= momentum < 1.0:
        raise ConfigError(f"--momentum={cfg['momentum']} must be in [0, 1)")
    _at_least(cfg, "weight_decay", 0.0, kind=float)
    for key in ("num_epoch", "num_batch", "eval_epoch"):
        _at_least(cfg, key, 0)
    for key in ("batch_size", "ckpt_epoch", "eval_batch_size", "max_detector_train"):
        _at_least(cfg, key, 1, what="a positive integer")
    seed = _at_least(cfg, "seed", 0)
    if seed > MAX_SEED:
        raise ConfigError(f"--seed={cfg['seed']} must be at most {MAX_SEED}")
    if cfg["mixed_precision"] not in ("none", "bf16", "fp16"):
        raise ConfigError(f"--mixed_precision={cfg['mixed_precision']} is unknown; "
                          "choose none, bf16 or fp16")
    if cfg["strategy"] not in STRATEGIES:
        raise ConfigError(f"--strategy={cfg['strategy']} is unknown; choose one of "
                          f"{', '.join(STRATEGIES)}")
    if cfg["strategy"] == "multi_worker":
        parse_tf_config(os.environ.get("TF_CONFIG"))
    if cfg["force_init"] and cfg["reevaluate"]:
        raise ConfigError("--force_init and --reevaluate contradict each other: --force_init "
                          "trains again from scratch, --reevaluate only re-scores a finished run")
    validate_protocol_flags(cfg)
    validate_baseline_flags(cfg)
    check_calibration_flags(cfg["calibration_fraction"], cfg["target_fpr"])
    check_export_detector(cfg["export_detector"])
    check_model_dir(cfg["model_dir"])
    return shape, parse_detectors(cfg["detectors"])


def validate_baseline_flags(cfg):
    """--pretrained_weights belongs to (and is required by) --model_type=imagenet_resnet50."""
    path = cfg.get("pretrained_weights")
    if cfg["model_type"] == "imagenet_resnet50":
        if not path:
            raise ConfigError("--model_type=imagenet_resnet50 needs --pretrained_weights=PATH, a "
                              "local keras.applications.ResNet50 weights file without top "
                              "(e.g. resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5)")
        if not os.path.isfile(path):
            raise ConfigError(f"--pretrained_weights={path} is not a file")
    elif path:
        raise ConfigError("--pretrained_weights is only used by --model_type=imagenet_resnet50")
