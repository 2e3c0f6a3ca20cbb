"""Export a run as one TensorFlow SavedModel: representation + fitted detector + threshold.

The serving signature ``serving_default`` takes ``images``: a uint8 batch
[B, H, W, 3] of any H, W (resized to the training input inside the graph,
bilinear with antialiasing and rounded to uint8, as the data layer does) and
returns ``raw_score`` (float64, higher = more abnormal, the same number the
Python pipeline computes), ``normalized_score`` (the calibration scores'
[min, max] mapped to [0, 1], clipped) and ``decision`` (int64, 1 = flagged:
raw score above the calibrated threshold).

Every detector is a TensorFlow computation inside the graph (each detector
class's ``graph_score``): no scikit-learn and no project code is needed to serve.

Patch models (``export_patch_model``) are served by deploy/patch_scorer.py:
the same three outputs plus the patch map, the pixel anomaly map and the
predicted mask; feature-map models (``export_map_model``) by
deploy/map_scorer.py, with the cell map (``cell_map``; ``patch_map`` in exports
written before the name changed) in place of the patch map.

The export directory also holds ``assets/droc_export.json`` (format, version,
kind, preprocessing, calibration, the run's configuration, library versions),
which ``script/score.py`` checks before loading, and
``assets/calibration_scores.npz`` (the held-out inliers' image scores, and
for patch models a sample of their pixel scores), from which a scorer can set
another threshold.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Sequence

import numpy as np
import tensorflow as tf

from deploy.convert import remove_stale_conversions
from deploy.explain import ScoreFunction, detector_head, gradcam, integrated_gradients
from deploy.fold_bn import fold_batchnorm
from deploy.serving import IMAGE_SPEC, calibration_variables, normalized, preprocess
from detect.localization import height_width
from model.trunk import conv_trunk
from deploy.export_format import (CALIB_SCORES_NAME, EXPORT_FEATURE_SET, EXPORT_FORMAT,
                                  EXPORT_VERSION, META_NAME, export_fingerprint)
from util.atomic import atomic_dir
from util.versions import library_versions

if TYPE_CHECKING:
    import keras

    from detect.detector_base import Detector
    from detect.evaluation import MapGrid, PatchGrid

# ----------------------------------------------------------------------------
# The SavedModel
# ----------------------------------------------------------------------------

def _scoring_module(model, input_shape, detector, calib, feature_set, meta_json, assets):
    """The whole-image scorer: trunk -> pooled features -> detector, plus explanations."""

    height, width = int(input_shape[0]), int(input_shape[1])
    graph_score, params = detector.graph_score, detector.export_params()

    class DROCScorer(tf.Module):
        def __init__(self):
            super().__init__(name="droc_scorer")
            # BatchNorm folded into the convs: same function, fewer ops per image
            self.trunk = fold_batchnorm(conv_trunk(model))
            if feature_set == "embed":
                self.head = model.head
            self.params = {k: tf.Variable(np.asarray(v), trainable=False, name=k)
                           for k, v in params.items()}
            self.threshold, self.norm_min, self.norm_max = calibration_variables(calib)
            self.metadata = tf.Variable(meta_json, trainable=False, dtype=tf.string)
            self.asset_files = [tf.saved_model.Asset(str(a)) for a in assets]
            self.score_fn = ScoreFunction(self.trunk, detector_head(model, graph_score,
                                                                    self.params, feature_set))

        def preprocess(self, images):
            return preprocess(images, height, width)

        def outputs(self, raw):
            raw = tf.cast(raw, tf.float64)
            return {"raw_score": raw,
                    "normalized_score": normalized(raw, self.norm_min, self.norm_max),
                    "decision": tf.cast(raw > self.threshold, tf.int64)}

        @tf.function(input_signature=[IMAGE_SPEC])
        def serve(self, images):
            acts = tf.cast(self.trunk(self.preprocess(images), training=False), tf.float32)
            pooled = tf.reduce_mean(acts, axis=[1, 2])
            feats = pooled if feature_set == "pool" else self.head(pooled, training=False)
            return self.outputs(graph_score(self.params, feats))

        @tf.function(input_signature=[IMAGE_SPEC, tf.TensorSpec([], tf.int32, name="steps")])
        def explain_ig(self, images, steps):
            x = self.preprocess(images)
            attr = integrated_gradients(self.score_fn, x, steps)
            return {"heatmap": tf.reduce_sum(tf.abs(attr), axis=-1), "attributions": attr,
                    "model_input": tf.cast(tf.round(x * 255.0), tf.uint8)}

        @tf.function(input_signature=[IMAGE_SPEC])
        def explain_gradcam(self, images):
            x = self.preprocess(images)
            return {"heatmap": gradcam(self.score_fn, x),
                    "model_input": tf.cast(tf.round(x * 255.0), tf.uint8)}

    return DROCScorer()


def export_saved_model(export_dir: Path | str, model: keras.Model, input_shape: Sequence[int],
                       detector: Detector, calib: dict, run_config: dict,
                       feature_set: str = EXPORT_FEATURE_SET, results: Optional[dict] = None,
                       calib_scores: Optional[np.ndarray] = None, input_bits: int = 0,
                       log: Callable[[str], None] = print) -> dict:
    """Writes the whole-image SavedModel to ``export_dir`` atomically.

    ``run_config`` (the run's flags) is stored in the metadata as a record;
    ``calib_scores`` (the held-out inliers' scores behind ``calib``) go into the
    export so a scorer can move the threshold (script/score.py --target_fpr);
    ``input_bits`` (the run's --input_bits) is what script/score.py reads files with."""
    meta = _metadata(detector, feature_set, calib, results, run_config, input_bits)
    meta.update({
        "kind": "image",
        "input_shape": [int(d) for d in input_shape],
        "signature": {"inputs": {"images": "uint8 [B,H,W,3]"}, "outputs": dict(IMAGE_OUTPUTS)},
    })

    def build(meta_json, assets):
        module = _scoring_module(model, input_shape, detector, calib, feature_set, meta_json,
                                 assets)
        return module, {"serving_default": module.serve, "explain_ig": module.explain_ig,
                        "explain_gradcam": module.explain_gradcam}

    return _write_export(export_dir, meta, build, {"image": calib_scores}, log)


def export_patch_model(export_dir: Path | str, model: keras.Model, grid: PatchGrid,
                       detector: Detector, calib: dict, pixel_calib: dict, run_config: dict,
                       feature_set: str = EXPORT_FEATURE_SET, results: Optional[dict] = None,
                       calib_scores: Optional[np.ndarray] = None,
                       pixel_scores: Optional[np.ndarray] = None, input_bits: int = 0,
                       log: Callable[[str], None] = print) -> dict:
    """Writes a patch model's SavedModel (deploy/patch_scorer.py) to ``export_dir``
    atomically: image scores, patch and pixel maps and the predicted mask.

    ``grid`` (detect.evaluation.PatchGrid) is the run's patch geometry;
    ``pixel_calib`` the pixel threshold's calibration, ``pixel_scores`` the sample
    of held-out pixel values it was set on (stored for --target_fpr at scoring time).
    """
    from deploy.patch_scorer import PatchScorer

    size = int(grid.image_size)
    meta = _metadata(detector, feature_set, calib, results, run_config, input_bits)
    meta.update({
        "kind": "patch",
        "input_shape": [size, size, 3],
        "grid": {"image_size": size, "patch_size": int(grid.patch_size),
                 "stride": int(grid.stride), "features": grid.features},
        "pixel_calibration": pixel_calib,
        "signature": {"inputs": {"images": "uint8 [B,H,W,3]"}, "outputs": {
            **IMAGE_OUTPUTS,
            "patch_map": "float32 [B,n,n], the detector score of each grid patch",
            "anomaly_map": f"float32 [B,{size},{size}], pixel scores at the working size",
            "mask": f"uint8 [B,{size},{size}], 1 = anomaly_map > pixel threshold"}},
    })

    def build(meta_json, assets):
        module = PatchScorer(model, grid, detector, calib, pixel_calib, feature_set, meta_json,
                             assets)
        return module, {"serving_default": module.serve}

    return _write_export(export_dir, meta, build,
                         {"image": calib_scores, "pixel": pixel_scores}, log)


def export_map_model(export_dir: Path | str, model: keras.Model, grid: MapGrid, detector: Detector,
                     calib: dict, pixel_calib: dict, run_config: dict, feature_set: str,
                     results: Optional[dict] = None, calib_scores: Optional[np.ndarray] = None,
                     pixel_scores: Optional[np.ndarray] = None, input_bits: int = 0,
                     log: Callable[[str], None] = print) -> dict:
    """Writes a feature-map model's SavedModel (deploy/map_scorer.py) to ``export_dir``
    atomically: image scores, the cell map, the anomaly map and the predicted mask.

    ``grid`` (detect.evaluation.MapGrid) is the run's map geometry; the rest as
    ``export_patch_model``.
    """
    from deploy.map_scorer import MapScorer

    (height, width), (rows, cols) = height_width(grid.image_size), height_width(grid.cells)
    meta = _metadata(detector, feature_set, calib, results, run_config, input_bits)
    meta.update({
        "kind": "map",
        "input_shape": [height, width, 3],
        # one number for square runs (as exports always had), [height, width] otherwise
        "grid": {"image_size": _json_size(grid.image_size),
                 "stages": [int(s) for s in grid.stages],
                 "neighbourhood": int(grid.neighbourhood), "cells": _json_size(grid.cells),
                 "features": grid.features},
        "pixel_calibration": pixel_calib,
        "signature": {"inputs": {"images": "uint8 [B,H,W,3]"}, "outputs": {
            **IMAGE_OUTPUTS,
            "cell_map": f"float32 [B,{rows},{cols}], the detector score of each map cell",
            "anomaly_map": f"float32 [B,{height},{width}], pixel scores at the working size",
            "mask": f"uint8 [B,{height},{width}], 1 = anomaly_map > pixel threshold"}},
    })

    def build(meta_json, assets):
        module = MapScorer(model, grid, detector, calib, pixel_calib, meta_json, assets)
        return module, {"serving_default": module.serve}

    return _write_export(export_dir, meta, build,
                         {"image": calib_scores, "pixel": pixel_scores}, log)


def _json_size(size: int | Sequence[int]) -> int | list:
    return int(size) if isinstance(size, (int, np.integer)) else [int(s) for s in size]


IMAGE_OUTPUTS = {"raw_score": "float64 [B], higher = more abnormal",
                 "normalized_score": "float64 [B] in [0,1]",
                 "decision": "int64 [B], 1 = raw_score > threshold"}


def _metadata(detector, feature_set, calib, results, run_config, input_bits):
    det_key = detector.exported_as()
    return {
        "format": EXPORT_FORMAT, "version": EXPORT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "detector": det_key, "score_key": f"{feature_set}.{detector.name}",
        "feature_set": feature_set,
        "input_bits": int(input_bits),
        "preprocessing": "uint8 RGB [B,H,W,3]; resized to input_shape (bilinear, antialias, "
                         "rounded to uint8) when H,W differ; divided by 255; gray/RGBA files "
                         "are converted to RGB by the scorer",
        "calibration": calib,
        "auc": (results or {}).get(f"{feature_set}.{detector.name}"),
        "config": run_config, "versions": library_versions(),
    }


def _write_export(export_dir, meta, build, calib_arrays, log):
    """Saves ``build(meta_json, asset paths)``'s module and signatures as ``export_dir``
    through util.atomic.atomic_dir: a complete export or the previous one, never half.
    The conversions of the previous export (ONNX, OpenVINO) are removed just before it is
    replaced unless the new export computes the same (deploy/export_format.export_fingerprint),
    so no converted model outlives what it was made from."""
    export_dir = Path(export_dir)
    calib_arrays = {k: np.asarray(v) for k, v in calib_arrays.items() if v is not None}
    if calib_arrays:
        meta["calibration_scores"] = f"assets/{CALIB_SCORES_NAME}"
    meta_json = json.dumps(meta, indent=2, sort_keys=True, default=str)
    with atomic_dir(export_dir) as tmp:
        src = tmp / ".assets_src"  # what the SavedModel copies into its assets/
        src.mkdir()
        assets = [src / META_NAME]
        assets[0].write_text(meta_json)
        if calib_arrays:
            assets.append(src / CALIB_SCORES_NAME)
            with open(assets[1], "wb") as f:
                np.savez(f, **calib_arrays)
        module, signatures = build(meta_json, assets)
        tf.saved_model.save(module, str(tmp), signatures=signatures)
        shutil.rmtree(src)
        remove_stale_conversions(export_dir, export_fingerprint(tmp))
    log(f"Exported {meta['score_key']} ({meta['kind']} model) to {export_dir} (threshold "
        f"{meta['calibration']['threshold']:.6g} at target FPR {meta['calibration']['target_fpr']})")
    return meta
