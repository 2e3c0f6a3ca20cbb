"""CutPaste proxy task (Li, Sohn, Yoon, Pfister, CVPR 2021).

A classifier on g(f(x)) tells normal images from the same images with a
synthetic local defect, built inside the train step for the whole batch at
once (no per-image Python):

* ``cutpaste``: a rectangle of area ratio U(0.02, 0.15) of the image and
  aspect ratio h/w in [0.3, 1] or its inverse (each half the time) is cut at a
  random place, colour-jittered (brightness, contrast, saturation, hue 0.1)
  and pasted at another random place.
* ``scar``: a thin rectangle, width U(2, 16) px and length U(10, 25) px
  (clipped to the image side), rotated by U(-45, 45) degrees, filled with a
  random colour, painted at a random place.
* ``blob`` (model/blob.py): an irregular region of smooth-noise shape, painted with
  another image's texture at another place and blended in without a sharp seam.
* ``3way`` classifies normal / cutpaste / scar, ``4way`` normal / cutpaste / scar /
  blob; the others are binary.

Detectors are fit on features of the clean images only: ``extract`` (used by
every evaluation) never applies these augmentations.
"""

import math

import keras
import tensorflow as tf

from data.augment import build_augment_fn
from model.base import ClassifierModel
from model.blob import blob
from util.errors import ConfigError

VARIANTS = {"cutpaste": ("cutpaste",), "scar": ("scar",), "blob": ("blob",),
            "3way": ("cutpaste", "scar"), "4way": ("cutpaste", "scar", "blob")}
AREA_RATIO = (0.02, 0.15)
ASPECT_RATIO = (0.3, 1.0)
JITTER = 0.1
SCAR_WIDTH = (2.0, 16.0)
SCAR_LENGTH = (10.0, 25.0)
SCAR_ANGLE = (-45.0, 45.0)


def _patch_jitter():
    """Colour jitter of the pasted patch, through the one augmentation module (clipped)."""
    return build_augment_fn(f"jitter_b{JITTER}_c{JITTER}_s{JITTER}_h{JITTER}", clip_pixels=True)


def check_variant(variant):
    if variant not in VARIANTS:
        raise ConfigError(f"--cutpaste_variant={variant} is unknown; choose one of "
                          f"{', '.join(VARIANTS)}")
    return variant


def _uniform(b, low, high):
    return tf.random.uniform([b], low, high, dtype=tf.float32)


def cutpaste_boxes(batch, height, width):
    """Per-image int32 [B] (h, w, src_y, src_x, dst_y, dst_x) of the cut-and-pasted rectangle."""
    area = _uniform(batch, *AREA_RATIO) * float(height * width)
    ratio = _uniform(batch, *ASPECT_RATIO)  # h / w
    ratio = tf.where(tf.random.uniform([batch]) < 0.5, ratio, 1.0 / ratio)
    h = tf.clip_by_value(tf.cast(tf.round(tf.sqrt(area * ratio)), tf.int32), 1, height)
    w = tf.clip_by_value(tf.cast(tf.round(tf.sqrt(area / ratio)), tf.int32), 1, width)

    def corner(limit, size):
        return tf.cast(tf.floor(tf.random.uniform([batch]) * tf.cast(limit - size + 1,
                                                                      tf.float32)), tf.int32)

    return h, w, corner(height, h), corner(width, w), corner(height, h), corner(width, w)


def cutpaste(images, boxes=None):
    """float [B,H,W,3] in [0,1] -> (images with a pasted rectangle, bool mask [B,H,W])."""
    b = tf.shape(images)[0]
    height, width = images.shape[1], images.shape[2]
    h, w, sy, sx, dy, dx = boxes if boxes is not None else cutpaste_boxes(b, height, width)
    yy, xx = tf.range(height)[None, :], tf.range(width)[None, :]
    in_y = (yy >= dy[:, None]) & (yy < (dy + h)[:, None])   # [B, H]
    in_x = (xx >= dx[:, None]) & (xx < (dx + w)[:, None])   # [B, W]
    mask = in_y[:, :, None] & in_x[:, None, :]
    src_y = tf.clip_by_value(yy - dy[:, None] + sy[:, None], 0, height - 1)
    src_x = tf.clip_by_value(xx - dx[:, None] + sx[:, None], 0, width - 1)
    jittered = _patch_jitter()(images)[0]
    moved = tf.gather(jittered, src_y, axis=1, batch_dims=1)
    moved = tf.gather(moved, src_x, axis=2, batch_dims=1)
    return tf.where(mask[..., None], moved, images), mask


def scar_params(batch, height, width):
    """Per-image float [B] (width, length, angle in degrees, centre y, centre x) of a scar."""
    side = float(min(height, width))
    sw = tf.minimum(_uniform(batch, *SCAR_WIDTH), side)
    sl = tf.minimum(_uniform(batch, *SCAR_LENGTH), side)
    angle = _uniform(batch, *SCAR_ANGLE)
    half = sl / 2.0  # keep the centre far enough in that most of the scar is visible
    cy = half + tf.random.uniform([batch]) * tf.maximum(float(height) - 2 * half, 0.0)
    cx = half + tf.random.uniform([batch]) * tf.maximum(float(width) - 2 * half, 0.0)
    return sw, sl, angle, cy, cx


def is_gray(images, tolerance=1.0 / 255.0):
    """bool [B]: whether each image has equal channels everywhere (a gray part photographed
    by a gray camera, stored as RGB)."""
    spread = tf.reduce_max(images, axis=-1) - tf.reduce_min(images, axis=-1)
    return tf.reduce_max(spread, axis=[1, 2]) <= tolerance


def scar(images, params=None, colors=None, keep_gray=False):
    """float [B,H,W,3] -> (images with a painted scar of random colour, bool mask [B,H,W]).

    ``keep_gray``: a gray image gets a gray scar (the mean of the drawn colour). On gray
    parts a coloured mark is told apart by its colour alone, which teaches nothing about
    real defects; the CutPaste paper's scars are coloured on every image (the default)."""
    b = tf.shape(images)[0]
    height, width = images.shape[1], images.shape[2]
    sw, sl, angle, cy, cx = params if params is not None else scar_params(b, height, width)
    theta = angle * (math.pi / 180.0)
    cos, sin = tf.cos(theta)[:, None, None], tf.sin(theta)[:, None, None]
    dy = tf.range(height, dtype=tf.float32)[None, :, None] + 0.5 - cy[:, None, None]
    dx = tf.range(width, dtype=tf.float32)[None, None, :] + 0.5 - cx[:, None, None]
    along = dx * cos + dy * sin
    across = -dx * sin + dy * cos
    mask = (tf.abs(along) <= sl[:, None, None] / 2) & (tf.abs(across) <= sw[:, None, None] / 2)
    if colors is None:
        colors = tf.random.uniform([b, 3])
    if keep_gray:
        colors = tf.where(is_gray(images)[:, None],
                          tf.reduce_mean(colors, axis=-1, keepdims=True) * tf.ones([1, 3]), colors)
    return tf.where(mask[..., None], colors[:, None, None, :], images), mask


#: each kind of synthetic defect: (images, keep_gray) -> (damaged images, bool mask [B,H,W])
DEFECTS = {
    "cutpaste": lambda images, keep_gray: cutpaste(images),
    "scar": lambda images, keep_gray: scar(images, keep_gray=keep_gray),
    "blob": lambda images, keep_gray: blob(images),  # its fill is the part's own texture
}


def cutpaste_batch(images, variant):
    """[B,...] clean images -> ([(1+k)B,...] inputs, int32 labels): 0 normal, 1.. each kind."""
    check_variant(variant)
    parts, labels = [images], [tf.zeros([tf.shape(images)[0]], tf.int32)]
    for label, kind in enumerate(VARIANTS[variant], start=1):
        parts.append(DEFECTS[kind](images, False)[0])
        labels.append(tf.fill([tf.shape(images)[0]], label))
    return tf.concat(parts, axis=0), tf.concat(labels, axis=0)


class CutPasteModel(ClassifierModel):
    """Keras model whose train_step takes batches of (augmented) clean images."""

    views_per_image = 3  # the default (3way); instances count their own
    input_views = 1  # the damaged copies are made inside train_step

    def __init__(self, backbone, head, cutpaste_variant="3way", **kwargs):
        super().__init__(backbone, head, **kwargs)
        self.variant = check_variant(cutpaste_variant)
        self.num_classes = 1 + len(VARIANTS[self.variant])
        self.views_per_image = self.num_classes
        self.classifier = keras.layers.Dense(self.num_classes, name="cutpaste_logits")

    def train_step(self, data):
        images = data[0] if isinstance(data, (tuple, list)) else data
        return self.classification_step(*cutpaste_batch(images, self.variant))
