"""Benchmark section ``flops``: how far the training step is from the machine's limit.

* FLOPs of one training step per view, counted from the model's layer shapes:
  every Conv2D costs H_out * W_out * kh * kw * C_in * C_out multiply-adds and
  every Dense in * out; a multiply-add is 2 FLOPs and training costs 3x the
  forward pass (forward, gradient w.r.t. the inputs, gradient w.r.t. the
  weights). BatchNorm, ReLU, pooling and the loss are left out (a few percent).
* The machine's reference: a large float32 matmul (n x n by n x n, 2 n^3 FLOPs)
  timed in the same process.
* Achieved GFLOP/s = FLOPs per view x views/s of the throughput section (real
  ``model.fit`` and model-only ceiling), printed as a fraction of the matmul.
"""

import time

import numpy as np


def conv_dense_macs(model):
    """Multiply-adds of one forward pass of one image through ``model``."""
    import keras

    from model.base import all_layers

    macs = 0
    for layer in all_layers(model):
        if isinstance(layer, keras.layers.Conv2D):
            _, h, w, _ = layer.output.shape
            macs += int(h) * int(w) * int(np.prod(layer.kernel.shape))
        elif isinstance(layer, keras.layers.Dense):
            macs += int(np.prod(layer.kernel.shape))
    return macs


def train_flops_per_view(model):
    return 3 * 2 * conv_dense_macs(model)


def matmul_gflops(n=2048, repeats=5, log=None):
    """Median GFLOP/s of an n x n float32 matmul (after a warm-up)."""
    import tensorflow as tf

    a = tf.random.normal((n, n), dtype=tf.float32)
    b = tf.random.normal((n, n), dtype=tf.float32)

    @tf.function
    def mm(x, y):
        return tf.reduce_sum(tf.matmul(x, y))  # a scalar: no copy-out cost

    mm(a, b).numpy()
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        mm(a, b).numpy()
        rates.append(2.0 * n ** 3 / (time.perf_counter() - t0) / 1e9)
    return float(np.median(rates))


def flops_section(args, log, throughput_rows=None):
    from model.registry import build_model
    from engine.config import resolve_config
    from engine.experiment import stem_filters

    n = 1024 if args.quick else 2048
    peak = matmul_gflops(n, repeats=3 if args.quick else 7)
    log(f"flops: fp32 matmul {n}x{n}: {peak:.1f} GFLOP/s (the machine's reference)")
    rows = []
    pairs = ([(r["model_type"], r["net_width"], r) for r in throughput_rows]
             if throughput_rows else
             [(m, float(w), None) for w in args.widths.split(",")
              for m in args.model_types.split(",")])
    for model_type, width, tp in pairs:
        cfg = resolve_config(dict(model_type=model_type, net_width=width))
        model = build_model(model_type, net_type=cfg["net_type"], net_width=width,
                            input_shape=(32, 32, 3), head_dims=cfg["head_dims"],
                            stem_width=stem_filters(cfg["stem_width"], width))
        per_view = train_flops_per_view(model)
        row = dict(model_type=model_type, net_width=width, gflop_per_view=per_view / 1e9,
                   matmul_gflops=peak)
        text = f"  {model_type:15s} width {width:<5g} {per_view / 1e9:.3f} GFLOP/view"
        if tp is not None:
            for key, label in (("train_images_per_sec", "fit"), ("ceiling_images_per_sec",
                                                                   "ceiling")):
                achieved = per_view * tp[key] / 1e9
                row[f"{label}_gflops"] = achieved
                row[f"{label}_fraction_of_matmul"] = achieved / peak
                text += f"  {label} {achieved:6.1f} GFLOP/s = {achieved / peak:.2f} x matmul"
        log(text)
        rows.append(row)
    return dict(matmul_n=n, matmul_gflops=peak, rows=rows)
