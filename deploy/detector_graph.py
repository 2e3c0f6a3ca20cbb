"""Fitted detectors as TensorFlow computations, for the export and the explanations.

``detector_params`` reads the numpy parameters of a fitted detect.detectors
Detector; ``tf_detector_score`` computes the same scores from them inside a
graph (differentiable, no scikit-learn needed to serve):

* ``kde``: -(1/g) logsumexp(-g ||x - y||^2) over the stored training features;
* ``gde``: -log N(x; mean, cov) from the mean and the Cholesky factor of the
  precision matrix;
* ``kocsvm``: -sum_i a_i exp(-g ||x - sv_i||^2) (support vectors, dual
  coefficients, gamma; the libsvm offset is stored too);
* ``locsvm``: -x . w on raw features;
* ``nn`` (registry name ``auc``): 1 - max cosine similarity to the stored
  training features;
* ``membank``: Euclidean distance to the nearest row of the stored memory bank
  (raw features);
* ``posgde``: on [B, positions, D] features, the Mahalanobis distance to each
  position's Gaussian (means and Cholesky factors of the precisions, float32).
"""

import numpy as np

from detect.detector_base import check_features, l2_normalize
from util.errors import ConfigError

def detector_params(det, fit_feats):
    """Numpy parameters of a fitted detect.detectors Detector for the TF scorer."""
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
    if name == "membank":
        return {"bank": det.bank_.astype(np.float32)}
    if name == "posgde":
        return {"mean": det.mean_.astype(np.float32),
                "prec_chol": det.prec_chol_.astype(np.float32)}
    raise ConfigError(f"detector {name} cannot be exported")


def tf_detector_score(name, params, feats):
    """Scores of float32 features [B, D] as a differentiable TF computation (float64 out
    for gde/ocsvm, float32 for kde/nn); ``params`` are tensors or numpy arrays."""
    import tensorflow as tf

    feats = tf.cast(feats, tf.float32)
    if name == "membank":  # the order of the numpy detector's float32 operations
        bank = tf.cast(params["bank"], tf.float32)
        d2 = -2.0 * tf.matmul(feats, bank, transpose_b=True) + tf.reduce_sum(bank * bank, -1)[None]
        best = tf.reduce_min(d2, axis=1) + tf.reduce_sum(feats * feats, -1)
        return tf.sqrt(tf.maximum(best, 0.0))
    if name == "posgde":  # feats [B, P, D]: positions as the batch of one matmul
        centred = tf.transpose(feats - tf.cast(params["mean"], tf.float32)[None], [1, 0, 2])
        z = tf.matmul(centred, tf.cast(params["prec_chol"], tf.float32))  # [P, B, D]
        return tf.transpose(tf.sqrt(tf.reduce_sum(tf.square(z), -1)))    # [B, P]
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
        # the diagonal as a masked sum: OpenVINO has no MatrixDiagPart
        diag = tf.reduce_sum(pc * np.eye(int(pc.shape[0])), axis=0)
        log_det = tf.reduce_sum(tf.math.log(diag))
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
