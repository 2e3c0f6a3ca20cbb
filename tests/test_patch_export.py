"""Patch models deploy like image models: the run exports them, the export's maps equal
the pipeline's, and script/score.py writes their decisions, defect areas and maps."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.converted import assert_conversions_match
from tests.mvtec_fixture import make_category

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
TINY = ["--net_type=ResNet10", "--net_width=0.125", "--head_dims=16", "--num_epoch=1",
        "--num_batch=2", "--batch_size=8", "--eval_batch_size=64", "--eval_epoch=0",
        "--detectors=kde,gde", "--max_detector_train=200", "--aug_list=x",
        "--mvtec_image_size=32", "--patch_size=16", "--patch_stride=4", "--patches_per_image=2",
        "--nomvtec_heatmaps"]


@pytest.fixture(scope="module")
def category(tmp_path_factory):
    """A 48 px generated category: the runs work at 32 px, so inputs are resized."""
    return make_category(str(tmp_path_factory.mktemp("parts") / "widget"), size=48)


def _run(tmp_path_factory, category, *flags):
    from tests.entry_point import run_in_process

    run = tmp_path_factory.mktemp("patch_run") / "run"
    out = run_in_process(["--dataset=mvtec_folder", f"--root={category}",
                          f"--model_dir={run}", *TINY, *flags])
    assert out.returncode == 0, out.stderr[-3000:]
    return run


@pytest.fixture(scope="module")
def crop_run(tmp_path_factory, category):
    return _run(tmp_path_factory, category, "--model_type=rotation", "--export_detector=kde")


@pytest.fixture(scope="module")
def conv_run(tmp_path_factory, category):
    return _run(tmp_path_factory, category, "--model_type=contrastive_da",
                "--patch_features=conv", "--export_detector=gde")


FRESH = r"""
import json, sys
import numpy as np
import tensorflow as tf
assert not any(m.split(".")[0] in ("util", "model", "data", "detect", "deploy", "engine")
               for m in sys.modules)
assert not any(p and "{root}" in p for p in sys.path), sys.path
out = {{}}
for name, export in json.loads(sys.argv[1]).items():
    f = tf.saved_model.load(export).signatures["serving_default"]
    out[name] = {{}}
    for part in ("same", "big", "big_resized"):
        o = f(images=tf.constant(np.load(sys.argv[2] + "/" + part + ".npy")))
        out[name][part] = {{k: v.numpy().tolist() for k, v in o.items()}}
print(json.dumps(out))
"""


def _test_images(category, size):
    from data.registry import load_one_class_data

    return load_one_class_data("mvtec_folder", "0", root=category, input_shape=(size, size, 3))


@pytest.fixture(scope="module")
def fresh_outputs(category, crop_run, conv_run, tmp_path_factory):
    """{run: {input: {output name: list}}}: both runs' exports serving the test images at
    the working 32 px, at their own 48 px and resized by the data layer, in one process
    that cannot import the project."""
    from data.base import conform_images

    work = tmp_path_factory.mktemp("fresh")
    small, big = _test_images(category, 32), _test_images(category, 48)
    np.save(work / "same.npy", small.test_images)
    np.save(work / "big.npy", big.test_images)
    np.save(work / "big_resized.npy", conform_images(big.test_images, (32, 32, 3)))
    fresh = work / "elsewhere"
    fresh.mkdir()
    (fresh / "load.py").write_text(FRESH.format(root=str(ROOT)))
    env = {k: v for k, v in ENV.items() if k != "PYTHONPATH"}
    exports = {"crop_run": str(crop_run / "export"), "conv_run": str(conv_run / "export")}
    out = subprocess.run([sys.executable, "-I", str(fresh / "load.py"), json.dumps(exports),
                          str(work)], capture_output=True, text=True, cwd=fresh, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("which", ["crop_run", "conv_run"])
def test_patch_export_equals_pipeline_in_fresh_process(which, request, fresh_outputs):
    """Image scores, patch maps, pixel maps and masks of the export, loaded by a process
    that cannot import the project, equal the run's (scores.npz and the pipeline's
    upsampling); at another input size the graph resizes like the data layer."""
    from detect.localization import upsample_maps
    from detect.scores_file import read_scores

    run = request.getfixturevalue(which)
    summary = json.loads((run / "stats" / "summary.json").read_text())
    key = summary["export"]["score_key"]
    assert summary["export"]["kind"] == "patch"
    meta = json.loads((run / "export" / "assets" / "droc_export.json").read_text())
    assert meta["kind"] == "patch" and meta["grid"]["patch_size"] == 16
    assert meta["pixel_calibration"] == summary["calibration"][key]["pixel"]
    got = fresh_outputs[which]
    sc = read_scores(run / "stats" / "scores.npz")
    maps = sc["maps"][key]
    assert maps.shape == (7, 5, 5)
    np.testing.assert_allclose(sc["test"][key], maps.reshape(7, -1).max(1), rtol=1e-6)
    scale = np.abs(maps).max()
    same = {k: np.asarray(v) for k, v in got["same"].items()}
    np.testing.assert_allclose(same["raw_score"], sc["test"][key], rtol=1e-4, atol=1e-5 * scale)
    np.testing.assert_allclose(same["patch_map"], maps, rtol=1e-4, atol=1e-5 * scale)
    pixel = upsample_maps(maps, 16, 4)
    np.testing.assert_allclose(same["anomaly_map"], pixel, rtol=1e-4, atol=1e-5 * scale)
    c, pc = meta["calibration"], meta["pixel_calibration"]
    np.testing.assert_array_equal(same["decision"], same["raw_score"] > c["threshold"])
    np.testing.assert_array_equal(same["mask"], same["anomaly_map"] > pc["threshold"])
    assert same["mask"].shape == (7, 32, 32) and 0 < same["mask"].sum() < same["mask"].size
    np.testing.assert_allclose(got["big"]["anomaly_map"], got["big_resized"]["anomaly_map"],
                               rtol=1e-5, atol=1e-6 * scale)
    # the reported metrics and the export score the same test images alike
    assert summary["metrics"][key]["image_AUROC"] == pytest.approx(summary[key])


@pytest.mark.slow
def test_pixel_threshold_is_set_on_held_out_good_pixels(crop_run):
    """The pixel threshold is the --target_fpr quantile of the held-out good images' pixel
    scores, which the export stores with the image calibration scores."""
    from detect.calibration import threshold_at_fpr

    summary = json.loads((crop_run / "stats" / "summary.json").read_text())
    calib = summary["calibration"]["pool.kde"]
    with np.load(crop_run / "export" / "assets" / "calibration_scores.npz") as z:
        image, pixel = z["image"], z["pixel"]
    # 6 training images, 10% held out -> 1 image: its 32 x 32 pixel scores
    assert calib["n_calibration"] == 1 and len(image) == 1 and pixel.shape == (32 * 32,)
    assert calib["threshold"] == pytest.approx(threshold_at_fpr(image, 0.01))
    assert calib["pixel"]["threshold"] == pytest.approx(threshold_at_fpr(pixel, 0.01))
    assert calib["pixel"]["n_calibration"] == 32 * 32
    assert np.mean(pixel > calib["pixel"]["threshold"]) <= 0.01


def _score(args, cwd):
    return subprocess.run([sys.executable, str(ROOT / "script" / "score.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, env=ENV, timeout=600)


def _score_in_process(args):
    """script/score.py's ``main`` run in this process, as a CompletedProcess: the same
    code path as the command line without another TensorFlow start-up."""
    from tests.test_cli_errors import call_main

    code, out, err = call_main("score", [str(a) for a in args])
    return subprocess.CompletedProcess(args, code, out, err)


@pytest.mark.slow
def test_score_cli_writes_areas_masks_and_maps_of_a_patch_export(crop_run, category, tmp_path):
    import tensorflow as tf

    export = crop_run / "export"
    meta = json.loads((export / "assets" / "droc_export.json").read_text())
    test_dir = Path(category) / "test"
    csv_path, maps_dir = tmp_path / "scores.csv", tmp_path / "maps"
    out = _score([f"--export_dir={export}", test_dir, f"--out={csv_path}",
                  f"--maps_dir={maps_dir}"], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = list(csv.DictReader(csv_path.open()))
    assert list(rows[0]) == ["path", "raw_score", "normalized_score", "decision",
                             "defect_area_px"]
    files = sorted(test_dir.rglob("*.png"))
    assert [r["path"] for r in rows] == [str(p) for p in files]
    serve = tf.saved_model.load(str(export)).signatures["serving_default"]
    imgs = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in files])
    want = serve(images=tf.constant(imgs))
    pixel_thr = meta["pixel_calibration"]["threshold"]
    for i, (row, path) in enumerate(zip(rows, files)):
        assert float(row["raw_score"]) == pytest.approx(float(want["raw_score"][i]), rel=1e-6)
        assert int(row["decision"]) == int(want["decision"][i])
        # the predicted mask at the input's 48 px: the 32 px mask resized, nearest
        mask_png = np.asarray(Image.open(maps_dir / f"{i:06d}_{path.stem}_mask.png"))
        small = (want["anomaly_map"][i].numpy() > pixel_thr).astype(np.uint8) * 255
        expected = np.asarray(Image.fromarray(small).resize((48, 48), Image.NEAREST))
        np.testing.assert_array_equal(mask_png, expected)
        assert int(row["defect_area_px"]) == int((mask_png > 0).sum())
        assert (maps_dir / f"{i:06d}_{path.stem}.png").stat().st_size > 1000
    assert sum(int(r["defect_area_px"]) > 0 for r in rows) >= 1
    # thresholds moved at scoring time: explicit, or at another FPR on the stored scores
    # (score.py's main in this process; the command line itself ran above)
    out = _score_in_process([f"--export_dir={export}", test_dir, f"--out={csv_path}",
                             "--threshold=1e9", "--pixel_threshold=1e9"])
    assert out.returncode == 0, out.stderr[-3000:]
    rows = list(csv.DictReader(csv_path.open()))
    assert all(r["decision"] == "0" and r["defect_area_px"] == "0" for r in rows)
    from detect.calibration import threshold_at_fpr

    with np.load(export / "assets" / "calibration_scores.npz") as z:
        pixel_at = threshold_at_fpr(z["pixel"], 0.5)
    out = _score_in_process([f"--export_dir={export}", test_dir, f"--out={csv_path}",
                             "--target_fpr=0.5"])
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"pixel threshold {pixel_at:.6g}" in out.stdout
    areas = [int(r["defect_area_px"]) for r in csv.DictReader(csv_path.open())]
    assert areas == [int(np.asarray(Image.fromarray(
        (want["anomaly_map"][i].numpy() > pixel_at).astype(np.uint8) * 255).resize(
        (48, 48), Image.NEAREST)).astype(bool).sum()) for i in range(len(files))]
    bad = _score_in_process([f"--export_dir={export}", test_dir,
                             f"--out={tmp_path / 'never.csv'}", "--target_fpr=0.5",
                             "--threshold=1"])
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error:")
    assert not (tmp_path / "never.csv").exists()


@pytest.mark.slow
def test_patch_export_benchmark_section_prints_its_figures(tmp_path, capsys):
    """script/benchmark.py --sections=patch_export on a generated category (the section
    runs bench.patch_export in a process of its own): both exports serve, and the ratios
    are the printed rates' ratios (no timing assertion). A test grid of stride 16 keeps
    the serving passes few; nothing asserted depends on the grid."""
    make_category(str(tmp_path / "DIR" / "widget"), size=256, n_train=2, n_good=1,
                  n_defect=1)
    from bench.runner import main

    assert main(["--sections=patch_export", f"--mvtec_root={tmp_path / 'DIR'}",
                 "--mvtec_category=widget", "--mvtec_patch_features=conv",
                 "--mvtec_images=2", "--mvtec_train_patches=300", "--mvtec_stride=16",
                 "--rounds=1",
                 "--export_batch=2", "--widths=0.125", f"--out={tmp_path / 'b'}"]) == 0
    stdout = capsys.readouterr().out
    fig = json.loads((tmp_path / "b" / "benchmark.json").read_text())["patch_export"]["conv"]
    assert fig["images"] == 2 and fig["train_patches"] == 300 and fig["width"] == 0.125
    for det in ("gde", "kde"):
        assert fig[f"{det}_over_network_time"] == pytest.approx(
            fig["network_images_per_s"] / fig[f"{det}_images_per_s"], rel=0.02)
    assert "export gde" in stdout and "the network's time" in stdout


@pytest.mark.slow
@pytest.mark.parametrize("which", ["crop_run", "conv_run"])
def test_patch_export_converts_to_onnx_and_openvino_with_its_maps(which, request, category,
                                                                 tmp_path):
    """script/export.py --format=onnx on a patch run, then the same export converted to
    OpenVINO (the script's one conversion call, without fitting and exporting again): the
    converted models return the SavedModel's image scores, patch maps, anomaly maps and
    masks."""
    pytest.importorskip("tf2onnx", reason="requirements-deploy.txt is not installed")
    pytest.importorskip("openvino", reason="requirements-deploy.txt is not installed")

    from deploy.convert import convert_export
    from script import export

    run = request.getfixturevalue(which)
    out = tmp_path / "export"
    assert export.main([str(run), f"--out={out}", "--format=onnx"]) == 0
    convert_export(out, "openvino")
    images = _test_images(category, 32).test_images
    assert_conversions_match(out, images, 1e-5)
