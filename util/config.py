"""Every flag of a run, in one table: the CLI defines absl flags from it and the
library (benchmarks, tests) builds configs from the same defaults.

Names follow the paper's public release where it has them. ``None`` defaults
are filled per model type (model/registry.py) or by a ``--preset``.
"""

import os

from data.augment import DEFAULT_AUG
from util.errors import ConfigError
from util.presets import PRESETS, preset_values

# (name, kind, default, help); kind is an absl DEFINE_* suffix or "enum:<a>|<b>"
FLAG_SPECS = [
    ("preset", "string", "", f"Named flag bundle: {', '.join(PRESETS)}."),
    ("model_type", "string", "contrastive_da", "Proxy task: rotation, contrastive, contrastive_da, cutpaste."),
    ("dataset", "string", "cifar10ood", "Dataset name (data/registry.py)."),
    ("category", "string", "0", "Inlier class: name or index."),
    ("root", "string", None, "Image folder, or CIFAR python-pickle directory."),
    ("data_dir", "string", None, "Prepared TFDS data directory."),
    ("is_validation", "bool", False, "Validation protocol (held-out training data)."),
    ("input_shape", "string", "32,32,3", "H,W,C of the network input."),
    ("aug_list", "string", DEFAULT_AUG, "Training augmentation ('x' = none)."),
    ("distaug_type", "string", None, "Distribution augmentation: none, rot, hflip, vflip, 1..8 "
     "(default rot for contrastive_da, none otherwise)."),
    ("net_type", "string", "ResNet18", "ResNet10, ResNet18, ResNet34 or ResNet50."),
    ("net_width", "float", 1.0, "Width multiplier of the ResNet stages."),
    ("stem_width", "integer", None, "Stem filters (default 64 at every width, as the release; "
     "0 = scale with --net_width)."),
    ("head_dims", "string", None, "MLP head, e.g. 512x8,128 (default per model type)."),
    ("temperature", "float", 0.2, "Contrastive temperature tau."),
    ("optim_type", "enum:sgd", "sgd", "Optimizer (SGD with momentum)."),
    ("sched_type", "enum:cos|constant", "cos", "Learning-rate schedule (cosine, per epoch)."),
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
    ("mvtec_heatmaps", "bool", True, "Patch mode: write <run>/heatmaps/<defect>/<name>.png."),
    ("cutpaste_variant", "enum:cutpaste|scar|3way", "3way", "CutPaste proxy task: normal vs "
     "cut-and-pasted rectangle, vs scar, or 3-way."),
]

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
    spec = model_spec(cfg["model_type"])
    for key in ("batch_size", "head_dims", "distaug_type"):
        if cfg[key] is None:
            cfg[key] = spec[key]
    if cfg["model_dir"] is None:
        cfg["model_dir"] = os.path.join(
            "runs", f"{cfg['dataset']}_{cfg['category']}_{cfg['model_type']}_s{cfg['seed']}")
    return cfg
