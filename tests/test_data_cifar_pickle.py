"""CIFAR python-pickle loader, on small fake pickles in the official format."""

import os
import pickle

import numpy as np
import pytest

from data import cifar_pickle
from data.registry import load_one_class_data
from util.errors import ConfigError


def _dump(path, obj):
    with open(path, 'wb') as f:
        pickle.dump(obj, f)


def _rows(n, seed):
    """n CHW rows; row i has red = i, green = 100 + i, blue = 200 + i, and one
    marked pixel at (row 1, col 2) with RGB (7, 8, 9)."""
    chw = np.zeros((n, 3, 32, 32), np.uint8)
    for i in range(n):
        chw[i, 0], chw[i, 1], chw[i, 2] = i, 100 + i, 200 + i
        chw[i, :, 1, 2] = (7, 8, 9)
    return chw.reshape(n, 3072)


def make_cifar10(root, per_batch=4):
    folder = os.path.join(root, 'cifar-10-batches-py')
    os.makedirs(folder)
    names = [b'airplane', b'automobile', b'bird', b'cat', b'deer',
             b'dog', b'frog', b'horse', b'ship', b'truck']
    _dump(os.path.join(folder, 'batches.meta'),
          {b'label_names': names, b'num_cases_per_batch': per_batch})
    for b in range(1, 6):
        _dump(os.path.join(folder, f'data_batch_{b}'),
              {b'batch_label': b'x', b'labels': [(b + i) % 10 for i in range(per_batch)],
               b'data': _rows(per_batch, b), b'filenames': [b'f'] * per_batch})
    _dump(os.path.join(folder, 'test_batch'),
          {b'labels': list(range(10)), b'data': _rows(10, 0)})
    return folder


def make_cifar100(root, n=20):
    folder = os.path.join(root, 'cifar-100-python')
    os.makedirs(folder)
    fine = [f'fine{i}'.encode() for i in range(100)]
    coarse = [f'coarse{i}'.encode() for i in range(20)]
    _dump(os.path.join(folder, 'meta'), {b'fine_label_names': fine, b'coarse_label_names': coarse})
    for split in ('train', 'test'):
        _dump(os.path.join(folder, split),
              {b'data': _rows(n, 0), b'fine_labels': [5 * i for i in range(n)],
               b'coarse_labels': [i for i in range(n)], b'filenames': [b'f'] * n})
    return folder


def test_cifar10_pickles_chw_to_hwc(tmp_path):
    folder = make_cifar10(str(tmp_path))
    for root in (folder, str(tmp_path)):  # the folder itself or its parent
        splits = cifar_pickle.cifar10(root)
        assert splits.train_images.shape == (20, 32, 32, 3)
        assert splits.train_images.dtype == np.uint8
        assert splits.test_images.shape == (10, 32, 32, 3)
        assert splits.class_names[0] == 'airplane' and len(splits.class_names) == 10
        img = splits.train_images[3]
        np.testing.assert_array_equal(img[1, 2], [7, 8, 9])
        np.testing.assert_array_equal(img[0, 0], [3, 103, 203])
        assert splits.train_labels[:4].tolist() == [1, 2, 3, 4]
        assert splits.test_labels.tolist() == list(range(10))


def test_cifar100_fine_and_coarse(tmp_path):
    make_cifar100(str(tmp_path))
    fine = cifar_pickle.cifar100(str(tmp_path))
    coarse = cifar_pickle.cifar20(str(tmp_path))
    assert len(fine.class_names) == 100 and len(coarse.class_names) == 20
    assert fine.train_labels[3] == 15 and coarse.train_labels[3] == 3
    assert coarse.class_names[3] == 'coarse3'
    np.testing.assert_array_equal(coarse.train_images[2, 1, 2], [7, 8, 9])
    np.testing.assert_array_equal(coarse.train_images[2, 5, 5], [2, 102, 202])


def test_registry_uses_pickles_when_root_given(tmp_path):
    make_cifar10(str(tmp_path))
    data = load_one_class_data('cifar10ood', 'bird', root=str(tmp_path))
    assert data.protocol == 'test' and data.category_index == 2
    assert data.train_images.shape[1:] == (32, 32, 3)
    assert len(data.test_images) == 10 and int(data.test_labels.sum()) == 9
    make_cifar100(str(tmp_path))
    data = load_one_class_data('cifar20ood', 'coarse4', root=str(tmp_path), input_shape=(16, 16, 3))
    assert data.train_images.shape == (1, 16, 16, 3)
    assert data.test_images.shape == (20, 16, 16, 3)


def test_pickle_errors(tmp_path):
    with pytest.raises(ConfigError, match='does not exist'):
        cifar_pickle.cifar10(str(tmp_path / 'nope'))
    with pytest.raises(ConfigError, match='cifar-10-batches-py'):
        cifar_pickle.cifar10(str(tmp_path))
    folder = make_cifar10(str(tmp_path))
    with open(os.path.join(folder, 'test_batch'), 'wb') as f:
        f.write(b'not a pickle')
    with pytest.raises(ConfigError, match='test_batch'):
        cifar_pickle.cifar10(str(tmp_path))
