"""Which TensorFlow op corrupts the heap at width 0.125 and 64 px? A reproduction harness.

On a 2-vCPU Xeon with AMX (TF 2.21, oneDNN on), training contrastive_da at
``--net_width=0.125 --input_shape=64,64,3`` aborts within the first steps
(``malloc(): unaligned tcache chunk detected``, a malloc assertion, or SIGSEGV);
``TF_ENABLE_ONEDNN_OPTS=0`` runs fine (docs/robustness.md, "A process that dies
inside TensorFlow"). Heap corruption is reported where it is detected, not where it
happens, so each candidate runs alone, and in combination, in a process of its own:

    python -m bench.repro_onednn                   # every candidate, oneDNN on and off
    python -m bench.repro_onednn --candidates=bn8,conv_bn --onednn=on --steps=50

It prints one row per (candidate, oneDNN setting): the exit status, the signal that
killed the process (SIGABRT / SIGSEGV mean the abort reproduced), the seconds, and
malloc's message or the fault handler's first line (else the last line of stderr);
``--json=FILE`` also writes the rows. The exit status is 0 when every candidate ran, 1
when one died (so the harness can bisect in CI), 2 for bad arguments. The candidates
use the shapes of the failing run: 8 channels at 64x64 (width 0.125 of the 64-filter
stages), batch 32 x 2 views.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BATCH, SIZE, CHANNELS = 64, 64, 8  # 32 images x 2 views, 64 px, width 0.125 of 64 filters


def _tf():
    import tensorflow as tf

    tf.random.set_seed(0)
    return tf


def run_bn8(steps):
    """BatchNormalization over 8 channels at 64x64, forward and backward (training mode)."""
    tf = _tf()
    import keras

    bn = keras.layers.BatchNormalization()
    x = tf.random.normal([BATCH, SIZE, SIZE, CHANNELS])
    for _ in range(steps):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(bn(x, training=True) ** 2)
        tape.gradient(loss, [x, *bn.trainable_variables])


def run_crop_and_resize(steps):
    """tf.image.crop_and_resize of random boxes to 64x64 (the batched random crop)."""
    tf = _tf()
    images = tf.random.uniform([BATCH // 2, SIZE, SIZE, 3])
    for _ in range(steps):
        lo = tf.random.uniform([BATCH // 2, 2], 0.0, 0.5)
        boxes = tf.concat([lo, lo + tf.random.uniform([BATCH // 2, 2], 0.3, 0.5)], axis=1)
        tf.image.crop_and_resize(images, boxes, tf.range(BATCH // 2), [SIZE, SIZE])


def _conv_grads(tf, steps, strides, in_ch, out_ch, compiled, kernel=3):
    x = tf.random.normal([BATCH, SIZE, SIZE, in_ch])
    w = tf.Variable(tf.random.normal([kernel, kernel, in_ch, out_ch], stddev=0.1))

    def step():
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.nn.conv2d(x, w, strides, "SAME")
            loss = tf.reduce_sum(y ** 2)
        return tape.gradient(loss, [x, w])

    step = tf.function(step) if compiled else step
    for _ in range(steps):
        step()


def _graph_gradients(tf, net, x, steps):
    """Gradients of sum(net(x)^2) w.r.t. the weights, in a tf.function, ``steps`` times."""
    net(x)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(net(x, training=True) ** 2)
        return tape.gradient(loss, net.trainable_variables)

    for _ in range(steps):
        step()


def run_conv_backprop(steps):
    """3x3 conv input and filter gradients at 8 channels (stride 1 and 2), eager."""
    tf = _tf()
    _conv_grads(tf, steps, 1, CHANNELS, CHANNELS, compiled=False)
    _conv_grads(tf, steps, 2, CHANNELS, 2 * CHANNELS, compiled=False)


def run_conv_backprop_graph(steps):
    """The same gradients inside a tf.function (how model.fit runs them)."""
    tf = _tf()
    _conv_grads(tf, steps, 1, CHANNELS, CHANNELS, compiled=True)
    _conv_grads(tf, steps, 2, CHANNELS, 2 * CHANNELS, compiled=True)


def run_proj_1x1_s2(steps):
    """The 1x1 stride-2 projection of stage 2's first block (8 -> 16 channels, 64x64 ->
    32x32): input and filter gradients, eager and in a tf.function."""
    tf = _tf()
    _conv_grads(tf, steps, 2, CHANNELS, 2 * CHANNELS, compiled=False, kernel=1)
    _conv_grads(tf, steps, 2, CHANNELS, 2 * CHANNELS, compiled=True, kernel=1)


def _proj_shapes(tf):
    x = tf.random.normal([BATCH, SIZE, SIZE, CHANNELS])
    w = tf.random.normal([1, 1, CHANNELS, 2 * CHANNELS], stddev=0.1)
    dy = tf.random.normal([BATCH, SIZE // 2, SIZE // 2, 2 * CHANNELS])
    return x, w, dy


def run_proj_forward(steps):
    """The 1x1 stride-2 convolution (8 -> 16 channels at 64x64), forward only, eager."""
    tf = _tf()
    x, w, _ = _proj_shapes(tf)
    for _ in range(steps):
        tf.nn.conv2d(x, w, 2, "VALID")


def run_proj_backprop_input(steps):
    """Conv2DBackpropInput of that convolution alone (raw op, eager)."""
    tf = _tf()
    x, w, dy = _proj_shapes(tf)
    for _ in range(steps):
        tf.raw_ops.Conv2DBackpropInput(input_sizes=tf.shape(x), filter=w, out_backprop=dy,
                                       strides=[1, 2, 2, 1], padding="VALID")


def run_proj_backprop_filter(steps):
    """Conv2DBackpropFilter of that convolution alone (raw op, eager)."""
    tf = _tf()
    x, w, dy = _proj_shapes(tf)
    for _ in range(steps):
        tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=tf.shape(w), out_backprop=dy,
                                        strides=[1, 2, 2, 1], padding="VALID")


def run_stage2_block(steps):
    """Stage 2's first residual block alone on 8-channel 64x64 input: 3x3 stride-2 conv,
    BatchNorm, ReLU, 3x3 conv, BatchNorm, plus the 1x1 stride-2 projection and its
    BatchNorm, gradients in a tf.function."""
    tf = _tf()
    import keras

    layers = keras.layers
    inputs = keras.Input((SIZE, SIZE, CHANNELS))
    y = layers.Conv2D(2 * CHANNELS, 3, strides=2, padding="same", use_bias=False)(inputs)
    y = layers.ReLU()(layers.BatchNormalization()(y))
    y = layers.BatchNormalization()(
        layers.Conv2D(2 * CHANNELS, 3, padding="same", use_bias=False)(y))
    short = layers.BatchNormalization()(
        layers.Conv2D(2 * CHANNELS, 1, strides=2, use_bias=False)(inputs))
    net = keras.Model(inputs, layers.ReLU()(layers.Add()([y, short])))
    x = tf.random.normal([BATCH, SIZE, SIZE, CHANNELS])
    _graph_gradients(tf, net, x, steps)


def run_conv_bn(steps):
    """conv -> BatchNorm(8) -> ReLU -> conv, gradients in a tf.function: the block's ops
    together (oneDNN fuses some of them)."""
    tf = _tf()
    import keras

    block = keras.Sequential([
        keras.layers.Conv2D(CHANNELS, 3, padding="same", use_bias=False),
        keras.layers.BatchNormalization(), keras.layers.ReLU(),
        keras.layers.Conv2D(CHANNELS, 3, padding="same", use_bias=False),
        keras.layers.BatchNormalization()])
    x = tf.random.normal([BATCH, SIZE, SIZE, CHANNELS])
    _graph_gradients(tf, block, x, steps)


def run_stem_stage1(steps):
    """The trunk's first layers at 64 px: the 3x3 stem (64 filters), BatchNorm, ReLU, then
    the first residual block going from 64 to 8 channels (its 1x1 projection and 3x3
    convs), gradients in a tf.function."""
    tf = _tf()
    import keras

    layers = keras.layers
    inputs = keras.Input((SIZE, SIZE, 3))
    x = layers.ReLU()(layers.BatchNormalization()(
        layers.Conv2D(64, 3, padding="same", use_bias=False)(inputs)))
    y = layers.Conv2D(CHANNELS, 3, padding="same", use_bias=False)(x)
    y = layers.ReLU()(layers.BatchNormalization()(y))
    y = layers.BatchNormalization()(layers.Conv2D(CHANNELS, 3, padding="same", use_bias=False)(y))
    short = layers.BatchNormalization()(layers.Conv2D(CHANNELS, 1, use_bias=False)(x))
    net = keras.Model(inputs, layers.ReLU()(layers.Add()([y, short])))
    x = tf.random.uniform([BATCH, SIZE, SIZE, 3])
    _graph_gradients(tf, net, x, steps)


def run_augment(steps):
    """The project's training augmentation at 64 px (crop_and_resize, jitter, blur)."""
    tf = _tf()
    from data.augment import AugmentOptions, build_augment_fn

    fn = build_augment_fn("cnr0.5+hflip+jitter_b0.4_c0.4_s0.4_h0.1+gray0.2+blur0.5",
                          num_views=2, options=AugmentOptions(train_blur=True,
                                                               crop_sampling="continuous"))
    images = tf.cast(tf.random.uniform([BATCH // 2, SIZE, SIZE, 3], 0, 255), tf.uint8)
    for _ in range(steps):
        fn(images)


def _train_step(steps, width=0.125, size=SIZE):
    tf = _tf()
    import keras

    from model.registry import build_model

    model = build_model("contrastive_da", net_type="ResNet18", net_width=width,
                        input_shape=(size, size, 3), head_dims="512x8,128")
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    views = tf.random.uniform([2, BATCH // 2, size, size, 3])
    data = tf.data.Dataset.from_tensors(tuple(views[i] for i in range(2))).repeat()
    model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0)


def run_train_step(steps):
    """The project's contrastive_da model at width 0.125, 64 px: model.fit on random
    images (no input pipeline)."""
    _train_step(steps)


def run_train_step_32px(steps):
    """Control: the same train step at 32 px (ran fine on the Xeon)."""
    _train_step(steps, size=32)


def run_train_step_w025(steps):
    """Control: the same train step at width 0.25, 64 px (ran fine on the Xeon)."""
    _train_step(steps, width=0.25)


def _trunk_step(steps, last_stage=4):
    """The project's ResNet-18 trunk at width 0.125, 64 px, cut after ``last_stage``
    (1..4), sum-of-squares loss, SGD, in a tf.function."""
    tf = _tf()
    import keras

    from model.resnet import build_resnet

    net = build_resnet("ResNet18", width=0.125, input_shape=(SIZE, SIZE, 3))
    if last_stage < 4:
        net = keras.Model(net.input, net.get_layer(f"stage{last_stage}_block2_out").output)
    opt = keras.optimizers.SGD(0.01, momentum=0.9)
    x = tf.random.uniform([BATCH, SIZE, SIZE, 3])

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(net(x, training=True) ** 2)
        opt.apply_gradients(zip(tape.gradient(loss, net.trainable_variables),
                                net.trainable_variables))

    for _ in range(steps):
        step()


def run_backbone_step(steps):
    """The whole trunk (pooled features): is the head or the contrastive loss needed?"""
    _trunk_step(steps)


def run_trunk_to_stage1(steps):
    """The trunk up to stage 1 (8 channels at 64x64)."""
    _trunk_step(steps, 1)


def run_trunk_to_stage2(steps):
    """The trunk up to stage 2 (16 channels at 32x32)."""
    _trunk_step(steps, 2)


def run_trunk_to_stage3(steps):
    """The trunk up to stage 3 (32 channels at 16x16)."""
    _trunk_step(steps, 3)


def run_entry_point(steps):
    """The issue's command line through train_and_eval_loop.py (data pipeline included)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        code = subprocess.run([sys.executable, str(ROOT / "train_and_eval_loop.py"),
                               f"--model_dir={tmp}/run", "--dataset=digitsood",
                               "--input_shape=64,64,3", "--model_type=contrastive_da",
                               "--net_width=0.125", "--num_epoch=1", f"--num_batch={steps}",
                               "--detectors=kde", "--export=false"], cwd=ROOT).returncode
    if code:  # the child's signal becomes ours, so the harness reports it the same way
        if code < 0:
            os.kill(os.getpid(), -code)
        sys.exit(code)


CANDIDATES = {
    "bn8": run_bn8,
    "crop_and_resize": run_crop_and_resize,
    "conv_backprop": run_conv_backprop,
    "conv_backprop_graph": run_conv_backprop_graph,
    "proj_1x1_s2": run_proj_1x1_s2,
    "proj_forward": run_proj_forward,
    "proj_backprop_input": run_proj_backprop_input,
    "proj_backprop_filter": run_proj_backprop_filter,
    "stage2_block": run_stage2_block,
    "conv_bn": run_conv_bn,
    "stem_stage1": run_stem_stage1,
    "augment": run_augment,
    "trunk_to_stage1": run_trunk_to_stage1,
    "trunk_to_stage2": run_trunk_to_stage2,
    "trunk_to_stage3": run_trunk_to_stage3,
    "backbone_step": run_backbone_step,
    "train_step": run_train_step,
    "train_step_32px": run_train_step_32px,
    "train_step_w025": run_train_step_w025,
    "entry_point": run_entry_point,
}


class Parser(argparse.ArgumentParser):
    """Bad arguments: one ``error:`` line and exit 2, no usage block."""

    def error(self, message):
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def parse_args(argv):
    parser = Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", default=",".join(CANDIDATES),
                        help=f"comma-separated, from {', '.join(CANDIDATES)}")
    parser.add_argument("--onednn", choices=("on", "off", "both"), default="both")
    parser.add_argument("--steps", type=int, default=20, help="iterations per candidate")
    parser.add_argument("--repeats", type=int, default=1, help="processes per candidate")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per process")
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.candidates.split(",") if n.strip()]
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown or not names:
        parser.error(f"--candidates={args.candidates}: unknown {', '.join(unknown) or 'none'}; "
                     f"choose from {', '.join(CANDIDATES)}")
    if args.steps < 1 or args.repeats < 1 or args.timeout <= 0:
        parser.error("--steps, --repeats and --timeout must be positive")
    if args.json and (Path(args.json).is_dir() or not Path(args.json).parent.is_dir()):
        parser.error(f"--json={args.json} is not a file in an existing directory")
    args.names = names
    return args


def run_child(name, steps, onednn, timeout):
    """One candidate in a fresh interpreter; its row."""
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="1" if onednn == "on" else "0",
               TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))
    start = time.time()
    try:
        proc = subprocess.run([sys.executable, "-m", "bench.repro_onednn", f"--child={name}",
                               f"--steps={steps}"],
                              capture_output=True, text=True, env=env, timeout=timeout)
        code, err = proc.returncode, proc.stderr
    except subprocess.TimeoutExpired:
        code, err = None, "timed out"
    lines = [line for line in (err or "").splitlines() if line.strip()] or [""]
    # what killed it (malloc's message, the fault handler's first line), else the last line
    fatal = [line for line in lines if "malloc" in line or line.startswith("Fatal Python")]
    tail = (fatal or lines)[-1][:160]
    return {"candidate": name, "onednn": onednn, "exit": code,
            "signal": signal.Signals(-code).name if code is not None and code < 0 else None,
            "seconds": round(time.time() - start, 1), "last_stderr": tail}


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.child:
        CANDIDATES[args.child](args.steps)
        return 0
    settings = ("on", "off") if args.onednn == "both" else (args.onednn,)
    rows = []
    print(f"{'candidate':22s} {'oneDNN':6s} {'exit':>5s} {'signal':8s} {'s':>6s}  last stderr line")
    for name in args.names:
        for onednn in settings:
            for _ in range(args.repeats):
                row = run_child(name, args.steps, onednn, args.timeout)
                rows.append(row)
                print(f"{name:22s} {onednn:6s} {str(row['exit']):>5s} {row['signal'] or '-':8s} "
                      f"{row['seconds']:6.1f}  {row['last_stderr']}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0 if all(r["exit"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
