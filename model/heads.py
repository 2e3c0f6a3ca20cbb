"""MLP projection head g on top of the backbone, and the ``--head_dims`` parser.

For every dim but the last: Dense (no bias) + BN + ReLU; the last is a linear
Dense, with a bias only when a classifier follows it (the transformation
classifier), none for the contrastive embedding (as the release). The paper
uses 8 hidden layers of 512 (``512x8``), plus 128 for the contrastive
embedding (``512x8,128``).
"""

import keras
from keras import layers

from model.batchnorm import FusedBatchNorm
from model.resnet import BN_EPSILON, BN_MOMENTUM
from model.spec import parse_head_dims  # noqa: F401  (re-exported)


def build_mlp_head(dims, input_dim, sync_bn=False, last_bias=False, name="head"):
    """Returns a keras.Model [B,input_dim] -> [B,dims[-1]] (identity when dims is empty).

    last_bias: whether the last Dense has a bias (true when a classifier follows).
    """
    inputs = keras.Input(shape=(input_dim,), name=f"{name}_in")
    x = inputs
    for i, d in enumerate(dims):
        last = i == len(dims) - 1
        x = layers.Dense(d, use_bias=last and last_bias, name=f"{name}_dense{i + 1}")(x)
        if not last:
            x = FusedBatchNorm(momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                               synchronized=sync_bn, name=f"{name}_bn{i + 1}")(x)
            x = layers.ReLU(name=f"{name}_relu{i + 1}")(x)
    return keras.Model(inputs, x, name=name)
