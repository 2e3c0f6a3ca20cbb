"""Containers and small image helpers shared by every dataset source.

Conventions for the whole data layer:
  * images are numpy ``uint8`` arrays in NHWC order with 3 channels;
  * labels are ``int64`` class indices into ``class_names``;
  * in a one-class set, test label 0 means inlier and 1 means outlier.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np

from util.errors import ConfigError

# Images resized per call of tf.image.resize; bounds the float32 working memory.
_RESIZE_CHUNK = 1024


@dataclasses.dataclass
class LabeledSplits:
    """A multi-class dataset exactly as a source delivers it.

    ``test_images``/``test_labels`` are None when the source has no test split
    (the one-class split then falls back to the validation protocol).
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: Optional[np.ndarray]
    test_labels: Optional[np.ndarray]
    class_names: list

    def __post_init__(self):
        self.class_names = [str(name) for name in self.class_names]
        self.train_labels = np.asarray(self.train_labels, dtype=np.int64)
        if len(self.train_images) != len(self.train_labels):
            raise ValueError(
                f'{len(self.train_images)} training images but '
                f'{len(self.train_labels)} training labels')
        if (self.test_images is None) != (self.test_labels is None):
            raise ValueError('test_images and test_labels must both be set or both be None')
        if self.test_labels is not None:
            self.test_labels = np.asarray(self.test_labels, dtype=np.int64)
            if len(self.test_images) != len(self.test_labels):
                raise ValueError(
                    f'{len(self.test_images)} test images but '
                    f'{len(self.test_labels)} test labels')

        n = len(self.class_names)
        for split, labels in (('training', self.train_labels), ('test', self.test_labels)):
            if labels is not None and len(labels) and (labels.min() < 0 or labels.max() >= n):
                raise ConfigError(
                    f'{split} labels span {labels.min()}..{labels.max()} but there are only '
                    f'{n} class names; the data does not match its class list, re-create it')

    @property
    def has_test(self) -> bool:
        return self.test_images is not None


@dataclasses.dataclass
class OneClassData:
    """Data for one one-class experiment (one inlier class of one dataset)."""

    train_images: np.ndarray  # inliers only
    test_images: np.ndarray
    test_labels: np.ndarray  # 0 = inlier, 1 = outlier
    class_names: list
    category: str  # name of the inlier class
    category_index: int
    dataset: str
    protocol: str  # 'test' or 'validation'
    detector_images: Optional[np.ndarray] = None

    @property
    def input_shape(self) -> tuple:
        return tuple(int(d) for d in self.train_images.shape[1:])

    def describe(self) -> str:
        n_out = int(np.sum(self.test_labels == 1))
        n_in = int(len(self.test_labels) - n_out)
        shape = 'x'.join(str(d) for d in self.input_shape)
        return (f'{self.dataset or "dataset"}, inlier class {self.category!r} '
                f'(#{self.category_index} of {len(self.class_names)}), '
                f'{self.protocol} protocol: train {len(self.train_images)} inliers; '
                f'test {len(self.test_labels)} ({n_in} inliers, {n_out} outliers); '
                f'images {shape} uint8')


def to_rgb(images: np.ndarray) -> np.ndarray:
    """Return a uint8 NHWC batch with 3 channels.

    Accepts (N, H, W) or (N, H, W, 1) gray (repeated to 3 channels),
    (N, H, W, 3) (returned as is) and (N, H, W, 4) (alpha dropped).
    """
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise ValueError(f'expected a batch of images (N,H,W[,C]), got shape {images.shape}')
    channels = images.shape[-1]
    if channels == 3:
        return images
    if channels == 1:
        return np.repeat(images, 3, axis=-1)
    if channels == 4:
        return np.ascontiguousarray(images[..., :3])
    raise ValueError(f'cannot convert images with {channels} channels to RGB')


def resize_images(images: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Bilinearly resize a uint8 batch (N, H, W[, C]) to ``size`` = (H', W'[, ...]).

    Uses tf.image.resize (bilinear, antialiased when shrinking) in chunks and
    rounds back to uint8. The input is returned unchanged when it already has
    the requested size. The rank (with or without a channel axis) is preserved.
    """
    images = np.asarray(images)
    height, width = int(size[0]), int(size[1])
    if images.ndim not in (3, 4):
        raise ValueError(f'expected a batch of images (N,H,W[,C]), got shape {images.shape}')
    if images.shape[1:3] == (height, width):
        return images
    squeeze = images.ndim == 3
    batch = images[..., None] if squeeze else images
    out = np.empty((batch.shape[0], height, width, batch.shape[-1]), dtype=np.uint8)
    if len(batch):
        import tensorflow as tf  # deferred: importing TF is slow

        for start in range(0, len(batch), _RESIZE_CHUNK):
            chunk = batch[start:start + _RESIZE_CHUNK]
            resized = tf.image.resize(chunk, (height, width), method='bilinear',
                                      antialias=True).numpy()
            out[start:start + len(chunk)] = np.clip(np.round(resized), 0, 255).astype(np.uint8)
    return out[..., 0] if squeeze else out


def conform_images(images: np.ndarray, input_shape: Sequence[int]) -> np.ndarray:
    """Convert a batch to uint8 RGB at ``input_shape`` = (H, W, 3)."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f'expected uint8 images, got {images.dtype}')
    images = resize_images(to_rgb(images), input_shape[:2])
    return np.ascontiguousarray(images)


#: the working size of images at their own size (--mvtec_image_size=0): the longer side,
#: rounded to a multiple of 32, no smaller than the first and no larger than the second
NATIVE_SIDES = (256, 640)


def native_side(height: int, width: int, sides: tuple = NATIVE_SIDES) -> int:
    """The working side of ``height`` x ``width`` images at their own size: their longer side
    rounded to a multiple of 32, within ``sides``. Small parts keep 256 px (what the
    network was tuned at); camera images shrink to 640 px at most, which keeps a defect a
    few pixels wide at 1024 px in the features and scoring near real time on a CPU."""
    side = int(max(int(height), int(width)) / 32.0 + 0.5) * 32
    return min(max(side, sides[0]), sides[1])


def aspect_shape(height: int, width: int, side: int, multiple: int = 16) -> tuple:
    """(H, W) with the aspect ratio of ``height`` x ``width``: the longer side ``side``, the
    shorter the nearest multiple of ``multiple`` (at least one multiple)."""
    scale = float(side) / max(int(height), int(width))

    def fit(n):
        if n == max(int(height), int(width)):
            return int(side)
        return max(multiple, int(round(n * scale / multiple)) * multiple)

    return fit(int(height)), fit(int(width))


def parse_input_shape(input_shape) -> tuple:
    """Validate ``input_shape`` (a sequence or a string like '64,64,3') -> (H, W, 3)."""
    raw = input_shape
    if isinstance(input_shape, str):
        parts = [p for p in input_shape.replace('x', ',').split(',') if p.strip()]
        try:
            input_shape = [int(p) for p in parts]
        except ValueError:
            input_shape = None
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 3 or shape[2] != 3 or min(shape) <= 0:
        raise ConfigError(
            f'bad input_shape {raw!r}: expected height,width,3 with positive sizes, '
            'e.g. --input_shape=32,32,3')
    return shape
