"""One run of the two-stage method: validate, load data, train with model.fit, evaluate, report.

Everything that can be wrong with the user's flags or data is checked before
the run directory is created, so a bad command leaves nothing behind. Reruns
of the same command resume from the last checkpoint (``force_init`` starts over).
"""

import json
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from util.errors import ConfigError
from util.patch_evaluation import (is_mvtec, mvtec_evaluate, mvtec_shapes, mvtec_steps,
                                   mvtec_train_dataset, patch_mode)

def validate_cheap(cfg):
    """Checks that need no data: flag syntax and ranges. Returns parsed pieces."""
    from data.augment import parse_aug_list
    from data.base import parse_input_shape
    from data.distaug import distaug_transforms
    from model.heads import parse_head_dims
    from model.resnet import check_input_shape
    from util.detectors import DETECTORS

    shape = check_input_shape(parse_input_shape(cfg["input_shape"]))
    parse_aug_list(cfg["aug_list"])
    distaug_transforms(cfg["distaug_type"])
    parse_head_dims(cfg["head_dims"])
    detectors = [d.strip() for d in cfg["detectors"].split(",") if d.strip()]
    unknown = [d for d in detectors if d not in DETECTORS]
    if unknown or not detectors:
        raise ConfigError(f"--detectors={cfg['detectors']} names unknown detectors {unknown}; "
                          f"choose from {', '.join(DETECTORS)}")
    for key in ("batch_size", "ckpt_epoch", "eval_batch_size"):
        if int(cfg[key]) <= 0:
            raise ConfigError(f"--{key}={cfg[key]} must be a positive integer")
    if int(cfg["num_epoch"]) < 0 or int(cfg["num_batch"]) < 0:
        raise ConfigError("--num_epoch and --num_batch must be >= 0")
    if cfg["learning_rate"] <= 0:
        raise ConfigError(f"--learning_rate={cfg['learning_rate']} must be > 0")
    return shape, detectors


def load_data(cfg, shape):
    from data.registry import load_one_class_data

    data = load_one_class_data(cfg["dataset"], cfg["category"], root=cfg["root"],
                               data_dir=cfg["data_dir"], input_shape=shape,
                               is_validation=cfg["is_validation"], seed=cfg["seed"])
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

    from util.schedules import constant_or_cosine

    lr = constant_or_cosine(cfg["sched_type"], cfg["learning_rate"], steps_per_epoch,
                            cfg["num_epoch"])
    opt = keras.optimizers.SGD(learning_rate=lr, momentum=cfg["momentum"])
    if cfg["mixed_precision"] == "fp16":
        # dynamic loss scaling; a modest start skips fewer overflowing first steps
        opt = keras.mixed_precision.LossScaleOptimizer(opt, initial_scale=2.0 ** 8)
    return opt


def stem_filters(stem_width, net_width):
    """None keeps the release's 64-filter stem; 0 scales it with the width."""
    if stem_width is None:
        return None
    return max(1, int(round(64 * net_width))) if stem_width == 0 else int(stem_width)


def build_training(cfg, shape, strategy, steps_per_epoch):
    """Model + compiled optimizer (with all variables created) inside the strategy."""
    import keras
    import tensorflow as tf

    from model.registry import build_model, model_spec

    set_precision(cfg["mixed_precision"])
    keras.utils.set_random_seed(cfg["seed"])
    with strategy.scope():
        model = build_model(
            cfg["model_type"], net_type=cfg["net_type"], net_width=cfg["net_width"],
            input_shape=shape, head_dims=cfg["head_dims"],
            stem_width=stem_filters(cfg["stem_width"], cfg["net_width"]),
            weight_decay=cfg["weight_decay"], temperature=cfg["temperature"],
            sync_bn=cfg["sync_bn"] and strategy.num_replicas_in_sync > 1,
            **{k: cfg[k] for k in model_spec(cfg["model_type"]).get("model_kwargs", ())})
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
    keys = sorted(results)
    head = " ".join(f"{k:>13s}" for k in keys)
    row = " ".join(f"{results[k]:13.2f}" for k in keys)
    return f"{head}\n{row}"


def run_experiment(cfg, log=print):
    """Runs one configuration end to end; returns the process exit code."""
    t_start = time.time()
    shape, detectors = validate_cheap(cfg)
    shape, data_shape = mvtec_shapes(cfg, shape)  # MVTec patch mode: patch input, 256 px images
    data = load_data(cfg, data_shape)

    import keras
    import tensorflow as tf

    from data.distaug import apply_distribution_augmentation
    from data.pipeline import repeat_to_batch, train_dataset
    from model.registry import model_spec
    from util.callbacks import (EpochCheckpoint, EpochStats, PeriodicEvaluation, StopOnNaN,
                                write_eval)
    from util.evaluation import evaluate_model

    train_images = apply_distribution_augmentation(data.train_images, cfg["distaug_type"])
    n_train = len(repeat_to_batch(train_images, cfg["batch_size"]))
    steps_per_epoch = cfg["num_batch"] or n_train // cfg["batch_size"]
    steps_per_epoch = mvtec_steps(cfg, len(train_images), steps_per_epoch)
    strategy = tf.distribute.MirroredStrategy()
    if cfg["batch_size"] % strategy.num_replicas_in_sync:
        raise ConfigError(f"--batch_size={cfg['batch_size']} must be divisible by the "
                          f"{strategy.num_replicas_in_sync} replicas")
    model, epoch_var = build_training(cfg, shape, strategy, steps_per_epoch)

    # --- from here on the run directory exists ---
    run_dir = Path(cfg["model_dir"])
    created = not run_dir.exists()
    ckpt_dir, stats_dir, log_dir = run_dir / "ckpt", run_dir / "stats", run_dir / "logs"
    if cfg["force_init"]:
        for d in (ckpt_dir, log_dir, stats_dir):
            shutil.rmtree(d, ignore_errors=True)
    try:
        stats_dir.mkdir(parents=True, exist_ok=True)
        (stats_dir / "hparams.json").write_text(json.dumps(cfg, indent=2, sort_keys=True))
        checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer, epoch=epoch_var)
        manager = tf.train.CheckpointManager(checkpoint, str(ckpt_dir), max_to_keep=2)
        if manager.latest_checkpoint:
            checkpoint.restore(manager.latest_checkpoint).expect_partial()
            log(f"Resumed from {manager.latest_checkpoint} (epoch {int(epoch_var.numpy())})")
    except Exception:
        if created:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    initial_epoch = int(epoch_var.numpy())
    log(f"{data.describe()}; {len(train_images)} training instances after distribution "
        f"augmentation '{cfg['distaug_type']}'; {steps_per_epoch} steps/epoch; "
        f"{strategy.num_replicas_in_sync} replica(s)")

    def evaluate(m):
        if is_mvtec(cfg):
            return mvtec_evaluate(m, data, cfg, detectors, run_dir, log)
        return evaluate_model(m, data.train_images, data.test_images, data.test_labels,
                              detectors=detectors, max_train=cfg["max_detector_train"],
                              seed=cfg["seed"], batch_size=cfg["eval_batch_size"])

    history_path = stats_dir / "eval_history.jsonl"
    views = model_spec(cfg["model_type"])["cls"].views_per_image
    stats_cb = EpochStats(steps_per_epoch, cfg["batch_size"], views)
    t_train = time.time()
    if initial_epoch < cfg["num_epoch"]:
        ds, _ = train_dataset(train_images, cfg["batch_size"], cfg["aug_list"],
                              num_views=2 if views == 2 else 1, seed=cfg["seed"])
        if patch_mode(cfg):
            ds = mvtec_train_dataset(cfg, train_images, views)
        nan_guard = StopOnNaN()
        callbacks = [
            nan_guard,
            stats_cb,
            EpochCheckpoint(manager, epoch_var, cfg["ckpt_epoch"], cfg["num_epoch"], nan_guard),
            PeriodicEvaluation(evaluate, cfg["eval_epoch"], cfg["num_epoch"], log_dir / "eval",
                               history_path),
            keras.callbacks.TensorBoard(log_dir=str(log_dir), write_graph=False,
                                           update_freq="epoch", profile_batch=0),
        ]
        model.fit(ds, epochs=cfg["num_epoch"], initial_epoch=initial_epoch,
                  steps_per_epoch=steps_per_epoch, callbacks=callbacks,
                  shuffle=False,  # the tf.data pipeline shuffles; silences Keras's warning
                  verbose=1 if sys.stdout.isatty() else 2)
        if nan_guard.triggered:
            last = manager.latest_checkpoint or "none"
            print(f"error: the loss became NaN/inf in epoch {nan_guard.bad_epoch + 1}; training "
                  f"stopped and the last good checkpoint is kept ({last}). Lower "
                  "--learning_rate or check the input data.", file=sys.stderr)
            return 3
    train_seconds = time.time() - t_train

    log("Extracting features and fitting detectors ...")
    results = evaluate(model)
    write_eval(tf.summary.create_file_writer(str(log_dir / "eval")), history_path,
               cfg["num_epoch"], results)
    summary = dict(results)
    summary["meta"] = {
        "model_type": cfg["model_type"], "dataset": cfg["dataset"],
        "category": data.category, "category_index": int(data.category_index),
        "protocol": data.protocol, "epochs": cfg["num_epoch"], "steps_per_epoch": steps_per_epoch,
        "seed": cfg["seed"], "n_train": int(len(data.train_images)),
        "n_test": int(len(data.test_images)), "n_test_outliers": int(np.sum(data.test_labels)),
        "wall_seconds": round(time.time() - t_start, 2), "train_seconds": round(train_seconds, 2),
        "train_images_per_sec": (round(float(np.median(stats_cb.history)), 1)
                                 if stats_cb.history else None),
        "replicas": strategy.num_replicas_in_sync, "versions": library_versions(),
    }
    (stats_dir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
    log(format_table(results))
    log(f"Wrote {stats_dir / 'summary.json'}")
    return 0
