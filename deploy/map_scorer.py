"""The serving graph of an exported feature-map model (``--mvtec_mode=map``).

``serving_default`` takes uint8 images [B, H, W, 3] of any size, resizes them
to the run's working size (deploy/serving.py) and computes in one graph what
the map evaluator (detect/map_evaluator.py) computes in the pipeline:

1. the local feature map of each image: one pass of the trunk (BatchNorm
   folded into the convolutions) up to the deepest stage of the map, the
   stages averaged over their neighbourhood and brought to one grid
   (model/feature_maps.py, the same function the pipeline runs);
2. the fitted detector's score of every cell (its ``graph_score``, next to its
   numpy score in detect/): the cell map ``cell_map`` [B, h, w]; a positional
   detector scores each cell against its own position's model;
3. the anomaly map: the cell map upsampled and smoothed
   (detect/localization.py ``smooth_upsample``); the image score is its
   maximum, and the predicted mask is where it is above the calibrated pixel
   threshold.

Detector scores are computed in fixed chunks of cells, so the memory of the
distance matrix of a memory bank stays bounded whatever the batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np
import tensorflow as tf

from deploy.fold_bn import fold_batchnorm
from deploy.patch_scorer import ROW_CHUNK, chunked
from deploy.serving import IMAGE_SPEC, calibration_variables, normalized, preprocess
from detect.localization import height_width, smooth_upsample
from model.feature_maps import FeatureMapper, local_feature_map

if TYPE_CHECKING:
    from detect.detector_base import Detector
    from detect.evaluation import MapGrid
    from model.base import OneClassModel


class MapScorer(tf.Module):
    """Image -> cell map -> anomaly map, mask and calibrated image score."""

    def __init__(self, model: OneClassModel, grid: MapGrid, detector: Detector, calib: Mapping,
                 pixel_calib: Mapping, meta_json: str, assets: Sequence[Path]) -> None:
        super().__init__(name="droc_map_scorer")
        self.height, self.width = height_width(grid.image_size)
        self.rows, self.cols = height_width(grid.cells)
        self.graph_score, self.positional = detector.graph_score, bool(detector.positional)
        params = detector.export_params()
        self.mapper = model.feature_mapper(tuple(grid.stages),
                                           int(grid.neighbourhood)).for_size(self.height,
                                                                             self.width)
        # a trunk's stages with BatchNorm folded into the convs (same function, fewer ops),
        # kept as an attribute so the SavedModel tracks its variables
        self.stages = (fold_batchnorm(self.mapper.model)
                       if isinstance(self.mapper, FeatureMapper) else None)
        self.params = {k: tf.Variable(np.asarray(v), trainable=False, name=k)
                       for k, v in params.items()}
        self.threshold, self.norm_min, self.norm_max = calibration_variables(calib)
        self.pixel_threshold = tf.Variable(float(pixel_calib["threshold"]), dtype=tf.float32,
                                           trainable=False)
        self.metadata = tf.Variable(meta_json, trainable=False, dtype=tf.string)
        self.asset_files = [tf.saved_model.Asset(str(a)) for a in assets]

    def features(self, x: tf.Tensor) -> tf.Tensor:
        """float images [B, height, width, 3] -> local feature maps [B, h, w, D]."""
        if self.stages is None:  # raw pixels: no trunk
            return self.mapper(x)
        maps = self.stages(x, training=False)
        return local_feature_map(list(maps) if isinstance(maps, (list, tuple)) else [maps],
                                 self.mapper.neighbourhood)

    def cell_maps(self, x: tf.Tensor) -> tf.Tensor:
        """float images [B, height, width, 3] -> cell maps [B, h, w]."""
        feats = self.features(x)
        dim = feats.shape[-1]
        # the parameters are read once, outside the loop: its body then captures tensors,
        # not variables, which converters (tf2onnx) can follow
        params = {k: tf.convert_to_tensor(v) for k, v in self.params.items()}
        if self.positional:  # one Gaussian per position: the positions stay a batch axis
            cells = tf.reshape(feats, [-1, self.rows * self.cols, dim])
            scores = self.graph_score(params, cells)
        else:
            flat = tf.reshape(feats, [-1, dim])
            scores = chunked(lambda rows: tf.cast(self.graph_score(params, rows), tf.float64),
                             flat, ROW_CHUNK, tf.float64)
        return tf.reshape(tf.cast(scores, tf.float32), [-1, self.rows, self.cols])

    @tf.function(input_signature=[IMAGE_SPEC])
    def serve(self, images):
        maps = self.cell_maps(preprocess(images, self.height, self.width))
        pixel = smooth_upsample(maps, (self.height, self.width))
        raw = tf.cast(tf.reduce_max(pixel, axis=[1, 2]), tf.float64)
        return {"raw_score": raw,
                "normalized_score": normalized(raw, self.norm_min, self.norm_max),
                "decision": tf.cast(raw > self.threshold, tf.int64),
                "cell_map": maps,
                "anomaly_map": pixel,
                "mask": tf.cast(pixel > self.pixel_threshold, tf.uint8)}

