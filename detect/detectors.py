"""Registry of the stage-2 one-class detectors, and fitting / scoring by name.

Every detector has the interface of detect/detector_base.py: ``fit(train_feats)
-> self`` and ``score(test_feats) -> float64 array``, higher = more anomalous,
and its class carries every fact the rest of the code asks about it.

Detectors (registry names follow the reference release):

* ``kocsvm`` - OC-SVM with RBF kernel, gamma from :func:`gamma_rule`.
* ``locsvm`` - OC-SVM with linear kernel on RAW (unnormalised) features.
* ``kde``    - Gaussian kernel density, score = -(1/g) logsumexp(-g ||x-y||^2).
* ``gde``    - single full-covariance Gaussian (sklearn GaussianMixture).
* ``auc``    - 1-nearest-neighbour, score = 1 - max cosine similarity.
  (The name ``auc`` is what the reference release calls its 1-NN detector.)
* ``membank`` - Euclidean distance to the nearest row of a greedy-coreset memory
  bank of the training features (dense maps: every position of every image).
* ``posgde`` - a Gaussian per map position, Mahalanobis distance (dense maps only:
  it fits and scores [images, positions, dim]).

A new detector is one module with a detect.detector_base.Detector subclass and
one entry in ``DETECTORS``. ``parse_detectors`` is the one reader of a
``--detectors`` list. Pure numpy / scipy / scikit-learn, no TensorFlow.
"""

import time
from typing import Any, Callable, Optional, Sequence

import numpy as np

from detect.detector_base import Detector, check_features
from detect.gde import GDE
from detect.kde import KDE
from detect.memory_bank import MemoryBank
from detect.metrics import roc_auc, validate_labels
from detect.nearest_neighbour import OneNN
from detect.ocsvm import OCSVM_RBF, OCSVM_Linear
from detect.position_gde import PositionGDE
from util.errors import ConfigError

DETECTORS = {cls.name: cls for cls in (OCSVM_RBF, OCSVM_Linear, KDE, GDE, OneNN, MemoryBank,
                                         PositionGDE)}


def detector_class(name: str | type) -> type:
    """The registered class of ``name`` (a class is returned as it is)."""
    if isinstance(name, type) and issubclass(name, Detector):
        return name
    if name not in DETECTORS:
        raise ConfigError(
            f"unknown detector {name!r}; valid names: {', '.join(DETECTORS)}")
    return DETECTORS[name]


def make_detector(name: str | type, **kw: Any) -> Detector:
    """Instantiate a registered detector by name (or class); ConfigError if unknown."""
    return detector_class(name)(**kw)


def parse_detectors(spec: str | Sequence, flag: str = "--detectors") -> tuple:
    """The detector classes of a list (``"kde,gde"``, or a sequence of names or classes);
    ConfigError naming ``flag`` for an empty list, an unknown or a repeated name."""
    if isinstance(spec, (list, tuple)):
        names = [n if isinstance(n, type) else str(n).strip() for n in spec]
    else:
        spec = str(spec)
        names = [n.strip() for n in spec.split(",") if n.strip()]
    shown = spec if isinstance(spec, str) else ",".join(getattr(n, "name", n) for n in names)
    unknown = [n for n in names if not isinstance(n, type) and n not in DETECTORS]
    if unknown or not names:
        raise ConfigError(f"{flag}={shown} names unknown detectors {unknown}; "
                          f"valid names: {', '.join(DETECTORS)}")
    classes = tuple(detector_class(n) for n in names)
    repeated = sorted({c.name for c in classes if classes.count(c) > 1})
    if repeated:
        raise ConfigError(f"{flag}={shown} repeats {', '.join(repeated)}; "
                          "name each detector once")
    return classes


def export_names() -> dict:
    """``--export_detector`` name -> detector class, for every registered detector."""
    return {cls.exported_as(): cls for cls in DETECTORS.values()}


def _resolve(names) -> tuple:
    """None -> every detector of single features (registry order; the positional ones need
    maps); else ``parse_detectors``."""
    if names is None:
        return tuple(cls for cls in DETECTORS.values() if not cls.positional)
    return parse_detectors(names, "detectors")


def subsample_index(n: int, max_rows: Optional[int], seed: int = 0) -> np.ndarray:
    """Sorted indices of at most ``max_rows`` of ``n`` rows, drawn without replacement
    (fixed seed); all of them when ``max_rows`` is None or at least ``n``."""
    if max_rows is None:
        return np.arange(n)
    if isinstance(max_rows, bool) or not isinstance(max_rows, (int, np.integer)) \
            or max_rows <= 0:
        raise ConfigError(f"max_train must be a positive integer or None, "
                          f"got {max_rows!r}")
    if n <= max_rows:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, int(max_rows), replace=False))


def subsample_rows(x: np.ndarray, max_rows: Optional[int], seed: int = 0) -> np.ndarray:
    """At most `max_rows` rows of `x` (the rows of ``subsample_index``, order kept)."""
    idx = subsample_index(x.shape[0], max_rows, seed)
    return x if len(idx) == x.shape[0] else x[idx]


def score_detectors(train_feats: np.ndarray, test_feats: np.ndarray,
                    names: Optional[str | Sequence] = None, max_train: Optional[int] = 20000,
                    seed: int = 0, progress: Optional[Callable[[str], None]] = None,
                    detector_kwargs: Optional[dict] = None) -> dict:
    """Fit each named detector on (subsampled) train features, score test.

    Returns {name: float64 scores (higher = more anomalous)} in the order of
    `names` (default: all registered). `progress`, if given, is called with a
    one-line string after each detector. `detector_kwargs` maps a name to
    constructor keyword arguments.
    """
    classes = _resolve(names)
    train = check_features(train_feats, "training features")
    test = check_features(test_feats, "test features")
    if train.shape[1] != test.shape[1]:
        raise ConfigError(
            f"training features have dim {train.shape[1]} but test features "
            f"have dim {test.shape[1]}")
    train = subsample_rows(train, max_train, seed)
    detector_kwargs = detector_kwargs or {}
    out = {}
    for cls in classes:
        name = cls.name
        t0 = time.perf_counter()
        det = cls(**detector_kwargs.get(name, {})).fit(train)
        t1 = time.perf_counter()
        out[name] = det.score(test)
        t2 = time.perf_counter()
        if progress is not None:
            progress(f"{name}: fit {t1 - t0:.1f}s on {train.shape[0]} train, "
                     f"score {t2 - t1:.1f}s on {test.shape[0]} test")
    return out


def evaluate_detectors(train_feats: np.ndarray, test_feats: np.ndarray, test_labels: np.ndarray,
                       names: Optional[str | Sequence] = None, max_train: Optional[int] = 20000,
                       seed: int = 0, progress: Optional[Callable[[str], None]] = None,
                       detector_kwargs: Optional[dict] = None) -> dict:
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
