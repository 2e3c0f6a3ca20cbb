"""Whole-image evaluation: frozen features of every image, scored by every detector.

Result keys follow the reference: ``<feature set>.<detector>`` (AUC x 100)
with feature sets ``pool`` = f(x) and ``embed`` = g(f(x)) (e.g. ``pool.kde``),
plus ``<score>.auc`` for scores a model computes itself (rotation: ``logit``,
``dscore``) and ``uniformity.mmd2``. The network sees the images at
``--input_shape`` and trains on augmented whole images (data/pipeline.py).
"""

import numpy as np

from data.pipeline import eval_dataset, train_dataset
from detect.detectors import make_detector, subsample_rows
from detect.evaluation import (FEATURE_SETS, EvalSettings, Evaluation, FitPlan, add_aliases,
                               aucs_defined, detector_training_images, fit_and_calibrate,
                               test_ids)
from detect.metrics import f1_max, roc_auc, validate_labels
from detect.uniformity import uniformity_results


def extract_features(model, images, batch_size=256):
    """{name: np.ndarray} from the model's predict_step (pool, embed, model scores)."""
    out = model.predict(eval_dataset(images, batch_size), verbose=0)
    return {k: np.asarray(v) for k, v in out.items()}


class WholeImageTraining:
    """What the network sees when it learns from whole images: augmented batches of the
    training images (the image evaluators and the feature-map evaluator)."""

    def representation_images(self, images):
        """The images the network learns from: all training images (the paper's protocol;
        the calibration hold-out leaves only the detectors' fit)."""
        return images

    def steps_per_epoch(self, num_images, batch_size):
        """One pass over the training images (a set smaller than a batch is repeated)."""
        return max(num_images // batch_size, 1)

    def train_dataset(self, images, batch_size, aug_list, views, seed, clip_pixels,
                      options=None):
        ds, _ = train_dataset(images, batch_size, aug_list, num_views=views, seed=seed,
                              clip_pixels=clip_pixels, options=options)
        return ds

    def network_view(self, images):
        """Images as the network sees them (the collapse monitor's probe)."""
        return images


class ImageEvaluator(WholeImageTraining):
    """Detectors on the features of whole images (CIFAR, folders, MVTec image mode)."""

    options = ()  # flags of the run this evaluator takes (see detect/evaluators.py)

    def __init__(self, settings: EvalSettings):
        self.settings = settings

    # --- stage 2 ---------------------------------------------------------------------
    def periodic(self, model, data):
        """Metrics during training: detectors fit on all training inliers (none without
        both good and defective test images)."""
        s = self.settings
        if not aucs_defined(data.test_labels):
            return {}
        fit = extract_features(model, subsample_rows(detector_training_images(data),
                                                     s.max_train, s.seed), s.batch_size)
        test = extract_features(model, data.test_images, s.batch_size)
        results = {}
        for fs in FEATURE_SETS:
            if fs in test:
                for name in s.detectors:
                    det = make_detector(name).fit(fit[fs])
                    self.add_results(results, f"{fs}.{name}", data.test_labels,
                                     det.score(test[fs]))
        self.add_model_scores(results, test, data.test_labels)
        return self.finish_results(results, test, data.test_labels)

    def final(self, model, data):
        """The release's fit for every reported number, a second fit for the threshold."""
        s = self.settings
        scorable = aucs_defined(data.test_labels)
        if scorable:
            validate_labels(data.test_labels, len(data.test_images))
        images = detector_training_images(data)
        plan = FitPlan(len(images), s)
        feats = extract_features(model, images[plan.needed], s.batch_size)
        # an empty test set (good training images only) is scored as no images
        test = (extract_features(model, data.test_images, s.batch_size)
                if len(data.test_images) else {k: v[:0] for k, v in feats.items()})
        full, calib_fit, calib = plan.rows("full"), plan.rows("calib_fit"), plan.rows("calib")
        held_out = len(plan.calib) > 0
        results, test_scores, calib_scores, fitted = {}, {}, {}, {}
        for fs in FEATURE_SETS:
            if fs not in test:
                continue
            for name in s.detectors:
                key = f"{fs}.{name}"
                fitted[key], calib_scores[key] = fit_and_calibrate(
                    name, feats[fs][full], feats[fs][calib_fit],
                    feats[fs][calib] if held_out else None)
                test_scores[key] = (fitted[key].score(test[fs]) if len(test[fs])
                                    else np.zeros(0))
                if scorable:
                    self.add_results(results, key, data.test_labels, test_scores[key])
        for key in self.model_score_keys(test):
            test_scores[key] = np.asarray(test[key], dtype=np.float64)
            calib_scores[key] = np.asarray(feats[key][calib if held_out else full], np.float64)
        if scorable:
            self.add_model_scores(results, test, data.test_labels)
        return Evaluation(
            results=self.finish_results(results, test, data.test_labels),
            test_scores=test_scores, calib_scores=calib_scores, detectors=fitted,
            fit_feats={fs: feats[fs][full] for fs in FEATURE_SETS if fs in feats},
            labels=np.asarray(data.test_labels, dtype=np.int64), ids=test_ids(data),
            n_calibration=int(len(plan.calib)))

    # --- result keys -----------------------------------------------------------------
    @staticmethod
    def model_score_keys(test_feats):
        return sorted(set(test_feats) - set(FEATURE_SETS))

    def add_results(self, results, key, labels, scores):
        results[key] = roc_auc(labels, scores)

    def add_model_scores(self, results, test_feats, labels):
        for key in self.model_score_keys(test_feats):
            results[f"{key}.auc"] = roc_auc(labels, test_feats[key])

    def finish_results(self, results, test_feats, labels):
        results.update(uniformity_results(test_feats, labels, self.settings.seed))
        return results


class DefectImageEvaluator(ImageEvaluator):
    """Whole images of MVTec-layout data: also image F1-max and anomalib's names."""

    def add_results(self, results, key, labels, scores):
        super().add_results(results, key, labels, scores)
        results[f"{key}.image_f1max"] = f1_max(labels, scores)

    def finish_results(self, results, test_feats, labels):
        return add_aliases(results, f"pool.{self.settings.detectors[0]}")
