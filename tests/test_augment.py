"""Tests for data/augment.py: every op's contract, exact reference checks, spec parsing."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from data import augment as A
from util.errors import ConfigError

RNG = np.random.default_rng(0)


def _images(b=6, size=16, low=0.0, high=1.0):
    return tf.constant(RNG.uniform(low, high, [b, size, size, 3]).astype(np.float32))


def _same_images(b=32, size=8):
    """b copies of one asymmetric image, to see per-image randomness."""
    one = RNG.uniform(0.0, 1.0, [1, size, size, 3]).astype(np.float32)
    return tf.constant(np.repeat(one, b, axis=0))


OPS = {
    "cnr": lambda x: A.random_resized_crop(x, 0.5),
    "hflip": lambda x: A.random_hflip(x),
    "vflip": lambda x: A.random_vflip(x),
    "jitter": lambda x: A.color_jitter(x, 0.4, 0.4, 0.4, 0.4),
    "gray": lambda x: A.random_grayscale(x, 0.5),
    "blur": lambda x: A.random_gaussian_blur(x, 0.5),
    "rotate90": lambda x: A.random_rotate90(x),
    "default_spec": A.build_augment_fn(A.DEFAULT_AUG + "+rotate90+vflip"),
}


# ----------------------------------------------------------------------------
# Contract of every op


@pytest.mark.parametrize("name", sorted(OPS))
def test_shape_dtype_range_eager(name):
    x = _images(5, 16, -0.2, 1.2)  # out-of-range input must still come out clipped
    y = OPS[name](x)
    assert y.shape == (5, 16, 16, 3)
    assert y.dtype == tf.float32
    assert float(tf.reduce_min(y)) >= 0.0 and float(tf.reduce_max(y)) <= 1.0


@pytest.mark.parametrize("name", sorted(OPS))
def test_graph_mode_keeps_static_shape(name):
    # A fresh tf.function per signature: a retrace may relax shapes on its own.
    for shape in ([None, 8, 8, 3], [4, 8, 8, 3]):
        fn = tf.function(OPS[name])
        out = fn.get_concrete_function(tf.TensorSpec(shape, tf.float32)).structured_outputs
        assert out.shape.as_list() == shape
    y = fn(_images(4, 8))
    assert y.shape == (4, 8, 8, 3)


@pytest.mark.parametrize("name", ["cnr", "jitter", "gray", "blur", "rotate90", "hflip", "vflip"])
def test_per_image_randomness(name):
    tf.random.set_seed(1)
    y = OPS[name](_same_images(32)).numpy()
    distinct = {y[i].tobytes() for i in range(len(y))}
    assert len(distinct) > 1


# ----------------------------------------------------------------------------
# Deterministic checks


def test_probability_zero_is_identity():
    x = _images()
    for y in (A.random_hflip(x, 0.0), A.random_vflip(x, 0.0), A.random_grayscale(x, 0.0),
              A.random_gaussian_blur(x, 0.0), A.color_jitter(x, 0, 0, 0, 0)):
        np.testing.assert_array_equal(y.numpy(), x.numpy())


def test_flip_probability_one_matches_tf():
    x = _images()
    np.testing.assert_array_equal(A.random_hflip(x, 1.0).numpy(),
                                  tf.image.flip_left_right(x).numpy())
    np.testing.assert_array_equal(A.random_vflip(x, 1.0).numpy(),
                                  tf.image.flip_up_down(x).numpy())


def test_flip_each_image_is_flipped_or_not():
    x = _same_images(32)
    y = A.random_hflip(x).numpy()
    flipped = tf.image.flip_left_right(x).numpy()
    is_flipped = [np.array_equal(y[i], flipped[i]) for i in range(32)]
    is_same = [np.array_equal(y[i], x[i].numpy()) for i in range(32)]
    assert all(a or b for a, b in zip(is_flipped, is_same))
    assert any(is_flipped) and any(is_same)


def test_gray_probability_one():
    x = _images()
    y = A.random_grayscale(x, 1.0).numpy()
    np.testing.assert_array_equal(y[..., 0], y[..., 1])
    np.testing.assert_array_equal(y[..., 0], y[..., 2])
    np.testing.assert_allclose(y[..., :1], tf.image.rgb_to_grayscale(x).numpy(), atol=1e-6)


def test_gray_and_blur_leave_unselected_images_exactly_alone():
    tf.random.set_seed(2)
    x = _same_images(32, 16)
    gray = np.repeat(tf.image.rgb_to_grayscale(x).numpy(), 3, axis=-1)
    for y, changed in ((A.random_grayscale(x, 0.5).numpy(), gray),
                       (A.random_gaussian_blur(x, 0.5).numpy(), None)):
        same = [np.array_equal(y[i], x.numpy()[i]) for i in range(32)]
        assert any(same) and not all(same)
        if changed is not None:
            for i in np.flatnonzero(~np.array(same)):
                np.testing.assert_allclose(y[i], changed[i], atol=1e-6)


def test_crop_full_scale_is_identity():
    x = _images(4, 16)
    np.testing.assert_allclose(A.random_resized_crop(x, 1.0).numpy(), x.numpy(), atol=1e-5)


def test_crop_boxes_are_square_and_inside():
    boxes = A._crop_boxes(500, 0.5).numpy()
    side_y = boxes[:, 2] - boxes[:, 0]
    side_x = boxes[:, 3] - boxes[:, 1]
    np.testing.assert_allclose(side_y, side_x, atol=1e-6)
    assert side_y.min() >= 0.5 - 1e-6 and side_y.max() <= 1.0 + 1e-6
    assert boxes.min() >= 0.0 and boxes.max() <= 1.0 + 1e-6
    assert side_y.max() - side_y.min() > 0.3  # sides really spread over the range


def test_crop_keeps_constant_image_and_zooms():
    const = tf.fill([3, 16, 16, 3], 0.25)
    np.testing.assert_allclose(A.random_resized_crop(const, 0.3).numpy(), 0.25, atol=1e-6)
    # A horizontal ramp: a zoomed crop has a smaller left-to-right range.
    ramp = np.tile(np.linspace(0, 1, 16, dtype=np.float32)[None, None, :, None], [8, 16, 1, 3])
    y = A.random_resized_crop(ramp, 0.5).numpy()
    spread = y[:, 0, -1, 0] - y[:, 0, 0, 0]
    assert np.all(spread <= 1.0 + 1e-6) and np.all(spread >= 0.5 - 1e-3)
    assert spread.min() < 0.99


def test_blur_reduces_variance_and_keeps_constant():
    x = _images(4, 32)
    y = A.random_gaussian_blur(x, 1.0).numpy()
    assert np.all(y.reshape(4, -1).var(axis=1) < x.numpy().reshape(4, -1).var(axis=1))
    const = tf.fill([3, 32, 32, 3], 0.7)
    np.testing.assert_allclose(A.random_gaussian_blur(const, 1.0).numpy(), 0.7, atol=1e-6)


def _reference_blur(img, sigma, k):
    """Plain numpy separable Gaussian blur with reflect padding, one image."""
    r = k // 2
    w = np.exp(-np.arange(-r, r + 1) ** 2 / (2 * sigma ** 2))
    w /= w.sum()
    pad = np.pad(img, [(r, r), (0, 0), (0, 0)], mode="reflect")
    img = sum(w[t] * pad[t:t + img.shape[0]] for t in range(k))
    pad = np.pad(img, [(0, 0), (r, r), (0, 0)], mode="reflect")
    return sum(w[t] * pad[:, t:t + img.shape[1]] for t in range(k))


@pytest.mark.parametrize("size", [8, 32, 64])
def test_blur_matches_numpy_reference(size):
    x = _images(3, size)
    sigma = np.array([0.0, 0.5, 2.0], np.float32)
    y = A._blur_with_sigma(x, tf.constant(sigma)).numpy()
    np.testing.assert_array_equal(y[0], x.numpy()[0])  # sigma 0: untouched
    k = A.blur_kernel_size(size)
    for i in (1, 2):
        np.testing.assert_allclose(y[i], _reference_blur(x.numpy()[i], sigma[i], k), atol=1e-5)


def test_blur_kernel_size():
    assert [A.blur_kernel_size(s) for s in (8, 32, 64, 224, 256)] == [3, 3, 7, 23, 25]


def test_rotate90_outputs_are_rotations():
    x = _same_images(40, 8)
    y = A.random_rotate90(x).numpy()
    rots = [tf.image.rot90(x, k).numpy()[0] for k in range(4)]
    which = []
    for i in range(40):
        hits = [k for k in range(4) if np.array_equal(y[i], rots[k])]
        assert hits, "image %d is not a rotation of the input" % i
        which.append(hits[0])
    assert set(which) == {0, 1, 2, 3}


def test_jitter_brightness_only_shifts_each_image_by_a_constant():
    tf.random.set_seed(3)
    x = _images(8, 8, 0.4, 0.6)  # no clipping with |delta| <= 0.3
    d = (A.color_jitter(x, brightness=0.3) - x).numpy()
    per_image = d.reshape(8, -1)
    np.testing.assert_allclose(per_image, per_image[:, :1] * np.ones_like(per_image), atol=1e-6)
    assert np.all(np.abs(per_image[:, 0]) <= 0.3 + 1e-6)
    assert len(np.unique(np.round(per_image[:, 0], 5))) > 1


def test_jitter_hue_only_changes_colour_but_not_value():
    tf.random.set_seed(4)
    x = _images(8, 8)
    y = A.color_jitter(x, hue=0.4).numpy()
    assert y.min() >= 0.0 and y.max() <= 1.0
    assert np.abs(y - x.numpy()).max() > 0.05
    # Hue rotation keeps V = max(r,g,b) and the chroma max-min.
    np.testing.assert_allclose(y.max(-1), x.numpy().max(-1), atol=1e-5)
    np.testing.assert_allclose(y.max(-1) - y.min(-1), x.numpy().max(-1) - x.numpy().min(-1),
                               atol=1e-5)


def test_jitter_contrast_only_scales_around_mean():
    tf.random.set_seed(5)
    x = _images(6, 8, 0.4, 0.6)
    y = A.color_jitter(x, contrast=0.4).numpy()
    m = x.numpy().mean(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(y.mean(axis=(1, 2), keepdims=True), m, atol=1e-5)
    dx, dy = x.numpy() - m, y - m
    f = (dx * dy).sum(axis=(1, 2, 3), keepdims=True) / (dx * dx).sum(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(dy, f * dx, atol=1e-5)  # one factor per image, all channels
    assert np.all(f >= 0.6 - 1e-4) and np.all(f <= 1.4 + 1e-4)
    assert np.ptp(f) > 0.01


_TF_ADJUST = {
    "brightness": tf.image.adjust_brightness,
    "contrast": tf.image.adjust_contrast,
    "saturation": tf.image.adjust_saturation,
    "hue": tf.image.adjust_hue,
}


@pytest.mark.parametrize("ops", [
    ("brightness", "contrast", "saturation", "hue"),
    ("brightness", "hue"),
    ("saturation", "hue"),
    ("contrast", "saturation", "hue"),
    ("brightness", "contrast"),
    ("saturation",),
])
def test_apply_jitter_matches_sequential_tf_image_for_every_order(ops):
    perms = np.array(list(itertools.permutations(range(len(ops)))), np.int32)
    b = len(perms)
    x = _images(b, 8)
    params = {
        "brightness": RNG.uniform(-0.4, 0.4, b), "contrast": RNG.uniform(0.6, 1.4, b),
        "saturation": RNG.uniform(0.6, 1.4, b), "hue": RNG.uniform(-0.4, 0.4, b)}
    params = {k: tf.constant(v, tf.float32) for k, v in params.items() if k in ops}
    y = A._apply_jitter(x, ops, params, tf.constant(perms)).numpy()
    for i in range(b):
        ref = x[i]
        for j in perms[i]:
            ref = tf.clip_by_value(_TF_ADJUST[ops[j]](ref, float(params[ops[j]][i])), 0.0, 1.0)
        np.testing.assert_allclose(y[i], ref.numpy(), atol=2e-5, err_msg="order %s" % perms[i])


def test_apply_jitter_phase_with_no_image():
    # Every image runs its HSV ops adjacently, so the second HSV phase is empty.
    ops = ("brightness", "contrast", "saturation", "hue")
    perm = tf.constant([[0, 1, 2, 3], [2, 3, 0, 1]], tf.int32)
    params = {k: tf.constant([0.1, 1.2] if k in ("contrast", "saturation") else [0.1, 0.2])
              for k in ops}
    y = A._apply_jitter(_images(2, 8), ops, params, perm)
    assert y.shape == (2, 8, 8, 3)


def test_jitter_order_is_a_random_permutation_per_image(monkeypatch):
    seen = []
    real = A._apply_jitter

    def spy(images, ops, params, perm):
        seen.append(perm.numpy())
        return real(images, ops, params, perm)

    monkeypatch.setattr(A, "_apply_jitter", spy)
    tf.random.set_seed(6)
    A.color_jitter(_images(64, 8), 0.4, 0.4, 0.4, 0.4)
    perm = seen[0]
    assert perm.shape == (64, 4)
    assert all(sorted(row) == [0, 1, 2, 3] for row in perm)
    assert len({tuple(row) for row in perm}) > 5


# ----------------------------------------------------------------------------
# Spec parsing and the composed function


def test_parse_default_spec():
    assert A.parse_aug_list(A.DEFAULT_AUG) == [
        ("cnr", {"min_scale": 0.5}),
        ("hflip", {}),
        ("jitter", {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.4}),
        ("gray", {"p": 0.2}),
        ("blur", {"p": 0.5}),
    ]
    assert A.parse_aug_list(A.DEFAULT_AUG + "+rotate90")[-1] == ("rotate90", {})


def test_parse_other_forms():
    assert A.parse_aug_list("x") == []
    assert A.parse_aug_list("") == []
    assert A.parse_aug_list("vflip+cnr1") == [("vflip", {}), ("cnr", {"min_scale": 1.0})]
    assert A.parse_aug_list("jitter_h0.1_b.2") == [
        ("jitter", {"brightness": 0.2, "contrast": 0.0, "saturation": 0.0, "hue": 0.1})]


@pytest.mark.parametrize("spec", [
    "foo", "cnr", "cnr1.5", "cnr0", "gray2", "blur-0.1", "blurx", "jitter_q0.3",
    "jitter_b0.4_b0.2", "jitter_h0.9", "hflip+", "cnr0.5x", "cnr0.5+rotate", "x+hflip",
    "gray1e-1", "cnrnan",
])
def test_parse_bad_tokens(spec):
    with pytest.raises(ConfigError) as err:
        A.parse_aug_list(spec)
    msg = str(err.value)
    assert "valid forms" in msg
    bad = [t for t in spec.split("+")]
    assert any(repr(t) in msg for t in bad)


def test_parse_not_a_string():
    with pytest.raises(ConfigError):
        A.parse_aug_list(None)


def test_build_augment_fn():
    with pytest.raises(ConfigError):
        A.build_augment_fn("cnr0.5+spin")
    x = _images()
    assert A.build_augment_fn("x")(x) is x
    u8 = RNG.integers(0, 256, [4, 8, 8, 3], dtype=np.uint8)
    assert A.build_augment_fn("x")(u8).dtype == tf.float32
    y = A.build_augment_fn("hflip")(u8)
    assert y.dtype == tf.float32 and float(tf.reduce_max(y)) <= 1.0


def test_build_augment_fn_in_tf_data_pipeline():
    u8 = RNG.integers(0, 256, [20, 16, 16, 3], dtype=np.uint8)
    ds = tf.data.Dataset.from_tensor_slices(u8).batch(8).map(
        A.build_augment_fn(A.DEFAULT_AUG + "+rotate90"))
    assert ds.element_spec.shape.as_list() == [None, 16, 16, 3]
    batches = [b.numpy() for b in ds]
    assert [len(b) for b in batches] == [8, 8, 4]
    assert all(b.min() >= 0.0 and b.max() <= 1.0 for b in batches)


def test_to_float_images():
    u8 = np.array([0, 51, 255], np.uint8).reshape(1, 1, 1, 3)
    np.testing.assert_allclose(A.to_float_images(u8).numpy().ravel(), [0.0, 0.2, 1.0])
    assert A.to_float_images(u8).dtype == tf.float32
    with pytest.raises(ConfigError):
        A.to_float_images(np.zeros([1, 2, 2, 3], np.float32))


def test_bad_inputs_raise_config_error():
    with pytest.raises(ConfigError, match="square"):
        A.random_hflip(tf.zeros([2, 8, 6, 3]))
    with pytest.raises(ConfigError, match="to_float_images"):
        A.random_hflip(np.zeros([2, 8, 8, 3], np.uint8))
    with pytest.raises(ConfigError, match=r"\[B,H,W,3\]"):
        A.random_hflip(tf.zeros([8, 8, 3]))
    with pytest.raises(ConfigError):
        A.random_grayscale(_images(), 1.5)
    with pytest.raises(ConfigError):
        A.random_resized_crop(_images(), 0.0)
    with pytest.raises(ConfigError):
        A.color_jitter(_images(), hue=0.7)
