"""Subprocess body for test_multiworker.py: a few contrastive steps, one worker of a job.

Without TF_CONFIG it is the single-process reference on the same global batch.
Runs in float64, as tests/replica_check.py does, so the comparison is tight.
The model is built with the project's registry and trained with model.fit under
the strategy that ``--strategy`` selects (engine/distribute.py). Prints a JSON
line with the per-step losses and a checksum of the final weights, and writes
the weights to argv[1] (npz).
"""

import json
import os
import sys

import numpy as np
import tensorflow as tf

import keras  # noqa: E402

keras.config.set_floatx("float64")  # exact up to rounding (float32 sync-BN moments drift ~1e-4)

from model.registry import build_model  # noqa: E402
from engine.distribute import make_strategy  # noqa: E402

STEPS, GLOBAL_BATCH = 3, 16


def main(out_path):
    strategy = make_strategy("multi_worker" if os.environ.get("TF_CONFIG") else "mirrored")
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    batches = [(rng.random((GLOBAL_BATCH, 32, 32, 3), dtype=np.float64),
                rng.random((GLOBAL_BATCH, 32, 32, 3), dtype=np.float64)) for _ in range(STEPS)]
    with strategy.scope():
        model = build_model("contrastive", net_type="ResNet10", net_width=0.125,
                            head_dims="32,16", sync_bn=strategy.num_replicas_in_sync > 1)
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
        model.optimizer.build(model.trainable_variables)  # as experiment.build_training does
    ds = tf.data.Dataset.from_tensor_slices(
        (np.stack([b[0] for b in batches]), np.stack([b[1] for b in batches]))).unbatch()
    ds = ds.batch(GLOBAL_BATCH)
    losses = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            losses.append(float(logs["loss"]))

    model.fit(ds, epochs=1, steps_per_epoch=STEPS, verbose=0, callbacks=[Record()])
    weights = [np.asarray(w) for w in model.get_weights()]
    np.savez(out_path, *weights)
    print(json.dumps({"losses": losses, "replicas": strategy.num_replicas_in_sync,
                      "checksum": float(sum(np.sum(np.abs(w)) for w in weights))}))


if __name__ == "__main__":
    main(sys.argv[1])
