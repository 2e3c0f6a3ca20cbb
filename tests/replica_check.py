"""Subprocess body for test_distributed.py: one training step on 1 vs 2 replicas.

Runs in its own process because the CPU must be split into 2 logical devices
before TensorFlow initialises. Runs in float64 so that the comparison is exact
up to rounding (in float32 the synchronised BatchNorm's E[x^2]-E[x]^2 moments
alone move weights by ~1e-4). Prints a JSON line with the losses and the
largest weight difference after the step.
"""

import json
import sys

import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])

import keras  # noqa: E402
keras.config.set_floatx("float64")

from model.registry import build_model  # noqa: E402


def one_step(model_type, devices, init_weights, batch):
    strategy = tf.distribute.MirroredStrategy(devices)
    with strategy.scope():
        model = build_model(model_type, net_type="ResNet10", net_width=0.125, head_dims="32,16",
                            sync_bn=len(devices) > 1)
        model.set_weights(init_weights)
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    ds = tf.data.Dataset.from_tensors(batch)
    hist = model.fit(ds, epochs=1, verbose=0)
    return float(hist.history["loss"][0]), [np.array(w) for w in model.get_weights()]


def main(model_type):
    rng = np.random.default_rng(0)
    with tf.device("/cpu:0"):
        ref = build_model(model_type, net_type="ResNet10", net_width=0.125, head_dims="32,16")
    init = ref.get_weights()
    if model_type == "rotation":  # four views per image
        batch = tuple(rng.random((16, 32, 32, 3), dtype=np.float64) for _ in range(4))
    else:
        batch = (rng.random((16, 32, 32, 3), dtype=np.float64),
                 rng.random((16, 32, 32, 3), dtype=np.float64))
    loss1, w1 = one_step(model_type, ["/cpu:0"], init, batch)
    loss2, w2 = one_step(model_type, ["/cpu:0", "/cpu:1"], init, batch)
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(w1, w2))
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(w1, init))
    print(json.dumps({"loss1": loss1, "loss2": loss2, "max_weight_diff": diff,
                      "max_update": moved}))


if __name__ == "__main__":
    main(sys.argv[1])
