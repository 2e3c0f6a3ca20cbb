"""A synthetic check for a line with no defective images yet: ``--synthetic_validation``.

Not a measure on real defects: it says whether the model reacts to local
damage at all. The held-out good images (the calibration images of
``--calibration_fraction``, the same draw as detect/calibration.py) are
copied with a CutPaste rectangle (the first half) or a scar (the others)
pasted in, with the CutPaste proxy task's own corruptions
(model/cutpaste.py). The run's evaluator then scores the clean copies (label
0) against the damaged ones (label 1) with detectors fit on the other good
training images only, exactly as a real test set, and the AUROC x 100 of its
first key is reported as ``synthetic_image_AUROC``.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np

from detect.calibration import split_calibration
from detect.evaluation import detector_training_images

if TYPE_CHECKING:
    import keras

    from data.base import OneClassData
    from detect.evaluator_base import Evaluator

KINDS = ("cutpaste",)
SYNTHETIC = "synthetic"  # the defect type of the damaged copies


def damage(images: np.ndarray) -> np.ndarray:
    """uint8 [N,H,W,3] -> the same images, the first half with a cut-and-pasted rectangle,
    the rest with a scar."""
    import tensorflow as tf

    from model.cutpaste import cutpaste, scar

    x = tf.convert_to_tensor(np.asarray(images), tf.float32) / 255.0
    half = (len(images) + 1) // 2
    parts = [cutpaste(x[:half])[0]]
    if len(images) > half:
        parts.append(scar(x[half:])[0])
    out = tf.concat(parts, axis=0).numpy()
    return np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8)


def synthetic_data(data: OneClassData, fraction: float, seed: int) -> Optional[OneClassData]:
    """A copy of ``data`` whose detectors fit on the good training images that were not
    held out, and whose test set is the held-out ones, clean and damaged (None when
    nothing is held out)."""
    images = detector_training_images(data)
    fit, held = split_calibration(len(images), fraction, seed)
    if not len(held):
        return None
    clean = images[held]
    test = np.concatenate([clean, damage(clean)])
    n = len(held)
    extra = {}
    if hasattr(data, "test_defects"):  # the MVTec layout's per-image fields
        extra = dict(test_masks=None, test_defects=["good"] * n + [SYNTHETIC] * n,
                     test_names=[f"{i:04d}" for i in range(n)] * 2, test_paths=[])
    return dataclasses.replace(
        data, detector_images=images[fit], test_images=test,
        test_labels=np.r_[np.zeros(n, np.int64), np.ones(n, np.int64)], **extra)


def synthetic_check(evaluator: Evaluator, model: keras.Model, data: OneClassData, fraction: float,
                    seed: int, log: Callable[[str], None] = print) -> dict:
    """summary.json entries of the check: ``synthetic_image_AUROC`` and
    ``synthetic_validation`` (every key's AUROC and what was damaged); {} when no good
    image is held out."""
    synth = synthetic_data(data, fraction, seed)
    if synth is None:
        log("warning: --synthetic_validation needs held-out good images; "
            "--calibration_fraction holds out none, so the check is skipped")
        return {}
    ev = evaluator.final(model, synth)
    aucs = {key: ev.results[key] for key in ev.test_scores if key in ev.results}
    primary = next(iter(aucs))
    n = len(synth.test_labels) // 2
    log(f"synthetic check (CutPaste / scar damage pasted into {n} held-out good images, "
        f"not real defects): image AUROC {aucs[primary]:.2f} ({primary})")
    return {"synthetic_image_AUROC": aucs[primary],
            "synthetic_validation": {"kind": "cutpaste", "n_good": n, "n_damaged": n,
                                     "score_key": primary, "image_AUROC": aucs,
                                     "note": "CutPaste rectangles and scars pasted into "
                                             "held-out good images; not real defects"}}
