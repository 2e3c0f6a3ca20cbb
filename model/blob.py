"""Blob-shaped synthetic defects: an irregular region painted with another good part's texture.

CutPaste's rectangles and the thin scars (model/cutpaste.py) have straight edges and
one fill; stains, dents, missing material or a solder splash do not. Two ideas from the
field, made cheap enough for a CPU train step and vectorised over the batch:

* the shape is smooth noise thresholded inside a round envelope (DRAEM thresholds
  Perlin noise): one or a few lobes with ragged edges, of a size drawn log-uniformly
  from ``BLOB_AREA`` of the image, so that small blobs, the size of fine defects, are
  as frequent as large ones;
* the fill is another image of the batch, read at another place (NSA cuts patches from
  another good image of the category): the region has the part's own texture and
  colours, so only its content, not its colour, tells it apart. It is blended in at
  opacity ``OPACITY`` with an edge that fades over about two pixels, so that no sharp
  seam marks it; pixels outside the mask are never changed, so the mask is exactly the
  set of pixels the defect may have touched.
"""

import math

import tensorflow as tf

#: the blob's envelope covers this fraction of the image, drawn log-uniformly
BLOB_AREA = (0.002, 0.1)
#: noise values across the envelope's square (the larger, the more ragged the edge)
NOISE_CELLS = 6
#: the mask keeps the pixels above this fraction of the field's peak, drawn uniformly
THRESHOLD = (0.35, 0.65)
#: opacity of the pasted texture in the blob's interior
OPACITY = (0.6, 1.0)


def _uniform(batch, low, high):
    return tf.random.uniform([batch], low, high, dtype=tf.float32)


def blob_params(batch, height, width):
    """Per-image float [B] (radius, centre y, centre x, threshold, opacity, source shift y,
    source shift x) and float [B, NOISE_CELLS, NOISE_CELLS, 1] noise."""
    log_area = _uniform(batch, math.log(BLOB_AREA[0]), math.log(BLOB_AREA[1]))
    radius = tf.sqrt(tf.exp(log_area) * float(height * width) / math.pi)
    cy = tf.random.uniform([batch]) * float(height)
    cx = tf.random.uniform([batch]) * float(width)
    # the fill is read a quarter to three quarters of the image away, so an aligned part's
    # other image does not give back the same content at the same place
    sy = tf.cast(_uniform(batch, 0.25, 0.75) * float(height), tf.int32)
    sx = tf.cast(_uniform(batch, 0.25, 0.75) * float(width), tf.int32)
    noise = tf.random.uniform([batch, NOISE_CELLS, NOISE_CELLS, 1])
    return (radius, cy, cx, _uniform(batch, *THRESHOLD), _uniform(batch, *OPACITY), sy, sx,
            noise)


def blob_mask(height, width, radius, cy, cx, threshold, noise):
    """bool [B,H,W]: the noise, sampled over the square of side 2 * radius around the centre,
    times a round envelope that falls to 0 at ``radius``, kept above ``threshold`` of its
    peak (so never empty)."""
    batch = tf.shape(radius)[0]
    side = 2.0 * radius
    # crop_and_resize samples the noise grid bilinearly at every pixel: the image frame in
    # the normalised coordinates of the square noise grid around the centre
    top, left = cy - radius, cx - radius
    boxes = tf.stack([(0.0 - top) / side, (0.0 - left) / side,
                      (float(height) - 1.0 - top) / side, (float(width) - 1.0 - left) / side],
                     axis=1)
    field = tf.image.crop_and_resize(noise, boxes, tf.range(batch), (height, width))[..., 0]
    dy = tf.range(height, dtype=tf.float32)[None, :, None] - cy[:, None, None]
    dx = tf.range(width, dtype=tf.float32)[None, None, :] - cx[:, None, None]
    envelope = tf.nn.relu(1.0 - (dy * dy + dx * dx) / tf.square(radius)[:, None, None])
    field = (0.25 + 0.75 * field) * envelope  # the centre always counts, the noise shapes it
    peak = tf.reduce_max(field, axis=[1, 2], keepdims=True)
    return (field >= threshold[:, None, None] * peak) & (field > 0.0)


def soft_alpha(mask, opacity):
    """float [B,H,W]: ``opacity`` inside the mask, fading to its edge over about two pixels
    (two 3x3 box blurs, kept inside the mask), 0 outside."""
    hard = tf.cast(mask, tf.float32)[..., None]
    soft = tf.nn.avg_pool2d(tf.nn.avg_pool2d(hard, 3, 1, "SAME"), 3, 1, "SAME")
    return (soft * hard)[..., 0] * opacity[:, None, None]


def blob(images, params=None):
    """float [B,H,W,C] in [0,1] -> (images with a blob of another image's texture, bool mask
    [B,H,W]); the fill comes from the next image of the batch, shifted."""
    b = tf.shape(images)[0]
    height, width = images.shape[1], images.shape[2]
    radius, cy, cx, threshold, opacity, sy, sx, noise = (
        params if params is not None else blob_params(b, height, width))
    mask = blob_mask(height, width, radius, cy, cx, threshold, noise)
    source = tf.roll(images, shift=1, axis=0)
    rows = (tf.range(height)[None, :] + sy[:, None]) % height   # [B, H]
    cols = (tf.range(width)[None, :] + sx[:, None]) % width     # [B, W]
    source = tf.gather(tf.gather(source, rows, axis=1, batch_dims=1), cols, axis=2,
                       batch_dims=1)
    alpha = tf.cast(soft_alpha(mask, opacity)[..., None], images.dtype)
    return images * (1.0 - alpha) + source * alpha, mask
