"""MVTec protocol: loader, patch grid, upsampling, pixel metrics, CutPaste, end to end."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import precision_recall_curve, roc_auc_score

from data import mvtec
from data.registry import load_one_class_data
from tests.mvtec_fixture import make_category
from detect import localization, pixel_metrics
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
    with pytest.raises(ConfigError, match="has no images"):
        mvtec.load_category(str(tmp_path), (32, 32, 3))


# ---------------------------------------------------------------- patch grid and maps

def _rewrite_images(src, dst, write):
    """A copy of the category ``src`` whose train/test images are written by
    ``write(path_without_suffix, uint8 image)``; masks are copied as they are."""
    import shutil

    shutil.copytree(src, dst)
    for path in sorted(Path(dst).glob("t*/*/*.png")):
        img = np.asarray(Image.open(path))
        path.unlink()
        write(str(path.with_suffix("")), img)
    return dst


def test_16bit_png_tiff_and_12bit_categories_load_as_the_8bit_one(tmp_path):
    from tests.image_files import to_12bit, to_16bit, write_png16, write_tiff

    root = make_category(str(tmp_path / "c8"), size=40)
    copies = {
        "png16": (lambda p, im: write_png16(p + ".png", to_16bit(im)), 0),
        "tiff16": (lambda p, im: write_tiff(p + ".tif", to_16bit(im)), 0),
        "png12": (lambda p, im: write_png16(p + ".png", to_12bit(im)), 12),
    }
    want = load_one_class_data("mvtec_folder", "0", root=root, input_shape=(32, 32, 3))
    for name, (write, bits) in copies.items():
        copy = _rewrite_images(root, str(tmp_path / name), write)
        got = load_one_class_data("mvtec_folder", "0", root=copy, input_shape=(32, 32, 3),
                                  input_bits=bits)
        np.testing.assert_array_equal(got.train_images, want.train_images, err_msg=name)
        np.testing.assert_array_equal(got.test_images, want.test_images, err_msg=name)
        np.testing.assert_array_equal(got.test_masks, want.test_masks, err_msg=name)
        assert got.test_names == want.test_names


def test_red_blue_and_16bit_masks_mark_their_defect(tmp_path):
    from tests.image_files import write_png16

    root = make_category(str(tmp_path / "c"), size=32)
    want = mvtec.load_category(root, (32, 32, 3)).test_masks
    for i, path in enumerate(sorted(Path(root, "ground_truth").glob("*/*_mask.png"))):
        mark = np.asarray(Image.open(path)) > 0
        if i == 0:  # a red mask: it was empty when masks were read as gray > 127
            rgb = np.zeros(mark.shape + (3,), np.uint8)
            rgb[mark] = (255, 0, 0)
            Image.fromarray(rgb).save(path)
        elif i == 1:
            rgb = np.zeros(mark.shape + (3,), np.uint8)
            rgb[mark] = (0, 0, 255)
            Image.fromarray(rgb).save(path)
        else:  # 16-bit, value 1 of 65535
            write_png16(path, mark.astype(np.uint16))
    got = mvtec.load_category(root, (32, 32, 3)).test_masks
    assert all(m.sum() > 0 for m in got[3:])
    np.testing.assert_array_equal(got, want)


def test_empty_mask_of_a_defect_image_warns_naming_it(tmp_path, caplog):
    import logging

    root = make_category(str(tmp_path / "c"), size=32)
    empty = os.path.join(root, "ground_truth", "hole", "001_mask.png")
    Image.new("L", (32, 32)).save(empty)
    with caplog.at_level(logging.WARNING, logger="data.mvtec"):
        data = mvtec.load_category(root, (32, 32, 3))
    warnings = [r.getMessage() for r in caplog.records if "empty" in r.getMessage()]
    assert len(warnings) == 1
    assert empty in warnings[0] and os.path.join("test", "hole", "001.png") in warnings[0]
    assert data.test_masks[data.test_paths.index(
        os.path.join(root, "test", "hole", "001.png"))].sum() == 0


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
    # inside the window the values are the Gaussian's weights over the (interior-constant)
    # Gaussian overlap of the 8 x 8 covering patches; nothing lands outside the window
    ratio = up[80:112, 120:152] / g
    np.testing.assert_allclose(ratio, ratio[16, 16], rtol=1e-4)
    assert ratio[16, 16] == pytest.approx(1.0 / (g[::4, ::4].sum()), rel=1e-3)
    outside = up.copy()
    outside[80:112, 120:152] = 0
    assert np.abs(outside).max() == 0
    # a constant map, negative scores included, stays constant up to the border (a count
    # normalisation would pull border pixels towards 0)
    for c in (3.0, -50.0):
        np.testing.assert_allclose(localization.upsample_maps(np.full((1, 57, 57), c), 32, 4),
                                   c, rtol=1e-5)
    # at a coarse stride too (no dotted grid pattern)
    np.testing.assert_allclose(localization.upsample_maps(np.full((1, 15, 15), -7.0), 32, 16),
                               -7.0, rtol=1e-5)


def test_random_training_patches_are_crops_of_their_image():
    _tf()
    from data.patches import patch_train_dataset, random_patches, steps_per_epoch

    rng = np.random.default_rng(2)
    imgs = rng.integers(0, 255, (3, 48, 48, 3), dtype=np.uint8)
    patches, offsets = random_patches(imgs, 5, 16)
    patches, offsets = patches.numpy(), offsets.numpy()
    assert patches.shape == (15, 16, 16, 3)
    for k in range(15):
        y, x = offsets[k]
        np.testing.assert_array_equal(patches[k], imgs[k // 5, y:y + 16, x:x + 16])
    assert len({tuple(o) for o in offsets}) > 5  # positions vary
    assert steps_per_epoch(209, 32, 4) == 26
    ds = patch_train_dataset(imgs, 8, "x", 2, patch_size=16, patches_per_image=3, seed=0)
    v1, v2 = next(iter(ds))
    assert v1.shape == (8, 16, 16, 3) and float(v1.numpy().max()) <= 1.0


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


# ---------------------------------------------------------------- CutPaste

def _tf():
    import tensorflow as tf
    tf.random.set_seed(0)
    return tf


def test_cutpaste_rectangle_area_aspect_and_source():
    tf = _tf()
    from model import cutpaste as cp

    side = 64
    rng = np.random.default_rng(0)
    images = tf.constant(rng.random((64, side, side, 3)), tf.float32)
    boxes = cp.cutpaste_boxes(64, side, side)
    out, mask = cp.cutpaste(images, boxes)
    out, mask = out.numpy(), mask.numpy()
    h, w, sy, sx, dy, dx = (b.numpy() for b in boxes)
    area = mask.sum(axis=(1, 2)) / side ** 2
    # rounding the sides to whole pixels moves the area a little around [0.02, 0.15]
    assert area.min() >= 0.02 * 0.8 and area.max() <= 0.15 * 1.2
    ratio = h / w
    assert ratio.min() >= 0.3 * 0.85 and ratio.max() <= (1 / 0.3) * 1.15
    assert (ratio < 1).any() and (ratio > 1).any()
    for b in range(64):
        ys, xs = np.nonzero(mask[b])
        assert (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1) == (dy[b], dx[b], dy[b] + h[b],
                                                                    dx[b] + w[b])
        np.testing.assert_array_equal(out[b][~mask[b]], images.numpy()[b][~mask[b]])
    # the pasted pixels come from the source rectangle (jittered): with jitter off they match
    import model.cutpaste as mod
    old = mod.JITTER
    mod.JITTER = 0.0
    try:
        out0, mask0 = cp.cutpaste(images, boxes)
    finally:
        mod.JITTER = old
    b = 3
    np.testing.assert_allclose(
        out0.numpy()[b, dy[b]:dy[b] + h[b], dx[b]:dx[b] + w[b]],
        images.numpy()[b, sy[b]:sy[b] + h[b], sx[b]:sx[b] + w[b]], atol=1e-6)


def test_scar_size_and_colour():
    tf = _tf()
    from model import cutpaste as cp

    images = tf.zeros((1, 64, 64, 3))
    params = tuple(tf.constant([v], tf.float32) for v in (4.0, 20.0, 0.0, 32.0, 32.0))
    out, mask = cp.scar(images, params, colors=tf.constant([[1.0, 0.5, 0.25]]))
    ys, xs = np.nonzero(mask.numpy()[0])
    assert ys.max() - ys.min() + 1 == 4 and xs.max() - xs.min() + 1 == 20
    np.testing.assert_allclose(out.numpy()[0][mask.numpy()[0]][0], [1.0, 0.5, 0.25])
    sw, sl, angle, _, _ = (p.numpy() for p in cp.scar_params(500, 256, 256))
    assert sw.min() >= 2 and sw.max() <= 16 and sl.min() >= 10 and sl.max() <= 25
    assert angle.min() >= -45 and angle.max() <= 45
    # a rotated scar covers about width x length pixels
    params = cp.scar_params(32, 128, 128)
    _, mask = cp.scar(tf.zeros((32, 128, 128, 3)), params)
    area = mask.numpy().sum(axis=(1, 2))
    expect = params[0].numpy() * params[1].numpy()
    assert np.all(np.abs(area - expect) <= 2 * (params[0].numpy() + params[1].numpy()) + 4)


def test_cutpaste_batch_labels():
    tf = _tf()
    from model.cutpaste import cutpaste_batch

    images = tf.random.uniform((5, 32, 32, 3))
    x, y = cutpaste_batch(images, "3way")
    assert x.shape == (15, 32, 32, 3) and y.numpy().tolist() == [0] * 5 + [1] * 5 + [2] * 5
    np.testing.assert_array_equal(x.numpy()[:5], images.numpy())
    assert all(not np.array_equal(x.numpy()[5 + i], images.numpy()[i]) for i in range(5))
    x, y = cutpaste_batch(images, "scar")
    assert y.numpy().tolist() == [0] * 5 + [1] * 5
    x, y = cutpaste_batch(images, "4way")  # and a blob of the next image's texture
    assert y.numpy().tolist() == [0] * 5 + [1] * 5 + [2] * 5 + [3] * 5
    assert all(not np.array_equal(x.numpy()[15 + i], images.numpy()[i]) for i in range(5))
    with pytest.raises(ConfigError, match="cutpaste_variant"):
        cutpaste_batch(images, "5way")


def test_cutpaste_trains_and_detectors_see_only_clean_patches(tmp_path, monkeypatch):
    """One fit step of the 3-way model, then the patch evaluation: every input the feature
    extractor gets while fitting detectors is an exact crop of a good training image."""
    tf = _tf()
    from model.registry import build_model
    from detect.evaluation import EvalSettings
    from detect.patch_evaluator import PatchEvaluator

    model = build_model("cutpaste", net_type="ResNet10", net_width=0.125, input_shape=(16, 16, 3),
                        head_dims="16", cutpaste_variant="3way")
    assert model.num_classes == 3
    import keras
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    hist = model.fit(tf.data.Dataset.from_tensors(tf.random.uniform((4, 16, 16, 3))).repeat(),
                     steps_per_epoch=2, epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(hist.history["loss"]).all()

    root = make_category(str(tmp_path / "w"), size=32, n_train=3)
    data = mvtec.load_category(root, (32, 32, 3))
    train_u8 = data.train_images
    seen = []
    real_fn = localization.patch_feature_fn

    def spy(m, sets):
        fn = real_fn(m, sets)

        def wrapped(x):
            seen.append(np.round(x.numpy() * 255).astype(np.uint8))
            return fn(x)
        return wrapped

    import detect.patch_evaluator

    monkeypatch.setattr(detect.patch_evaluator, "patch_feature_fn", spy)
    evaluator = PatchEvaluator(EvalSettings(("gde",), max_train=20, batch_size=8,
                                            calibration_fraction=0.0),
                               patch_size=16, patch_stride=4, patches_per_image=4,
                               mvtec_features="pool", patch_features="crop")
    ev = evaluator.final(model, data, log=lambda *_: None)
    assert ev.cell_maps["pool.gde"].shape == (7, 5, 5)
    fit_inputs = np.concatenate(seen[0:3])[:20]  # the first calls fit: 20 patches, batches of 8
    windows = localization.extract_patches(train_u8, 16, 4).numpy().reshape(-1, 16, 16, 3)
    for patch in fit_inputs:
        assert (windows == patch).all(axis=(1, 2, 3)).any()


# ---------------------------------------------------------------- end to end

def _cli(args):
    from tests.entry_point import run_in_process

    return run_in_process(args)


TINY = ["--net_type=ResNet10", "--net_width=0.125", "--head_dims=16", "--num_epoch=1",
        "--num_batch=2", "--batch_size=8", "--eval_batch_size=64", "--eval_epoch=0",
        "--detectors=kde,gde", "--max_detector_train=200", "--aug_list=x"]


def _patch_run(tmp_path, *flags):
    """(run directory, output) of a tiny patch-mode run on a generated category."""
    make_category(str(tmp_path / "DIR" / "widget"), size=48)
    run = tmp_path / "run"
    out = _cli(["--dataset=mvtec", f"--root={tmp_path / 'DIR'}", "--category=widget",
                "--mvtec_image_size=32", "--patch_size=16", "--patch_stride=4",
                "--patches_per_image=2", f"--model_dir={run}", *TINY, *flags])
    assert out.returncode == 0, out.stderr[-3000:]
    return run, out


@pytest.mark.slow
def test_end_to_end_patch_mode_writes_metrics_and_heatmaps(tmp_path):
    run, _ = _patch_run(tmp_path, "--model_type=cutpaste")
    summary = json.loads((run / "stats" / "summary.json").read_text())
    for key in ("pool.kde", "pool.kde.pixel_auroc", "pool.kde.pro", "pool.kde.image_f1max",
                "pool.kde.pixel_f1max", "pool.gde", "pool.gde.pro"):
        assert isinstance(summary[key], float), key
    assert summary["image_AUROC"] == summary["pool.kde"]
    assert summary["pixel_AUROC"] == summary["pool.kde.pixel_auroc"]
    assert summary["pixel_PRO"] == summary["pool.kde.pro"]
    assert summary["image_F1Max"] == summary["pool.kde.image_f1max"]
    assert summary["meta"]["n_test"] == 7 and summary["meta"]["category"] == "widget"
    pngs = sorted(p.relative_to(run / "heatmaps").as_posix()
                  for p in (run / "heatmaps").rglob("*.png"))
    assert pngs == [f"{d}/{i:03d}.png" for d, n in (("good", 3), ("hole", 2), ("scratch", 2))
                    for i in range(n)]
    with np.load(run / "heatmaps" / "maps.npz") as z:
        assert z["patch_maps"].shape == (7, 5, 5) and z["pixel_maps"].shape == (7, 32, 32)
        assert z["masks"].shape == (7, 32, 32)
        np.testing.assert_allclose(z["image_scores"], z["patch_maps"].reshape(7, -1).max(1),
                                   rtol=1e-6)


def test_heatmap_colour_scale_shows_moderate_defects_next_to_huge_ones():
    """Heavy-tailed scores: 80 good images (noise around 0, spread 1), one defect image
    with a huge defect (1e4) and one with a moderate one (20). On a linear 1st-99.9th
    percentile scale the moderate defect would sit at 0.2% of the colour range. The
    run's scale puts every good pixel but the top 0.5% in the lower half, both
    defects in the upper half, and maps colours back to score units (colour bar)."""
    from util.heatmaps import heat_norm, scale_params

    rng = np.random.default_rng(0)
    maps = rng.normal(0.0, 1.0, (82, 32, 32))
    maps[80, 8:24, 8:24] = 1e4
    maps[81, 12:20, 12:20] = 20.0
    labels = np.r_[np.zeros(80), np.ones(2)]
    norm = heat_norm(maps, labels)
    vmin, pivot, vmax = scale_params(maps, labels)
    assert pivot == pytest.approx(np.percentile(maps[:80], 99.5))
    assert vmax == pytest.approx(1e4) and vmin == pytest.approx(np.percentile(maps, 1.0))
    good = norm(maps[:80].ravel())
    assert np.mean(good < 0.5) == pytest.approx(0.995, abs=1e-3)
    moderate, huge = float(norm(20.0)), float(norm(1e4))
    assert (20.0 - vmin) / (vmax - vmin) < 0.003  # where a linear scale would put it
    assert huge == pytest.approx(1.0) and 0.55 < moderate < 0.8
    assert float(norm(0.0)) == pytest.approx(0.5 * (0.0 - vmin) / (pivot - vmin))
    np.testing.assert_allclose(norm.inverse(norm(np.array([-2.0, 0.5, 20.0, 5e3]))),
                               [-2.0, 0.5, 20.0, 5e3], rtol=1e-9)
    # no good test image: the pivot falls back to the 99th percentile of all pixels
    assert scale_params(maps[80:], np.ones(2))[1] == pytest.approx(np.percentile(maps[80:], 99))


@pytest.mark.slow
def test_end_to_end_image_mode_without_masks(tmp_path):
    root = make_category(str(tmp_path / "parts"), size=32, masks=False)
    run = tmp_path / "run"
    out = _cli(["--dataset=mvtec_folder", f"--root={root}", "--model_type=rotation",
                "--mvtec_mode=image", "--input_shape=16,16,3", f"--model_dir={run}", *TINY])
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((run / "stats" / "summary.json").read_text())
    assert summary["image_AUROC"] == summary["pool.kde"]
    assert "pixel_AUROC" not in summary and "logit.auc" in summary
    assert not (run / "heatmaps").exists()


def test_bad_patch_flags_fail_before_writing(tmp_path):
    root = make_category(str(tmp_path / "parts"), size=32)
    run = tmp_path / "run"
    out = _cli(["--dataset=mvtec_folder", f"--root={root}", "--patch_size=16",
                "--mvtec_image_size=32", "--patch_stride=5", f"--model_dir={run}", *TINY])
    assert out.returncode == 2 and "does not tile" in out.stderr
    assert not run.exists()


def test_dense_features_are_the_features_of_each_grid_patch():
    _tf()
    from model.registry import build_model

    model = build_model("rotation", net_type="ResNet10", net_width=0.125,
                        input_shape=(16, 16, 3), head_dims="16")
    rng = np.random.default_rng(3)
    imgs = rng.integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    dense = localization.dense_patch_features(model, imgs, 16, 4, ("pool", "embed"),
                                              batch_size=7, progress=False)
    assert dense["pool"].shape[:3] == (3, 5, 5)
    fn = localization.patch_feature_fn(model, ("pool",))
    for b, i, j in [(0, 0, 0), (2, 4, 1), (1, 3, 3)]:
        crop = imgs[b:b + 1, 4 * i:4 * i + 16, 4 * j:4 * j + 16]
        direct = localization.features_of_patches(fn, crop, batch_size=7)["pool"][0]
        np.testing.assert_allclose(dense["pool"][b, i, j], direct, rtol=1e-4, atol=1e-5)


def test_conv_grid_features_average_the_trunk_cells_under_each_patch():
    """--patch_features=conv: patch (i, j) of a 48 px image, 16 px patches at stride 4 with
    a stride-8 trunk: the mean of the 2 x 2 trunk cells under the patch, from the pass
    over the image shifted so that the patch starts on a cell boundary."""
    _tf()
    from model.registry import build_model

    model = build_model("rotation", net_type="ResNet10", net_width=0.125,
                        input_shape=(16, 16, 3), head_dims="16")
    rng = np.random.default_rng(4)
    imgs = rng.integers(0, 255, (3, 48, 48, 3), dtype=np.uint8)
    grid = localization.ConvGridFeatures(model, 48, 16, 4, ("pool", "embed"))
    assert grid.net_stride == 8 and grid.n == 9
    feats = grid(imgs, images_per_pass=2, progress=False)
    from model.trunk import shape_free_trunk

    trunk = shape_free_trunk(model)
    x = imgs.astype(np.float32) / 255.0
    for b, i, j in [(0, 0, 0), (1, 1, 0), (2, 3, 5), (0, 8, 8), (1, 7, 2)]:
        r, c = 4 * i % 8, 4 * j % 8  # the shift that puts the patch on a cell boundary
        h, w = (48 - r) // 8 * 8, (48 - c) // 8 * 8
        cells = np.asarray(trunk(x[b:b + 1, r:r + h, c:c + w], training=False))[0]
        ci, cj = (4 * i - r) // 8, (4 * j - c) // 8
        expected = cells[ci:ci + 2, cj:cj + 2].mean(axis=(0, 1))
        np.testing.assert_allclose(feats["pool"][b, i, j], expected, rtol=1e-4, atol=1e-5)
        head = np.asarray(model.head(expected[None], training=False))[0]
        np.testing.assert_allclose(feats["embed"][b, i, j], head, rtol=1e-4, atol=1e-5)
    # the detectors' training features, whole grid: the same draw as the crop mode
    _, where = localization.sample_grid_patches(imgs, 20, 16, 4, seed=7)
    sampled = grid.sampled(imgs, 20, seed=7, chunk=2, draw="grid")["pool"]
    np.testing.assert_allclose(sampled, feats["pool"][where[:, 0], where[:, 1] // 4,
                                                      where[:, 2] // 4], rtol=1e-5, atol=1e-6)
    # the default "phase" draw: each image's positions share one shift (one pass per
    # image), and the shifts differ between images
    imgs6 = np.concatenate([imgs, imgs[::-1]])
    feats6 = grid(imgs6, progress=False)
    img, rows, cols, shift = grid.phase_draw(6, 60, seed=7)
    assert len(img) == 60 and len({tuple(t) for t in shift}) > 1
    np.testing.assert_array_equal(4 * rows % 8, shift[img, 0])
    np.testing.assert_array_equal(4 * cols % 8, shift[img, 1])
    phase = grid.sampled(imgs6, 60, seed=7, chunk=4)
    for k in ("pool", "embed"):
        np.testing.assert_allclose(phase[k], feats6[k][img, rows, cols], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_end_to_end_conv_patch_features(tmp_path):
    run, out = _patch_run(tmp_path, "--model_type=contrastive_da", "--patch_features=conv",
                          "--nomvtec_heatmaps", "--noexport")
    assert "patch features (conv)" in out.stdout + out.stderr
    summary = json.loads((run / "stats" / "summary.json").read_text())
    assert summary["pixel_AUROC"] == summary["pool.kde.pixel_auroc"]
    # a patch run writes the same outputs as an image run, on the same scales
    from detect.scores_file import read_scores

    scores = read_scores(run / "stats" / "scores.npz")
    assert set(scores["test"]) == {"pool.kde", "pool.gde"} and len(scores["id"]) == 7
    assert summary["image_F1Max"] == pytest.approx(summary["metrics"]["pool.kde"]["image_F1Max"])
    assert summary["image_AUROC"] == pytest.approx(summary["metrics"]["pool.kde"]["image_AUROC"])
    assert summary["calibration"]["pool.kde"]["n_calibration"] == len(scores["calib"]["pool.kde"])
    assert (run / "plots" / "roc.png").exists() and summary["export"] is None  # --noexport
    # a finished patch-mode run reloads with its 16 px network and 32 px images and
    # scores as it did (export, explain and bench/mvtec.py --mvtec_run rely on this)
    _tf()
    from engine.run_loading import load_run

    cfg, model, data, evaluator = load_run(run)
    assert model.backbone.inputs[0].shape[1:3] == (16, 16)
    assert data.test_images.shape[1:3] == (32, 32)
    again = evaluator.final(model, data).results
    for key in ("pool.kde", "pool.gde.pixel_auroc", "pool.kde.pro"):
        assert again[key] == pytest.approx(summary[key], abs=1e-3), key
    bad = _cli(["--dataset=mvtec", f"--root={tmp_path / 'DIR'}", "--category=widget",
                "--model_type=raw_pixels", "--patch_features=conv", "--mvtec_image_size=32",
                "--patch_size=16", f"--model_dir={tmp_path / 'bad'}", *TINY, "--num_epoch=0",
                "--head_dims=", "--aug_list="])
    assert bad.returncode == 2 and "--patch_features=conv" in bad.stderr
    assert not (tmp_path / "bad").exists()
