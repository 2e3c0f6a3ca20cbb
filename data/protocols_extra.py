"""The paper's extra training protocols, applied on top of a one-class split.

* Unsupervised (``--outlier_ratio=r``, r in [0, 0.5]): round(r * N) of the N
  training inliers are replaced by as many unlabeled images of the other
  classes' *training* split, so the training set keeps its size N and is a
  fraction r contaminated. Images that are also in the test set (the
  validation protocol draws its test outliers from the training split) are
  never used. The paper uses r = 0.5/1/2/5/10%.
* Semi-supervised (``--num_inlier_for_detector=N``): the representation learns
  from the (possibly contaminated) training set; the detectors are fit on N
  clean inliers drawn from the inliers of the training split.
* Data efficiency (``--num_train=N``): the representation learns from N
  training images drawn from the (possibly contaminated) training set; the
  detectors are fit on the full set.

The result is written into ``OneClassData``: ``train_images`` is what the
representation learns from and ``detector_images`` what the detectors are fit
on (None = ``train_images``). Draws depend on ``--seed``. ``describe_protocols``
gives the record stored under ``meta.protocols`` in summary.json.
"""

from __future__ import annotations

import hashlib

import numpy as np

from data.base import conform_images
from util.errors import ConfigError


def _image_hashes(images):
    return {hashlib.blake2b(img.tobytes(), digest_size=16).digest() for img in images}


def drop_images(pool, exclude_images):
    """``pool`` minus every image that is also in ``exclude_images`` (byte-equal, same size)."""
    if not (len(exclude_images) and len(pool)):
        return pool
    banned = _image_hashes(exclude_images)
    keep = [i for i, img in enumerate(pool)
            if hashlib.blake2b(img.tobytes(), digest_size=16).digest() not in banned]
    return pool[np.asarray(keep, dtype=np.int64)]


def contaminate(inliers, pool_images, ratio, rng):
    """(images, is_outlier): N images of which round(ratio * N) come from ``pool_images``."""
    n = len(inliers)
    n_out = int(np.floor(ratio * n + 0.5))
    if n_out > len(pool_images):
        raise ConfigError(f"--outlier_ratio={ratio} needs {n_out} outliers but only "
                          f"{len(pool_images)} images of other classes are available")
    if n_out == 0:
        return inliers, np.zeros(n, bool)
    keep = np.sort(rng.choice(n, n - n_out, replace=False))
    picked = np.sort(rng.choice(len(pool_images), n_out, replace=False))
    images = np.concatenate([inliers[keep], pool_images[picked]])
    flags = np.concatenate([np.zeros(n - n_out, bool), np.ones(n_out, bool)])
    order = rng.permutation(n)
    return images[order], flags[order]


def protocols_active(outlier_ratio=0.0, num_inlier_for_detector=0, num_train=0):
    return bool(outlier_ratio or num_inlier_for_detector or num_train)


def apply_protocols(data, *, outlier_ratio=0.0, num_inlier_for_detector=0, num_train=0, seed=0,
                    splits=None):
    """Sets ``data.train_images`` / ``data.detector_images`` for the active protocols.

    ``splits`` (the dataset's ``LabeledSplits`` at the data's input shape, or a
    callable returning them) is only needed for ``outlier_ratio``; it supplies
    the outlier pool. Returns the record for summary.json (also stored on
    ``data.protocol_record``). The flags' ranges are checked by the caller.
    """
    ratio, n_det, n_train = float(outlier_ratio), int(num_inlier_for_detector), int(num_train)
    rng = np.random.default_rng([int(seed), 11])
    clean = data.train_images
    n = len(clean)
    for key, value in (("num_inlier_for_detector", n_det), ("num_train", n_train)):
        if value > n:
            raise ConfigError(f"--{key}={value} is more than the {n} training inliers of "
                              f"class {data.category!r}; use at most {n}")

    train, is_out = clean, np.zeros(n, bool)
    if ratio > 0:
        if splits is None:
            raise ValueError("--outlier_ratio needs the dataset's splits for its outlier pool")
        splits = splits() if callable(splits) else splits
        others = np.asarray(splits.train_labels) != data.category_index
        pool = drop_images(conform_images(splits.train_images[others], data.input_shape),
                           data.test_images)
        train, is_out = contaminate(clean, pool, ratio, rng)
    full = train
    if n_train:
        pick = np.sort(rng.choice(len(train), n_train, replace=False))
        train, is_out = train[pick], is_out[pick]
    detector = None
    if n_det:
        detector = clean[np.sort(rng.choice(n, n_det, replace=False))]
    elif n_train:
        detector = full
    data.train_images = train
    data.detector_images = detector
    record = {"outlier_ratio": ratio, "num_inlier_for_detector": n_det, "num_train": n_train,
              "n_train": int(len(train)), "n_train_outliers": int(is_out.sum()),
              "n_detector": int(len(detector if detector is not None else train))}
    data.protocol_record = record
    return record


def describe_protocols(data):
    """The record for summary.json meta (plain defaults when no protocol ran)."""
    record = getattr(data, "protocol_record", None)
    if record is not None:
        return record
    n = int(len(data.train_images))
    return {"outlier_ratio": 0.0, "num_inlier_for_detector": 0, "num_train": 0, "n_train": n,
            "n_train_outliers": 0, "n_detector": n}
