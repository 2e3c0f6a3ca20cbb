"""CIFAR-style ResNet backbones (ResNet-10/18/34/50) with a width multiplier.

Shape follows the paper's public release: stage widths 64/128/256/512 scaled by
``width``; the stem keeps 64 filters at every width unless ``stem_width`` is
given (so width-0.25 numbers compare like for like with the release); 3x3
stride-1 stem without max-pool for inputs up to 64 px, 7x7 stride-2 stem with
a 3x3 max-pool above that. BatchNorm momentum 0.9, eps 1e-5, trained through
one fused op (model/batchnorm.py); convs have no
bias and use variance scaling (scale 2, fan_out). Like the release, strided
convolutions (and the max-pool) pad explicitly by k//2 on every side and run
VALID: TF's padding="same" pads 0 before and 1 after at stride 2, which would
centre the strided 3x3 convs one pixel off their 1x1 shortcut. (At stride 1,
"same" is exactly that symmetric padding, so it is used there.) The output is
the globally average-pooled feature f(x).
"""

import keras
from keras import layers

from model.batchnorm import FusedBatchNorm
from model.spec import (RESNET_SPECS, SMALL_STEM_MAX_SIZE, STAGE_WIDTHS,  # noqa: F401
                        check_input_shape)
from util.errors import ConfigError

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def conv_init():
    return keras.initializers.VarianceScaling(scale=2.0, mode="fan_out")


@keras.saving.register_keras_serializable(package="droc")
class StridedPointwiseConv2D(layers.Conv2D):
    """A strided 1x1 convolution computed as a stride-1 1x1 convolution of every
    stride-th pixel: the same function and gradients, but TF 2.21's oneDNN kernel for the
    filter gradient of a strided 1x1 convolution (Conv2DBackpropFilter) corrupts the heap
    at some shapes (8 -> 16 channels at 64x64; docs/robustness.md, section 9)."""

    def convolution_op(self, inputs, kernel):
        sy, sx = self.strides
        every = (inputs[:, ::sy, ::sx, :] if self.data_format == "channels_last"
                 else inputs[:, :, ::sy, ::sx])
        return keras.ops.conv(every, kernel, strides=1, padding="valid",
                              dilation_rate=self.dilation_rate, data_format=self.data_format)


@keras.saving.register_keras_serializable(package="droc")
class PerImageStandardization(layers.Layer):
    """Each image shifted and scaled to mean 0.5 and standard deviation 0.25 over all its
    pixels and channels (``--image_norm=standardize``).

    Parts photographed under other light (a darker lamp, another exposure) then reach
    the network with the same overall brightness and contrast as the training parts, so
    the features, and the detectors' distances, react to local differences rather than
    to the light. The price: an image that a defect covers largely gets its normal
    parts shifted too. A constant image (standard deviation 0) is only shifted."""

    def call(self, images):
        images = keras.ops.cast(images, "float32")
        mean = keras.ops.mean(images, axis=(1, 2, 3), keepdims=True)
        std = keras.ops.std(images, axis=(1, 2, 3), keepdims=True)
        return (images - mean) / keras.ops.maximum(std, 1e-3) * 0.25 + 0.5


IMAGE_NORMS = ("none", "standardize")


def _conv(filters, kernel, stride, name):
    """Conv layer (as a callable on a tensor) with the release's symmetric k//2 padding."""
    conv_class = StridedPointwiseConv2D if kernel == 1 and stride > 1 else layers.Conv2D
    conv = conv_class(filters, kernel, strides=stride,
                         padding="same" if stride == 1 else "valid", use_bias=False,
                         kernel_initializer=conv_init(), name=name)
    if stride == 1 or kernel // 2 == 0:
        return conv
    pad = layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")
    return lambda x: conv(pad(x))


def _bn(name, sync):
    return FusedBatchNorm(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, synchronized=sync,
                          name=name)


def _merge(x, y, filters, stride, name, sync):
    """Residual sum (1x1 projection + BN when the shape changes), then ReLU."""
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _bn(f"{name}_proj_bn", sync)(_conv(filters, 1, stride, f"{name}_proj")(x))
    return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([y, shortcut]))


def _basic_block(x, filters, stride, name, sync):
    y = _conv(filters, 3, stride, f"{name}_conv1")(x)
    y = layers.ReLU(name=f"{name}_relu1")(_bn(f"{name}_bn1", sync)(y))
    y = _conv(filters, 3, 1, f"{name}_conv2")(y)
    y = _bn(f"{name}_bn2", sync)(y)
    return _merge(x, y, filters, stride, name, sync)


def _bottleneck_block(x, filters, stride, name, sync, expansion=4):
    out = filters * expansion
    y = _conv(filters, 1, 1, f"{name}_conv1")(x)
    y = layers.ReLU(name=f"{name}_relu1")(_bn(f"{name}_bn1", sync)(y))
    y = _conv(filters, 3, stride, f"{name}_conv2")(y)
    y = layers.ReLU(name=f"{name}_relu2")(_bn(f"{name}_bn2", sync)(y))
    y = _conv(out, 1, 1, f"{name}_conv3")(y)
    y = _bn(f"{name}_bn3", sync)(y)
    return _merge(x, y, out, stride, name, sync)


def build_resnet(net_type="ResNet18", width=1.0, input_shape=(32, 32, 3), stem_width=None,
                 sync_bn=False, name=None, image_norm="none"):
    """Returns a functional keras.Model mapping [B,H,W,3] images to pooled features f(x);
    ``image_norm="standardize"`` puts PerImageStandardization in front of the stem."""
    if net_type not in RESNET_SPECS:
        raise ConfigError(f"--net_type={net_type} is unknown; choose one of "
                          f"{', '.join(RESNET_SPECS)}")
    if width <= 0:
        raise ConfigError(f"--net_width={width} must be > 0")
    input_shape = check_input_shape(input_shape)
    block_type, counts = RESNET_SPECS[net_type]
    block = _basic_block if block_type == "basic" else _bottleneck_block
    stem = 64 if stem_width is None else int(stem_width)

    if image_norm not in IMAGE_NORMS:
        raise ConfigError(f"--image_norm={image_norm} is unknown; choose one of "
                          f"{', '.join(IMAGE_NORMS)}")
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    if image_norm == "standardize":
        x = PerImageStandardization(name="image_norm")(x)
    if input_shape[0] <= SMALL_STEM_MAX_SIZE:
        x = _conv(stem, 3, 1, "stem_conv")(x)
        x = layers.ReLU(name="stem_relu")(_bn("stem_bn", sync_bn)(x))
    else:
        x = _conv(stem, 7, 2, "stem_conv")(x)
        x = layers.ReLU(name="stem_relu")(_bn("stem_bn", sync_bn)(x))
        # inputs are >= 0 after the ReLU, so zero padding acts like -inf padding
        x = layers.ZeroPadding2D(1, name="stem_pool_pad")(x)
        x = layers.MaxPooling2D(3, strides=2, padding="valid", name="stem_pool")(x)
    for stage, (base, count) in enumerate(zip(STAGE_WIDTHS, counts)):
        filters = max(1, int(round(base * width)))
        for i in range(count):
            stride = 2 if (stage > 0 and i == 0) else 1
            x = block(x, filters, stride, f"stage{stage + 1}_block{i + 1}", sync_bn)
    pooled = layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, pooled, name=name or f"{net_type.lower()}_w{width:g}")
