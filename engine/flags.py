"""Every flag of a run, in one table: the CLI defines absl flags from it and the
library (benchmarks, tests) builds configs from the same defaults.

Names follow the paper's public release where it has them. ``None`` defaults
are filled per model type (model/registry.py) or by a ``--preset``
(engine/config.py resolves them). TensorFlow-free.
"""

from typing import Any, Optional, Sequence

from absl import flags as absl_flags

from data.aug_spec import DEFAULT_AUG
from data.image_io import DEFAULT_MAX_IMAGE_PIXELS
from engine.presets import PRESETS
from util.errors import ConfigError

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
    ("input_bits", "integer", 0, "Image files (folder, mvtec, mvtec_folder): the bits per "
     "sample that files of more than 8 bits really use, 8..16, e.g. 12 for a 12-bit sensor "
     "that stores its values in 16-bit files: v becomes round(v * 255 / 4095), clipped. 0 = "
     "each file's own depth (16-bit: round(v / 257)). 8-bit files are read as they are."),
    ("max_image_pixels", "integer", DEFAULT_MAX_IMAGE_PIXELS, "Image files: the most pixels "
     "(width x height) a file may have; larger ones are refused from their header before "
     "decoding (data/image_io.py). Raise it for genuinely large camera images."),
    ("aug_list", "string", None, "Training augmentation, one view per comma-separated entry "
     f"(grammar: data/aug_spec.py; default per model type, e.g. {DEFAULT_AUG}; 'x' = none)."),
    ("distaug_type", "string", None, "Distribution augmentation: none, rot, hflip, vflip, 1..8 "
     "(default rot for contrastive_da, none otherwise)."),
    ("net_type", "string", "ResNet18", "ResNet10, ResNet18, ResNet34, ResNet50, ResNet101 or "
     "ResNet152."),
    ("net_width", "float", 1.0, "Width multiplier of the ResNet stages."),
    ("stem_width", "integer", None, "Stem filters (default 64 at every width, as the release; "
     "0 = scale with --net_width)."),
    ("image_norm", "enum:none|standardize", "none", "ResNet models: 'standardize' brings each "
     "image to the same mean and spread of its pixels before the network (robust to lighting "
     "that changes between parts; large defects shift the rest of their image)."),
    ("head_dims", "string", None, "MLP head, e.g. 512x8,128 (default per model type)."),
    ("temperature", "float", 0.2, "Contrastive temperature tau."),
    ("optim_type", "enum:sgd|adam", "sgd", "Optimizer: sgd (with --momentum, --nesterov) or "
     "adam (AMSGrad, as the release)."),
    ("sched_type", "enum:cos|halfcos|linear|step|constant", "cos", "Learning-rate schedule "
     "(engine/schedules.py); stepped per --sched_freq."),
    ("learning_rate", "float", 0.01, "Base learning rate."),
    ("momentum", "float", 0.9, "SGD momentum."),
    ("weight_decay", "float", 3e-4, "L2 penalty wd * sum(w^2) / 2 over trainable weights."),
    ("num_epoch", "integer", 2048, "Training epochs (0 = random-init baseline)."),
    ("num_batch", "integer", 0, "Steps per epoch (0 = one pass over the training set)."),
    ("train_minutes", "float", 0.0, "Wall-clock budget of training in minutes (0 = off): the "
     "step time is measured while warming up, and the number of epochs is set so that the "
     "learning-rate schedule ends when the budget does (overrides --num_epoch); at most "
     "525600 (a year). 0 under a preset with a budget (inspector) needs --num_epoch."),
    ("batch_size", "integer", None, "Global batch (default 32 contrastive, 64 rotation)."),
    ("ckpt_epoch", "integer", 32, "Save a checkpoint every N epochs."),
    ("eval_epoch", "integer", 256, "Evaluate the detectors every N epochs (0 = only at the end)."),
    ("detectors", "string", "kocsvm,locsvm,kde,gde,auc", "Detectors to report."),
    ("max_detector_train", "integer", 20000, "Training images used to fit the detectors."),
    ("seed", "integer", 0, "Random seed."),
    ("force_init", "bool", False, "Start over, ignoring existing checkpoints."),
    ("model_dir", "string", None, "Run directory (default runs/<dataset>_<category>_"
     "<model_type>_s<seed>)."),
    ("mixed_precision", "enum:none|bf16|fp16|auto", "none", "Compute dtype; variables stay "
     "float32, fp16 adds loss scaling; auto = bf16 on AMX CPUs and GPUs of compute "
     "capability >= 8.0, else none."),
    ("sync_bn", "bool", True, "Synchronise BatchNorm statistics across replicas."),
    ("eval_batch_size", "integer", 256, "Batch size of feature extraction."),
    # --- robustness and scale ---
    ("strategy", "enum:mirrored|multi_worker|one_device", "mirrored", "tf.distribute strategy: "
     "all local GPUs (or the CPU), several machines from TF_CONFIG, or one device."),
    ("deterministic", "bool", False, "Bit-reproducible run: TF op determinism and a fixed "
     "tf.data order (slower; see docs/robustness.md)."),
    ("reevaluate", "bool", False, "Evaluate a finished run again (otherwise its stored "
     "result is printed)."),
    # --- parity ---
    ("train_blur", "bool", False, "Blur during training where --aug_list asks for it. The "
     "release's blur is a no-op during training (its numbers were made without blur), so by "
     "default blur leaves images as they are."),
    ("jitter_order", "enum:run|image", "run", "Order of the colour-jitter ops: one random "
     "order per view, drawn when the pipeline is built (from --seed), as the release; or one "
     "per image."),
    ("crop_sampling", "enum:release|continuous", "release", "cnr: an integer crop side in "
     "[int(F*H), H] resized with half-pixel centres, as the release; or a continuous side "
     "sampled with corner-aligned crop_and_resize."),
    ("clip_pixels", "bool", False, "Clip augmented pixels to [0,1] after each jitter op and at "
     "the end (the release never clips)."),
    ("aug_list_for_test", "string", None, "Test-time views of the transformation classifier's "
     "scores (default per model type; rotation: x,+rotate90,+rotate180,+rotate270)."),
    # --- experiments ---
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
    # --- scoring & export ---
    ("calibration_fraction", "float", 0.1, "Fraction of the detectors' training inliers held "
     "out of the fit to set the threshold and the score normalisation."),
    ("target_fpr", "float", 0.01, "False-positive rate on the calibration inliers at which the "
     "decision threshold is set."),
    ("export_detector", "string", "auto",
     "Detector in <run>/export (pool features, or the map's in map mode): a fitted detector's "
     "name (nn for the 1-NN detector auc), or auto = the best AUC under the validation "
     "protocol, else kde, else membank."),
    ("export", "bool", True, "Write the SavedModel <run>/export at the end of the run "
     "(default off for raw_pixels and imagenet_resnet50, which have no conv trunk to export)."),
    ("synthetic_validation", "enum:none|cutpaste", "none", "A check for runs without defective "
     "images, clearly not one on real defects: score the held-out good images against copies "
     "with a CutPaste rectangle or scar pasted in; summary.json gets synthetic_image_AUROC."),
    # --- release flags ---
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
    # --- MVTec / CutPaste ---
    ("mvtec_mode", "enum:patch|image|map", "patch", "MVTec-layout data: 'patch' learns on "
     "random patches and scores every patch densely (the paper; heat maps, pixel metrics); "
     "'map' learns on whole images and scores every cell of their local feature map, one "
     "pass per image (the inspector); 'image' scores the whole image resized to "
     "--input_shape."),
    ("mvtec_image_size", "integer", 256, "Patch and map modes: images are resized to this "
     "side. Map mode with --map_train_crop: 0 = the training images' own longer side, "
     "rounded to a multiple of 32, kept between 256 and 640."),
    ("map_stages", "string", "2,3", "Map mode: the ResNet stages whose last block outputs "
     "make the local feature map, brought to the finest stage's grid."),
    ("map_neighbourhood", "integer", 3, "Map mode: each stage's map is averaged over this "
     "many cells per side around every cell (odd; 1 = off)."),
    ("mvtec_aspect", "enum:square|keep", "square", "Map mode: 'square' resizes every image to "
     "--mvtec_image_size x --mvtec_image_size; 'keep' keeps the aspect ratio of the training "
     "images (read from the first one's header): the longer side becomes "
     "--mvtec_image_size, the shorter the nearest multiple of 16 (needs --map_train_crop)."),
    ("map_train_crop", "integer", 0, "Map mode: train on one random square crop of this side "
     "from each image (0 = the whole image). The network is fully convolutional and scores "
     "whole images at --mvtec_image_size, so a working size above the crop keeps small "
     "defects at a training step's cost of the crop."),
    ("bank_size", "integer", 4096, "Map mode, detector membank: training features kept in the "
     "memory bank (a greedy coreset of every cell of the good training images)."),
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
    ("cutpaste_variant", "enum:cutpaste|scar|blob|3way|4way", "3way", "CutPaste proxy "
     "task: normal vs cut-and-pasted rectangle, vs scar, vs blob of another image's texture, "
     "3-way (normal / rectangle / scar) or 4-way (and blob)."),
    # --- image folders anywhere (--dataset=image_dirs, data/image_dirs.py) ---
    ("normal_dir", "multi_string", None, "image_dirs: folder(s) of good images, the training "
     "set (repeatable or a comma list)."),
    ("abnormal_dir", "multi_string", None, "image_dirs: folder(s) of defective test images; "
     "each folder's name is the defect type (repeatable or a comma list)."),
    ("normal_test_dir", "multi_string", None, "image_dirs: folder(s) of good test images "
     "(default: with --abnormal_dir, --normal_test_fraction of --normal_dir is held out)."),
    ("mask_dir", "multi_string", None, "image_dirs: folder(s) of masks of the abnormal images, "
     "matched by file stem: <name>.<ext> or <name>_mask.<ext>, in <mask_dir>/<abnormal "
     "folder name>/ or <mask_dir>/."),
    ("normal_test_fraction", "float", 0.2, "image_dirs with --abnormal_dir but no "
     "--normal_test_dir: fraction of the good images held out as good test images."),
]

# per schedule, the --sched_* flags it reads (any other one given explicitly is an error)
SCHED_FLAGS = {"cos": ("sched_min_rate",), "linear": ("sched_min_rate",),
               "halfcos": ("sched_level",), "step": ("sched_gamma", "sched_step_size"),
               "constant": ()}
METHODS = {"unsupembed": "rotation", "contrastive": "contrastive"}
NO_DISTAUG = (None, "", "none", "1")

FLAG_DEFAULTS = {name: default for name, _, default, _ in FLAG_SPECS}


def define_flags(flags_module: Any, flag_values: Optional[Any] = None) -> None:
    """Defines every FLAG_SPECS entry as an absl flag (in ``flag_values``, default the
    module's global ``FLAGS``)."""
    where = {} if flag_values is None else {"flag_values": flag_values}
    for name, kind, default, help_text in FLAG_SPECS:
        if kind.startswith("enum:"):
            flags_module.DEFINE_enum(name, default, kind[5:].split("|"), help_text, **where)
        else:
            getattr(flags_module, f"DEFINE_{kind}")(name, default, help_text, **where)


def parse_run_args(args: Sequence[str]) -> tuple[dict, set]:
    """(every flag's value, the names given) of a run's command line ``args``, parsed by
    absl's parser as train_and_eval_loop.py parses it, for a tool that starts runs and
    checks their flags first; ConfigError for an unknown flag, a bad value or an argument
    that is not a flag."""
    values = absl_flags.FlagValues()
    define_flags(absl_flags, values)
    try:
        rest = values(["train_and_eval_loop.py", *args])
    except absl_flags.Error as err:
        first = str(err).splitlines()[0] if str(err) else repr(err)
        raise ConfigError(first.removeprefix("ERROR:: ")) from None
    if rest[1:]:
        raise ConfigError(f"unexpected arguments: {' '.join(rest[1:])} (flags look like "
                          "--name=value)")
    return ({name: values[name].value for name in FLAG_DEFAULTS},
            {name for name in FLAG_DEFAULTS if values[name].present})


def flags_markdown() -> str:
    """docs/flags.md, every flag of FLAG_SPECS as a table row; regenerate it with
    ``python -m engine.flags > docs/flags.md`` after a flag changes."""
    lines = ["# Every flag of `train_and_eval_loop.py`", "",
             "Generated from `engine/flags.py` (`python -m engine.flags > docs/flags.md`); "
             "`python train_and_eval_loop.py --help` prints the same. A flag given on the "
             "command line beats the `--preset`, which beats the per-model-type default; an "
             "empty default is filled per model type or by a preset (engine/config.py). A "
             "boolean flag is also written `--name` / `--noname`.", "",
             "| flag | kind | default | meaning |", "|---|---|---|---|"]
    for name, kind, default, help_text in FLAG_SPECS:
        kind = "one of " + ", ".join(kind[5:].split("|")) if kind.startswith("enum:") else kind
        shown = "" if default is None or default == "" else f"`{default}`"
        lines.append(f"| `--{name}` | {kind} | {shown} | {help_text.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(flags_markdown(), end="")
