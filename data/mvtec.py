"""MVTec AD and any folder in its layout (the anomalib convention).

One category folder looks like::

    CATEGORY/train/good/*.png                  good parts only
    CATEGORY/test/good/*.png                   good test parts (label 0)
    CATEGORY/test/<defect>/*.png               defective test parts (label 1)
    CATEGORY/ground_truth/<defect>/<name>_mask.png   optional pixel masks

``--dataset=mvtec --root=DIR --category=bottle`` reads ``DIR/bottle``;
``--dataset=mvtec_folder --root=CATEGORY`` reads a category folder directly
(the ``--category`` flag is then only a label). Images of any size, format
and bit depth (data/image_io.py: PNG, TIFF, JPEG, BMP; 16-bit scaled to 8 by
the bit depth) are read as RGB and resized bilinearly to the requested size.
A mask marks a defect where it is non-zero in any channel (a red, blue or
16-bit mask works); masks are resized with nearest neighbour, and a defect
image whose mask marks nothing gets a warning. Masks are optional: without a
``ground_truth/`` folder only image-level metrics are reported; with one,
every defective test image needs its mask, of the same size as the image.
Good test images have all-zero masks. ``test/`` is optional, and may hold
only ``test/good``: a line of good parts with no defects yet trains and
calibrates, and gets no AUC.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import List, Optional, Sequence

import numpy as np

from data.base import OneClassData
from data.folder import IMAGE_EXTENSIONS, decode_image
from data.image_io import ImageReadError, image_size, read_mask_file
from util.errors import ConfigError
from util.paths import is_regular_file

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
                  and is_regular_file(os.path.join(folder, f)))


def _subdirs(path: str) -> list:
    return sorted(d for d in os.listdir(path)
                  if not d.startswith('.') and os.path.isdir(os.path.join(path, d)))


def scan_category(cat_dir: str):
    """Validate the layout; return (train files, [(path, defect)], ground-truth dir or None).

    ``test/`` may be missing, empty or hold ``test/good`` only (good parts only, no
    defects yet): the run then trains and calibrates without an AUC.
    """
    if not os.path.isdir(cat_dir):
        raise ConfigError(f'{cat_dir} does not exist or is not a folder; {LAYOUT}')
    train = _images_in(os.path.join(cat_dir, 'train', GOOD))
    if not train:
        raise ConfigError(f'{os.path.join(cat_dir, "train", GOOD)} has no images '
                          f'({"/".join(IMAGE_EXTENSIONS)}); {LAYOUT}')
    test_dir = os.path.join(cat_dir, 'test')
    test = []
    for defect in _subdirs(test_dir) if os.path.isdir(test_dir) else []:
        test.extend((p, defect) for p in _images_in(os.path.join(test_dir, defect)))
    defects = {d for _, d in test}
    if defects and GOOD not in defects:
        raise ConfigError(f'{test_dir} has defect folders ({", ".join(sorted(defects))}) but no '
                          f'test/good/ images to tell them from; {LAYOUT}')
    gt_dir = os.path.join(cat_dir, 'ground_truth')
    return train, test, gt_dir if os.path.isdir(gt_dir) else None


def mask_path(gt_dir: str, defect: str, image_path: str) -> str:
    stem = os.path.splitext(os.path.basename(image_path))[0]
    return os.path.join(gt_dir, defect, f'{stem}_mask.png')


def read_mask(path: str, image_path: str, height: int, width: int) -> np.ndarray:
    """{0,1} uint8 (height, width): 1 where the mask file is non-zero in any channel, at any
    bit depth; ConfigError for a missing, unreadable or mis-sized mask; a warning naming
    the image when the mask marks no pixel."""
    from PIL import Image

    if not os.path.isfile(path):
        raise ConfigError(f'no ground-truth mask {path} for test image {image_path}; add it, or '
                          'remove ground_truth/ to report image-level metrics only')
    try:
        mask = read_mask_file(path)
        image_width, image_height = image_size(image_path)
    except ImageReadError as exc:
        raise ConfigError(f'cannot read mask {path} ({exc}); fix or delete the file') from None
    if mask.shape != (image_height, image_width):
        raise ConfigError(
            f'mask {path} is {mask.shape[1]}x{mask.shape[0]} but its image {image_path} is '
            f'{image_width}x{image_height}; masks must have the size of their image')
    marked = bool(mask.any())
    if not marked:
        logger.warning('the mask %s of defect image %s is empty (no non-zero pixel): its '
                       'pixel metrics count the image as defect-free', path, image_path)
    if mask.shape != (height, width):
        resized = Image.fromarray(mask.astype(np.uint8) * 255).resize((width, height),
                                                                       Image.NEAREST)
        mask = np.asarray(resized) > 0
        if marked and not mask.any():
            logger.warning('the defect of mask %s vanishes at %dx%d: no pixel of image %s is '
                           'marked defective at that size', path, width, height, image_path)
    return mask.astype(np.uint8)


def _decode(paths: Sequence[str], height: int, width: int, desc: str,
            input_bits: int = 0) -> np.ndarray:
    from tqdm import tqdm

    out = np.empty((len(paths), height, width, 3), np.uint8)
    bar = tqdm(paths, desc=desc, unit='img', mininterval=1, disable=None, leave=False)
    for i, p in enumerate(bar):
        out[i] = decode_image(p, height, width, input_bits)
    return out


def load_category(cat_dir: str, input_shape=(256, 256, 3), category: Optional[str] = None,
                  dataset: str = 'mvtec_folder', input_bits: int = 0) -> MVTecData:
    """Decode one category folder at ``input_shape`` into MVTecData (see module docstring);
    ``input_bits``: the bits per sample of 16-bit images (0 = the file's depth)."""
    cat_dir = os.path.abspath(os.path.expanduser(str(cat_dir)))
    train, test, gt_dir = scan_category(cat_dir)
    masks = None
    if gt_dir is not None:
        masks = [mask_path(gt_dir, d, p) if d != GOOD else None for p, d in test]
    elif any(d != GOOD for _, d in test):
        logger.warning('%s has no ground_truth/ folder: only image-level metrics', cat_dir)
    return load_files(train, test, masks, input_shape, category or os.path.basename(cat_dir),
                      dataset, input_bits)


def load_files(train: Sequence[str], test: Sequence, masks: Optional[Sequence],
               input_shape, category: str, dataset: str, input_bits: int = 0) -> MVTecData:
    """Decode listed files into MVTecData: the decoder of every defect-layout source.

    ``test``: [(path, 'good' or the defect type)]; ``masks``: None (no ground
    truth) or one mask path per test image, None for the good ones.
    """
    height, width = int(input_shape[0]), int(input_shape[1])
    paths = [p for p, _ in test]
    defects = [d for _, d in test]
    train_images = _decode(train, height, width, 'decode train', input_bits)
    test_images = _decode(paths, height, width, 'decode test', input_bits)
    test_masks = None
    if masks is not None:
        test_masks = np.zeros((len(test), height, width), np.uint8)
        for i, (p, m) in enumerate(zip(paths, masks)):
            if m is not None:
                test_masks[i] = read_mask(m, p, height, width)
    labels = np.asarray([0 if d == GOOD else 1 for d in defects], np.int64)
    names = [GOOD] + sorted({d for d in defects if d != GOOD})
    return MVTecData(
        train_images=train_images, test_images=test_images,
        test_labels=labels, class_names=names,
        category=category, category_index=0, dataset=dataset,
        protocol='test', test_masks=test_masks, test_defects=defects,
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


def mvtec(*, root=None, category=None, input_shape=(256, 256, 3), is_validation=False,
          input_bits=0, **_):
    """--dataset=mvtec: ``root`` holds one folder per category."""
    _check_no_validation(is_validation)
    return load_category(_mvtec_dir(root, category), input_shape, str(category), 'mvtec',
                         input_bits)


def mvtec_folder(*, root=None, category=None, input_shape=(256, 256, 3), is_validation=False,
                 input_bits=0, **_):
    """--dataset=mvtec_folder: ``root`` is one category folder (a user's own parts)."""
    _check_no_validation(is_validation)
    return load_category(_mvtec_folder_dir(root), input_shape, None, 'mvtec_folder',
                         input_bits)


def _sizer(category_dir):
    def first_image_size(*, root=None, category=None) -> tuple:
        """(height, width) of the category's first training image, from its header."""
        cat_dir = os.path.abspath(os.path.expanduser(str(category_dir(root, category))))
        first = scan_category(cat_dir)[0][0]
        try:
            width, height = image_size(first)
        except ImageReadError as exc:
            raise ConfigError(f'cannot read {first} ({exc}); fix or delete the file') from None
        return int(height), int(width)
    return first_image_size


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
# sources that read image files take --input_bits
mvtec.reads_image_files = True
mvtec_folder.reads_image_files = True
mvtec.lister, mvtec_folder.lister = _lister(_mvtec_dir), _lister(_mvtec_folder_dir)
# sources whose images have a size of their own before resizing (--mvtec_aspect=keep)
mvtec.first_image_size = _sizer(_mvtec_dir)
mvtec_folder.first_image_size = _sizer(_mvtec_folder_dir)
