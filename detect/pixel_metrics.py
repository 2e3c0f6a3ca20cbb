"""Localisation metrics on MVTec-style pixel maps: pixel AUROC, PRO, F1-max.

All three come from one descending sort of the scores (ties handled as one
threshold, as scikit-learn does), so 83 x 256 x 256 pixels take seconds.

* pixel AUROC: ROC AUC x 100 over every pixel of every test image (good
  images contribute their all-normal pixels).
* PRO (per-region overlap, the MVTec AD definition): each connected component
  (8-connectivity) of each ground-truth mask is one region; at a threshold,
  PRO = mean over regions of the fraction of the region's pixels above it, and
  FPR = fraction of all normal pixels above it. The PRO-vs-FPR curve is
  integrated from FPR 0 to 0.3 (linearly interpolated at 0.3) and divided by
  0.3, so a perfect localiser scores 100 (reported x 100).
* F1-max: the best F1 over all thresholds (x 100), for images or pixels.
"""

import numpy as np

from detect.metrics import f1_max
from util.errors import ConfigError

PRO_MAX_FPR = 0.3
_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 has only trapz


def _sorted_cumulative(scores, labels, weights=None):
    """Descending thresholds: cumulative positives, negatives (and weights) at each distinct score."""
    s = np.asarray(scores, np.float64).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    if s.shape != y.shape:
        raise ConfigError(f"{s.size} scores but {y.size} labels")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinite values")
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    last = np.r_[np.flatnonzero(np.diff(s_sorted)), s.size - 1]  # end of each tie group
    tps = np.cumsum(y[order])[last].astype(np.float64)
    fps = (last + 1) - tps
    w = None if weights is None else np.cumsum(np.asarray(weights, np.float64).ravel()[order])[last]
    return tps, fps, w


def _check_both(tps, fps, what):
    if tps[-1] == 0 or fps[-1] == 0:
        raise ConfigError(f"{what} needs both normal and anomalous samples")


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC x 100 (labels 1 = anomalous, higher score = more anomalous)."""
    tps, fps, _ = _sorted_cumulative(scores, labels)
    _check_both(tps, fps, "AUROC")
    tpr = np.r_[0.0, tps / tps[-1]]
    fpr = np.r_[0.0, fps / fps[-1]]
    return float(_trapezoid(tpr, fpr) * 100.0)


def region_weights(masks: np.ndarray) -> np.ndarray:
    """float64 like ``masks``: 1 / (region size * number of regions) on anomalous pixels."""
    from scipy import ndimage

    masks = np.asarray(masks).astype(bool)
    weights = np.zeros(masks.shape, np.float64)
    sizes_all, labelled = [], []
    for i, m in enumerate(masks):
        lab, k = ndimage.label(m, structure=np.ones((3, 3), int))
        if k:
            sizes = np.bincount(lab.ravel())[1:]
            labelled.append((i, lab, sizes))
            sizes_all.extend(sizes)
    if not sizes_all:
        raise ConfigError("PRO needs at least one anomalous region in the ground-truth masks")
    n_regions = len(sizes_all)
    for i, lab, sizes in labelled:
        per = np.r_[0.0, 1.0 / (sizes * n_regions)]
        weights[i] = per[lab]
    return weights


def pro_score(masks: np.ndarray, maps: np.ndarray, max_fpr: float = PRO_MAX_FPR) -> float:
    """Normalised area x 100 under the PRO-vs-FPR curve up to ``max_fpr``."""
    masks = np.asarray(masks).astype(bool)
    maps = np.asarray(maps)
    if masks.shape != maps.shape:
        raise ConfigError(f"masks {masks.shape} and score maps {maps.shape} differ in shape")
    tps, fps, pro = _sorted_cumulative(maps, masks, region_weights(masks))
    _check_both(tps, fps, "PRO")
    fpr = np.r_[0.0, fps / fps[-1]]
    pro = np.r_[0.0, pro]
    return float(_area_to(fpr, pro, max_fpr) / max_fpr * 100.0)


def _area_to(x, y, limit):
    """Trapezoid area under (x, y) (x non-decreasing) from 0 to ``limit``, interpolating there."""
    keep = x <= limit
    xs, ys = x[keep], y[keep]
    if xs[-1] < limit:
        j = np.flatnonzero(~keep)[0]
        y_lim = y[j - 1] + (y[j] - y[j - 1]) * (limit - x[j - 1]) / (x[j] - x[j - 1])
        xs, ys = np.r_[xs, limit], np.r_[ys, y_lim]
    return float(_trapezoid(ys, xs))


def pixel_metrics(masks: np.ndarray, maps: np.ndarray) -> dict:
    """{'pixel_auroc', 'pro', 'pixel_f1max'} (x 100) of pixel maps against {0,1} masks."""
    masks = np.asarray(masks).astype(bool)
    return {"pixel_auroc": auroc(masks, maps), "pro": pro_score(masks, maps),
            "pixel_f1max": f1_max(masks, maps)}
