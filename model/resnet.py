"""CIFAR-style ResNet backbones (ResNet-10/18/34/50) with a width multiplier.

Shape follows the paper's public release: stage widths 64/128/256/512 scaled by
``width``; the stem keeps 64 filters at every width unless ``stem_width`` is
given (so width-0.25 numbers compare like for like with the release); 3x3
stride-1 stem without max-pool for inputs up to 64 px, 7x7 stride-2 stem with
a 3x3 max-pool above that. BatchNorm momentum 0.9, eps 1e-5; convs have no
bias and use variance scaling (scale 2, fan_out). The output is the globally
average-pooled feature f(x).
"""

import keras
from keras import layers

from util.errors import ConfigError

# name -> (block type, blocks per stage)
RESNET_SPECS = {
    "ResNet10": ("basic", (1, 1, 1, 1)),
    "ResNet18": ("basic", (2, 2, 2, 2)),
    "ResNet34": ("basic", (3, 4, 6, 3)),
    "ResNet50": ("bottleneck", (3, 4, 6, 3)),
    "ResNet101": ("bottleneck", (3, 4, 23, 3)),
    "ResNet152": ("bottleneck", (3, 8, 36, 3)),
}
STAGE_WIDTHS = (64, 128, 256, 512)
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5
SMALL_STEM_MAX_SIZE = 64


def conv_init():
    return keras.initializers.VarianceScaling(scale=2.0, mode="fan_out")


def _conv(filters, kernel, stride, name):
    return layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                         kernel_initializer=conv_init(), name=name)


def _bn(name, sync):
    return layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                                     synchronized=sync, name=name)


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


def check_input_shape(input_shape):
    """Raise ConfigError unless the backbone can take ``input_shape`` (H, W, 3)."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or shape[2] != 3:
        raise ConfigError(f"--input_shape={','.join(map(str, shape))} must be H,W,3 "
                          "(RGB); e.g. --input_shape=32,32,3")
    h, w, _ = shape
    if h != w:
        raise ConfigError(f"--input_shape={h},{w},3 must be square (rotations need H == W); "
                          "e.g. --input_shape=32,32,3")
    multiple = 8 if h <= SMALL_STEM_MAX_SIZE else 32
    if h < 16 or h % multiple:
        raise ConfigError(f"--input_shape={h},{w},3 is not supported: the side must be >= 16 and a "
                          f"multiple of {multiple} (e.g. 32, 64, 128, 256)")
    return shape


def build_resnet(net_type="ResNet18", width=1.0, input_shape=(32, 32, 3), stem_width=None,
                 sync_bn=False, name=None):
    """Returns a functional keras.Model mapping [B,H,W,3] images to pooled features f(x)."""
    if net_type not in RESNET_SPECS:
        raise ConfigError(f"--net_type={net_type} is unknown; choose one of "
                          f"{', '.join(RESNET_SPECS)}")
    if width <= 0:
        raise ConfigError(f"--net_width={width} must be > 0")
    input_shape = check_input_shape(input_shape)
    block_type, counts = RESNET_SPECS[net_type]
    block = _basic_block if block_type == "basic" else _bottleneck_block
    stem = 64 if stem_width is None else int(stem_width)

    inputs = keras.Input(shape=input_shape, name="image")
    if input_shape[0] <= SMALL_STEM_MAX_SIZE:
        x = _conv(stem, 3, 1, "stem_conv")(inputs)
        x = layers.ReLU(name="stem_relu")(_bn("stem_bn", sync_bn)(x))
    else:
        x = _conv(stem, 7, 2, "stem_conv")(inputs)
        x = layers.ReLU(name="stem_relu")(_bn("stem_bn", sync_bn)(x))
        x = layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    for stage, (base, count) in enumerate(zip(STAGE_WIDTHS, counts)):
        filters = max(1, int(round(base * width)))
        for i in range(count):
            stride = 2 if (stage > 0 and i == 0) else 1
            x = block(x, filters, stride, f"stage{stage + 1}_block{i + 1}", sync_bn)
    pooled = layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, pooled, name=name or f"{net_type.lower()}_w{width:g}")
