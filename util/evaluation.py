"""Stage 2: extract frozen features and score them with every one-class detector.

Keys of the result follow the reference: ``<feature set>.<detector>`` with
feature sets ``pool`` = f(x) and ``embed`` = g(f(x)) (e.g. ``pool.kde``), plus
``<score>.auc`` for scores a model computes itself (rotation: ``logit``,
``dscore``).
"""

import numpy as np

from data.pipeline import eval_dataset
from util.detectors import DETECTORS, evaluate_detectors, subsample_rows
from util.metrics import roc_auc, validate_labels

FEATURE_SETS = ("pool", "embed")


def extract_features(model, images, batch_size=256):
    """{name: np.ndarray} from the model's predict_step (pool, embed, model scores)."""
    out = model.predict(eval_dataset(images, batch_size), verbose=0)
    return {k: np.asarray(v) for k, v in out.items()}


def evaluate_features(train_feats, test_feats, test_labels, detectors=None):
    """AUC x 100 for every feature set and detector, plus model scores."""
    names = list(detectors or DETECTORS)
    results = {}
    for fs in FEATURE_SETS:
        if fs not in train_feats:
            continue
        aucs = evaluate_detectors(train_feats[fs], test_feats[fs], test_labels, names=names,
                                  max_train=None)
        results.update({f"{fs}.{name}": float(aucs[name]) for name in names})
    for key in sorted(set(test_feats) - set(FEATURE_SETS)):
        results[f"{key}.auc"] = float(roc_auc(test_labels, test_feats[key]))
    return results


def evaluate_model(model, train_images, test_images, test_labels, detectors=None,
                   max_train=20000, seed=0, batch_size=256):
    """Extracts features for (a subset of) the training inliers and the test set, scores.

    The subset is drawn by ``subsample_rows``, the detectors' own sampler."""
    train_feats = extract_features(model, subsample_rows(train_images, max_train, seed),
                                   batch_size)
    test_feats = extract_features(model, test_images, batch_size)
    results = evaluate_features(train_feats, test_feats, test_labels, detectors)
    from util.uniformity import uniformity_results  # uniformity analysis (i11)
    results.update(uniformity_results(test_feats, test_labels, seed))
    return results


# ----------------------------------------------------------------------------
# Final evaluation: per-image scores, held-out calibration inliers, fitted detectors
# ----------------------------------------------------------------------------

class Evaluation:
    """Everything the final evaluation computed, for the run's outputs (util/outputs.py).

    ``results``: {key: AUC x 100} with the usual keys (``pool.kde``, ``logit.auc``);
    ``test_scores`` / ``calib_scores``: {score key: float64 scores} where the score
    key drops the ``.auc`` suffix of model scores (``pool.kde``, ``logit``);
    ``detectors``: {``pool.kde``: fitted Detector}; ``fit_feats`` / ``calib_feats``:
    {feature set: features}; ``labels``, ``ids`` of the test images.
    """

    def __init__(self, **kw):
        self.__dict__.update(kw)


def detector_training_images(data):
    """The inliers the detectors fit on (a protocol may set data.detector_images)."""
    images = getattr(data, "detector_images", None)
    return data.train_images if images is None else images


def evaluate_final(model, data, detectors=None, max_train=20000, seed=0, batch_size=256,
                   calibration_fraction=0.1):
    """Final evaluation with a held-out calibration set of training inliers.

    ``calibration_fraction`` of the detector's training inliers (chosen at random
    with ``seed``) are kept out of every detector fit; their scores set the threshold
    and the normalisation. With fraction 0 the detectors' own training features
    stand in for them.
    """
    from util.calibration import split_calibration
    from util.detectors import make_detector

    names = list(detectors or DETECTORS)
    validate_labels(data.test_labels, len(data.test_images))
    images = detector_training_images(data)
    fit_idx, calib_idx = split_calibration(len(images), calibration_fraction, seed)
    fit_feats = extract_features(model, subsample_rows(images[fit_idx], max_train, seed),
                                 batch_size)
    calib_feats = (extract_features(model, images[calib_idx], batch_size)
                   if len(calib_idx) else fit_feats)
    test_feats = extract_features(model, data.test_images, batch_size)
    results, test_scores, calib_scores, fitted = {}, {}, {}, {}
    for fs in FEATURE_SETS:
        if fs not in test_feats:
            continue
        for name in names:
            key = f"{fs}.{name}"
            det = make_detector(name).fit(fit_feats[fs])
            fitted[key] = det
            test_scores[key] = det.score(test_feats[fs])
            calib_scores[key] = det.score(calib_feats[fs])
            results[key] = float(roc_auc(data.test_labels, test_scores[key]))
    for key in sorted(set(test_feats) - set(FEATURE_SETS)):
        test_scores[key] = np.asarray(test_feats[key], dtype=np.float64)
        calib_scores[key] = np.asarray(calib_feats[key], dtype=np.float64)
        results[f"{key}.auc"] = float(roc_auc(data.test_labels, test_scores[key]))
    from util.uniformity import uniformity_results  # uniformity analysis
    results.update(uniformity_results(test_feats, data.test_labels, seed))
    return Evaluation(results=results, test_scores=test_scores, calib_scores=calib_scores,
                      detectors=fitted, fit_feats=fit_feats,
                      calib_feats=calib_feats if len(calib_idx) else None,
                      labels=np.asarray(data.test_labels, dtype=np.int64),
                      ids=[str(i) for i in range(len(data.test_labels))],
                      n_calibration=int(len(calib_idx)))
