"""Stage-2 shallow one-class detectors fit on frozen features.

Every detector follows one interface: ``fit(train_feats) -> self`` and
``score(test_feats) -> float64 array`` where a HIGHER score means MORE
anomalous, so the scores can go straight into ``util.metrics.roc_auc``
(inlier 0 / outlier 1).

Detectors (registry names follow the reference release):

* ``kocsvm`` - OC-SVM with RBF kernel, gamma from :func:`gamma_rule`.
* ``locsvm`` - OC-SVM with linear kernel on RAW (unnormalised) features.
* ``kde``    - Gaussian kernel density, score = -(1/g) logsumexp(-g ||x-y||^2).
* ``gde``    - single full-covariance Gaussian (sklearn GaussianMixture).
* ``auc``    - 1-nearest-neighbour, score = 1 - max cosine similarity.
  (The name ``auc`` is what the reference release calls its 1-NN detector.)

All but ``locsvm`` L2-normalise their inputs first (``normalize = True``), as
the paper fits detectors on normalised features; gamma is computed on those
normalised training features. Pure numpy / scipy / scikit-learn, no TensorFlow.
"""

import time

import numpy as np
from sklearn.mixture import GaussianMixture
from sklearn.svm import OneClassSVM

from util.errors import ConfigError
from util.metrics import roc_auc, validate_labels

# Default block shape for the chunked test x train computations: 2048 x 8192
# float32 = 64 MB for the block itself; with the few in-place passes the peak
# extra memory stays well under ~256 MB regardless of data size.
DEFAULT_CHUNK_SIZE = 2048
DEFAULT_TRAIN_CHUNK_SIZE = 8192


# ----------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------

def check_features(x, what="features"):
    """Return `x` as a finite, C-contiguous float32 (n, d) array.

    Raises ConfigError with a message naming `what` for a wrong shape, an
    empty array or non-finite entries (NaN/inf features would otherwise
    silently poison every distance and AUC).
    """
    try:
        arr = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{what} must be a numeric array: {e}") from None
    if arr.ndim != 2:
        raise ConfigError(
            f"{what} must be a 2-D (n_samples, dim) array, got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ConfigError(f"{what} is empty (shape {arr.shape})")
    finite = np.isfinite(arr)
    if not finite.all():
        bad_rows = int((~finite.all(axis=1)).sum())
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


def _blocks(n, size):
    """Consecutive slices of length <= size covering range(n)."""
    size = max(1, int(size))
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def _check_chunk(value, what):
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

    def _prepare(self, feats, what):
        x = check_features(feats, what)
        return l2_normalize(x) if self.normalize else x

    def fit(self, train_feats):
        x = self._prepare(train_feats, f"{self.name} training features")
        self.dim_ = x.shape[1]
        self.n_train_ = x.shape[0]
        self._fit(x)
        return self

    def score(self, test_feats):
        if not hasattr(self, "dim_"):
            raise RuntimeError(f"{type(self).__name__}.score called before fit")
        x = self._prepare(test_feats, f"{self.name} test features")
        if x.shape[1] != self.dim_:
            raise ConfigError(
                f"{self.name}: test features have dim {x.shape[1]} but the "
                f"detector was fit on dim {self.dim_}")
        return np.asarray(self._score(x), dtype=np.float64).reshape(-1)

    def _fit(self, x):  # pragma: no cover - abstract
        raise NotImplementedError

    def _score(self, x):  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}(name={self.name!r})"


class _ChunkedDetector(Detector):
    """Shared block sizes for detectors that scan a test x train matrix.

    The full matrix (e.g. 10k x 20k) is never materialised: test rows are
    processed ``chunk_size`` at a time against ``train_chunk_size`` training
    rows, so peak extra memory is about chunk_size * train_chunk_size * 4 B.
    """

    def __init__(self, chunk_size=DEFAULT_CHUNK_SIZE,
                 train_chunk_size=DEFAULT_TRAIN_CHUNK_SIZE):
        self.chunk_size = _check_chunk(chunk_size, "chunk_size")
        self.train_chunk_size = _check_chunk(train_chunk_size, "train_chunk_size")


class KDE(_ChunkedDetector):
    """Gaussian KDE: score(x) = -(1/g) * logsumexp_y(-g ||x - y||^2).

    Squared distances come from float32 BLAS (||x||^2 + ||y||^2 - 2 x.y,
    clamped at 0) and the logsumexp is streamed over training blocks with a
    running max, so it neither underflows for large gamma nor needs the full
    distance matrix in memory.
    """

    name = "kde"

    def __init__(self, gamma=None, chunk_size=DEFAULT_CHUNK_SIZE,
                 train_chunk_size=DEFAULT_TRAIN_CHUNK_SIZE):
        super().__init__(chunk_size, train_chunk_size)
        self.gamma = gamma

    def _fit(self, x):
        self.gamma_ = gamma_rule(x) if self.gamma is None else float(self.gamma)
        if not self.gamma_ > 0:
            raise ConfigError(f"kde gamma must be > 0, got {self.gamma_}")
        g = np.float32(self.gamma_)
        # Pre-scale so each block is one matmul plus two broadcast subtractions:
        # -g||x-y||^2 = x.(2g y) - g||x||^2 - g||y||^2.
        self._y2g = np.ascontiguousarray(x * (2 * g))
        self._gyy = g * np.einsum("ij,ij->i", x, x)

    def _score(self, x):
        g = np.float32(self.gamma_)
        out = np.empty(x.shape[0], dtype=np.float64)
        for rs in _blocks(x.shape[0], self.chunk_size):
            xb = x[rs]
            gxx = (g * np.einsum("ij,ij->i", xb, xb))[:, None]
            run_max = np.full(xb.shape[0], -np.inf)
            run_sum = np.zeros(xb.shape[0])
            for cs in _blocks(self._y2g.shape[0], self.train_chunk_size):
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


class OneNN(_ChunkedDetector):
    """1-nearest neighbour: score = 1 - max_y cos(x, y).

    Inputs are L2-normalised, so the cosine similarity is a dot product;
    the max is taken block-wise like the KDE to bound memory.
    """

    name = "auc"

    def _fit(self, x):
        self._y = x

    def _score(self, x):
        out = np.empty(x.shape[0], dtype=np.float64)
        for rs in _blocks(x.shape[0], self.chunk_size):
            best = np.full(rs.stop - rs.start, -np.inf, dtype=np.float32)
            for cs in _blocks(self._y.shape[0], self.train_chunk_size):
                np.maximum(best, (x[rs] @ self._y[cs].T).max(axis=1), out=best)
            out[rs] = 1.0 - best.astype(np.float64)
        return out


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

    def __init__(self, reg_covar=1e-6, max_reg_covar=1e-1, random_state=0):
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

    def __init__(self, nu=0.5, gamma=None, cache_size=2000, fast_score=True):
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
        for rs in _blocks(x64.shape[0], rows):
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


class OCSVM_Linear(_OCSVM):
    """Linear-kernel OC-SVM (nu=0.5) on RAW features, as in the reference."""

    name = "locsvm"
    kernel = "linear"
    normalize = False

    def _kernel_expansion(self, x64):
        # sum_i a_i <x, sv_i> = <x, sum_i a_i sv_i> = x . coef_
        return x64 @ self.estimator_.coef_[0]


# ----------------------------------------------------------------------------
# Registry and evaluation
# ----------------------------------------------------------------------------

DETECTORS = {cls.name: cls for cls in (OCSVM_RBF, OCSVM_Linear, KDE, GDE, OneNN)}


def make_detector(name, **kw):
    """Instantiate a registered detector by name; ConfigError if unknown."""
    if name not in DETECTORS:
        raise ConfigError(
            f"unknown detector {name!r}; valid names: {', '.join(DETECTORS)}")
    return DETECTORS[name](**kw)


def _resolve_names(names):
    """None -> all (registry order); also accepts 'kde,gde' strings."""
    if names is None:
        return list(DETECTORS)
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    names = list(names)
    if not names:
        raise ConfigError(
            f"no detector names given; valid names: {', '.join(DETECTORS)}")
    unknown = [n for n in names if n not in DETECTORS]
    if unknown:
        raise ConfigError(
            f"unknown detector(s) {unknown}; valid names: {', '.join(DETECTORS)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"detector names repeated: {names}")
    return names


def subsample_rows(x, max_rows, seed=0):
    """At most `max_rows` rows of `x`, drawn without replacement (fixed seed).

    Row order is preserved (sorted indices). ``max_rows=None`` keeps all.
    """
    if max_rows is None:
        return x
    if isinstance(max_rows, bool) or not isinstance(max_rows, (int, np.integer)) \
            or max_rows <= 0:
        raise ConfigError(f"max_train must be a positive integer or None, "
                          f"got {max_rows!r}")
    n = x.shape[0]
    if n <= max_rows:
        return x
    idx = np.sort(np.random.default_rng(seed).choice(n, int(max_rows),
                                                     replace=False))
    return x[idx]


def score_detectors(train_feats, test_feats, names=None, max_train=20000,
                    seed=0, progress=None, detector_kwargs=None):
    """Fit each named detector on (subsampled) train features, score test.

    Returns {name: float64 scores (higher = more anomalous)} in the order of
    `names` (default: all registered). `progress`, if given, is called with a
    one-line string after each detector. `detector_kwargs` maps a name to
    constructor keyword arguments.
    """
    names = _resolve_names(names)
    train = check_features(train_feats, "training features")
    test = check_features(test_feats, "test features")
    if train.shape[1] != test.shape[1]:
        raise ConfigError(
            f"training features have dim {train.shape[1]} but test features "
            f"have dim {test.shape[1]}")
    train = subsample_rows(train, max_train, seed)
    detector_kwargs = detector_kwargs or {}
    out = {}
    for name in names:
        t0 = time.perf_counter()
        det = make_detector(name, **detector_kwargs.get(name, {})).fit(train)
        t1 = time.perf_counter()
        out[name] = det.score(test)
        t2 = time.perf_counter()
        if progress is not None:
            progress(f"{name}: fit {t1 - t0:.1f}s on {train.shape[0]} train, "
                     f"score {t2 - t1:.1f}s on {test.shape[0]} test")
    return out


def evaluate_detectors(train_feats, test_feats, test_labels, names=None,
                       max_train=20000, seed=0, progress=None,
                       detector_kwargs=None):
    """{name: ROC AUC x 100} for each detector (labels: 0 inlier, 1 outlier).

    Labels are validated before any (possibly slow) detector is fit.
    """
    test_feats = check_features(test_feats, "test features")
    validate_labels(test_labels, test_feats.shape[0])
    scores = score_detectors(train_feats, test_feats, names=names,
                             max_train=max_train, seed=seed, progress=progress,
                             detector_kwargs=detector_kwargs)
    aucs = {}
    for name, s in scores.items():
        aucs[name] = roc_auc(test_labels, s)
        if progress is not None:
            progress(f"{name}: AUC {aucs[name]:.2f}")
    return aucs
