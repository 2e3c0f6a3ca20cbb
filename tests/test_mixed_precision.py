"""--mixed_precision: bf16 / fp16 compute with float32 variables tracks the fp32 loss."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from engine.config import resolve_config
from engine.experiment import build_training


def losses_for(mode, batch, init=None, steps=4):
    cfg = resolve_config(dict(model_type="contrastive", net_type="ResNet10", net_width=0.125,
                              head_dims="32,16", learning_rate=0.01, mixed_precision=mode))
    try:
        model, _ = build_training(cfg, (32, 32, 3), tf.distribute.get_strategy(), 10)
        if init is not None:
            model.set_weights(init)
        assert all(v.dtype == "float32" for v in model.trainable_variables)
        hist = model.fit(tf.data.Dataset.from_tensors(batch).repeat(), epochs=steps,
                         steps_per_epoch=1, verbose=0)
        return hist.history["proxy_loss"], model
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("mode, tol", [("bf16", 0.02), ("fp16", 0.002)])
def test_mixed_precision_loss_close_to_fp32(mode, tol):
    """Same weights: first loss within the dtype's rounding; then a few steps train alike.

    Later steps are compared loosely: a tiny-batch trajectory is chaotic, so
    rounding differences grow (fp32 runs perturbed at 1e-3 diverge as much).
    """
    rng = np.random.default_rng(0)
    batch = (rng.random((16, 32, 32, 3), dtype=np.float32),
             rng.random((16, 32, 32, 3), dtype=np.float32))
    cfg = resolve_config(dict(model_type="contrastive", net_type="ResNet10", net_width=0.125,
                              head_dims="32,16"))
    ref_model, _ = build_training(cfg, (32, 32, 3), tf.distribute.get_strategy(), 10)
    init = ref_model.get_weights()
    fp32, _ = losses_for("none", batch, init)
    mixed, model = losses_for(mode, batch, init)
    assert model.backbone.get_layer("stem_conv").compute_dtype == (
        "bfloat16" if mode == "bf16" else "float16")
    assert mixed[0] == pytest.approx(fp32[0], rel=tol)
    np.testing.assert_allclose(mixed, fp32, rtol=0.2)
    assert fp32[-1] < fp32[0] and mixed[-1] < mixed[0]  # the steps really train
