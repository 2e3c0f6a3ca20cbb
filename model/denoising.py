"""Denoising autoencoder (the paper's "denoising" baseline representation).

Training: the augmented image x (pixels in [0, 1]) gets Gaussian noise,
x~ = x + noise_std * N(0, 1); the encoder is the ResNet backbone f followed by
the MLP head g (the code is z = g(f(x~)); with an empty ``--head_dims`` the
code is f(x~) itself); a decoder that mirrors the encoder maps z back to an
image; the loss is the mean squared error to the clean x.

Decoder, mirroring the CIFAR ResNet: Dense z -> (H/r, W/r, C_last) with r the
encoder's total stride (8 for inputs up to 64 px, 32 above), BN + ReLU, then
one stage per encoder down-sampling step: a stride-2 3x3 transposed conv with
the encoder's stage widths in reverse order (BN + ReLU), and a final linear
3x3 conv to 3 channels.

The representation for the detectors is the usual pool = f(x) (and embed =
g(f(x)) when a head exists), extracted from clean test images.
``acc`` in the training logs is the fraction of pixel values reconstructed
within 0.1 of the clean image.
"""

import keras
import tensorflow as tf
from keras import layers

from model.base import OneClassModel
from model.resnet import BN_EPSILON, BN_MOMENTUM, SMALL_STEM_MAX_SIZE, STAGE_WIDTHS, conv_init

PIXEL_TOLERANCE = 0.1


def build_decoder(code_dim, input_shape, width=1.0, stem_width=64, sync_bn=False,
                  name="decoder"):
    """keras.Model [B, code_dim] -> [B, H, W, 3], mirroring build_resnet's strides."""
    h, w, c = (int(d) for d in input_shape)
    stride = 8 if h <= SMALL_STEM_MAX_SIZE else 32
    widths = [max(1, int(round(b * width))) for b in STAGE_WIDTHS]
    # encoder downsamplings, deepest first: stages 4, 3, 2 (x2 each), then the big stem (x4)
    ups = [widths[2], widths[1], widths[0]] + ([stem_width, stem_width] if stride == 32 else [])

    def bn(x, n):
        return layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                                         synchronized=sync_bn, name=f"{name}_bn{n}")(x)

    inputs = keras.Input(shape=(code_dim,), name=f"{name}_in")
    x = layers.Dense((h // stride) * (w // stride) * widths[3], use_bias=False,
                     name=f"{name}_dense")(inputs)
    x = layers.Reshape((h // stride, w // stride, widths[3]), name=f"{name}_reshape")(x)
    x = layers.ReLU(name=f"{name}_relu0")(bn(x, 0))
    for i, filters in enumerate(ups, start=1):
        x = layers.Conv2DTranspose(filters, 3, strides=2, padding="same", use_bias=False,
                                   kernel_initializer=conv_init(), name=f"{name}_up{i}")(x)
        x = layers.ReLU(name=f"{name}_relu{i}")(bn(x, i))
    out = layers.Conv2D(c, 3, padding="same", name=f"{name}_out")(x)
    return keras.Model(inputs, out, name=name)


class DenoisingModel(OneClassModel):
    """Keras model whose train_step takes batches of augmented images."""

    views_per_image = 1

    def __init__(self, backbone, head, noise_std=0.1, sync_bn=False, **kwargs):
        super().__init__(backbone, head, **kwargs)
        self.noise_std = float(noise_std)
        shape = tuple(backbone.input_shape[1:])
        stem = backbone.get_layer("stem_conv").filters
        width = backbone.output_shape[-1] / STAGE_WIDTHS[-1]
        self.decoder = build_decoder(head.output_shape[-1], shape, width=width, stem_width=stem,
                                     sync_bn=sync_bn)

    def reconstruct(self, images, training=False):
        _, code = self(images, training=training)
        return tf.cast(self.decoder(code, training=training), tf.float32)

    def train_step(self, data):
        images = data[0] if isinstance(data, (tuple, list)) else data
        clean = tf.cast(images, tf.float32)
        noisy = clean + self.noise_std * tf.random.normal(tf.shape(clean))
        with tf.GradientTape() as tape:
            err = self.reconstruct(noisy, training=True) - clean
            proxy = tf.reduce_mean(tf.square(err))
            acc = tf.reduce_mean(tf.cast(tf.abs(err) < PIXEL_TOLERANCE, tf.float32))
            total, l2, scaled = self.total_loss(proxy)
        return self.step_and_track(tape, scaled, total, proxy, l2, acc)
