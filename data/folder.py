"""Image folders: ``ROOT/train/<class>/*`` and optionally ``ROOT/test/<class>/*``.

* Classes are the sorted sub-folder names of ``train/`` (hidden ones skipped),
  followed by the sorted ``test/`` classes that ``train/`` lacks (e.g. the
  defect types of an MVTec-style ``test/<defect>/`` tree: outliers only).
  An empty class folder is allowed (it contributes no images).
* Files ending in .jpg/.jpeg/.png/.bmp/.tif/.tiff (any case) are read by
  data/image_io.py (8- and 16-bit, 16 bits scaled to 8 by their bit depth),
  converted to RGB and resized bilinearly to the requested (H, W); other files
  are ignored.
* Without a ``test/`` folder there is no test split, so the one-class split
  uses the validation protocol.
* Decoding runs on a thread pool with a tqdm progress bar. The decoded arrays
  are cached as ``.npz`` under ``$DROC_CACHE_DIR`` (default ``~/.cache/droc``),
  keyed by a hash of the absolute root, the sorted file list with sizes and
  modification times, and the target shape; a stale or broken cache entry is
  simply rebuilt, and failing to write one only logs a warning.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import os
import tempfile
from typing import Optional, Sequence

import numpy as np

from data.base import LabeledSplits
from data.image_io import IMAGE_EXTENSIONS, ImageReadError, ImageTooLargeError, read_rgb8
from util.errors import ConfigError
from util.paths import is_directory, is_regular_file

logger = logging.getLogger(__name__)

CACHE_ENV = 'DROC_CACHE_DIR'
_CACHE_VERSION = 2  # raised whenever decoding changes, so older caches are rebuilt
_DECODE_CHUNK = 128  # files per thread-pool task
_LAYOUT_HINT = ('expected ROOT/train/<class>/*.{jpg,jpeg,png,bmp,tif,tiff} and optionally '
                'ROOT/test/<class>/*')


def cache_dir() -> str:
    """Where decoded folders are cached: $DROC_CACHE_DIR or ~/.cache/droc."""
    return os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser('~'), '.cache', 'droc')


def _subdirs(path: str) -> list:
    with os.scandir(path) as it:
        return sorted(e.name for e in it if not e.name.startswith('.') and is_directory(e.path))


def list_images(class_dir: str) -> list:
    """[(path, size, mtime_ns)] of the image files in ``class_dir``, sorted by name."""
    found = []
    with os.scandir(class_dir) as it:
        for entry in it:
            if entry.name.startswith('.') or not entry.name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            if not is_regular_file(entry.path):  # follows symlinks; skips a loop, warning
                continue
            st = entry.stat()  # follows symlinks
            found.append((entry.path, st.st_size, st.st_mtime_ns))
    found.sort()
    return found


def _scan_split(split_dir: str, classes: Sequence[str]):
    files, labels = [], []
    for label, name in enumerate(classes):
        class_dir = os.path.join(split_dir, name)
        if not os.path.isdir(class_dir):
            continue
        images = list_images(class_dir)
        if not images:
            logger.info('class folder %s has no images; skipped', class_dir)
        files.extend(images)
        labels.extend([label] * len(images))
    return files, np.asarray(labels, dtype=np.int64)


def scan_folder(root: str):
    """Validate the layout; return (absolute root, classes, train_files, train_labels,
    test_files|None, test_labels|None), files being (path, size, mtime_ns) tuples."""
    if not root:
        raise ConfigError(f'the folder dataset needs --root=<dir>; {_LAYOUT_HINT}')
    root = os.path.abspath(os.path.expanduser(str(root)))
    if not os.path.isdir(root):
        raise ConfigError(f'--root {root} does not exist or is not a folder; {_LAYOUT_HINT}')
    train_dir = os.path.join(root, 'train')
    if not os.path.isdir(train_dir):
        raise ConfigError(f'{root} has no train/ folder; {_LAYOUT_HINT}')
    classes = _subdirs(train_dir)
    if not classes:
        raise ConfigError(f'{train_dir} has no class sub-folders; {_LAYOUT_HINT}')
    test_dir = os.path.join(root, 'test')
    if os.path.isdir(test_dir):  # test-only classes (e.g. defect types) are outliers
        classes = classes + [c for c in _subdirs(test_dir) if c not in classes]
    train_files, train_labels = _scan_split(train_dir, classes)
    if not train_files:
        raise ConfigError(f'{train_dir} has no {"/".join(IMAGE_EXTENSIONS)} images in any '
                          f'class folder; {_LAYOUT_HINT}')

    test_files = test_labels = None
    if os.path.isdir(test_dir):
        test_classes = _subdirs(test_dir)
        if not test_classes:
            raise ConfigError(f'{test_dir} has no class sub-folders; add test/<class>/ '
                              'folders or remove test/')
        test_files, test_labels = _scan_split(test_dir, classes)
        if not test_files:
            raise ConfigError(f'{test_dir} has no images in any class folder; add images or '
                              'remove test/')
    return root, classes, train_files, train_labels, test_files, test_labels


def list_folder(root: str) -> LabeledSplits:
    """The folder's classes and labels as listed, before anything is decoded: the images
    are (N, 0, 0, 3) placeholders, so the one-class split's rules can run on the labels."""
    _, classes, train_files, train_labels, test_files, test_labels = scan_folder(root)
    placeholder = lambda files: np.zeros((len(files), 0, 0, 3), np.uint8)  # noqa: E731
    return LabeledSplits(placeholder(train_files), train_labels,
                         None if test_files is None else placeholder(test_files), test_labels,
                         classes)


def _cache_key(root: str, classes, train_files, test_files, input_shape,
               input_bits: int = 0) -> str:
    def rel(files):
        return [[os.path.relpath(p, root), size, mtime] for p, size, mtime in files or []]

    payload = json.dumps({'version': _CACHE_VERSION, 'root': root, 'classes': list(classes),
                          'train': rel(train_files), 'test': rel(test_files),
                          'has_test': test_files is not None,
                          'shape': [int(d) for d in input_shape],
                          'input_bits': int(input_bits)})
    return hashlib.sha256(payload.encode('utf-8')).hexdigest()


def _cache_path(root: str, key: str) -> str:
    base = ''.join(c if c.isalnum() or c in '-_' else '_' for c in os.path.basename(root))
    return os.path.join(cache_dir(), f'folder-{base or "root"}-{key[:24]}.npz')


def _load_cache(path: str, key: str) -> Optional[LabeledSplits]:
    if not os.path.isfile(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z['key']) != key:
                return None
            has_test = bool(z['has_test'])
            return LabeledSplits(
                train_images=z['train_images'], train_labels=z['train_labels'],
                test_images=z['test_images'] if has_test else None,
                test_labels=z['test_labels'] if has_test else None,
                class_names=[str(n) for n in z['class_names']])
    except Exception as exc:  # corrupt or partial file: rebuild
        logger.warning('ignoring unreadable cache %s (%s)', path, exc)
        return None


def _save_cache(path: str, key: str, splits: LabeledSplits) -> None:
    tmp = None
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix='.tmp.npz')
        empty = np.zeros((0,) + splits.train_images.shape[1:], np.uint8)
        with os.fdopen(fd, 'wb') as f:
            np.savez(f, key=np.asarray(key), has_test=np.asarray(splits.has_test),
                     class_names=np.asarray(splits.class_names, dtype=str),
                     train_images=splits.train_images, train_labels=splits.train_labels,
                     test_images=splits.test_images if splits.has_test else empty,
                     test_labels=(splits.test_labels if splits.has_test
                                  else np.zeros(0, np.int64)))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        tmp = None
        logger.info('cached decoded folder at %s', path)
    except Exception as exc:  # the cache is only an optimisation
        logger.warning('could not write folder cache %s (%s); continuing without it', path, exc)
    finally:
        if tmp is not None:
            try:
                os.remove(tmp)
            except OSError:
                pass


def decode_image(path: str, height: int, width: int, input_bits: int = 0) -> np.ndarray:
    """Read one image file as uint8 RGB (height, width, 3); ConfigError naming a bad file.

    Any format and bit depth data/image_io.py reads; ``input_bits`` as there."""
    from PIL import Image

    try:
        arr = read_rgb8(path, input_bits)
    except ImageReadError as exc:
        fix = ('raise --max_image_pixels to read it, or move it away'
               if isinstance(exc, ImageTooLargeError) else 'fix or delete the file')
        raise ConfigError(f'cannot read image {path} ({exc}); {fix}') from None
    if arr.shape[:2] != (height, width):
        img = Image.fromarray(arr).resize((width, height), Image.BILINEAR)
        arr = np.asarray(img, dtype=np.uint8)
    return arr


def _decode_all(files, height: int, width: int, desc: str, num_workers: int,
                input_bits: int = 0) -> np.ndarray:
    from tqdm import tqdm

    out = np.empty((len(files), height, width, 3), dtype=np.uint8)
    chunks = [range(s, min(s + _DECODE_CHUNK, len(files)))
              for s in range(0, len(files), _DECODE_CHUNK)]

    def work(indices):
        for i in indices:
            out[i] = decode_image(files[i][0], height, width, input_bits)
        return len(indices)

    with concurrent.futures.ThreadPoolExecutor(max_workers=num_workers) as pool, \
            tqdm(total=len(files), desc=desc, unit='img', mininterval=1, disable=None,
                 leave=False) as bar:
        futures = [pool.submit(work, c) for c in chunks]
        try:
            for future in concurrent.futures.as_completed(futures):
                bar.update(future.result())
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    return out


def load_folder(root: str, input_shape: Sequence[int] = (32, 32, 3), *, use_cache: bool = True,
                num_workers: Optional[int] = None, input_bits: int = 0) -> LabeledSplits:
    """Decode an image folder (see the module docstring) into LabeledSplits;
    ``input_bits``: the bits per sample of 16-bit files (0 = the file's depth)."""
    height, width = int(input_shape[0]), int(input_shape[1])
    root, classes, train_files, train_labels, test_files, test_labels = scan_folder(root)

    path = key = None
    if use_cache:
        key = _cache_key(root, classes, train_files, test_files, (height, width, 3), input_bits)
        path = _cache_path(root, key)
        cached = _load_cache(path, key)
        if cached is not None:
            logger.info('loaded %s from cache %s', root, path)
            return cached

    workers = num_workers or min(32, (os.cpu_count() or 1) + 4)
    train_images = _decode_all(train_files, height, width, 'decode train', workers, input_bits)
    test_images = None
    if test_files is not None:
        test_images = _decode_all(test_files, height, width, 'decode test', workers, input_bits)
    splits = LabeledSplits(train_images, train_labels, test_images, test_labels, classes)
    if use_cache:
        _save_cache(path, key, splits)
    return splits
