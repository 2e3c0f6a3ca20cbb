"""Patch evaluation of MVTec-layout data: the paper's localisation protocol.

The network trains on random ``--patch_size`` patches of the good images
(data/patches.py), loaded at ``--mvtec_image_size``. Detectors are fit on the
features of ``--max_detector_train`` clean grid patches of the good training
images; every test patch on the ``--patch_stride`` grid is scored -> patch
maps -> image score = max of the map, pixel maps by Gaussian upsampling
(detect/localization.py) -> image AUROC / F1-max, pixel AUROC, PRO, pixel
F1-max.

Result keys: ``<features>.<detector>`` is the image AUROC (as for every
dataset), ``<features>.<detector>.<metric>`` the others. The first feature
set and first detector also give anomalib's names: ``image_AUROC``,
``image_F1Max``, ``pixel_AUROC``, ``pixel_PRO``, ``pixel_F1Max``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np

from data.patches import patch_train_dataset, steps_per_epoch
from detect.evaluation import EvalSettings, PatchGrid, detector_training_images
from detect.evaluator_base import Evaluator, Features, FeatureSet
from detect.localization import (ConvGridFeatures, dense_patch_features, features_of_patches,
                                 image_scores, patch_feature_fn, sample_grid_patches,
                                 upsample_maps)

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

    from data.augment import AugmentOptions
    from data.base import OneClassData
    from detect.detector_base import Detector
    from detect.evaluator_base import CalibrationSplit

SCORE_CHUNK = 32768  # test patches per detector.score call: bounds the feature copies


def score_chunked(detector: Detector, feats: np.ndarray, desc: str = "scoring") -> np.ndarray:
    """Scores in SCORE_CHUNK slices (bounded memory), with a progress bar: a KDE over
    high-dimensional patches (e.g. raw pixels) takes minutes for a dense test grid."""
    from tqdm import tqdm

    starts = range(0, len(feats), SCORE_CHUNK)
    return np.concatenate([detector.score(feats[s:s + SCORE_CHUNK])
                           for s in tqdm(starts, desc=desc, unit="chunk", mininterval=2,
                                         disable=len(starts) < 2)])


class PatchEvaluator(Evaluator):
    """Dense patch maps, image scores (max of the map) and pixel metrics."""

    def __init__(self, settings: EvalSettings, *, patch_size: int, patch_stride: int,
                 patches_per_image: int, mvtec_features: str, patch_features: str) -> None:
        super().__init__(settings)
        self.patch, self.stride = int(patch_size), int(patch_stride)
        self.patches_per_image = int(patches_per_image)
        self.feature_sets = tuple(f.strip() for f in str(mvtec_features).split(",") if f.strip())
        self.patch_features = patch_features

    # --- what the network sees -------------------------------------------------------
    def steps_per_epoch(self, num_images: int, batch_size: int) -> int:
        """One pass over the images at ``patches_per_image`` patches each."""
        return steps_per_epoch(num_images, batch_size, self.patches_per_image)

    def train_dataset(self, images: np.ndarray, batch_size: int, aug_list: str,
                      views: Optional[int], seed: Optional[int], clip_pixels: bool,
                      options: Optional[AugmentOptions] = None) -> tf.data.Dataset:
        return patch_train_dataset(images, batch_size, aug_list, num_views=views,
                                   patch_size=self.patch, patches_per_image=self.patches_per_image,
                                   seed=seed, clip_pixels=clip_pixels, options=options)

    def network_view(self, images: np.ndarray) -> np.ndarray:
        """The central patch of each image (the collapse monitor's probe)."""
        p, h = self.patch, images.shape[1]
        start = (h - p) // 2
        return images[:, start:start + p, start:start + p]

    # --- patch features --------------------------------------------------------------
    def _extractors(self, model, data):
        """(training-patch features of ``count`` patches of some images, dense grid features
        of other images): two functions over this run's kind of patch features."""
        s = self.settings
        if self.patch_features == "conv":
            grid = ConvGridFeatures(model, data.test_images.shape[1], self.patch, self.stride,
                                    self.feature_sets)
            return (lambda images: grid.sampled(images, s.max_train, seed=s.seed)), grid
        fn = patch_feature_fn(model, self.feature_sets)

        def training(images):
            patches, _ = sample_grid_patches(images, s.max_train, self.patch, self.stride,
                                             seed=s.seed)
            return features_of_patches(fn, patches, s.batch_size)

        def dense(images):
            return dense_patch_features(model, images, self.patch, self.stride,
                                        self.feature_sets, s.batch_size)

        return training, dense

    def features(self, model: keras.Model, data: OneClassData, split: Optional[CalibrationSplit],
                 log: Callable = print) -> Features:
        """Features of ``--max_detector_train`` grid patches of the training images (the
        detectors' rows), and of every grid patch of the images they score."""
        images = detector_training_images(data)
        training, dense = self._extractors(model, data)
        t0 = time.perf_counter()
        fit = training(images)
        test = dense(data.test_images) if len(data.test_images) else None
        calib_fit, calib = fit, None
        if split is not None:
            calib_fit = training(images[split.fit_idx]) if split.held_out else fit
            # without held-out images, the detectors' own training images stand in
            calib = dense(images[split.calib_idx] if split.held_out else images)
        log(f"patch features ({self.patch_features}): {len(images)} training and "
            f"{len(data.test_images)} test images in {time.perf_counter() - t0:.1f}s")
        n = calib[self.feature_sets[0]].shape[1] if calib is not None else None
        empty = np.zeros((0, n or 1, n or 1, 1), np.float32)
        sets = {fs: FeatureSet(fit=fit[fs], test=test[fs] if test is not None else empty,
                               calib_fit=calib_fit[fs],
                               calib=calib[fs] if calib is not None else None)
                for fs in self.feature_sets}
        return Features(sets, extra={"image_size": int(images.shape[1])})

    # --- scores and maps -------------------------------------------------------------
    def score(self, detector: Detector, inputs: np.ndarray) -> np.ndarray:
        """Patch maps [N, n, n] of grid features [N, n, n, D]."""
        if not len(inputs):
            return np.zeros(inputs.shape[:3])
        return score_chunked(detector, inputs.reshape(-1, inputs.shape[-1]),
                             f"{detector.name} scoring").reshape(inputs.shape[:3])

    def anomaly_maps(self, outputs: np.ndarray, feats: Features) -> np.ndarray:
        return upsample_maps(outputs, self.patch, self.stride)

    def image_scores(self, outputs: np.ndarray, pixels: Optional[np.ndarray]) -> np.ndarray:
        """The maximum of the patch map."""
        return image_scores(outputs) if len(outputs) else np.zeros(0)

    def grid(self, feats: Features) -> PatchGrid:
        return PatchGrid(feats.extra["image_size"], self.patch, self.stride, self.patch_features)
