"""MVTec protocol: loader, patch grid, upsampling, pixel metrics, CutPaste, end to end."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import precision_recall_curve, roc_auc_score

from data import mvtec
from data.registry import load_one_class_data
from tests.mvtec_fixture import make_category
from util import localization, pixel_metrics
from util.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- loader

def test_loader_with_masks(tmp_path):
    root = make_category(str(tmp_path / "DIR" / "widget"), size=48)
    data = load_one_class_data("mvtec", "widget", root=str(tmp_path / "DIR"),
                               input_shape=(32, 32, 3))
    assert data.train_images.shape == (6, 32, 32, 3)
    assert data.test_images.shape == (7, 32, 32, 3)
    assert data.test_defects == ["good"] * 3 + ["hole"] * 2 + ["scratch"] * 2
    assert data.test_labels.tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert data.test_names[3] == "000" and data.category == "widget"
    assert data.test_masks.shape == (7, 32, 32)
    assert data.test_masks[:3].sum() == 0 and all(m.sum() > 0 for m in data.test_masks[3:])
    # the mask marks the painted pixels: scratch 000 is green where the mask is 1
    full = mvtec.load_category(root, (48, 48, 3))
    m = full.test_masks[5].astype(bool)
    assert (full.test_images[5][m] == (20, 200, 40)).all()
    assert not (full.test_images[5][~m] == (20, 200, 40)).all(axis=-1).any()


def test_loader_without_masks_and_folder_variant(tmp_path):
    root = make_category(str(tmp_path / "parts"), masks=False, size=32)
    data = load_one_class_data("mvtec_folder", "0", root=root, input_shape=(32, 32, 3))
    assert data.test_masks is None and data.category == "parts"
    assert int(data.test_labels.sum()) == 4


def test_loader_errors(tmp_path):
    root = make_category(str(tmp_path / "c"), size=32)
    bad = os.path.join(root, "test", "hole", "001.png")
    Path(bad).write_bytes(b"not a png" * 20)
    with pytest.raises(ConfigError, match="cannot read image .*001.png"):
        mvtec.load_category(root, (32, 32, 3))

    root = make_category(str(tmp_path / "d"), size=32)
    Image.new("L", (16, 16)).save(os.path.join(root, "ground_truth", "hole", "000_mask.png"))
    with pytest.raises(ConfigError, match="mask .*000_mask.png is 16x16 but its image"):
        mvtec.load_category(root, (32, 32, 3))

    root = make_category(str(tmp_path / "e"), size=32)
    os.remove(os.path.join(root, "ground_truth", "scratch", "001_mask.png"))
    with pytest.raises(ConfigError, match="no ground-truth mask .*001_mask.png"):
        mvtec.load_category(root, (32, 32, 3))

    with pytest.raises(ConfigError, match="--category=nope is not a folder"):
        load_one_class_data("mvtec", "nope", root=str(tmp_path))
    with pytest.raises(ConfigError, match="has no .png"):
        mvtec.load_category(str(tmp_path), (32, 32, 3))


# ---------------------------------------------------------------- patch grid and maps

def test_patch_grid_57_and_coordinates():
    assert localization.grid_size(256, 32, 4) == 57
    c = localization.grid_coords(256, 32, 4)
    assert c.shape == (57, 57, 2)
    assert c[0, 0].tolist() == [0, 0] and c[56, 56].tolist() == [224, 224]
    assert c[3, 10].tolist() == [12, 40]
    with pytest.raises(ConfigError, match="does not tile"):
        localization.grid_size(256, 32, 5)


def test_extracted_patches_are_the_grid_windows():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, (2, 256, 256, 3), dtype=np.uint8)
    patches = localization.extract_patches(imgs, 32, 4).numpy()
    assert patches.shape == (2, 57, 57, 32, 32, 3)
    coords = localization.grid_coords(256, 32, 4)
    for b, i, j in [(0, 0, 0), (1, 56, 56), (1, 7, 33)]:
        y, x = coords[i, j]
        np.testing.assert_array_equal(patches[b, i, j], imgs[b, y:y + 32, x:x + 32])


def test_image_score_is_max_of_map():
    maps = np.zeros((3, 57, 57))
    maps[0, 4, 5] = 2.0
    maps[1] = -1.0
    maps[1, 50, 1] = 0.5
    maps[2, 10, 10] = -3.0
    np.testing.assert_allclose(localization.image_scores(maps), [2.0, 0.5, 0.0])


def test_upsampling_places_gaussian_in_patch_window():
    maps = np.zeros((1, 57, 57), np.float32)
    maps[0, 20, 30] = 1.0
    up = localization.upsample_maps(maps, 32, 4)[0]
    assert up.shape == (256, 256)
    g = localization.gaussian_kernel(32)
    # interior pixels are covered by 8 x 8 = 64 patches
    np.testing.assert_allclose(up[80:112, 120:152], g / 64.0, rtol=1e-5, atol=1e-7)
    outside = up.copy()
    outside[80:112, 120:152] = 0
    assert np.abs(outside).max() == 0


# ---------------------------------------------------------------- pixel metrics

def test_auroc_and_f1_match_sklearn_with_ties():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 500)
    s = np.round(rng.normal(size=500) + y, 1)  # many ties
    assert pixel_metrics.auroc(y, s) == pytest.approx(roc_auc_score(y, s) * 100, abs=1e-9)
    p, r, _ = precision_recall_curve(y, s)
    f1 = np.max(2 * p * r / np.maximum(p + r, 1e-12))
    assert pixel_metrics.f1_max(y, s) == pytest.approx(f1 * 100, abs=1e-9)


def test_pro_hand_computed():
    # one 1x4 image: two regions {0} and {3}, normal pixels {1, 2}
    masks = np.array([[[1, 0, 0, 1]]])
    maps = np.array([[[0.9, 0.8, 0.1, 0.2]]])
    # thresholds: 0.9 -> fpr 0, pro 1/2; 0.8 -> fpr 1/2, pro 1/2; 0.2 -> fpr 1/2, pro 1;
    # 0.1 -> fpr 1, pro 1. Up to fpr 0.3: area = 0.3 * 0.5 -> normalised 50.
    assert pixel_metrics.pro_score(masks, maps) == pytest.approx(50.0)
    # a perfect localiser scores 100; region sizes do not matter (per-region mean)
    masks = np.zeros((2, 8, 8), int)
    masks[0, :4, :4] = 1     # big region
    masks[1, 6, 6] = 1       # one-pixel region
    maps = masks + 0.01 * np.random.default_rng(0).random(masks.shape)
    assert pixel_metrics.pro_score(masks, maps) == pytest.approx(100.0)
    # only the one-pixel region is found before every other pixel (tied at 0) comes in at
    # FPR 1: curve (0, 0.5) -> (1, 1), PRO 0.65 at FPR 0.3, area 0.3 * (0.5 + 0.65) / 2
    maps = np.zeros((2, 8, 8))
    maps[1, 6, 6] = 1.0
    assert pixel_metrics.pro_score(masks, maps) == pytest.approx(57.5)


def test_pixel_auroc_counts_every_pixel():
    masks = np.zeros((2, 2, 2), int)
    masks[0, 0, 0] = 1
    maps = np.array([[[0.5, 0.1], [0.2, 0.3]], [[0.6, 0.0], [0.0, 0.0]]])
    # the anomalous pixel (0.5) beats 6 of the 7 normal pixels
    assert pixel_metrics.pixel_metrics(masks, maps)["pixel_auroc"] == pytest.approx(600 / 7)
