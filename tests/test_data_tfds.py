"""TFDS sources, offline through tfds.testing.mock_data (never the network)."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from data import tfds_source
from data.registry import load_one_class_data
from util.errors import ConfigError


def test_cifar10_mock():
    with tfds.testing.mock_data(num_examples=30):
        splits = tfds_source.cifar10()
        data = load_one_class_data('cifar10ood', 'cat')
    assert splits.train_images.shape == (30, 32, 32, 3)
    assert splits.test_images.shape == (30, 32, 32, 3)
    assert splits.train_images.dtype == np.uint8 and splits.train_labels.dtype == np.int64
    assert splits.class_names == tfds_source.CIFAR10_NAMES
    assert splits.train_labels.max() < 10
    assert data.category == 'cat' and data.protocol == 'test'
    assert data.train_images.shape[1:] == (32, 32, 3)
    assert len(data.test_images) == 30


def test_cifar20_uses_coarse_labels():
    with tfds.testing.mock_data(num_examples=40):
        coarse = tfds_source.cifar20()
        fine = tfds_source.cifar100()
    assert len(coarse.class_names) == 20 and coarse.class_names[0] == 'aquatic_mammals'
    assert len(fine.class_names) == 100 and fine.class_names[-1] == 'worm'
    assert coarse.train_labels.max() < 20
    assert coarse.train_images.shape == (40, 32, 32, 3)


def test_fmnist_padding_and_resize():
    with tfds.testing.mock_data(num_examples=20):
        splits = tfds_source.fmnist()
        big = load_one_class_data('fmnistood', 'Trouser', input_shape=(64, 64, 3),
                                  is_validation=True)
    x = splits.train_images
    assert x.shape == (20, 32, 32, 3)
    border = np.concatenate([x[:, :2].ravel(), x[:, -2:].ravel(),
                             x[:, :, :2].ravel(), x[:, :, -2:].ravel()])
    assert np.all(border == 0)
    assert x[:, 2:-2, 2:-2].max() > 0
    np.testing.assert_array_equal(x[..., 0], x[..., 1])
    assert splits.class_names[0] == 'T-shirt/top'
    assert big.train_images.shape[1:] == (64, 64, 3) and big.protocol == 'validation'


def test_offline_failure_is_config_error(monkeypatch, tmp_path):
    class FakeBuilder:
        name = 'cifar10'

        def is_prepared(self):
            return False

        def download_and_prepare(self):
            raise ConnectionError('Failed to resolve host')

    monkeypatch.setattr(tfds, 'builder', lambda *a, **k: FakeBuilder())
    with pytest.raises(ConfigError) as err:
        tfds_source.cifar10(data_dir=str(tmp_path))
    message = str(err.value)
    assert '--data_dir' in message and '--root' in message and '\n' not in message
    with pytest.raises(ConfigError, match='--data_dir'):
        load_one_class_data('fmnistood', 0)
    with pytest.raises(ConfigError, match='no --root loader'):
        load_one_class_data('fmnistood', 0, root=str(tmp_path))
