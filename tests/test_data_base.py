"""Image helpers and containers of data/base.py."""

import numpy as np
import pytest

from data.base import (LabeledSplits, OneClassData, conform_images, parse_input_shape,
                       resize_images, to_rgb)
from util.errors import ConfigError


def test_to_rgb_shapes():
    gray = np.arange(2 * 4 * 5, dtype=np.uint8).reshape(2, 4, 5)
    for x in (gray, gray[..., None]):
        rgb = to_rgb(x)
        assert rgb.shape == (2, 4, 5, 3) and rgb.dtype == np.uint8
        np.testing.assert_array_equal(rgb[..., 0], gray)
        np.testing.assert_array_equal(rgb[..., 2], gray)
    rgba = np.ones((1, 2, 2, 4), np.uint8)
    assert to_rgb(rgba).shape == (1, 2, 2, 3)
    rgb = np.ones((1, 2, 2, 3), np.uint8)
    assert to_rgb(rgb) is rgb


def test_resize_images_uint8_and_constant():
    x = np.full((3, 8, 8, 3), 200, np.uint8)
    y = resize_images(x, (32, 32))
    assert y.shape == (3, 32, 32, 3) and y.dtype == np.uint8
    assert np.all(y == 200)
    assert resize_images(x, (8, 8, 3)) is x  # already the right size
    gray = np.zeros((2, 10, 10), np.uint8)
    assert resize_images(gray, (5, 6)).shape == (2, 5, 6)
    assert resize_images(np.zeros((0, 4, 4, 3), np.uint8), (2, 2)).shape == (0, 2, 2, 3)


def test_resize_images_chunks_consistently(monkeypatch):
    import data.base as base
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(7, 6, 6, 3), dtype=np.uint8)
    whole = resize_images(x, (12, 12))
    monkeypatch.setattr(base, '_RESIZE_CHUNK', 3)
    np.testing.assert_array_equal(resize_images(x, (12, 12)), whole)


def test_conform_images():
    gray = np.zeros((2, 28, 28, 1), np.uint8)
    out = conform_images(gray, (64, 64, 3))
    assert out.shape == (2, 64, 64, 3) and out.dtype == np.uint8


def test_parse_input_shape():
    assert parse_input_shape((32, 32, 3)) == (32, 32, 3)
    assert parse_input_shape('64,64,3') == (64, 64, 3)
    for bad in ('64,64', '32,32,1', 'abc', (0, 32, 3), None):
        with pytest.raises(ConfigError, match='input_shape'):
            parse_input_shape(bad)


def test_containers():
    splits = LabeledSplits(np.zeros((4, 2, 2, 3), np.uint8), [0, 1, 0, 1], None, None, [0, 1])
    assert splits.train_labels.dtype == np.int64 and splits.class_names == ['0', '1']
    assert not splits.has_test
    with pytest.raises(ValueError):
        LabeledSplits(np.zeros((4, 2, 2, 3), np.uint8), [0, 1], None, None, ['a', 'b'])
    data = OneClassData(np.zeros((5, 2, 2, 3), np.uint8), np.zeros((3, 2, 2, 3), np.uint8),
                        np.array([0, 1, 1]), ['a', 'b'], 'a', 0, 'toy', 'test')
    text = data.describe()
    assert 'train 5' in text and 'test 3 (1 inliers, 2 outliers)' in text and '2x2x3' in text


def test_labels_must_match_class_names():
    with pytest.raises(ConfigError, match='class names'):
        LabeledSplits(np.zeros((2, 2, 2, 3), np.uint8), [0, 5], None, None, ['a', 'b'])
