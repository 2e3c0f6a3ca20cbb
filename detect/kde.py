"""Gaussian kernel density estimator (``kde``): the paper's default detector."""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Optional

import numpy as np

from detect.detector_base import (DEFAULT_CHUNK_SIZE, DEFAULT_TRAIN_CHUNK_SIZE, ChunkedDetector,
                                  blocks, gamma_rule, tf_l2_normalize, tf_squared_distances)
from util.errors import ConfigError

if TYPE_CHECKING:
    import tensorflow as tf

class KDE(ChunkedDetector):
    """Gaussian KDE: score(x) = -(1/g) * logsumexp_y(-g ||x - y||^2).

    Squared distances come from float32 BLAS (||x||^2 + ||y||^2 - 2 x.y,
    clamped at 0) and the logsumexp is streamed over training blocks with a
    running max, so it neither underflows for large gamma nor needs the full
    distance matrix in memory.
    """

    name = "kde"
    auto_export_rank = 0  # the paper's detector

    def __init__(self, gamma: Optional[float] = None, chunk_size: int = DEFAULT_CHUNK_SIZE,
                 train_chunk_size: int = DEFAULT_TRAIN_CHUNK_SIZE) -> None:
        super().__init__(chunk_size, train_chunk_size)
        self.gamma = gamma

    def _fit(self, x):
        self.gamma_ = gamma_rule(x) if self.gamma is None else float(self.gamma)
        if not self.gamma_ > 0:
            raise ConfigError(f"kde gamma must be > 0, got {self.gamma_}")
        g = np.float32(self.gamma_)
        self.train_ = x  # the normalised training features, which the export stores
        # Pre-scale so each block is one matmul plus two broadcast subtractions:
        # -g||x-y||^2 = x.(2g y) - g||x||^2 - g||y||^2.
        self._y2g = np.ascontiguousarray(x * (2 * g))
        self._gyy = g * np.einsum("ij,ij->i", x, x)

    def _score(self, x):
        g = np.float32(self.gamma_)
        out = np.empty(x.shape[0], dtype=np.float64)
        for rs in blocks(x.shape[0], self.chunk_size):
            xb = x[rs]
            gxx = (g * np.einsum("ij,ij->i", xb, xb))[:, None]
            run_max = np.full(xb.shape[0], -np.inf)
            run_sum = np.zeros(xb.shape[0])
            for cs in blocks(self._y2g.shape[0], self.train_chunk_size):
                a = xb @ self._y2g[cs].T          # 2g x.y, float32
                a -= gxx
                a -= self._gyy[cs][None, :]       # now -g * d^2
                np.minimum(a, 0, out=a)           # clamp d^2 >= 0
                bmax = a.max(axis=1).astype(np.float64)
                a -= bmax.astype(np.float32)[:, None]
                np.exp(a, out=a)
                bsum = a.sum(axis=1, dtype=np.float64)
                new_max = np.maximum(run_max, bmax)
                run_sum = (run_sum * np.exp(run_max - new_max)
                           + bsum * np.exp(bmax - new_max))
                run_max = new_max
            out[rs] = -(run_max + np.log(run_sum)) / self.gamma_
        return out

    def export_params(self) -> dict:
        return {"train": self.train_, "gamma": np.float64(self.gamma_)}

    @staticmethod
    def graph_score(params: Mapping, feats: tf.Tensor) -> tf.Tensor:
        """float32 scores; the logsumexp over every stored training feature at once."""
        import tensorflow as tf

        feats = tf_l2_normalize(tf.cast(feats, tf.float32))
        g = tf.cast(params["gamma"], tf.float32)
        d2 = tf_squared_distances(feats, tf.cast(params["train"], tf.float32))
        return -tf.reduce_logsumexp(-g * tf.maximum(d2, 0.0), axis=1) / g
