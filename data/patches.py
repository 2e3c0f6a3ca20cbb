"""Training input of the MVTec patch mode: random patches cut from the good images.

Each step draws ``ceil(batch / patches_per_image)`` images from a shuffled
pass over the training set and cuts ``patches_per_image`` random
``patch x patch`` windows (any position, uniform) from each, vectorised with
batched gathers; the batch is then augmented like any other (data/augment.py).
One epoch = one pass over the images, i.e. ``N * patches_per_image / batch``
steps.
"""

import math

import numpy as np

from util.errors import ConfigError


def check_patch_flags(image_size, patch_size, patches_per_image):
    if patch_size <= 0 or patch_size > image_size:
        raise ConfigError(f"--patch_size={patch_size} must be in 1..{image_size} "
                          "(--mvtec_image_size)")
    if patches_per_image <= 0:
        raise ConfigError(f"--patches_per_image={patches_per_image} must be a positive integer")


def steps_per_epoch(num_images, batch_size, patches_per_image):
    return max(1, num_images * patches_per_image // batch_size)


def random_patches(images, patches_per_image, patch_size):
    """uint8/float [B,H,W,C] -> ([B*P, p, p, C] patches, [B*P, 2] int32 top-left offsets).

    Patch k of image b is row ``b * P + k``.
    """
    import tensorflow as tf

    images = tf.convert_to_tensor(images)
    b = tf.shape(images)[0]
    h, w = images.shape[1], images.shape[2]
    p = int(patch_size)
    oy = tf.random.uniform([b, patches_per_image], 0, h - p + 1, dtype=tf.int32)
    ox = tf.random.uniform([b, patches_per_image], 0, w - p + 1, dtype=tf.int32)
    rows = tf.reshape(oy[:, :, None] + tf.range(p), [b, -1])             # [B, P*p]
    strips = tf.gather(images, rows, axis=1, batch_dims=1)              # [B, P*p, W, C]
    strips = tf.reshape(strips, [b, patches_per_image, p, w, images.shape[-1]])
    cols = tf.repeat((ox[:, :, None] + tf.range(p))[:, :, None, :], p, axis=2)  # [B,P,p,p]
    patches = tf.gather(strips, cols, axis=3, batch_dims=3)             # [B,P,p,p,C]
    patches = tf.reshape(patches, [-1, p, p, images.shape[-1]])
    return patches, tf.reshape(tf.stack([oy, ox], axis=-1), [-1, 2])


def patch_train_dataset(images, batch_size, aug_list, num_views, patch_size, patches_per_image,
                        seed=None, clip_pixels=False, options=None):
    """Infinite dataset of augmented patch batches (like data.pipeline.train_dataset)."""
    import tensorflow as tf

    from data.augment import build_augment_fn, to_float_images
    from data.pipeline import repeat_to_batch

    augment = build_augment_fn(aug_list, clip_pixels=clip_pixels, num_views=num_views,
                               options=options)
    per_step = math.ceil(batch_size / patches_per_image)
    images = repeat_to_batch(np.asarray(images), per_step)
    n = len(images)
    data = tf.constant(images)

    def make_views(idx):
        patches, _ = random_patches(tf.gather(data, idx), patches_per_image, patch_size)
        batch = to_float_images(patches[:batch_size])
        batch.set_shape([batch_size, patch_size, patch_size, images.shape[-1]])
        return augment(batch)  # one batch per view (data/aug_spec.py)

    ds = tf.data.Dataset.range(n).shuffle(n, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(per_step, drop_remainder=True).repeat()
    ds = ds.map(make_views, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    return ds.prefetch(tf.data.AUTOTUNE)
