"""The inspector's proxy task (model/cutpaste_map.py) and its lighting lever
(``--image_norm=standardize``): which cells are labelled damaged, gray scars on gray
parts, images whose brightness and contrast change reach the network unchanged."""

import numpy as np
import pytest
import tensorflow as tf

from model.cutpaste import scar
from model.cutpaste_map import CELL_COVER, cell_labels, damaged_batch
from model.resnet import PerImageStandardization


def test_a_cell_is_damaged_from_a_quarter_of_its_pixels():
    """8x8 masks on a 2x2 grid (cells of 16 pixels): 4 pixels (a quarter) make a cell
    damaged with the image's kind, 3 do not; cells without defect stay normal."""
    masks = np.zeros([2, 8, 8], np.float32)
    masks[0, 0:2, 0:2] = 1        # 4 of the top-left cell's 16 pixels
    masks[0, 4:8, 4:8] = 1        # the whole bottom-right cell
    masks[1, 0, 0:3] = 1          # 3 of 16: below the cover
    labels = cell_labels(tf.constant(masks), tf.constant([2, 1]), (2, 2)).numpy()
    assert CELL_COVER == 0.25
    np.testing.assert_array_equal(labels[0], [[2, 0], [0, 2]])
    np.testing.assert_array_equal(labels[1], [[0, 0], [0, 0]])


def test_damaged_copies_change_only_their_masked_pixels():
    """The batch is the clean images, then one damaged copy per kind; outside each copy's
    mask the pixels are the clean image's, inside some differ; the kinds are 0, 1, 2."""
    tf.random.set_seed(0)
    images = tf.random.uniform([4, 32, 32, 3])
    inputs, masks, kinds = damaged_batch(images, "3way")
    assert inputs.shape == (12, 32, 32, 3) and masks.shape == (12, 32, 32)
    np.testing.assert_array_equal(kinds.numpy(), [0] * 4 + [1] * 4 + [2] * 4)
    np.testing.assert_array_equal(masks.numpy()[:4], 0)
    clean = np.tile(images.numpy(), [3, 1, 1, 1])
    outside = masks.numpy()[..., None] == 0
    np.testing.assert_array_equal(np.where(outside, inputs.numpy(), 0),
                                  np.where(outside, clean, 0))
    for i in range(4, 12):
        assert masks.numpy()[i].sum() > 0
        assert np.abs(inputs.numpy()[i] - clean[i]).max() > 0


def test_gray_parts_get_gray_scars_and_colour_parts_coloured_ones():
    gray = tf.tile(tf.random.uniform([3, 24, 24, 1]), [1, 1, 1, 3])
    colour = tf.random.uniform([3, 24, 24, 3])
    colours = tf.constant([[1.0, 0.0, 0.0]] * 3)
    params = (tf.fill([3], 6.0), tf.fill([3], 12.0), tf.zeros([3]),
              tf.fill([3], 12.0), tf.fill([3], 12.0))
    out, mask = scar(gray, params, colours, keep_gray=True)
    out = out.numpy()
    assert mask.numpy().sum() > 0
    np.testing.assert_allclose(out[..., 0], out[..., 1])
    np.testing.assert_allclose(out[mask.numpy()], 1.0 / 3.0)  # the colour's mean
    # the paper's scar (the default) stays red on gray parts, and keep_gray leaves colour
    paper, _ = scar(gray, params, colours)
    np.testing.assert_allclose(paper.numpy()[mask.numpy()], [[1.0, 0.0, 0.0]] * int(
        mask.numpy().sum()))
    coloured, _ = scar(colour, params, colours, keep_gray=True)
    np.testing.assert_allclose(coloured.numpy()[mask.numpy()], [[1.0, 0.0, 0.0]] * int(
        mask.numpy().sum()))


@pytest.mark.parametrize("gain,offset", [(0.8, 0.0), (0.6, 0.15), (1.2, -0.05)])
def test_standardised_images_do_not_see_a_change_of_light(gain, offset):
    """A darker or brighter, flatter or harsher copy of a part reaches the network as the
    same image: the lever against lighting drift between training and new parts."""
    images = tf.random.uniform([2, 16, 16, 3], 0.1, 0.8, seed=1)
    layer = PerImageStandardization()
    relit = tf.clip_by_value(images * gain + offset, 0.0, 1.0)
    np.testing.assert_allclose(layer(relit).numpy(), layer(images).numpy(), atol=1e-5)
    out = layer(images).numpy()
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), 0.5, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(1, 2, 3)), 0.25, atol=1e-5)
