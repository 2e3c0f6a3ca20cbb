"""Gaussian density estimator (``gde``): one full-covariance Gaussian."""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Optional

import numpy as np
from sklearn.mixture import GaussianMixture

from detect.detector_base import Detector, tf_l2_normalize
from util.errors import ConfigError

if TYPE_CHECKING:
    import tensorflow as tf

class GDE(Detector):
    """Gaussian density estimator: one full-covariance Gaussian, score = -log p.

    Uses sklearn GaussianMixture(n_components=1, 'full', random_state=0) with
    sklearn's default reg_covar=1e-6 first, as the reference does; with fewer
    samples than dims that regulariser alone usually keeps the covariance
    positive definite. Only if the fit fails (Cholesky of a numerically
    singular covariance) is reg_covar raised in 10x steps (from at least
    1e-6) up to ``max_reg_covar``; the value used is kept in ``reg_covar_``
    so results stay reproducible and inspectable.
    """

    name = "gde"
    min_fit_rows = 2  # a covariance needs two rows

    def __init__(self, reg_covar: float = 1e-6, max_reg_covar: float = 1e-1,
                 random_state: Optional[int] = 0) -> None:
        self.reg_covar = float(reg_covar)
        self.max_reg_covar = float(max_reg_covar)
        self.random_state = random_state

    def _fit(self, x):
        x64 = np.ascontiguousarray(x, dtype=np.float64)
        reg = self.reg_covar
        while True:
            try:
                self.estimator_ = GaussianMixture(
                    n_components=1, covariance_type="full", reg_covar=reg,
                    random_state=self.random_state).fit(x64)
                break
            except ValueError as e:
                nxt = max(reg * 10, 1e-6)
                if nxt > self.max_reg_covar * (1 + 1e-9):
                    raise ConfigError(
                        f"gde: Gaussian fit failed even with reg_covar={reg:g} "
                        f"({e}); the training features are degenerate") from e
                reg = nxt
        self.reg_covar_ = reg

    def _score(self, x):
        return -self.estimator_.score_samples(np.asarray(x, dtype=np.float64))

    def export_params(self) -> dict:
        est = self.estimator_
        return {"mean": est.means_[0].astype(np.float64),
                "prec_chol": est.precisions_cholesky_[0].astype(np.float64)}

    @staticmethod
    def graph_score(params: Mapping, feats: tf.Tensor) -> tf.Tensor:
        """float64 -log N(x; mean, cov) from the Cholesky factor of the precision."""
        import tensorflow as tf

        x = tf.cast(tf_l2_normalize(tf.cast(feats, tf.float32)), tf.float64)
        mean = tf.cast(params["mean"], tf.float64)
        pc = tf.cast(params["prec_chol"], tf.float64)
        z = tf.matmul(x - mean[None], pc)
        dim = tf.cast(tf.shape(mean)[0], tf.float64)
        # the diagonal as a masked sum: OpenVINO has no MatrixDiagPart
        diag = tf.reduce_sum(pc * np.eye(int(pc.shape[0])), axis=0)
        log_det = tf.reduce_sum(tf.math.log(diag))
        logp = -0.5 * (dim * np.log(2 * np.pi) + tf.reduce_sum(tf.square(z), -1)) + log_det
        return -logp
