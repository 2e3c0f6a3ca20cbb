"""The convolutional trunk of a proxy-task model: the backbone up to global pooling.

Stage 2 scores patch grids from it (detect/localization.py), and the export
and the explanations differentiate through it (deploy/).
"""

import keras
import numpy as np

from util.errors import ConfigError


def conv_trunk(model):
    """keras.Model: images -> last conv stage feature map (input of the 'pool' layer)."""
    backbone = model.backbone
    return keras.Model(backbone.inputs[0], backbone.get_layer("pool").input,
                       name="conv_trunk")


def shape_free_trunk(model):
    """The backbone's convolutional part on inputs of any size (the same layers and weights)."""
    return any_size(conv_trunk(model))


def any_size(trunk):
    """A functional conv model on inputs of any height and width, sharing its layers."""
    channels = trunk.inputs[0].shape[-1]
    shared = keras.models.clone_model(trunk, input_tensors=keras.Input((None, None, channels)),
                                      clone_function=lambda layer: layer)
    return keras.Model(shared.inputs[0], shared.outputs[0], name="shape_free_trunk")


def network_stride(trunk, patch_size):
    """Total stride S of a conv trunk: patch_size / its output side; ConfigError unless exact."""
    probe = trunk(np.zeros((1, patch_size, patch_size, trunk.inputs[0].shape[-1]), np.float32),
                  training=False)
    side = int(probe.shape[1])
    if side <= 0 or patch_size % side:
        raise ConfigError(f"--patch_features=conv: {patch_size} px patches give a {side}x{side} "
                          "trunk output, not a whole number of cells; use --patch_features=crop")
    return patch_size // side
