"""``digitsood``: scikit-learn's bundled 8x8 handwritten digits (no download).

1797 gray images with values 0..16 are scaled to uint8 0..255, resized
bilinearly to the requested (H, W) (32x32 by default) and repeated to 3
channels. Train/test is a fixed stratified 50/50 split (random_state=0), so
each digit keeps its share in both halves. Class names are '0'..'9'. Small
and real, it suits smoke tests and quick end-to-end runs.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from data.base import LabeledSplits, resize_images, to_rgb

SPLIT_SEED = 0


def load_digits(input_shape: Sequence[int] = (32, 32, 3)) -> LabeledSplits:
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_load_digits()
    images = np.clip(np.round(bunch.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    images = to_rgb(resize_images(images, input_shape[:2]))
    labels = bunch.target.astype(np.int64)
    train_idx, test_idx = train_test_split(np.arange(len(labels)), test_size=0.5,
                                           stratify=labels, random_state=SPLIT_SEED)
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    return LabeledSplits(images[train_idx], labels[train_idx], images[test_idx],
                         labels[test_idx], [str(i) for i in range(10)])
