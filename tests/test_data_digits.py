"""digitsood: scikit-learn's bundled 8x8 digits, upsampled to RGB."""

import numpy as np

from data.digits import load_digits
from data.registry import load_one_class_data


def test_digits_sizes_stratified_deterministic():
    a = load_digits((32, 32, 3))
    assert a.class_names == [str(i) for i in range(10)]
    assert a.train_images.shape[1:] == (32, 32, 3) and a.train_images.dtype == np.uint8
    assert len(a.train_images) + len(a.test_images) == 1797
    assert abs(len(a.train_images) - len(a.test_images)) <= 1
    assert a.train_images.max() > 200  # scaled from 0..16 to 0..255
    train_counts = np.bincount(a.train_labels, minlength=10)
    test_counts = np.bincount(a.test_labels, minlength=10)
    assert np.all(np.abs(train_counts - test_counts) <= 1)  # stratified
    # gray repeated to 3 channels
    np.testing.assert_array_equal(a.train_images[..., 0], a.train_images[..., 2])
    b = load_digits((32, 32, 3))
    np.testing.assert_array_equal(a.train_images, b.train_images)
    np.testing.assert_array_equal(a.test_labels, b.test_labels)


def test_digits_one_class():
    data = load_one_class_data('digitsood', '7', input_shape=(16, 16, 3))
    assert data.train_images.shape[1:] == (16, 16, 3)
    assert data.category == '7'
    assert len(data.test_labels) in (898, 899)
    assert 85 <= int((data.test_labels == 0).sum()) <= 95
