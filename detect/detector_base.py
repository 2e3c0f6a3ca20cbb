"""The one interface of every stage-2 detector, and the helpers they share.

``fit(train_feats) -> self`` and ``score(test_feats) -> float64 array``, where
a HIGHER score means MORE anomalous, so the scores go straight into
``detect.metrics.roc_auc`` (inlier 0 / outlier 1). Every detector but the
linear OC-SVM L2-normalises its inputs first (``normalize = True``), as the
paper fits detectors on normalised features; kernel widths are computed on
those normalised training features. Pure numpy, no TensorFlow.
"""

import numpy as np

from util.errors import ConfigError

# Default block shape for the chunked test x train computations: 2048 x 8192
# float32 = 64 MB for the block itself; with the few in-place passes the peak
# extra memory stays well under ~256 MB regardless of data size.
DEFAULT_CHUNK_SIZE = 2048
DEFAULT_TRAIN_CHUNK_SIZE = 8192


# ----------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------

def check_features(x, what="features", positional=False):
    """Return `x` as a finite, C-contiguous float32 (n, d) array, or (n, positions, d)
    for a ``positional`` detector (one feature per map position of each image).

    Raises ConfigError with a message naming `what` for a wrong shape, an
    empty array or non-finite entries (NaN/inf features would otherwise
    silently poison every distance and AUC).
    """
    try:
        arr = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{what} must be a numeric array: {e}") from None
    if positional and arr.ndim != 3:
        raise ConfigError(f"{what} must be a 3-D (n_images, positions, dim) array, got shape "
                          f"{arr.shape}")
    if not positional and arr.ndim != 2:
        raise ConfigError(
            f"{what} must be a 2-D (n_samples, dim) array, got shape {arr.shape}")
    if 0 in arr.shape:
        raise ConfigError(f"{what} is empty (shape {arr.shape})")
    finite = np.isfinite(arr)
    if not finite.all():
        bad_rows = int((~finite.reshape(len(arr), -1).all(axis=1)).sum())
        raise ConfigError(
            f"{what} contain non-finite values (NaN or inf) in {bad_rows} of "
            f"{arr.shape[0]} rows; check the feature extractor / checkpoint "
            "(or float32 overflow of very large features)")
    return np.ascontiguousarray(arr)


def l2_normalize(x, eps=1e-12):
    """Row-wise L2 normalisation in float32; all-zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norm, np.float32(eps))).astype(np.float32, copy=False)


def gamma_rule(train_feats):
    """gamma = 10 / (Var(F_train) * dim), Var over all entries.

    This is 10x scikit-learn's ``gamma='scale'``, the paper's choice for the
    RBF OC-SVM and the KDE. Returned as a Python float because sklearn
    validates the type of ``gamma``. Constant training features have zero
    variance and no meaningful kernel width: that raises ConfigError rather
    than silently using an arbitrary fallback.
    """
    x = np.asarray(train_feats)
    if x.ndim != 2 or x.size == 0:
        raise ConfigError(
            f"gamma_rule needs a non-empty 2-D feature array, got shape {x.shape}")
    var = float(np.var(x, dtype=np.float64))
    if not np.isfinite(var) or var <= 0.0:
        raise ConfigError(
            "training features have zero (or non-finite) variance, so the "
            "kernel width gamma = 10 / (Var * dim) is undefined; the features "
            "are constant - check the feature extractor")
    return float(10.0 / (var * x.shape[1]))


def blocks(n, size):
    """Consecutive slices of length <= size covering range(n)."""
    size = max(1, int(size))
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def check_chunk(value, what):
    try:
        ok = int(value) == value and int(value) > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


# ----------------------------------------------------------------------------
# Detector interface
# ----------------------------------------------------------------------------

class Detector:
    """Base class: validation + optional L2 normalisation around _fit/_score.

    Subclasses implement ``_fit(x)`` and ``_score(x)`` on already-checked
    float32 arrays (normalised when ``normalize`` is True), so input handling
    is identical for every detector and written once.
    """

    name = None
    normalize = True
    #: a positional detector models each map position on its own: it fits on and scores
    #: [images, positions, dim] features and returns [images, positions] scores
    positional = False

    def _prepare(self, feats, what):
        x = check_features(feats, what, self.positional)
        return l2_normalize(x) if self.normalize else x

    def fit(self, train_feats):
        x = self._prepare(train_feats, f"{self.name} training features")
        self.dim_ = x.shape[-1]
        self.n_train_ = x.shape[0]
        if self.positional:
            self.positions_ = x.shape[1]
        self._fit(x)
        return self

    def score(self, test_feats):
        if not hasattr(self, "dim_"):
            raise RuntimeError(f"{type(self).__name__}.score called before fit")
        x = self._prepare(test_feats, f"{self.name} test features")
        if x.shape[-1] != self.dim_:
            raise ConfigError(
                f"{self.name}: test features have dim {x.shape[-1]} but the "
                f"detector was fit on dim {self.dim_}")
        if self.positional:
            if x.shape[1] != self.positions_:
                raise ConfigError(f"{self.name}: test maps have {x.shape[1]} positions but the "
                                  f"detector was fit on {self.positions_}")
            return np.asarray(self._score(x), dtype=np.float64).reshape(x.shape[:2])
        return np.asarray(self._score(x), dtype=np.float64).reshape(-1)

    def _fit(self, x):  # pragma: no cover - abstract
        raise NotImplementedError

    def _score(self, x):  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}(name={self.name!r})"


class ChunkedDetector(Detector):
    """Shared block sizes for detectors that scan a test x train matrix.

    The full matrix (e.g. 10k x 20k) is never materialised: test rows are
    processed ``chunk_size`` at a time against ``train_chunk_size`` training
    rows, so peak extra memory is about chunk_size * train_chunk_size * 4 B.
    """

    def __init__(self, chunk_size=DEFAULT_CHUNK_SIZE,
                 train_chunk_size=DEFAULT_TRAIN_CHUNK_SIZE):
        self.chunk_size = check_chunk(chunk_size, "chunk_size")
        self.train_chunk_size = check_chunk(train_chunk_size, "train_chunk_size")
