"""Stage 2: extract frozen features and score them with every one-class detector.

Keys of the result follow the reference: ``<feature set>.<detector>`` with
feature sets ``pool`` = f(x) and ``embed`` = g(f(x)) (e.g. ``pool.kde``), plus
``<score>.auc`` for scores a model computes itself (rotation: ``logit``,
``dscore``).
"""

import numpy as np

from data.pipeline import eval_dataset
from util.detectors import DETECTORS, evaluate_detectors, subsample_rows
from util.metrics import roc_auc

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
