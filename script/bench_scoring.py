"""Benchmark section ``scoring``: images/s through the exported SavedModel and its load time.

The model is the width-0.25 ResNet-18 of the cpu_small preset at 32x32 (random
initialisation: speed does not depend on the weights) with a KDE over 5,000
training features, exported with util/export.py exactly as a run does, loaded
back with tf.saved_model.load, and fed uint8 batches through the serving
signature (the path script/score.py takes, without file decoding).
"""

import tempfile
import time

import numpy as np


def scoring_section(args, log, n_train=5000, width=0.25, batch_sizes=(256, 1024)):
    import tensorflow as tf

    from model.registry import build_model
    from util.calibration import calibration
    from util.config import FLAG_DEFAULTS
    from util.detectors import KDE
    from util.export import export_saved_model

    quick = getattr(args, "quick", False)
    repeats = 3 if quick else max(3, int(getattr(args, "repeats", 5)))
    if quick:
        n_train, batch_sizes = 500, (256,)
    model = build_model("contrastive_da", net_type="ResNet18", net_width=width,
                        input_shape=(32, 32, 3), head_dims="512x2,128")
    rng = np.random.default_rng(0)
    dim = int(model.backbone.output_shape[-1])
    fit = rng.normal(size=(n_train, dim)).astype(np.float32)
    det = KDE().fit(fit)
    calib = calibration(det.score(rng.normal(size=(500, dim)).astype(np.float32)), 0.01)
    cfg = dict(FLAG_DEFAULTS, net_width=width)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        export_dir = f"{tmp}/export"
        export_saved_model(export_dir, model, (32, 32, 3), det, fit, calib, cfg,
                           log=lambda m: None)
        t0 = time.perf_counter()
        serve = tf.saved_model.load(export_dir).signatures["serving_default"]
        load_s = time.perf_counter() - t0
        for bs in batch_sizes:
            batch = tf.constant(rng.integers(0, 256, (bs, 32, 32, 3), dtype=np.uint8))
            serve(images=batch)  # warm-up
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                serve(images=batch)["raw_score"].numpy()
                times.append(time.perf_counter() - t)
            ips = bs / float(np.median(times))
            rows.append({"batch_size": bs, "images_per_sec": round(ips, 1)})
            log(f"scoring: KDE over {n_train} features, width {width}, batch {bs}: "
                f"{ips:,.0f} images/s (target >= 1,000)")
    log(f"scoring: SavedModel load {load_s:.2f} s")
    return {"n_train_features": n_train, "net_width": width, "load_seconds": round(load_s, 3),
            "throughput": rows}
