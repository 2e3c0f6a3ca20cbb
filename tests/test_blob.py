"""Blob-shaped synthetic defects (model/blob.py, ``--cutpaste_variant=blob|4way``): where
the mask says, the pixels are another image's at the drawn shift, blended at the drawn
opacity; elsewhere nothing changes; the shape is ragged and of the drawn size."""

import numpy as np
import tensorflow as tf

from model.blob import BLOB_AREA, NOISE_CELLS, blob, blob_mask, blob_params
from model.registry import build_model
from model.cutpaste_map import cell_labels, damaged_batch


def _params(batch, radius, cy, cx, threshold, opacity, sy, sx, noise):
    fill = lambda v, dtype=tf.float32: tf.fill([batch], tf.cast(v, dtype))  # noqa: E731
    return (fill(radius), fill(cy), fill(cx), fill(threshold), fill(opacity),
            fill(sy, tf.int32), fill(sx, tf.int32), noise)


def test_blob_pixels_are_the_next_images_at_the_shift_and_the_rest_is_untouched():
    """Opacity 1 with a flat noise: inside the mask, away from its fading edge, each pixel
    is the next image's pixel shifted by (sy, sx) (wrapping); outside it, the image's own;
    on the edge, a blend of the two with the two-blur weights."""
    rng = np.random.default_rng(0)
    images = rng.random([3, 40, 48, 3]).astype(np.float32)
    noise = tf.ones([3, NOISE_CELLS, NOISE_CELLS, 1])
    params = _params(3, 12.0, 20.0, 24.0, 0.3, 1.0, 7, 30, noise)
    out, mask = blob(tf.constant(images), params)
    out, mask = out.numpy(), mask.numpy()
    # a flat noise leaves the envelope: the disc where 1 - d^2/r^2 >= 0.3
    yy, xx = np.mgrid[0:40, 0:48]
    disc = 1.0 - ((yy - 20.0) ** 2 + (xx - 24.0) ** 2) / 144.0 >= 0.3 - 1e-6
    np.testing.assert_array_equal(mask[0], disc)
    source = np.roll(images, 1, axis=0)
    source = source[:, (np.arange(40) + 7) % 40][:, :, (np.arange(48) + 30) % 48]
    np.testing.assert_array_equal(out[~mask], images[~mask])
    # pixels three or more steps inside the edge are fully the source (two 3x3 blurs)
    hard = mask.astype(np.float32)
    inner = hard.copy()
    for _ in range(2):
        padded = np.pad(inner, [(0, 0), (1, 1), (1, 1)])
        inner = np.min([padded[:, dy:dy + 40, dx:dx + 48] for dy in range(3) for dx in range(3)],
                       axis=0)
    assert inner.sum() > 50
    np.testing.assert_allclose(out[inner > 0], source[inner > 0], atol=1e-6)
    edge = mask & (inner == 0)
    weight = tf.nn.avg_pool2d(tf.nn.avg_pool2d(hard[..., None], 3, 1, "SAME"), 3, 1, "SAME")
    weight = weight.numpy()[..., 0][..., None]
    np.testing.assert_allclose(out[edge], (images * (1 - weight) + source * weight)[edge],
                               atol=1e-6)
    assert 0 < weight[..., 0][edge].min() and weight[..., 0][edge].max() < 1


def test_opacity_scales_the_blend_inside_the_blob():
    rng = np.random.default_rng(1)
    images = rng.random([2, 32, 32, 3]).astype(np.float32)
    noise = tf.ones([2, NOISE_CELLS, NOISE_CELLS, 1])
    full, mask = blob(tf.constant(images), _params(2, 10.0, 16.0, 16.0, 0.2, 1.0, 5, 9, noise))
    half, _ = blob(tf.constant(images), _params(2, 10.0, 16.0, 16.0, 0.2, 0.5, 5, 9, noise))
    m = mask.numpy()
    np.testing.assert_allclose(half.numpy()[m], 0.5 * (full.numpy()[m] + images[m]), atol=1e-6)


def test_drawn_blobs_are_never_empty_ragged_and_within_the_drawn_envelope():
    """64 drawn blobs on 128 x 160 images: none empty, none larger than the largest envelope,
    some far smaller (log-uniform sizes), and a noisy mask is not the round envelope."""
    tf.random.set_seed(3)
    height, width = 128, 160
    params = blob_params(64, height, width)
    mask = blob_mask(height, width, *params[:4], params[7]).numpy()
    area = mask.mean(axis=(1, 2))
    assert area.min() > 0
    assert area.max() <= BLOB_AREA[1] + 1e-3
    assert np.percentile(area, 25) < 0.01
    radius, cy, cx = (p.numpy() for p in params[:3])
    yy, xx = np.mgrid[0:height, 0:width]
    inside = ((yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2
              < radius[:, None, None] ** 2)
    assert not mask[~inside].any()
    flat = blob_mask(height, width, *params[:4], tf.ones_like(params[7])).numpy()
    differs = [(mask[i] != flat[i]).any() for i in range(64)]
    assert np.mean(differs) > 0.9


def test_4way_labels_blob_cells_with_the_third_kind_and_trains_a_step():
    """--cutpaste_variant=4way: the damaged batch has a blob copy of kind 3, whose cells
    are labelled 3 where it covers them, and the inspector's model trains on it."""
    tf.random.set_seed(0)
    images = tf.random.uniform([4, 64, 64, 3])
    inputs, masks, kinds = damaged_batch(images, "4way")
    assert inputs.shape[0] == 16
    np.testing.assert_array_equal(kinds.numpy(), np.repeat([0, 1, 2, 3], 4))
    labels = cell_labels(masks, kinds, (8, 8)).numpy()
    assert set(np.unique(labels[12:])) <= {0, 3} and (labels[12:] == 3).any()
    model = build_model("cutpaste_map", net_type="ResNet10", net_width=0.125,
                        input_shape=(64, 64, 3), head_dims="", cutpaste_variant="4way")
    assert model.views_per_image == 4
    model(images)
    model.compile(optimizer="sgd")
    logs = model.train_on_batch(images, return_dict=True)
    assert np.isfinite(logs["loss"])
