"""One run of the two-stage method, as a story of named steps:

validate -> list data -> check the run directory -> lock -> load -> build -> train
         -> evaluate -> report -> plots, heat maps, export

Every flag is checked (engine/validate.py) before anything is loaded or written;
the run's evaluator (detect/evaluators.py) is chosen there, once, and decides
what the network sees and how it is scored; a run directory is held by one
process at a time (util/runlock.py); reruns resume from the last checkpoint,
refuse a different configuration and report a finished run without evaluating
it again (engine/resume.py); collapse of the representation is watched during
training (engine/collapse.py). A run writes only into its own directory
(engine/run_files.py). TensorFlow's start-up lines are held back until the data, the
model and its checkpoint have loaded, so a refusal found there is the error line alone.
The results (scores.npz, summary.json) are written as soon as they exist; a later step
that fails (plots, heat maps, export) is named in one line and the results stay. Every
result file is written atomically (util/atomic.py). docs/robustness.md tells the rules.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Optional, Sequence

import numpy as np

from data.image_dirs import DirLayout, split_dirs
from data.image_io import DEFAULT_MAX_IMAGE_PIXELS, set_max_image_pixels
from data.protocols_extra import apply_protocols, describe_protocols, protocols_active
from data.base import NATIVE_SIDES, aspect_shape, native_side
from data.registry import (first_image_size, list_one_class_data, load_one_class_data,
                           load_splits)
from detect.calibration import check_fit_size
from detect.evaluation import EvalSettings, detector_training_images, no_auc_note
from detect.synthetic import synthetic_check
from engine.distribute import is_chief, worker_dir
from engine.flags import FLAG_DEFAULTS
from engine.checkpoints import inspect_checkpoints
from engine.precision import POLICIES, choose_precision, read_cpuinfo
from engine.resume import check_resume, restore_checkpoint, stored_summary
from engine.run_files import check_recorded_run, claim_run_dir, mark_run, remove_own_files
from engine.validate import RunChecks, nearest_existing, validate_config
from model.registry import model_spec
from util.atomic import write_json_atomic
from util.cli import error_line, quiet_stderr
from util.errors import ConfigError
from util.runlock import run_lock
from util.versions import library_versions

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

    from data.augment import AugmentOptions
    from data.base import OneClassData
    from detect.evaluation import Evaluation
    from detect.evaluator_base import Evaluator
    from detect.evaluators import EvaluatorSpec
    from engine.budget import EpochPlan
    from engine.callbacks import EpochStats, StopOnNaN
    from engine.precision import PrecisionChoice
    from model.base import OneClassModel


def dir_layout(cfg: dict) -> Optional[DirLayout]:
    """The folders of --dataset=image_dirs (data.image_dirs.DirLayout); None without
    --normal_dir (validation allows it for that dataset only)."""
    if not split_dirs(cfg.get("normal_dir")):
        return None
    return DirLayout(normal=split_dirs(cfg.get("normal_dir")),
                     abnormal=split_dirs(cfg.get("abnormal_dir")),
                     normal_test=split_dirs(cfg.get("normal_test_dir")),
                     masks=split_dirs(cfg.get("mask_dir")),
                     normal_test_fraction=float(cfg.get("normal_test_fraction", 0.2)))


def protocol_values(cfg: dict) -> dict:
    """The paper's extra protocols' flags (0 = off)."""
    return {k: cfg.get(k) or 0 for k in ("outlier_ratio", "num_inlier_for_detector",
                                         "num_train")}


def calibration_fraction(cfg: dict) -> float:
    """--calibration_fraction (runs recorded before the flag: its default)."""
    return float(cfg.get("calibration_fraction", FLAG_DEFAULTS["calibration_fraction"]))


def working_shape(cfg: dict, checks: RunChecks) -> tuple:
    """The shape images are loaded at: that of ``checks``, or from the training images' own
    size (read from the first one's header) with --mvtec_image_size=0 (data.base
    ``native_side``; 256 px for sources that do not report it) or --mvtec_aspect=keep
    (their aspect ratio, the longer side at the working size)."""
    keep = cfg.get("mvtec_aspect", "square") == "keep"
    side = int(cfg.get("mvtec_image_size") or 0)
    if side and not keep:
        return tuple(checks.image_shape)
    set_max_image_pixels(cfg.get("max_image_pixels", DEFAULT_MAX_IMAGE_PIXELS))
    own = first_image_size(cfg["dataset"], cfg["category"], root=cfg["root"])
    if own is None and keep:
        raise ConfigError(f"--mvtec_aspect=keep needs the images' own size, which "
                          f"--dataset={cfg['dataset']} does not report; use the MVTec layout "
                          "(--dataset=mvtec_folder)")
    if own is None:  # a source that does not report its images' size: the smallest side
        return NATIVE_SIDES[0], NATIVE_SIDES[0], 3
    side = side or native_side(*own)
    height, width = aspect_shape(own[0], own[1], side) if keep else (side, side)
    crop = int(cfg.get("map_train_crop") or 0)
    if crop > min(height, width):
        raise ConfigError(f"--map_train_crop={crop} is larger than the working size "
                          f"{height}x{width} (from the training images' {own[0]}x{own[1]}, "
                          f"--mvtec_image_size={cfg['mvtec_image_size']}); "
                          f"use --map_train_crop<={min(height, width) // 32 * 32}")
    return height, width, 3


def load_data(cfg: dict, checks: RunChecks) -> OneClassData:
    """The run's one-class data at its working shape, with the paper's extra protocols
    applied; image files above --max_image_pixels are refused before they are decoded."""
    shape = working_shape(cfg, checks)
    set_max_image_pixels(cfg.get("max_image_pixels", DEFAULT_MAX_IMAGE_PIXELS))
    data = load_one_class_data(cfg["dataset"], cfg["category"], root=cfg["root"],
                               data_dir=cfg["data_dir"], input_shape=shape,
                               is_validation=cfg["is_validation"], seed=cfg["seed"],
                               attribute=cfg.get("celeba_attribute"), dirs=dir_layout(cfg),
                               input_bits=cfg.get("input_bits") or 0)
    protocols = protocol_values(cfg)
    if protocols_active(**protocols):
        apply_protocols(data, **protocols, seed=cfg["seed"], splits=lambda: load_splits(
            cfg["dataset"], root=cfg["root"], data_dir=cfg["data_dir"], input_shape=shape,
            input_bits=cfg.get("input_bits") or 0))
    check_train_count(cfg, checks, len(data.train_images), len(detector_training_images(data)))
    return data


def check_train_count(cfg: dict, checks: RunChecks, n: int,
                      n_detector: Optional[int] = None) -> None:
    """Enough training images (``n``) for the category and the batch, and enough of the
    detectors' (``n_detector``, default ``n``) left for each detector after the
    calibration hold-out."""
    if n == 0:
        raise ConfigError(f"no training images for category {cfg['category']!r}")
    if cfg["is_validation"] and n < cfg["batch_size"]:
        raise ConfigError(f"--batch_size={cfg['batch_size']} is larger than the {n} training "
                          "images left after the validation split; use --batch_size<=" f"{n}")
    check_fit_size(checks.detectors, n if n_detector is None else n_detector,
                   calibration_fraction(cfg), int(cfg["max_detector_train"]),
                   checks.rows_per_image)


def list_data(cfg: dict, checks: RunChecks) -> None:
    """The data listed without decoding it (sources that can: folders, MVTec), before the
    run directory, a cache file or TensorFlow: an unknown category or a category with too
    few images ends the run here."""
    n = list_one_class_data(cfg["dataset"], cfg["category"], root=cfg["root"],
                            is_validation=cfg["is_validation"])
    working_shape(cfg, checks)
    if n is not None and not protocols_active(**protocol_values(cfg)):
        check_train_count(cfg, checks, n)


def make_evaluator(cfg: dict, checks: RunChecks) -> Evaluator:
    """The run's evaluator (``checks.evaluator``, chosen by validate_config) with the values
    it needs."""
    settings = EvalSettings(detectors=checks.detectors,
                            max_train=int(cfg["max_detector_train"]), seed=int(cfg["seed"]),
                            batch_size=int(cfg["eval_batch_size"]),
                            calibration_fraction=calibration_fraction(cfg))
    return checks.evaluator.build(settings, **{k: cfg[k] for k in checks.evaluator.options})


def resolve_precision(requested: str) -> PrecisionChoice:
    """engine.precision.PrecisionChoice for this machine, from the visible GPUs' compute
    capabilities and the CPU's flags (``auto`` chooses by them; every mode is warned about
    when the hardware would emulate it)."""
    import tensorflow as tf

    capabilities = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        capabilities.append(tuple(details.get("compute_capability") or (0, 0)))
    return choose_precision(requested, read_cpuinfo(), capabilities)


def set_precision(mode: str) -> PrecisionChoice:
    """Sets the Keras policy of ``mode`` (``auto`` resolved here); returns the choice."""
    import keras

    choice = resolve_precision(mode)
    keras.mixed_precision.set_global_policy(POLICIES[choice.precision])
    return choice


def make_optimizer(cfg: dict, steps_per_epoch: int,
                   schedule_epochs: Optional[tf.Variable] = None) -> keras.optimizers.Optimizer:
    """The run's optimizer; ``schedule_epochs`` (a tf.Variable) is the schedule's length
    when a --train_minutes run plans it during training."""
    import keras

    from engine.optim import make_base_optimizer
    from engine.schedules import make_schedule

    opt = make_base_optimizer(cfg, make_schedule(cfg, steps_per_epoch, schedule_epochs))
    if cfg["mixed_precision"] == "fp16":
        # dynamic loss scaling; a modest start skips fewer overflowing first steps
        opt = keras.mixed_precision.LossScaleOptimizer(opt, initial_scale=2.0 ** 8)
    return opt


def stem_filters(stem_width: Optional[int], net_width: float) -> Optional[int]:
    """None keeps the release's 64-filter stem; 0 scales it with the width."""
    if stem_width is None:
        return None
    return max(1, int(round(64 * net_width))) if stem_width == 0 else int(stem_width)


def set_determinism(cfg: dict) -> None:
    """Seeds every generator; ``--deterministic`` also makes TF ops and tf.data repeatable."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(cfg["seed"])
    if cfg.get("deterministic"):
        tf.config.experimental.enable_op_determinism()


def model_from_config(cfg: dict, shape: Sequence[int], sync_bn: bool = False) -> OneClassModel:
    """The run's model (untrained) from its configuration: training and ``load_run`` share it."""
    from model.registry import build_model

    return build_model(
        cfg["model_type"], net_type=cfg["net_type"], net_width=cfg["net_width"],
        input_shape=shape, head_dims=cfg["head_dims"],
        stem_width=stem_filters(cfg["stem_width"], cfg["net_width"]),
        weight_decay=cfg["weight_decay"], temperature=cfg["temperature"], sync_bn=sync_bn,
        aug_list=cfg["aug_list"], aug_list_for_test=cfg["aug_list_for_test"],
        l2_skip_batchnorm=cfg.get("regularize_bn", False),
        image_norm=cfg.get("image_norm", "none"),
        **{k: cfg[k] for k in model_spec(cfg["model_type"]).get("options", ())})


def uses_sync_bn(cfg: dict, strategy: tf.distribute.Strategy) -> bool:
    return bool(cfg["sync_bn"]) and strategy.num_replicas_in_sync > 1


def float32_network(cfg: dict, model: keras.Model, shape: Sequence[int],
                    strategy: tf.distribute.Strategy) -> keras.Model:
    """The network stage 2 and the export run: a float32 copy of a model trained in
    bf16 or fp16, with its weights; any other ``model`` itself.

    A bf16 export would run emulated, several times slower, on the CPUs without bf16
    units that inspectors are often deployed on; ``load_run`` rebuilds a run in float32,
    so a re-export (script/export.py) scores exactly what the run's own export and
    scores.npz do. Features extracted in float32 and in bf16 from the same weights gave
    AUCs within 0.1 of each other (docs/performance.md)."""
    import keras

    if keras.backend.standardize_dtype(model.compute_dtype) not in ("bfloat16", "float16"):
        return model
    with keras_policy("float32"), strategy.scope():
        copy = model_from_config(cfg, shape, sync_bn=uses_sync_bn(cfg, strategy))
    copy.set_weights(model.get_weights())  # every variable exists once the model is built
    return copy


@contextlib.contextmanager
def keras_policy(name: str) -> Iterator[None]:
    """Keras's global dtype policy set to ``name`` inside the block: the layers stage 2
    and the export build (patch trunks, folded BatchNorm) take it, not the training one."""
    import keras

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def build_training(cfg: dict, shape: Sequence[int], strategy: tf.distribute.Strategy,
                   steps_per_epoch: int, schedule_epochs: Optional[tf.Variable] = None,
                   ) -> tuple[OneClassModel, tf.Variable]:
    """Model + compiled optimizer (with all variables created) inside the strategy."""
    import tensorflow as tf

    set_precision(cfg["mixed_precision"])
    set_determinism(cfg)
    with strategy.scope():
        model = model_from_config(cfg, shape, sync_bn=uses_sync_bn(cfg, strategy))
        model.compile(optimizer=make_optimizer(cfg, steps_per_epoch, schedule_epochs))
        model.optimizer.build(model.trainable_variables)
        epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    return model, epoch_var


def augment_options(cfg: dict) -> AugmentOptions:
    """The run's data.augment.AugmentOptions: where the release's augmentation and ours differ."""
    from data.augment import AugmentOptions

    return AugmentOptions(train_blur=bool(cfg.get("train_blur", False)),
                          jitter_order=cfg.get("jitter_order", "run"),
                          crop_sampling=cfg.get("crop_sampling", "release"),
                          seed=int(cfg["seed"]))


def format_table(results: Mapping) -> str:
    keys = sorted(k for k, v in results.items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool))
    if not keys:  # e.g. good images only: nothing was measured against defects
        return "(no metrics)"
    head = " ".join(f"{k:>13s}" for k in keys)
    row = " ".join(f"{results[k]:13.2f}" for k in keys)
    return f"{head}\n{row}"


class RunPaths:
    """Where a run writes: ``write`` is the run directory on the chief, a private
    temporary directory on the other workers of a multi-worker job."""

    def __init__(self, model_dir: Path | str, chief: bool = True) -> None:
        self.root = Path(model_dir)
        self.chief = chief
        self.ckpt = self.root / "ckpt"  # every worker restores from the shared checkpoints
        self.save_ckpt = Path(worker_dir(self.root, chief)) / "ckpt"
        self.stats, self.logs = self.root / "stats", self.root / "logs"
        self.history = self.stats / "eval_history.jsonl" if chief else None
        self.budget = self.stats / "budget.json"  # a --train_minutes run's plan
        self.collapse = self.stats / "collapse.json" if chief else None


def prepare_run_dir(cfg: dict, run: RunPaths) -> Optional[dict]:
    """Starts over (--force_init: the run's own files go) or checks a reused run
    directory; returns a stored summary."""
    if cfg["force_init"] and run.chief:
        remove_own_files(run.root)
    check_resume(cfg, run.stats)
    return stored_summary(run.stats)


def check_existing_run(cfg: dict, run: RunPaths) -> None:
    """A reused run directory read before the lock and anything else is written: a
    different configuration, an unreadable result, a damaged ``ckpt/`` or a location
    that is not the run's own (engine/run_files.py) ends the run here (prepare_run_dir
    decides again under the lock)."""
    check_recorded_run(run.root)
    if not cfg["force_init"]:
        check_resume(cfg, run.stats)
        if not cfg["reevaluate"] and stored_summary(run.stats) is not None:
            return  # finished: its stored result is printed, nothing is written
        inspect_checkpoints(run.ckpt)
    claim_run_dir(cfg, run.root, run.chief)


def restore(model: keras.Model, epoch_var: tf.Variable, run: RunPaths,
            log: Callable[[str], None]) -> tf.train.CheckpointManager:
    """Checkpoint objects; restores the latest checkpoint of the run, if any."""
    import tensorflow as tf

    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer, epoch=epoch_var)
    path = restore_checkpoint(checkpoint, inspect_checkpoints(run.ckpt))
    manager = tf.train.CheckpointManager(checkpoint, str(run.save_ckpt), max_to_keep=2)
    if path:
        log(f"Resumed from {path} (epoch {int(epoch_var.numpy())})")
    return manager


@dataclasses.dataclass
class TrainingJob:
    """What ``load_and_build`` made for training and evaluation."""

    data: Any
    evaluator: Any
    train_images: np.ndarray
    steps_per_epoch: int
    strategy: Any
    precision: Any  # engine.precision.PrecisionChoice
    model: Any
    epoch_var: Any
    manager: Any  # tf.train.CheckpointManager
    length: Any  # engine.budget.TrainingLength
    input_shape: tuple  # the network's input


@dataclasses.dataclass
class Trained:
    """What training left: the exit code (0, or 3 for a NaN loss), the per-epoch
    statistics and the epochs the run trained for."""

    code: int
    stats: Optional[Any]  # engine.callbacks.EpochStats (None: no epoch was trained)
    plan: Any  # engine.budget.EpochPlan
    seconds: float = 0.0


def training_callbacks(cfg: dict, job: TrainingJob, run: RunPaths, plan: EpochPlan,
                       log: Callable[[str], None]) -> tuple[StopOnNaN, EpochStats, list]:
    """(the NaN guard, the epoch statistics, the callbacks of model.fit in order; a clock
    run's budget callback goes first)."""
    import keras

    from engine.callbacks import EpochCheckpoint, EpochStats, PeriodicEvaluation, StopOnNaN
    from engine.collapse import make_monitor, probe_images

    nan_guard = StopOnNaN()
    stats = EpochStats(job.steps_per_epoch, cfg["batch_size"], job.model.views_per_image)
    callbacks = [
        nan_guard,
        stats,
        make_monitor(probe_images(job.evaluator.network_view(job.data.train_images),
                                  cfg["seed"]), run.collapse, log=log),
        # evaluation before the checkpoint: a kill between the two re-runs (and replaces)
        # that evaluation instead of losing it
        PeriodicEvaluation(lambda m: job.evaluator.periodic(m, job.data), cfg["eval_epoch"],
                           plan, run.logs / "eval" if run.chief else None, run.history),
        EpochCheckpoint(job.manager, job.epoch_var, cfg["ckpt_epoch"], plan, nan_guard),
    ]
    callbacks += job.length.progress_bars(plan)
    if run.chief:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run.logs), write_graph=False,
                                                     update_freq="epoch", profile_batch=0))
    return nan_guard, stats, callbacks


def training_dataset(cfg: dict, job: TrainingJob) -> tf.data.Dataset:
    """The evaluator's tf.data pipeline of augmented batches (``--deterministic``: in a
    repeatable order)."""
    import tensorflow as tf

    views = job.model.input_views or job.model.views_per_image  # what train_step is handed
    ds = job.evaluator.train_dataset(job.train_images, cfg["batch_size"], cfg["aug_list"],
                                     views, cfg["seed"], cfg["clip_pixels"],
                                     augment_options(cfg))
    if cfg.get("deterministic"):
        options = tf.data.Options()
        options.deterministic = True
        ds = ds.with_options(options)
    return ds


def train(cfg: dict, job: TrainingJob, run: RunPaths, log: Callable[[str], None]) -> Trained:
    """model.fit from the restored epoch for the run's length (engine.budget.TrainingLength:
    --num_epoch, or the epochs that fit --train_minutes)."""
    from engine.callbacks import nan_message

    t0 = time.time()
    initial_epoch = int(job.epoch_var.numpy())
    plan, budget = job.length.plan(job.steps_per_epoch, initial_epoch, log, write=run.chief)
    if initial_epoch >= plan.epochs:  # nothing to train: no callback, no event file
        return Trained(0, None, plan, time.time() - t0)
    nan_guard, stats, callbacks = training_callbacks(cfg, job, run, plan, log)
    if budget is not None:
        callbacks.insert(0, budget)  # plans before the checkpoint looks for the last epoch
    job.model.fit(training_dataset(cfg, job), epochs=plan.epochs, initial_epoch=initial_epoch,
                  steps_per_epoch=job.steps_per_epoch, callbacks=callbacks,
                  shuffle=False,  # the tf.data pipeline shuffles; silences Keras's warning
                  verbose=1 if sys.stdout.isatty() else 2)
    if nan_guard.triggered:
        print("error: " + nan_message(job.model, cfg, nan_guard.bad_epoch,
                                      job.manager.latest_checkpoint), file=sys.stderr)
        return Trained(3, stats, plan)
    return Trained(0, stats, plan, time.time() - t0)


def final_evaluation(cfg: dict, model: keras.Model, data: OneClassData, evaluator: Evaluator,
                     run: RunPaths) -> Evaluation:
    """Stage 2 on the trained model (detect.evaluation.Evaluation); its metrics are
    recorded in the history (once)."""
    import tensorflow as tf

    from engine.callbacks import write_eval

    final = evaluator.final(model, data)
    writer = tf.summary.create_file_writer(str(run.logs / "eval")) if run.chief else None
    write_eval(writer, run.history, cfg["num_epoch"], final.results)
    return final


def summary_of(cfg: dict, results: Mapping, data: OneClassData, run: RunPaths, meta: Mapping,
               sections: Mapping) -> dict:
    """The run's summary.json: the results, the extra ``sections`` (metrics, calibration,
    export) and ``meta``, the run's record."""
    from engine.collapse import load_verdict

    summary = dict(results)
    summary.update(sections)
    summary["meta"] = {
        "model_type": cfg["model_type"], "dataset": cfg["dataset"],
        "category": data.category, "category_index": int(data.category_index),
        "protocol": data.protocol, "epochs": cfg["num_epoch"], "seed": cfg["seed"],
        "n_train": int(len(data.train_images)), "n_test": int(len(data.test_images)),
        "n_test_outliers": int(np.sum(data.test_labels)),
        "collapse": load_verdict(run.collapse), "versions": library_versions(), **meta,
    }
    return summary


def report(summary: dict, run: RunPaths, log: Callable[[str], None]) -> None:
    """Writes stats/summary.json (atomically, once the results exist: it marks the run as
    finished), after warning about a collapsed representation."""
    collapse = summary["meta"]["collapse"]
    if collapse["detected"]:
        log(f"warning: the representation collapsed during training (first at epoch "
            f"{collapse['first_epoch']}) and was still collapsed at the end; these AUCs are "
            "near chance. Try another --seed or a lower --learning_rate")
    if run.chief:
        write_json_atomic(run.stats / "summary.json", summary)


def run_experiment(cfg: dict, log: Callable[[str], None] = print) -> int:
    """Runs one configuration end to end; returns the process exit code."""
    step = RunStep()
    checks = validate_config(cfg)
    run = RunPaths(cfg["model_dir"], chief=is_chief(cfg["strategy"]))
    list_data(cfg, checks)
    check_existing_run(cfg, run)
    created = nearest_existing(run.root)  # a failed run removes what it created below this
    try:
        with run_lock(run.root) if run.chief else contextlib.nullcontext():
            stored = prepare_run_dir(cfg, run)
            if stored is not None and not cfg["reevaluate"]:
                log(f"{run.root} finished already; its stored result "
                    f"({run.stats / 'summary.json'}):")
                log(format_table({k: v for k, v in stored.items() if k != "meta"}))
                return 0
            return train_and_evaluate(cfg, run, checks, log, step)
    except BaseException as err:
        if created != Path(os.path.abspath(run.root)) and not (run.stats / "hparams.json").exists():
            remove_created(run.root, created)  # nothing of value was written
        if isinstance(err, KeyboardInterrupt):
            print(error_line(f"interrupted (Ctrl-C) while {step.now}; "
                             f"{kept_after_interrupt(run)}"), file=sys.stderr)
            return 130
        raise


class RunStep:
    """What the run is doing now (the line an interrupt prints names it), and since when
    it runs."""

    def __init__(self) -> None:
        self.now = "preparing the run"
        self.started = time.time()


def kept_after_interrupt(run: RunPaths) -> str:
    """What an interrupted run left, read from its directory."""
    if (run.stats / "summary.json").exists():
        return f"kept: the results in {run.stats / 'summary.json'}"
    try:
        latest = inspect_checkpoints(run.ckpt)
    except ConfigError:
        latest = None
    if latest:
        return f"kept: the checkpoint {latest}; rerun the same command to resume from it"
    if (run.stats / "hparams.json").exists():
        return "kept: the run's configuration, no checkpoint yet; rerun the same command"
    return f"nothing was kept ({run.root} is as it was)"


def remove_created(run_dir: Path | str, existed: Path) -> None:
    """Removes ``run_dir`` and the empty parents this run created below ``existed``."""
    shutil.rmtree(run_dir, ignore_errors=True)
    parent = Path(os.path.abspath(run_dir)).parent
    while parent != existed and existed in parent.parents:
        try:
            parent.rmdir()
        except OSError:  # not empty: someone else writes there
            break
        parent = parent.parent


def load_and_build(cfg: dict, run: RunPaths, checks: RunChecks,
                   log: Callable[[str], None]) -> TrainingJob:
    """The data, the evaluator, the strategy, the model restored from its last checkpoint
    (training loop objects included). TensorFlow's import and load lines are held back
    until all of it succeeded, so a refusal found here is the one error line."""
    from data.distaug import apply_distribution_augmentation
    from engine.distribute import make_strategy

    with quiet_stderr():
        data = load_data(cfg, checks)  # before TensorFlow: a bad file is the one error line
        from engine.budget import TrainingLength

        evaluator = make_evaluator(cfg, checks)
        train_images = apply_distribution_augmentation(
            evaluator.representation_images(data.train_images), cfg["distaug_type"])
        steps_per_epoch = cfg["num_batch"] or evaluator.steps_per_epoch(len(train_images),
                                                                        cfg["batch_size"])
        strategy = make_strategy(cfg["strategy"])
        if cfg["batch_size"] % strategy.num_replicas_in_sync:
            raise ConfigError(f"--batch_size={cfg['batch_size']} must be divisible by the "
                              f"{strategy.num_replicas_in_sync} replicas")
        # resolved once: the policy that builds the model is the one summary.json names
        precision = resolve_precision(cfg["mixed_precision"])
        length = TrainingLength(cfg["num_epoch"], cfg.get("train_minutes"), run.budget)
        model, epoch_var = build_training(dict(cfg, mixed_precision=precision.precision),
                                          checks.input_shape, strategy, steps_per_epoch,
                                          length.schedule_variable(strategy))
        manager = restore(model, epoch_var, run, log)
    return TrainingJob(data, evaluator, train_images, steps_per_epoch, strategy, precision,
                       model, epoch_var, manager, length, checks.input_shape)


def announce(cfg: dict, run: RunPaths, checks: RunChecks, job: TrainingJob,
             log: Callable[[str], None]) -> None:
    """Records the configuration (stats/hparams.json) and tells what the run will do."""
    from engine.distribute import strategy_kind

    kind = strategy_kind(job.strategy)
    if run.chief:
        mark_run(run.root)  # the run's marker, before the first file it writes
        write_json_atomic(run.stats / "hparams.json", cfg)
    log(f"{job.data.describe()}; {len(job.train_images)} training instances after "
        f"distribution augmentation '{cfg['distaug_type']}'; {job.steps_per_epoch} "
        f"steps/epoch; {job.strategy.num_replicas_in_sync} replica(s), strategy {kind}"
        f"{'' if kind == cfg['strategy'] else ' (--strategy=' + cfg['strategy'] + ')'}; "
        f"precision {job.precision.precision} ({job.precision.reason})")
    notes = [f"warning: {job.precision.warning}" if job.precision.warning else None,
             no_auc_note(job.data.test_labels), length_note(cfg, checks.evaluator)]
    for note in notes:
        if note:
            log(note)


def run_meta(cfg: dict, job: TrainingJob, trained: Trained, timings: Mapping[str, float]) -> dict:
    """summary.json's ``meta`` entries of this run: steps, times, replicas, precision,
    protocols and the budget (``timings``: the wall, training and evaluation seconds)."""
    from engine.distribute import strategy_kind

    stats = trained.stats.history if trained.stats is not None else []
    return {
        "steps_per_epoch": job.steps_per_epoch,
        "optimizer_steps": int(job.model.optimizer.iterations.numpy()),
        **{f"{k}_seconds": round(v, 2) for k, v in timings.items()},
        "train_images_per_sec": round(float(np.median(stats)), 1) if stats else None,
        "replicas": job.strategy.num_replicas_in_sync, "strategy": strategy_kind(job.strategy),
        "deterministic": bool(cfg.get("deterministic")),
        "precision": job.precision._asdict(),
        "protocols": describe_protocols(job.data),
        "budget": job.length.record(trained.plan),
    }


def train_and_evaluate(cfg: dict, run: RunPaths, checks: RunChecks, log: Callable[[str], None],
                       step: RunStep) -> int:
    """Loads, trains, evaluates and writes every output of the run; the exit code."""
    step.now = "loading the data and the model"
    job = load_and_build(cfg, run, checks, log)
    announce(cfg, run, checks, job, log)
    step.now = "training"
    trained = train(cfg, job, run, log)
    if trained.code:
        return trained.code
    if job.length.by_clock:  # the epochs the budget allowed are the run's epochs
        cfg = dict(cfg, num_epoch=trained.plan.epochs)
    step.now = "extracting features and fitting the detectors"
    log("Extracting features and fitting detectors ...")
    with keras_policy("float32"):
        return evaluate_and_write(cfg, run, job, trained, log, step)


def evaluate_and_write(cfg: dict, run: RunPaths, job: TrainingJob, trained: Trained,
                       log: Callable[[str], None], step: RunStep) -> int:
    """Stage 2, summary.json as soon as its results exist, then the plots, heat maps and
    export; the exit code (1 when one of those could not be written)."""
    from engine.outputs import record_results, write_extras

    t_eval = time.time()
    network = float32_network(cfg, job.model, job.input_shape, job.strategy)
    final = final_evaluation(cfg, network, job.data, job.evaluator, run)
    evaluate_seconds = time.time() - t_eval
    sections = record_results(run.root, cfg, final, log) if run.chief else {}
    if cfg.get("synthetic_validation", "none") != "none":  # every worker extracts
        sections.update(synthetic_check(job.evaluator, network, job.data,
                                        calibration_fraction(cfg), int(cfg["seed"]), log))
    meta = run_meta(cfg, job, trained, {"wall": time.time() - step.started,
                                        "train": trained.seconds, "evaluate": evaluate_seconds})
    summary = summary_of(cfg, final.results, job.data, run, meta, sections)
    report(summary, run, log)  # the results exist now
    if not run.chief:
        return 0
    step.now = "writing the plots, heat maps and export (the results are in summary.json)"
    failed = write_extras(run.root, cfg, network, job.data, final, sections, log)
    if sections["export"] is not None:  # the same summary, now naming the export
        summary["export"] = sections["export"]
        write_json_atomic(run.stats / "summary.json", summary)
    log(format_table(final.results))
    log(f"Wrote {run.stats / 'summary.json'}")
    return finish(run, failed)


def finish(run: RunPaths, failed: Sequence[tuple[str, str]]) -> int:
    """The exit code: 0, or 1 with one line naming what was not written."""
    if not failed:
        return 0
    print(error_line(f"the run's results are in {run.stats / 'summary.json'} and "
                     f"{run.stats / 'scores.npz'}, but not written: "
                     + "; ".join(f"{what} ({why})" for what, why in failed)
                     + (f"; script/export.py {run.root} writes the export again"
                        if any(w == "the export" for w, _ in failed) else "")),
          file=sys.stderr)
    return 1


def length_note(cfg: dict, evaluator: EvaluatorSpec) -> Optional[str]:
    """One line for an MVTec-layout run on a CPU at the default length (the paper's 2,048
    epochs, days on a CPU) without a preset: the inspector preset trains by the clock."""
    import tensorflow as tf

    if (not evaluator.maps or cfg.get("preset") or cfg.get("train_minutes")
            or cfg["num_epoch"] != FLAG_DEFAULTS["num_epoch"]
            or tf.config.list_logical_devices("GPU")):
        return None
    return (f"note: training for --num_epoch={cfg['num_epoch']} epochs, the paper's length, "
            "which on a CPU takes days; --preset=inspector trains for 15 minutes by the clock "
            "(--train_minutes) and is the recipe made for CPUs (docs/mvtec.md)")
