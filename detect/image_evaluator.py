"""Whole-image evaluation: frozen features of every image, scored by every detector.

Result keys follow the reference: ``<feature set>.<detector>`` (AUC x 100)
with feature sets ``pool`` = f(x) and ``embed`` = g(f(x)) (e.g. ``pool.kde``),
plus ``<score>.auc`` for scores a model computes itself (rotation: ``logit``,
``dscore``) and ``uniformity.mmd2``. The network sees the images at
``--input_shape`` and trains on augmented whole images (data/pipeline.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional

import numpy as np

from data.pipeline import eval_dataset, train_dataset
from detect.detectors import subsample_index
from detect.evaluation import FEATURE_SETS, EvalSettings, add_aliases, detector_training_images
from detect.evaluator_base import Evaluator, Features, FeatureSet
from detect.uniformity import uniformity_results

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

    from data.augment import AugmentOptions
    from data.base import OneClassData
    from detect.detector_base import Detector
    from detect.evaluator_base import CalibrationSplit


def extract_features(model: keras.Model, images: np.ndarray, batch_size: int = 256) -> dict:
    """{name: np.ndarray} from the model's predict_step (pool, embed, model scores)."""
    out = model.predict(eval_dataset(images, batch_size), verbose=0)
    return {k: np.asarray(v) for k, v in out.items()}


class WholeImageTraining(Evaluator):
    """What the network sees when it learns from whole images: augmented batches of the
    training images (the image evaluators and the feature-map evaluator)."""

    def steps_per_epoch(self, num_images: int, batch_size: int) -> int:
        """One pass over the training images (a set smaller than a batch is repeated)."""
        return max(num_images // batch_size, 1)

    def train_dataset(self, images: np.ndarray, batch_size: int, aug_list: str,
                      views: Optional[int], seed: Optional[int], clip_pixels: bool,
                      options: Optional[AugmentOptions] = None) -> tf.data.Dataset:
        ds, _ = train_dataset(images, batch_size, aug_list, num_views=views, seed=seed,
                              clip_pixels=clip_pixels, options=options)
        return ds

    def network_view(self, images: np.ndarray) -> np.ndarray:
        return images


class ImageEvaluator(WholeImageTraining):
    """Detectors on the features of whole images (CIFAR, folders, MVTec image mode).

    The detectors fit on at most ``max_train`` training inliers (the release's draw);
    the threshold's detector on as many drawn from those not held out. Features are
    extracted once, for the union of the images these draws need."""

    reports_f1 = False  # the paper's datasets report the AUROC alone

    def __init__(self, settings: EvalSettings) -> None:
        super().__init__(settings)

    def features(self, model: keras.Model, data: OneClassData, split: Optional[CalibrationSplit],
                 log: Callable = print) -> Features:
        s = self.settings
        images = detector_training_images(data)
        full = subsample_index(len(images), s.max_train, s.seed)
        if split is None:
            needed, calib_fit, calib = full, full, full[:0]
        else:
            calib = split.calib_idx
            calib_fit = (split.fit_idx[subsample_index(len(split.fit_idx), s.max_train, s.seed)]
                         if split.held_out else full)
            needed = np.union1d(np.union1d(full, calib_fit), calib).astype(np.int64)
        feats = extract_features(model, images[needed], s.batch_size)
        # an empty test set (good training images only) is scored as no images
        test = (extract_features(model, data.test_images, s.batch_size)
                if len(data.test_images) else {k: v[:0] for k, v in feats.items()})
        rows = {name: np.searchsorted(needed, idx)
                for name, idx in (("full", full), ("calib_fit", calib_fit), ("calib", calib))}
        own = rows["calib"] if split is not None and split.held_out else rows["full"]
        sets = {fs: FeatureSet(fit=feats[fs][rows["full"]], test=test[fs],
                               calib_fit=feats[fs][rows["calib_fit"]], calib=feats[fs][own])
                for fs in FEATURE_SETS if fs in test}
        model_scores = {key: (np.asarray(test[key], np.float64),
                              np.asarray(feats[key][own], np.float64))
                        for key in sorted(set(test) - set(FEATURE_SETS))}
        return Features(sets, extra={"test": test, "model_scores": model_scores})

    def score(self, detector: Detector, inputs: np.ndarray) -> np.ndarray:
        return detector.score(inputs) if len(inputs) else np.zeros(0)

    def model_scores(self, feats: Features) -> dict:
        return feats.extra["model_scores"]

    def finish_results(self, results: dict, feats: Features, labels: np.ndarray) -> dict:
        results.update(uniformity_results(feats.extra["test"], labels, self.settings.seed))
        return results


class DefectImageEvaluator(ImageEvaluator):
    """Whole images of MVTec-layout data: also image F1-max and anomalib's names."""

    reports_f1 = True

    def finish_results(self, results: dict, feats: Features, labels: np.ndarray) -> dict:
        return add_aliases(results, self.keys(feats)[0][0])
