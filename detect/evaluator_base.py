"""The evaluator of a run: what the network sees, and stage 2 as one loop.

Every evaluator (whole images, patches, feature maps) runs the same
algorithm, written once here in ``Evaluator.final``: for each feature set and
each detector, fit the reported detector on the training rows, fit the
threshold's detector on the rows that exclude the held-out inliers, score the
held-out inliers with it (the calibration scores) and the test images with the
reported one, then compute every metric in one place (``metrics``). An
evaluator supplies only the steps that differ:

* what the network trains on (``representation_images``, ``steps_per_epoch``,
  ``train_dataset``, ``network_view``);
* how features are extracted (``features``: a ``FeatureSet`` per feature set);
* how a detector is fit on them and how its scores become per-image outputs
  (``fit``, ``score``: image scores, or patch / cell maps);
* how outputs become anomaly maps and image scores (``anomaly_maps``,
  ``image_scores``); an evaluator without maps keeps the defaults.

``periodic`` (the metrics during training) is the same loop without the
calibration fit.
"""

from __future__ import annotations

import abc
import dataclasses
import time
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Optional

import numpy as np

from detect.calibration import pixel_sample, split_calibration
from detect.evaluation import (EvalSettings, Evaluation, add_aliases, aucs_defined,
                               detector_training_images, test_ids)
from detect.metrics import f1_max, roc_auc, validate_labels
from detect.pixel_metrics import pixel_metrics

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

    from data.augment import AugmentOptions
    from data.base import OneClassData
    from detect.detector_base import Detector
    from detect.evaluation import MapGrid, PatchGrid


@dataclasses.dataclass
class FeatureSet:
    """One feature set's inputs to the detectors: ``fit``, the rows of the reported fit;
    ``calib_fit``, the rows of the threshold's fit (``fit`` when nothing is held out);
    ``calib``, the held-out inliers to score (the fit images' own when none are held out;
    None in ``periodic``); ``test``, the test images' inputs."""

    fit: Any
    test: Any
    calib_fit: Any = None
    calib: Any = None


@dataclasses.dataclass
class Features:
    """What ``Evaluator.features`` extracted: a ``FeatureSet`` per feature set, plus what
    an evaluator keeps for its own steps (``extra``: e.g. the model's own scores, the
    image size of the maps)."""

    sets: dict
    extra: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class CalibrationSplit:
    """The training inliers of the reported fit (all of them) and of the threshold's fit
    (``fit_idx``), and the held-out ones (``calib_idx``, possibly empty)."""

    n: int
    fit_idx: np.ndarray
    calib_idx: np.ndarray

    @classmethod
    def of(cls, n: int, settings: EvalSettings) -> "CalibrationSplit":
        fit, calib = split_calibration(n, settings.calibration_fraction, settings.seed)
        return cls(n, fit, calib)

    @property
    def held_out(self) -> bool:
        return len(self.calib_idx) > 0


class Evaluator(abc.ABC):
    """Base of every evaluator (registered in detect/evaluators.py, whose spec names the
    flags its constructor takes after ``settings``)."""

    #: image F1-max besides the AUROC (the defect-layout evaluators, anomalib's metric)
    reports_f1: ClassVar[bool] = True

    def __init__(self, settings: EvalSettings) -> None:
        self.settings = settings

    # --- what the network sees -------------------------------------------------------
    def representation_images(self, images: np.ndarray) -> np.ndarray:
        """The images the network learns from: all training images (the paper's protocol;
        the calibration hold-out leaves only the detectors' fit)."""
        return images

    @abc.abstractmethod
    def steps_per_epoch(self, num_images: int, batch_size: int) -> int:
        """Optimizer steps of one epoch."""

    @abc.abstractmethod
    def train_dataset(self, images: np.ndarray, batch_size: int, aug_list: str,
                      views: Optional[int], seed: Optional[int], clip_pixels: bool,
                      options: Optional[AugmentOptions] = None) -> tf.data.Dataset:
        """The tf.data pipeline of augmented training batches."""

    @abc.abstractmethod
    def network_view(self, images: np.ndarray) -> np.ndarray:
        """Images as the network sees them (the collapse monitor's probe)."""

    # --- the steps of stage 2 that differ ------------------------------------------
    @abc.abstractmethod
    def features(self, model: keras.Model, data: OneClassData, split: Optional[CalibrationSplit],
                 log: Callable = print) -> Features:
        """The detectors' inputs of the detector training images (``split`` None: the
        reported fit and the test images only, for ``periodic``)."""

    def detector_options(self) -> dict:
        """Run values a detector may take (``Detector.option_names``)."""
        return {}

    def fit(self, cls: type[Detector], rows: np.ndarray) -> Detector:
        """A detector of class ``cls`` fit on ``rows`` (a FeatureSet's ``fit`` or
        ``calib_fit``)."""
        return cls.from_options(self.detector_options()).fit(rows)

    @abc.abstractmethod
    def score(self, detector: Detector, inputs: np.ndarray) -> np.ndarray:
        """The detector's outputs for a FeatureSet's ``calib`` or ``test`` inputs: image
        scores [N], or maps [N, h, w]; empty inputs give an empty output."""

    def anomaly_maps(self, outputs: np.ndarray, feats: Features) -> Optional[np.ndarray]:
        """Pixel anomaly maps [N, H, W] of ``score``'s outputs (None: no maps)."""
        return None

    def image_scores(self, outputs: np.ndarray, pixels: Optional[np.ndarray]) -> np.ndarray:
        """float64 image scores [N] of ``score``'s outputs and their anomaly maps."""
        return np.asarray(outputs, dtype=np.float64)

    def grid(self, feats: Features) -> Optional[PatchGrid | MapGrid]:
        """The geometry the export rebuilds in its graph (None: whole images)."""
        return None

    def model_scores(self, feats: Features) -> dict:
        """{key: (test scores, calibration scores)} of scores the model computes itself."""
        return {}

    def finish_results(self, results: dict, feats: Features, labels: np.ndarray) -> dict:
        """The last entries of the results: anomalib's names of the first key."""
        return add_aliases(results, self.keys(feats)[0][0])

    # --- the one loop --------------------------------------------------------------
    def keys(self, feats: Features) -> list[tuple[str, str, type[Detector]]]:
        """(result key, feature set, detector class) for every fit, in result order."""
        return [(f"{fs}.{cls.name}", fs, cls) for fs in feats.sets
                for cls in self.settings.detectors]

    def periodic(self, model: keras.Model, data: OneClassData, log: Callable = print) -> dict:
        """Metrics during training: detectors fit on every detector training image (none
        without both good and defective test images)."""
        if not aucs_defined(data.test_labels):
            return {}
        feats = self.features(model, data, None, log=lambda message: None)
        outputs = {key: self.score(self.fit(cls, feats.sets[fs].fit), feats.sets[fs].test)
                   for key, fs, cls in self.keys(feats)}
        return self.metrics(outputs, feats, data)[0]

    def final(self, model: keras.Model, data: OneClassData, log: Callable = print) -> Evaluation:
        """The reported outputs from detectors fit on every detector training image; the
        image (and pixel) thresholds' scores from held-out inliers scored by detectors of
        the same kind fit without them."""
        if aucs_defined(data.test_labels):
            validate_labels(data.test_labels, len(data.test_images))
        split = CalibrationSplit.of(len(detector_training_images(data)), self.settings)
        feats = self.features(model, data, split, log)
        fitted, outputs, calib_scores, calib_pixels = {}, {}, {}, {}
        for key, fs, cls in self.keys(feats):
            t0 = time.perf_counter()
            inputs = feats.sets[fs]
            fitted[key] = self.fit(cls, inputs.fit)
            calib_det = self.fit(cls, inputs.calib_fit) if split.held_out else fitted[key]
            calib_out = self.score(calib_det, inputs.calib)
            pixels = self.anomaly_maps(calib_out, feats)
            calib_scores[key] = self.image_scores(calib_out, pixels)
            if pixels is not None:
                calib_pixels[key] = pixel_sample(pixels, seed=self.settings.seed)
            outputs[key] = self.score(fitted[key], inputs.test)
            log(f"{key}: fit, calibrated and scored {len(inputs.test)} test images in "
                f"{time.perf_counter() - t0:.1f}s")
        results, test_scores, kept = self.metrics(outputs, feats, data,
                                                  keep_pixel_maps=len(data.test_images) > 0)
        for key, (test, calib) in self.model_scores(feats).items():
            test_scores[key], calib_scores[key] = test, calib
        has_maps = bool(calib_pixels)
        return Evaluation(
            results=results, test_scores=test_scores, calib_scores=calib_scores,
            detectors=fitted, labels=np.asarray(data.test_labels, dtype=np.int64),
            ids=test_ids(data), n_calibration=int(len(split.calib_idx)), n_train=split.n,
            calibration_fraction=float(self.settings.calibration_fraction),
            pixel_maps=kept, cell_maps=outputs if has_maps else None,
            calib_pixel_scores=calib_pixels if has_maps else None, grid=self.grid(feats))

    def metrics(self, outputs: dict, feats: Features, data: OneClassData,
                keep_pixel_maps: bool = False) -> tuple[dict, dict, Optional[dict]]:
        """(results, {key: image scores}, {first key: its anomaly maps} or None) of the
        test outputs of every key: image AUROC (and F1-max), and where the data has masks
        the pixel metrics; none without both good and defective test images."""
        labels = data.test_labels
        results, scores, kept = {}, {}, None
        primary = next(iter(outputs), None)
        scorable = aucs_defined(labels)
        # folders of images without masks get the image metrics only
        masks = getattr(data, "test_masks", None) if scorable else None
        for key, out in outputs.items():
            pixels = self.anomaly_maps(out, feats)
            scores[key] = self.image_scores(out, pixels)
            if scorable:
                results[key] = roc_auc(labels, scores[key])
                if self.reports_f1:
                    results[f"{key}.image_f1max"] = f1_max(labels, scores[key])
                if masks is not None and pixels is not None:
                    results.update({f"{key}.{k}": v
                                    for k, v in pixel_metrics(masks, pixels).items()})
            if keep_pixel_maps and key == primary and pixels is not None:
                kept = {key: pixels}
        if scorable:
            for key, (test, _) in self.model_scores(feats).items():
                results[f"{key}.auc"] = roc_auc(labels, test)
        return self.finish_results(results, feats, labels), scores, kept
