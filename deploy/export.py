"""Export a run as one TensorFlow SavedModel: representation + fitted detector + threshold.

The serving signature ``serving_default`` takes ``images``: a uint8 batch
[B, H, W, 3] of any H, W (resized to the training input inside the graph,
bilinear with antialiasing and rounded to uint8, as the data layer does) and
returns ``raw_score`` (float64, higher = more abnormal, the same number the
Python pipeline computes), ``normalized_score`` (the calibration scores'
[min, max] mapped to [0, 1], clipped) and ``decision`` (int64, 1 = flagged:
raw score above the calibrated threshold).

Every detector is a TensorFlow computation inside the graph
(deploy/detector_graph.py): no scikit-learn and no project code is needed to serve.

The export directory also holds ``assets/droc_export.json`` (format, version,
preprocessing, calibration, the run's configuration, library versions), which
``script/score.py`` checks before loading.
"""

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from deploy.detector_graph import detector_params, tf_detector_score
from deploy.explain import ScoreFunction, detector_head, gradcam, integrated_gradients
from deploy.fold_bn import fold_batchnorm
from model.trunk import conv_trunk
from deploy.export_format import EXPORT_DETECTORS, EXPORT_FEATURE_SET, EXPORT_FORMAT, \
    EXPORT_VERSION, META_NAME
from util.versions import library_versions

# ----------------------------------------------------------------------------
# The SavedModel
# ----------------------------------------------------------------------------

def _scoring_module(model, input_shape, det_name, params, calib, feature_set, meta_json,
                    asset_path):

    height, width = int(input_shape[0]), int(input_shape[1])
    image_spec = tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")

    class DROCScorer(tf.Module):
        def __init__(self):
            super().__init__(name="droc_scorer")
            # BatchNorm folded into the convs: same function, fewer ops per image
            self.trunk = fold_batchnorm(conv_trunk(model))
            if feature_set == "embed":
                self.head = model.head
            self.params = {k: tf.Variable(np.asarray(v), trainable=False, name=k)
                           for k, v in params.items()}
            self.threshold = tf.Variable(np.float64(calib["threshold"]), trainable=False)
            self.norm_min = tf.Variable(np.float64(calib["norm_min"]), trainable=False)
            self.norm_max = tf.Variable(np.float64(calib["norm_max"]), trainable=False)
            self.metadata = tf.Variable(meta_json, trainable=False, dtype=tf.string)
            self.metadata_file = tf.saved_model.Asset(str(asset_path))
            self.score_fn = ScoreFunction(self.trunk, detector_head(model, det_name, self.params,
                                                               feature_set))

        def preprocess(self, images):
            """uint8 [B,H,W,3] -> float32 [B,height,width,3] in [0, 1]."""
            shape = tf.shape(images)

            def resized():
                x = tf.image.resize(images, (height, width), method="bilinear", antialias=True)
                return tf.clip_by_value(tf.round(x), 0.0, 255.0)

            same = tf.logical_and(tf.equal(shape[1], height), tf.equal(shape[2], width))
            x = tf.cond(same, lambda: tf.cast(images, tf.float32), resized) / 255.0
            return tf.ensure_shape(x, [None, height, width, 3])

        def outputs(self, raw):
            raw = tf.cast(raw, tf.float64)
            span = self.norm_max - self.norm_min
            span = tf.where(span > 0, span, tf.ones_like(span))
            norm = tf.clip_by_value((raw - self.norm_min) / span, 0.0, 1.0)
            decision = tf.cast(raw > self.threshold, tf.int64)
            return {"raw_score": raw, "normalized_score": norm, "decision": decision}

        @tf.function(input_signature=[image_spec])
        def serve(self, images):
            acts = tf.cast(self.trunk(self.preprocess(images), training=False), tf.float32)
            pooled = tf.reduce_mean(acts, axis=[1, 2])
            feats = pooled if feature_set == "pool" else self.head(pooled, training=False)
            return self.outputs(tf_detector_score(det_name, self.params, feats))

        @tf.function(input_signature=[image_spec, tf.TensorSpec([], tf.int32, name="steps")])
        def explain_ig(self, images, steps):
            x = self.preprocess(images)
            attr = integrated_gradients(self.score_fn, x, steps)
            return {"heatmap": tf.reduce_sum(tf.abs(attr), axis=-1), "attributions": attr,
                    "model_input": tf.cast(tf.round(x * 255.0), tf.uint8)}

        @tf.function(input_signature=[image_spec])
        def explain_gradcam(self, images):
            x = self.preprocess(images)
            return {"heatmap": gradcam(self.score_fn, x),
                    "model_input": tf.cast(tf.round(x * 255.0), tf.uint8)}

    return DROCScorer()


def export_saved_model(export_dir, model, input_shape, detector, fit_feats, calib, run_config,
                       feature_set=EXPORT_FEATURE_SET, results=None, input_bits=0, log=print):
    """Writes the SavedModel to ``export_dir`` atomically (a temp dir renamed into place).

    ``run_config`` (the run's flags) is stored in the metadata as a record;
    ``input_bits`` (the run's --input_bits) is what script/score.py reads files with."""
    export_dir = Path(export_dir)
    det_key = {v: k for k, v in EXPORT_DETECTORS.items()}[detector.name]
    params = detector_params(detector, fit_feats)
    meta = {
        "format": EXPORT_FORMAT, "version": EXPORT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "detector": det_key, "score_key": f"{feature_set}.{detector.name}",
        "feature_set": feature_set,
        "input_shape": [int(d) for d in input_shape],
        "input_bits": int(input_bits),
        "preprocessing": "uint8 RGB [B,H,W,3]; resized to input_shape (bilinear, antialias, "
                         "rounded to uint8) when H,W differ; divided by 255; gray/RGBA files "
                         "are converted to RGB by the scorer",
        "signature": {"inputs": {"images": "uint8 [B,H,W,3]"},
                      "outputs": {"raw_score": "float64 [B], higher = more abnormal",
                                  "normalized_score": "float64 [B] in [0,1]",
                                  "decision": "int64 [B], 1 = raw_score > threshold"}},
        "calibration": calib,
        "auc": (results or {}).get(f"{feature_set}.{detector.name}"),
        "config": run_config, "versions": library_versions(),
    }
    meta_json = json.dumps(meta, indent=2, sort_keys=True, default=str)
    export_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = export_dir.parent / f".{export_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        asset_src = tmp / ".meta_src" / META_NAME
        asset_src.parent.mkdir()
        asset_src.write_text(meta_json)
        module = _scoring_module(model, input_shape, detector.name, params, calib,
                                 feature_set, meta_json, asset_src)
        save_dir = tmp / "saved_model"
        tf.saved_model.save(module, str(save_dir), signatures={
            "serving_default": module.serve,
            "explain_ig": module.explain_ig,
            "explain_gradcam": module.explain_gradcam})
        old = export_dir.parent / f".{export_dir.name}.old-{os.getpid()}"
        if export_dir.exists():
            os.replace(export_dir, old)
        os.replace(save_dir, export_dir)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"Exported {meta['score_key']} to {export_dir} (threshold {calib['threshold']:.6g} "
        f"at target FPR {calib['target_fpr']})")
    return meta
