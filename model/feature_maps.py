"""Local feature maps of a ResNet trunk: several stages on one grid, in one pass per image.

A defect is local: a scratch changes a few cells of the trunk's feature maps
and leaves the image-level pooled feature almost as it was. The map of an
image is built from the last block of each stage in ``stages`` (ResNet stage
s has stride 2^(s+1) on a 7x7-stem network: 8 px for stage 2, 16 px for stage
3): each stage's map is averaged over a ``neighbourhood`` x ``neighbourhood``
window (stride 1, the window cut at the border, so a cell also describes
its surroundings and the map is less sensitive to a shift by one cell), the
coarser maps are resized bilinearly to the finest one's grid, and the stages are
concatenated along the channels: a 256 px image gives a 32 x 32 map of
64 + 128 = 192 channels at width 0.5 for stages 2 and 3. Shallow stages see
texture and edges, deeper ones shapes and context; together they tell a
colour change from a dent.

The same computation serves the proxy task that trains on the map
(model/cutpaste_map.py), stage 2 (detect/map_evaluator.py) and the exported
graph (deploy/map_scorer.py).
"""

import re

import keras
import tensorflow as tf

from model.spec import DEFAULT_NEIGHBOURHOOD, DEFAULT_STAGES
from util.errors import ConfigError


def stage_output_names(backbone, stages):
    """Names of the output layer of the last block of each ResNet stage in ``stages``."""
    last = {}
    for layer in backbone.layers:
        found = re.fullmatch(r"stage(\d+)_block(\d+)_out", layer.name)
        if found:
            stage, block = int(found.group(1)), int(found.group(2))
            last[stage] = max(last.get(stage, 0), block)
    missing = [s for s in stages if s not in last]
    if missing:
        raise ConfigError(f"the network has no ResNet stage {missing[0]}: feature maps need a "
                          "ResNet trunk (stages 1..4)")
    return [f"stage{s}_block{last[s]}_out" for s in stages]


def stage_model(backbone, stages):
    """keras.Model: images -> [the last block output of each stage], sharing the layers."""
    outputs = [backbone.get_layer(n).output for n in stage_output_names(backbone, stages)]
    return keras.Model(backbone.inputs[0], outputs, name="stage_maps")


def local_feature_map(stage_maps, neighbourhood=DEFAULT_NEIGHBOURHOOD):
    """[B, h_s, w_s, C_s] per stage (finest first) -> float32 [B, h, w, sum C_s]."""
    height, width = stage_maps[0].shape[1], stage_maps[0].shape[2]
    parts = []
    for m in stage_maps:
        m = tf.cast(m, tf.float32)
        if neighbourhood > 1:
            # SAME average pooling divides by the cells inside the image: no zeros at the border
            m = tf.nn.avg_pool2d(m, neighbourhood, 1, "SAME")
        if m.shape[1] != height or m.shape[2] != width:
            m = tf.image.resize(m, [height, width], method="bilinear")
        parts.append(m)
    return tf.concat(parts, axis=-1) if len(parts) > 1 else parts[0]


class FeatureMapper:
    """float images [B, H, W, 3] in [0, 1] -> local feature maps [B, h, w, D] of a backbone."""

    def __init__(self, backbone, stages=DEFAULT_STAGES, neighbourhood=DEFAULT_NEIGHBOURHOOD):
        self.stages, self.neighbourhood = tuple(stages), int(neighbourhood)
        self.model = stage_model(backbone, self.stages)

    @classmethod
    def of_stage_model(cls, model, stages, neighbourhood):
        """A mapper over an existing stage model (``stage_model``'s outputs)."""
        mapper = cls.__new__(cls)
        mapper.stages, mapper.neighbourhood, mapper.model = tuple(stages), int(neighbourhood), model
        return mapper

    def __call__(self, images, training=False):
        maps = self.model(images, training=training)
        if not isinstance(maps, (list, tuple)):
            maps = [maps]
        return local_feature_map(list(maps), self.neighbourhood)

    def for_size(self, height, width=None):
        """A mapper of the same weights that takes ``height`` x ``width`` images: this one
        when its network takes that size, else one on a copy of the stage model that takes
        any size (a network trained on crops scores whole images). The copy has layers of
        its own, so its graph can be folded and exported like the original's."""
        width = height if width is None else width
        if tuple(self.model.inputs[0].shape[1:3]) in ((height, width), (None, None)):
            return self
        channels = self.model.inputs[0].shape[-1]
        copy = keras.models.clone_model(self.model,
                                        input_tensors=keras.Input((None, None, channels)))
        for layer in self.model.layers:
            if layer.weights:
                copy.get_layer(layer.name).set_weights(layer.get_weights())
        return FeatureMapper.of_stage_model(copy, self.stages, self.neighbourhood)

    def grid(self, image_size):
        """(h, w) of the map of ``image_size`` px square images."""
        probe = self.model(tf.zeros([1, image_size, image_size, self.model.inputs[0].shape[-1]]))
        first = probe[0] if isinstance(probe, (list, tuple)) else probe
        return int(first.shape[1]), int(first.shape[2])


class PixelCellMapper:
    """The raw-pixel baseline of a feature map: each cell's feature is its own pixels.

    Cells of ``cell`` x ``cell`` px (8 px: the grid of ResNet stage 2) flattened to
    cell * cell * C values, then averaged over the same neighbourhood as a trunk's map,
    so the baseline sees the same grid and window as the network it is compared with.
    """

    def __init__(self, cell, neighbourhood=DEFAULT_NEIGHBOURHOOD):
        self.cell, self.neighbourhood = int(cell), int(neighbourhood)

    def __call__(self, images, training=False):
        cells = tf.nn.space_to_depth(tf.cast(images, tf.float32), self.cell)
        return local_feature_map([cells], self.neighbourhood)

    def for_size(self, height, width=None):
        """Raw pixels take images of any size."""
        return self

    def grid(self, image_size):
        return image_size // self.cell, image_size // self.cell
