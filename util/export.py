"""Export a run as one TensorFlow SavedModel: representation + fitted detector + threshold.

The serving signature ``serving_default`` takes ``images``: a uint8 batch
[B, H, W, 3] of any H, W (resized to the training input inside the graph,
bilinear with antialiasing and rounded to uint8, as the data layer does) and
returns ``raw_score`` (float64, higher = more abnormal, the same number the
Python pipeline computes), ``normalized_score`` (the calibration scores'
[min, max] mapped to [0, 1], clipped) and ``decision`` (int64, 1 = flagged:
raw score above the calibrated threshold).

Every detector is a TensorFlow computation inside the graph (no scikit-learn
and no project code needed to serve):

* ``kde``: -(1/g) logsumexp(-g ||x - y||^2) over the stored training features;
* ``gde``: -log N(x; mean, cov) from the mean and the Cholesky factor of the
  precision matrix;
* ``kocsvm``: -sum_i a_i exp(-g ||x - sv_i||^2) (support vectors, dual
  coefficients, gamma; the libsvm offset is stored too);
* ``locsvm``: -x . w on raw features;
* ``nn``: 1 - max cosine similarity to the stored training features.

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

from util.errors import ConfigError

EXPORT_FORMAT = "droc-savedmodel"
EXPORT_VERSION = 1
META_NAME = "droc_export.json"
#: --export_detector name -> util.detectors registry name
EXPORT_DETECTORS = {"kde": "kde", "gde": "gde", "kocsvm": "kocsvm", "locsvm": "locsvm",
                    "nn": "auc"}
EXPORT_FEATURE_SET = "pool"


def check_export_detector(name):
    if name not in ("auto", *EXPORT_DETECTORS):
        raise ConfigError(f"--export_detector={name} is unknown; choose one of auto, "
                          f"{', '.join(EXPORT_DETECTORS)}")


def choose_detector(name, protocol, results, available):
    """Registry name of the detector to export.

    ``auto``: under the validation protocol the exportable pool detector with the
    best AUC (the validation protocol exists to make such choices), else kde.
    """
    if name != "auto":
        det = EXPORT_DETECTORS[name]
        if det not in available:
            raise ConfigError(f"--export_detector={name} was not fit in this run; add "
                              f"{det} to --detectors")
        return det
    candidates = [d for d in EXPORT_DETECTORS.values() if d in available]
    if protocol == "validation" and candidates:
        return max(candidates, key=lambda d: results.get(f"{EXPORT_FEATURE_SET}.{d}", -1.0))
    if "kde" in available:
        return "kde"
    if not candidates:
        raise ConfigError("none of the run's detectors can be exported; add kde to --detectors")
    return candidates[0]


# ----------------------------------------------------------------------------
# Detectors as TensorFlow computations
# ----------------------------------------------------------------------------

def detector_params(det, fit_feats):
    """Numpy parameters of a fitted util.detectors Detector for the TF scorer."""
    from util.detectors import check_features, l2_normalize

    name = det.name
    if name in ("kde", "auc"):
        y = l2_normalize(check_features(fit_feats))
        p = {"train": y}
        if name == "kde":
            p["gamma"] = np.float64(det.gamma_)
        return p
    if name == "gde":
        est = det.estimator_
        return {"mean": est.means_[0].astype(np.float64),
                "prec_chol": est.precisions_cholesky_[0].astype(np.float64)}
    if name == "kocsvm":
        est = det.estimator_
        return {"sv": est.support_vectors_.astype(np.float64),
                "coef": est.dual_coef_[0].astype(np.float64),
                "gamma": np.float64(det.gamma_), "offset": np.float64(est.offset_[0])}
    if name == "locsvm":
        est = det.estimator_
        return {"w": est.coef_[0].astype(np.float64), "offset": np.float64(est.offset_[0])}
    raise ConfigError(f"detector {name} cannot be exported")


def tf_detector_score(name, params, feats):
    """Scores of float32 features [B, D] as a differentiable TF computation (float64 out
    for gde/ocsvm, float32 for kde/nn); ``params`` are tensors or numpy arrays."""
    import tensorflow as tf

    feats = tf.cast(feats, tf.float32)
    if name != "locsvm":
        norm = tf.sqrt(tf.reduce_sum(tf.square(feats), axis=-1, keepdims=True))
        feats = feats / tf.maximum(norm, 1e-12)
    if name == "kde":
        y = tf.cast(params["train"], tf.float32)
        g = tf.cast(params["gamma"], tf.float32)
        d2 = (tf.reduce_sum(tf.square(feats), -1)[:, None] + tf.reduce_sum(tf.square(y), -1)[None]
              - 2.0 * tf.matmul(feats, y, transpose_b=True))
        return -tf.reduce_logsumexp(-g * tf.maximum(d2, 0.0), axis=1) / g
    if name == "auc":
        y = tf.cast(params["train"], tf.float32)
        return 1.0 - tf.reduce_max(tf.matmul(feats, y, transpose_b=True), axis=1)
    x = tf.cast(feats, tf.float64)
    if name == "gde":
        mean = tf.cast(params["mean"], tf.float64)
        pc = tf.cast(params["prec_chol"], tf.float64)
        z = tf.matmul(x - mean[None], pc)
        dim = tf.cast(tf.shape(mean)[0], tf.float64)
        log_det = tf.reduce_sum(tf.math.log(tf.linalg.diag_part(pc)))
        logp = -0.5 * (dim * np.log(2 * np.pi) + tf.reduce_sum(tf.square(z), -1)) + log_det
        return -logp
    if name == "kocsvm":
        sv = tf.cast(params["sv"], tf.float64)
        g = tf.cast(params["gamma"], tf.float64)
        d2 = (tf.reduce_sum(tf.square(x), -1)[:, None] + tf.reduce_sum(tf.square(sv), -1)[None]
              - 2.0 * tf.matmul(x, sv, transpose_b=True))
        k = tf.exp(-g * tf.maximum(d2, 0.0))
        return -tf.linalg.matvec(k, tf.cast(params["coef"], tf.float64))
    if name == "locsvm":
        return -tf.linalg.matvec(x, tf.cast(params["w"], tf.float64))
    raise ConfigError(f"detector {name} cannot be exported")


def model_features(model, float_images, feature_set=EXPORT_FEATURE_SET):
    """pool = f(x) or embed = g(f(x)) of float images in [0, 1] (float32)."""
    import tensorflow as tf

    pooled = model.backbone(float_images, training=False)
    if feature_set == "pool":
        return tf.cast(pooled, tf.float32)
    return tf.cast(model.head(pooled, training=False), tf.float32)


# ----------------------------------------------------------------------------
# The SavedModel
# ----------------------------------------------------------------------------

def _scoring_module(model, input_shape, det_name, params, calib, feature_set, meta_json,
                    asset_path):
    import tensorflow as tf

    from util.explain import ScoreFunction, conv_trunk, gradcam, integrated_gradients, kde_head
    from util.fold_bn import fold_batchnorm

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
            self.score_fn = ScoreFunction(self.trunk, kde_head(model, det_name, self.params,
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


def export_saved_model(export_dir, model, input_shape, detector, fit_feats, calib, cfg,
                       feature_set=EXPORT_FEATURE_SET, results=None, log=print):
    """Writes the SavedModel to ``export_dir`` atomically (a temp dir renamed into place)."""
    import tensorflow as tf

    from util.experiment import library_versions

    export_dir = Path(export_dir)
    det_key = {v: k for k, v in EXPORT_DETECTORS.items()}[detector.name]
    params = detector_params(detector, fit_feats)
    meta = {
        "format": EXPORT_FORMAT, "version": EXPORT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "detector": det_key, "score_key": f"{feature_set}.{detector.name}",
        "feature_set": feature_set,
        "input_shape": [int(d) for d in input_shape],
        "preprocessing": "uint8 RGB [B,H,W,3]; resized to input_shape (bilinear, antialias, "
                         "rounded to uint8) when H,W differ; divided by 255; gray/RGBA files "
                         "are converted to RGB by the scorer",
        "signature": {"inputs": {"images": "uint8 [B,H,W,3]"},
                      "outputs": {"raw_score": "float64 [B], higher = more abnormal",
                                  "normalized_score": "float64 [B] in [0,1]",
                                  "decision": "int64 [B], 1 = raw_score > threshold"}},
        "calibration": calib,
        "auc": (results or {}).get(f"{feature_set}.{detector.name}"),
        "config": cfg, "versions": library_versions(),
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


def read_export_meta(export_dir):
    """The export's metadata; ConfigError for a missing, foreign or incompatible export."""
    export_dir = Path(export_dir)
    if not export_dir.is_dir():
        raise ConfigError(f"export directory {export_dir} does not exist")
    path = export_dir / "assets" / META_NAME
    if not (export_dir / "saved_model.pb").exists() or not path.exists():
        raise ConfigError(f"{export_dir} is not a DROC export (no saved_model.pb and "
                          f"assets/{META_NAME}); export a run with script/export.py RUN_DIR")
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path} is unreadable: {err}") from None
    if meta.get("format") != EXPORT_FORMAT:
        raise ConfigError(f"{export_dir} is not a DROC export (format {meta.get('format')!r})")
    if meta.get("version") != EXPORT_VERSION:
        raise ConfigError(f"{export_dir} has export version {meta.get('version')!r}, this code "
                          f"reads version {EXPORT_VERSION}; re-export the run with "
                          "script/export.py RUN_DIR")
    return meta


# ----------------------------------------------------------------------------
# Rebuilding a finished run (re-export, explain) without retraining
# ----------------------------------------------------------------------------

def load_run(run_dir):
    """(cfg, model, data) of a run: the model from stats/hparams.json + its last checkpoint."""
    import tensorflow as tf

    from util.experiment import load_data, model_from_config, validate_cheap
    from util.patch_evaluation import mvtec_shapes

    run_dir = Path(run_dir)
    hp = run_dir / "stats" / "hparams.json"
    if not hp.exists():
        raise ConfigError(f"{run_dir} is not a run directory (no stats/hparams.json)")
    cfg = json.loads(hp.read_text())
    ckpt = tf.train.latest_checkpoint(str(run_dir / "ckpt"))
    if ckpt is None and int(cfg.get("num_epoch", 0)) > 0:
        raise ConfigError(f"{run_dir} has no checkpoint under ckpt/")
    shape, _ = validate_cheap(cfg)
    shape, data_shape = mvtec_shapes(cfg, shape)  # MVTec patch mode: 32 px net, 256 px images
    data = load_data(cfg, data_shape)
    model = model_from_config(cfg, shape)
    if ckpt is not None:
        tf.train.Checkpoint(model=model).restore(ckpt).expect_partial()
    return cfg, model, data
