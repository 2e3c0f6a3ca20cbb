"""model/batchnorm.py: the fused training pass computes what Keras's BatchNormalization
computes (outputs, gradients, moving statistics), and the network uses it."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from model.batchnorm import FusedBatchNorm


def _train_once(layer, x, weights):
    layer.build(x.shape)
    layer.gamma.assign(weights[0])
    layer.beta.assign(weights[1])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
        loss = tf.reduce_sum(y * weights[2])
    grads = tape.gradient(loss, [x, layer.gamma, layer.beta])
    return [y, *grads, layer.moving_mean, layer.moving_variance]


@pytest.mark.parametrize("shape", [(8, 6, 6, 5), (16, 7)])
def test_fused_training_pass_matches_keras(shape):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(2.0, 3.0, shape).astype(np.float32))
    weights = [rng.normal(size=shape[-1]).astype(np.float32),
               rng.normal(size=shape[-1]).astype(np.float32),
               rng.normal(size=shape).astype(np.float32)]
    want = _train_once(keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5), x, weights)
    layer = FusedBatchNorm(momentum=0.9, epsilon=1e-5)
    assert layer._fusable(x, True, None)  # the fused path is the one compared
    got = _train_once(layer, x, weights)
    for name, w, g in zip(["y", "dx", "dgamma", "dbeta", "moving_mean", "moving_var"], want, got):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5, err_msg=name)


def test_inference_and_synchronized_use_keras_path():
    layer = FusedBatchNorm(synchronized=True)
    x = tf.zeros((2, 4, 4, 3))
    assert not layer._fusable(x, True, None)
    assert not FusedBatchNorm()._fusable(x, False, None)


def test_every_batchnorm_of_the_network_is_fused():
    from model.registry import build_model

    model = build_model("contrastive", net_type="ResNet10", net_width=0.125, head_dims="32,16")
    bns = [l for l in model.backbone.layers + model.head.layers
           if isinstance(l, keras.layers.BatchNormalization)]
    assert bns and all(isinstance(l, FusedBatchNorm) for l in bns)
