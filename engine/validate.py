"""Every check of a run's configuration that needs no data and no TensorFlow.

``validate_config(cfg)`` runs before any data is loaded, any download starts
or anything is written, and raises ``ConfigError`` with one line naming the
flag. It runs one function per concern (data, augmentation, network,
optimisation, training length, distribution, protocols, scoring, patches, run
directory) and returns the values derived on the way (``RunChecks``). The
checks that need to know which flags were given on the command line run while
the flags resolve (``check_explicit_flags``, ``check_view_counts``, called by
engine/config.py). Everything imported here is free of TensorFlow, so a bad
command line is answered at ``--help`` speed.
"""

import math
import os
from pathlib import Path
from typing import Collection, Iterable, Mapping, NamedTuple, Optional

from data.aug_spec import num_views, parse_aug_list
from data.base import NATIVE_SIDES, parse_input_shape
from data.distaug import distaug_transforms
from data.image_dirs import split_dirs
from data.patches import check_patch_flags as check_patch_sizes
from data.image_io import check_input_bits, check_max_image_pixels
from data.registry import (DATASETS, dataset_locations, has_defect_layout, input_bits_option,
                           reads_image_files)
from deploy.convert import FORMATS, require_converter
from deploy.export_format import export_choices
from detect.calibration import check_calibration_flags
from detect.detectors import parse_detectors
from detect.evaluation import FEATURE_SETS
from detect.evaluators import EVALUATORS, EvaluatorSpec, choose_evaluator
from detect.localization import grid_size
from detect.synthetic import KINDS as SYNTHETIC_KINDS
from engine.distribute import parse_tf_config
from engine.flags import FLAG_DEFAULTS, FLAG_SPECS, SCHED_FLAGS
from engine.precision import PRECISIONS
from model.registry import has_conv_trunk, model_spec
from model.spec import (RESNET_SPECS, SMALL_STEM_MAX_SIZE, check_input_shape, parse_head_dims,
                        parse_stages, stage_stride)
from util.errors import ConfigError

STRATEGIES = ("mirrored", "multi_worker", "one_device")
OPTIMIZERS = ("sgd", "adam")
MAX_SEED = 2 ** 31 - 1
MAX_OUTLIER_RATIO = 0.5


class RunChecks(NamedTuple):
    """What validation derived: the network input, the shape images are loaded at, the
    detector classes, the run's evaluator (detect/evaluators.py) and the training rows
    each image gives the detectors (1, its patch grid, or the cells of its feature map)."""

    input_shape: tuple
    image_shape: tuple
    detectors: tuple
    evaluator: EvaluatorSpec
    rows_per_image: int = 1


# ------------------------------------------------------------------ number helpers

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


def _one_of(cfg, key, choices):
    if cfg[key] not in choices:
        raise ConfigError(f"--{key}={cfg[key]} is unknown; choose one of {', '.join(choices)}")


def _parsed(cfg, key, parse):
    """parse(cfg[key]), its ConfigError prefixed with the flag when it does not name it."""
    try:
        return parse(cfg[key])
    except ConfigError as err:
        message = str(err)
        raise ConfigError(message if f"--{key}" in message else
                          f"--{key}={cfg[key]}: {message}") from None


# ------------------------------------------------------------------ one function per concern

def check_finite_flags(cfg: dict) -> None:
    """Every float flag holds a finite number: NaN compares false with every bound, so a
    range check alone would let it through (and a NaN threshold flags nothing)."""
    for name, kind, _, _ in FLAG_SPECS:
        if kind == "float" and cfg.get(name) is not None:
            _number(cfg, name)


def check_data_flags(cfg: dict) -> None:
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


def check_input_bits_flag(cfg: dict) -> int:
    """--input_bits: 0 (each file's own depth) or 8..16, for datasets read from image files;
    --max_image_pixels a positive pixel count."""
    bits = check_input_bits(cfg.get("input_bits"))
    input_bits_option(cfg["dataset"], bits)
    check_max_image_pixels(cfg.get("max_image_pixels", FLAG_DEFAULTS["max_image_pixels"]))
    return bits


DIR_FLAGS = ("normal_dir", "normal_test_dir", "abnormal_dir", "mask_dir")


def check_image_dirs_flags(cfg: dict) -> None:
    """--dataset=image_dirs and its folder flags (data/image_dirs.py), which belong to it."""
    dirs = {key: split_dirs(cfg.get(key)) for key in DIR_FLAGS}
    if cfg["dataset"] != "image_dirs":
        given = [key for key in DIR_FLAGS if dirs[key]]
        if given:
            raise ConfigError(f"--{given[0]} applies to --dataset=image_dirs only, not "
                              f"{cfg['dataset']}")
        return
    if not dirs["normal_dir"]:
        raise ConfigError("--dataset=image_dirs needs --normal_dir=DIR (the good images; "
                          "repeatable, or a comma list)")
    if cfg["is_validation"]:
        raise ConfigError("--dataset=image_dirs has its own test split; drop --is_validation")
    if dirs["mask_dir"] and not dirs["abnormal_dir"]:
        raise ConfigError("--mask_dir needs --abnormal_dir: masks mark the defects of the "
                          "abnormal images")
    seen = {}
    for key in DIR_FLAGS:
        for folder in dirs[key]:
            if not Path(folder).is_dir():
                raise ConfigError(f"--{key}={folder} is not a directory")
            real = os.path.realpath(folder)
            if key != "mask_dir" and real in seen:
                raise ConfigError(f"--{key}={folder} is also given as --{seen[real]}; a "
                                  "folder holds one kind of image (normal or abnormal, "
                                  "training or test)")
            seen.setdefault(real, key)
    check_mask_dirs(dirs, seen)
    if not 0.0 <= _number(cfg, "normal_test_fraction") < 1.0:
        raise ConfigError(f"--normal_test_fraction={cfg['normal_test_fraction']} must be in "
                          "[0, 1)")


def check_mask_dirs(dirs: Mapping[str, list], image_dirs: Mapping[str, str]) -> None:
    """No folder where masks are looked up (``MASK_DIR`` and ``MASK_DIR/<abnormal folder's
    name>``, data/image_dirs.py) may be a folder of images (``image_dirs``: real path ->
    flag): its photos would be read as masks."""
    for mask_dir in dirs["mask_dir"]:
        looked_in = [(mask_dir, None)] + [(os.path.join(mask_dir, os.path.basename(
            os.path.normpath(a))), a) for a in dirs["abnormal_dir"]]
        for folder, abnormal in looked_in:
            flag = image_dirs.get(os.path.realpath(folder))
            if flag is None or flag == "mask_dir":
                continue
            where = "is" if abnormal is None else f"holds the masks of {abnormal} in {folder}, which is"
            raise ConfigError(f"--mask_dir={mask_dir} {where} also a folder of images "
                              f"(--{flag}): its images would be read as masks; give the "
                              "folder that holds only the masks")


def check_input_shape_flag(cfg: dict) -> tuple:
    """The network input shape of --input_shape."""
    try:
        return check_input_shape(parse_input_shape(cfg["input_shape"]))
    except ConfigError as err:
        message = str(err)
        raise ConfigError(message if "input_shape" in message else
                          f"--input_shape: {message}") from None


def check_augmentation_flags(cfg: dict, shape: tuple) -> None:
    for key in ("aug_list", "aug_list_for_test"):
        _parsed(cfg, key, lambda spec: parse_aug_list(spec, size=shape[0]))
    _parsed(cfg, "distaug_type", distaug_transforms)


def check_network_flags(cfg: dict) -> None:
    spec = model_spec(cfg["model_type"])
    dims = _parsed(cfg, "head_dims", parse_head_dims)
    if spec["contrastive"] and not dims:
        raise ConfigError(f"--head_dims must not be empty for --model_type={cfg['model_type']} "
                          "(the loss needs an embedding); e.g. --head_dims=512x8,128")
    _one_of(cfg, "net_type", RESNET_SPECS)
    if _positive(cfg, "net_width") > 16:
        raise ConfigError(f"--net_width={cfg['net_width']} is too large (at most 16)")
    if cfg["stem_width"] is not None:
        _at_least(cfg, "stem_width", 0, what=">= 0 (0 = scale with --net_width)")
    if _positive(cfg, "temperature") < 1e-3:
        raise ConfigError(f"--temperature={cfg['temperature']} is too small: logits / tau "
                          "overflow float32 (use >= 0.001; the paper uses 0.2)")
    check_baseline_flags(cfg)


def check_baseline_flags(cfg: dict) -> None:
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


def check_optimizer_flags(cfg: dict) -> None:
    _one_of(cfg, "optim_type", OPTIMIZERS)
    _one_of(cfg, "sched_type", SCHED_FLAGS)
    _positive(cfg, "learning_rate")
    if not 0.0 <= _number(cfg, "momentum") < 1.0:
        raise ConfigError(f"--momentum={cfg['momentum']} must be in [0, 1)")
    _at_least(cfg, "weight_decay", 0.0, kind=float)
    check_schedule_ranges(cfg)


def check_schedule_ranges(cfg: dict) -> None:
    if not 0 <= int(cfg.get("sched_level", 7)) <= 8:
        raise ConfigError(f"--sched_level={cfg['sched_level']} must be in 0..8")
    if not 0.0 <= float(cfg.get("sched_min_rate", 0.0)) <= 1.0:
        raise ConfigError(f"--sched_min_rate={cfg['sched_min_rate']} must be in [0, 1]")
    if int(cfg.get("sched_step_size", 1)) <= 0:
        raise ConfigError(f"--sched_step_size={cfg['sched_step_size']} must be >= 1")


def check_training_flags(cfg: dict) -> None:
    for key in ("num_epoch", "num_batch", "eval_epoch"):
        _at_least(cfg, key, 0)
    for key in ("batch_size", "ckpt_epoch", "eval_batch_size", "max_detector_train"):
        _at_least(cfg, key, 1, what="a positive integer")
    if _at_least(cfg, "seed", 0) > MAX_SEED:
        raise ConfigError(f"--seed={cfg['seed']} must be at most {MAX_SEED}")
    _one_of(cfg, "mixed_precision", PRECISIONS)
    check_budget_flags(cfg)


#: the longest --train_minutes: a year (a budget beyond it is a typo, and overflows the plan)
MAX_TRAIN_MINUTES = 525_600


def check_budget_flags(cfg: dict) -> None:
    """--train_minutes: a non-negative number of minutes, for a model that trains."""
    minutes = _number(dict(train_minutes=cfg.get("train_minutes") or 0.0), "train_minutes")
    if minutes < 0:
        raise ConfigError(f"--train_minutes={minutes} must be >= 0 (0 = off)")
    if minutes > MAX_TRAIN_MINUTES:
        raise ConfigError(f"--train_minutes={minutes:g} is more than a year "
                          f"({MAX_TRAIN_MINUTES} minutes); give the budget of this run")
    if minutes > 0 and model_spec(cfg["model_type"]).get("fixed", {}).get("num_epoch") == 0:
        raise ConfigError(f"--train_minutes={minutes}: --model_type={cfg['model_type']} is not "
                          "trained; drop --train_minutes")


def check_distribution_flags(cfg: dict) -> None:
    _one_of(cfg, "strategy", STRATEGIES)
    if cfg["strategy"] == "multi_worker":
        parse_tf_config(os.environ.get("TF_CONFIG"))


def check_protocol_flags(cfg: dict) -> None:
    """The paper's extra protocols (data/protocols_extra.py): ranges that need no data."""
    ratio = float(cfg.get("outlier_ratio") or 0.0)
    if not 0.0 <= ratio <= MAX_OUTLIER_RATIO:
        raise ConfigError(f"--outlier_ratio={ratio} must be in [0, {MAX_OUTLIER_RATIO}]")
    for key in ("num_inlier_for_detector", "num_train"):
        if int(cfg.get(key) or 0) < 0:
            raise ConfigError(f"--{key}={cfg[key]} must be >= 0 (0 = off)")


def check_scoring_flags(cfg: dict) -> None:
    """Calibration and export flags (also checked by script/export.py before it loads)."""
    get = lambda k: cfg.get(k, FLAG_DEFAULTS[k])  # noqa: E731 (runs made before these flags)
    check_calibration_flags(get("calibration_fraction"), get("target_fpr"))
    if get("export_detector") not in export_choices():
        raise ConfigError(f"--export_detector={get('export_detector')} is unknown; choose one "
                          f"of {', '.join(export_choices())}")
    if get("export"):
        check_exportable(cfg["model_type"], "--export")


def check_exportable(model_type: str, what: str) -> None:
    """The export is built from the network's conv trunk; the frozen baselines have none,
    which would end a finished run in a traceback after all its scoring."""
    if not has_conv_trunk(model_type):
        raise ConfigError(f"{what}: --model_type={model_type} has no convolutional trunk, so "
                          "there is no model to export (its metrics need none); run it "
                          "without --export")


def check_synthetic_flags(cfg: dict) -> None:
    """--synthetic_validation damages the held-out good images, so it needs some."""
    kind = cfg.get("synthetic_validation", "none")
    _one_of({"synthetic_validation": kind}, "synthetic_validation", ("none", *SYNTHETIC_KINDS))
    if kind != "none" and float(cfg.get("calibration_fraction",
                                        FLAG_DEFAULTS["calibration_fraction"])) <= 0:
        raise ConfigError(f"--synthetic_validation={kind} scores held-out good images; "
                          "--calibration_fraction=0 holds out none (use e.g. 0.1)")


def check_export_format(fmt: str) -> None:
    """script/export.py --format: a known format whose converter packages are installed."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format={fmt} is unknown; choose one of {', '.join(FORMATS)}")
    require_converter(fmt)


def patch_feature_sets(cfg: dict) -> list[str]:
    names = [f.strip() for f in str(cfg["mvtec_features"]).split(",") if f.strip()]
    if not names or any(f not in FEATURE_SETS for f in names):
        raise ConfigError(f"--mvtec_features={cfg['mvtec_features']} must list some of "
                          f"{', '.join(FEATURE_SETS)}")
    return names


def check_patch_flags(cfg: dict) -> tuple[tuple, tuple, int]:
    """The patch evaluator's flags; returns (network input shape, image shape to load,
    detector rows per image: the patch grid)."""
    size, p = int(cfg["mvtec_image_size"]), int(cfg["patch_size"])
    if size <= 0:
        raise ConfigError(f"--mvtec_image_size={size} must be positive")
    check_patch_sizes(size, p, int(cfg["patches_per_image"]))
    n = grid_size(size, p, int(cfg["patch_stride"]))
    patch_feature_sets(cfg)
    if cfg.get("patch_features", "crop") == "conv":
        check_conv_patch_features(cfg["model_type"], p)
    return check_input_shape((p, p, 3)), (size, size, 3), n * n


def check_map_flags(cfg: dict) -> tuple[tuple, tuple, int]:
    """The map evaluator's flags; returns (network input shape, image shape to load,
    detector rows per image: the cells of the feature map): the network trains on whole
    images at --mvtec_image_size, or on crops of --map_train_crop of them, and scores whole
    images."""
    size = int(cfg["mvtec_image_size"])
    stages = parse_stages(cfg["map_stages"])
    coarsest = stage_stride(max(stages))
    native = size == 0  # the images' own size, known when they are listed
    if not native and (size <= SMALL_STEM_MAX_SIZE or size % coarsest):
        raise ConfigError(f"--mvtec_mode=map: --mvtec_image_size={size} must be larger than "
                          f"{SMALL_STEM_MAX_SIZE} and a multiple of {coarsest} (the stride of "
                          f"stage {max(stages)}), e.g. 256, or 0 (the images' own size)")
    window = _at_least(cfg, "map_neighbourhood", 1, what="a positive odd integer")
    if window % 2 == 0:
        raise ConfigError(f"--map_neighbourhood={window} must be odd (a window centred on the "
                          "cell), e.g. 3")
    _at_least(cfg, "bank_size", 1, what="a positive integer")
    spec = model_spec(cfg["model_type"])
    if spec.get("build") and cfg["model_type"] != "raw_pixels":
        raise ConfigError(f"--mvtec_mode=map needs a ResNet proxy-task model or raw_pixels; "
                          f"--model_type={cfg['model_type']} has no ResNet stages")
    cell = stage_stride(min(stages))
    crop = int(cfg.get("map_train_crop") or 0)
    if crop < 0 or crop and (crop <= SMALL_STEM_MAX_SIZE or crop % 32
                             or (crop > size and not native)):
        raise ConfigError(f"--map_train_crop={crop} must be 0 (whole images) or a multiple of "
                          f"32 larger than {SMALL_STEM_MAX_SIZE} and at most "
                          f"--mvtec_image_size={size}, e.g. 256")
    for needs_crop, given in ((cfg.get("mvtec_aspect", "square") == "keep", "--mvtec_aspect=keep"),
                              (native, "--mvtec_image_size=0")):
        if needs_crop and not crop:
            raise ConfigError(f"{given} needs --map_train_crop (the network trains on square "
                              "crops of the images), e.g. --map_train_crop=256")
    side = crop or size
    # the fewest cells an image can have: a native working size is at least NATIVE_SIDES[0]
    rows = (max(size, NATIVE_SIDES[0]) // cell) ** 2
    return check_input_shape((side, side, 3)), (size, size, 3), rows


def check_image_evaluator_flags(cfg: dict, shape: tuple) -> tuple[tuple, tuple, int]:
    """Whole images: loaded at the network's input shape, one detector row each."""
    return shape, shape, 1


#: the flag check of each evaluator: (network input shape, image shape, rows per image)
EVALUATOR_CHECKS = {"patch": lambda cfg, shape: check_patch_flags(cfg),
                    "map": lambda cfg, shape: check_map_flags(cfg)}


def check_map_detectors(detectors: Iterable[type], evaluator: EvaluatorSpec) -> None:
    """Detectors that score the cells of feature maps need an evaluator that makes them."""
    dense = [cls.name for cls in detectors if cls.map_only]
    if dense and not evaluator.feature_maps:
        raise ConfigError(f"--detectors={','.join(cls.name for cls in detectors)}: "
                          f"{', '.join(dense)} score feature maps; use them with "
                          "--mvtec_mode=map on MVTec-layout data")


def check_conv_patch_features(model_type: str, patch_size: int) -> None:
    """--patch_features=conv needs a ResNet trunk whose total stride divides the patch."""
    if not has_conv_trunk(model_type):
        raise ConfigError(f"--patch_features=conv needs a ResNet proxy-task model; "
                          f"--model_type={model_type} has no conv trunk (use crop)")
    net_stride = 8 if patch_size <= SMALL_STEM_MAX_SIZE else 32
    if patch_size % net_stride:
        raise ConfigError(f"--patch_features=conv: --patch_size={patch_size} is not a multiple "
                          f"of the network's stride {net_stride} (use crop)")


RUN_SUBDIRS = ("ckpt", "stats", "logs")


def nearest_existing(path: Path | str) -> Path:
    """``path`` or its closest ancestor that exists (what creating ``path`` starts from)."""
    probe = Path(os.path.abspath(path))
    while not os.path.lexists(probe) and probe.parent != probe:
        probe = probe.parent
    return probe


def _can_create_in(directory):
    """True when a directory can really be made inside ``directory``: permissions alone say
    nothing for root, nor for /proc, /sys or a read-only mount. The probe is removed at once."""
    import tempfile

    try:
        os.rmdir(tempfile.mkdtemp(prefix=".droc-probe-", dir=directory))
    except OSError:
        return False
    return True


def check_model_dir(model_dir: Optional[Path | str]) -> None:
    """The run directory must be a directory we can create or write to, its ckpt/, stats/
    and logs/ directories where they exist."""
    if not str(model_dir or "").strip():
        raise ConfigError("--model_dir is empty; give the run directory")
    path = Path(model_dir)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--model_dir={model_dir} is a file, not a directory; "
                          "give a directory path")
    probe = nearest_existing(path)
    if not probe.is_dir():
        raise ConfigError(f"--model_dir={model_dir} cannot be created: {probe} is "
                          f"{'a broken link' if not probe.exists() else 'not a directory'}")
    if not os.access(probe, os.W_OK | os.X_OK) or not _can_create_in(probe):
        what = "is not writable" if probe == Path(os.path.abspath(path)) else "cannot be created"
        raise ConfigError(f"--model_dir={model_dir} {what} ({probe} denies writing)")
    for name in RUN_SUBDIRS:
        sub = path / name
        if os.path.lexists(sub) and not sub.is_dir():
            raise ConfigError(f"--model_dir={model_dir}: {sub} is not a directory; a run "
                              f"keeps its {name}/ there (move the file away)")


def check_run_flags(cfg: dict) -> None:
    if cfg["force_init"] and cfg["reevaluate"]:
        raise ConfigError("--force_init and --reevaluate contradict each other: --force_init "
                          "trains again from scratch, --reevaluate only re-scores a finished run")
    check_model_dir(cfg["model_dir"])
    summary = Path(cfg["model_dir"]) / "stats" / "summary.json"
    if cfg["reevaluate"] and not summary.is_file():
        raise ConfigError(f"--reevaluate: --model_dir={cfg['model_dir']} holds no finished run "
                          f"(no {summary}); drop --reevaluate to train it")


# ------------------------------------------------------------------ checks during resolution

def _known_dataset(cfg):
    return str(cfg["dataset"]).strip().lower() in DATASETS


def run_evaluator(cfg: dict) -> EvaluatorSpec:
    """The run's evaluator (detect/evaluators.py chooses it from the data's layout)."""
    return choose_evaluator(has_defect_layout(cfg["dataset"]), cfg["mvtec_mode"],
                            reads_image_files(cfg["dataset"]))


def _evaluator_takes(flag):
    """Whether the run's evaluator uses ``flag`` (an unknown dataset is refused elsewhere)."""
    return lambda cfg: _known_dataset(cfg) and run_evaluator(cfg).applies(flag)


def _reads(location):
    return lambda cfg: not _known_dataset(cfg) or location in dataset_locations(cfg["dataset"])


def _datasets_reading(location):
    return "--dataset=" + "|".join(d for d in DATASETS if location in dataset_locations(d))


def _uses_schedule_flag(name):
    return lambda cfg: name in SCHED_FLAGS.get(cfg["sched_type"], ())


def _schedules_using(name):
    return "--sched_type=" + "|".join(k for k, v in SCHED_FLAGS.items() if name in v)


def _evaluators_taking(flag):
    return "--mvtec_mode=" + " or ".join(
        spec.name for spec in EVALUATORS.values() if spec.applies(flag))

# flag -> (does it apply to this configuration?, where it applies). A flag given on the
# command line where it does not apply would be silently ignored, so it is an error.
FLAG_APPLIES = {
    "root": (_reads("root"), _datasets_reading("root")),
    "data_dir": (_reads("data_dir"), _datasets_reading("data_dir")),
    "celeba_attribute": (lambda cfg: cfg["dataset"] == "celeba", "--dataset=celeba"),
    "mvtec_mode": (_evaluator_takes("mvtec_mode"),
                   "MVTec-layout data (--dataset=mvtec, mvtec_folder or image_dirs), and "
                   "--mvtec_mode=map also to --dataset=folder"),
    **{name: (_evaluator_takes(name), _evaluators_taking(name))
       for spec in EVALUATORS.values() for name in spec.options + spec.flags
       if name != "mvtec_mode"},
    "cutpaste_variant": (lambda cfg: cfg["model_type"] in ("cutpaste", "cutpaste_map"),
                         "--model_type=cutpaste or cutpaste_map"),
    "noise_std": (lambda cfg: cfg["model_type"] == "denoising", "--model_type=denoising"),
    "image_norm": (lambda cfg: has_conv_trunk(cfg["model_type"]), "the ResNet proxy tasks"),
    "max_image_pixels": (lambda cfg: not _known_dataset(cfg) or reads_image_files(cfg["dataset"]),
                         "datasets read from image files (--dataset="
                         + "|".join(d for d in DATASETS if reads_image_files(d)) + ")"),
    "nesterov": (lambda cfg: cfg.get("optim_type") == "sgd", "--optim_type=sgd (Adam uses its "
                 "own moment estimates)"),
    "momentum": (lambda cfg: cfg.get("optim_type") == "sgd", "--optim_type=sgd (Adam uses its "
                 "own moment estimates)"),
    **{name: (_uses_schedule_flag(name), _schedules_using(name))
       for name in ("sched_min_rate", "sched_level", "sched_gamma", "sched_step_size")},
}


def check_flags_apply(cfg: dict, explicit: Collection[str] = ()) -> None:
    """Every flag given on the command line must apply to the run (FLAG_APPLIES); a library
    caller's None, and an empty value (the release scripts pass ``--root=``), mean "not
    set"."""
    for name in sorted(set(explicit) & set(FLAG_APPLIES)):
        applies, where = FLAG_APPLIES[name]
        if cfg.get(name) not in (None, "") and not applies(cfg):  # --root= is "no root"
            raise ConfigError(f"--{name}={cfg[name]} is not used by this run: it applies to "
                              f"{where} only; drop it")


def check_explicit_flags(cfg: dict, explicit: Collection[str] = (),
                         fixed: Optional[Mapping] = None) -> None:
    """Flags given on the command line that would be ignored or overridden are errors."""
    for key, value in (fixed or {}).items():  # frozen baselines: num_epoch=0
        if key in explicit and cfg[key] != value:
            raise ConfigError(f"--model_type={cfg['model_type']} needs --{key}={value}")
    if {"num_epoch", "train_minutes"} <= set(explicit) and cfg.get("train_minutes"):
        raise ConfigError(f"--num_epoch={cfg['num_epoch']} and --train_minutes="
                          f"{cfg['train_minutes']} both set the length of training; give one")
    if "model_dir" in explicit and not str(cfg["model_dir"] or "").strip():
        raise ConfigError("--model_dir is empty; give the run directory (leave the flag out for "
                          "runs/<dataset>_<category>_<model_type>_s<seed>)")
    check_flags_apply(cfg, explicit)
    if cfg.get("celeba_attribute") and cfg["dataset"] != "celeba":
        raise ConfigError(f"--celeba_attribute applies to --dataset=celeba only, not "
                          f"{cfg['dataset']}")
    check_schedule_ranges(cfg)


def view_count(cfg: dict) -> int:
    """Views per image the transformation classifier tells apart: one per
    comma-separated entry of --aug_list (the resolution has added the rotations)."""
    return num_views(cfg["aug_list"])


def check_view_counts(cfg: dict) -> None:
    """Views of --aug_list / --aug_list_for_test and --latent_dim agree with the model."""
    views, test_views = view_count(cfg), num_views(cfg["aug_list_for_test"])
    rotation = cfg["model_type"] == "rotation"
    if rotation and test_views != views:
        raise ConfigError(f"--aug_list_for_test={cfg['aug_list_for_test']} has {test_views} "
                          f"views but --aug_list has {views}; give one test view per training "
                          "view, e.g. x,+rotate90,+rotate180,+rotate270")
    if not rotation and views > 2:
        raise ConfigError(f"--aug_list={cfg['aug_list']} has {views} views; a contrastive model "
                          "takes one entry (drawn twice) or two")
    latent = cfg.get("latent_dim")
    if latent is None:
        return
    if rotation and int(latent) != views:
        raise ConfigError(f"--latent_dim={latent} must equal the number of views in --aug_list "
                          f"({views} in {cfg['aug_list']!r}): the classifier predicts "
                          "which view an image came from")
    if not rotation and int(latent) != 0:
        raise ConfigError(f"--latent_dim={latent} applies to --method=UnsupEmbed (rotation); "
                          f"use 0 or leave it out for {cfg['model_type']}")


# ------------------------------------------------------------------ the whole configuration

def validate_config(cfg: dict) -> RunChecks:
    """Checks every flag of a resolved config; returns its ``RunChecks``."""
    model_spec(cfg["model_type"])
    check_finite_flags(cfg)
    check_data_flags(cfg)
    check_input_bits_flag(cfg)
    check_image_dirs_flags(cfg)
    shape = check_input_shape_flag(cfg)
    check_augmentation_flags(cfg, shape)
    check_network_flags(cfg)
    check_optimizer_flags(cfg)
    check_training_flags(cfg)
    check_distribution_flags(cfg)
    check_protocol_flags(cfg)
    check_scoring_flags(cfg)
    check_synthetic_flags(cfg)
    evaluator = run_evaluator(cfg)
    check = EVALUATOR_CHECKS.get(evaluator.name, check_image_evaluator_flags)
    shape, image_shape, rows_per_image = check(cfg, shape)
    detectors = parse_detectors(cfg["detectors"])
    check_map_detectors(detectors, evaluator)
    if model_spec(cfg["model_type"]).get("map_only") and not evaluator.feature_maps:
        raise ConfigError(f"--model_type={cfg['model_type']} learns on feature maps of whole "
                          "images: use it with --mvtec_mode=map on MVTec-layout data")
    check_run_flags(cfg)
    return RunChecks(shape, image_shape, detectors, evaluator, rows_per_image)
