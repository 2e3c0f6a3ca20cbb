"""The two datasets of the paper's Table 2: cats vs. dogs and CelebA (offline only)."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from data import celeba, dogvscat
from data.registry import load_one_class_data
from util.errors import ConfigError

CAT, DOG = (200, 30, 30), (30, 30, 200)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DROC_CACHE_DIR", str(tmp_path / "cache"))


def write(path, color, size=(40, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def kaggle_folder(root, n_cat=6, n_dog=5, nested=False):
    for i in range(n_cat):
        write(root / "train" / ("cat" if nested else "") / f"cat.{i}.jpg", CAT, (40 + i, 30))
    for i in range(n_dog):
        write(root / "train" / ("dog" if nested else "") / f"dog.{i}.jpg", DOG, (30, 50 + i))
    (root / "train" / "sampleSubmission.csv").write_text("id,label\n")  # ignored
    return root


def is_cat(images):
    mean = images.reshape(len(images), -1, 3).mean(axis=1)
    return mean[:, 0] > mean[:, 2]


@pytest.mark.parametrize("nested", [False, True])
def test_kaggle_folder(tmp_path, nested):
    root = kaggle_folder(tmp_path / "dvc", nested=nested)
    data = load_one_class_data("dvcood", "cat", root=str(root), input_shape=(32, 32, 3))
    assert data.class_names == ["cat", "dog"] and data.category_index == 0
    # small classes are split in half: 3 of 6 cats train, 3 cats + 3 of 5 dogs test
    assert data.train_images.shape == (3, 32, 32, 3) and is_cat(data.train_images).all()
    assert len(data.test_labels) == 6 and int(data.test_labels.sum()) == 3
    np.testing.assert_array_equal(is_cat(data.test_images), data.test_labels == 0)
    dogs = load_one_class_data("dogvscatood", "1", root=str(root), input_shape=(32, 32, 3))
    assert len(dogs.train_images) == 2 and not is_cat(dogs.train_images).any()


def test_kaggle_folder_errors(tmp_path):
    (tmp_path / "train").mkdir()
    write(tmp_path / "train" / "bird.0.jpg", CAT)
    with pytest.raises(ConfigError, match="no cat/dog images"):
        load_one_class_data("dvcood", 0, root=str(tmp_path))
    write(tmp_path / "train" / "cat.0.jpg", CAT)
    with pytest.raises(ConfigError, match="at least 2 images of each class"):
        load_one_class_data("dvcood", 0, root=str(tmp_path))


def test_split_is_fixed_and_counts_10000_per_class():
    labels = np.repeat([0, 1], [12500, 11000])
    train, test = dogvscat.split_per_class(labels)
    assert np.sum(labels[train] == 0) == 10000 and np.sum(labels[train] == 1) == 10000
    assert len(test) == 2500 + 1000 and not set(train) & set(test)
    again, _ = dogvscat.split_per_class(labels)
    np.testing.assert_array_equal(train, again)
    other, _ = dogvscat.split_per_class(labels, seed=1)
    assert not np.array_equal(train, other)


def test_split_does_not_depend_on_run_seed(tmp_path):
    root = kaggle_folder(tmp_path / "dvc")
    a = load_one_class_data("dvcood", 0, root=str(root), input_shape=(16, 16, 3), seed=0)
    b = load_one_class_data("dvcood", 0, root=str(root), input_shape=(16, 16, 3), seed=5)
    np.testing.assert_array_equal(a.test_images, b.test_images)


def test_resize_shorter_side_and_centre_crop():
    image = np.zeros((40, 80, 3), np.uint8)
    image[:, 20:60] = 255  # the centre 40 x 40 square is white, the sides black
    out = dogvscat.resize_shorter_and_crop(tf.constant(image), (16, 16)).numpy()
    assert out.shape == (16, 16, 3)
    # only the centre survives (a squeeze would keep 4 black columns per side);
    # the antialiasing filter softens the outermost column only
    assert out.min() > 200 and out[:, 1:-1].min() == 255
    tall = np.zeros((90, 30, 3), np.uint8)
    tall[30:60] = 200
    out = dogvscat.resize_shorter_and_crop(tf.constant(tall), (8, 8)).numpy()
    assert out.shape == (8, 8, 3) and out.min() > 100 and out[1:-1].min() == 200


def test_cats_vs_dogs_tfds_mock():
    with tfds.testing.mock_data(num_examples=40):
        data = load_one_class_data("dogvscatood", "dog", input_shape=(16, 16, 3))
        splits = dogvscat.load_dogvscat(input_shape=(16, 16, 3))
    n_cat, n_dog = int(np.sum(splits.train_labels == 0)), int(np.sum(splits.train_labels == 1))
    assert splits.train_images.shape[1:] == (16, 16, 3)
    assert len(splits.train_images) + len(splits.test_images) == 40
    assert n_cat == np.sum(np.concatenate([splits.train_labels, splits.test_labels]) == 0) // 2
    assert data.category == "dog" and len(data.train_images) == n_dog


def _celeba_examples(n, attribute="Eyeglasses"):
    """Faces whose crop window (rows 40:-20, cols 10:-10) is 200 and the rest 0;
    every third has the attribute."""
    image = np.zeros((218, 178, 3), np.uint8)
    image[40:-20, 10:-10] = 200
    has = np.arange(n) % 3 == 0
    attrs = {a: np.zeros(n, bool) for a in celeba.ATTRIBUTES}
    attrs[attribute] = has
    attrs["Smiling"] = np.arange(n) % 2 == 0
    images = np.repeat(image[None], n, axis=0)
    return tf.data.Dataset.from_tensor_slices({"image": images, "attributes": attrs}), has


def test_celeba_crop_attribute_and_classes(monkeypatch):
    sizes = {"train": 9, "test": 7}

    def as_dataset(self, split, **kwargs):
        return _celeba_examples(sizes[split])[0]

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        splits = celeba.load_celeba(input_shape=(64, 64, 3))
        data = load_one_class_data("celeba", 0, input_shape=(64, 64, 3))
        smiling = load_one_class_data("celeba", "without_Smiling", attribute="Smiling",
                                      input_shape=(32, 32, 3))
    assert splits.class_names == ["without_Eyeglasses", "with_Eyeglasses"]
    assert splits.train_images.shape == (9, 64, 64, 3)
    assert splits.train_images.min() == 200  # the black border is cropped away
    np.testing.assert_array_equal(splits.train_labels, np.arange(9) % 3 == 0)
    # inliers = training faces without eyeglasses; test = every test face
    assert len(data.train_images) == 6 and len(data.test_labels) == 7
    np.testing.assert_array_equal(data.test_labels, np.arange(7) % 3 == 0)
    np.testing.assert_array_equal(smiling.test_labels, np.arange(7) % 2 == 0)
    assert len(smiling.train_images) == 4


def test_celeba_rejects_root():
    with pytest.raises(ConfigError, match="--data_dir"):
        load_one_class_data("celeba", 0, root="/somewhere")


def test_celeba_crop_matches_the_papers_window():
    image = np.arange(218 * 178 * 3, dtype=np.int64).reshape(1, 218, 178, 3) % 251
    out = celeba.crop_and_resize(tf.constant(image.astype(np.uint8)), (158, 158)).numpy()
    np.testing.assert_array_equal(out[0], image[0, 40:-20, 10:-10])
