"""--mvtec_mode=map, the inspector's path: flags, a tiny run end to end, its export (the
memory bank and the Gaussian per position) against the pipeline in a process that cannot
import the project, ONNX and OpenVINO conversions, score.py's maps, the raw-pixel
baseline on the same grid and plain image folders."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deploy.export_format import cell_map
from tests.converted import assert_conversions_match
from tests.mvtec_fixture import make_category

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
SIZE = 96
TINY = ["--model_type=cutpaste_map", "--mvtec_mode=map", f"--mvtec_image_size={SIZE}",
        "--net_type=ResNet10", "--net_width=0.125", "--num_epoch=1", "--num_batch=2",
        "--batch_size=4", "--eval_epoch=0", "--detectors=membank,posgde",
        "--export_detector=membank", "--bank_size=64", "--calibration_fraction=0.3",
        "--nomvtec_heatmaps"]


# ------------------------------------------------------------------ flags, no TensorFlow

@pytest.mark.parametrize("flags, message", [
    (["--detectors=membank"], "score feature maps"),
    (["--mvtec_mode=map", "--map_stages=2,5"], "--map_stages=2,5"),
    (["--mvtec_mode=map", "--map_neighbourhood=2"], "must be odd"),
    (["--mvtec_mode=map", "--mvtec_image_size=64"], "larger than 64"),
    (["--mvtec_mode=map", "--mvtec_image_size=200"], "multiple of 16"),
    (["--mvtec_mode=map", "--bank_size=0"], "--bank_size"),
    (["--mvtec_mode=map", "--model_type=imagenet_resnet50", "--pretrained_weights={tmp}/w.h5"],
     "no ResNet stages"),
    (["--model_type=cutpaste_map"], "--mvtec_mode=map"),
    (["--map_stages=2"], "applies to --mvtec_mode=map"),
    (["--num_epoch=3", "--train_minutes=2"], "give one"),
    (["--train_minutes=-1"], "must be >= 0"),
    (["--train_minutes=nan"], "finite"),
    (["--model_type=raw_pixels", "--train_minutes=2"], "is not trained"),
    (["--model_type=raw_pixels", "--mvtec_mode=map", "--image_norm=standardize"],
     "applies to the ResNet proxy tasks"),
])
def test_bad_map_mode_flags_are_one_error_line(flags, message, tmp_path, capsys):
    import train_and_eval_loop

    category = make_category(str(tmp_path / "widget"), n_train=2, n_good=1, n_defect=1)
    (tmp_path / "w.h5").write_bytes(b"weights")
    code = train_and_eval_loop.cli(["x", "--dataset=mvtec_folder", f"--root={category}",
                                    f"--model_dir={tmp_path / 'run'}",
                                    *(f.format(tmp=tmp_path) for f in flags)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error:"), err
    assert message in err[0]
    assert not (tmp_path / "run").exists()


def test_the_inspector_preset_and_what_beats_it():
    from engine.config import resolve_config

    cfg = resolve_config({"preset": "inspector", "dataset": "mvtec_folder"}, {"preset"})
    assert (cfg["model_type"], cfg["mvtec_mode"], cfg["detectors"]) == \
        ("cutpaste_map", "map", "membank")
    assert cfg["train_minutes"] == 15.0
    # epochs asked for on the command line replace the preset's clock
    cfg = resolve_config({"preset": "inspector", "num_epoch": 3}, {"preset", "num_epoch"})
    assert cfg["train_minutes"] == 0.0 and cfg["num_epoch"] == 3


def test_an_mvtec_run_at_the_papers_length_on_a_cpu_names_the_preset():
    from detect.evaluators import EVALUATORS
    from engine.config import resolve_config
    from engine.experiment import length_note

    cfg = resolve_config({"dataset": "mvtec_folder", "model_type": "cutpaste"}, set())
    note = length_note(cfg, EVALUATORS["patch"])
    assert note.startswith("note:") and "--preset=inspector" in note and "2048" in note
    assert length_note(cfg, EVALUATORS["image"]) is None  # CIFAR-like runs are the paper's own
    assert length_note(dict(cfg, preset="inspector", train_minutes=15.0),
                       EVALUATORS["map"]) is None
    assert length_note(dict(cfg, num_epoch=8), EVALUATORS["patch"]) is None


def test_the_calibration_images_are_not_trained_on():
    from detect.calibration import split_calibration
    from detect.evaluation import EvalSettings
    from detect.map_evaluator import MapEvaluator

    images = np.arange(50)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    ev = MapEvaluator(EvalSettings(("membank",), calibration_fraction=0.2, seed=3),
                      map_stages="2,3", map_neighbourhood=3, bank_size=64)
    seen = ev.representation_images(images)[:, 0, 0, 0]
    fit, calib = split_calibration(50, 0.2, 3)
    assert sorted(seen) == sorted(fit) and not set(seen) & set(calib) and len(calib) == 10


# ------------------------------------------------------------------ a tiny run

@pytest.fixture(scope="module")
def category(tmp_path_factory):
    """A 128 px generated category: the runs work at 96 px, so inputs are resized."""
    return make_category(str(tmp_path_factory.mktemp("parts") / "widget"), n_train=8,
                         size=128)


@pytest.fixture(scope="module")
def map_run(tmp_path_factory, category):
    from tests.entry_point import run_in_process

    run = tmp_path_factory.mktemp("map_run") / "run"
    out = run_in_process(["--dataset=mvtec_folder", f"--root={category}", f"--model_dir={run}",
                          *TINY])
    assert out.returncode == 0, out.stderr[-3000:]
    return run


FRESH = r"""
import json, sys
import numpy as np
import tensorflow as tf
assert not any(m.split(".")[0] in ("util", "model", "data", "detect", "deploy", "engine")
               for m in sys.modules)
out = {}
for name, export in json.loads(sys.argv[1]).items():
    f = tf.saved_model.load(export).signatures["serving_default"]
    out[name] = {}
    for part in ("same", "big", "big_resized"):
        o = f(images=tf.constant(np.load(sys.argv[2] + "/" + part + ".npy")))
        out[name][part] = {k: v.numpy().tolist() for k, v in o.items()}
print(json.dumps(out))
"""


def _test_images(category, size=SIZE):
    from data.registry import load_one_class_data

    return load_one_class_data("mvtec_folder", "0", root=category,
                               input_shape=(size, size, 3)).test_images


def _fresh_outputs(exports, category, tmp_path):
    """{name: outputs} of the exports ({name: folder}) computed by one process that cannot
    import the project: for the test images at the working size, at their own 128 px, and
    resized by the data layer."""
    from data.base import conform_images

    fresh = tmp_path / "elsewhere"
    fresh.mkdir(exist_ok=True)
    (fresh / "load.py").write_text(FRESH)
    big = _test_images(category, 128)
    np.save(tmp_path / "same.npy", _test_images(category))
    np.save(tmp_path / "big.npy", big)
    np.save(tmp_path / "big_resized.npy", conform_images(big, (SIZE, SIZE, 3)))
    env = {k: v for k, v in ENV.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-I", str(fresh / "load.py"),
                          json.dumps({k: str(v) for k, v in exports.items()}), str(tmp_path)],
                         capture_output=True, text=True, cwd=fresh, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    return {name: {part: {k: np.asarray(v) for k, v in o.items()} for part, o in parts.items()}
            for name, parts in got.items()}


@pytest.fixture(scope="module")
def map_exports(map_run, tmp_path_factory):
    """{detector: export folder}: the run's membank export, and posgde exported again by
    script/export.py."""
    from script import export

    posgde = tmp_path_factory.mktemp("posgde") / "export"
    assert export.main([str(map_run), f"--out={posgde}", "--export_detector=posgde"]) == 0
    return {"membank": map_run / "export", "posgde": posgde}


@pytest.fixture(scope="module")
def fresh_map_outputs(map_exports, category, tmp_path_factory):
    return _fresh_outputs(map_exports, category, tmp_path_factory.mktemp("fresh"))


@pytest.mark.slow
@pytest.mark.parametrize("detector", ["membank", "posgde"])
def test_map_export_equals_the_pipeline_in_a_fresh_process(detector, map_run, map_exports,
                                                            fresh_map_outputs):
    """Image scores, cell maps, anomaly maps and masks of the export (the run's membank
    export; posgde exported again by script/export.py) equal the run's: scores.npz and the
    pipeline's smoothing of its cell maps."""
    from detect.localization import map_pixels
    from detect.scores_file import read_scores

    key = f"map.{detector}"
    out = map_exports[detector]
    meta = json.loads((out / "assets" / "droc_export.json").read_text())
    assert meta["kind"] == "map" and meta["score_key"] == key
    assert meta["grid"] == {"image_size": SIZE, "stages": [2, 3], "neighbourhood": 3,
                            "cells": SIZE // 8, "features": "map"}
    outputs = fresh_map_outputs[detector]
    got = outputs["same"]
    sc = read_scores(map_run / "stats" / "scores.npz")
    maps = sc["maps"][key]
    assert maps.shape == (7, SIZE // 8, SIZE // 8)
    # distances of float32 features: agree to a few units in 1e5 of their size (the folded
    # BatchNorm and the graph's operation order round differently)
    tol = dict(rtol=1e-4, atol=2e-4 * np.abs(maps).max())
    assert "cell_map" in got and "patch_map" not in got
    np.testing.assert_allclose(cell_map(got), maps, **tol)
    pixel = map_pixels(maps, SIZE)
    np.testing.assert_allclose(got["anomaly_map"], pixel, **tol)
    np.testing.assert_allclose(got["raw_score"], sc["test"][key], **tol)
    # larger inputs are resized in the graph as the data layer resizes them
    np.testing.assert_allclose(outputs["big"]["anomaly_map"],
                               outputs["big_resized"]["anomaly_map"], **tol)
    np.testing.assert_allclose(sc["test"][key], pixel.reshape(7, -1).max(1), rtol=1e-6)
    c, pc = meta["calibration"], meta["pixel_calibration"]
    np.testing.assert_array_equal(got["decision"], got["raw_score"] > c["threshold"])
    np.testing.assert_array_equal(got["mask"], got["anomaly_map"] > pc["threshold"])
    assert 0 < got["mask"].sum() < got["mask"].size


@pytest.mark.slow
@pytest.mark.parametrize("detector", ["membank", "posgde"])
def test_map_export_converts_to_onnx_and_openvino(detector, map_run, category, tmp_path):
    pytest.importorskip("tf2onnx", reason="requirements-deploy.txt is not installed")
    pytest.importorskip("openvino", reason="requirements-deploy.txt is not installed")

    from deploy.convert import convert_export
    from script import export

    # the script exports and converts to ONNX; the same export is then converted to
    # OpenVINO by the script's conversion call, without fitting and exporting again
    # (script/export.py --format=openvino itself: tests/test_export_formats.py)
    out = tmp_path / "export"
    assert export.main([str(map_run), f"--out={out}", "--format=onnx",
                        f"--export_detector={detector}"]) == 0
    convert_export(out, "openvino")
    images = _test_images(category)
    assert_conversions_match(out, images, 2e-4)


@pytest.mark.slow
def test_score_cli_writes_the_maps_and_masks_of_a_map_export(map_run, category, tmp_path):
    from PIL import Image

    csv_path, maps_dir = tmp_path / "scores.csv", tmp_path / "maps"
    out = subprocess.run([sys.executable, str(ROOT / "script" / "score.py"),
                          f"--export_dir={map_run / 'export'}", str(Path(category) / "test"),
                          f"--out={csv_path}", f"--maps_dir={maps_dir}"],
                         capture_output=True, text=True, cwd=tmp_path, env=ENV, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == 7 and "images/s" in out.stdout
    for i, row in enumerate(rows):
        stem = f"{i:06d}_{Path(row['path']).stem}"
        mask = np.asarray(Image.open(maps_dir / f"{stem}_mask.png"))
        assert mask.shape == (128, 128) and int(row["defect_area_px"]) == int((mask > 0).sum())
        picture = Image.open(maps_dir / f"{stem}.png")
        assert picture.size[1] > SIZE and picture.size[0] > 2 * SIZE  # input, map, bar


@pytest.mark.slow
def test_the_raw_pixel_baseline_scores_the_same_grid(category, tmp_path):
    from tests.entry_point import run_in_process

    run = tmp_path / "raw"
    out = run_in_process(["--dataset=mvtec_folder", f"--root={category}", f"--model_dir={run}",
                          "--model_type=raw_pixels", "--mvtec_mode=map",
                          f"--mvtec_image_size={SIZE}", "--detectors=membank",
                          "--bank_size=64", "--nomvtec_heatmaps"])
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((run / "stats" / "summary.json").read_text())
    assert summary["export"] is None
    from detect.scores_file import read_scores

    maps = read_scores(run / "stats" / "scores.npz")["maps"]["map.membank"]
    assert maps.shape == (7, SIZE // 8, SIZE // 8)
    # the painted defects are far from every good cell's pixels
    assert summary["map.membank"] > 90 and summary["map.membank.pixel_auroc"] > 90


@pytest.mark.slow
def test_a_plain_image_folder_gets_maps_and_image_metrics(tmp_path):
    """--dataset=folder in map mode: the inspector on folders of classes, without masks."""
    from tests.entry_point import run_in_process

    root = tmp_path / "data"
    make_category(str(root), n_train=8, size=128, masks=False)
    run = tmp_path / "run"
    out = run_in_process(["--dataset=folder", f"--root={root}", "--category=good",
                          f"--model_dir={run}", *TINY])
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((run / "stats" / "summary.json").read_text())
    assert "map.membank" in summary and "map.membank.pixel_auroc" not in summary
    assert (run / "export" / "assets" / "droc_export.json").is_file()


@pytest.mark.slow
def test_good_parts_only_train_calibrate_export_and_score(tmp_path):
    """The inspector's preset on a tree with train/good alone, at a tiny budget: the run
    trains for its minutes, reports no AUC, exports with the held-out threshold, and
    score.py flags new images with maps; a brightly painted defect scores above the
    good parts."""
    import shutil

    from PIL import Image

    from tests.entry_point import run_in_process

    root = Path(make_category(str(tmp_path / "parts"), n_train=10, size=128))
    new = tmp_path / "new"
    shutil.copytree(root / "test", new)
    shutil.rmtree(root / "test")
    shutil.rmtree(root / "ground_truth")
    run = tmp_path / "run"
    out = run_in_process(["--dataset=mvtec_folder", f"--root={root}", "--preset=inspector",
                          f"--model_dir={run}", "--train_minutes=0.05",
                          f"--mvtec_image_size={SIZE}", "--net_width=0.125", "--batch_size=4"])
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((run / "stats" / "summary.json").read_text())
    assert "map.membank" not in summary and summary["export"]["score_key"] == "map.membank"
    assert summary["meta"]["budget"]["train_minutes"] == 0.05
    calibration = summary["calibration"]["map.membank"]
    assert calibration["target_fpr"] == 0.05 and calibration["n_calibration"] == 2
    csv_path, maps_dir = tmp_path / "scores.csv", tmp_path / "maps"
    # score.py's main in this process (its command line runs in the test above)
    from tests.test_cli_errors import call_main

    code, _, err = call_main("score", [f"--export_dir={run / 'export'}", str(new),
                                       f"--out={csv_path}", f"--maps_dir={maps_dir}"])
    assert code == 0, err[-3000:]
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == 7 and all(r["decision"] in ("0", "1") for r in rows)
    good = [float(r["raw_score"]) for r in rows if Path(r["path"]).parent.name == "good"]
    bad = [float(r["raw_score"]) for r in rows if Path(r["path"]).parent.name != "good"]
    assert min(bad) > max(good)
    assert len(list(maps_dir.glob("*_mask.png"))) == 7
    assert Image.open(next(maps_dir.glob("*_mask.png"))).size == (128, 128)
