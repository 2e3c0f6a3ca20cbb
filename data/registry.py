"""Dataset names -> sources, and the single entry point ``load_one_class_data``.

A source is a function ``source(*, root, data_dir, input_shape) -> LabeledSplits``
(images uint8 NHWC RGB; they may come at another size, the entry point resizes).
Adding a dataset = one new module with such a function + one line in DATASETS.
"""

from __future__ import annotations

import logging
from typing import Callable, Optional, Sequence, Union

import numpy as np

from data import celeba, cifar_pickle, digits, dogvscat, folder, image_dirs, mvtec, tfds_source
from data.base import LabeledSplits, OneClassData, conform_images, parse_input_shape
from data.protocol import one_class_split
from util.errors import ConfigError

logger = logging.getLogger(__name__)

Source = Callable[..., LabeledSplits]


def _pickle_or_tfds(pickle_fn, tfds_fn) -> Source:
    """CIFAR: the python-pickle folder when --root is given, else TFDS."""
    def source(*, root=None, data_dir=None, input_shape=None):
        if root:
            if data_dir:
                logger.warning('both --root and --data_dir given: reading the pickles in --root')
            return pickle_fn(root)
        return tfds_fn(data_dir)
    return source


def _fmnist(*, root=None, data_dir=None, input_shape=None):
    if root:
        raise ConfigError('fmnistood has no --root loader; drop --root and pass '
                          '--data_dir=<prepared TFDS dir containing fashion_mnist/>')
    return tfds_source.fmnist(data_dir)


def _folder(*, root=None, data_dir=None, input_shape=(32, 32, 3), input_bits=0):
    if not root:
        raise ConfigError('dataset "folder" needs --root=<dir> holding train/<class>/ '
                          '(and optionally test/<class>/) image folders')
    if data_dir:
        logger.warning('--data_dir is ignored by the folder dataset')
    return folder.load_folder(root, input_shape, input_bits=input_bits)


_folder.reads_image_files = True  # takes --input_bits (as mvtec's sources)


def _digits(*, root=None, data_dir=None, input_shape=(32, 32, 3)):
    if root or data_dir:
        logger.warning('--root/--data_dir are ignored by digitsood (bundled with scikit-learn)')
    return digits.load_digits(input_shape)


def _celeba(*, root=None, data_dir=None, input_shape=(64, 64, 3), attribute=None):
    if root:
        raise ConfigError('celeba is read through TFDS; drop --root and pass '
                          '--data_dir=<prepared TFDS dir containing celeb_a/>')
    return celeba.load_celeba(data_dir, input_shape, attribute)


DATASETS = {
    'cifar10ood': _pickle_or_tfds(cifar_pickle.cifar10, tfds_source.cifar10),
    'cifar20ood': _pickle_or_tfds(cifar_pickle.cifar20, tfds_source.cifar20),
    'cifar100ood': _pickle_or_tfds(cifar_pickle.cifar100, tfds_source.cifar100),
    'fmnistood': _fmnist,
    'folder': _folder,
    'digitsood': _digits,
    'dogvscatood': dogvscat.load_dogvscat,
    'celeba': _celeba,
    'mvtec': mvtec.mvtec,
    'mvtec_folder': mvtec.mvtec_folder,
    'image_dirs': image_dirs.image_dirs,
}
# where a source reads its data from (--root, --data_dir); sources without the attribute read both
_fmnist.locations = ('data_dir',)
_folder.locations = ('root',)
_digits.locations = ()
_celeba.locations = ('data_dir',)
mvtec.mvtec.locations = mvtec.mvtec_folder.locations = ('root',)
image_dirs.image_dirs.locations = ()  # reads --normal_dir / --abnormal_dir


def _list_folder(*, root=None, category=None, is_validation=False):
    splits = folder.list_folder(root)
    return len(one_class_split(splits, category, is_validation, dataset='folder').train_images)


# sources that can list their files without decoding them: lister(root, category,
# is_validation) -> training image count, or ConfigError (see list_one_class_data)
_folder.lister = _list_folder
# the release's other names of the same datasets
DATASET_ALIASES = {'fashion_mnistood': 'fmnistood', 'dvcood': 'dogvscatood'}


def canonical_dataset(dataset: str) -> str:
    """Lower-case name with the release's aliases resolved (unknown names pass through)."""
    name = str(dataset).strip().lower()
    return DATASET_ALIASES.get(name, name)


def dataset_names() -> list:
    return list(DATASETS)


def get_source(dataset: str) -> Source:
    name = canonical_dataset(dataset)
    if name not in DATASETS:
        raise ConfigError(f'unknown dataset {dataset!r}; use one of: {", ".join(DATASETS)} '
                          f'(aliases: {", ".join(DATASET_ALIASES)})')
    return DATASETS[name]


def has_defect_layout(dataset: str) -> bool:
    """True for MVTec-layout datasets: good/defect test folders (and masks) of their own."""
    return bool(getattr(get_source(dataset), 'splits_itself', False))


def reads_image_files(dataset: str) -> bool:
    """True for datasets decoded from the user's image files (data/image_io.py), the ones
    ``--input_bits`` applies to."""
    return bool(getattr(get_source(dataset), 'reads_image_files', False))


def input_bits_option(dataset: str, input_bits: int) -> dict:
    """The ``input_bits`` keyword of the dataset's source: only when set, and only for
    sources that read image files."""
    if not input_bits:
        return {}
    if not reads_image_files(dataset):
        raise ConfigError(f'--input_bits applies to datasets read from image files '
                          f'({", ".join(n for n in DATASETS if reads_image_files(n))}), '
                          f'not {dataset}')
    return {'input_bits': int(input_bits)}


def dataset_locations(dataset: str) -> tuple:
    """The location flags (``root``, ``data_dir``) the dataset reads; others do not apply."""
    return tuple(getattr(get_source(dataset), 'locations', ('root', 'data_dir')))


def first_image_size(dataset: str, category: Union[str, int], *,
                     root: Optional[str] = None) -> Optional[tuple]:
    """(height, width) of the first training image of ``category`` as its file has it, read
    from the header; None for sources whose images have no size of their own (TFDS,
    arrays)."""
    sizer = getattr(get_source(dataset), 'first_image_size', None)
    return None if sizer is None else sizer(root=root, category=category)


def list_one_class_data(dataset: str, category: Union[str, int], *, root: Optional[str] = None,
                        is_validation: bool = False) -> Optional[int]:
    """Training images of ``category`` counted from the file listing, before any image is
    decoded or cached (None when the source cannot list itself, e.g. TFDS): an unknown
    category or one with too few images is a ConfigError here, by the split's own rules."""
    lister = getattr(get_source(dataset), 'lister', None)
    if lister is None:
        return None
    return lister(root=root, category=category, is_validation=is_validation)


def load_splits(dataset: str, *, root: Optional[str] = None, data_dir: Optional[str] = None,
                input_shape: Union[Sequence[int], str] = (32, 32, 3),
                input_bits: int = 0) -> LabeledSplits:
    """The multi-class dataset as its source gives it (images not yet resized)."""
    shape = parse_input_shape(input_shape)
    return get_source(dataset)(root=root, data_dir=data_dir, input_shape=shape,
                               **input_bits_option(dataset, input_bits))


def load_one_class_data(dataset: str, category: Union[str, int], *, root: Optional[str] = None,
                        data_dir: Optional[str] = None,
                        input_shape: Union[Sequence[int], str] = (32, 32, 3),
                        is_validation: bool = False, seed: int = 0,
                        attribute: Optional[str] = None, input_bits: int = 0,
                        dirs: Optional[image_dirs.DirLayout] = None) -> OneClassData:
    """Load ``dataset`` and split it for inlier class ``category`` (name or index).

    Images come back as uint8 (N, H, W, 3) at ``input_shape``; test labels are
    0 for inliers and 1 for outliers. ``is_validation`` selects the validation
    protocol (forced when the dataset has no test split). ``attribute`` names the
    anomalous attribute of ``celeba`` (the only source that takes one); ``dirs``
    the folders of ``image_dirs`` (data/image_dirs.py). ``input_bits`` (0 = each
    file's own depth) is the bits per sample of 16-bit image files, for the
    sources that read image files (data/image_io.py).
    """
    shape = parse_input_shape(input_shape)
    name = canonical_dataset(dataset)
    source = get_source(name)
    bits = input_bits_option(name, input_bits)
    if getattr(source, 'splits_itself', False):  # e.g. mvtec: its own good/defect test split
        extra = {'dirs': dirs} if dirs is not None else {}
        return source(root=root, category=category, input_shape=shape,
                      is_validation=is_validation, **extra, **bits)
    extra = {'attribute': attribute} if attribute else {}
    if extra and name != 'celeba':
        raise ConfigError(f'--celeba_attribute applies to --dataset=celeba only, not {name}')
    splits = source(root=root, data_dir=data_dir, input_shape=shape, **extra, **bits)
    data = one_class_split(splits, category, is_validation, seed, dataset=name)
    # Resize after splitting: only the images actually used are converted.
    data.train_images = conform_images(data.train_images, shape)
    data.test_images = conform_images(data.test_images, shape)
    data.test_labels = np.asarray(data.test_labels, dtype=np.int64)
    logger.info('%s', data.describe())
    return data
