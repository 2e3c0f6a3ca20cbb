"""Camera resolution in map mode: --map_train_crop (the network trains on random crops and
scores whole images at the working size), --mvtec_image_size=0 (the images' own size) and
--mvtec_aspect=keep (their aspect ratio). The crops are windows of the images; the
whole-image maps of a crop-trained network equal those of the same weights built at the
working size; the working shape comes from the first training image; a tiny run of the
recipe maps masks and scores back to the camera's pixels, and its export (SavedModel,
ONNX, OpenVINO) scores as its pipeline did."""

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest

from tests.mvtec_fixture import make_category

WORK, CROP = 128, 96
CROP_RUN = ["--model_type=cutpaste_map", "--mvtec_mode=map", f"--mvtec_image_size={WORK}",
            f"--map_train_crop={CROP}", "--net_type=ResNet10", "--net_width=0.125",
            "--num_epoch=1", "--num_batch=2", "--batch_size=4", "--eval_epoch=0",
            "--detectors=membank", "--export_detector=membank", "--bank_size=64",
            "--calibration_fraction=0.3", "--nomvtec_heatmaps"]


def _evaluator(crop):
    from detect.evaluation import EvalSettings
    from detect.map_evaluator import MapEvaluator

    return MapEvaluator(EvalSettings(("membank",)), map_stages="2,3", map_neighbourhood=3,
                        bank_size=8, map_train_crop=crop)


def test_training_batches_are_random_windows_of_the_images():
    """Each element of a crop run's batch is a CROP x CROP window of one training image
    (found by exhaustive search), at varied positions; without a crop the batches are the
    whole images."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, WORK, WORK, 3), dtype=np.uint8)
    batch = next(iter(_evaluator(CROP).train_dataset(images, 4, "x", None, 0, False)))
    crops = np.asarray(batch[0] if isinstance(batch, tuple) else batch)
    assert crops.shape == (4, CROP, CROP, 3)
    offsets = set()
    for crop in np.rint(crops * 255).astype(np.uint8):
        found = [(k, y, x) for k in range(len(images)) for y in range(WORK - CROP + 1)
                 for x in range(WORK - CROP + 1)
                 if images[k, y, x, 0] == crop[0, 0, 0]
                 and np.array_equal(images[k, y:y + CROP, x:x + CROP], crop)]
        assert len(found) == 1
        offsets.add(found[0][1:])
    assert len(offsets) > 1
    whole = next(iter(_evaluator(0).train_dataset(images, 4, "x", None, 0, False)))
    assert np.asarray(whole[0] if isinstance(whole, tuple) else whole).shape == (4, WORK, WORK, 3)
    # the collapse monitor probes what the network trains on
    assert _evaluator(CROP).network_view(images).shape == (6, CROP, CROP, 3)
    np.testing.assert_array_equal(_evaluator(CROP).network_view(images),
                                  images[:, 16:16 + CROP, 16:16 + CROP])


def test_whole_image_maps_equal_the_same_weights_built_at_the_working_size():
    """The stage-2 mapper of a network built for CROP px inputs, asked for WORK px images,
    computes what a network of the same weights built for WORK px computes directly."""
    from model.registry import build_model

    def model(side):
        m = build_model("cutpaste_map", net_type="ResNet10", net_width=0.125,
                        input_shape=(side, side, 3), head_dims="", image_norm="standardize")
        m(np.zeros((1, side, side, 3), np.float32))
        return m

    small, direct = model(CROP), model(WORK)
    rng = np.random.default_rng(1)
    for layer in small.backbone.layers:  # random statistics: BatchNorm must carry over too
        if layer.weights:
            layer.set_weights([(rng.uniform(0.5, 1.5, w.shape) if "variance" in v.name
                                else rng.normal(0.0, 0.3, w.shape)).astype(np.float32)
                               for v, w in zip(layer.weights, layer.get_weights())])
    direct.backbone.set_weights(small.backbone.get_weights())
    images = rng.random((2, WORK, WORK, 3)).astype(np.float32)
    mapper = small.feature_mapper((2, 3), 3)
    whole = mapper.for_size(WORK)
    assert whole is not mapper and mapper.for_size(CROP) is mapper
    got = np.asarray(whole(images))
    want = np.asarray(direct.feature_mapper((2, 3), 3)(images))
    assert got.shape == (2, WORK // 8, WORK // 8, want.shape[-1])
    assert np.isfinite(want).all() and np.abs(want).max() > 0
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    # the crop-size mapper is unchanged: the copy has weights of its own
    np.testing.assert_allclose(np.asarray(mapper(images[:, :CROP, :CROP])),
                               np.asarray(whole(images[:, :CROP, :CROP])), rtol=1e-5,
                               atol=1e-5 * np.abs(want).max())


# ------------------------------------------------------------------ --mvtec_aspect=keep

#: camera images of 144 x 360 px (2.5 : 1) worked on at 96 x 240: the same 2/3 on both axes
CAMERA, KEPT = (144, 360), (96, 240)
ASPECT_RUN = [f if not f.startswith("--mvtec_image_size") else "--mvtec_image_size=240"
              for f in CROP_RUN if not f.startswith("--map_train_crop")] + [
    "--mvtec_aspect=keep", "--map_train_crop=96"]


def test_native_side_rounds_the_longer_side_within_its_bounds():
    from data.base import NATIVE_SIDES, native_side

    assert NATIVE_SIDES == (256, 640)
    assert native_side(240, 289) == 288  # magnetic tile's first training image
    assert native_side(256, 256) == 256 and native_side(100, 120) == 256
    assert native_side(640, 640) == 640 and native_side(1024, 1024) == 640
    assert native_side(144, 360) == 352 and native_side(144, 368) == 384  # half rounds up


def test_aspect_shape_keeps_the_ratio_and_rounds_the_shorter_side():
    from data.base import aspect_shape

    assert aspect_shape(500, 1250, 640) == (256, 640)  # KolektorSDD: exact
    assert aspect_shape(1000, 1500, 512) == (336, 512)  # 341.3 -> the nearest multiple of 16
    assert aspect_shape(640, 640, 512) == (512, 512)
    assert aspect_shape(40, 2000, 256) == (16, 256)  # at least one multiple


def wide_category(root):
    """A category of 144 x 360 px striped parts; defects are dark rectangles whose edges lie
    on multiples of 3 px, i.e. on whole pixels at 96 x 240 too."""
    from PIL import Image

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:CAMERA[0], 0:CAMERA[1]]

    def part():
        base = 128 + 60 * np.sin((x + y) * 2 * np.pi / 12 + rng.uniform(0, 6.3))
        img = np.stack([base, base * 0.9, base * 0.8], -1) + rng.normal(0, 5, (*CAMERA, 3))
        return np.clip(img, 0, 255).astype(np.uint8)

    def save(path, arr):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(path)

    for i in range(8):
        save(root / "train" / "good" / f"{i:03d}.png", part())
    for i in range(3):
        save(root / "test" / "good" / f"{i:03d}.png", part())
    for i in range(3):
        img, mask = part(), np.zeros(CAMERA, np.uint8)
        y0, x0 = 3 * rng.integers(2, 30), 3 * rng.integers(2, 90)
        mask[y0:y0 + 18, x0:x0 + 27] = 255
        img[mask > 0] = 10
        save(root / "test" / "dent" / f"{i:03d}.png", img)
        save(root / "ground_truth" / "dent" / f"{i:03d}_mask.png", mask)
    return root


@pytest.fixture(scope="module")
def aspect_run(tmp_path_factory):
    from tests.entry_point import run_in_process

    category = wide_category(tmp_path_factory.mktemp("wide") / "strip")
    run = tmp_path_factory.mktemp("aspect_run") / "run"
    out = run_in_process(["--dataset=mvtec_folder", f"--root={category}",
                          f"--model_dir={run}", *ASPECT_RUN])
    assert out.returncode == 0, out.stderr[-3000:]
    return run, category


@pytest.mark.parametrize("flags, shape", [
    (["--mvtec_image_size=0", "--map_train_crop=96"], (352, 352, 3)),
    (["--mvtec_image_size=0", "--map_train_crop=96", "--mvtec_aspect=keep"], (144, 352, 3)),
    (["--mvtec_image_size=240", "--map_train_crop=96", "--mvtec_aspect=keep"], (96, 240, 3)),
    (["--mvtec_image_size=240", "--map_train_crop=96"], (240, 240, 3)),
])
def test_the_working_shape_comes_from_the_first_training_image(flags, shape, tmp_path):
    """What load_data decodes at: the images' own size (0) or their aspect ratio (keep)."""
    from engine.config import resolve_and_check
    from engine.experiment import working_shape
    from engine.flags import parse_run_args
    from engine.validate import validate_config

    from data.image_io import set_max_image_pixels

    category = wide_category(tmp_path / "strip")
    cfg = resolve_and_check(*parse_run_args([
        "--dataset=mvtec_folder", f"--root={category}", "--mvtec_mode=map",
        "--model_type=cutpaste_map", f"--model_dir={tmp_path / 'run'}", *flags]))
    checks = validate_config(cfg)
    set_max_image_pixels(50)  # an earlier run's limit in this process: the run's own applies
    assert working_shape(cfg, checks) == shape
    assert checks.input_shape == (96, 96, 3)


def test_sources_without_their_images_size_work_at_the_smallest_native_side(tmp_path):
    """A folder of classes does not report its images' size: --mvtec_image_size=0 gives
    256 px there, and --mvtec_aspect=keep is refused."""
    from PIL import Image

    from engine.config import resolve_and_check
    from engine.experiment import working_shape
    from engine.flags import parse_run_args
    from engine.validate import validate_config
    from util.errors import ConfigError

    for cls in ("bolt", "nut"):
        (tmp_path / "parts" / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (400, 300)).save(tmp_path / "parts" / cls / f"{i}.png")

    def shape(*flags):
        cfg = resolve_and_check(*parse_run_args([
            "--dataset=folder", f"--root={tmp_path / 'parts'}", "--category=bolt",
            "--mvtec_mode=map", "--model_type=cutpaste_map", "--mvtec_image_size=0",
            "--map_train_crop=96", f"--model_dir={tmp_path / 'run'}", *flags]))
        return working_shape(cfg, validate_config(cfg))

    assert shape() == (256, 256, 3)
    with pytest.raises(ConfigError, match="--mvtec_aspect=keep needs the images' own size"):
        shape("--mvtec_aspect=keep")


def test_the_fine_inspector_preset_is_the_inspector_at_the_images_own_size(tmp_path):
    """--preset=inspector_fine: the inspector's every value, the images at their own size
    and 256 px training crops; parts of 256 px or less are then worked on whole, as the
    inspector works on them."""
    from engine.config import resolve_and_check
    from engine.experiment import working_shape
    from engine.flags import parse_run_args
    from engine.presets import PRESETS
    from engine.validate import validate_config

    assert PRESETS["inspector_fine"] == dict(PRESETS["inspector"], mvtec_image_size=0,
                                             map_train_crop=256)
    wide = wide_category(tmp_path / "strip")
    small = make_category(str(tmp_path / "widget"), n_train=2, n_good=1, n_defect=1, size=128)
    for root, shape, crops in ((wide, (352, 352, 3), True), (small, (256, 256, 3), False)):
        cfg = resolve_and_check(*parse_run_args([
            "--dataset=mvtec_folder", f"--root={root}", "--preset=inspector_fine",
            f"--model_dir={tmp_path / 'run'}"]))
        checks = validate_config(cfg)
        assert working_shape(cfg, checks) == shape and checks.input_shape == (256, 256, 3)
        assert _evaluator(256).crops(np.zeros((1, *shape), np.uint8)) is crops


#: bad camera-resolution command lines: (the part's folder, flags, what the one error line
#: names); refused before the run folder exists, the ones that need the first image's
#: size once it is listed
REFUSED = [
    ("square", ["--mvtec_mode=map", "--map_train_crop=300"], "at most --mvtec_image_size=256"),
    ("square", ["--mvtec_mode=map", "--map_train_crop=48"], "larger than 64"),
    ("square", ["--mvtec_mode=map", "--map_train_crop=200"], "multiple of 32"),
    ("square", ["--mvtec_mode=map", "--map_train_crop=-32"], "--map_train_crop=-32"),
    ("square", ["--map_train_crop=64"], "applies to --mvtec_mode=map"),
    ("wide", ["--mvtec_mode=map", "--mvtec_image_size=0"],
     "--mvtec_image_size=0 needs --map_train_crop"),
    ("wide", ["--mvtec_mode=map", "--mvtec_aspect=keep", "--mvtec_image_size=240",
              "--map_train_crop=128"], "larger than the working size 96x240"),
    ("wide", ["--mvtec_mode=map", "--mvtec_image_size=0", "--map_train_crop=96",
              "--max_image_pixels=5000"], "--max_image_pixels"),
]


@pytest.mark.parametrize("part, flags, message", REFUSED)
def test_bad_camera_resolution_flags_are_one_error_line(part, flags, message, tmp_path,
                                                        capsys):
    import train_and_eval_loop

    category = (wide_category(tmp_path / "strip") if part == "wide" else
                make_category(str(tmp_path / "widget"), n_train=2, n_good=1, n_defect=1))
    code = train_and_eval_loop.cli(["x", "--dataset=mvtec_folder", f"--root={category}",
                                    f"--model_dir={tmp_path / 'run'}", *flags], train=True)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error:"), err
    assert message in err[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_kept_aspect_maps_masks_and_scores_back_to_the_camera_pixels(aspect_run, tmp_path):
    """The new recipe (crops, the images' aspect ratio). At 144 x 360 -> 96 x 240 both axes
    scale by 2/3: the ground truth read at the working shape goes back to the camera pixels
    unchanged, the cell maps are 12 x 30, the export (SavedModel, ONNX, OpenVINO) gives the
    pipeline's maps and scores, and score.py, given the camera's files, writes
    masks at the camera's size that are the export's working masks brought back to its
    pixels."""
    import csv
    import subprocess
    import sys

    import tensorflow as tf
    from PIL import Image

    from data.registry import load_one_class_data
    from deploy.convert import convert_export
    from deploy.export_format import cell_map
    from deploy.scoring import mask_at_input_size
    from detect.localization import map_pixels
    from detect.scores_file import read_scores
    from tests.converted import assert_conversions_match

    run, category = aspect_run
    data = load_one_class_data("mvtec_folder", "0", root=str(category),
                               input_shape=(*KEPT, 3))
    assert data.test_images.shape[1:3] == KEPT
    for path, mask in zip(data.test_paths, data.test_masks):
        if "dent" in path:
            truth = np.asarray(Image.open(category / "ground_truth" / "dent" /
                                          (Path(path).stem + "_mask.png"))) > 0
            np.testing.assert_array_equal(mask_at_input_size(mask, *CAMERA) > 0, truth)
    meta = json.loads((run / "export" / "assets" / "droc_export.json").read_text())
    assert meta["input_shape"] == [*KEPT, 3]
    assert meta["grid"]["image_size"] == list(KEPT) and meta["grid"]["cells"] == [12, 30]
    scores = read_scores(run / "stats" / "scores.npz")
    maps = scores["maps"]["map.membank"]
    assert maps.shape == (6, 12, 30)
    got = {k: v.numpy() for k, v in tf.saved_model.load(str(run / "export")).signatures[
        "serving_default"](images=tf.constant(data.test_images)).items()}
    tol = dict(rtol=1e-4, atol=2e-4 * np.abs(maps).max())
    np.testing.assert_allclose(cell_map(got), maps, **tol)
    np.testing.assert_allclose(got["anomaly_map"], map_pixels(maps, KEPT), **tol)
    np.testing.assert_allclose(got["raw_score"], scores["test"]["map.membank"], **tol)
    assert got["anomaly_map"].shape == (6, *KEPT)
    if importlib.util.find_spec("tf2onnx") and importlib.util.find_spec("openvino"):
        for fmt in ("onnx", "openvino"):
            convert_export(run / "export", fmt)
        assert_conversions_match(run / "export", data.test_images, 2e-4)
    else:
        assert not os.environ.get("CI"), "requirements-deploy.txt is not installed"
    out, maps_dir = tmp_path / "scores.csv", tmp_path / "maps"
    done = subprocess.run([sys.executable, str(Path(__file__).parents[1] / "script" / "score.py"),
                           f"--export_dir={run / 'export'}", *data.test_paths, f"--out={out}",
                           f"--maps_dir={maps_dir}"], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    # score.py hands the camera's images to the export, which resizes them in its graph
    camera = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in data.test_paths])
    seen = {k: v.numpy() for k, v in tf.saved_model.load(str(run / "export")).signatures[
        "serving_default"](images=tf.constant(camera)).items()}
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 6
    for i, row in enumerate(rows):
        full = np.asarray(Image.open(maps_dir / f"{i:06d}_{Path(row['path']).stem}_mask.png"))
        assert full.shape == CAMERA
        np.testing.assert_array_equal(full, mask_at_input_size(seen["mask"][i], *CAMERA))
        assert int(row["defect_area_px"]) == int((full > 0).sum())
        np.testing.assert_allclose(float(row["raw_score"]), seen["raw_score"][i], rtol=1e-5)
