"""Tests for data/distaug.py: counts, order, and agreement with tf.image."""

import numpy as np
import pytest
import tensorflow as tf

from data import distaug as D
from util.errors import ConfigError

RNG = np.random.default_rng(0)
EIGHT = ["original", "hflip", "rot90", "rot90+hflip",
         "rot180", "rot180+hflip", "rot270", "rot270+hflip"]


def _uint8(n=3, h=6, w=6):
    return RNG.integers(0, 256, [n, h, w, 3], dtype=np.uint8)


def _tf_reference(x, name):
    """The same transform built from tf.image ops."""
    base, _, then = name.partition("+")
    ks = {"original": 0, "rot90": 1, "rot180": 2, "rot270": 3}
    if base in ks:
        y = tf.image.rot90(x, ks[base])
    elif base == "hflip":
        y = tf.image.flip_left_right(x)
    else:
        y = tf.image.flip_up_down(x)
    if then == "hflip":
        y = tf.image.flip_left_right(y)
    return y.numpy()


def test_types_and_counts():
    expected = {"none": 1, "rot": 4, "hflip": 2, "vflip": 2}
    expected.update({str(k): k for k in range(1, 9)})
    assert set(D.DISTAUG_TYPES) == set(expected)
    x = _uint8(3)
    for name, count in expected.items():
        assert len(D.distaug_transforms(name)) == count
        y = D.apply_distribution_augmentation(x, name)
        assert y.shape == (3 * count, 6, 6, 3)
        assert y.dtype == np.uint8


def test_order_of_the_eight_list():
    assert D.distaug_transforms("8") == EIGHT
    for k in range(1, 9):
        assert D.distaug_transforms(str(k)) == EIGHT[:k]
    assert D.distaug_transforms(3) == EIGHT[:3]  # an int flag value works too
    assert D.distaug_transforms("rot") == ["original", "rot90", "rot180", "rot270"]
    assert D.distaug_transforms("hflip") == ["original", "hflip"]
    assert D.distaug_transforms("vflip") == ["original", "vflip"]
    assert D.distaug_transforms("none") == ["original"]


def test_numpy_rotation_is_counter_clockwise_like_tf():
    img = np.array([[1, 2], [3, 4]], np.float32).reshape(1, 2, 2, 1).repeat(3, axis=3)
    y = D.apply_transform(img, "rot90")[0, ..., 0]
    np.testing.assert_array_equal(y, [[2, 4], [1, 3]])  # top-right corner moves to top-left
    np.testing.assert_array_equal(y, tf.image.rot90(img, 1).numpy()[0, ..., 0])


@pytest.mark.parametrize("name", EIGHT + ["vflip"])
def test_each_transform_matches_tf(name):
    x = RNG.uniform(0, 1, [2, 5, 5, 3]).astype(np.float32)
    np.testing.assert_array_equal(D.apply_transform(x, name), _tf_reference(x, name))


@pytest.mark.parametrize("kind", ["rot", "8", "hflip", "vflip", "5"])
def test_blocks_match_tf(kind):
    x = _uint8(4, 7, 7)
    y = D.apply_distribution_augmentation(x, kind)
    for t, name in enumerate(D.distaug_transforms(kind)):
        np.testing.assert_array_equal(y[t * 4:(t + 1) * 4], _tf_reference(x, name))
    np.testing.assert_array_equal(y[:4], x)


def test_dtype_preserved_and_no_aliasing():
    x = RNG.uniform(0, 1, [2, 4, 4, 3]).astype(np.float32)
    y = D.apply_distribution_augmentation(x, "rot")
    assert y.dtype == np.float32
    y[:] = -1.0
    assert x.min() >= 0.0
    t = D.apply_transform(x, "rot90")
    assert t.flags["C_CONTIGUOUS"]


def test_unknown_type_raises():
    for bad in ("rotate", "9", "0", 9, True, "", None):
        with pytest.raises(ConfigError) as err:
            D.distaug_transforms(bad)
        assert "rot" in str(err.value) and "hflip" in str(err.value)
    with pytest.raises(ConfigError):
        D.apply_distribution_augmentation(_uint8(), "spin")
    with pytest.raises(ConfigError):
        D.apply_transform(_uint8(), "rot45")


def test_non_square_and_bad_shapes():
    wide = _uint8(2, 4, 6)
    with pytest.raises(ConfigError, match="square"):
        D.apply_distribution_augmentation(wide, "rot")
    with pytest.raises(ConfigError, match="square"):
        D.apply_transform(wide, "rot270+hflip")
    assert D.apply_distribution_augmentation(wide, "hflip").shape == (4, 4, 6, 3)
    assert D.apply_distribution_augmentation(wide, "vflip").shape == (4, 4, 6, 3)
    with pytest.raises(ConfigError, match="NHWC"):
        D.apply_distribution_augmentation(np.zeros([4, 4, 3]), "rot")
