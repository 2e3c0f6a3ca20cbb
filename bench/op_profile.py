"""Benchmark section ``profile``: where the training step's time goes, per op.

The model-only step (one augmented batch kept in memory, as the throughput
section's ceiling) runs a few times under the TensorFlow profiler; the trace's
op events on the host are summed per op and per group: convolution and matmul
(the arithmetic the FLOP count covers), BatchNorm, the optimizer's variable
updates, the L2 penalty and gradient sums at the top of the graph, ReLU, casts,
and everything else by op type. Durations are summed over the compute threads,
so the shares are of op time, not of wall time.
"""

import collections
import re
import tempfile
from pathlib import Path

ARITHMETIC = re.compile(r"Conv2D|MatMul")
TOP_LEVEL_SUM = re.compile(r"^[^/]+/(AddN|Square|Sum)(_\d+)?$")


def op_group(name):
    """The group of one profiled op event ``<scope>/<op name>:<op type>``."""
    scope, _, op_type = name.rpartition(":")
    parts = scope.split("/")
    if ARITHMETIC.search(op_type):
        return "conv/matmul"
    if "_bn" in scope or "batch_normalization" in scope:
        return "batchnorm"
    if (len(parts) > 1 and parts[1] == "sgd") or "Variable" in op_type:
        return "optimizer/variables"
    if TOP_LEVEL_SUM.match(scope):
        return "L2 penalty, gradient sums"
    if op_type in ("Relu", "ReluGrad"):
        return "relu"
    if op_type == "Cast":
        return "cast"
    return "other: " + op_type


def op_times(logdir):
    """{op event name: seconds} summed over the host threads of the profile in ``logdir``."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    path = sorted(Path(logdir).rglob("*.xplane.pb"))[-1]
    space = xplane_pb2.XSpace()
    space.ParseFromString(path.read_bytes())
    totals = collections.Counter()
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        for line in plane.lines:
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                # ops are "scope/name:Type"; runtime events are "Class::Method"
                if ":" in name and "::" not in name and not name.startswith("Eager"):
                    totals[name] += event.duration_ps * 1e-12
    return totals


def summarize(totals, steps, top=12):
    """Per-step seconds per group and the ``top`` ops, each with its share of op time."""
    total = sum(totals.values()) or 1.0
    groups = collections.Counter()
    for name, seconds in totals.items():
        groups[op_group(name)] += seconds
    return dict(
        op_seconds_per_step=total / steps,
        groups=[dict(group=g, seconds_per_step=s / steps, share=s / total)
                for g, s in groups.most_common()],
        top_ops=[dict(op=n, group=op_group(n), seconds_per_step=s / steps, share=s / total)
                 for n, s in sorted(totals.items(), key=lambda kv: -kv[1])[:top]])


def profile_step(model, batch, steps):
    """Op times of ``steps`` model-only steps of ``model`` on the in-memory ``batch``."""
    import tensorflow as tf

    mem = tf.data.Dataset.from_tensors(batch).repeat()
    model.fit(mem, epochs=1, steps_per_epoch=2, verbose=0)  # traced and warmed up
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        try:
            model.fit(mem, epochs=1, steps_per_epoch=steps, verbose=0)
        finally:
            tf.profiler.experimental.stop()
        return summarize(op_times(logdir), steps)


def profile_section(args, log, images):
    """One profile per width x model type x precision of the benchmark's arguments;
    ``images``: uint8 training images (the throughput section's)."""
    import keras

    from data.distaug import apply_distribution_augmentation
    from data.pipeline import train_dataset
    from engine.config import resolve_config
    from engine.distribute import make_strategy
    from engine.experiment import augment_options, build_training, resolve_precision
    from engine.precision import LABELS
    from model.registry import model_class
    strategy = make_strategy("mirrored")
    steps = max(2, min(args.steps, 5))
    rows = []
    for width in [float(w) for w in args.widths.split(",")]:
        for model_type in args.model_types.split(","):
            for requested in (args.step_precisions or args.mixed_precision).split(","):
                precision = resolve_precision(requested).precision
                cfg = resolve_config(dict(model_type=model_type, net_width=width,
                                          mixed_precision=precision, num_epoch=10**6))
                model, _ = build_training(cfg, (32, 32, 3), strategy, steps_per_epoch=1000)
                ds, _ = train_dataset(apply_distribution_augmentation(images, cfg["distaug_type"]),
                                      cfg["batch_size"], cfg["aug_list"],
                                      num_views=model_class(model_type).views_per_image,
                                      options=augment_options(cfg))
                result = profile_step(model, next(iter(ds)), steps)
                row = dict(model_type=model_type, net_width=width,
                           precision=LABELS[precision],
                           steps=steps, **result)
                rows.append(row)
                log(f"profile: {model_type} width {width:g} {row['precision']}: "
                    f"{result['op_seconds_per_step']:.3f} s of op time per step")
                for g in result["groups"][:8]:
                    log(f"    {100 * g['share']:5.1f}%  {g['group']}")
                for o in result["top_ops"][:8]:
                    log(f"    top {100 * o['share']:5.1f}%  {o['op'][-90:]}")
                del model
                keras.backend.clear_session()
    keras.mixed_precision.set_global_policy("float32")
    return rows
