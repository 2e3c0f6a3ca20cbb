"""Memory bank (``membank``): the distance to the nearest normal training feature.

The score of a feature is its Euclidean distance to the nearest row of a bank
of training features. With dense feature maps every training image gives
hundreds of rows, so the bank keeps ``bank_size`` of them chosen by greedy
k-center (detect/coreset.py): each training row then lies close to a bank
row, rare normal patterns included, and scoring costs ``bank_size``
distances per feature. Features are used as they are (no L2 normalisation):
the distance between local feature vectors, magnitude included, is what
tells a scratch from clean metal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

import numpy as np

from detect.coreset import greedy_coreset
from detect.detector_base import (DEFAULT_CHUNK_SIZE, DEFAULT_TRAIN_CHUNK_SIZE, ChunkedDetector,
                                  blocks)
from util.errors import ConfigError

if TYPE_CHECKING:
    import tensorflow as tf

#: rows kept in the bank by default
BANK_SIZE = 4096


class MemoryBank(ChunkedDetector):
    """score(x) = min over the bank of ||x - b||; the bank is a greedy coreset of the
    training features (all of them when there are at most ``bank_size``)."""

    name = "membank"
    normalize = False
    map_only = True
    bounds_own_rows = True
    auto_export_rank = 1  # the feature maps' detector
    option_names = ("bank_size", "seed")

    def __init__(self, bank_size: int = BANK_SIZE, seed: int = 0,
                 chunk_size: int = DEFAULT_CHUNK_SIZE,
                 train_chunk_size: int = DEFAULT_TRAIN_CHUNK_SIZE) -> None:
        super().__init__(chunk_size, train_chunk_size)
        if isinstance(bank_size, bool) or int(bank_size) != bank_size or bank_size < 1:
            raise ConfigError(f"membank: bank_size must be a positive integer, got {bank_size!r}")
        self.bank_size = int(bank_size)
        self.seed = int(seed)

    def _fit(self, x):
        self.bank_ = np.ascontiguousarray(x[greedy_coreset(x, self.bank_size, seed=self.seed)])
        self._bank_norms = np.einsum("ij,ij->i", self.bank_, self.bank_)

    def _score(self, x):
        out = np.empty(x.shape[0], dtype=np.float64)
        for rs in blocks(x.shape[0], self.chunk_size):
            xb = x[rs]
            best = np.full(xb.shape[0], np.inf, dtype=np.float32)
            for cs in blocks(self.bank_.shape[0], self.train_chunk_size):
                d2 = xb @ self.bank_[cs].T
                d2 *= -2.0
                d2 += self._bank_norms[cs][None, :]
                np.minimum(best, d2.min(axis=1), out=best)
            # ||x||^2 is the same for every bank row: added once, after the minimum
            best += np.einsum("ij,ij->i", xb, xb)
            out[rs] = np.sqrt(np.maximum(best, 0.0, dtype=np.float32))
        return out

    def export_params(self) -> dict:
        return {"bank": self.bank_.astype(np.float32)}

    @staticmethod
    def graph_score(params: Mapping, feats: tf.Tensor) -> tf.Tensor:
        """float32 scores, in the order of ``_score``'s float32 operations."""
        import tensorflow as tf

        feats = tf.cast(feats, tf.float32)
        bank = tf.cast(params["bank"], tf.float32)
        d2 = -2.0 * tf.matmul(feats, bank, transpose_b=True) + tf.reduce_sum(bank * bank, -1)[None]
        best = tf.reduce_min(d2, axis=1) + tf.reduce_sum(feats * feats, -1)
        return tf.sqrt(tf.maximum(best, 0.0))
