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

import time

import numpy as np

from data.patches import patch_train_dataset, steps_per_epoch
from detect.calibration import pixel_sample, split_calibration
from detect.detectors import make_detector
from detect.evaluation import (EvalSettings, Evaluation, PatchGrid, add_aliases, aucs_defined,
                               detector_training_images, test_ids)
from detect.localization import (ConvGridFeatures, dense_patch_features, features_of_patches,
                                 image_scores, patch_feature_fn, sample_grid_patches,
                                 upsample_maps)
from detect.metrics import f1_max, roc_auc
from detect.pixel_metrics import pixel_metrics

SCORE_CHUNK = 32768  # test patches per detector.score call: bounds the feature copies


def score_chunked(detector, feats, desc="scoring"):
    """Scores in SCORE_CHUNK slices (bounded memory), with a progress bar: a KDE over
    high-dimensional patches (e.g. raw pixels) takes minutes for a dense test grid."""
    from tqdm import tqdm

    starts = range(0, len(feats), SCORE_CHUNK)
    return np.concatenate([detector.score(feats[s:s + SCORE_CHUNK])
                           for s in tqdm(starts, desc=desc, unit="chunk", mininterval=2,
                                         disable=len(starts) < 2)])


class PatchEvaluator:
    """Dense patch maps, image scores (max of the map) and pixel metrics."""

    options = ("patch_size", "patch_stride", "patches_per_image", "mvtec_features",
               "patch_features")

    def __init__(self, settings: EvalSettings, *, patch_size, patch_stride, patches_per_image,
                 mvtec_features, patch_features):
        self.settings = settings
        self.patch, self.stride = int(patch_size), int(patch_stride)
        self.patches_per_image = int(patches_per_image)
        self.feature_sets = tuple(f.strip() for f in str(mvtec_features).split(",") if f.strip())
        self.patch_features = patch_features

    # --- what the network sees -------------------------------------------------------
    def representation_images(self, images):
        """The images the network learns from: all training images (the paper's protocol;
        the calibration hold-out leaves only the detectors' fit)."""
        return images

    def steps_per_epoch(self, num_images, batch_size):
        """One pass over the images at ``patches_per_image`` patches each."""
        return steps_per_epoch(num_images, batch_size, self.patches_per_image)

    def train_dataset(self, images, batch_size, aug_list, views, seed, clip_pixels,
                      options=None):
        return patch_train_dataset(images, batch_size, aug_list, num_views=views,
                                   patch_size=self.patch, patches_per_image=self.patches_per_image,
                                   seed=seed, clip_pixels=clip_pixels, options=options)

    def network_view(self, images):
        """The central patch of each image (the collapse monitor's probe)."""
        p, h = self.patch, images.shape[1]
        start = (h - p) // 2
        return images[:, start:start + p, start:start + p]

    # --- patch features --------------------------------------------------------------
    def _features(self, model, data):
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

    def _maps(self, detector, feats, desc):
        grid = feats.shape[:3]
        return score_chunked(detector, feats.reshape(-1, feats.shape[-1]), desc).reshape(grid)

    # --- stage 2 ---------------------------------------------------------------------
    def periodic(self, model, data, log=print):
        """Metrics during training: detectors fit on patches of all good training images
        (none without both good and defective test images)."""
        if not aucs_defined(data.test_labels):
            return {}
        training, dense = self._features(model, data)
        t0 = time.perf_counter()
        fit_feats, test_feats = training(detector_training_images(data)), dense(data.test_images)
        log(f"patch features ({self.patch_features}): {time.perf_counter() - t0:.1f}s")
        maps = {}
        for key, fs, name in self._keys():
            det = make_detector(name).fit(fit_feats[fs])
            maps[key] = self._maps(det, test_feats[fs], f"{key} scoring")
        return self._metrics(maps, data)[0]

    def final(self, model, data, log=print):
        """The reported maps from detectors fit on every good training image; the image and
        pixel thresholds from held-out good images scored by detectors fit on the others."""
        s = self.settings
        images = detector_training_images(data)
        fit_idx, calib_idx = split_calibration(len(images), s.calibration_fraction, s.seed)
        training, dense = self._features(model, data)
        t0 = time.perf_counter()
        has_test = len(data.test_images) > 0  # none: good training images only
        fit_feats = training(images)
        test_feats = dense(data.test_images) if has_test else None
        held_out = len(calib_idx) > 0
        # without held-out images, the detectors' own training images stand in
        calib_dense = dense(images[calib_idx] if held_out else images)
        calib_fit_feats = training(images[fit_idx]) if held_out else fit_feats
        log(f"patch features ({self.patch_features}): {len(images)} training and "
            f"{len(data.test_images)} test images in {time.perf_counter() - t0:.1f}s")
        maps, fitted, calib_scores, calib_pixels = {}, {}, {}, {}
        for key, fs, name in self._keys():
            t0 = time.perf_counter()
            fitted[key] = make_detector(name).fit(fit_feats[fs])
            calib_det = (make_detector(name).fit(calib_fit_feats[fs]) if held_out
                         else fitted[key])
            calib_maps = self._maps(calib_det, calib_dense[fs], f"{key} calibration")
            calib_scores[key] = image_scores(calib_maps)
            calib_pixels[key] = pixel_sample(upsample_maps(calib_maps, self.patch, self.stride),
                                             seed=s.seed)
            maps[key] = (self._maps(fitted[key], test_feats[fs], f"{key} scoring") if has_test
                         else np.zeros((0,) + calib_dense[fs].shape[1:3]))
            log(f"{key}: fit on {len(fit_feats[fs])} training patches, scored "
                f"{maps[key].size} test patches in {time.perf_counter() - t0:.1f}s")
        results, pixel = self._metrics(maps, data, keep_pixel_maps=has_test)
        return Evaluation(
            results=results,
            test_scores={k: image_scores(m) if has_test else np.zeros(0) for k, m in maps.items()},
            calib_scores=calib_scores, detectors=fitted,
            fit_feats={fs: fit_feats[fs] for fs in self.feature_sets},
            labels=np.asarray(data.test_labels, dtype=np.int64), ids=test_ids(data),
            n_calibration=int(len(calib_idx)), pixel_maps=pixel, patch_maps=maps,
            calib_pixel_scores=calib_pixels,
            grid=PatchGrid(int(images.shape[1]), self.patch, self.stride,
                           self.patch_features))

    def _keys(self):
        return [(f"{fs}.{name}", fs, name) for fs in self.feature_sets
                for name in self.settings.detectors]

    def _metrics(self, maps, data, keep_pixel_maps=False):
        """(results, {key: pixel maps} of the first key when kept) from patch maps."""
        results, primary, pixel_maps = {}, next(iter(maps)), {}
        scorable = aucs_defined(data.test_labels)
        masks = data.test_masks if scorable else None
        for key, m in maps.items():
            if scorable:
                scores = image_scores(m)
                results[key] = roc_auc(data.test_labels, scores)
                results[f"{key}.image_f1max"] = f1_max(data.test_labels, scores)
            keep = keep_pixel_maps and key == primary
            if masks is None and not keep:
                continue
            pixel = upsample_maps(m, self.patch, self.stride)
            if masks is not None:
                results.update({f"{key}.{k}": v
                                for k, v in pixel_metrics(masks, pixel).items()})
            if keep:
                pixel_maps[key] = pixel
        return add_aliases(results, primary), pixel_maps or None
