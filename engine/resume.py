"""Rules for reusing a run directory: resume, refuse, or report the stored result.

* ``stats/hparams.json`` records the configuration; a resumed or re-evaluated run
  whose configuration differs in a flag of ``SHAPING_FLAGS`` (what the network
  is, what it sees, how it is trained, the ``--train_minutes`` plan included) is
  refused with one line naming each flag and both values, before anything is
  written. The flags of ``FREE_FLAGS`` (the scoring after training, where the
  data and the run are) may change.
* ``stats/summary.json`` exists only once a run has really finished; rerunning
  then prints it and exits 0 (``--reevaluate`` evaluates again).
* Damage of any kind to ``ckpt/`` is found before any data is loaded
  (engine/checkpoints.py) and reported with the damaged file and what is kept; a
  checkpoint TensorFlow still cannot restore is reported the same way. Nothing is
  deleted, skipped or trained over.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional

from engine.checkpoints import checkpoint_error
from util.errors import ConfigError

if TYPE_CHECKING:
    import tensorflow as tf

#: the flags a resumed or re-evaluated run must give as it recorded them, by what they set:
#: a checkpoint only means something with the network, the images and the training it was
#: made with
NETWORK = "what the network is"
SEES = "what the network sees"
TRAINING = "how the network is trained"
SHAPING_FLAGS = {
    **dict.fromkeys(("model_type", "net_type", "net_width", "stem_width", "head_dims",
                     "latent_dim", "mixed_precision", "pretrained_weights", "mvtec_mode",
                     "map_stages", "map_neighbourhood", "cutpaste_variant"), NETWORK),
    **dict.fromkeys(("dataset", "category", "celeba_attribute", "is_validation",
                     "normal_test_fraction", "outlier_ratio", "num_train", "input_shape",
                     "input_bits", "image_norm", "mvtec_image_size", "mvtec_aspect",
                     "map_train_crop", "patch_size", "patches_per_image", "aug_list",
                     "distaug_type", "aug_list_for_test",
                     "train_blur", "jitter_order", "crop_sampling", "clip_pixels", "noise_std"),
                    SEES),
    **dict.fromkeys(("temperature", "optim_type", "sched_type", "sched_freq", "sched_min_rate",
                     "sched_level", "sched_gamma", "sched_step_size", "learning_rate",
                     "momentum", "nesterov", "weight_decay", "regularize_bn", "sync_bn",
                     "num_epoch", "num_batch", "train_minutes", "batch_size", "seed"), TRAINING),
}
#: the flags that may change on a resume or a re-evaluation: where the data and the run
#: are, the scoring after training (stage 2, recorded again in stats/hparams.json and
#: summary.json by the evaluation that uses them), and how the run is carried out. Every
#: flag is in one of the two tables (tests/test_safety_more.py checks it), so a new flag
#: is classified when it is added.
FREE_FLAGS = (
    "preset", "method", "root", "data_dir", "normal_dir", "abnormal_dir", "normal_test_dir",
    "mask_dir", "model_dir", "file_path", "ckpt_prefix", "force_init", "reevaluate",
    "max_image_pixels", "ckpt_epoch", "eval_epoch", "eval_batch_size", "strategy",
    "deterministic", "detectors", "max_detector_train", "num_inlier_for_detector",
    "calibration_fraction", "target_fpr", "export_detector", "export", "synthetic_validation",
    "bank_size", "patch_stride", "mvtec_features", "patch_features", "mvtec_heatmaps",
)


def read_json_or_none(path: Path | str) -> Any:
    """The JSON stored at ``path``, None when absent; ConfigError when unreadable."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as err:
        raise ConfigError(f"{path} cannot be read ({err}); move it away, or pass "
                          "--force_init to start the run over") from None


def _same(a, b):
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) \
            and not isinstance(a, bool) and not isinstance(b, bool):
        return float(a) == float(b)
    return a == b


def config_differences(recorded: Mapping, cfg: Mapping) -> list[tuple[str, Any, Any]]:
    """[(flag, recorded value, new value)] over SHAPING_FLAGS present in both (a run
    recorded before a flag existed is not compared on it: it resumes as before)."""
    return [(k, recorded[k], cfg[k]) for k in SHAPING_FLAGS
            if k in recorded and k in cfg and not _same(recorded[k], cfg[k])]


def check_resume(cfg: Mapping, stats_dir: Path | str) -> None:
    """Refuses to reuse a run directory recorded with a different configuration."""
    recorded = read_json_or_none(Path(stats_dir) / "hparams.json")
    if recorded is None:
        return
    diffs = config_differences(recorded, cfg)
    if diffs:
        parts = ", ".join(f"--{k}={new} (recorded {old})" for k, old, new in diffs)
        kinds = ", ".join(dict.fromkeys(SHAPING_FLAGS[k] for k, _, _ in diffs))
        parts += f", which set{'s' if len(diffs) == 1 else ''} {kinds}"
        raise ConfigError(f"--model_dir={cfg['model_dir']} holds a run with a different "
                          f"configuration: {parts}; rerun with the recorded values, use "
                          "another --model_dir, or pass --force_init to start over")


def stored_summary(stats_dir: Path | str) -> Optional[dict]:
    """The finished run's summary.json, or None."""
    return read_json_or_none(Path(stats_dir) / "summary.json")


def restore_checkpoint(checkpoint: tf.train.Checkpoint, path: Optional[str]) -> Optional[str]:
    """Restores the checkpoint at ``path`` (from ``inspect_checkpoints``; None: nothing to
    restore) into ``checkpoint``; one that TensorFlow cannot read raises ConfigError."""
    if not path:
        return None
    try:
        checkpoint.restore(path).expect_partial()
    except Exception as err:  # noqa: BLE001  (TF raises many types for a bad file)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        # the run ends here; TensorFlow would warn about the unrestored objects after the
        # error line
        logging.getLogger("tensorflow").setLevel(logging.ERROR)
        raise checkpoint_error(Path(path).parent, f"{path} cannot be restored "
                               f"({type(err).__name__}: {first})",
                               damaged=(Path(path).name,)) from None
    return path
