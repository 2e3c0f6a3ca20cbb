"""What every evaluator is given and yields, and the helpers they share.

A run has one evaluator (detect/evaluators.py picks it; detect/evaluator_base.py
is their common loop). The evaluator fixes how the network sees images (whole
images, patches or feature maps of MVTec-layout data) and turns the trained
network into numbers: ``periodic`` gives the metrics recorded during training,
``final`` an ``Evaluation``, from which the run writes every output
(summary.json, scores.npz, thresholds, plots, heat maps, the export) the same
way whatever the evaluator.

The reported metrics come from detectors fit on all training inliers (at most
``max_train`` of them), as in the release. The threshold is set on held-out
inliers, scored by a second detector of the same kind fit without them, so no
inlier is taken away from the reported fit.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Optional, Union

import numpy as np

from detect.detectors import parse_detectors

if TYPE_CHECKING:
    from data.base import OneClassData

FEATURE_SETS = ("pool", "embed")
#: anomalib's names of the first feature set's first detector, for MVTec-layout data
ALIASES = {"image_AUROC": "", "image_F1Max": ".image_f1max", "pixel_AUROC": ".pixel_auroc",
           "pixel_PRO": ".pro", "pixel_F1Max": ".pixel_f1max"}


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """The values of a run's configuration that every evaluator needs; ``detectors``
    are detector classes (names are parsed into them)."""

    detectors: tuple
    max_train: int = 20000
    seed: int = 0
    batch_size: int = 256
    calibration_fraction: float = 0.1

    def __post_init__(self):
        object.__setattr__(self, "detectors", parse_detectors(self.detectors))


@dataclasses.dataclass
class Evaluation:
    """Everything a final evaluation computed, for the run's outputs (engine/outputs.py).

    ``results``: {key: metric} as stored in summary.json (``pool.kde`` is an AUC
    x 100); ``test_scores`` / ``calib_scores``: {score key: float64 per-image
    scores}, the score key dropping the ``.auc`` suffix of model scores
    (``pool.kde``, ``logit``); ``detectors``: {score key: Detector fit on all
    training inliers}; ``labels`` and ``ids`` of the test images;
    ``n_calibration``: held-out inliers behind ``calib_scores`` (0: the detectors'
    own training images stand in), drawn from ``n_train`` training inliers (0: not
    known) at ``calibration_fraction``. Patch and map evaluators add ``pixel_maps``
    ({first score key: the anomaly maps [N, H, W]}), ``cell_maps`` ({score key:
    the patch map or the feature-map cell map of each test image, [N, n, n]}),
    ``calib_pixel_scores`` ({score key: a sample of the held-out inliers'
    anomaly-map values}, for the pixel threshold) and ``grid`` (how the maps were
    made, which the export rebuilds in its graph).
    """

    results: dict
    test_scores: dict
    calib_scores: dict
    detectors: dict
    labels: np.ndarray
    ids: list
    n_calibration: int
    n_train: int = 0
    calibration_fraction: float = 0.0
    pixel_maps: Optional[dict] = None
    cell_maps: Optional[dict] = None
    calib_pixel_scores: Optional[dict] = None
    grid: Optional[Union["PatchGrid", "MapGrid"]] = None

    @property
    def feature_sets(self) -> list:
        """The feature sets the detectors were fit on, in result order."""
        return list(dict.fromkeys(key.split(".", 1)[0] for key in self.detectors))


@dataclasses.dataclass(frozen=True)
class MapGrid:
    """The geometry of a feature-map run: images of ``image_size`` px (one side, or
    (height, width) when the run keeps the images' aspect ratio), the local feature map of
    ResNet ``stages`` averaged over ``neighbourhood`` cells, ``cells`` per image (one side
    or (rows, columns); model/feature_maps.py)."""

    image_size: int | tuple
    stages: tuple
    neighbourhood: int
    cells: int | tuple
    features: str = "map"


@dataclasses.dataclass(frozen=True)
class PatchGrid:
    """The patch geometry of a patch run: images of ``image_size`` px, ``patch_size`` px
    patches every ``stride`` px, features by ``features`` ('crop' or 'conv')."""

    image_size: int
    patch_size: int
    stride: int
    features: str


def aucs_defined(labels: np.ndarray) -> bool:
    """Whether the test set gets AUCs (and every metric that ranks inliers against
    outliers): only when it has both. The one place that decides it: a line of good
    parts with no defects yet (an empty or all-good test set) is scored and
    calibrated, and its metrics are absent rather than invented."""
    labels = np.asarray(labels)
    return bool(np.any(labels == 0) and np.any(labels == 1))


def no_auc_note(labels: np.ndarray) -> Optional[str]:
    """The run's one line about a test set without AUCs (None when it has them)."""
    labels = np.asarray(labels)
    if aucs_defined(labels):
        return None
    n_good, n_bad = int(np.sum(labels == 0)), int(np.sum(labels == 1))
    need = "good test images as well" if n_bad else "defective images"
    return (f"note: the test set has {n_good} good and {n_bad} defective images; AUCs need "
            f"{need}, so summary.json records metrics: null and no AUC; the image threshold "
            "is set at --target_fpr on held-out good training images")


def add_aliases(results: dict, primary: str) -> dict:
    """Copies ``<primary><suffix>`` results under anomalib's names (``image_AUROC``, ...)."""
    for alias, suffix in ALIASES.items():
        if primary + suffix in results:
            results[alias] = results[primary + suffix]
    return results


def detector_training_images(data: OneClassData) -> np.ndarray:
    """The inliers the detectors fit on (a protocol may set data.detector_images)."""
    images = getattr(data, "detector_images", None)
    return data.train_images if images is None else images


def test_ids(data: OneClassData) -> list:
    """Per-test-image ids for scores.npz: file names where the data has them, else indices."""
    names = getattr(data, "test_names", None)
    if names is not None and len(names) == len(data.test_labels):
        return [str(n) for n in names]
    return [str(i) for i in range(len(data.test_labels))]
