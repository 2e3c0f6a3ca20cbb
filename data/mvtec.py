"""MVTec AD and any folder in its layout (the anomalib convention).

One category folder looks like::

    CATEGORY/train/good/*.png                  good parts only
    CATEGORY/test/good/*.png                   good test parts (label 0)
    CATEGORY/test/<defect>/*.png               defective test parts (label 1)
    CATEGORY/ground_truth/<defect>/<name>_mask.png   optional pixel masks

``--dataset=mvtec --root=DIR --category=bottle`` reads ``DIR/bottle``;
``--dataset=mvtec_folder --root=CATEGORY`` reads a category folder directly
(the ``--category`` flag is then only a label). Images of any size are read
as RGB and resized bilinearly to the requested size; masks are resized with
nearest neighbour and binarised (> 127). Masks are optional: without a
``ground_truth/`` folder only image-level metrics are reported; with one,
every defective test image needs its mask, of the same size as the image.
Good test images have all-zero masks.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import List, Optional, Sequence

import numpy as np

from data.base import OneClassData
from data.folder import IMAGE_EXTENSIONS, decode_image
from util.errors import ConfigError

logger = logging.getLogger(__name__)

GOOD = 'good'
LAYOUT = ('expected CATEGORY/train/good/*.png, CATEGORY/test/<good|defect>/*.png and optionally '
          'CATEGORY/ground_truth/<defect>/<name>_mask.png')


@dataclasses.dataclass
class MVTecData(OneClassData):
    """A one-class split with what localisation needs: masks and per-image names."""

    test_masks: Optional[np.ndarray] = None  # uint8 {0,1} (N, H, W), None without ground truth
    test_defects: List[str] = dataclasses.field(default_factory=list)  # 'good' or defect type
    test_names: List[str] = dataclasses.field(default_factory=list)  # file stem per test image
    test_paths: List[str] = dataclasses.field(default_factory=list)


def _images_in(folder: str) -> list:
    if not os.path.isdir(folder):
        return []
    return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                  if not f.startswith('.') and f.lower().endswith(IMAGE_EXTENSIONS)
                  and os.path.isfile(os.path.join(folder, f)))


def _subdirs(path: str) -> list:
    return sorted(d for d in os.listdir(path)
                  if not d.startswith('.') and os.path.isdir(os.path.join(path, d)))


def scan_category(cat_dir: str):
    """Validate the layout; return (train files, [(path, defect)], ground-truth dir or None)."""
    if not os.path.isdir(cat_dir):
        raise ConfigError(f'{cat_dir} does not exist or is not a folder; {LAYOUT}')
    train = _images_in(os.path.join(cat_dir, 'train', GOOD))
    if not train:
        raise ConfigError(f'{os.path.join(cat_dir, "train", GOOD)} has no .png/.jpg/.bmp images; '
                          f'{LAYOUT}')
    test_dir = os.path.join(cat_dir, 'test')
    if not os.path.isdir(test_dir):
        raise ConfigError(f'{cat_dir} has no test/ folder; {LAYOUT}')
    test = []
    for defect in _subdirs(test_dir):
        test.extend((p, defect) for p in _images_in(os.path.join(test_dir, defect)))
    defects = {d for _, d in test}
    if GOOD not in defects or len(defects) < 2:
        raise ConfigError(f'{test_dir} needs test/good/ and at least one test/<defect>/ folder '
                          f'with images (found: {", ".join(sorted(defects)) or "none"})')
    gt_dir = os.path.join(cat_dir, 'ground_truth')
    return train, test, gt_dir if os.path.isdir(gt_dir) else None


def mask_path(gt_dir: str, defect: str, image_path: str) -> str:
    stem = os.path.splitext(os.path.basename(image_path))[0]
    return os.path.join(gt_dir, defect, f'{stem}_mask.png')


def read_mask(path: str, image_path: str, height: int, width: int) -> np.ndarray:
    """{0,1} uint8 (height, width); ConfigError for a missing, unreadable or mis-sized mask."""
    from PIL import Image

    if not os.path.isfile(path):
        raise ConfigError(f'no ground-truth mask {path} for test image {image_path}; add it, or '
                          'remove ground_truth/ to report image-level metrics only')
    try:
        with Image.open(image_path) as img:
            image_size = img.size
        with Image.open(path) as m:
            m = m.convert('L')
            if m.size != image_size:
                raise ConfigError(
                    f'mask {path} is {m.size[0]}x{m.size[1]} but its image {image_path} is '
                    f'{image_size[0]}x{image_size[1]}; masks must have the size of their image')
            if m.size != (width, height):
                m = m.resize((width, height), Image.NEAREST)
            arr = np.asarray(m, dtype=np.uint8)
    except ConfigError:
        raise
    except Exception as exc:
        detail = (str(exc).strip().splitlines() or [''])[0][:200]
        raise ConfigError(f'cannot read mask {path} ({type(exc).__name__}: {detail}); '
                          'fix or delete the file') from exc
    return (arr > 127).astype(np.uint8)


def _decode(paths: Sequence[str], height: int, width: int, desc: str) -> np.ndarray:
    from tqdm import tqdm

    out = np.empty((len(paths), height, width, 3), np.uint8)
    bar = tqdm(paths, desc=desc, unit='img', mininterval=1, disable=None, leave=False)
    for i, p in enumerate(bar):
        out[i] = decode_image(p, height, width)
    return out


def load_category(cat_dir: str, input_shape=(256, 256, 3), category: Optional[str] = None,
                  dataset: str = 'mvtec_folder') -> MVTecData:
    """Decode one category folder at ``input_shape`` into MVTecData (see module docstring)."""
    height, width = int(input_shape[0]), int(input_shape[1])
    cat_dir = os.path.abspath(os.path.expanduser(str(cat_dir)))
    train, test, gt_dir = scan_category(cat_dir)
    paths = [p for p, _ in test]
    defects = [d for _, d in test]
    train_images = _decode(train, height, width, 'decode train')
    test_images = _decode(paths, height, width, 'decode test')
    masks = None
    if gt_dir is not None:
        masks = np.zeros((len(test), height, width), np.uint8)
        for i, (p, d) in enumerate(test):
            if d != GOOD:
                masks[i] = read_mask(mask_path(gt_dir, d, p), p, height, width)
    else:
        logger.warning('%s has no ground_truth/ folder: only image-level metrics', cat_dir)
    labels = np.asarray([0 if d == GOOD else 1 for d in defects], np.int64)
    names = [GOOD] + sorted({d for d in defects if d != GOOD})
    return MVTecData(
        train_images=train_images, test_images=test_images,
        test_labels=labels, class_names=names,
        category=category or os.path.basename(cat_dir), category_index=0, dataset=dataset,
        protocol='test', test_masks=masks, test_defects=defects,
        test_names=[os.path.splitext(os.path.basename(p))[0] for p in paths], test_paths=paths)


def _check_no_validation(is_validation):
    if is_validation:
        raise ConfigError('MVTec-layout datasets have their own test split; drop --is_validation')


def _mvtec_dir(root, category) -> str:
    """--dataset=mvtec: ``root/category``; ConfigError naming the categories found."""
    if not root:
        raise ConfigError('dataset "mvtec" needs --root=<MVTec AD dir> holding <category>/ '
                          f'folders, and --category=<name>; {LAYOUT}')
    root = os.path.abspath(os.path.expanduser(str(root)))
    cat = str(category)
    if not cat.strip() or not os.path.isdir(os.path.join(root, cat)):
        found = _subdirs(root) if os.path.isdir(root) else []
        raise ConfigError(f'--category={cat} is not a folder of {root} (found: '
                          f'{", ".join(found) or "nothing"}); use --dataset=mvtec_folder to '
                          'pass one category folder directly')
    return os.path.join(root, cat)


def _mvtec_folder_dir(root, category=None) -> str:
    """--dataset=mvtec_folder: ``root`` is the category folder."""
    if not root:
        raise ConfigError(f'dataset "mvtec_folder" needs --root=<category folder>; {LAYOUT}')
    return root


def mvtec(*, root=None, category=None, input_shape=(256, 256, 3), is_validation=False, **_):
    """--dataset=mvtec: ``root`` holds one folder per category."""
    _check_no_validation(is_validation)
    return load_category(_mvtec_dir(root, category), input_shape, str(category), 'mvtec')


def mvtec_folder(*, root=None, category=None, input_shape=(256, 256, 3), is_validation=False,
                 **_):
    """--dataset=mvtec_folder: ``root`` is one category folder (a user's own parts)."""
    _check_no_validation(is_validation)
    return load_category(_mvtec_folder_dir(root), input_shape, None, 'mvtec_folder')


def _lister(category_dir):
    def lister(*, root=None, category=None, is_validation=False) -> int:
        """The category's training image count from its file listing, before decoding."""
        _check_no_validation(is_validation)
        cat_dir = os.path.abspath(os.path.expanduser(str(category_dir(root, category))))
        return len(scan_category(cat_dir)[0])
    return lister


# data/registry.py calls sources with this flag with the category and split themselves
mvtec.splits_itself = True
mvtec_folder.splits_itself = True
mvtec.lister, mvtec_folder.lister = _lister(_mvtec_dir), _lister(_mvtec_folder_dir)
