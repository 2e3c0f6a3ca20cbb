"""tf.data input pipelines: training (augmented views) and evaluation (resize only).

Decoded uint8 images stay in memory; each step gathers a shuffled batch of
indices and augments the whole batch at once (data/augment.py is vectorised),
in parallel with the model via ``map(num_parallel_calls)`` and ``prefetch``.
No Python runs per image.
"""

import numpy as np
import tensorflow as tf

from data.augment import build_augment_fn, to_float_images

# tf.constant embeds the array in the graph, which is limited to 2 GB
MAX_CONSTANT_BYTES = 1 << 30


def repeat_to_batch(images, batch_size):
    """A training set smaller than one batch is repeated (docs/method.md, as the release)."""
    if len(images) >= batch_size:
        return images
    reps = -(-batch_size // len(images))
    return np.concatenate([images] * reps, axis=0)


def train_dataset(images, batch_size, aug_list, num_views=None, seed=None, clip_pixels=False,
                  options=None):
    """Infinite dataset of augmented batches, plus the steps of one epoch.

    Each element is a tuple with one float batch per view of ``aug_list``
    (data/aug_spec.py), every view drawn independently: ``A,+rotate90,...``
    gives the transformation classifier its views; a contrastive model passes
    ``num_views=2`` and a one-entry spec is then drawn twice. Each epoch is one
    pass over a fresh permutation; the last partial batch is dropped. ``options``: the
    run's data.augment.AugmentOptions (release quirks: blur, jitter order, crop sampling).
    """
    augment = build_augment_fn(aug_list, clip_pixels=clip_pixels, num_views=num_views,
                               options=options)
    images = repeat_to_batch(np.asarray(images), batch_size)
    n = len(images)
    steps_per_epoch = n // batch_size

    def make_views(batch_uint8):
        return augment(to_float_images(batch_uint8))

    if images.nbytes <= MAX_CONSTANT_BYTES:
        data = tf.constant(images)
        ds = tf.data.Dataset.range(n).shuffle(n, seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size, drop_remainder=True).repeat()
        ds = ds.map(lambda idx: make_views(tf.gather(data, idx)),
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    else:
        ds = tf.data.Dataset.from_tensor_slices(images)
        ds = ds.shuffle(min(n, 20000), seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size, drop_remainder=True).repeat()
        ds = ds.map(make_views, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    return ds.prefetch(tf.data.AUTOTUNE), steps_per_epoch


def eval_dataset(images, batch_size=256):
    """Unaugmented float batches in order (for feature extraction)."""
    ds = tf.data.Dataset.from_tensor_slices(np.asarray(images)).batch(batch_size)
    return ds.map(to_float_images, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)
