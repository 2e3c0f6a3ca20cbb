"""Turning a multi-class dataset into a one-class problem.

Two protocols (see docs/method.md, "Datasets and protocols"):

* ``test``: train on every training image of the inlier class; test on the
  whole test split, label 0 for the inlier class and 1 for every other class.
* ``validation`` (for picking hyper-parameters without touching the test
  split): from the *training* split, hold out 10% of the inliers (rounded,
  at least 1) plus the same number of outliers drawn at random from the other
  classes' training images; train on the remaining 90% of the inliers and
  test on the held-out set. When a source has no test split (for example the
  CIFAR-10 JPEG folder in ``../shared``), this protocol is used whatever was
  asked, and a notice is logged.

A dataset of one class only (good images, no defects yet) is allowed: its
test set (the test split, or the held-out 10% of the validation protocol) is
then inliers only; it is scored, but gets no AUC (detect/evaluation.py).

The validation split uses a fixed seed of its own (``VALIDATION_SEED``, 1 as
in the release), not ``--seed``: every seed of a validation run holds out the
same images.
"""

from __future__ import annotations

import logging
from typing import Sequence, Union

import numpy as np

from data.base import LabeledSplits, OneClassData
from util.errors import ConfigError

logger = logging.getLogger(__name__)

VALIDATION_FRACTION = 0.1
VALIDATION_SEED = 1


def _valid_categories(class_names: Sequence[str]) -> str:
    names = ', '.join(str(n) for n in class_names)
    return f'{names} (or an index 0..{len(class_names) - 1})'


def resolve_category(category: Union[str, int], class_names: Sequence[str]) -> int:
    """Map a class name (case-insensitive) or an index ('3' or 3) to an index."""
    n = len(class_names)
    if n == 0:
        raise ConfigError('the dataset has no classes; check the data source')
    if isinstance(category, (int, np.integer)) and not isinstance(category, bool):
        index = int(category)
        if 0 <= index < n:
            return index
        raise ConfigError(
            f'category index {index} is out of range; use one of: {_valid_categories(class_names)}')
    text = str(category).strip()
    lowered = [str(name).lower() for name in class_names]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    if text.isdigit() and int(text) < n:
        return int(text)
    raise ConfigError(
        f'unknown category {str(category)!r}; use one of: {_valid_categories(class_names)}')


def _round_half_up(x: float) -> int:
    return int(np.floor(x + 0.5))


def one_class_split(splits: LabeledSplits, inlier: Union[str, int], is_validation: bool,
                    seed: int = 0, *, dataset: str = '') -> OneClassData:
    """Build the one-class train/test sets for inlier class ``inlier``.

    ``seed`` is accepted for callers that pass the run's seed, but the split does
    not depend on it: the validation protocol always uses ``VALIDATION_SEED``.
    """
    del seed  # the held-out set must be the same for every --seed
    index = resolve_category(inlier, splits.class_names)
    name = splits.class_names[index]
    train_labels = np.asarray(splits.train_labels)
    where = f'{dataset + ": " if dataset else ""}class {name!r}'

    protocol = 'validation' if is_validation else 'test'
    if not is_validation and not splits.has_test:
        logger.warning('%s has no test split: using the validation protocol (10%% of the '
                       'training inliers + as many training outliers held out as the test set)',
                       dataset or 'this dataset')
        protocol = 'validation'

    inlier_idx = np.flatnonzero(train_labels == index)
    if len(inlier_idx) == 0:
        raise ConfigError(f'{where} has no training images; pick another category or add images')

    if protocol == 'test':
        # a test split of inliers only is allowed (good images only, no defects yet):
        # detect.evaluation.aucs_defined decides that it gets no AUC
        test_labels = (np.asarray(splits.test_labels) != index).astype(np.int64)
        return OneClassData(
            train_images=splits.train_images[inlier_idx],
            test_images=splits.test_images,
            test_labels=test_labels,
            class_names=list(splits.class_names),
            category=name, category_index=index, dataset=dataset, protocol='test')

    # Validation protocol: everything comes from the training split.
    n_hold = max(1, _round_half_up(VALIDATION_FRACTION * len(inlier_idx)))
    if len(inlier_idx) - n_hold < 1:
        raise ConfigError(
            f'{where} has only {len(inlier_idx)} training image(s): the validation protocol '
            'needs at least 2 (one to train on, one held out); add images')
    outlier_pool = np.flatnonzero(train_labels != index)
    # without other classes the held-out set is inliers only (scored, but no AUC)
    rng = np.random.default_rng(VALIDATION_SEED)
    shuffled = rng.permutation(inlier_idx)
    held_in = np.sort(shuffled[:n_hold])
    train_in = np.sort(shuffled[n_hold:])
    if 0 < len(outlier_pool) < n_hold:
        logger.warning('%s: only %d training outliers available, %d wanted; using all of them',
                       where, len(outlier_pool), n_hold)
    n_out = min(n_hold, len(outlier_pool))
    held_out = (np.sort(rng.choice(outlier_pool, size=n_out, replace=False)) if n_out
                else outlier_pool)

    test_idx = np.concatenate([held_in, held_out])
    test_labels = np.concatenate([np.zeros(len(held_in), np.int64),
                                  np.ones(len(held_out), np.int64)])
    return OneClassData(
        train_images=splits.train_images[train_in],
        test_images=splits.train_images[test_idx],
        test_labels=test_labels,
        class_names=list(splits.class_names),
        category=name, category_index=index, dataset=dataset, protocol='validation')
