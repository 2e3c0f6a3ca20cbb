"""Transformation classifier (the release's ``UnsupEmbed``); rotation prediction is its default.

Training batches hold V views of each image, one per entry of ``--aug_list``,
each from its own augmentation chain (data/aug_spec.py). A V-way classifier on
g(f(x)) predicts which view an image is; with the default
``A,+rotate90,+rotate180,+rotate270`` the views are x_k = rot_k(A_k(x)) and the
task is rotation prediction (RotNet when ``--head_dims`` is empty; the paper's
variant with an MLP head otherwise).

Its built-in anomaly scores use the same classifier on the test-time views of
``--aug_list_for_test`` (default ``x,+rotate90,+rotate180,+rotate270``):
``logit`` = -p(y=0 | view_0) and ``dscore`` = -sum_k log p(y=k | view_k).
The features of the detectors (pool, embed) are those of view 0.
"""

import keras
import tensorflow as tf

from data.aug_spec import num_views as count_views
from data.augment import build_augment_fn
from model.base import ClassifierModel
from util.errors import ConfigError

ROTATION_TEST_VIEWS = "x,+rotate90,+rotate180,+rotate270"


def stack_views(views):
    """(V batches [B,...]) -> ([V*B,...] stacked by view, labels [V*B]: k for view k)."""
    stacked = tf.concat(list(views), axis=0)
    labels = tf.repeat(tf.range(len(views)), tf.shape(views[0])[0])
    return stacked, labels


class TransformationModel(ClassifierModel):
    """Keras model whose train_step takes a tuple of V view batches."""

    views_per_image = 4  # the default (rotation); instances use their own count

    def __init__(self, backbone, head, num_views=4, aug_list_for_test=ROTATION_TEST_VIEWS,
                 **kwargs):
        super().__init__(backbone, head, **kwargs)
        if num_views < 2:
            raise ConfigError(f"the transformation classifier needs at least 2 views in "
                              f"--aug_list, got {num_views}")
        if count_views(aug_list_for_test) != num_views:
            raise ConfigError(f"--aug_list_for_test={aug_list_for_test!r} has "
                              f"{count_views(aug_list_for_test)} views but --aug_list has "
                              f"{num_views}; give one test view per training view")
        self.views_per_image = int(num_views)
        self.test_views = build_augment_fn(aug_list_for_test, num_views=num_views)
        self.classifier = keras.layers.Dense(self.views_per_image, name="view_logits")

    def train_step(self, data):
        views = tuple(data) if isinstance(data, (tuple, list)) else (data,)
        if len(views) != self.views_per_image:
            raise ValueError(f"expected {self.views_per_image} views per batch, "
                             f"got {len(views)}")
        return self.classification_step(*stack_views(views))

    def extract(self, images):
        """pool/embed of test view 0 plus the two classifier scores over the test views."""
        batch = tf.shape(images)[0]
        v = self.views_per_image
        stacked, _ = stack_views(self.test_views(images))
        pooled, embed, logits = self.logits(stacked, training=False)
        logp = tf.nn.log_softmax(logits, axis=-1)
        # rows are ordered [view 0 block, view 1 block, ...]; take log p(y=k | view_k)
        logp = tf.reshape(logp, [v, batch, v])
        own = tf.transpose(tf.stack([logp[k, :, k] for k in range(v)]))
        return {
            "pool": tf.cast(pooled[:batch], tf.float32),
            "embed": tf.cast(embed[:batch], tf.float32),
            "logit": -tf.exp(own[:, 0]),
            "dscore": -tf.reduce_sum(own, axis=-1),
        }
