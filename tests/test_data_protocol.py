"""One-class protocols: test / validation splits and category resolution."""

import logging

import numpy as np
import pytest

from data.base import LabeledSplits, OneClassData
from data.protocol import one_class_split, resolve_category
from util.errors import ConfigError

NAMES = ['airplane', 'automobile', 'bird', 'cat']


def _encode(ids):
    """Tiny images whose pixels encode their index, so overlap can be checked."""
    ids = np.asarray(ids)
    img = np.zeros((len(ids), 1, 1, 3), np.uint8)
    img[:, 0, 0, 0] = ids % 256
    img[:, 0, 0, 1] = ids // 256
    return img


def _decode(images):
    return images[:, 0, 0, 0].astype(int) + 256 * images[:, 0, 0, 1].astype(int)


def make_splits(per_class_train=(50, 40, 30, 20), per_class_test=(10, 10, 10, 10), test=True):
    train_labels = np.concatenate([np.full(n, c) for c, n in enumerate(per_class_train)])
    train_labels = np.random.default_rng(1).permutation(train_labels)
    test_labels = np.concatenate([np.full(n, c) for c, n in enumerate(per_class_test)])
    n_train = len(train_labels)
    return LabeledSplits(
        _encode(np.arange(n_train)), train_labels,
        _encode(np.arange(n_train, n_train + len(test_labels))) if test else None,
        test_labels if test else None, NAMES)


def test_resolve_category_by_name_and_index():
    assert resolve_category('cat', NAMES) == 3
    assert resolve_category('CAT', NAMES) == 3
    assert resolve_category(' Bird ', NAMES) == 2
    assert resolve_category('0', NAMES) == 0
    assert resolve_category(1, NAMES) == 1
    assert resolve_category(np.int64(2), NAMES) == 2
    # For names that are themselves digits, the name wins.
    assert resolve_category('3', ['9', '8', '7', '3']) == 3


@pytest.mark.parametrize('bad', ['dog', '4', 7, -1, ''])
def test_resolve_category_error_lists_names(bad):
    with pytest.raises(ConfigError) as err:
        resolve_category(bad, NAMES)
    message = str(err.value)
    assert '\n' not in message
    for name in NAMES:
        assert name in message


def test_test_protocol_labels_and_counts():
    splits = make_splits()
    data = one_class_split(splits, 'automobile', is_validation=False, dataset='toy')
    assert isinstance(data, OneClassData)
    assert data.protocol == 'test' and data.category == 'automobile'
    assert data.category_index == 1 and data.dataset == 'toy'
    assert len(data.train_images) == 40
    # every training image is an automobile
    train_ids = _decode(data.train_images)
    assert np.all(splits.train_labels[train_ids] == 1)
    assert len(data.test_images) == 40
    assert data.test_labels.dtype == np.int64
    np.testing.assert_array_equal(data.test_labels, (splits.test_labels != 1).astype(np.int64))
    assert int((data.test_labels == 0).sum()) == 10 and int(data.test_labels.sum()) == 30
    text = data.describe()
    assert 'train 40' in text and '10 inliers' in text and '30 outliers' in text


def test_validation_protocol_sizes_and_no_overlap():
    splits = make_splits()
    data = one_class_split(splits, 'airplane', is_validation=True, seed=0)
    assert data.protocol == 'validation'
    # 50 inliers: 5 held out, 45 trained on; 5 outliers from the other classes
    assert len(data.train_images) == 45
    assert len(data.test_images) == 10
    assert int((data.test_labels == 0).sum()) == 5
    assert int((data.test_labels == 1).sum()) == 5
    train_ids = _decode(data.train_images)
    test_ids = _decode(data.test_images)
    n_train = len(splits.train_labels)
    assert test_ids.max() < n_train  # held-out set comes from the training split
    assert not set(train_ids) & set(test_ids)
    assert np.all(splits.train_labels[train_ids] == 0)
    np.testing.assert_array_equal(splits.train_labels[test_ids] != 0, data.test_labels == 1)
    # train + held-out inliers = all training inliers
    held_in = test_ids[data.test_labels == 0]
    assert sorted(np.concatenate([train_ids, held_in])) == \
        sorted(np.flatnonzero(splits.train_labels == 0))


def test_validation_rounding_and_minimum():
    splits = make_splits(per_class_train=(14, 5, 5, 5))
    data = one_class_split(splits, 0, is_validation=True)
    assert len(data.test_images) == 2 * 1 and len(data.train_images) == 13  # round(1.4)=1
    splits = make_splits(per_class_train=(15, 5, 5, 5))
    data = one_class_split(splits, 0, is_validation=True)
    assert len(data.train_images) == 13  # round(1.5)=2
    splits = make_splits(per_class_train=(3, 5, 5, 5))
    data = one_class_split(splits, 0, is_validation=True)
    assert len(data.train_images) == 2 and len(data.test_images) == 2  # at least 1


def test_validation_split_does_not_depend_on_seed():
    # as the release: the held-out set is fixed by its own seed, the same for --seed=0 and 1
    splits = make_splits()
    a = one_class_split(splits, 'cat', is_validation=True, seed=0)
    b = one_class_split(splits, 'cat', is_validation=True, seed=1)
    np.testing.assert_array_equal(a.train_images, b.train_images)
    np.testing.assert_array_equal(a.test_images, b.test_images)
    np.testing.assert_array_equal(a.test_labels, b.test_labels)
    # ... and it is a real random split (not, say, the first 10% of the inliers)
    inliers = [i for i in _decode(splits.train_images[splits.train_labels == 3])]
    held = set(_decode(a.test_images[a.test_labels == 0]))
    assert held != set(inliers[:len(held)])


def test_validation_split_through_the_registry_ignores_seed():
    from data.registry import load_one_class_data

    a = load_one_class_data('digitsood', 1, input_shape=(16, 16, 3), is_validation=True, seed=0)
    b = load_one_class_data('digitsood', 1, input_shape=(16, 16, 3), is_validation=True, seed=1)
    np.testing.assert_array_equal(a.test_images, b.test_images)
    np.testing.assert_array_equal(a.train_images, b.train_images)


def test_missing_test_split_forces_validation(caplog):
    splits = make_splits(test=False)
    with caplog.at_level(logging.WARNING):
        data = one_class_split(splits, 'bird', is_validation=False)
    assert data.protocol == 'validation'
    assert len(data.train_images) == 27 and len(data.test_images) == 6
    assert 'validation protocol' in caplog.text


def test_protocol_errors():
    with pytest.raises(ConfigError, match='validation protocol needs at least 2'):
        one_class_split(make_splits(per_class_train=(1, 5, 5, 5)), 0, is_validation=True)
    with pytest.raises(ConfigError, match='no training images'):
        one_class_split(make_splits(per_class_train=(0, 5, 5, 5)), 0, is_validation=False)


def test_one_class_only_gives_a_test_set_of_inliers():
    """Good images only: the held-out (or given) test set has no outliers; it is scored
    without AUCs (detect.evaluation.aucs_defined), not refused."""
    one_class_only = LabeledSplits(_encode(np.arange(10)), np.zeros(10), None, None, ['a'])
    data = one_class_split(one_class_only, 'a', is_validation=True)
    assert len(data.train_images) == 9 and data.test_labels.tolist() == [0]
    data = one_class_split(make_splits(per_class_test=(10, 0, 0, 0)), 0, is_validation=False)
    assert data.test_labels.tolist() == [0] * 10
