"""Benchmark section ``flops``: how far the training step is from the machine's limit.

* FLOPs of one training step per view, counted from the model's layer shapes:
  every Conv2D costs H_out * W_out * kh * kw * C_in * C_out multiply-adds and
  every Dense in * out; a multiply-add is 2 FLOPs and training costs 3x the
  forward pass (forward, gradient w.r.t. the inputs, gradient w.r.t. the
  weights). BatchNorm, ReLU, pooling and the loss are left out (a few percent).
* The machine's references, timed in the same process: a large matmul (n x n by
  n x n, 2 n^3 FLOPs) and a representative 3x3 convolution, each in float32 and
  bfloat16 (bf16 runs on matrix units where the CPU has AMX; elsewhere oneDNN
  uses AVX512_BF16 dot products or emulates it).
* Achieved GFLOP/s = FLOPs per view x views/s of the throughput section (real
  ``model.fit`` and model-only ceiling), printed as a fraction of the fp32 matmul
  and, for a step that ran in bf16, of the bf16 matmul too.
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


def _median_gflops(fn, flops, repeats):
    """Median GFLOP/s of ``fn()`` (a scalar tensor) over ``repeats`` calls after a warm-up."""
    fn().numpy()
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn().numpy()
        rates.append(flops / (time.perf_counter() - t0) / 1e9)
    return float(np.median(rates))


def matmul_gflops(n=2048, repeats=5, dtype="float32"):
    """Median GFLOP/s of an n x n matmul in ``dtype`` (after a warm-up)."""
    import tensorflow as tf

    a = tf.cast(tf.random.normal((n, n)), dtype)
    b = tf.cast(tf.random.normal((n, n)), dtype)

    @tf.function
    def mm():
        return tf.reduce_sum(tf.cast(tf.matmul(a, b), tf.float32))  # a scalar: no copy-out

    return _median_gflops(mm, 2.0 * n ** 3, repeats)


#: (batch, height, width, channels): a 3x3 convolution of the first stage at width 1
#: (64 -> 64 channels at 32x32), the layer shape most of the step's FLOPs have
CONV_SHAPE = (32, 32, 32, 64)


def conv_gflops(repeats=5, dtype="float32", shape=CONV_SHAPE):
    """Median GFLOP/s of a 3x3, stride-1, channels-preserving convolution in ``dtype``."""
    import tensorflow as tf

    batch, h, w, c = shape
    x = tf.cast(tf.random.normal(shape), dtype)
    k = tf.cast(tf.random.normal((3, 3, c, c)), dtype)

    @tf.function
    def conv():
        return tf.reduce_sum(tf.cast(tf.nn.conv2d(x, k, 1, "SAME"), tf.float32))

    return _median_gflops(conv, 2.0 * batch * h * w * 9 * c * c, repeats)


def references(n, repeats):
    """The machine's references in one process: matmul and conv in fp32 and bf16."""
    return {prec: {"matmul_gflops": matmul_gflops(n, repeats, dtype),
                   "conv_gflops": conv_gflops(repeats, dtype)}
            for prec, dtype in (("fp32", "float32"), ("bf16", "bfloat16"))}


def step_fractions(per_view, views_per_sec, refs, precision):
    """Achieved GFLOP/s of a step and its fractions of the fp32 matmul and, for a bf16
    step, of the bf16 matmul too (the limit in the precision the step ran in)."""
    achieved = per_view * views_per_sec / 1e9
    out = {"gflops": achieved, "fraction_of_matmul": achieved / refs["fp32"]["matmul_gflops"]}
    if precision == "bf16":
        out["fraction_of_bf16_matmul"] = achieved / refs["bf16"]["matmul_gflops"]
    return out


def flops_section(args, log, throughput_rows=None):
    from model.registry import build_model
    from engine.config import resolve_config
    from engine.experiment import stem_filters

    n = 1024 if args.quick else 2048
    refs = references(n, repeats=3 if args.quick else 7)
    peak = refs["fp32"]["matmul_gflops"]
    for prec in ("fp32", "bf16"):
        r = refs[prec]
        log(f"flops: {prec} matmul {n}x{n}: {r['matmul_gflops']:.1f} GFLOP/s, 3x3 conv "
            f"{'x'.join(map(str, CONV_SHAPE))} -> {CONV_SHAPE[-1]}: {r['conv_gflops']:.1f} GFLOP/s")
    log(f"flops: bf16 / fp32: matmul {refs['bf16']['matmul_gflops'] / peak:.2f}x, conv "
        f"{refs['bf16']['conv_gflops'] / refs['fp32']['conv_gflops']:.2f}x")
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
        precision = "bf16" if tp is not None and tp.get("precision") == "bf16" else "fp32"
        row = dict(model_type=model_type, net_width=width, precision=precision,
                   gflop_per_view=per_view / 1e9, matmul_gflops=peak,
                   bf16_matmul_gflops=refs["bf16"]["matmul_gflops"])
        text = f"  {model_type:15s} width {width:<5g} {precision} {per_view / 1e9:.3f} GFLOP/view"
        if tp is not None:
            for key, label in (("train_images_per_sec", "fit"), ("ceiling_images_per_sec",
                                                                   "ceiling")):
                fr = step_fractions(per_view, tp[key], refs, precision)
                row[f"{label}_gflops"] = fr["gflops"]
                row[f"{label}_fraction_of_matmul"] = fr["fraction_of_matmul"]
                text += f"  {label} {fr['gflops']:6.1f} GFLOP/s = {fr['fraction_of_matmul']:.2f}"
                if "fraction_of_bf16_matmul" in fr:
                    row[f"{label}_fraction_of_bf16_matmul"] = fr["fraction_of_bf16_matmul"]
                    text += f" x fp32, {fr['fraction_of_bf16_matmul']:.2f} x bf16 matmul"
                else:
                    text += " x fp32 matmul"
        log(text)
        rows.append(row)
    return dict(matmul_n=n, matmul_gflops=peak, conv_shape=list(CONV_SHAPE), references=refs,
                rows=rows)
