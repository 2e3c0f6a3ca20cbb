"""Image-folder source: layout, decoding, errors, cache, and real CIFAR-10 JPEGs."""

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data import folder
from data.registry import load_one_class_data
from util.errors import ConfigError

COLORS = {'birds': (255, 0, 0), 'cats': (0, 255, 0), 'dogs': (0, 0, 255)}


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path, monkeypatch):
    cache = tmp_path / 'cache'
    monkeypatch.setenv('DROC_CACHE_DIR', str(cache))
    return cache


def _save(path, size, color, mode='RGB', fmt=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new(mode, size, color).save(path, format=fmt)


def make_folder(root, with_test=True):
    """3 classes with solid-colour images of assorted sizes, formats and modes."""
    for name, color in COLORS.items():
        d = os.path.join(root, 'train', name)
        _save(os.path.join(d, 'a.png'), (40, 30), color)
        _save(os.path.join(d, 'b.PNG'), (8, 8), color)
        _save(os.path.join(d, 'c.bmp'), (32, 32), color)
        _save(os.path.join(d, 'd.png'), (50, 20), color + (255,), mode='RGBA')
    _save(os.path.join(root, 'train', 'cats', 'e.jpg'), (64, 64), (0, 255, 0))
    _save(os.path.join(root, 'train', 'dogs', 'gray.png'), (10, 12), 128, mode='L')
    with open(os.path.join(root, 'train', 'dogs', 'notes.txt'), 'w') as f:
        f.write('not an image, ignored')
    if with_test:
        _save(os.path.join(root, 'test', 'cats', 't1.jpeg'), (33, 33), (0, 255, 0))
        _save(os.path.join(root, 'test', 'dogs', 't2.png'), (16, 16), (0, 0, 255))
        _save(os.path.join(root, 'test', 'dogs', 't3.png'), (16, 16), (0, 0, 255))
    return root


def test_folder_layout_and_decoding(tmp_path):
    root = make_folder(str(tmp_path / 'ds'))
    splits = folder.load_folder(root, (32, 32, 3))
    assert splits.class_names == ['birds', 'cats', 'dogs']
    assert splits.train_images.shape == (14, 32, 32, 3)
    assert splits.train_images.dtype == np.uint8
    assert np.bincount(splits.train_labels).tolist() == [4, 5, 5]
    assert splits.test_images.shape == (3, 32, 32, 3)
    assert splits.test_labels.tolist() == [1, 2, 2]
    # lossless solid colours survive the resize exactly
    for x, y in zip(splits.train_images, splits.train_labels):
        if y == 0:
            assert np.all(x == COLORS['birds'])
    gray = [x for x, y in zip(splits.train_images, splits.train_labels)
            if y == 2 and np.all(x == 128)]
    assert len(gray) == 1  # grayscale -> 3 equal channels


def test_folder_one_class_protocols(tmp_path):
    root = make_folder(str(tmp_path / 'ds'))
    data = load_one_class_data('folder', 'Cats', root=root, input_shape=(16, 16, 3))
    assert data.protocol == 'test' and data.category == 'cats'
    assert data.train_images.shape == (5, 16, 16, 3)
    assert data.test_labels.tolist() == [0, 1, 1]
    no_test = make_folder(str(tmp_path / 'no_test'), with_test=False)
    data = load_one_class_data('folder', 'dogs', root=no_test)
    assert data.protocol == 'validation'  # forced: no test/ folder
    assert len(data.train_images) == 4 and data.test_labels.tolist() == [0, 1]


def test_unreadable_image_names_the_file(tmp_path):
    root = make_folder(str(tmp_path / 'ds'))
    bad = os.path.join(root, 'train', 'cats', 'x.jpg')
    with open(bad, 'wb') as f:
        f.write(b'\x00garbage bytes, not a jpeg' * 10)
    with pytest.raises(ConfigError) as err:
        folder.load_folder(root)
    assert bad in str(err.value) and '\n' not in str(err.value)


def test_layout_errors(tmp_path):
    with pytest.raises(ConfigError, match='does not exist'):
        folder.load_folder(str(tmp_path / 'missing'))
    (tmp_path / 'no_train').mkdir()
    with pytest.raises(ConfigError, match='no train/ folder'):
        folder.load_folder(str(tmp_path / 'no_train'))
    (tmp_path / 'no_classes' / 'train').mkdir(parents=True)
    with pytest.raises(ConfigError, match='no class sub-folders'):
        folder.load_folder(str(tmp_path / 'no_classes'))
    root = str(tmp_path / 'all_empty')
    os.makedirs(os.path.join(root, 'train', 'zebras'))
    with pytest.raises(ConfigError, match='no .jpg/.jpeg/.png/.bmp/.tif/.tiff images in any class'):
        folder.load_folder(root)
    with pytest.raises(ConfigError, match='needs --root'):
        load_one_class_data('folder', 'cats')


def _forbid_decoding(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError('decoded although a valid cache exists')
    monkeypatch.setattr(folder, 'decode_image', boom)


def test_cache_reuse_and_invalidation(tmp_path, monkeypatch, cache_in_tmp):
    root = make_folder(str(tmp_path / 'ds'))
    first = folder.load_folder(root, (32, 32, 3))
    files = list(cache_in_tmp.glob('*.npz'))
    assert len(files) == 1
    with monkeypatch.context() as m:
        _forbid_decoding(m)
        second = folder.load_folder(root, (32, 32, 3))  # hits the cache
    np.testing.assert_array_equal(first.train_images, second.train_images)
    np.testing.assert_array_equal(first.test_labels, second.test_labels)
    assert second.class_names == first.class_names
    # another input shape is another cache entry
    assert folder.load_folder(root, (16, 16, 3)).train_images.shape[1:] == (16, 16, 3)
    assert len(list(cache_in_tmp.glob('*.npz'))) == 2
    # changing a file invalidates the cache
    changed = os.path.join(root, 'train', 'birds', 'a.png')
    _save(changed, (40, 30), (10, 20, 30))
    st = os.stat(changed)
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    third = folder.load_folder(root, (32, 32, 3))
    assert any(np.all(x == (10, 20, 30)) for x in third.train_images)
    # use_cache=False never reads the cache
    with monkeypatch.context() as m:
        _forbid_decoding(m)
        with pytest.raises(AssertionError):
            folder.load_folder(root, (32, 32, 3), use_cache=False)


def test_cache_failures_are_harmless(tmp_path, monkeypatch, cache_in_tmp):
    root = make_folder(str(tmp_path / 'ds'))
    folder.load_folder(root)
    (entry,) = cache_in_tmp.glob('*.npz')
    entry.write_bytes(b'corrupt')  # unreadable cache: rebuilt
    assert folder.load_folder(root).train_images.shape == (14, 32, 32, 3)
    not_a_dir = tmp_path / 'file'
    not_a_dir.write_text('x')
    monkeypatch.setenv('DROC_CACHE_DIR', str(not_a_dir))  # cannot write: only logs
    assert folder.load_folder(root).train_images.shape == (14, 32, 32, 3)


def _shared_cifar10():
    repo = Path(__file__).resolve().parents[1]
    for candidate in (repo.parent / 'shared' / 'data' / 'cifar10',
                      Path('/work/shared/data/cifar10')):
        if (candidate / 'train').is_dir():
            return candidate
    return None


def test_real_cifar10_jpegs_subset(tmp_path):
    src = _shared_cifar10()
    if src is None:
        pytest.skip('shared CIFAR-10 JPEG folder not found (<repo>/../shared/data/cifar10)')
    classes = ['airplane', 'cat', 'ship']
    root = tmp_path / 'cifar_subset'
    for name in classes:
        files = sorted((src / 'train' / name).glob('*.jpg'))[:50]
        assert len(files) == 50
        (root / 'train' / name).mkdir(parents=True)
        for f in files:
            os.symlink(f, root / 'train' / name / f.name)
    splits = folder.load_folder(str(root), (32, 32, 3))
    assert splits.class_names == classes
    assert splits.train_images.shape == (150, 32, 32, 3)
    first = sorted((src / 'train' / 'cat').glob('*.jpg'))[0]
    expected = np.asarray(Image.open(first).convert('RGB'))
    np.testing.assert_array_equal(splits.train_images[50], expected)
    assert splits.train_images.std() > 20  # real, varied pixels
    data = load_one_class_data('folder', 'cat', root=str(root))
    assert data.protocol == 'validation'
    assert len(data.train_images) == 45 and data.test_labels.tolist() == [0] * 5 + [1] * 5


def test_mvtec_style_layout_is_accepted(tmp_path):
    """test/<defect> classes that train/ lacks are outliers; an empty train/<defect> is fine."""
    root = str(tmp_path / 'parts')
    for name in ('a.png', 'b.png', 'c.png'):
        _save(os.path.join(root, 'train', 'good', name), (16, 16), (200, 200, 200))
    os.makedirs(os.path.join(root, 'train', 'scratch'))  # empty defect folder
    _save(os.path.join(root, 'test', 'good', 'g.png'), (16, 16), (200, 200, 200))
    _save(os.path.join(root, 'test', 'scratch', 's.png'), (16, 16), (10, 10, 10))
    _save(os.path.join(root, 'test', 'hole', 'h.png'), (16, 16), (0, 0, 0))
    splits = folder.load_folder(root, (8, 8, 3))
    assert splits.class_names == ['good', 'scratch', 'hole']
    assert splits.train_labels.tolist() == [0, 0, 0]
    data = load_one_class_data('folder', 'good', root=root, input_shape=(8, 8, 3))
    assert len(data.train_images) == 3
    assert sorted(data.test_labels.tolist()) == [0, 1, 1]


def _camera_folders(tmp_path):
    """The same noisy 8-bit images as 8-bit PNG, as 16-bit copies (PNG, TIFF) and as 12-bit
    sensor values in 16-bit files; returns (root8, root16, root12)."""
    from tests.image_files import to_12bit, to_16bit, write_png16, write_tiff

    rng = np.random.default_rng(3)
    roots = [str(tmp_path / name) for name in ('eight', 'sixteen', 'twelve')]
    for split, cls, name in [('train', 'good', 'a'), ('train', 'good', 'b'),
                             ('train', 'other', 'c'), ('test', 'good', 'd'),
                             ('test', 'other', 'e')]:
        img = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
        dirs = [os.path.join(r, split, cls) for r in roots]
        for d in dirs:
            os.makedirs(d, exist_ok=True)
        Image.fromarray(img).save(os.path.join(dirs[0], f'{name}.png'))
        if name in ('a', 'd'):
            write_png16(os.path.join(dirs[1], f'{name}.png'), to_16bit(img))
            write_png16(os.path.join(dirs[2], f'{name}.png'), to_12bit(img))
        else:
            write_tiff(os.path.join(dirs[1], f'{name}.tif'), to_16bit(img))
            write_tiff(os.path.join(dirs[2], f'{name}.TIFF'), to_12bit(img))
    return roots


def test_16bit_and_12bit_folders_decode_as_their_8bit_originals(tmp_path):
    root8, root16, root12 = _camera_folders(tmp_path)
    want = folder.load_folder(root8, (16, 16, 3))
    for got in (folder.load_folder(root16, (16, 16, 3)),
                folder.load_folder(root12, (16, 16, 3), input_bits=12)):
        assert got.class_names == want.class_names
        np.testing.assert_array_equal(got.train_labels, want.train_labels)
        np.testing.assert_array_equal(got.train_images, want.train_images)
        np.testing.assert_array_equal(got.test_images, want.test_images)
    # --input_bits is part of the cache key: read at their own depth, 12-bit files are dark
    assert folder.load_folder(root12, (16, 16, 3)).train_images.max() <= 16
    data = load_one_class_data('folder', 'good', root=root12, input_shape=(16, 16, 3),
                               input_bits=12)
    ref = load_one_class_data('folder', 'good', root=root8, input_shape=(16, 16, 3))
    np.testing.assert_array_equal(data.train_images, ref.train_images)
    np.testing.assert_array_equal(data.test_images, ref.test_images)
    with pytest.raises(ConfigError, match='--input_bits applies to datasets read from image'):
        load_one_class_data('digitsood', '0', input_bits=12)


def test_the_run_loads_its_data_with_input_bits(tmp_path):
    """engine/experiment.load_data passes --input_bits down to the folder loader."""
    from detect.detectors import parse_detectors
    from detect.evaluators import EVALUATORS
    from engine.experiment import load_data
    from engine.flags import FLAG_DEFAULTS
    from engine.validate import RunChecks

    root8, _, root12 = _camera_folders(tmp_path)
    cfg = dict(FLAG_DEFAULTS, dataset='folder', root=root12, category='good', input_bits=12)
    checks = RunChecks((16, 16, 3), (16, 16, 3), parse_detectors(cfg['detectors']),
                       EVALUATORS['image'])
    got = load_data(cfg, checks)
    want = load_data(dict(cfg, root=root8, input_bits=0), checks)
    np.testing.assert_array_equal(got.train_images, want.train_images)
    np.testing.assert_array_equal(got.test_images, want.test_images)
