"""Evaluation metrics for one-class classification.

Convention used throughout the project (and by the DROC paper): inliers carry
label 0 (the negative class), outliers label 1 (the positive class), and a higher
score means "more anomalous". ROC AUC is reported multiplied by 100.
"""

import numpy as np
from sklearn.metrics import roc_auc_score

from util.errors import ConfigError


def _as_binary_labels(labels):
    """Return labels as a 1-D int array, refusing anything but 0/1."""
    arr = np.asarray(labels)
    if arr.dtype == bool:
        return arr.ravel().astype(np.int64)
    arr = arr.ravel()
    if arr.size and not np.issubdtype(arr.dtype, np.number):
        raise ConfigError(
            f"labels must be numeric 0 (inlier) / 1 (outlier), got dtype {arr.dtype}")
    bad = ~np.isin(arr, (0, 1))
    if np.any(bad):
        found = np.unique(arr[bad])[:5].tolist()
        raise ConfigError(
            "labels must be 0 (inlier) or 1 (outlier); found other values "
            f"{found}")
    return arr.astype(np.int64)


def validate_labels(labels, n=None):
    """Check test labels for AUC: 0/1 only, both classes, length `n` if given.

    Returns them as a 1-D int64 array. Raises ConfigError with a clear
    message otherwise; cheap, so callers can run it before slow work.
    """
    y = _as_binary_labels(labels)
    if n is not None and y.shape[0] != n:
        raise ConfigError(
            f"labels and scores differ in length: {y.shape[0]} labels vs "
            f"{n} scores/samples")
    if y.shape[0] == 0:
        raise ConfigError("cannot compute ROC AUC on an empty test set")
    n_out = int(y.sum())
    if n_out == 0 or n_out == y.shape[0]:
        which = "inliers (0)" if n_out == 0 else "outliers (1)"
        raise ConfigError(
            f"ROC AUC needs both inliers (0) and outliers (1) in the test "
            f"labels, but all {y.shape[0]} are {which}")
    return y


def roc_auc(labels, scores):
    """ROC AUC x 100, inlier = 0 (negative), outlier = 1 (positive).

    `scores` must be oriented so that higher = more anomalous; a perfect
    detector gives 100, a perfectly reversed one 0, chance 50.

    Raises ConfigError for mismatched lengths, labels other than 0/1 or a
    single class present (AUC is undefined), and ValueError for non-finite
    scores (a NaN score is a bug upstream, not a user mistake).
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = validate_labels(labels, s.shape[0])
    if np.isnan(s).any():
        raise ValueError(
            f"scores contain {int(np.isnan(s).sum())} NaN value(s); "
            "the detector produced invalid output")
    if not np.isfinite(s).all():
        raise ValueError("scores contain infinite values; the detector "
                         "produced invalid output")
    return float(roc_auc_score(y, s) * 100.0)
