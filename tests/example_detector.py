"""An example detector written for the test suite only: what adding a detector takes.

A detector is this one file (a detect.detector_base.Detector subclass: its facts as
class attributes, ``_fit`` / ``_score`` in numpy, ``export_params`` / ``graph_score``
for the export) plus one entry in detect.detectors.DETECTORS; tests/test_new_detector.py
adds that entry and runs it through training, calibration, summary.json, the export and
script/score.py.
"""

import numpy as np

from detect.detector_base import ChunkedDetector, blocks, tf_l2_normalize, tf_squared_distances


class MeanKNearest(ChunkedDetector):
    """score(x) = the mean Euclidean distance from x to its ``K`` nearest training rows
    (L2-normalised features, as kde and 1-NN)."""

    name = "knn3"
    min_fit_rows = 3
    K = 3

    def _fit(self, x):
        if len(x) < self.K:
            raise ValueError(f"{self.name} needs at least {self.K} training rows")
        self.train_ = x

    def _score(self, x):
        out = np.empty(x.shape[0], dtype=np.float64)
        sq = np.einsum("ij,ij->i", self.train_, self.train_)
        for rs in blocks(x.shape[0], self.chunk_size):
            xb = x[rs]
            d2 = np.einsum("ij,ij->i", xb, xb)[:, None] + sq[None] - 2.0 * (xb @ self.train_.T)
            nearest = np.sort(np.maximum(d2, 0.0), axis=1)[:, :self.K]
            out[rs] = np.sqrt(nearest).mean(axis=1)
        return out

    def export_params(self):
        return {"train": self.train_}

    @staticmethod
    def graph_score(params, feats):
        import tensorflow as tf

        feats = tf_l2_normalize(tf.cast(feats, tf.float32))
        d2 = tf_squared_distances(feats, tf.cast(params["train"], tf.float32))
        nearest = -tf.math.top_k(-tf.maximum(d2, 0.0), k=MeanKNearest.K).values
        return tf.reduce_mean(tf.sqrt(nearest), axis=1)
