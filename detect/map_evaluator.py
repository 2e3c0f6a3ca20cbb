"""Feature-map evaluation of MVTec-layout data (``--mvtec_mode=map``): the inspector's.

The network trains on whole images at ``--mvtec_image_size``, or, with
``--map_train_crop``, on one random crop of that side from each image: the
trunk is fully convolutional, so a working size above the crop keeps a small
defect several cells wide while a training step costs what a step on the crop
costs. At evaluation
each image goes through the trunk once, and its local feature map
(model/feature_maps.py: the stages of ``--map_stages`` averaged over a
``--map_neighbourhood`` window and brought to the finest stage's grid, 32 x 32
cells at 256 px for stages 2 and 3) is scored cell by cell:

* ``membank`` and the other single-feature detectors are fit on the cells of
  the good training images (``membank`` on all of them, through its coreset;
  the others on ``--max_detector_train`` cells drawn at random) and score
  every test cell;
* ``posgde`` fits one Gaussian per cell position.

The cell map is upsampled to the image and smoothed by a Gaussian of 4 px per
256 px (detect/localization.py ``smooth_upsample``): that is the anomaly map,
and the image score is its maximum. Metrics, calibration and outputs are those
of the patch evaluator: image AUROC / F1-max, pixel AUROC, PRO, pixel F1-max,
thresholds from held-out good images, scored by detectors fit without them. Here
the network does not train on the held-out images either (``representation_images``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, Optional, Sequence

import numpy as np

from data.patches import patch_train_dataset
from detect.calibration import split_calibration
from detect.detectors import subsample_index
from detect.evaluation import EvalSettings, MapGrid, detector_training_images
from detect.evaluator_base import Features, FeatureSet
from detect.image_evaluator import WholeImageTraining
from detect.localization import image_scores, map_pixels, side_or_shape
from model.spec import parse_stages

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

    from data.augment import AugmentOptions
    from data.base import OneClassData
    from detect.detector_base import Detector
    from detect.evaluator_base import CalibrationSplit

#: the feature set of map runs: results are keyed ``map.<detector>``
MAP_FEATURES = "map"
#: images per trunk call
IMAGES_PER_BATCH = 16


def extract_maps(mapper: Callable, images: np.ndarray, progress: bool = True) -> np.ndarray:
    """float32 [N, h, w, D]: the local feature maps of uint8 ``images`` [N, H, W, C]."""
    from tqdm import tqdm

    from data.augment import to_float_images

    images = np.asarray(images)
    out = None
    bar = tqdm(total=len(images), desc="feature maps", unit="img", mininterval=2,
               disable=not progress or len(images) < 2 * IMAGES_PER_BATCH)
    for start in range(0, len(images), IMAGES_PER_BATCH):
        maps = mapper(to_float_images(images[start:start + IMAGES_PER_BATCH])).numpy()
        if out is None:
            out = np.empty((len(images),) + maps.shape[1:], np.float32)
        out[start:start + len(maps)] = maps
        bar.update(len(maps))
    bar.close()
    if out is None:  # no images: an empty map of the mapper's shape
        return np.zeros((0, 1, 1, 1), np.float32)
    return out


class MapEvaluator(WholeImageTraining):
    """Local feature maps of whole images, scored cell by cell."""

    def __init__(self, settings: EvalSettings, *, map_stages: str | Sequence[int],
                 map_neighbourhood: int, bank_size: int, map_train_crop: int = 0) -> None:
        super().__init__(settings)
        self.train_crop = int(map_train_crop or 0)
        self.stages = parse_stages(map_stages)
        self.neighbourhood = int(map_neighbourhood)
        self.bank_size = int(bank_size)

    # --- what the network sees -------------------------------------------------------
    def representation_images(self, images: np.ndarray) -> np.ndarray:
        """The training images but the calibration hold-out: the held-out good images are
        then new to the network as well as to the detectors, as the parts it will inspect
        are, so the threshold set on them holds on new good parts (a network that trained on
        them scores them lower than new parts, and flags too many of those)."""
        fit_idx, _ = split_calibration(len(images), self.settings.calibration_fraction,
                                       self.settings.seed)
        return images[fit_idx]

    def crops(self, images: np.ndarray) -> bool:
        """Whether the network trains on crops of ``images`` rather than on whole ones."""
        return bool(self.train_crop) and tuple(images.shape[1:3]) != (self.train_crop,) * 2

    def train_dataset(self, images: np.ndarray, batch_size: int, aug_list: str,
                      views: Optional[int], seed: Optional[int], clip_pixels: bool,
                      options: Optional[AugmentOptions] = None) -> tf.data.Dataset:
        """Whole images, or one random ``train_crop`` crop of each image in the batch."""
        if not self.crops(images):
            return super().train_dataset(images, batch_size, aug_list, views, seed,
                                         clip_pixels, options)
        return patch_train_dataset(images, batch_size, aug_list, num_views=views,
                                   patch_size=self.train_crop, patches_per_image=1, seed=seed,
                                   clip_pixels=clip_pixels, options=options)

    def network_view(self, images: np.ndarray) -> np.ndarray:
        """The network's input: the central crop when it trains on crops."""
        if not self.crops(images):
            return images
        c = self.train_crop
        top, left = (images.shape[1] - c) // 2, (images.shape[2] - c) // 2
        return images[:, top:top + c, left:left + c]

    # --- stage 2 ---------------------------------------------------------------------
    def mapper(self, model: keras.Model) -> Callable:
        """The model's feature mapper for this run's stages and neighbourhood."""
        return model.feature_mapper(self.stages, self.neighbourhood)

    def features(self, model: keras.Model, data: OneClassData, split: Optional[CalibrationSplit],
                 log: Callable = print) -> Features:
        """The local feature maps [N, h, w, D] of every training and test image, once."""
        images = detector_training_images(data)
        mapper = self.mapper(model).for_size(images.shape[1], images.shape[2])
        quiet = split is None  # the periodic evaluation: no progress bars
        t0 = time.perf_counter()
        train_maps = extract_maps(mapper, images, progress=not quiet)
        test_maps = (extract_maps(mapper, data.test_images, progress=not quiet)
                     if len(data.test_images) else np.zeros((0,) + train_maps.shape[1:],
                                                            np.float32))
        if not quiet:
            log(f"feature maps {train_maps.shape[1]}x{train_maps.shape[2]}x"
                f"{train_maps.shape[3]} of {len(images)} training and {len(data.test_images)} "
                f"test images in {time.perf_counter() - t0:.1f}s")
        held_out = split is not None and split.held_out
        # without held-out images, the detectors' own training images stand in
        feature_set = FeatureSet(fit=train_maps, test=test_maps,
                                 calib_fit=train_maps[split.fit_idx] if held_out else train_maps,
                                 calib=train_maps[split.calib_idx] if held_out else train_maps)
        return Features({MAP_FEATURES: feature_set},
                        extra={"image_size": side_or_shape(*images.shape[1:3]),
                               "cells": side_or_shape(*train_maps.shape[1:3])})

    def detector_options(self) -> dict:
        return {"bank_size": self.bank_size, "seed": self.settings.seed}

    def fit(self, cls: type[Detector], maps: np.ndarray) -> Detector:
        """A detector of class ``cls`` fit on the cells of training maps [N, h, w, D]: a
        positional one on each image's cells, one that bounds its own size on every cell,
        the others on ``max_train`` cells drawn at random."""
        det = cls.from_options(self.detector_options())
        if det.positional:
            return det.fit(maps.reshape(len(maps), -1, maps.shape[-1]))
        cells = maps.reshape(-1, maps.shape[-1])
        if not det.bounds_own_rows:
            cells = cells[subsample_index(len(cells), self.settings.max_train,
                                          self.settings.seed)]
        return det.fit(cells)

    def score(self, detector: Detector, maps: np.ndarray) -> np.ndarray:
        """Cell maps [N, h, w] of feature maps [N, h, w, D]."""
        if not len(maps):
            return np.zeros(maps.shape[:3])
        if detector.positional:
            rows = maps.reshape(len(maps), -1, maps.shape[-1])
        else:
            rows = maps.reshape(-1, maps.shape[-1])
        return detector.score(rows).reshape(maps.shape[:3])

    def anomaly_maps(self, outputs: np.ndarray, feats: Features) -> np.ndarray:
        """The cell maps upsampled to the image and smoothed."""
        return map_pixels(outputs, feats.extra["image_size"])

    def image_scores(self, outputs: np.ndarray, pixels: np.ndarray) -> np.ndarray:
        """The maximum of the anomaly map."""
        return image_scores(pixels) if len(pixels) else np.zeros(0)

    def grid(self, feats: Features) -> MapGrid:
        return MapGrid(feats.extra["image_size"], self.stages, self.neighbourhood,
                       feats.extra["cells"])
