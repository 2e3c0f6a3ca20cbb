"""data/aug_spec.py + data/augment.py + data/pipeline.py: the grammar, every token, the views.

Ops are exercised the way training uses them: through build_augment_fn (one
spec -> a tuple of view batches) and train_dataset.
"""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from data import augment as A
from data.aug_spec import (DEFAULT_AUG, JITTER_DEFAULTS, ROTATION_SUFFIX, drop_hflip,
                           has_hflip, parse_aug_list)
from data.pipeline import train_dataset
from util.errors import ConfigError

RNG = np.random.default_rng(0)


def _images(b=6, size=16, low=0.0, high=1.0):
    return tf.constant(RNG.uniform(low, high, [b, size, size, 3]).astype(np.float32))


def _same_images(b=32, size=8):
    """b copies of one asymmetric image, to see per-image randomness."""
    one = RNG.uniform(0.0, 1.0, [1, size, size, 3]).astype(np.float32)
    return tf.constant(np.repeat(one, b, axis=0))


def aug(spec, x, **kwargs):
    """The first view of spec applied to x (numpy)."""
    return A.build_augment_fn(spec, **kwargs)(x)[0].numpy()


# ----------------------------------------------------------------------------
# Grammar (parser, no TensorFlow)


def test_bare_tokens_take_release_defaults():
    assert parse_aug_list("cnr+gray+blur+jitter") == [[
        ("cnr", {"min_scale": 0.5}), ("gray", {"p": 0.2}), ("blur", {"p": 0.5}),
        ("jitter", {"brightness": 0.125, "contrast": 0.4, "saturation": 0.4, "hue": 0.0})]]
    # jitter parts not given keep the defaults (not 0)
    assert parse_aug_list("jitter_b0.3_h.1") == [[
        ("jitter", {"brightness": 0.3, "contrast": 0.4, "saturation": 0.4, "hue": 0.1})]]
    assert JITTER_DEFAULTS == {"brightness": 0.125, "contrast": 0.4, "saturation": 0.4,
                               "hue": 0.0}
    assert parse_aug_list("crop+crop12+shift+resize+crop_and_resize0.3") == [[
        ("crop", {"size": None}), ("crop", {"size": 12}), ("shift", {}), ("resize", {}),
        ("cnr", {"min_scale": 0.3})]]


def test_default_spec_parses_to_the_paper_chain():
    assert parse_aug_list(DEFAULT_AUG) == [[
        ("cnr", {"min_scale": 0.5}), ("hflip", {}),
        ("jitter", {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.4}),
        ("gray", {"p": 0.2}), ("blur", {"p": 0.5})]]


def test_comma_plus_and_x():
    # ',' separates views; '+'-entries extend the first entry; a lone '+' repeats it
    assert parse_aug_list("hflip,vflip") == [[("hflip", {})], [("vflip", {})]]
    assert parse_aug_list("gray0.5,+rotate90,+") == [
        [("gray", {"p": 0.5})], [("gray", {"p": 0.5}), ("rotate90", {})],
        [("gray", {"p": 0.5})]]
    # 'x' = resize only: no ops, and it drops the ops before it in its chain
    assert parse_aug_list("x") == [[]]
    assert parse_aug_list("x,+rotate180") == [[], [("rotate180", {})]]
    assert parse_aug_list("cnr+hflip+x+rotate270") == [[("rotate270", {})]]
    rot = parse_aug_list(DEFAULT_AUG + ROTATION_SUFFIX)
    assert len(rot) == 4 and all(v[:-1] == rot[0] for v in rot[1:])
    assert [v[-1][0] for v in rot[1:]] == ["rotate90", "rotate180", "rotate270"]


@pytest.mark.parametrize("spec", [
    "foo", "cnr1.5", "cnr0", "gray2", "blur-0.1", "blurx", "jitter_q0.3", "jitter_b0.4_b0.2",
    "jitter_h0.9", "cnr0.5x", "cnr0.5+rotate", "gray1e-1", "cnrnan", "crop3.5", "+hflip",
    "hflip,+rotate45",
])
def test_bad_specs(spec):
    with pytest.raises(ConfigError) as err:
        parse_aug_list(spec)
    assert "valid tokens" in str(err.value)


def test_crop_window_must_fit_the_image():
    with pytest.raises(ConfigError, match="crop40"):
        parse_aug_list("crop40", size=32)
    parse_aug_list("crop32", size=32)


def test_hflip_helpers():
    assert has_hflip(DEFAULT_AUG) and not has_hflip("cnr,+rotate90")
    assert has_hflip("x,+hflip")
    assert drop_hflip(DEFAULT_AUG + ",+") == (
        "cnr0.5+jitter_b0.4_c0.4_s0.4_h0.4+gray0.2+blur0.5,+")
    assert drop_hflip("hflip,+hflip+rotate90") == "x,+rotate90"


# ----------------------------------------------------------------------------
# Each token, through build_augment_fn


def test_x_and_resize_are_identity():
    x = _images()
    np.testing.assert_array_equal(aug("x", x), x.numpy())
    np.testing.assert_array_equal(aug("resize", x), x.numpy())
    u8 = RNG.integers(0, 256, [4, 8, 8, 3], dtype=np.uint8)
    np.testing.assert_allclose(aug("x", u8), u8 / 255.0, atol=1e-7)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_fixed_rotations_are_exact(k):
    x = _images(3, 8)
    np.testing.assert_array_equal(aug(f"rotate{90 * k}", x), np.rot90(x.numpy(), k, axes=(1, 2)))


def test_rotrand_gives_every_rotation():
    x = _same_images(40, 8)
    y = aug("rotrand", x)
    rots = [np.rot90(x.numpy()[0], k) for k in range(4)]
    which = []
    for i in range(40):
        hits = [k for k in range(4) if np.array_equal(y[i], rots[k])]
        assert hits, "image %d is not a rotation of the input" % i
        which.append(hits[0])
    assert set(which) == {0, 1, 2, 3}


@pytest.mark.parametrize("spec, flip", [("hflip", np.fliplr), ("vflip", np.flipud)])
def test_flips_flip_each_image_or_not(spec, flip):
    x = _same_images(32)
    y = aug(spec, x)
    flipped = flip(x.numpy()[0])
    is_flipped = [np.array_equal(y[i], flipped) for i in range(32)]
    is_same = [np.array_equal(y[i], x.numpy()[0]) for i in range(32)]
    assert all(a or b for a, b in zip(is_flipped, is_same))
    assert any(is_flipped) and any(is_same)


def test_gray_probability_one_and_zero():
    x = _images()
    y = aug("gray1", x)
    np.testing.assert_array_equal(y[..., 0], y[..., 2])
    np.testing.assert_allclose(y[..., :1], tf.image.rgb_to_grayscale(x).numpy(), atol=1e-6)
    np.testing.assert_array_equal(aug("gray0", x), x.numpy())


def test_gray_and_blur_leave_unselected_images_exactly_alone():
    tf.random.set_seed(2)
    x = _same_images(32, 16)
    gray = np.repeat(tf.image.rgb_to_grayscale(x).numpy(), 3, axis=-1)
    for spec, changed in (("gray0.5", gray), ("blur0.5", None)):
        y = aug(spec, x)
        same = [np.array_equal(y[i], x.numpy()[i]) for i in range(32)]
        assert any(same) and not all(same)
        if changed is not None:
            for i in np.flatnonzero(~np.array(same)):
                np.testing.assert_allclose(y[i], changed[i], atol=1e-6)


def test_cnr_full_scale_is_identity_and_zooms_otherwise():
    x = _images(4, 16)
    np.testing.assert_allclose(aug("cnr1", x), x.numpy(), atol=1e-5)
    ramp = np.tile(np.linspace(0, 1, 16, dtype=np.float32)[None, None, :, None], [64, 16, 1, 3])
    for spec in ("cnr", "cnr0.5"):
        # the release's sampling: an integer side s in [8, 16]; the half-pixel resize clamps
        # to the window, so the first and last output columns are its first and last
        y = aug(spec, ramp)
        side = (y[:, 0, -1, 0] - y[:, 0, 0, 0]) * 15 + 1
        np.testing.assert_allclose(side, np.round(side), atol=1e-3)
        assert side.min() >= 8 - 1e-3 and side.max() <= 16 + 1e-3 and len(set(np.round(side))) > 3
        y = aug(spec, ramp, options=A.AugmentOptions(crop_sampling="continuous"))
        s = y[:, 0, -1, 0] - y[:, 0, 0, 0]  # continuous side in [0.5, 1] of the image
        assert np.all(s <= 1.0 + 1e-6) and np.all(s >= 0.5 - 1e-3) and s.min() < 0.8


def test_cnr_samples_like_the_release_cut_and_resize():
    """An integer side in [int(F*H), H] at an integer offset, resized with half-pixel centres:
    each output equals tf.image.resize of its cut window (the continuous corner-aligned
    sampling differs)."""
    x = _images(48, 16)
    tf.random.set_seed(3)
    y = A.build_augment_fn("cnr0.5")(x)[0].numpy()
    cut = np.asarray(x)
    for i in range(len(y)):
        fits = [(s, oy, ox) for s in range(8, 17) for oy in range(17 - s) for ox in range(17 - s)
                if np.allclose(tf.image.resize(cut[i:i + 1, oy:oy + s, ox:ox + s], [16, 16])
                               .numpy()[0], y[i], atol=1e-5)]
        assert fits, f"image {i} is not a resized integer window"
    tf.random.set_seed(3)
    z = A.build_augment_fn("cnr0.5", options=A.AugmentOptions(crop_sampling="continuous"))(x)[0]
    assert not np.allclose(z.numpy(), y, atol=1e-3)


def test_training_blur_is_a_no_op_unless_asked_as_in_the_release():
    x = _images(8, 16)
    pipeline_default = A.AugmentOptions(train_blur=False)
    np.testing.assert_array_equal(aug("blur1.0", x, options=pipeline_default), x.numpy())
    blurred = aug("blur1.0", x, options=A.AugmentOptions(train_blur=True))
    assert np.abs(blurred - x.numpy()).max() > 1e-3
    # the run's flag reaches the training pipeline: default (release) leaves images alone
    u8 = (RNG.uniform(0, 255, [16, 16, 16, 3])).astype(np.uint8)
    from engine.config import resolve_config
    from engine.experiment import augment_options

    for blur, changed in ((False, False), (True, True)):
        cfg = resolve_config(dict(seed=0, train_blur=blur), {"train_blur"})
        ds, _ = train_dataset(u8, 16, "blur1.0", num_views=1, seed=0,
                              options=augment_options(cfg))
        (batch,) = next(iter(ds))
        got = np.sort(batch.numpy().reshape(16, -1), axis=0)
        want = np.sort(u8.reshape(16, -1).astype(np.float32) / 255.0, axis=0)
        assert (not np.allclose(got, want, atol=1e-6)) == changed


@pytest.fixture
def jitter_orders(monkeypatch):
    """The op order of every jitter call (rows: images), recorded on its way through."""
    seen = []
    real = A._apply_jitter

    def spy(images, ops, params, perm, clip=False):
        seen.append(perm.numpy())
        return real(images, ops, params, perm, clip)

    monkeypatch.setattr(A, "_apply_jitter", spy)
    return seen


def test_jitter_order_is_drawn_once_per_run_by_default(jitter_orders):
    """The release draws one order of the jitter ops when the pipeline is built and uses it
    for every image: every row of the order is the same, fixed by the seed, one per view."""
    seen = jitter_orders
    spec = "jitter_b0.4_c0.4_s0.4_h0.4"
    run = A.AugmentOptions(jitter_order="run", seed=5)
    x = _images(16, 8)
    A.build_augment_fn(spec, num_views=2, options=run)(x)
    (perm,) = seen  # the shared jitter runs once on both views, stacked
    first, second = perm[:16], perm[16:]
    assert len({tuple(r) for r in first}) == 1 and len({tuple(r) for r in second}) == 1
    expected = np.random.default_rng(5)
    assert first[0].tolist() == expected.permutation(4).tolist()
    assert second[0].tolist() == expected.permutation(4).tolist()
    seen.clear()
    A.build_augment_fn(spec, num_views=2, options=run)(x)
    np.testing.assert_array_equal(seen[0], perm)  # the same seed: the same orders
    seen.clear()
    A.build_augment_fn(spec, options=A.AugmentOptions(jitter_order="image"))(_images(64, 8))
    assert len({tuple(r) for r in seen[0]}) > 5  # ours: one per image


def test_crop_takes_a_window_without_padding_and_resizes_back():
    # rows encode their index: a window of w rows at offset o, resized back to 16 rows
    # (corners aligned), reads o + t*(w-1)/15 at output row t
    ramp = np.tile(np.arange(16, dtype=np.float32)[None, :, None, None], [50, 1, 16, 3]) / 16
    for spec, w in (("crop8", 8), ("crop", 14)):  # bare crop: 0.875 * 16 = 14 px
        y = aug(spec, ramp) * 16
        offsets = y[:, 0, 0, 0]
        np.testing.assert_allclose(offsets, np.round(offsets), atol=1e-4)
        assert offsets.min() >= 0 and offsets.max() <= 16 - w and len(set(offsets)) > 1
        expected = offsets[:, None] + np.arange(16)[None, :] * (w - 1) / 15
        np.testing.assert_allclose(y[:, :, 0, 0], expected, atol=1e-4)
    np.testing.assert_allclose(aug("crop16", ramp), ramp, atol=1e-6)


def test_shift_is_a_window_of_the_reflect_padded_image():
    x = _same_images(40, 16)
    y = aug("shift", x)
    pad = 2  # int(0.125 * 16)
    padded = np.pad(x.numpy()[0], [(pad, pad), (pad, pad), (0, 0)], mode="reflect")
    seen = set()
    for i in range(40):
        hits = [(a, b) for a in range(2 * pad + 1) for b in range(2 * pad + 1)
                if np.array_equal(y[i], padded[a:a + 16, b:b + 16])]
        assert hits, "image %d is not a shifted window" % i
        seen.add(hits[0])
    assert len(seen) > 5


def test_blur_reduces_variance_and_keeps_constant():
    x = _images(4, 32)
    tf.random.set_seed(9)
    y = aug("blur1", x)
    var_y, var_x = y.reshape(4, -1).var(axis=1), x.numpy().reshape(4, -1).var(axis=1)
    # sigma near 0.1 barely blurs, so only "never more, mostly less"
    assert np.all(var_y <= var_x + 1e-7) and np.sum(var_y < 0.5 * var_x) >= 2
    np.testing.assert_allclose(aug("blur1", tf.fill([3, 32, 32, 3], 0.7)), 0.7, atol=1e-6)


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
    assert [A.blur_kernel_size(s) for s in (8, 32, 64, 224, 256)] == [3, 3, 7, 23, 25]


def test_jitter_brightness_only_shifts_each_image_by_a_constant():
    tf.random.set_seed(3)
    x = _images(8, 8, 0.4, 0.6)
    d = aug("jitter_b0.3_c0_s0_h0", x) - x.numpy()
    per_image = d.reshape(8, -1)
    np.testing.assert_allclose(per_image, per_image[:, :1] * np.ones_like(per_image), atol=1e-6)
    assert np.all(np.abs(per_image[:, 0]) <= 0.3 + 1e-6)
    assert len(np.unique(np.round(per_image[:, 0], 5))) > 1


def test_jitter_hue_only_changes_colour_but_not_value():
    tf.random.set_seed(4)
    x = _images(8, 8)
    y = aug("jitter_b0_c0_s0_h0.4", x)
    assert np.abs(y - x.numpy()).max() > 0.05
    # Hue rotation keeps V = max(r,g,b) and the chroma max-min.
    np.testing.assert_allclose(y.max(-1), x.numpy().max(-1), atol=1e-5)
    np.testing.assert_allclose(y.max(-1) - y.min(-1), x.numpy().max(-1) - x.numpy().min(-1),
                               atol=1e-5)


def test_jitter_contrast_only_scales_around_mean():
    tf.random.set_seed(5)
    x = _images(6, 8, 0.4, 0.6)
    y = aug("jitter_b0_c0.4_s0_h0", x)
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


@pytest.mark.parametrize("clip", [True, False])
@pytest.mark.parametrize("ops", [
    ("brightness", "contrast", "saturation", "hue"),
    ("brightness", "hue"),
    ("saturation", "hue"),
    ("contrast", "saturation", "hue"),
    ("brightness", "contrast"),
])
def test_apply_jitter_matches_sequential_tf_image_for_every_order(ops, clip):
    perms = np.array(list(itertools.permutations(range(len(ops)))), np.int32)
    b = len(perms)
    x = _images(b, 8)
    params = {
        "brightness": RNG.uniform(-0.4, 0.4, b), "contrast": RNG.uniform(0.6, 1.4, b),
        "saturation": RNG.uniform(0.6, 1.4, b), "hue": RNG.uniform(-0.4, 0.4, b)}
    params = {k: tf.constant(v, tf.float32) for k, v in params.items() if k in ops}
    y = A._apply_jitter(x, ops, params, tf.constant(perms), clip=clip).numpy()
    for i in range(b):
        ref = x[i]
        for j in perms[i]:
            ref = _TF_ADJUST[ops[j]](ref, float(params[ops[j]][i]))
            if clip:
                ref = tf.clip_by_value(ref, 0.0, 1.0)
        np.testing.assert_allclose(y[i], ref.numpy(), atol=5e-5, err_msg="order %s" % perms[i])


def test_jitter_order_is_a_random_permutation_per_image(jitter_orders):
    seen = jitter_orders
    tf.random.set_seed(6)
    aug("jitter_b0.4_c0.4_s0.4_h0.4", _images(64, 8))
    perm = seen[0]
    assert perm.shape == (64, 4)
    assert all(sorted(row) == [0, 1, 2, 3] for row in perm)
    assert len({tuple(row) for row in perm}) > 5


# ----------------------------------------------------------------------------
# Pixel range (the release never clips)


def test_pixels_leave_unit_range_by_default_and_not_with_clip_pixels():
    tf.random.set_seed(7)
    x = _images(64, 8, 0.0, 1.0)
    y = aug(DEFAULT_AUG, x)
    assert y.max() > 1.05 and y.min() < -0.05  # brightness +-0.4 on floats, as the release
    tf.random.set_seed(7)
    y = aug(DEFAULT_AUG, x, clip_pixels=True)
    assert y.min() >= 0.0 and y.max() <= 1.0
    # clipping also holds after every jitter op, not only at the end: a +0.4 brightness
    # then a 0.6 contrast cannot bring clipped-away values back
    params = {"brightness": tf.constant([0.4]), "contrast": tf.constant([0.6])}
    img = tf.fill([1, 4, 4, 3], 0.8)
    out = A._apply_jitter(img, ("brightness", "contrast"), params, tf.constant([[0, 1]]), True)
    np.testing.assert_allclose(out.numpy(), 1.0, atol=1e-6)


def test_training_pipeline_pixel_range_follows_clip_pixels():
    u8 = RNG.integers(0, 256, [32, 8, 8, 3], dtype=np.uint8)
    for clip in (False, True):
        tf.random.set_seed(8)
        ds, _ = train_dataset(u8, 32, "jitter_b0.4_c0_s0_h0", num_views=2, clip_pixels=clip)
        v1, v2 = next(iter(ds))
        lo, hi = min(v1.numpy().min(), v2.numpy().min()), max(v1.numpy().max(), v2.numpy().max())
        assert (lo >= 0.0 and hi <= 1.0) if clip else (lo < -0.05 and hi > 1.05)


# ----------------------------------------------------------------------------
# Views and the training pipeline


def test_rotation_views_are_independently_augmented():
    """x_k = rot_k(A_k(x)): rotating view k back does not give view 0."""
    u8 = np.repeat(RNG.integers(0, 256, [1, 16, 16, 3], dtype=np.uint8), 16, axis=0)
    ds, _ = train_dataset(u8, 16, DEFAULT_AUG + ROTATION_SUFFIX, num_views=4, seed=0)
    views = [v.numpy() for v in next(iter(ds))]
    assert len(views) == 4
    for k in (1, 2, 3):
        back = np.rot90(views[k], -k, axes=(1, 2))
        differs = [np.abs(back[i] - views[0][i]).max() > 1e-3 for i in range(16)]
        assert all(differs), k


def test_fixed_test_views_are_exact_rotations():
    x = _images(3, 8)
    views = A.build_augment_fn("x" + ROTATION_SUFFIX)(x)
    for k, v in enumerate(views):
        np.testing.assert_array_equal(v.numpy(), np.rot90(x.numpy(), k, axes=(1, 2)))


def test_contrastive_views_of_one_entry_are_independent_draws():
    u8 = RNG.integers(0, 256, [16, 16, 16, 3], dtype=np.uint8)
    ds, _ = train_dataset(u8, 16, DEFAULT_AUG, num_views=2)
    v1, v2 = (v.numpy() for v in next(iter(ds)))
    assert all(np.abs(v1[i] - v2[i]).max() > 1e-3 for i in range(16))
    # two explicit entries: view 1 from the first chain, view 2 from the second
    ds, _ = train_dataset(u8, 16, "x,rotate90", num_views=2, seed=0)
    v1, v2 = (v.numpy() for v in next(iter(ds)))
    np.testing.assert_array_equal(v2, np.rot90(v1, 1, axes=(1, 2)))
    with pytest.raises(ConfigError, match="3 views"):
        train_dataset(u8, 16, "x,x,x", num_views=2)


def test_training_pipeline_reshuffles_every_epoch():
    n, batch = 24, 8
    ids = np.arange(n)
    u8 = np.zeros([n, 8, 8, 3], np.uint8)
    u8[:, 0, 0, 0] = ids  # pixel (0,0) encodes the image index; 'x' keeps it
    ds, steps = train_dataset(u8, batch, "x", num_views=1, seed=3)
    assert steps == 3
    it = iter(ds)
    # the parallel map may hand a batch of the next epoch before the last one of this
    # epoch (it runs non-deterministically), so batches, not their order, are compared
    batches = [tuple(sorted(np.round(next(it)[0].numpy()[:, 0, 0, 0] * 255).astype(int)))
               for _ in range(3 * steps)]
    counts = np.bincount(np.concatenate(batches), minlength=n)
    assert counts.tolist() == [3] * n  # each epoch is one pass over every image
    # a fixed permutation would repeat the same 3 batches every epoch
    assert len(set(batches)) > steps and batches[0] != tuple(ids[:batch])


@pytest.mark.parametrize("spec", [DEFAULT_AUG + ROTATION_SUFFIX, "crop+shift+rotrand+vflip,+"])
def test_graph_mode_keeps_static_shape(spec):
    for shape in ([None, 8, 8, 3], [4, 8, 8, 3]):
        fn = tf.function(A.build_augment_fn(spec))  # fresh: a retrace may relax shapes
        outs = fn.get_concrete_function(tf.TensorSpec(shape, tf.float32)).structured_outputs
        assert [o.shape.as_list() for o in outs] == [shape] * len(outs)


@pytest.mark.parametrize("spec", ["cnr", "jitter", "gray0.5", "blur", "rotrand", "hflip",
                                  "vflip", "crop", "shift"])
def test_per_image_randomness(spec):
    tf.random.set_seed(1)
    y = aug(spec, _same_images(32))
    assert len({y[i].tobytes() for i in range(len(y))}) > 1


def test_to_float_images_and_bad_inputs():
    u8 = np.array([0, 51, 255], np.uint8).reshape(1, 1, 1, 3)
    np.testing.assert_allclose(A.to_float_images(u8).numpy().ravel(), [0.0, 0.2, 1.0])
    with pytest.raises(ConfigError):
        A.to_float_images(np.zeros([1, 2, 2, 3], np.float32))
    fn = A.build_augment_fn("hflip")
    with pytest.raises(ConfigError, match="square"):
        fn(tf.zeros([2, 8, 6, 3]))
    with pytest.raises(ConfigError, match=r"\[B,H,W,3\]"):
        fn(tf.zeros([8, 8, 3]))
    with pytest.raises(ConfigError, match="to_float_images"):
        fn(np.zeros([2, 8, 8, 3], np.int32))
