"""Held-out inlier calibration: which training images are kept out of the detector
fit, the decision threshold at a target false-positive rate, and the map of raw
scores to [0, 1].

Convention: higher score = more abnormal; an image is flagged (decision 1) when
its raw score is strictly above the threshold.
"""

import warnings
from typing import Callable, Iterable, Mapping, Optional

import numpy as np

from util.errors import ConfigError


def check_calibration_flags(fraction: float, target_fpr: float) -> None:
    """Flag ranges, checked before anything is written."""
    if not 0.0 <= float(fraction) < 1.0:
        raise ConfigError(f"--calibration_fraction={fraction} must be in [0, 1)")
    if not 0.0 < float(target_fpr) < 1.0:
        raise ConfigError(f"--target_fpr={target_fpr} must be in (0, 1)")


def calibration_count(n: int, fraction: float) -> int:
    """How many of ``n`` training inliers ``fraction`` holds out (at least one stays)."""
    n_cal = int(round(n * float(fraction)))
    return min(n_cal, n - 1) if n > 1 else 0


def split_calibration(n: int, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(fit_idx, calib_idx): a random ``fraction`` of range(n) held out, both sorted.

    At least one image stays in the fit; with fraction 0 the calibration set is empty.
    """
    n_cal = calibration_count(n, fraction)
    perm = np.random.default_rng(seed + 7919).permutation(n)
    return np.sort(perm[n_cal:]), np.sort(perm[:n_cal])


def check_fit_size(detectors: Iterable[type], n: int, fraction: float, max_train: int,
                   rows_per_image: int = 1) -> None:
    """ConfigError, before anything is trained, when a detector would get fewer training
    rows than it needs (its ``min_fit_rows``): ``detectors`` are detector classes, ``n``
    training inliers, ``fraction`` of them held out for the calibration fit, at most
    ``max_train`` rows (``rows_per_image`` each: 1, or the patch grid or cell map of a
    patch or map run; a positional detector's rows are whole images)."""
    n_cal = calibration_count(n, fraction)
    for cls in detectors:
        name, need = cls.name, cls.min_fit_rows
        for images, why in ((n - n_cal, f"--calibration_fraction={fraction} holds out {n_cal} "
                                        f"of the {n} training images, leaving {n - n_cal}"),
                            (n, f"there are {n} training images")):
            rows = (images if cls.positional
                    else min(int(max_train), images * int(rows_per_image)))
            if rows >= need:
                continue
            if rows == int(max_train) < images * int(rows_per_image):
                raise ConfigError(f"--max_detector_train={max_train} leaves {rows} training "
                                  f"row(s) to fit {name}, which needs at least {need}")
            fix = "lower --calibration_fraction" if images < n else "add training images"
            raise ConfigError(f"{why} to fit {name}, which needs at least {need} training "
                              f"rows; {fix} or drop {name} from --detectors")


#: pixel-map values kept for the pixel threshold (and stored in patch exports)
PIXEL_SAMPLE = 250_000


def pixel_sample(pixel_maps: np.ndarray, size: int = PIXEL_SAMPLE, seed: int = 0) -> np.ndarray:
    """float32 [<= size]: a uniform random sample of the pixel values of ``pixel_maps``
    (all of them when there are fewer), for a pixel threshold at a target FPR."""
    values = np.asarray(pixel_maps, dtype=np.float32).ravel()
    if values.size <= size:
        return values.copy()
    pick = np.random.default_rng([seed, 13]).choice(values.size, size, replace=False)
    return values[np.sort(pick)]


def reliable_size(target_fpr: float) -> int:
    """Fewest calibration scores for which the target_fpr quantile is not the maximum."""
    return int(np.ceil(1.0 / float(target_fpr)))


def warn_if_small(n_calib: int, target_fpr: float,
                  log: Optional[Callable[[str], None]] = None) -> Optional[str]:
    """Warns (and returns the message) when n_calib < 1/target_fpr, else returns None."""
    need = reliable_size(target_fpr)
    if n_calib >= need:
        return None
    msg = (f"only {n_calib} calibration images for --target_fpr={target_fpr}: fewer than "
           f"1/target_fpr = {need}, so the threshold is essentially the largest calibration "
           "score and the false-positive rate on new inliers is unreliable; raise "
           "--calibration_fraction or --target_fpr")
    if log is not None:
        log(f"warning: {msg}")
    else:
        warnings.warn(msg, stacklevel=2)
    return msg


def threshold_at_fpr(calib_scores: np.ndarray, target_fpr: float) -> float:
    """The smallest calibration score t with fraction(calib > t) <= target_fpr.

    The empirical FPR on the calibration scores at t is therefore at most
    target_fpr, and as close to it as the (finite, possibly tied) scores allow.
    """
    s = np.sort(np.asarray(calib_scores, dtype=np.float64).ravel())
    if s.size == 0:
        raise ConfigError("cannot set a threshold without calibration scores")
    n = s.size
    # flagged count above s[k] is n - 1 - k for distinct scores; need it <= floor(fpr * n)
    k = n - 1 - int(np.floor(float(target_fpr) * n + 1e-9))
    t = s[max(k, 0)]
    return float(t)


def calibration(calib_scores: np.ndarray, target_fpr: float) -> dict:
    """Everything a scorer needs to normalise and decide: a JSON-friendly dict."""
    s = np.asarray(calib_scores, dtype=np.float64).ravel()
    thr = threshold_at_fpr(s, target_fpr)
    return {"threshold": thr, "target_fpr": float(target_fpr), "n_calibration": int(s.size),
            "norm_min": float(s.min()), "norm_max": float(s.max()),
            "calibration_fpr": float(np.mean(s > thr))}


def normalise(scores: np.ndarray, calib: Mapping) -> np.ndarray:
    """Maps the calibration scores' [min, max] to [0, 1], clipping outside it."""
    lo, hi = calib["norm_min"], calib["norm_max"]
    span = hi - lo if hi > lo else 1.0
    return np.clip((np.asarray(scores, dtype=np.float64) - lo) / span, 0.0, 1.0)
