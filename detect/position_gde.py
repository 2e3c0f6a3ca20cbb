"""A Gaussian per map position (``posgde``): where a part is always in the same place,
what is normal at one position is not normal at another.

For a fixed camera and fixture (a bottle seen from above, a board on a jig) a
feature can be normal in one corner and a defect in the middle. The detector
fits one full-covariance Gaussian to the training features of each map
position and scores a feature by its Mahalanobis distance to its position's
Gaussian. A few dozen training images give a covariance of rank below the
feature dimension, so each covariance is regularised by ``reg`` times its mean
variance on the diagonal. Parts that move or rotate between images break the
assumption: ``membank`` compares every feature with every training position.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

import numpy as np
from threadpoolctl import threadpool_limits

from detect.detector_base import Detector
from util.errors import ConfigError

if TYPE_CHECKING:
    import tensorflow as tf

#: the diagonal added to each position's covariance, as a fraction of its mean variance
REGULARISATION = 0.01


class PositionGDE(Detector):
    """score = sqrt((x - mean_p)^T cov_p^-1 (x - mean_p)) at each position p."""

    name = "posgde"
    normalize = False
    positional = True
    map_only = True
    min_fit_rows = 2  # a covariance needs two images

    def __init__(self, reg: float = REGULARISATION) -> None:
        if not reg > 0:
            raise ConfigError(f"posgde: reg must be > 0, got {reg!r}")
        self.reg = float(reg)

    def _fit(self, x):
        n, positions, dim = x.shape
        if n < 2:
            raise ConfigError(f"posgde needs at least 2 training images, got {n}")
        x64 = x.astype(np.float64)
        self.mean_ = x64.mean(axis=0)                                  # [P, D]
        centred = np.ascontiguousarray((x64 - self.mean_[None]).transpose(1, 0, 2))  # [P, N, D]
        cov = np.matmul(centred.transpose(0, 2, 1), centred) / (n - 1)  # [P, D, D]
        scale = np.maximum(np.trace(cov, axis1=1, axis2=2) / dim, 1e-12)
        cov += self.reg * scale[:, None, None] * np.eye(dim)[None]
        # cov = C C^T  ->  cov^-1 = C^-T C^-1, so z = (x - mean) @ C^-T has |z|^2 the
        # squared Mahalanobis distance
        # a thousand small factorisations: one BLAS thread each is many times faster than
        # threads that wait on each other (and on TensorFlow's)
        with threadpool_limits(1):
            chol = np.linalg.cholesky(cov)
            self.prec_chol_ = np.linalg.inv(chol).transpose(0, 2, 1)  # [P, D, D]

    def _score(self, x):
        """Positions as the batch of one float32 matmul (what the exported graph runs)."""
        centred = (x - self.mean_[None].astype(np.float32)).transpose(1, 0, 2)  # [P, N, D]
        z = np.matmul(centred, self.prec_chol_.astype(np.float32))
        return np.sqrt(np.einsum("pne,pne->np", z, z, dtype=np.float64))

    def export_params(self) -> dict:
        return {"mean": self.mean_.astype(np.float32),
                "prec_chol": self.prec_chol_.astype(np.float32)}

    @staticmethod
    def graph_score(params: Mapping, feats: tf.Tensor) -> tf.Tensor:
        """float32 [B, P] scores of [B, P, D] features: positions as the batch of a matmul."""
        import tensorflow as tf

        feats = tf.cast(feats, tf.float32)
        centred = tf.transpose(feats - tf.cast(params["mean"], tf.float32)[None], [1, 0, 2])
        z = tf.matmul(centred, tf.cast(params["prec_chol"], tf.float32))  # [P, B, D]
        return tf.transpose(tf.sqrt(tf.reduce_sum(tf.square(z), -1)))    # [B, P]
