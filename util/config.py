"""Every flag of a run, in one table: the CLI defines absl flags from it and the
library (benchmarks, tests) builds configs from the same defaults.

Names follow the paper's public release where it has them. ``None`` defaults
are filled per model type (model/registry.py) or by a ``--preset``.
Precedence: a flag given explicitly, then the preset, then the per-model default.

This module and everything it imports are free of TensorFlow and Keras, so a
bad flag is answered at ``--help`` speed (checks: util/validate.py).
"""

import logging
import os

from data.aug_spec import DEFAULT_AUG, ROTATION_SUFFIX, drop_hflip, has_hflip, num_views
from util.errors import ConfigError
from util.presets import PRESETS, preset_values

# (name, kind, default, help); kind is an absl DEFINE_* suffix or "enum:<a>|<b>"
FLAG_SPECS = [
    ("preset", "string", "", f"Named flag bundle: {', '.join(PRESETS)}."),
    ("model_type", "string", "contrastive_da", "Proxy task: rotation, contrastive, "
     "contrastive_da, cutpaste, denoising; baselines raw_pixels, imagenet_resnet50."),
    ("dataset", "string", "cifar10ood", "Dataset name (data/registry.py)."),
    ("category", "string", "0", "Inlier class: name or index."),
    ("root", "string", None, "Image folder, or CIFAR python-pickle directory."),
    ("data_dir", "string", None, "Prepared TFDS data directory."),
    ("is_validation", "bool", False, "Validation protocol (held-out training data)."),
    ("input_shape", "string", "32,32,3", "H,W,C of the network input."),
    ("aug_list", "string", None, "Training augmentation, one view per comma-separated entry "
     f"(grammar: data/aug_spec.py; default per model type, e.g. {DEFAULT_AUG}; 'x' = none)."),
    ("distaug_type", "string", None, "Distribution augmentation: none, rot, hflip, vflip, 1..8 "
     "(default rot for contrastive_da, none otherwise)."),
    ("net_type", "string", "ResNet18", "ResNet10, ResNet18, ResNet34, ResNet50, ResNet101 or "
     "ResNet152."),
    ("net_width", "float", 1.0, "Width multiplier of the ResNet stages."),
    ("stem_width", "integer", None, "Stem filters (default 64 at every width, as the release; "
     "0 = scale with --net_width)."),
    ("head_dims", "string", None, "MLP head, e.g. 512x8,128 (default per model type)."),
    ("temperature", "float", 0.2, "Contrastive temperature tau."),
    ("optim_type", "enum:sgd|adam", "sgd", "Optimizer: sgd (with --momentum, --nesterov) or "
     "adam (AMSGrad, as the release)."),
    ("sched_type", "enum:cos|halfcos|linear|step|constant", "cos", "Learning-rate schedule "
     "(util/schedules.py); stepped per --sched_freq."),
    ("learning_rate", "float", 0.01, "Base learning rate."),
    ("momentum", "float", 0.9, "SGD momentum."),
    ("weight_decay", "float", 3e-4, "L2 penalty wd * sum(w^2) / 2 over trainable weights."),
    ("num_epoch", "integer", 2048, "Training epochs (0 = random-init baseline)."),
    ("num_batch", "integer", 0, "Steps per epoch (0 = one pass over the training set)."),
    ("batch_size", "integer", None, "Global batch (default 32 contrastive, 64 rotation)."),
    ("ckpt_epoch", "integer", 32, "Save a checkpoint every N epochs."),
    ("eval_epoch", "integer", 256, "Evaluate the detectors every N epochs (0 = only at the end)."),
    ("detectors", "string", "kocsvm,locsvm,kde,gde,auc", "Detectors to report."),
    ("max_detector_train", "integer", 20000, "Training images used to fit the detectors."),
    ("seed", "integer", 0, "Random seed."),
    ("force_init", "bool", False, "Start over, ignoring existing checkpoints."),
    ("model_dir", "string", None, "Run directory (default runs/<dataset>_<category>_"
     "<model_type>_s<seed>)."),
    ("mixed_precision", "enum:none|bf16|fp16", "none", "Compute dtype; variables stay float32, "
     "fp16 adds loss scaling."),
    ("sync_bn", "bool", True, "Synchronise BatchNorm statistics across replicas."),
    ("eval_batch_size", "integer", 256, "Batch size of feature extraction."),
    # --- robustness and scale (i8) ---
    ("strategy", "enum:mirrored|multi_worker|one_device", "mirrored", "tf.distribute strategy: "
     "all local GPUs (or the CPU), several machines from TF_CONFIG, or one device."),
    ("deterministic", "bool", False, "Bit-reproducible run: TF op determinism and a fixed "
     "tf.data order (slower; see docs/robustness.md)."),
    ("reevaluate", "bool", False, "Evaluate a finished run again (otherwise its stored "
     "result is printed)."),
    # --- parity (i7a) ---
    ("clip_pixels", "bool", False, "Clip augmented pixels to [0,1] after each jitter op and at "
     "the end (the release never clips)."),
    ("aug_list_for_test", "string", None, "Test-time views of the transformation classifier's "
     "scores (default per model type; rotation: x,+rotate90,+rotate180,+rotate270)."),
    # --- experiments (i11) ---
    ("outlier_ratio", "float", 0.0, "Unsupervised protocol: fraction in [0, 0.5] of the training "
     "set replaced by unlabeled outliers of the other classes (total size unchanged)."),
    ("num_inlier_for_detector", "integer", 0, "Semi-supervised protocol: fit the detectors on "
     "only N clean training inliers (0 = the representation's training set)."),
    ("num_train", "integer", 0, "Data efficiency: train the representation on N training "
     "images; the detectors use the full set (0 = all)."),
    ("noise_std", "float", 0.1, "Denoising autoencoder: std of the Gaussian input noise "
     "(pixels in [0, 1])."),
    ("pretrained_weights", "string", None, "imagenet_resnet50: local weights file of "
     "keras.applications.ResNet50 without top (include_top=False)."),
    # --- scoring & export (i9) ---
    ("calibration_fraction", "float", 0.1, "Fraction of the detectors' training inliers held "
     "out of the fit to set the threshold and the score normalisation."),
    ("target_fpr", "float", 0.01, "False-positive rate on the calibration inliers at which the "
     "decision threshold is set."),
    ("export_detector", "enum:auto|kde|gde|kocsvm|locsvm|nn", "auto", "Detector (on pool "
     "features) in <run>/export: auto = best pool AUC under the validation protocol, else kde."),
    ("export", "bool", True, "Write the SavedModel <run>/export at the end of the run."),
    # --- release flags (i7b) ---
    ("method", "string", None, "The release's name of the proxy task: UnsupEmbed (= "
     "--model_type=rotation) or Contrastive (= contrastive, or contrastive_da when "
     "--distaug_type is not none/1)."),
    ("file_path", "string", None, "The release's run name: the run directory becomes "
     "<model_dir or runs>/<ckpt_prefix>/<file_path>."),
    ("ckpt_prefix", "string", "", "Sub-folder of --model_dir holding the run (as the release)."),
    ("latent_dim", "integer", None, "UnsupEmbed: number of views the classifier tells apart; "
     "must equal the number of views of --aug_list. 0 (or unset) for Contrastive."),
    ("nesterov", "bool", False, "Nesterov momentum (--optim_type=sgd only)."),
    ("sched_freq", "enum:epoch|step", "epoch", "Update the learning rate every epoch or every "
     "step."),
    ("sched_min_rate", "float", 0.0, "cos/linear: final learning rate as a fraction of "
     "--learning_rate."),
    ("sched_level", "integer", 7, "halfcos: the cosine runs over level/16 of a half period "
     "(0..8)."),
    ("sched_gamma", "float", 0.995, "step: decay factor per --sched_step_size."),
    ("sched_step_size", "integer", 1, "step: epochs (or steps with --sched_freq=step) between "
     "decays."),
    ("regularize_bn", "bool", False, "As the release: true EXCLUDES BatchNorm gamma/beta from "
     "the L2 penalty (default: every trainable weight is penalised)."),
    ("celeba_attribute", "string", None, "celeba: images WITH this attribute are the "
     "outliers (default Eyeglasses)."),
    # --- MVTec / CutPaste (i10) ---
    ("mvtec_mode", "enum:patch|image", "patch", "mvtec/mvtec_folder datasets: 'patch' learns on "
     "random patches and scores every patch densely (heat maps, pixel metrics); 'image' scores "
     "the whole image resized to --input_shape."),
    ("mvtec_image_size", "integer", 256, "Patch mode: images are resized to this side."),
    ("patch_size", "integer", 32, "Patch mode: side of the patches (the network input)."),
    ("patch_stride", "integer", 4, "Patch mode: stride of the dense test-time patch grid."),
    ("patches_per_image", "integer", 4, "Patch mode: random training patches cut from each "
     "image drawn in a step."),
    ("mvtec_features", "string", "pool", "Patch mode: feature sets scored per patch (pool, "
     "embed)."),
    ("patch_features", "enum:crop|conv", "crop", "Patch mode: 'crop' runs the network on every "
     "cropped grid patch (the paper); 'conv' runs it once per shifted whole image and averages "
     "the trunk cells under each patch (about 4x faster end to end, context-aware features)."),
    ("mvtec_heatmaps", "bool", True, "Patch mode: write <run>/heatmaps/<defect>/<name>.png."),
    ("cutpaste_variant", "enum:cutpaste|scar|3way", "3way", "CutPaste proxy task: normal vs "
     "cut-and-pasted rectangle, vs scar, or 3-way."),
]

# per schedule, the --sched_* flags it reads (any other one given explicitly is an error)
SCHED_FLAGS = {"cos": ("sched_min_rate",), "linear": ("sched_min_rate",),
               "halfcos": ("sched_level",), "step": ("sched_gamma", "sched_step_size"),
               "constant": ()}
METHODS = {"unsupembed": "rotation", "contrastive": "contrastive"}
NO_DISTAUG = (None, "", "none", "1")

FLAG_DEFAULTS = {name: default for name, _, default, _ in FLAG_SPECS}


def define_flags(flags_module):
    """Defines every FLAG_SPECS entry as an absl flag."""
    for name, kind, default, help_text in FLAG_SPECS:
        if kind.startswith("enum:"):
            flags_module.DEFINE_enum(name, default, kind[5:].split("|"), help_text)
        else:
            getattr(flags_module, f"DEFINE_{kind}")(name, default, help_text)


def resolve_config(values, explicit=()):
    """Flag values -> full config: preset for unset flags, then per-model-type defaults."""
    from model.registry import model_spec

    unknown = set(values) - set(FLAG_DEFAULTS)
    if unknown:
        raise ConfigError(f"unknown config keys {sorted(unknown)}")
    cfg = dict(FLAG_DEFAULTS)
    cfg.update(values)
    for key, value in preset_values(cfg.get("preset")).items():
        if key not in explicit:
            cfg[key] = value
    apply_release_flags(cfg, explicit)
    spec = model_spec(cfg["model_type"])
    given_aug = cfg["aug_list"] is not None
    for key in ("batch_size", "head_dims", "distaug_type", "aug_list", "aug_list_for_test"):
        if cfg[key] is None:
            cfg[key] = spec[key]
    resolve_aug_lists(cfg, given_aug)
    for key, value in spec.get("fixed", {}).items():  # frozen baselines: num_epoch=0
        if key in explicit and cfg[key] != value:
            raise ConfigError(f"--model_type={cfg['model_type']} needs --{key}={value}")
        cfg[key] = value
    check_release_flags(cfg, explicit)
    cfg["model_dir"] = run_directory(cfg)
    return cfg


def distaug_has_hflip(distaug_type):
    """True when the distribution augmentation makes horizontally flipped copies."""
    from data.distaug import distaug_transforms

    try:
        names = distaug_transforms(distaug_type)
    except ConfigError:
        return False  # util/validate.py reports the bad --distaug_type
    return any("hflip" in name for name in names)


def resolve_aug_lists(cfg, given_aug):
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
    views, test_views = num_views(cfg["aug_list"]), num_views(cfg["aug_list_for_test"])
    if cfg["model_type"] == "rotation" and test_views != views:
        raise ConfigError(f"--aug_list_for_test={cfg['aug_list_for_test']} has {test_views} "
                          f"views but --aug_list has {views}; give one test view per training "
                          "view, e.g. x,+rotate90,+rotate180,+rotate270")
    if cfg["model_type"] != "rotation" and views > 2:
        raise ConfigError(f"--aug_list={cfg['aug_list']} has {views} views; a contrastive model "
                          "takes one entry (drawn twice) or two")


def apply_release_flags(cfg, explicit=()):
    """The release's names -> ours: --method, dataset aliases, celeba's category."""
    from data.registry import canonical_dataset

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
        from data.celeba import release_category

        cfg["category"], cfg["celeba_attribute"] = release_category(
            cfg["category"], cfg.get("celeba_attribute"))
    elif cfg.get("celeba_attribute"):
        raise ConfigError(f"--celeba_attribute applies to --dataset=celeba only, not "
                          f"{cfg['dataset']}")


def view_count(cfg):
    """Views per image the transformation classifier tells apart: one per
    comma-separated entry of --aug_list (resolve_aug_lists has added the rotations)."""
    return num_views(cfg["aug_list"])


def check_release_flags(cfg, explicit=()):
    """Flags that would otherwise be accepted and then ignored are errors."""
    latent = cfg.get("latent_dim")
    if latent is not None:
        if cfg["model_type"] == "rotation":
            if int(latent) != view_count(cfg):
                raise ConfigError(
                    f"--latent_dim={latent} must equal the number of views in --aug_list "
                    f"({view_count(cfg)} in {cfg['aug_list']!r}): the classifier predicts "
                    "which view an image came from")
        elif int(latent) != 0:
            raise ConfigError(f"--latent_dim={latent} applies to --method=UnsupEmbed (rotation); "
                              f"use 0 or leave it out for {cfg['model_type']}")
    if cfg.get("optim_type") == "adam":
        for name in ("nesterov", "momentum"):
            if name in explicit and cfg[name] != FLAG_DEFAULTS[name]:
                raise ConfigError(f"--{name} applies to --optim_type=sgd only (Adam uses its "
                                  "own moment estimates)")
    used = SCHED_FLAGS.get(cfg["sched_type"], ())
    for name in ("sched_min_rate", "sched_level", "sched_gamma", "sched_step_size"):
        if name in explicit and name not in used and cfg[name] != FLAG_DEFAULTS[name]:
            raise ConfigError(f"--{name} has no effect with --sched_type={cfg['sched_type']}; "
                              f"it applies to {', '.join(k for k, v in SCHED_FLAGS.items() if name in v)}")
    if not 0 <= int(cfg.get("sched_level", 7)) <= 8:
        raise ConfigError(f"--sched_level={cfg['sched_level']} must be in 0..8")
    if not 0.0 <= float(cfg.get("sched_min_rate", 0.0)) <= 1.0:
        raise ConfigError(f"--sched_min_rate={cfg['sched_min_rate']} must be in [0, 1]")
    if int(cfg.get("sched_step_size", 1)) <= 0:
        raise ConfigError(f"--sched_step_size={cfg['sched_step_size']} must be >= 1")


def run_directory(cfg):
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
