"""Inference-time BatchNorm folding: conv -> BN pairs become one conv with a bias.

At inference a BatchNormalization is a per-channel affine map, so it can be
merged into the convolution in front of it: W' = W * s and b' = (b - mean) * s + beta
with s = gamma / sqrt(var + eps). The folded network computes the same function
(up to float rounding) with one op fewer per conv, and lets TensorFlow's graph
optimiser fuse Conv2D + BiasAdd + ReLU into one CPU kernel. Used for the exported
scoring graph (deploy/export.py), where speed per image matters; training keeps
the real BatchNorm layers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import keras


def _passthrough_layer(name):
    """A layer that returns its input; it takes the call arguments a BN node recorded."""
    import keras

    class FoldedBatchNorm(keras.layers.Layer):
        def call(self, inputs, training=None, mask=None):
            return inputs

    return FoldedBatchNorm(name=name)


def _conv_feeding(bn):
    """The Conv2D whose output only this BatchNormalization reads, else None."""
    import keras

    if len(bn._inbound_nodes) != 1:
        return None
    parents = bn._inbound_nodes[0].parent_nodes
    if len(parents) != 1:
        return None
    conv = parents[0].operation
    if not isinstance(conv, keras.layers.Conv2D) or len(conv._inbound_nodes) != 1:
        return None
    if len(conv._outbound_nodes) != 1 or conv.activation is not keras.activations.linear:
        return None
    return conv


def foldable_pairs(model: keras.Model) -> dict:
    """{conv name: bn layer} for every conv -> BN pair of a functional model."""
    import keras

    pairs = {}
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization):
            continue
        axis = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
        if isinstance(layer, keras.layers.BatchNormalization) and list(axis) in ([-1], [3]):
            conv = _conv_feeding(layer)
            if conv is not None:
                pairs[conv.name] = layer
    return pairs


def folded_weights(conv: keras.layers.Conv2D,
                   bn: keras.layers.BatchNormalization) -> tuple[np.ndarray, np.ndarray]:
    """(kernel, bias) of the conv that equals conv followed by bn (inference mode)."""
    kernel = np.asarray(conv.kernel, dtype=np.float64)
    out = kernel.shape[-1]
    bias = np.asarray(conv.bias, dtype=np.float64) if conv.use_bias else np.zeros(out)
    gamma = np.asarray(bn.gamma, dtype=np.float64) if bn.scale else np.ones(out)
    beta = np.asarray(bn.beta, dtype=np.float64) if bn.center else np.zeros(out)
    mean = np.asarray(bn.moving_mean, dtype=np.float64)
    var = np.asarray(bn.moving_variance, dtype=np.float64)
    scale = gamma / np.sqrt(var + bn.epsilon)
    return (kernel * scale).astype(np.float32), ((bias - mean) * scale + beta).astype(np.float32)


def fold_batchnorm(model: keras.Model) -> keras.Model:
    """A copy of a functional Keras model with every conv -> BN pair folded into one conv.

    Layers keep their names (a folded BN becomes a pass-through layer of the same name), so
    ``get_layer`` lookups on the copy work as on the original.
    """
    import keras

    pairs = foldable_pairs(model)
    folded_bns = {bn.name for bn in pairs.values()}

    def clone(layer):
        config = layer.get_config()
        if layer.name in pairs:
            config["use_bias"] = True
            return layer.__class__.from_config(config)
        if layer.name in folded_bns:
            return _passthrough_layer(layer.name)
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:  # layers without weights (the input among them) need nothing
        if layer.name in pairs:
            copy.get_layer(layer.name).set_weights(
                list(folded_weights(layer, pairs[layer.name])))
        elif layer.name not in folded_bns and layer.weights:
            copy.get_layer(layer.name).set_weights(layer.get_weights())
    return copy
