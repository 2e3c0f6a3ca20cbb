"""Unsupervised, semi-supervised and data-efficiency protocols: sizes and contamination."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data.base import LabeledSplits
from data.protocol import one_class_split
from data.protocols_extra import apply_protocols, describe_protocols
from util.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def make_splits(n_per_class=100, classes=5):
    """Each image's pixels encode (class, index), so provenance is checkable."""
    labels = np.repeat(np.arange(classes), n_per_class)
    images = np.zeros((len(labels), 4, 4, 3), np.uint8)
    images[:, 0, 0, 0] = labels
    images[:, 0, 1, 0] = np.arange(len(labels)) % 256
    images[:, 0, 2, 0] = np.arange(len(labels)) // 256
    return LabeledSplits(images, labels, None, None, [f"c{i}" for i in range(classes)])


def cfg(**kw):
    base = dict(outlier_ratio=0.0, num_inlier_for_detector=0, num_train=0, seed=0)
    base.update(kw)
    return base


def split(splits, inlier=2):
    return one_class_split(splits, inlier, is_validation=True, seed=0)


@pytest.mark.parametrize("ratio", [0.05, 0.1, 0.5])
def test_outlier_ratio_keeps_size_and_contaminates(ratio):
    splits = make_splits()
    data = split(splits)
    n = len(data.train_images)  # 90 after the validation hold-out
    rec = apply_protocols(data, **cfg(outlier_ratio=ratio), splits=splits)
    cls = data.train_images[:, 0, 0, 0]
    assert len(data.train_images) == n == rec["n_train"]
    assert int(np.sum(cls != 2)) == rec["n_train_outliers"] == int(np.floor(ratio * n + 0.5))
    assert data.detector_images is None and rec["n_detector"] == n
    # no training outlier is one of the held-out test images
    key = lambda im: im.tobytes()  # noqa: E731
    test = {key(im) for im in data.test_images}
    assert not any(key(im) in test for im in data.train_images[cls != 2])


def test_semi_supervised_detector_gets_clean_inliers():
    splits = make_splits()
    data = split(splits)
    rec = apply_protocols(data, **cfg(outlier_ratio=0.1, num_inlier_for_detector=7), splits=splits)
    assert data.detector_images.shape[0] == 7 == rec["n_detector"]
    assert np.all(data.detector_images[:, 0, 0, 0] == 2)
    assert rec["n_train_outliers"] == 9 and len(data.train_images) == 90


def test_data_efficiency_trains_on_n_detector_on_all():
    splits = make_splits()
    data = split(splits)
    full = data.train_images.copy()
    rec = apply_protocols(data, **cfg(num_train=10), splits=None)
    assert len(data.train_images) == 10 and rec["n_train"] == 10
    np.testing.assert_array_equal(data.detector_images, full)
    rows = {im.tobytes() for im in full}
    assert all(im.tobytes() in rows for im in data.train_images)
    assert rec["n_detector"] == 90


def test_protocol_draws_follow_the_seed():
    splits = make_splits()
    a, b, c = split(splits), split(splits), split(splits)
    apply_protocols(a, **cfg(outlier_ratio=0.2), splits=splits)
    apply_protocols(b, **cfg(outlier_ratio=0.2), splits=splits)
    apply_protocols(c, **cfg(outlier_ratio=0.2, seed=1), splits=splits)
    np.testing.assert_array_equal(a.train_images, b.train_images)
    assert not np.array_equal(a.train_images, c.train_images)


@pytest.mark.parametrize("kw, msg", [
    (dict(outlier_ratio=0.6), r"must be in \[0, 0.5\]"),
    (dict(outlier_ratio=-0.1), r"must be in \[0, 0.5\]"),
    (dict(num_train=-1), "must be >= 0"),
])
def test_protocol_flag_ranges_are_checked_before_loading(kw, msg):
    from engine.validate import check_protocol_flags

    with pytest.raises(ConfigError, match=msg):
        check_protocol_flags(cfg(**kw))


@pytest.mark.parametrize("kw, msg", [
    (dict(num_train=91), "more than the 90 training inliers"),
    (dict(num_inlier_for_detector=500), "more than the 90 training inliers"),
])
def test_bad_protocol_flags(kw, msg):
    splits = make_splits()
    with pytest.raises(ConfigError, match=msg):
        apply_protocols(split(splits), **cfg(**kw), splits=splits)


def test_not_enough_outliers():
    splits = make_splits(n_per_class=100, classes=2)
    data = split(splits, inlier=0)
    small = LabeledSplits(splits.train_images[:130], splits.train_labels[:130], None, None,
                          splits.class_names)
    with pytest.raises(ConfigError, match="needs 45 outliers but only"):
        apply_protocols(data, **cfg(outlier_ratio=0.5), splits=small)


def test_defaults_record():
    data = split(make_splits())
    assert describe_protocols(data) == {"outlier_ratio": 0.0, "num_inlier_for_detector": 0,
                                        "num_train": 0, "n_train": 90, "n_train_outliers": 0,
                                        "n_detector": 90}


@pytest.mark.slow
def test_cli_protocols_and_denoising_recorded(tmp_path):
    run_dir = tmp_path / "run"
    from tests.entry_point import run_in_process

    out = run_in_process(
        ["--model_type=denoising", "--dataset=digitsood", "--category=3", "--net_type=ResNet10",
         "--net_width=0.125", "--num_epoch=1", "--num_batch=2", "--batch_size=16",
         "--outlier_ratio=0.1", "--num_inlier_for_detector=20", "--detectors=kde,gde",
         "--noexport", f"--model_dir={run_dir}"])
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((run_dir / "stats" / "summary.json").read_text())
    rec = summary["meta"]["protocols"]
    assert rec["outlier_ratio"] == 0.1 and rec["n_detector"] == 20
    assert rec["n_train_outliers"] == round(0.1 * rec["n_train"])
    assert summary["meta"]["model_type"] == "denoising"
    assert {"pool.kde", "pool.gde", "uniformity.mmd2"} <= set(summary)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "logs" / "eval"))
    acc.Reload()
    assert "uniformity/mmd2" in set(acc.Tags().get("tensors", [])) | set(acc.Tags()["scalars"])


def test_cli_bad_ratio_writes_nothing(tmp_path):
    run_dir = tmp_path / "run"
    out = subprocess.run(
        [sys.executable, str(ROOT / "train_and_eval_loop.py"), "--dataset=digitsood",
         "--outlier_ratio=0.7", f"--model_dir={run_dir}"],
        capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 2 and out.stderr.strip().splitlines()[-1].startswith("error: ")
    assert not run_dir.exists()
