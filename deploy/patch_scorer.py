"""The serving graph of an exported patch model.

``serving_default`` takes uint8 images [B, H, W, 3] of any size, resizes them
to the run's working size (deploy/serving.py), and recomputes in one graph
what the patch evaluator (detect/patch_evaluator.py) computes in the
pipeline:

1. the features of every patch of the grid (``patch_size`` px windows every
   ``stride`` px): ``crop`` cuts each window and runs the trunk on it, ``conv``
   runs the trunk once per shifted image and averages the cells under each
   window (detect/localization.py ConvGridFeatures, same shifts and cells);
2. the fitted detector's score of each patch (its ``graph_score``) -> the
   patch map [n, n]; the image score is its maximum;
3. the pixel map by the same Gaussian transposed convolution as
   ``detect.localization.upsample_maps``, and the predicted mask where it is
   above the calibrated pixel threshold.

Conv features are computed one image at a time (``tf.map_fn``), crop
features and detector scores in fixed-size chunks of windows and rows, so
memory grows only with the batch's images themselves.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import numpy as np
import tensorflow as tf

from deploy.fold_bn import fold_batchnorm
from deploy.serving import IMAGE_SPEC, calibration_variables, normalized, preprocess
from detect.localization import conv_phases, gaussian_kernel, grid_size
from model.trunk import any_size, conv_trunk, network_stride

if TYPE_CHECKING:
    import keras

    from detect.detector_base import Detector
    from detect.evaluation import PatchGrid

#: patches per trunk call (crop features) and detector rows per score call
PATCH_CHUNK = 512
ROW_CHUNK = 4096


def chunked(fn: Callable[[tf.Tensor], tf.Tensor], x: tf.Tensor, chunk: int, out_dtype: tf.DType,
            out_tail: tuple = ()) -> tf.Tensor:
    """fn over x [N, ...] in fixed chunks of ``chunk`` rows (the last one padded)."""
    total = tf.shape(x)[0]
    pad = (chunk - total % chunk) % chunk  # non-negative operands: converters' Mod differ
    padded = tf.pad(x, [[0, pad]] + [[0, 0]] * (len(x.shape) - 1))
    parts = tf.reshape(padded, [-1, chunk, *x.shape[1:]])  # static: converters need ranks
    out = tf.map_fn(fn, parts, parallel_iterations=1,
                    fn_output_signature=tf.TensorSpec([chunk, *out_tail], out_dtype))
    flat = tf.reshape(out, tf.concat([[-1], tf.constant(out_tail, tf.int32)], axis=0))
    return tf.gather(flat, tf.range(total))  # the real rows (a gather converts everywhere)


def overlap_normaliser(n: int, patch: int, stride: int, kernel: np.ndarray) -> np.ndarray:
    """[H, H] Gaussian-weighted overlap of the patches covering each pixel."""
    size = (n - 1) * stride + patch
    ones = tf.ones([1, n, n, 1])
    return tf.nn.conv2d_transpose(ones, tf.constant(kernel), [1, size, size, 1], strides=stride,
                                  padding="VALID")[0, :, :, 0].numpy()


class PatchScorer(tf.Module):
    """Image -> patch map -> pixel map, mask and calibrated image score."""

    def __init__(self, model: keras.Model, grid: PatchGrid, detector: Detector, calib: Mapping,
                 pixel_calib: Mapping, feature_set: str, meta_json: str,
                 assets: Sequence[Path]) -> None:
        super().__init__(name="droc_patch_scorer")
        self.size, self.patch, self.stride = grid.image_size, grid.patch_size, grid.stride
        self.n = grid_size(self.size, self.patch, self.stride)
        self.mode, self.feature_set = grid.features, feature_set
        self.graph_score = detector.graph_score
        params = detector.export_params()
        # BatchNorm folded into the convs: same function, fewer ops per patch
        self.trunk = fold_batchnorm(conv_trunk(model))
        if self.mode == "conv":
            self.trunk = any_size(self.trunk)
            self.net_stride = network_stride(self.trunk, self.patch)
            self.cells = self.patch // self.net_stride
            self.phases = conv_phases(self.n, self.stride, self.net_stride)
        if feature_set == "embed":
            self.head = model.head
        self.params = {k: tf.Variable(np.asarray(v), trainable=False, name=k)
                       for k, v in params.items()}
        self.threshold, self.norm_min, self.norm_max = calibration_variables(calib)
        self.pixel_threshold = tf.Variable(float(pixel_calib["threshold"]), dtype=tf.float32,
                                           trainable=False)
        # numpy, not tensors: traced as constants of the graph, not as captured inputs
        # (which converters such as tf2onnx would leave as missing model inputs)
        self.kernel = gaussian_kernel(self.patch)[:, :, None, None]
        self.overlap = overlap_normaliser(self.n, self.patch, self.stride, self.kernel)
        self.metadata = tf.Variable(meta_json, trainable=False, dtype=tf.string)
        self.asset_files = [tf.saved_model.Asset(str(a)) for a in assets]

    # --- step 1: patch features of one image [size, size, 3] -> [n, n, D] -------------
    def _pooled(self, patches):
        return tf.reduce_mean(tf.cast(self.trunk(patches, training=False), tf.float32), [1, 2])

    def crop_features(self, x: tf.Tensor) -> tf.Tensor:
        """float images [B, size, size, 3] -> [B, n, n, D]: every grid window of the batch,
        cut by one gather per chunk of ``PATCH_CHUNK`` windows and run through the trunk
        (one loop level: converters such as tf2onnx cannot follow a conv in nested loops)."""
        p, s, n = self.patch, self.stride, self.n
        batch = tf.shape(x)[0]
        dim = self.trunk.outputs[0].shape[-1]
        offsets = tf.range(p)

        def windows(index):  # global window indices [chunk] -> their trunk features
            image, cell = index // (n * n), index % (n * n)
            rows = (cell // n * s)[:, None] + offsets  # [chunk, p]
            cols = (cell % n * s)[:, None] + offsets
            at = tf.stack([tf.broadcast_to(image[:, None, None], [PATCH_CHUNK, p, p]),
                           tf.broadcast_to(rows[:, :, None], [PATCH_CHUNK, p, p]),
                           tf.broadcast_to(cols[:, None, :], [PATCH_CHUNK, p, p])], axis=-1)
            return self._pooled(tf.gather_nd(x, at))

        feats = chunked(windows, tf.range(batch * n * n), PATCH_CHUNK, tf.float32, (dim,))
        return tf.reshape(feats, [batch, n, n, dim])

    def conv_features(self, image: tf.Tensor) -> tf.Tensor:
        """Every shift (r, c) of the grid's starts modulo the network stride: one trunk pass
        over the shifted image, k x k average pooling, the cells of that shift's patches;
        the blocks are then put back in grid order."""
        S, k = self.net_stride, self.cells
        row_blocks, row_order = [], []
        for r, (rows, row_cells) in self.phases.items():
            blocks, col_order = [], []
            for c, (cols, col_cells) in self.phases.items():
                h, w = (self.size - r) // S * S, (self.size - c) // S * S
                acts = tf.cast(self.trunk(image[None, r:r + h, c:c + w], training=False),
                               tf.float32)
                pooled = tf.nn.avg_pool2d(acts, k, 1, "VALID")[0]
                blocks.append(tf.gather(tf.gather(pooled, row_cells, axis=0), col_cells, axis=1))
                col_order.extend(cols.tolist())
            row_blocks.append(tf.gather(tf.concat(blocks, axis=1), np.argsort(col_order), axis=1))
            row_order.extend(rows.tolist())
        return tf.gather(tf.concat(row_blocks, axis=0), np.argsort(row_order), axis=0)

    # --- step 2: the detector over the grid -----------------------------------------

    def patch_maps(self, x: tf.Tensor) -> tf.Tensor:
        """float images [B, size, size, 3] -> patch maps [B, n, n]: features (conv: image by
        image; crop: in chunks of windows), the detector over every patch of the batch in
        ``ROW_CHUNK`` rows."""
        if self.mode == "conv":
            feats = tf.map_fn(self.conv_features, x, parallel_iterations=1,
                              fn_output_signature=tf.float32)
        else:
            feats = self.crop_features(x)
        flat = tf.reshape(feats, [-1, feats.shape[-1]])
        if self.feature_set == "embed":
            flat = tf.cast(self.head(flat, training=False), tf.float32)
        # the parameters are read once, outside the loop: its body then captures tensors,
        # not variables, which converters (tf2onnx) can follow
        params = {k: tf.convert_to_tensor(v) for k, v in self.params.items()}
        scores = chunked(lambda rows: tf.cast(self.graph_score(params, rows), tf.float64),
                         flat, ROW_CHUNK, tf.float64)
        return tf.reshape(scores, [-1, self.n, self.n])

    # --- step 3: maps, mask, calibrated outputs -------------------------------------
    def pixel_map(self, maps: tf.Tensor) -> tf.Tensor:
        b = tf.shape(maps)[0]
        up = tf.nn.conv2d_transpose(tf.cast(maps, tf.float32)[..., None],
                                    tf.constant(self.kernel),
                                    tf.stack([b, self.size, self.size, 1]),
                                    strides=self.stride, padding="VALID")
        return up[..., 0] / tf.constant(self.overlap)

    @tf.function(input_signature=[IMAGE_SPEC])
    def serve(self, images):
        maps = self.patch_maps(preprocess(images, self.size, self.size))
        raw = tf.reduce_max(maps, axis=[1, 2])
        pixel = self.pixel_map(maps)
        return {"raw_score": raw,
                "normalized_score": normalized(raw, self.norm_min, self.norm_max),
                "decision": tf.cast(raw > self.threshold, tf.int64),
                "patch_map": tf.cast(maps, tf.float32),
                "anomaly_map": pixel,
                "mask": tf.cast(pixel > self.pixel_threshold, tf.uint8)}
