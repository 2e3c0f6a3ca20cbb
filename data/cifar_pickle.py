"""CIFAR-10 / CIFAR-100 from the "python version" archives, extracted by hand.

``root`` is either the extracted folder itself or its parent:

* CIFAR-10: ``cifar-10-batches-py/`` with ``data_batch_1`` .. ``data_batch_5``,
  ``test_batch`` and ``batches.meta`` (``label_names``); batches hold
  ``b'data'`` (N x 3072 uint8, each row CHW: 1024 red, 1024 green, 1024 blue
  values in row-major order) and ``b'labels'``.
* CIFAR-100: ``cifar-100-python/`` with ``train``, ``test`` and ``meta``
  (``fine_label_names``, ``coarse_label_names``); the data files hold
  ``b'data'``, ``b'fine_labels'`` and ``b'coarse_labels'``.

Every pickle is read with ``pickle.load(f, encoding='bytes')``.
"""

from __future__ import annotations

import os
import pickle

import numpy as np

from data.base import LabeledSplits
from util.errors import ConfigError

CIFAR10_DIR = 'cifar-10-batches-py'
CIFAR100_DIR = 'cifar-100-python'
CIFAR10_TRAIN = [f'data_batch_{i}' for i in range(1, 6)]
_CIFAR10_FILES = CIFAR10_TRAIN + ['test_batch', 'batches.meta']
_CIFAR100_FILES = ['train', 'test', 'meta']


def _find_dir(root, subdir: str, required: list) -> str:
    if not root:
        raise ConfigError(f'no --root given; point it at {subdir}/ or its parent folder')
    root = os.path.abspath(os.path.expanduser(str(root)))
    if not os.path.isdir(root):
        raise ConfigError(f'--root {root} does not exist; point it at {subdir}/ or its parent')
    for candidate in (root, os.path.join(root, subdir)):
        if all(os.path.isfile(os.path.join(candidate, f)) for f in required):
            return candidate
    raise ConfigError(
        f'--root {root} holds no extracted {subdir}/ (expected files '
        f'{", ".join(required)}); extract the CIFAR python archive and point --root at it')


def _unpickle(path: str) -> dict:
    try:
        with open(path, 'rb') as f:
            content = pickle.load(f, encoding='bytes')
    except Exception as exc:
        raise ConfigError(f'cannot read CIFAR pickle {path} ({type(exc).__name__}); '
                          're-extract the archive') from exc
    if not isinstance(content, dict):
        raise ConfigError(f'CIFAR pickle {path} does not hold a dict; re-extract the archive')
    return content


def _get(content: dict, key: str, path: str):
    for k in (key.encode(), key):
        if k in content:
            return content[k]
    raise ConfigError(f'CIFAR pickle {path} has no {key!r} entry; re-extract the archive')


def _names(content: dict, key: str, path: str) -> list:
    return [n.decode('utf-8') if isinstance(n, bytes) else str(n)
            for n in _get(content, key, path)]


def _images(content: dict, path: str) -> np.ndarray:
    data = np.asarray(_get(content, 'data', path), dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ConfigError(f'CIFAR pickle {path}: data has shape {data.shape}, expected (N, 3072)')
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()


def _batch(path: str, label_key: str):
    content = _unpickle(path)
    images = _images(content, path)
    labels = np.asarray(_get(content, label_key, path), dtype=np.int64)
    if len(labels) != len(images):
        raise ConfigError(f'CIFAR pickle {path}: {len(images)} images but {len(labels)} labels')
    return images, labels


def cifar10(root) -> LabeledSplits:
    folder = _find_dir(root, CIFAR10_DIR, _CIFAR10_FILES)
    names = _names(_unpickle(os.path.join(folder, 'batches.meta')), 'label_names',
                   os.path.join(folder, 'batches.meta'))
    parts = [_batch(os.path.join(folder, f), 'labels') for f in CIFAR10_TRAIN]
    train_x = np.concatenate([p[0] for p in parts])
    train_y = np.concatenate([p[1] for p in parts])
    test_x, test_y = _batch(os.path.join(folder, 'test_batch'), 'labels')
    return LabeledSplits(train_x, train_y, test_x, test_y, names)


def _cifar100(root, label_key: str, names_key: str) -> LabeledSplits:
    folder = _find_dir(root, CIFAR100_DIR, _CIFAR100_FILES)
    meta_path = os.path.join(folder, 'meta')
    names = _names(_unpickle(meta_path), names_key, meta_path)
    train_x, train_y = _batch(os.path.join(folder, 'train'), label_key)
    test_x, test_y = _batch(os.path.join(folder, 'test'), label_key)
    return LabeledSplits(train_x, train_y, test_x, test_y, names)


def cifar100(root) -> LabeledSplits:
    """CIFAR-100 with its 100 fine classes."""
    return _cifar100(root, 'fine_labels', 'fine_label_names')


def cifar20(root) -> LabeledSplits:
    """CIFAR-100 with the 20 coarse super-classes as classes."""
    return _cifar100(root, 'coarse_labels', 'coarse_label_names')
