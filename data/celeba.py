"""``celeba``: CelebA faces (TFDS ``celeb_a``) with one attribute as the anomaly.

As in the paper's Table 2: faces *without* the attribute (``--celeba_attribute``,
default Eyeglasses) are the inliers, faces with it the outliers. Every image is
cropped to rows 40:-20 and columns 10:-10 (158 x 158 around the face) and
resized to the input shape (64 x 64 in the paper; bilinear, antialiased).

Classes: 0 = ``without_<attribute>``, 1 = ``with_<attribute>``. Training uses
the TFDS ``train`` split, testing the ``test`` split (the ``validation`` split
is not used). The release's ``--category=<attribute name>`` also works: it
selects that attribute and the inlier class 0 (see ``release_category``).

Offline, pass ``--data_dir`` at a prepared TFDS directory holding ``celeb_a/``.
Decoding ~180,000 images takes a few minutes; the arrays are cached under
$DROC_CACHE_DIR (data/folder.py).
"""

from __future__ import annotations

import hashlib
import logging
import os
from typing import Optional, Sequence

import numpy as np

from data import folder
from data.base import LabeledSplits
from util.errors import ConfigError

logger = logging.getLogger(__name__)

ATTRIBUTES = (
    '5_o_Clock_Shadow', 'Arched_Eyebrows', 'Attractive', 'Bags_Under_Eyes', 'Bald', 'Bangs',
    'Big_Lips', 'Big_Nose', 'Black_Hair', 'Blond_Hair', 'Blurry', 'Brown_Hair',
    'Bushy_Eyebrows', 'Chubby', 'Double_Chin', 'Eyeglasses', 'Goatee', 'Gray_Hair',
    'Heavy_Makeup', 'High_Cheekbones', 'Male', 'Mouth_Slightly_Open', 'Mustache', 'Narrow_Eyes',
    'No_Beard', 'Oval_Face', 'Pale_Skin', 'Pointy_Nose', 'Receding_Hairline', 'Rosy_Cheeks',
    'Sideburns', 'Smiling', 'Straight_Hair', 'Wavy_Hair', 'Wearing_Earrings', 'Wearing_Hat',
    'Wearing_Lipstick', 'Wearing_Necklace', 'Wearing_Necktie', 'Young')
DEFAULT_ATTRIBUTE = 'Eyeglasses'
CROP_ROWS = (40, -20)
CROP_COLS = (10, -10)
_BATCH = 512


def attribute_name(name: Optional[str]) -> str:
    """Canonical spelling of a CelebA attribute (case-insensitive); ConfigError if unknown."""
    if not name:
        return DEFAULT_ATTRIBUTE
    lowered = {a.lower(): a for a in ATTRIBUTES}
    key = str(name).strip().lower()
    if key not in lowered:
        raise ConfigError(f'unknown CelebA attribute {name!r}; use one of: {", ".join(ATTRIBUTES)}')
    return lowered[key]


def class_names(attribute: str) -> list:
    return [f'without_{attribute}', f'with_{attribute}']


def release_category(category, attribute: Optional[str]):
    """(category, attribute) for celeba. The release passes the attribute as
    ``--category`` (inliers = images without it); ours is ``--celeba_attribute``
    with category 0 = without, 1 = with."""
    text = str(category).strip()
    if text.lower() in {a.lower() for a in ATTRIBUTES}:
        named = attribute_name(text)
        if attribute and attribute_name(attribute) != named:
            raise ConfigError(f'--category={text} (the release\'s way to name the attribute) '
                              f'contradicts --celeba_attribute={attribute}; pass only one')
        return '0', named
    return text, attribute_name(attribute)


def crop_and_resize(images, size: Sequence[int]):
    """tf: crop a batch [B, H, W, 3] to rows 40:-20, cols 10:-10 and resize to ``size``."""
    import tensorflow as tf

    cropped = images[:, CROP_ROWS[0]:CROP_ROWS[1], CROP_COLS[0]:CROP_COLS[1], :]
    out = tf.image.resize(tf.cast(cropped, tf.float32), tuple(int(s) for s in size[:2]),
                          method='bilinear', antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8)


def _read(builder, split: str, attribute: str, size):
    import tensorflow as tf
    import tensorflow_datasets as tfds
    from tqdm import tqdm

    ds = builder.as_dataset(split=split, shuffle_files=False)
    ds = ds.map(lambda ex: (ex['image'], tf.cast(ex['attributes'][attribute], tf.int64)),
                num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(_BATCH).map(lambda x, y: (crop_and_resize(x, size), y),
                              num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)
    images, labels = [], []
    for x, y in tqdm(tfds.as_numpy(ds), desc=f'celeb_a {split}', unit='batch', mininterval=1):
        images.append(x)
        labels.append(y)
    if not images:
        raise ConfigError(f'TFDS split celeb_a/{split} is empty; re-prepare the dataset')
    return np.concatenate(images), np.concatenate(labels).astype(np.int64)


def load_celeba(data_dir: Optional[str] = None, input_shape: Sequence[int] = (64, 64, 3),
                attribute: Optional[str] = None, use_cache: bool = True) -> LabeledSplits:
    """CelebA as a two-class dataset: 0 without ``attribute``, 1 with it."""
    import tensorflow_datasets as tfds

    attribute = attribute_name(attribute)
    size = (int(input_shape[0]), int(input_shape[1]))
    try:
        builder = tfds.builder('celeb_a', data_dir=data_dir)
        if not builder.is_prepared():
            builder.download_and_prepare()
    except Exception as exc:  # offline, bad data_dir, ...
        first = (str(exc).strip().splitlines() or [''])[0][:200]
        raise ConfigError(f"cannot load TFDS dataset 'celeb_a' ({type(exc).__name__}: {first}); "
                          'pass --data_dir=<prepared TFDS dir containing celeb_a/>') from exc

    cache = None
    if use_cache:
        ident = f'{os.path.abspath(builder.data_dir)}|{size}|{attribute}|v1'
        key = hashlib.sha256(ident.encode()).hexdigest()
        cache = os.path.join(folder.cache_dir(), f'celeba-{attribute}-{size[0]}x{size[1]}-'
                                                 f'{key[:16]}.npz')
        cached = folder._load_cache(cache, key)
        if cached is not None:
            return cached
    train_x, train_y = _read(builder, 'train', attribute, size)
    test_x, test_y = _read(builder, 'test', attribute, size)
    splits = LabeledSplits(train_x, train_y, test_x, test_y, class_names(attribute))
    if cache:
        folder._save_cache(cache, key, splits)
    return splits
