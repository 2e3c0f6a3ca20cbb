"""One-class SVMs: RBF kernel on normalised features (``kocsvm``), linear kernel on raw
features (``locsvm``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Optional

import numpy as np
from sklearn.svm import OneClassSVM

from detect.detector_base import Detector, blocks, gamma_rule, tf_l2_normalize, \
    tf_squared_distances

if TYPE_CHECKING:
    import tensorflow as tf

class _OCSVM(Detector):
    """Shared sklearn OneClassSVM wrapper; score = -score_samples.

    sklearn/libsvm works in float64, so inputs are passed as contiguous
    float64 to avoid a hidden copy; a large kernel ``cache_size`` (MB) keeps
    most of the kernel matrix cached during the SMO iterations.

    Scoring: libsvm evaluates the kernel expansion one test row at a time on
    one core (~36 s for 10k test x 10k support vectors). With
    ``fast_score=True`` (default) the same quantity, score_samples(x) =
    sum_i dual_coef_i K(x, sv_i), is computed with float64 BLAS in row
    blocks of <= ~128 MB; it matches ``estimator_.score_samples`` to float64
    rounding (checked in the tests). ``fast_score=False`` calls sklearn.
    """

    kernel = None
    _BLOCK_BYTES = 128 * 2**20

    def __init__(self, nu=0.5, cache_size=2000, fast_score=True):
        self.nu = nu
        self.cache_size = cache_size
        self.fast_score = fast_score

    def _svm_params(self, x):
        return {}

    def _fit(self, x):
        x64 = np.ascontiguousarray(x, dtype=np.float64)
        self.estimator_ = OneClassSVM(kernel=self.kernel, nu=self.nu,
                                      cache_size=self.cache_size,
                                      **self._svm_params(x))
        self.estimator_.fit(x64)

    def _score(self, x):
        x64 = np.ascontiguousarray(x, dtype=np.float64)
        if not self.fast_score:
            return -self.estimator_.score_samples(x64)
        return -self._kernel_expansion(x64)

    def _kernel_expansion(self, x64):  # pragma: no cover - abstract
        raise NotImplementedError


class OCSVM_RBF(_OCSVM):
    """RBF-kernel OC-SVM (nu=0.5) on L2-normalised features, gamma_rule gamma."""

    name = "kocsvm"
    kernel = "rbf"

    def __init__(self, nu: float = 0.5, gamma: Optional[float] = None, cache_size: float = 2000,
                 fast_score: bool = True) -> None:
        super().__init__(nu=nu, cache_size=cache_size, fast_score=fast_score)
        self.gamma = gamma

    def _svm_params(self, x):
        self.gamma_ = gamma_rule(x) if self.gamma is None else float(self.gamma)
        return {"gamma": self.gamma_}

    def _kernel_expansion(self, x64):
        sv = self.estimator_.support_vectors_
        coef = self.estimator_.dual_coef_[0]
        svsq = np.einsum("ij,ij->i", sv, sv)
        rows = max(1, self._BLOCK_BYTES // (8 * max(1, sv.shape[0])))
        out = np.empty(x64.shape[0])
        for rs in blocks(x64.shape[0], rows):
            xb = x64[rs]
            k = xb @ sv.T
            k *= -2.0
            k += np.einsum("ij,ij->i", xb, xb)[:, None]
            k += svsq[None, :]
            np.maximum(k, 0.0, out=k)
            k *= -self.gamma_
            np.exp(k, out=k)
            out[rs] = k @ coef
        return out

    def export_params(self) -> dict:
        est = self.estimator_
        return {"sv": est.support_vectors_.astype(np.float64),
                "coef": est.dual_coef_[0].astype(np.float64),
                "gamma": np.float64(self.gamma_), "offset": np.float64(est.offset_[0])}

    @staticmethod
    def graph_score(params: Mapping, feats: tf.Tensor) -> tf.Tensor:
        """float64 -sum_i a_i exp(-g ||x - sv_i||^2) (libsvm's offset is stored, not used)."""
        import tensorflow as tf

        x = tf.cast(tf_l2_normalize(tf.cast(feats, tf.float32)), tf.float64)
        sv = tf.cast(params["sv"], tf.float64)
        g = tf.cast(params["gamma"], tf.float64)
        k = tf.exp(-g * tf.maximum(tf_squared_distances(x, sv), 0.0))
        return -tf.linalg.matvec(k, tf.cast(params["coef"], tf.float64))


class OCSVM_Linear(_OCSVM):
    """Linear-kernel OC-SVM (nu=0.5) on RAW features, as in the reference."""

    name = "locsvm"
    kernel = "linear"
    normalize = False

    def _kernel_expansion(self, x64):
        # sum_i a_i <x, sv_i> = <x, sum_i a_i sv_i> = x . coef_
        return x64 @ self.estimator_.coef_[0]

    def export_params(self) -> dict:
        est = self.estimator_
        return {"w": est.coef_[0].astype(np.float64), "offset": np.float64(est.offset_[0])}

    @staticmethod
    def graph_score(params: Mapping, feats: tf.Tensor) -> tf.Tensor:
        """float64 -x . w on raw features."""
        import tensorflow as tf

        x = tf.cast(tf.cast(feats, tf.float32), tf.float64)
        return -tf.linalg.matvec(x, tf.cast(params["w"], tf.float64))
