"""One run of the two-stage method, as a story of named steps:

validate -> lock -> load -> build -> train -> evaluate -> report

Every flag is checked (util/validate.py) before anything is loaded or written;
a run directory is held by one process at a time (util/runlock.py); reruns
resume from the last checkpoint, refuse a different configuration and report a
finished run without evaluating it again (util/resume.py); collapse of the
representation is watched during training (util/collapse.py). Every result
file is written atomically (util/atomic.py). docs/robustness.md tells the rules.
"""

import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from util.atomic import write_json_atomic
from util.errors import ConfigError
from util.patch_evaluation import (is_mvtec, mvtec_evaluate, mvtec_shapes, mvtec_steps,
                                   mvtec_train_dataset, patch_mode)
from util.validate import validate_config

validate_cheap = validate_config  # the former name, for callers in other modules

def load_data(cfg, shape):
    from data.registry import load_one_class_data

    data = load_one_class_data(cfg["dataset"], cfg["category"], root=cfg["root"],
                               data_dir=cfg["data_dir"], input_shape=shape,
                               is_validation=cfg["is_validation"], seed=cfg["seed"],
                               attribute=cfg.get("celeba_attribute"))
    from data.protocols_extra import apply_protocols, protocols_active  # experiments (i11)
    if protocols_active(cfg):
        from data.registry import load_splits
        apply_protocols(data, cfg, splits=lambda: load_splits(
            cfg["dataset"], root=cfg["root"], data_dir=cfg["data_dir"], input_shape=shape))
    n = len(data.train_images)
    if n == 0:
        raise ConfigError(f"no training images for category {cfg['category']!r}")
    if cfg["is_validation"] and n < cfg["batch_size"]:
        raise ConfigError(f"--batch_size={cfg['batch_size']} is larger than the {n} training "
                          "images left after the validation split; use --batch_size<=" f"{n}")
    return data


def set_precision(mode):
    import keras

    policy = {"none": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}[mode]
    keras.mixed_precision.set_global_policy(policy)


def make_optimizer(cfg, steps_per_epoch):
    import keras

    from util.optim import make_base_optimizer
    from util.schedules import make_schedule

    opt = make_base_optimizer(cfg, make_schedule(cfg, steps_per_epoch))
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
    from model.registry import build_model, model_spec

    return build_model(
        cfg["model_type"], net_type=cfg["net_type"], net_width=cfg["net_width"],
        input_shape=shape, head_dims=cfg["head_dims"],
        stem_width=stem_filters(cfg["stem_width"], cfg["net_width"]),
        weight_decay=cfg["weight_decay"], temperature=cfg["temperature"], sync_bn=sync_bn,
        aug_list=cfg["aug_list"], aug_list_for_test=cfg["aug_list_for_test"],
        l2_skip_batchnorm=cfg.get("regularize_bn", False),
        **{k: cfg[k] for k in model_spec(cfg["model_type"]).get("options", ())})


def build_training(cfg, shape, strategy, steps_per_epoch):
    """Model + compiled optimizer (with all variables created) inside the strategy."""
    import tensorflow as tf

    set_precision(cfg["mixed_precision"])
    set_determinism(cfg)
    with strategy.scope():
        model = model_from_config(cfg, shape,
                                  sync_bn=cfg["sync_bn"] and strategy.num_replicas_in_sync > 1)
        model.compile(optimizer=make_optimizer(cfg, steps_per_epoch))
        model.optimizer.build(model.trainable_variables)
        epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    return model, epoch_var


def library_versions():
    import keras
    import sklearn
    import tensorflow as tf

    return {"python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "numpy": np.__version__, "scikit-learn": sklearn.__version__}


def format_table(results):
    keys = sorted(k for k, v in results.items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool))
    head = " ".join(f"{k:>13s}" for k in keys)
    row = " ".join(f"{results[k]:13.2f}" for k in keys)
    return f"{head}\n{row}"




class RunPaths:
    """Where a run writes: ``write`` is the run directory on the chief, a private
    temporary directory on the other workers of a multi-worker job."""

    def __init__(self, model_dir, chief=True):
        from util.distribute import worker_dir

        self.root = Path(model_dir)
        self.chief = chief
        self.ckpt = self.root / "ckpt"  # every worker restores from the shared checkpoints
        self.save_ckpt = Path(worker_dir(self.root, chief)) / "ckpt"
        self.stats, self.logs = self.root / "stats", self.root / "logs"
        self.history = self.stats / "eval_history.jsonl" if chief else None
        self.collapse = self.stats / "collapse.json" if chief else None


def prepare_run_dir(cfg, run):
    """Wipes (--force_init) or checks a reused run directory; returns a stored summary."""
    from util.resume import check_resume, stored_summary

    if cfg["force_init"] and run.chief:
        for d in (run.ckpt, run.logs, run.stats):
            shutil.rmtree(d, ignore_errors=True)
    check_resume(cfg, run.stats)
    return stored_summary(run.stats)


def restore(model, epoch_var, run, log):
    """Checkpoint objects; restores the latest checkpoint of the run, if any."""
    import tensorflow as tf

    from util.resume import restore_checkpoint

    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer, epoch=epoch_var)
    try:
        manager = tf.train.CheckpointManager(checkpoint, str(run.save_ckpt), max_to_keep=2)
        reader = tf.train.CheckpointManager(checkpoint, str(run.ckpt), max_to_keep=2)
    except Exception as err:  # noqa: BLE001  (an unreadable 'checkpoint' state file)
        raise ConfigError(f"the checkpoint index in {run.ckpt} cannot be read ({err}); "
                          "it was left in place: delete it or pass --force_init") from None
    path = restore_checkpoint(checkpoint, reader)
    if path:
        log(f"Resumed from {path} (epoch {int(epoch_var.numpy())})")
    return manager


def network_sized(cfg, images):
    """Images as the network sees them: in MVTec patch mode, the central patch."""
    if not patch_mode(cfg):
        return images
    p, h = int(cfg["patch_size"]), images.shape[1]
    return images[:, (h - p) // 2:(h - p) // 2 + p, (h - p) // 2:(h - p) // 2 + p]


def train(cfg, model, epoch_var, manager, train_images, data, run, steps_per_epoch, evaluate,
          log):
    """model.fit from the restored epoch to --num_epoch; returns (exit code, stats callback)."""
    import keras

    from data.pipeline import train_dataset
    from util.callbacks import EpochCheckpoint, EpochStats, PeriodicEvaluation, StopOnNaN, \
        nan_message
    from util.collapse import make_monitor, probe_images

    views = model.views_per_image
    input_views = model.input_views or views  # augmented batches the pipeline hands train_step
    stats_cb = EpochStats(steps_per_epoch, cfg["batch_size"], views)
    initial_epoch = int(epoch_var.numpy())
    if initial_epoch >= cfg["num_epoch"]:
        return 0, stats_cb
    if patch_mode(cfg):  # MVTec: random patches of the good images
        ds = mvtec_train_dataset(cfg, train_images, input_views)
    else:
        ds, _ = train_dataset(train_images, cfg["batch_size"], cfg["aug_list"],
                              num_views=input_views, seed=cfg["seed"],
                              clip_pixels=cfg["clip_pixels"])
    if cfg.get("deterministic"):
        import tensorflow as tf

        options = tf.data.Options()
        options.deterministic = True
        ds = ds.with_options(options)
    nan_guard = StopOnNaN()
    callbacks = [
        nan_guard,
        stats_cb,
        make_monitor(probe_images(network_sized(cfg, data.train_images), cfg["seed"]),
                     run.collapse, log=log),
        # evaluation before the checkpoint: a kill between the two re-runs (and replaces)
        # that evaluation instead of losing it
        PeriodicEvaluation(evaluate, cfg["eval_epoch"], cfg["num_epoch"],
                           run.logs / "eval" if run.chief else None, run.history),
        EpochCheckpoint(manager, epoch_var, cfg["ckpt_epoch"], cfg["num_epoch"], nan_guard),
    ]
    if run.chief:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run.logs), write_graph=False,
                                                     update_freq="epoch", profile_batch=0))
    model.fit(ds, epochs=cfg["num_epoch"], initial_epoch=initial_epoch,
              steps_per_epoch=steps_per_epoch, callbacks=callbacks,
              shuffle=False,  # the tf.data pipeline shuffles; silences Keras's warning
              verbose=1 if sys.stdout.isatty() else 2)
    if nan_guard.triggered:
        print("error: " + nan_message(model, cfg, nan_guard.bad_epoch, manager.latest_checkpoint),
              file=sys.stderr)
        return 3, stats_cb
    return 0, stats_cb


def final_evaluation(cfg, model, data, detectors, run, log):
    """Stage 2 on the trained model; the AUCs are recorded in the history (once).

    Returns (results, util.evaluation.Evaluation): held-out calibration inliers and
    per-image scores for the run's outputs; None instead for MVTec, whose patch
    maps, pixel metrics and heat maps util/patch_evaluation.py writes itself."""
    import tensorflow as tf

    from util.callbacks import write_eval
    from util.evaluation import evaluate_final

    final = None
    if is_mvtec(cfg):
        results = mvtec_evaluate(model, data, cfg, detectors, run.root, log)
    else:
        final = evaluate_final(model, data, detectors=detectors,
                               max_train=cfg["max_detector_train"], seed=cfg["seed"],
                               batch_size=cfg["eval_batch_size"],
                               calibration_fraction=cfg["calibration_fraction"])
        results = final.results
    writer = tf.summary.create_file_writer(str(run.logs / "eval")) if run.chief else None
    write_eval(writer, run.history, cfg["num_epoch"], results)
    return results, final


def report(cfg, results, data, run, meta, log, sections=None):
    """Writes stats/summary.json (atomically, last: it marks the run as finished).

    ``sections``: extra top-level entries (metrics, calibration, export)."""
    from util.collapse import load_verdict

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
        log(f"warning: the representation collapsed during training (epoch "
            f"{summary['meta']['collapse']['first_epoch']}); these AUCs are near chance")
    if run.chief:
        write_json_atomic(run.stats / "summary.json", summary)
        log(format_table(results))
        log(f"Wrote {run.stats / 'summary.json'}")
    return summary


def run_experiment(cfg, log=print):
    """Runs one configuration end to end; returns the process exit code."""
    import contextlib

    from util.distribute import is_chief
    from util.runlock import run_lock

    t_start = time.time()
    shape, detectors = validate_config(cfg)
    shape, data_shape = mvtec_shapes(cfg, shape)  # MVTec patch mode: patch input, 256 px images
    run = RunPaths(cfg["model_dir"], chief=is_chief(cfg["strategy"]))
    created = not run.root.exists()
    try:
        with run_lock(run.root) if run.chief else contextlib.nullcontext():
            stored = prepare_run_dir(cfg, run)
            if stored is not None and not cfg["reevaluate"]:
                log(f"{run.root} finished already; its stored result "
                    f"({run.stats / 'summary.json'}):")
                log(format_table({k: v for k, v in stored.items() if k != "meta"}))
                return 0
            return train_and_evaluate(cfg, run, shape, data_shape, detectors, t_start, log)
    except BaseException:
        if created and not (run.stats / "hparams.json").exists():
            shutil.rmtree(run.root, ignore_errors=True)  # nothing of value was written
        raise


def train_and_evaluate(cfg, run, shape, data_shape, detectors, t_start, log):
    data = load_data(cfg, data_shape)  # before TensorFlow is imported: data errors come fast

    from data.distaug import apply_distribution_augmentation
    from data.pipeline import repeat_to_batch
    from data.protocols_extra import describe_protocols
    from util.distribute import make_strategy
    from util.evaluation import evaluate_model
    from util.outputs import finish_outputs

    train_images = apply_distribution_augmentation(data.train_images, cfg["distaug_type"])
    steps_per_epoch = cfg["num_batch"] or len(repeat_to_batch(train_images, cfg["batch_size"])) \
        // cfg["batch_size"]
    steps_per_epoch = mvtec_steps(cfg, len(train_images), steps_per_epoch)
    strategy = make_strategy(cfg["strategy"])
    if cfg["batch_size"] % strategy.num_replicas_in_sync:
        raise ConfigError(f"--batch_size={cfg['batch_size']} must be divisible by the "
                          f"{strategy.num_replicas_in_sync} replicas")
    model, epoch_var = build_training(cfg, shape, strategy, steps_per_epoch)
    manager = restore(model, epoch_var, run, log)
    if run.chief:
        write_json_atomic(run.stats / "hparams.json", cfg)
    log(f"{data.describe()}; {len(train_images)} training instances after distribution "
        f"augmentation '{cfg['distaug_type']}'; {steps_per_epoch} steps/epoch; "
        f"{strategy.num_replicas_in_sync} replica(s), strategy {cfg['strategy']}")

    def evaluate(m):
        if is_mvtec(cfg):
            return mvtec_evaluate(m, data, cfg, detectors, run.root, log)
        fit_images = data.detector_images if data.detector_images is not None else data.train_images
        return evaluate_model(m, fit_images, data.test_images, data.test_labels,
                              detectors=detectors, max_train=cfg["max_detector_train"],
                              seed=cfg["seed"], batch_size=cfg["eval_batch_size"])

    t_train = time.time()
    code, stats_cb = train(cfg, model, epoch_var, manager, train_images, data, run,
                           steps_per_epoch, evaluate, log)
    if code:
        return code
    train_seconds = time.time() - t_train
    log("Extracting features and fitting detectors ...")
    results, final = final_evaluation(cfg, model, data, detectors, run, log)
    sections = {}
    if run.chief and final is not None:  # scores.npz, metrics, plots, export (util/outputs.py)
        sections = finish_outputs(run.root, cfg, model, data, final, log)
    report(cfg, results, data, run, {
        "steps_per_epoch": steps_per_epoch, "optimizer_steps": int(model.optimizer.iterations.numpy()),
        "wall_seconds": round(time.time() - t_start, 2), "train_seconds": round(train_seconds, 2),
        "train_images_per_sec": (round(float(np.median(stats_cb.history)), 1)
                                 if stats_cb.history else None),
        "replicas": strategy.num_replicas_in_sync, "strategy": cfg["strategy"],
        "deterministic": bool(cfg.get("deterministic")),
        "protocols": describe_protocols(data),
    }, log, sections)
    return 0
