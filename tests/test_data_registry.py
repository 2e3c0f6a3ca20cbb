"""The dataset registry and its single entry point."""

import numpy as np
import pytest

from data.registry import DATASETS, load_one_class_data, load_splits
from util.errors import ConfigError


def test_registered_names():
    assert set(DATASETS) >= {'cifar10ood', 'cifar20ood', 'cifar100ood', 'fmnistood',
                             'folder', 'digitsood'}


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ConfigError) as err:
        load_one_class_data('imagenet', 0)
    message = str(err.value)
    assert '\n' not in message
    for name in DATASETS:
        assert name in message


def test_bad_category_and_shape():
    with pytest.raises(ConfigError, match='unknown category'):
        load_one_class_data('digitsood', 'eleven')
    with pytest.raises(ConfigError, match='input_shape'):
        load_one_class_data('digitsood', 1, input_shape=(32, 32, 1))


def test_entry_point_resizes_and_types():
    data = load_one_class_data(' DigitsOOD ', 0, input_shape='24,24,3', is_validation=True,
                               seed=5)
    assert data.dataset == 'digitsood' and data.protocol == 'validation'
    assert data.train_images.shape[1:] == (24, 24, 3) and data.train_images.dtype == np.uint8
    assert data.test_images.shape[1:] == (24, 24, 3)
    assert data.test_labels.dtype == np.int64
    assert set(np.unique(data.test_labels)) == {0, 1}
    splits = load_splits('digitsood')
    assert splits.train_images.shape[1:] == (32, 32, 3)
