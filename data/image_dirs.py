"""Image folders anywhere on disk, as anomalib's Folder datamodule: ``--dataset=image_dirs``.

Nothing has to be moved into the MVTec tree::

    --normal_dir=DIR        good parts: the training images (required)
    --abnormal_dir=DIR      defective parts: test images of label 1 (optional); the
                            folder's name is their defect type
    --normal_test_dir=DIR   good test parts (optional)
    --mask_dir=DIR          masks of the abnormal images (optional)

Each flag is repeatable and takes a comma list. Without ``--normal_test_dir``
but with abnormal images, ``--normal_test_fraction`` of the normal images
(a fixed draw, the same for every ``--seed``) is held out as the good test
images, so the test set has both kinds. Without abnormal images nothing is
held out and the test set holds only the ``--normal_test_dir`` images, if any
(good parts only: no AUC, see docs/mvtec.md).

A mask is matched to its abnormal image by file stem: ``<name>.<ext>`` or
``<name>_mask.<ext>`` with any image extension, looked up first in
``MASK_DIR/<abnormal folder's name>/`` and then in ``MASK_DIR/`` itself. Once
``--mask_dir`` is given every abnormal image needs exactly one mask. Files named
``*_mask.<ext>`` in an image folder are masks, never images: they are kept out of
the image lists. Two abnormal folders of one name share ``MASK_DIR/<name>/``: a
warning says so.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Optional, Sequence, Tuple

import numpy as np

from data.folder import IMAGE_EXTENSIONS, list_images
from data.mvtec import GOOD, MVTecData, load_files
from util.errors import ConfigError

logger = logging.getLogger(__name__)

HOLDOUT_SEED = 1  # the held-out good test images do not depend on --seed
MASK_SUFFIX = '_mask'


def split_dirs(values) -> Tuple[str, ...]:
    """A repeatable flag's values (each maybe a comma list) -> folder paths."""
    if not values:
        return ()
    if isinstance(values, str):
        values = [values]
    return tuple(p.strip() for v in values for p in str(v).split(',') if p.strip())


@dataclasses.dataclass(frozen=True)
class DirLayout:
    """Where the normal, abnormal and mask images of an ``image_dirs`` dataset are."""

    normal: Tuple[str, ...]
    abnormal: Tuple[str, ...] = ()
    normal_test: Tuple[str, ...] = ()
    masks: Tuple[str, ...] = ()
    normal_test_fraction: float = 0.2


def is_mask_file(path: str) -> bool:
    """True for ``<name>_mask.<ext>``: a mask kept beside its image, not an image."""
    return os.path.splitext(os.path.basename(path))[0].endswith(MASK_SUFFIX)


def _images(dirs: Sequence[str], flag: str) -> list:
    found = []
    for d in dirs:
        files = [p for p, _, _ in list_images(d) if not is_mask_file(p)]
        if not files:
            raise ConfigError(f'--{flag}={d} has no {"/".join(IMAGE_EXTENSIONS)} images')
        found.extend(files)
    return found


def _defect_types(dirs: Sequence[str]) -> list:
    """One defect type per abnormal folder: its name, numbered when names repeat."""
    names = []
    for d in dirs:
        base = os.path.basename(os.path.normpath(d)) or 'abnormal'
        name, k = base, 2
        while name in names or name == GOOD:
            name, k = f'{base}_{k}', k + 1
        names.append(name)
    return names


def _hold_out(n: int, fraction: float) -> np.ndarray:
    """Indices of the normal images held out as good test images (sorted)."""
    n_hold = int(round(n * float(fraction)))
    n_hold = min(max(n_hold, 1 if fraction > 0 else 0), n - 1)
    if n_hold <= 0:
        return np.zeros(0, np.int64)
    return np.sort(np.random.default_rng(HOLDOUT_SEED).permutation(n)[:n_hold])


def _mask_index(folder: str) -> dict:
    """{image stem: [mask paths]} of the mask files directly in ``folder``."""
    index = {}
    for path, _, _ in list_images(folder) if os.path.isdir(folder) else []:
        stem = os.path.splitext(os.path.basename(path))[0]
        index.setdefault(stem, []).append(path)
        if stem.endswith(MASK_SUFFIX):
            index.setdefault(stem[:-len(MASK_SUFFIX)], []).append(path)
    return index


def match_masks(test: Sequence, mask_dirs: Sequence[str]) -> list:
    """One mask path per test image (None for good ones); ConfigError when an abnormal
    image has no mask or more than one."""
    indices = {}

    def lookup(folder, stem):
        if folder not in indices:
            indices[folder] = _mask_index(folder)
        return indices[folder].get(stem, [])

    masks = []
    for path, defect in test:
        if defect == GOOD:
            masks.append(None)
            continue
        stem = os.path.splitext(os.path.basename(path))[0]
        folder = os.path.basename(os.path.dirname(path))  # the abnormal folder's own name
        found = []
        for where in (lambda m: os.path.join(m, folder), lambda m: m):
            found = sorted({p for m in mask_dirs for p in lookup(where(m), stem)})
            if found:
                break
        if not found:
            raise ConfigError(f'no mask for abnormal image {path} in --mask_dir '
                              f'({", ".join(mask_dirs)}): expected {stem}.png or '
                              f'{stem}{MASK_SUFFIX}.png (any image extension), in '
                              f'<mask_dir>/{folder}/ or <mask_dir>/')
        if len(found) > 1:
            raise ConfigError(f'abnormal image {path} matches {len(found)} masks '
                              f'({", ".join(found)}); keep one')
        masks.append(found[0])
    return masks


def list_layout(layout: DirLayout):
    """(training files, [(test path, 'good' or defect type)], mask paths or None)."""
    normal = _images(layout.normal, 'normal_dir')
    test = [(p, GOOD) for p in _images(layout.normal_test, 'normal_test_dir')]
    if layout.abnormal and not layout.normal_test:
        held = _hold_out(len(normal), layout.normal_test_fraction)
        test = [(normal[i], GOOD) for i in held]
        kept = np.setdiff1d(np.arange(len(normal)), held)
        normal = [normal[i] for i in kept]
    for folder, defect in zip(layout.abnormal, _defect_types(layout.abnormal)):
        test.extend((p, defect) for p in _images([folder], 'abnormal_dir'))
    masks = None
    if layout.masks:
        warn_shared_mask_folders(layout.abnormal, layout.masks)
        masks = match_masks(test, layout.masks)
    return normal, test, masks


def warn_shared_mask_folders(abnormal: Sequence[str], mask_dirs: Sequence[str]) -> None:
    """One warning when abnormal folders of one name look up their masks in one folder."""
    by_name = {}
    for folder in abnormal:
        by_name.setdefault(os.path.basename(os.path.normpath(folder)), []).append(folder)
    shared = {name: folders for name, folders in by_name.items() if len(folders) > 1}
    if shared:
        name, folders = next(iter(shared.items()))
        logger.warning('the abnormal folders %s share the name %r, so their masks are looked up '
                       'in the same <mask_dir>/%s/: a mask there can match an image of either; '
                       'rename one folder if their masks differ', ', '.join(folders), name, name)


def image_dirs(*, dirs: Optional[DirLayout] = None, input_shape=(256, 256, 3),
               is_validation=False, input_bits=0, **_) -> MVTecData:
    """--dataset=image_dirs: the folders of ``dirs`` (see the module docstring)."""
    if dirs is None or not dirs.normal:
        raise ConfigError('dataset "image_dirs" needs --normal_dir=DIR (the good images; '
                          'repeatable, or a comma list)')
    if is_validation:
        raise ConfigError('--dataset=image_dirs has its own test split; drop --is_validation')
    train, test, masks = list_layout(dirs)
    category = os.path.basename(os.path.normpath(dirs.normal[0]))
    return load_files(train, test, masks, input_shape, category, 'image_dirs', input_bits)


# data/registry.py calls sources with this flag with the category and split themselves
image_dirs.splits_itself = True
image_dirs.reads_image_files = True  # takes --input_bits
