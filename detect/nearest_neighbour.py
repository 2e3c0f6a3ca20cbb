"""1-nearest neighbour by cosine similarity (registry name ``auc``, as the release)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

import numpy as np

from detect.detector_base import ChunkedDetector, blocks, tf_l2_normalize

if TYPE_CHECKING:
    import tensorflow as tf

class OneNN(ChunkedDetector):
    """1-nearest neighbour: score = 1 - max_y cos(x, y).

    Inputs are L2-normalised, so the cosine similarity is a dot product;
    the max is taken block-wise like the KDE to bound memory.
    """

    name = "auc"
    export_name = "nn"

    def _fit(self, x):
        self._y = x

    def _score(self, x):
        out = np.empty(x.shape[0], dtype=np.float64)
        for rs in blocks(x.shape[0], self.chunk_size):
            best = np.full(rs.stop - rs.start, -np.inf, dtype=np.float32)
            for cs in blocks(self._y.shape[0], self.train_chunk_size):
                np.maximum(best, (x[rs] @ self._y[cs].T).max(axis=1), out=best)
            out[rs] = 1.0 - best.astype(np.float64)
        return out

    def export_params(self) -> dict:
        return {"train": self._y}

    @staticmethod
    def graph_score(params: Mapping, feats: tf.Tensor) -> tf.Tensor:
        """float32 scores: 1 - the largest dot product with the stored normalised rows."""
        import tensorflow as tf

        feats = tf_l2_normalize(tf.cast(feats, tf.float32))
        y = tf.cast(params["train"], tf.float32)
        return 1.0 - tf.reduce_max(tf.matmul(feats, y, transpose_b=True), axis=1)
