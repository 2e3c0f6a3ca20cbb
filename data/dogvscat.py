"""``dogvscatood`` (alias ``dvcood``): cats vs. dogs, as in the paper's Table 2.

Class 0 = cat, 1 = dog. Every image is resized so that its shorter side
matches the input size (64 in the paper; bilinear, antialiased) and
centre-cropped. Per class, 10,000 randomly chosen images (a fixed seed of
their own, independent of ``--seed``) are the training split and the rest the
test split; a class with 10,000 images or fewer is split in half.

Sources:
* ``--root=DIR``: the Kaggle "Dogs vs. Cats" images. Accepted layouts (the first
  found): ``DIR/train/``, ``DIR/dogs-vs-cats/train/`` or ``DIR`` itself, holding
  either the Kaggle file names ``cat.<n>.jpg`` / ``dog.<n>.jpg`` or the
  sub-folders ``cat/`` and ``dog/``. Decoded arrays are cached like image
  folders (data/folder.py); a file that cannot be decoded is skipped with a
  warning.
* otherwise TFDS ``cats_vs_dogs`` (only a train split, 23,262 images), or
  ``--data_dir`` at a prepared TFDS directory.
"""

from __future__ import annotations

import logging
import os
from typing import Optional, Sequence

import numpy as np

from data import folder
from data.base import LabeledSplits
from data.folder import IMAGE_EXTENSIONS, list_images
from util.errors import ConfigError

logger = logging.getLogger(__name__)

CLASS_NAMES = ['cat', 'dog']
TRAIN_PER_CLASS = 10000
SPLIT_SEED = 0
_LAYOUT_HINT = ('expected DIR/train/cat.<n>.jpg and dog.<n>.jpg (the Kaggle archive), or '
                'DIR/train/cat/* and DIR/train/dog/*')


def split_per_class(labels: np.ndarray, train_per_class: int = TRAIN_PER_CLASS,
                    seed: int = SPLIT_SEED):
    """Sorted (train indices, test indices): per class a fixed random permutation;
    the first ``train_per_class`` train (half when the class is not larger)."""
    rng = np.random.RandomState(seed)
    train, test = [], []
    for c in range(len(CLASS_NAMES)):
        idx = np.flatnonzero(labels == c)
        perm = idx[rng.permutation(len(idx))]
        n_train = train_per_class if len(idx) > train_per_class else len(idx) // 2
        train.append(perm[:n_train])
        test.append(perm[n_train:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def resize_shorter_and_crop(image, size: Sequence[int]):
    """tf: one image [H, W, 3] uint8 -> [h, w, 3] uint8, shorter side to fit, centre crop."""
    import tensorflow as tf

    h, w = int(size[0]), int(size[1])
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = tf.maximum(h / shape[0], w / shape[1])
    new = tf.cast(tf.math.ceil(shape * scale), tf.int32)
    new = tf.maximum(new, [h, w])
    out = tf.image.resize(tf.cast(image, tf.float32), new, method='bilinear', antialias=True)
    top = (new[0] - h) // 2
    left = (new[1] - w) // 2
    out = out[top:top + h, left:left + w, :]
    out = tf.ensure_shape(out, (h, w, 3))
    return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8)


def _collect(ds, desc: str):
    from tqdm import tqdm

    images, labels = [], []
    for x, y in tqdm(ds.as_numpy_iterator(), desc=desc, unit='batch', mininterval=1):
        images.append(x)
        labels.append(y)
    if not images:
        return np.zeros((0, 1, 1, 3), np.uint8), np.zeros(0, np.int64)
    return np.concatenate(images), np.concatenate(labels).astype(np.int64)


def _to_splits(images: np.ndarray, labels: np.ndarray) -> LabeledSplits:
    if not len(images) or min(np.sum(labels == c) for c in range(2)) < 2:
        raise ConfigError(f'cats vs. dogs needs at least 2 images of each class; found '
                          f'{int(np.sum(labels == 0))} cats and {int(np.sum(labels == 1))} dogs')
    train, test = split_per_class(labels)
    return LabeledSplits(images[train], labels[train], images[test], labels[test], CLASS_NAMES)


# ---------------------------------------------------------------- Kaggle folder


def _class_of(name: str) -> Optional[int]:
    lowered = name.lower()
    for c, prefix in enumerate(CLASS_NAMES):
        if lowered.startswith(prefix + '.') or lowered.startswith(prefix + '_'):
            return c
    return None


def scan_kaggle(root: str):
    """[(path, size, mtime_ns)], labels of the images under ``root`` (layouts above)."""
    root = os.path.abspath(os.path.expanduser(str(root)))
    if not os.path.isdir(root):
        raise ConfigError(f'--root {root} does not exist or is not a folder; {_LAYOUT_HINT}')
    for base in (os.path.join(root, 'train'), os.path.join(root, 'dogs-vs-cats', 'train'), root):
        if not os.path.isdir(base):
            continue
        if all(os.path.isdir(os.path.join(base, c)) for c in CLASS_NAMES):
            files, labels = [], []
            for c, name in enumerate(CLASS_NAMES):
                found = list_images(os.path.join(base, name))
                files.extend(found)
                labels.extend([c] * len(found))
            return base, files, np.asarray(labels, np.int64)
        files, labels = [], []
        for entry in list_images(base):
            c = _class_of(os.path.basename(entry[0]))
            if c is not None:
                files.append(entry)
                labels.append(c)
        if files:
            return base, files, np.asarray(labels, np.int64)
    raise ConfigError(f'no cat/dog images (.jpg/.jpeg/.png/.bmp; {IMAGE_EXTENSIONS}) under '
                      f'{root}; {_LAYOUT_HINT}')


def _decode_files(files, labels, size):
    import tensorflow as tf

    paths = [f[0] for f in files]

    def decode(path, label):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        return resize_shorter_and_crop(image, size), label

    ds = tf.data.Dataset.from_tensor_slices((paths, labels))
    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.ignore_errors().batch(256).prefetch(2)
    images, out_labels = _collect(ds, 'decode cats/dogs')
    if len(out_labels) < len(labels):
        logger.warning('skipped %d cat/dog image(s) that could not be decoded',
                       len(labels) - len(out_labels))
    return images, out_labels


def load_kaggle(root: str, input_shape: Sequence[int] = (64, 64, 3),
                use_cache: bool = True) -> LabeledSplits:
    size = (int(input_shape[0]), int(input_shape[1]))
    base, files, labels = scan_kaggle(root)
    path = key = None
    if use_cache:
        key = folder._cache_key(base, ['dogvscat'] + CLASS_NAMES, files, None, size + (3,))
        path = folder._cache_path(base, key).replace('folder-', 'dogvscat-')
        cached = folder._load_cache(path, key)
        if cached is not None:
            return cached
    images, labels = _decode_files(files, labels, size)
    splits = _to_splits(images, labels)
    if use_cache:
        folder._save_cache(path, key, splits)
    return splits


# ---------------------------------------------------------------- TFDS


def load_tfds(data_dir: Optional[str] = None,
              input_shape: Sequence[int] = (64, 64, 3)) -> LabeledSplits:
    import tensorflow as tf
    import tensorflow_datasets as tfds

    size = (int(input_shape[0]), int(input_shape[1]))
    try:
        builder = tfds.builder('cats_vs_dogs', data_dir=data_dir)
        if not builder.is_prepared():
            builder.download_and_prepare()
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [''])[0][:200]
        raise ConfigError(f"cannot load TFDS dataset 'cats_vs_dogs' ({type(exc).__name__}: "
                          f'{first}); pass --data_dir=<prepared TFDS dir containing '
                          'cats_vs_dogs/> or --root=<Kaggle dogs-vs-cats folder>') from exc
    ds = builder.as_dataset(split='train', shuffle_files=False)
    ds = ds.map(lambda ex: (resize_shorter_and_crop(ex['image'], size),
                            tf.cast(ex['label'], tf.int64)),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    images, labels = _collect(ds.batch(256).prefetch(2), 'cats_vs_dogs')
    return _to_splits(images, labels)


def load_dogvscat(root: Optional[str] = None, data_dir: Optional[str] = None,
                  input_shape: Sequence[int] = (64, 64, 3)) -> LabeledSplits:
    if root:
        if data_dir:
            logger.warning('both --root and --data_dir given: reading the images in --root')
        return load_kaggle(root, input_shape)
    return load_tfds(data_dir, input_shape)
