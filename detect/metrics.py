"""Evaluation metrics for one-class classification.

Convention used throughout the project (and by the DROC paper): inliers carry
label 0 (the negative class), outliers label 1 (the positive class), and a higher
score means "more anomalous". ROC AUC is reported multiplied by 100.
"""

from typing import Optional

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


def validate_labels(labels: np.ndarray, n: Optional[int] = None) -> np.ndarray:
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


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
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


# ----------------------------------------------------------------------------
# Threshold-free and thresholded metrics beyond ROC AUC (names as in anomalib)
# ----------------------------------------------------------------------------

def _checked(labels, scores):
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = validate_labels(labels, s.shape[0])
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinite values; the detector produced "
                         "invalid output")
    return y, s


def _precision_recall(y, s):
    """Precision and recall at every distinct threshold 'score >= t', high t first."""
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last_of_tie = np.r_[np.nonzero(np.diff(s_sorted))[0], len(s_sorted) - 1]
    tp = np.cumsum(y_sorted)[last_of_tie].astype(np.float64)
    flagged = (last_of_tie + 1).astype(np.float64)
    return tp / flagged, tp / y.sum(), s_sorted[last_of_tie]


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the precision-recall curve (outliers positive) x 100.

    Step-wise (average precision): sum over thresholds of (R_k - R_{k-1}) P_k,
    the same definition as scikit-learn's average_precision_score.
    """
    y, s = _checked(labels, scores)
    precision, recall, _ = _precision_recall(y, s)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision) * 100.0)


def f1_max(labels: np.ndarray, scores: np.ndarray) -> float:
    """Best F1 x 100 over all thresholds 'score >= t' (images or pixels alike)."""
    y, s = _checked(labels, scores)
    precision, recall, _ = _precision_recall(y, s)
    denom = precision + recall
    f1 = np.where(denom > 0, 2 * precision * recall / np.where(denom > 0, denom, 1), 0.0)
    return float(f1.max() * 100.0)


def rates_at_threshold(labels: np.ndarray, scores: np.ndarray,
                       threshold: float) -> tuple[float, float]:
    """(TPR, FPR) of the decision 'score > threshold' (outlier = positive)."""
    y, s = _checked(labels, scores)
    flagged = s > threshold
    return float(flagged[y == 1].mean()), float(flagged[y == 0].mean())


def image_metrics(labels: np.ndarray, scores: np.ndarray,
                  threshold: Optional[float] = None) -> dict:
    """anomalib-style metrics of one detector: image_AUROC, image_AUPR and image_F1Max
    (x 100) and, given a threshold, the rates image_TPR / image_FPR (in [0, 1]) there."""
    out = {"image_AUROC": roc_auc(labels, scores),
           "image_AUPR": average_precision(labels, scores),
           "image_F1Max": f1_max(labels, scores)}
    if threshold is not None:
        out["image_TPR"], out["image_FPR"] = rates_at_threshold(labels, scores, threshold)
    return out
