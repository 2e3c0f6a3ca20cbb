"""Benchmark section ``scoring``: images/s through the exported SavedModel and its load time.

The model is the width-0.25 ResNet-18 of the cpu_small preset at 32x32 (random
initialisation: speed does not depend on the weights) with a KDE over 5,000
training features, exported with deploy/export.py exactly as a run does, loaded
back with tf.saved_model.load, and fed uint8 batches through the serving
signature (the path script/score.py takes, without file decoding).

Machines differ, so the same run also measures two references: the bare
network (the Keras backbone's forward pass in a tf.function, no export, no
detector) and a large float32 matmul. It prints the serving rate as a ratio
of the bare network and the achieved GFLOP/s as a fraction of the matmul:
the 1,000 images/s target is 89 GFLOP/s at width 0.25, within reach of a
machine whose matmul runs at a few hundred GFLOP/s but not of one at ~100.
"""

import tempfile
import time

import numpy as np


def scoring_section(args, log, n_train=5000, width=0.25, batch_sizes=(256, 1024)):
    import tensorflow as tf

    from bench.flops import conv_dense_macs, matmul_gflops

    repeats, n_train, batch_sizes = scoring_budget(args, n_train, batch_sizes)
    rng = np.random.default_rng(0)
    peak = matmul_gflops()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        export_dir = f"{tmp}/export"
        model = benchmark_export(export_dir, width, n_train)
        gflop_per_image = 2 * conv_dense_macs(model.backbone) / 1e9
        t0 = time.perf_counter()
        serve = tf.saved_model.load(export_dir).signatures["serving_default"]
        load_s = time.perf_counter() - t0
        for bs in batch_sizes:
            batch = tf.constant(rng.integers(0, 256, (bs, 32, 32, 3), dtype=np.uint8))
            ips = median_rate(lambda b: serve(images=b)["raw_score"].numpy(), batch, repeats)
            bare = _bare_network_rate(model, batch, repeats)
            frac = ips * gflop_per_image / peak
            rows.append({"batch_size": bs, "images_per_sec": round(ips, 1),
                         "bare_network_images_per_sec": round(bare, 1),
                         "ratio_to_bare_network": round(ips / bare, 3),
                         "fraction_of_matmul": round(frac, 3)})
            log(f"scoring: KDE over {n_train} features, width {width}, batch {bs}: "
                f"{ips:,.0f} images/s (target >= 1,000); bare network {bare:,.0f} images/s "
                f"(ratio {ips / bare:.2f}); {ips * gflop_per_image:.0f} GFLOP/s = "
                f"{100 * frac:.0f}% of the matmul")
    log(f"scoring: SavedModel load {load_s:.2f} s; network {1e3 * gflop_per_image:.0f} MFLOP "
        f"per image; matmul {peak:.0f} GFLOP/s")
    return {"n_train_features": n_train, "net_width": width, "load_seconds": round(load_s, 3),
            "gflop_per_image": round(gflop_per_image, 4), "matmul_gflops": round(peak, 1),
            "throughput": rows}


def scoring_budget(args, n_train, batch_sizes):
    """(repeats, n_train, batch sizes) of a scoring benchmark; --quick shrinks them."""
    if getattr(args, "quick", False):
        return 3, 500, (256,)
    return max(3, int(getattr(args, "repeats", 5))), n_train, batch_sizes


def median_rate(fn, batch, repeats):
    """images/s of ``fn(batch)``: one warm-up call, then the median of ``repeats`` calls."""
    fn(batch)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(batch)
        times.append(time.perf_counter() - t)
    return len(batch) / float(np.median(times))


def benchmark_export(export_dir, width, n_train):
    """Exports the benchmark's model (random init, 32x32) with a KDE over ``n_train``
    random features to ``export_dir`` as a run does; returns the Keras model."""
    from deploy.export import export_saved_model
    from detect.calibration import calibration
    from detect.detectors import KDE
    from engine.flags import FLAG_DEFAULTS
    from model.registry import build_model

    model = build_model("contrastive_da", net_type="ResNet18", net_width=width,
                        input_shape=(32, 32, 3), head_dims="512x2,128")
    rng = np.random.default_rng(0)
    dim = int(model.backbone.output_shape[-1])
    fit = rng.normal(size=(n_train, dim)).astype(np.float32)
    det = KDE().fit(fit)
    calib = calibration(det.score(rng.normal(size=(500, dim)).astype(np.float32)), 0.01)
    export_saved_model(export_dir, model, (32, 32, 3), det, calib,
                       dict(FLAG_DEFAULTS, net_width=width), log=lambda m: None)
    return model


def _bare_network_rate(model, uint8_batch, repeats):
    """images/s of the Keras backbone alone (float input, no export, no detector)."""
    import tensorflow as tf

    x = tf.cast(uint8_batch, tf.float32) / 255.0
    forward = tf.function(lambda: model.backbone(x, training=False))
    forward()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        forward().numpy()
        times.append(time.perf_counter() - t)
    return int(uint8_batch.shape[0]) / float(np.median(times))
