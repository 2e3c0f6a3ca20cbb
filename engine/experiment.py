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

import contextlib
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from data.image_dirs import DirLayout, split_dirs
from data.image_io import DEFAULT_MAX_IMAGE_PIXELS, set_max_image_pixels
from data.protocols_extra import apply_protocols, describe_protocols, protocols_active
from data.registry import (has_defect_layout, list_one_class_data, load_one_class_data,
                           load_splits, reads_image_files)
from detect.calibration import check_fit_size
from detect.evaluation import EvalSettings, detector_training_images, no_auc_note
from detect.evaluators import choose_evaluator, evaluator_class
from detect.localization import grid_size
from detect.synthetic import synthetic_check
from engine.distribute import is_chief, worker_dir
from engine.flags import FLAG_DEFAULTS
from engine.checkpoints import inspect_checkpoints
from engine.precision import POLICIES, choose_precision, read_cpuinfo
from engine.resume import check_resume, restore_checkpoint, stored_summary
from engine.run_files import check_recorded_run, claim_run_dir, mark_run, remove_own_files
from engine.validate import nearest_existing, parse_detectors, validate_config
from model.registry import model_spec
from model.spec import parse_stages, stage_stride
from util.atomic import write_json_atomic
from util.cli import error_line, quiet_stderr
from util.errors import ConfigError
from util.runlock import run_lock
from util.versions import library_versions


def dir_layout(cfg):
    """The folders of --dataset=image_dirs (data.image_dirs.DirLayout); None without
    --normal_dir (validation allows it for that dataset only)."""
    if not split_dirs(cfg.get("normal_dir")):
        return None
    return DirLayout(normal=split_dirs(cfg.get("normal_dir")),
                     abnormal=split_dirs(cfg.get("abnormal_dir")),
                     normal_test=split_dirs(cfg.get("normal_test_dir")),
                     masks=split_dirs(cfg.get("mask_dir")),
                     normal_test_fraction=float(cfg.get("normal_test_fraction", 0.2)))


def protocol_values(cfg):
    """The paper's extra protocols' flags (0 = off)."""
    return {k: cfg.get(k) or 0 for k in ("outlier_ratio", "num_inlier_for_detector",
                                         "num_train")}


def load_data(cfg, shape):
    """The run's one-class data at ``shape``, with the paper's extra protocols applied;
    image files above --max_image_pixels are refused before they are decoded."""
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
    check_train_count(cfg, len(data.train_images), len(detector_training_images(data)))
    return data


def detector_rows_per_image(cfg):
    """Training rows each image gives the detectors: 1, its patch grid in patch mode, the
    cells of its feature map in map mode."""
    evaluator = choose_evaluator(has_defect_layout(cfg["dataset"]), cfg["mvtec_mode"],
                                 reads_image_files(cfg["dataset"]))
    if evaluator == "map":
        cell = stage_stride(min(parse_stages(cfg["map_stages"])))
        return (int(cfg["mvtec_image_size"]) // cell) ** 2
    if evaluator != "patch":
        return 1
    return grid_size(cfg["mvtec_image_size"], cfg["patch_size"], cfg["patch_stride"]) ** 2


def check_train_count(cfg, n, n_detector=None):
    """Enough training images (``n``) for the category and the batch, and enough of the
    detectors' (``n_detector``, default ``n``) left for each detector after the
    calibration hold-out."""
    if n == 0:
        raise ConfigError(f"no training images for category {cfg['category']!r}")
    if cfg["is_validation"] and n < cfg["batch_size"]:
        raise ConfigError(f"--batch_size={cfg['batch_size']} is larger than the {n} training "
                          "images left after the validation split; use --batch_size<=" f"{n}")
    check_fit_size(parse_detectors(cfg["detectors"]), n if n_detector is None else n_detector,
                   float(cfg.get("calibration_fraction", 0.1)), int(cfg["max_detector_train"]),
                   detector_rows_per_image(cfg))


def list_data(cfg):
    """The data listed without decoding it (sources that can: folders, MVTec), before the
    run directory, a cache file or TensorFlow: an unknown category or a category with too
    few images ends the run here."""
    n = list_one_class_data(cfg["dataset"], cfg["category"], root=cfg["root"],
                            is_validation=cfg["is_validation"])
    if n is not None and not protocols_active(**protocol_values(cfg)):
        check_train_count(cfg, n)


def make_evaluator(cfg, checks):
    """The run's evaluator (``checks.evaluator``, chosen by validate_config) with the values
    it needs."""
    cls = evaluator_class(checks.evaluator)
    settings = EvalSettings(detectors=tuple(checks.detectors),
                            max_train=int(cfg["max_detector_train"]), seed=int(cfg["seed"]),
                            batch_size=int(cfg["eval_batch_size"]),
                            calibration_fraction=float(cfg.get("calibration_fraction", 0.1)))
    return cls(settings, **{k: cfg[k] for k in cls.options})


def resolve_precision(requested):
    """engine.precision.PrecisionChoice for this machine, from the visible GPUs' compute
    capabilities and the CPU's flags (``auto`` chooses by them; every mode is warned about
    when the hardware would emulate it)."""
    import tensorflow as tf

    capabilities = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        capabilities.append(tuple(details.get("compute_capability") or (0, 0)))
    return choose_precision(requested, read_cpuinfo(), capabilities)


def set_precision(mode):
    """Sets the Keras policy of ``mode`` (``auto`` resolved here); returns the choice."""
    import keras

    choice = resolve_precision(mode)
    keras.mixed_precision.set_global_policy(POLICIES[choice.precision])
    return choice


def make_optimizer(cfg, steps_per_epoch, schedule_epochs=None):
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


def stem_filters(stem_width, net_width):
    """None keeps the release's 64-filter stem; 0 scales it with the width."""
    if stem_width is None:
        return None
    return max(1, int(round(64 * net_width))) if stem_width == 0 else int(stem_width)


def set_determinism(cfg):
    """Seeds every generator; ``--deterministic`` also makes TF ops and tf.data repeatable."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(cfg["seed"])
    if cfg.get("deterministic"):
        tf.config.experimental.enable_op_determinism()


def model_from_config(cfg, shape, sync_bn=False):
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


def uses_sync_bn(cfg, strategy):
    return bool(cfg["sync_bn"]) and strategy.num_replicas_in_sync > 1


def float32_network(cfg, model, shape, strategy):
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
def keras_policy(name):
    """Keras's global dtype policy set to ``name`` inside the block: the layers stage 2
    and the export build (patch trunks, folded BatchNorm) take it, not the training one."""
    import keras

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def build_training(cfg, shape, strategy, steps_per_epoch, schedule_epochs=None):
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


def augment_options(cfg):
    """The run's data.augment.AugmentOptions: where the release's augmentation and ours differ."""
    from data.augment import AugmentOptions

    return AugmentOptions(train_blur=bool(cfg.get("train_blur", False)),
                          jitter_order=cfg.get("jitter_order", "run"),
                          crop_sampling=cfg.get("crop_sampling", "release"),
                          seed=int(cfg["seed"]))


def format_table(results):
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

    def __init__(self, model_dir, chief=True):
        self.root = Path(model_dir)
        self.chief = chief
        self.ckpt = self.root / "ckpt"  # every worker restores from the shared checkpoints
        self.save_ckpt = Path(worker_dir(self.root, chief)) / "ckpt"
        self.stats, self.logs = self.root / "stats", self.root / "logs"
        self.history = self.stats / "eval_history.jsonl" if chief else None
        self.budget = self.stats / "budget.json"  # a --train_minutes run's plan
        self.collapse = self.stats / "collapse.json" if chief else None


def prepare_run_dir(cfg, run):
    """Starts over (--force_init: the run's own files go) or checks a reused run
    directory; returns a stored summary."""
    if cfg["force_init"] and run.chief:
        remove_own_files(run.root)
    check_resume(cfg, run.stats)
    return stored_summary(run.stats)


def check_existing_run(cfg, run):
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


def restore(model, epoch_var, run, log):
    """Checkpoint objects; restores the latest checkpoint of the run, if any."""
    import tensorflow as tf

    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer, epoch=epoch_var)
    path = restore_checkpoint(checkpoint, inspect_checkpoints(run.ckpt))
    manager = tf.train.CheckpointManager(checkpoint, str(run.save_ckpt), max_to_keep=2)
    if path:
        log(f"Resumed from {path} (epoch {int(epoch_var.numpy())})")
    return manager


def epoch_plan(cfg, run, steps_per_epoch, schedule_epochs, initial_epoch, log):
    """(EpochPlan, the budget callback or None): --num_epoch, or for a --train_minutes run
    the plan of an earlier attempt (stats/budget.json) or one made while training."""
    from engine.budget import MAX_EPOCHS, EpochPlan, TrainingBudget, stored_plan

    if schedule_epochs is None:
        return EpochPlan(cfg["num_epoch"]), None
    stored = stored_plan(run.budget)
    if stored is not None:
        schedule_epochs.assign(int(stored["planned_epochs"]))
        return EpochPlan(stored["planned_epochs"]), None
    plan = EpochPlan(MAX_EPOCHS)
    return plan, TrainingBudget(cfg["train_minutes"], steps_per_epoch, schedule_epochs, plan,
                                run.budget if run.chief else None, initial_epoch, log)


def train(cfg, model, epoch_var, manager, train_images, data, run, steps_per_epoch, evaluator,
          log, schedule_epochs=None):
    """model.fit from the restored epoch to --num_epoch, or for the epochs that fit
    --train_minutes (``schedule_epochs`` is then the schedule's length); returns (exit
    code, stats callback, the epoch plan)."""
    import keras
    import tensorflow as tf

    from engine.budget import BudgetProgbar
    from engine.callbacks import (EpochCheckpoint, EpochStats, PeriodicEvaluation, StopOnNaN,
                                  nan_message)
    from engine.collapse import make_monitor, probe_images

    views = model.views_per_image
    input_views = model.input_views or views  # augmented batches the pipeline hands train_step
    stats_cb = EpochStats(steps_per_epoch, cfg["batch_size"], views)
    initial_epoch = int(epoch_var.numpy())
    plan, budget = epoch_plan(cfg, run, steps_per_epoch, schedule_epochs, initial_epoch, log)
    if initial_epoch >= plan.epochs:
        return 0, stats_cb, plan
    ds = evaluator.train_dataset(train_images, cfg["batch_size"], cfg["aug_list"], input_views,
                                 cfg["seed"], cfg["clip_pixels"], augment_options(cfg))
    if cfg.get("deterministic"):
        options = tf.data.Options()
        options.deterministic = True
        ds = ds.with_options(options)
    nan_guard = StopOnNaN()
    callbacks = [
        nan_guard,
        stats_cb,
        make_monitor(probe_images(evaluator.network_view(data.train_images), cfg["seed"]),
                     run.collapse, log=log),
        # evaluation before the checkpoint: a kill between the two re-runs (and replaces)
        # that evaluation instead of losing it
        PeriodicEvaluation(lambda m: evaluator.periodic(m, data), cfg["eval_epoch"],
                           plan, run.logs / "eval" if run.chief else None, run.history),
        EpochCheckpoint(manager, epoch_var, cfg["ckpt_epoch"], plan, nan_guard),
    ]
    if budget is not None:
        callbacks.insert(0, budget)  # plans before the checkpoint looks for the last epoch
    if schedule_epochs is not None:
        callbacks.append(BudgetProgbar(plan))  # "Epoch 3/?" until the plan is made
    if run.chief:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run.logs), write_graph=False,
                                                     update_freq="epoch", profile_batch=0))
    model.fit(ds, epochs=plan.epochs, initial_epoch=initial_epoch,
              steps_per_epoch=steps_per_epoch, callbacks=callbacks,
              shuffle=False,  # the tf.data pipeline shuffles; silences Keras's warning
              verbose=1 if sys.stdout.isatty() else 2)
    if nan_guard.triggered:
        print("error: " + nan_message(model, cfg, nan_guard.bad_epoch, manager.latest_checkpoint),
              file=sys.stderr)
        return 3, stats_cb, plan
    return 0, stats_cb, plan


def final_evaluation(cfg, model, data, evaluator, run):
    """Stage 2 on the trained model (detect.evaluation.Evaluation); its metrics are
    recorded in the history (once)."""
    import tensorflow as tf

    from engine.callbacks import write_eval

    final = evaluator.final(model, data)
    writer = tf.summary.create_file_writer(str(run.logs / "eval")) if run.chief else None
    write_eval(writer, run.history, cfg["num_epoch"], final.results)
    return final


def report(cfg, results, data, run, meta, log, sections=None):
    """Writes stats/summary.json (atomically, once the results exist: it marks the run as
    finished); returns the summary.

    ``sections``: extra top-level entries (metrics, calibration, export)."""
    from engine.collapse import load_verdict

    summary = dict(results)
    summary.update(sections or {})
    summary["meta"] = {
        "model_type": cfg["model_type"], "dataset": cfg["dataset"],
        "category": data.category, "category_index": int(data.category_index),
        "protocol": data.protocol, "epochs": cfg["num_epoch"], "seed": cfg["seed"],
        "n_train": int(len(data.train_images)), "n_test": int(len(data.test_images)),
        "n_test_outliers": int(np.sum(data.test_labels)),
        "collapse": load_verdict(run.collapse), "versions": library_versions(), **meta,
    }
    if summary["meta"]["collapse"]["detected"]:
        log(f"warning: the representation collapsed during training (first at epoch "
            f"{summary['meta']['collapse']['first_epoch']}) and was still collapsed at the "
            "end; these AUCs are near chance. Try another --seed or a lower --learning_rate")
    if run.chief:
        write_json_atomic(run.stats / "summary.json", summary)
    return summary


def run_experiment(cfg, log=print):
    """Runs one configuration end to end; returns the process exit code."""
    t_start = time.time()
    checks = validate_config(cfg)
    run = RunPaths(cfg["model_dir"], chief=is_chief(cfg["strategy"]))
    list_data(cfg)
    check_existing_run(cfg, run)
    created = nearest_existing(run.root)  # a failed run removes what it created below this
    step = RunStep()
    try:
        with run_lock(run.root) if run.chief else contextlib.nullcontext():
            stored = prepare_run_dir(cfg, run)
            if stored is not None and not cfg["reevaluate"]:
                log(f"{run.root} finished already; its stored result "
                    f"({run.stats / 'summary.json'}):")
                log(format_table({k: v for k, v in stored.items() if k != "meta"}))
                return 0
            return train_and_evaluate(cfg, run, checks, t_start, log, step)
    except BaseException as err:
        if created != Path(os.path.abspath(run.root)) and not (run.stats / "hparams.json").exists():
            remove_created(run.root, created)  # nothing of value was written
        if isinstance(err, KeyboardInterrupt):
            print(error_line(f"interrupted (Ctrl-C) while {step.now}; "
                             f"{kept_after_interrupt(run)}"), file=sys.stderr)
            return 130
        raise


class RunStep:
    """What the run is doing now: the line an interrupt prints names it."""

    def __init__(self):
        self.now = "preparing the run"


def kept_after_interrupt(run):
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


def remove_created(run_dir, existed):
    """Removes ``run_dir`` and the empty parents this run created below ``existed``."""
    shutil.rmtree(run_dir, ignore_errors=True)
    parent = Path(os.path.abspath(run_dir)).parent
    while parent != existed and existed in parent.parents:
        try:
            parent.rmdir()
        except OSError:  # not empty: someone else writes there
            break
        parent = parent.parent


def load_and_build(cfg, run, checks, log):
    """The data, the evaluator, the strategy, the model restored from its last checkpoint
    (training loop objects included). TensorFlow's import and load lines are held back
    until all of it succeeded, so a refusal found here is the one error line."""
    from data.distaug import apply_distribution_augmentation
    from engine.distribute import make_strategy

    with quiet_stderr():
        data = load_data(cfg, checks.image_shape)
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
        schedule_epochs = budget_variable(cfg, strategy)
        model, epoch_var = build_training(dict(cfg, mixed_precision=precision.precision),
                                          checks.input_shape, strategy, steps_per_epoch,
                                          schedule_epochs)
        manager = restore(model, epoch_var, run, log)
    return data, evaluator, train_images, steps_per_epoch, strategy, precision, model, \
        epoch_var, manager, schedule_epochs


def train_and_evaluate(cfg, run, checks, t_start, log, step):
    step.now = "loading the data and the model"
    (data, evaluator, train_images, steps_per_epoch, strategy, precision, model, epoch_var,
     manager, schedule_epochs) = load_and_build(cfg, run, checks, log)
    from engine.distribute import strategy_kind
    from engine.outputs import record_results, write_extras

    kind = strategy_kind(strategy)
    if run.chief:
        mark_run(run.root)  # the run's marker, before the first file it writes
        write_json_atomic(run.stats / "hparams.json", cfg)
    log(f"{data.describe()}; {len(train_images)} training instances after distribution "
        f"augmentation '{cfg['distaug_type']}'; {steps_per_epoch} steps/epoch; "
        f"{strategy.num_replicas_in_sync} replica(s), strategy {kind}"
        f"{'' if kind == cfg['strategy'] else ' (--strategy=' + cfg['strategy'] + ')'}; precision "
        f"{precision.precision} ({precision.reason})")
    if precision.warning:
        log(f"warning: {precision.warning}")
    if no_auc_note(data.test_labels):
        log(no_auc_note(data.test_labels))
    if length_note(cfg, checks.evaluator):
        log(length_note(cfg, checks.evaluator))

    step.now = "training"
    t_train = time.time()
    code, stats_cb, plan = train(cfg, model, epoch_var, manager, train_images, data, run,
                                 steps_per_epoch, evaluator, log, schedule_epochs)
    if code:
        return code
    if schedule_epochs is not None:  # the epochs the budget allowed are the run's epochs
        cfg = dict(cfg, num_epoch=plan.epochs)
    train_seconds = time.time() - t_train
    step.now = "extracting features and fitting the detectors"
    log("Extracting features and fitting detectors ...")
    with keras_policy("float32"):
        t_eval = time.time()
        network = float32_network(cfg, model, checks.input_shape, strategy)
        final = final_evaluation(cfg, network, data, evaluator, run)
        evaluate_seconds = time.time() - t_eval
        sections = record_results(run.root, cfg, final, log) if run.chief else {}
        if cfg.get("synthetic_validation", "none") != "none":  # every worker extracts
            sections.update(synthetic_check(evaluator, network, data,
                                            float(cfg.get("calibration_fraction", 0.1)),
                                            int(cfg["seed"]), log))
        meta = {
            "steps_per_epoch": steps_per_epoch,
            "optimizer_steps": int(model.optimizer.iterations.numpy()),
            "wall_seconds": round(time.time() - t_start, 2),
            "train_seconds": round(train_seconds, 2),
            "evaluate_seconds": round(evaluate_seconds, 2),  # features, detectors, metrics
            "train_images_per_sec": (round(float(np.median(stats_cb.history)), 1)
                                     if stats_cb.history else None),
            "replicas": strategy.num_replicas_in_sync, "strategy": kind,
            "deterministic": bool(cfg.get("deterministic")),
            "precision": precision._asdict(),
            "protocols": describe_protocols(data),
            "budget": budget_record(run, plan) if schedule_epochs is not None else None,
        }
        report(cfg, final.results, data, run, meta, log, sections)  # the results exist now
        if not run.chief:
            return 0
        step.now = "writing the plots, heat maps and export (the results are in summary.json)"
        failed = write_extras(run.root, cfg, network, data, final, sections, log)
    if sections["export"] is not None:  # the same summary, now naming the export
        report(cfg, final.results, data, run, meta, lambda message: None, sections)
    log(format_table(final.results))
    log(f"Wrote {run.stats / 'summary.json'}")
    if failed:
        print(error_line(f"the run's results are in {run.stats / 'summary.json'} and "
                         f"{run.stats / 'scores.npz'}, but not written: "
                         + "; ".join(f"{what} ({why})" for what, why in failed)
                         + (f"; script/export.py {run.root} writes the export again"
                            if any(w == "the export" for w, _ in failed) else "")),
              file=sys.stderr)
        return 1
    return 0


def length_note(cfg, evaluator):
    """One line for an MVTec-layout run on a CPU at the default length (the paper's 2,048
    epochs, days on a CPU) without a preset: the inspector preset trains by the clock."""
    import tensorflow as tf

    if (evaluator not in ("patch", "map") or cfg.get("preset") or cfg.get("train_minutes")
            or cfg["num_epoch"] != FLAG_DEFAULTS["num_epoch"]
            or tf.config.list_logical_devices("GPU")):
        return None
    return (f"note: training for --num_epoch={cfg['num_epoch']} epochs, the paper's length, "
            "which on a CPU takes days; --preset=inspector trains for 15 minutes by the clock "
            "(--train_minutes) and is the recipe made for CPUs (docs/mvtec.md)")


def budget_variable(cfg, strategy):
    """The schedule's length as a variable for a --train_minutes run (None otherwise)."""
    import tensorflow as tf

    from engine.budget import MAX_EPOCHS

    if not cfg.get("train_minutes"):
        return None
    with strategy.scope():
        return tf.Variable(MAX_EPOCHS, dtype=tf.int64, trainable=False, name="schedule_epochs")


def budget_record(run, plan):
    """summary.json's ``meta.budget``: the plan (stats/budget.json) and the epochs run."""
    from engine.budget import stored_plan

    return dict(stored_plan(run.budget) or {}, epochs=int(plan.epochs))
