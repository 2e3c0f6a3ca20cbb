"""Feature-map evaluation of MVTec-layout data (``--mvtec_mode=map``): the inspector's.

The network trains on whole images at ``--mvtec_image_size``. At evaluation
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

import time

import numpy as np

from detect.calibration import pixel_sample, split_calibration
from detect.detectors import make_detector, subsample_index
from detect.evaluation import (EvalSettings, Evaluation, MapGrid, add_aliases, aucs_defined,
                               detector_training_images, test_ids)
from detect.image_evaluator import WholeImageTraining
from detect.localization import image_scores, map_pixels
from detect.metrics import f1_max, roc_auc
from detect.pixel_metrics import pixel_metrics
from model.spec import parse_stages

#: the feature set of map runs: results are keyed ``map.<detector>``
MAP_FEATURES = "map"
#: images per trunk call
IMAGES_PER_BATCH = 16


def extract_maps(mapper, images, progress=True):
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

    options = ("map_stages", "map_neighbourhood", "bank_size")

    def __init__(self, settings: EvalSettings, *, map_stages, map_neighbourhood, bank_size):
        self.settings = settings
        self.stages = parse_stages(map_stages)
        self.neighbourhood = int(map_neighbourhood)
        self.bank_size = int(bank_size)

    # --- what the network sees -------------------------------------------------------
    def representation_images(self, images):
        """The training images but the calibration hold-out: the held-out good images are
        then new to the network as well as to the detectors, as the parts it will inspect
        are, so the threshold set on them holds on new good parts (a network that trained on
        them scores them lower than new parts, and flags too many of those)."""
        fit_idx, _ = split_calibration(len(images), self.settings.calibration_fraction,
                                       self.settings.seed)
        return images[fit_idx]

    # --- stage 2 ---------------------------------------------------------------------
    def mapper(self, model):
        """The model's feature mapper for this run's stages and neighbourhood."""
        return model.feature_mapper(self.stages, self.neighbourhood)

    def detector(self, name):
        if name == "membank":
            return make_detector(name, bank_size=self.bank_size, seed=self.settings.seed)
        return make_detector(name)

    def _fit(self, name, maps):
        """A detector ``name`` fit on the cells of training maps [N, h, w, D]."""
        det = self.detector(name)
        if det.positional:
            return det.fit(maps.reshape(len(maps), -1, maps.shape[-1]))
        cells = maps.reshape(-1, maps.shape[-1])
        if name != "membank":  # the coreset bounds membank's bank; the others get a draw
            cells = cells[subsample_index(len(cells), self.settings.max_train,
                                          self.settings.seed)]
        return det.fit(cells)

    @staticmethod
    def _score(det, maps):
        """Cell maps [N, h, w] of feature maps [N, h, w, D]."""
        if not len(maps):
            return np.zeros(maps.shape[:3])
        if det.positional:
            return det.score(maps.reshape(len(maps), -1, maps.shape[-1])).reshape(maps.shape[:3])
        return det.score(maps.reshape(-1, maps.shape[-1])).reshape(maps.shape[:3])

    def fit_rows(self, maps):
        """The cells the single-feature detectors other than membank are fit on."""
        cells = maps.reshape(-1, maps.shape[-1])
        return cells[subsample_index(len(cells), self.settings.max_train, self.settings.seed)]

    def periodic(self, model, data, log=print):
        """Metrics during training: detectors fit on every good training image."""
        if not aucs_defined(data.test_labels):
            return {}
        mapper = self.mapper(model)
        fit_maps = extract_maps(mapper, detector_training_images(data), progress=False)
        test_maps = extract_maps(mapper, data.test_images, progress=False)
        cell_maps = {f"{MAP_FEATURES}.{name}": self._score(self._fit(name, fit_maps), test_maps)
                     for name in self.settings.detectors}
        return self._metrics(cell_maps, data)[0]

    def final(self, model, data, log=print):
        """The reported maps from detectors fit on every good training image; the image and
        pixel thresholds from held-out good images scored by detectors fit on the others."""
        s = self.settings
        images = detector_training_images(data)
        fit_idx, calib_idx = split_calibration(len(images), s.calibration_fraction, s.seed)
        held_out = len(calib_idx) > 0
        mapper = self.mapper(model)
        t0 = time.perf_counter()
        train_maps = extract_maps(mapper, images)
        has_test = len(data.test_images) > 0  # none: good training images only
        test_maps = extract_maps(mapper, data.test_images) if has_test else None
        log(f"feature maps {train_maps.shape[1]}x{train_maps.shape[2]}x{train_maps.shape[3]} "
            f"of {len(images)} training and {len(data.test_images)} test images in "
            f"{time.perf_counter() - t0:.1f}s")
        size = int(images.shape[1])
        cell_maps, fitted, calib_scores, calib_pixels = {}, {}, {}, {}
        for name in s.detectors:
            key = f"{MAP_FEATURES}.{name}"
            t0 = time.perf_counter()
            fitted[key] = self._fit(name, train_maps)
            # without held-out images, the detectors' own training images stand in
            calib_det = self._fit(name, train_maps[fit_idx]) if held_out else fitted[key]
            calib_cells = self._score(calib_det, train_maps[calib_idx] if held_out else train_maps)
            calib_pixel_maps = map_pixels(calib_cells, size)
            calib_scores[key] = image_scores(calib_pixel_maps)
            calib_pixels[key] = pixel_sample(calib_pixel_maps, seed=s.seed)
            cell_maps[key] = (self._score(fitted[key], test_maps) if has_test
                              else np.zeros((0,) + train_maps.shape[1:3]))
            log(f"{key}: fit on the maps of {len(images)} training images, scored "
                f"{cell_maps[key].size} test cells in {time.perf_counter() - t0:.1f}s")
        results, test_scores, pixel = self._metrics(cell_maps, data, keep_pixel_maps=has_test,
                                                    size=size)
        return Evaluation(
            results=results, test_scores=test_scores, calib_scores=calib_scores,
            detectors=fitted, fit_feats={MAP_FEATURES: self.fit_rows(train_maps)},
            labels=np.asarray(data.test_labels, dtype=np.int64), ids=test_ids(data),
            n_calibration=int(len(calib_idx)), pixel_maps=pixel, patch_maps=cell_maps,
            calib_pixel_scores=calib_pixels,
            grid=MapGrid(size, self.stages, self.neighbourhood, train_maps.shape[1]))

    def _metrics(self, cell_maps, data, keep_pixel_maps=False, size=None):
        """(results, {key: image scores}, {first key: pixel maps} when kept) from cell maps;
        the image score is the maximum of the anomaly map."""
        results, scores, primary = {}, {}, next(iter(cell_maps))
        kept = None
        scorable = aucs_defined(data.test_labels)
        # folders of images without masks (--dataset=folder) get the image metrics only
        masks = getattr(data, "test_masks", None) if scorable else None
        size = size or int(data.test_images.shape[1])
        for key, m in cell_maps.items():
            pixel = map_pixels(m, size)
            scores[key] = image_scores(pixel) if len(pixel) else np.zeros(0)
            if scorable:
                results[key] = roc_auc(data.test_labels, scores[key])
                results[f"{key}.image_f1max"] = f1_max(data.test_labels, scores[key])
                if masks is not None:
                    results.update({f"{key}.{k}": v
                                    for k, v in pixel_metrics(masks, pixel).items()})
            if keep_pixel_maps and key == primary:
                kept = {key: pixel}
        return add_aliases(results, primary), scores, kept
