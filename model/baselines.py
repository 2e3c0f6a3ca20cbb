"""Representations that are not trained: baselines for the tables.

* ``raw_pixels``: the detectors see the flattened pixels (in [0, 1]) of the
  image at ``--input_shape``; feature set ``pool`` only.
* ``imagenet_resnet50``: ``keras.applications.ResNet50`` without its top,
  global-average pooled (2048-d), with weights from a local file given by
  ``--pretrained_weights`` (downloads are not attempted). Inputs are scaled
  to [0, 255], converted to BGR and mean-centred as in the ImageNet training
  ("caffe" preprocessing). The image size is ``--input_shape`` (e.g.
  ``--input_shape=224,224,3`` to upsample CIFAR to the ImageNet resolution).
  An optional ``--head_dims`` adds an untrained head (embed); the default has
  none, so only ``pool`` is reported.

Both are built with ``--num_epoch=0`` (forced by the registry): training is
skipped and the run goes straight to feature extraction and the detectors.
"""


import keras
from keras import layers, ops

from model.base import OneClassModel
from model.feature_maps import PixelCellMapper
from model.spec import stage_stride
from model.heads import build_mlp_head, parse_head_dims
from util.errors import ConfigError

IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)


class FrozenFeatureModel(OneClassModel):
    """Backbone (+ optional head) that is never trained; ``pool`` only without a head."""

    def __init__(self, backbone, head, has_head=False, **kwargs):
        super().__init__(backbone, head, **kwargs)
        self.has_head = bool(has_head)

    def train_step(self, data):
        raise RuntimeError(f"{self.name} is a frozen baseline; run it with --num_epoch=0")

    def feature_mapper(self, stages, neighbourhood):
        """Raw pixels: each cell of the finest stage's grid is its own pixels."""
        if self.backbone.name == "raw_pixels":
            return PixelCellMapper(stage_stride(min(stages)), neighbourhood)
        return super().feature_mapper(stages, neighbourhood)

    def extract(self, images):
        feats = super().extract(images)
        return feats if self.has_head else {"pool": feats["pool"]}


def _with_head(backbone, head_dims, name, weight_decay):
    dims = parse_head_dims(head_dims)
    head = build_mlp_head(dims, backbone.output_shape[-1], name="head")
    return FrozenFeatureModel(backbone, head, has_head=bool(dims), weight_decay=weight_decay,
                              name=name)


def build_raw_pixels(input_shape, head_dims="", weight_decay=0.0, **_):
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    backbone = keras.Model(inputs, layers.Flatten(name="pixels")(inputs), name="raw_pixels")
    return _with_head(backbone, head_dims, "raw_pixels", weight_decay)


def build_imagenet_resnet50(input_shape, head_dims="", weight_decay=0.0,
                            pretrained_weights=None, **_):
    net = keras.applications.ResNet50(include_top=False, weights=None,
                                      input_shape=tuple(input_shape), pooling="avg")
    try:
        net.load_weights(pretrained_weights)
    except Exception as err:  # wrong file or architecture: the user's to fix
        raise ConfigError(f"--pretrained_weights={pretrained_weights} cannot be loaded into "
                          f"keras.applications.ResNet50(include_top=False): {err}") from None
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    bgr = ops.flip(inputs, axis=-1) * 255.0 - ops.convert_to_tensor(IMAGENET_BGR_MEAN)
    backbone = keras.Model(inputs, net(bgr), name="imagenet_resnet50")
    backbone.trainable = False
    return _with_head(backbone, head_dims, "imagenet_resnet50", weight_decay)
