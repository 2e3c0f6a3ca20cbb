"""The one interface of every stage-2 detector, and the helpers they share.

``fit(train_feats) -> self`` and ``score(test_feats) -> float64 array``, where
a HIGHER score means MORE anomalous, so the scores go straight into
``detect.metrics.roc_auc`` (inlier 0 / outlier 1). A detector with ``normalize
= True`` L2-normalises its inputs first, as the paper fits its detectors (kde,
gde, kocsvm, 1-NN) on normalised features, with kernel widths computed on those
normalised training features; the linear OC-SVM and the feature-map detectors
(membank, posgde) take features as they are.

A detector class is the one place that says everything the rest of the code
asks about it (its class attributes below): validation, calibration, the
evaluators and the export read them, never a detector's name. Fitting and
scoring are numpy; ``graph_score`` is the same score as a TensorFlow
computation for the export, next to the numpy one it must equal. TensorFlow is
imported inside it only, so that flags are checked, and detectors fit, without
loading TensorFlow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Iterator, Mapping, Optional

import numpy as np

from util.errors import ConfigError

if TYPE_CHECKING:
    import tensorflow as tf

# Default block shape for the chunked test x train computations: 2048 x 8192
# float32 = 64 MB for the block itself; with the few in-place passes the peak
# extra memory stays well under ~256 MB regardless of data size.
DEFAULT_CHUNK_SIZE = 2048
DEFAULT_TRAIN_CHUNK_SIZE = 8192


# ----------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------

def check_features(x: np.ndarray, what: str = "features", positional: bool = False) -> np.ndarray:
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


def tf_l2_normalize(feats: tf.Tensor) -> tf.Tensor:
    """``l2_normalize`` as a TensorFlow computation (the exported graphs)."""
    import tensorflow as tf

    norm = tf.sqrt(tf.reduce_sum(tf.square(feats), axis=-1, keepdims=True))
    return feats / tf.maximum(norm, 1e-12)


def tf_squared_distances(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """||x_i - y_j||^2 [N, M] as ||x||^2 + ||y||^2 - 2 x.y, the numpy detectors' order."""
    import tensorflow as tf

    return (tf.reduce_sum(tf.square(x), -1)[:, None] + tf.reduce_sum(tf.square(y), -1)[None]
            - 2.0 * tf.matmul(x, y, transpose_b=True))


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Row-wise L2 normalisation in float32; all-zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norm, np.float32(eps))).astype(np.float32, copy=False)


def gamma_rule(train_feats: np.ndarray) -> float:
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


def blocks(n: int, size: int) -> Iterator[slice]:
    """Consecutive slices of length <= size covering range(n)."""
    size = max(1, int(size))
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def check_chunk(value: int, what: str) -> int:
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
    is identical for every detector and written once; to be exported, also
    ``export_params`` and ``graph_score``.
    """

    #: the registry name (``--detectors``, result keys such as ``pool.kde``)
    name: ClassVar[Optional[str]] = None
    #: the name ``--export_detector`` and an export's metadata use (default: ``name``)
    export_name: ClassVar[Optional[str]] = None
    normalize: ClassVar[bool] = True
    #: a positional detector models each map position on its own: its rows are whole
    #: images; it fits on and scores [images, positions, dim] features and returns
    #: [images, positions] scores
    positional: ClassVar[bool] = False
    #: it scores the cells of feature maps, so it runs with ``--mvtec_mode=map`` only
    map_only: ClassVar[bool] = False
    #: fewest training rows it can be fit on
    min_fit_rows: ClassVar[int] = 1
    #: it bounds its own size (a coreset), so it is fit on every training row of a feature
    #: map run instead of a random draw of ``--max_detector_train`` of them
    bounds_own_rows: ClassVar[bool] = False
    #: when ``--export_detector=auto`` has no AUCs to choose by, the fitted detector with
    #: the lowest rank is exported (None: never chosen that way)
    auto_export_rank: ClassVar[Optional[int]] = None
    #: values of the run its constructor takes by keyword (``from_options``)
    option_names: ClassVar[tuple] = ()

    @classmethod
    def exported_as(cls) -> str:
        return cls.export_name or cls.name

    @classmethod
    def from_options(cls, options: Optional[Mapping] = None) -> "Detector":
        """An instance with the run values among ``options`` that this detector takes."""
        options = options or {}
        return cls(**{k: options[k] for k in cls.option_names if k in options})

    def _prepare(self, feats, what):
        x = check_features(feats, what, self.positional)
        return l2_normalize(x) if self.normalize else x

    def fit(self, train_feats: np.ndarray) -> Detector:
        x = self._prepare(train_feats, f"{self.name} training features")
        self.dim_ = x.shape[-1]
        self.n_train_ = x.shape[0]
        if self.positional:
            self.positions_ = x.shape[1]
        self._fit(x)
        return self

    def score(self, test_feats: np.ndarray) -> np.ndarray:
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

    def export_params(self) -> dict:
        """The fitted parameters ``graph_score`` needs, as numpy arrays (stored in the
        export as variables)."""
        raise ConfigError(f"detector {self.name} cannot be exported")

    @staticmethod
    def graph_score(params: Mapping, feats: tf.Tensor) -> tf.Tensor:
        """The scores of float32 features as a differentiable TensorFlow computation
        from ``export_params`` (tensors or arrays); equal to ``score`` within float32."""
        raise ConfigError("this detector cannot be exported")

    def __repr__(self):
        return f"{type(self).__name__}(name={self.name!r})"


class ChunkedDetector(Detector):
    """Shared block sizes for detectors that scan a test x train matrix.

    The full matrix (e.g. 10k x 20k) is never materialised: test rows are
    processed ``chunk_size`` at a time against ``train_chunk_size`` training
    rows, so peak extra memory is about chunk_size * train_chunk_size * 4 B.
    """

    def __init__(self, chunk_size: int = DEFAULT_CHUNK_SIZE,
                 train_chunk_size: int = DEFAULT_TRAIN_CHUNK_SIZE) -> None:
        self.chunk_size = check_chunk(chunk_size, "chunk_size")
        self.train_chunk_size = check_chunk(train_chunk_size, "train_chunk_size")
