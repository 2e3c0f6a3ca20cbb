"""Datasets read through TensorFlow Datasets (TFDS).

Sources: ``cifar10ood`` (tfds ``cifar10``), ``cifar100ood`` (tfds ``cifar100``,
100 fine classes), ``cifar20ood`` (tfds ``cifar100``, the 20 coarse
super-classes) and ``fmnistood`` (tfds ``fashion_mnist``, 28x28 gray padded
with 2 zero pixels on every side to 32x32, then repeated to 3 channels).

TFDS downloads on first use. Offline, pass ``data_dir`` pointing at a TFDS
data directory prepared elsewhere (it must contain e.g. ``cifar10/3.0.2``).
Whole splits are read by iterating batches rather than with
``batch_size=-1``: under ``tfds.testing.mock_data`` the split sizes are
unknown and ``batch_size=-1`` asks for a batch of ``sys.maxsize`` elements.
"""

from __future__ import annotations

import logging
from typing import Optional

import numpy as np

from data.base import LabeledSplits, to_rgb
from util.errors import ConfigError

logger = logging.getLogger(__name__)

CIFAR10_NAMES = ['airplane', 'automobile', 'bird', 'cat', 'deer',
                 'dog', 'frog', 'horse', 'ship', 'truck']

CIFAR100_COARSE_NAMES = [
    'aquatic_mammals', 'fish', 'flowers', 'food_containers', 'fruit_and_vegetables',
    'household_electrical_devices', 'household_furniture', 'insects', 'large_carnivores',
    'large_man-made_outdoor_things', 'large_natural_outdoor_scenes',
    'large_omnivores_and_herbivores', 'medium_mammals', 'non-insect_invertebrates',
    'people', 'reptiles', 'small_mammals', 'trees', 'vehicles_1', 'vehicles_2']

CIFAR100_FINE_NAMES = (
    'apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge '
    'bus butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud '
    'cockroach couch crab crocodile cup dinosaur dolphin elephant flatfish forest fox '
    'girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster '
    'man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter '
    'palm_tree pear pickup_truck pine_tree plain plate poppy porcupine possum rabbit '
    'raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail snake '
    'spider squirrel streetcar sunflower sweet_pepper table tank telephone television '
    'tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm'
).split()

FMNIST_NAMES = ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat',
                'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot']

_READ_BATCH = 4096


def _class_names(builder, label_key: str, fallback: list) -> list:
    """Class names from the TFDS features, or ``fallback`` when TFDS only has numbers.

    The CIFAR builders learn their label names while downloading, so an
    unprepared builder (and ``mock_data``) reports '0', '1', ...
    """
    names = list(builder.info.features[label_key].names)
    if names == [str(i) for i in range(len(names))] and len(fallback) == len(names):
        return list(fallback)
    return names


def _read_split(builder, split: str, label_key: str):
    import tensorflow_datasets as tfds

    ds = builder.as_dataset(split=split, shuffle_files=False)
    ds = ds.map(lambda ex: (ex['image'], ex[label_key])).batch(_READ_BATCH)
    images, labels = [], []
    for image_batch, label_batch in tfds.as_numpy(ds):
        images.append(image_batch)
        labels.append(label_batch)
    if not images:
        raise ConfigError(f'TFDS split {builder.name}/{split} is empty; re-prepare the dataset')
    return np.concatenate(images).astype(np.uint8), np.concatenate(labels).astype(np.int64)


def load_tfds(tfds_name: str, label_key: str = 'label', *, data_dir: Optional[str] = None,
              fallback_names: Optional[list] = None, pad: int = 0,
              offline_hint: str = '') -> LabeledSplits:
    """Read the train and test splits of TFDS dataset ``tfds_name``.

    ``label_key`` picks the class feature; ``pad`` zero-pads every side;
    gray images become 3-channel.
    """
    import tensorflow_datasets as tfds

    hint = offline_hint or f'pass --data_dir=<prepared TFDS dir containing {tfds_name}/>'
    try:
        builder = tfds.builder(tfds_name, data_dir=data_dir)
        if not builder.is_prepared():
            logger.info('TFDS %s is not prepared in %s: downloading', tfds_name,
                        data_dir or 'the default TFDS dir')
            builder.download_and_prepare()
    except Exception as exc:  # offline, missing package, bad data_dir, ...
        first = (str(exc).strip().splitlines() or [''])[0][:200]
        raise ConfigError(
            f'cannot load TFDS dataset {tfds_name!r} (no internet/data? '
            f'{type(exc).__name__}: {first}); {hint}') from exc

    names = _class_names(builder, label_key, fallback_names or [])
    train_x, train_y = _read_split(builder, 'train', label_key)
    test_x, test_y = _read_split(builder, 'test', label_key)
    if pad:
        widths = ((0, 0), (pad, pad), (pad, pad), (0, 0))
        train_x = np.pad(train_x, widths)
        test_x = np.pad(test_x, widths)
    return LabeledSplits(to_rgb(train_x), train_y, to_rgb(test_x), test_y, names)


_CIFAR_HINT = ('pass --data_dir=<prepared TFDS dir> or --root=<CIFAR python-pickle dir '
               '(cifar-10-batches-py / cifar-100-python)>')


def cifar10(data_dir: Optional[str] = None) -> LabeledSplits:
    return load_tfds('cifar10', 'label', data_dir=data_dir, fallback_names=CIFAR10_NAMES,
                     offline_hint=_CIFAR_HINT)


def cifar100(data_dir: Optional[str] = None) -> LabeledSplits:
    return load_tfds('cifar100', 'label', data_dir=data_dir,
                     fallback_names=CIFAR100_FINE_NAMES, offline_hint=_CIFAR_HINT)


def cifar20(data_dir: Optional[str] = None) -> LabeledSplits:
    return load_tfds('cifar100', 'coarse_label', data_dir=data_dir,
                     fallback_names=CIFAR100_COARSE_NAMES, offline_hint=_CIFAR_HINT)


def fmnist(data_dir: Optional[str] = None) -> LabeledSplits:
    return load_tfds('fashion_mnist', 'label', data_dir=data_dir,
                     fallback_names=FMNIST_NAMES, pad=2,
                     offline_hint='pass --data_dir=<prepared TFDS dir containing fashion_mnist/>')
