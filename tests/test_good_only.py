"""Good images only (no defects yet): loading, the no-AUC decision, outputs and whole runs."""

import json
import os
import shutil

import numpy as np
import pytest

from data import mvtec
from data.registry import load_one_class_data
from detect.evaluation import Evaluation, aucs_defined, no_auc_note
from tests.mvtec_fixture import make_category
from util.errors import ConfigError


def good_only_category(root, test_good=True, n_train=12, size=32):
    """A category folder with train/good (and test/good when ``test_good``) only."""
    make_category(root, n_train=n_train, size=size, masks=True)
    for defect in ("scratch", "hole"):
        shutil.rmtree(os.path.join(root, "test", defect))
    shutil.rmtree(os.path.join(root, "ground_truth"))
    if not test_good:
        shutil.rmtree(os.path.join(root, "test"))
    return root


# ---------------------------------------------------------------- loading

def test_mvtec_tree_with_good_images_only_loads(tmp_path):
    root = good_only_category(str(tmp_path / "parts"), test_good=False)
    data = load_one_class_data("mvtec_folder", "0", root=root, input_shape=(32, 32, 3))
    assert data.train_images.shape == (12, 32, 32, 3)
    assert data.test_images.shape == (0, 32, 32, 3) and data.test_labels.tolist() == []
    assert data.test_masks is None

    root = good_only_category(str(tmp_path / "DIR" / "bottle"), test_good=True)
    data = load_one_class_data("mvtec", "bottle", root=str(tmp_path / "DIR"),
                               input_shape=(32, 32, 3))
    assert data.test_labels.tolist() == [0, 0, 0] and data.test_defects == ["good"] * 3


def test_defect_folders_without_good_test_images_are_an_error(tmp_path):
    root = make_category(str(tmp_path / "c"), size=32)
    shutil.rmtree(os.path.join(root, "test", "good"))
    with pytest.raises(ConfigError, match="no test/good/ images"):
        mvtec.load_category(root, (32, 32, 3))


def test_folder_of_one_class_holds_out_good_images(tmp_path, monkeypatch):
    monkeypatch.setenv("DROC_CACHE_DIR", str(tmp_path / "cache"))
    root = good_only_category(str(tmp_path / "parts"), test_good=False, n_train=20)
    data = load_one_class_data("folder", "good", root=root, input_shape=(32, 32, 3))
    # the validation protocol holds out 10% of the inliers; there are no outliers to add
    assert data.protocol == "validation"
    assert len(data.train_images) == 18 and data.test_labels.tolist() == [0, 0]


# ---------------------------------------------------------------- the one decision

def test_aucs_need_good_and_defective_test_images():
    assert aucs_defined([0, 1, 0]) and not aucs_defined([0, 0]) and not aucs_defined([])
    assert not aucs_defined([1, 1])
    assert no_auc_note([0, 1]) is None
    assert "AUCs need defective images" in no_auc_note([0, 0, 0])
    assert "3 good and 0 defective" in no_auc_note([0, 0, 0])
    assert "AUCs need good test images" in no_auc_note([1, 1])


def test_periodic_evaluation_without_defects_measures_nothing():
    """No AUC during training either: the evaluators return before touching the model."""
    from detect.evaluation import EvalSettings
    from detect.image_evaluator import ImageEvaluator
    from detect.patch_evaluator import PatchEvaluator

    images = np.zeros((4, 32, 32, 3), np.uint8)
    data = mvtec.MVTecData(train_images=images, test_images=images[:2],
                           test_labels=np.zeros(2, np.int64), class_names=["good"],
                           category="c", category_index=0, dataset="mvtec_folder",
                           protocol="test")
    settings = EvalSettings(("kde",))
    assert ImageEvaluator(settings).periodic(None, data) == {}
    patch = PatchEvaluator(settings, patch_size=16, patch_stride=4, patches_per_image=2,
                           mvtec_features="pool", patch_features="crop")
    assert patch.periodic(None, data) == {}


def _evaluation(labels, rng):
    n = len(labels)
    scores = {"pool.kde": rng.normal(size=n), "pool.gde": rng.normal(size=n)}
    calib = {k: rng.normal(size=20) for k in scores}
    return Evaluation(results={}, test_scores=scores, calib_scores=calib, detectors={},
                      labels=np.asarray(labels, np.int64),
                      ids=[str(i) for i in range(n)], n_calibration=20)


@pytest.mark.parametrize("n_test", [0, 4])
def test_outputs_without_defects_record_calibration_and_no_metrics(tmp_path, n_test):
    from types import SimpleNamespace

    from detect.calibration import threshold_at_fpr
    from detect.scores_file import read_scores
    from engine.outputs import record_results, write_extras

    ev = _evaluation([0] * n_test, np.random.default_rng(0))
    data = SimpleNamespace(dataset="mvtec_folder", category="parts", protocol="test")
    lines = []
    cfg = {"target_fpr": 0.1, "export": False, "model_type": "rotation"}
    sections = record_results(tmp_path, cfg, ev, lines.append)
    assert write_extras(tmp_path, cfg, None, data, ev, sections, lines.append) == []
    assert sections["metrics"] is None
    for key in ("pool.kde", "pool.gde"):
        assert sections["calibration"][key]["threshold"] == threshold_at_fpr(
            ev.calib_scores[key], 0.1)
        assert sections["calibration"][key]["n_calibration"] == 20
    stored = read_scores(tmp_path / "stats" / "scores.npz")
    assert len(stored["label"]) == n_test
    np.testing.assert_array_equal(stored["calib"]["pool.kde"], ev.calib_scores["pool.kde"])
    assert not (tmp_path / "plots" / "roc.png").exists()
    assert (tmp_path / "plots" / "score_hist.png").exists() == (n_test > 0)
    if n_test:
        for key, scores in ev.test_scores.items():
            threshold = sections["calibration"][key]["threshold"]
            assert sections["good_test_FPR"][key] == np.mean(scores > threshold)
    else:
        assert "good_test_FPR" not in sections


def test_export_detector_without_aucs_is_kde():
    from deploy.export_format import choose_detector

    assert choose_detector("auto", "validation", {}, {"kde", "gde"}) == "kde"
    assert choose_detector("auto", "validation", {"pool.gde": 90.0, "pool.kde": 80.0},
                           {"kde", "gde"}) == "gde"


# ---------------------------------------------------------------- whole runs

TINY = ["--net_type=ResNet10", "--net_width=0.125", "--head_dims=16", "--num_epoch=1",
        "--num_batch=2", "--batch_size=8", "--eval_batch_size=64", "--eval_epoch=0",
        "--detectors=kde,gde", "--max_detector_train=200", "--aug_list=x",
        "--calibration_fraction=0.25", "--target_fpr=0.2"]


def _cli(args):
    from tests.entry_point import run_in_process

    return run_in_process(args)


def _no_auc_lines(out):
    return [line for line in (out.stdout + out.stderr).splitlines() if "AUCs need" in line]


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["mvtec_folder", "folder"])
def test_image_run_on_good_images_trains_calibrates_and_exports(tmp_path, monkeypatch,
                                                                dataset):
    monkeypatch.setenv("DROC_CACHE_DIR", str(tmp_path / "cache"))
    root = good_only_category(str(tmp_path / "parts"), test_good=dataset == "mvtec_folder")
    run = tmp_path / "run"
    out = _cli([f"--dataset={dataset}", f"--root={root}", "--category=good",
                "--model_type=rotation", "--input_shape=16,16,3", f"--model_dir={run}", *TINY,
                *(["--mvtec_mode=image"] if dataset == "mvtec_folder" else [])])
    assert out.returncode == 0, out.stderr[-3000:]
    assert len(_no_auc_lines(out)) == 1
    summary = json.loads((run / "stats" / "summary.json").read_text())
    assert summary["metrics"] is None
    assert not any(k.startswith(("pool.", "embed.", "image_", "logit", "dscore"))
                   for k in summary)
    calib = summary["calibration"]["pool.kde"]
    # 12 good training images (folder: 11 after the validation hold-out), a quarter held out
    assert calib["n_calibration"] == 3
    assert summary["export"]["score_key"] == "pool.kde"
    assert set(summary["good_test_FPR"]) == set(summary["calibration"])
    meta = json.loads((run / "export" / "assets" / "droc_export.json").read_text())
    assert meta["calibration"]["threshold"] == calib["threshold"]
    with np.load(run / "stats" / "scores.npz") as z:
        assert z["label"].tolist() == [0] * summary["meta"]["n_test"]
        assert len(z["calib/pool.kde"]) == 3


@pytest.mark.slow
@pytest.mark.parametrize("test_good", [False, True])
def test_patch_run_on_good_images_calibrates(tmp_path, test_good):
    root = good_only_category(str(tmp_path / "parts"), test_good=test_good)
    run = tmp_path / "run"
    out = _cli(["--dataset=mvtec_folder", f"--root={root}", "--model_type=cutpaste",
                "--mvtec_image_size=32", "--patch_size=16", "--patch_stride=4",
                "--patches_per_image=2", f"--model_dir={run}", *TINY])
    assert out.returncode == 0, out.stderr[-3000:]
    assert len(_no_auc_lines(out)) == 1
    summary = json.loads((run / "stats" / "summary.json").read_text())
    assert summary["metrics"] is None and "image_AUROC" not in summary
    assert not any(k.startswith("pool.") for k in summary)
    assert summary["calibration"]["pool.kde"]["n_calibration"] == 3
    n_test = 3 if test_good else 0
    with np.load(run / "stats" / "scores.npz") as z:
        assert z["label"].tolist() == [0] * n_test and len(z["calib/pool.gde"]) == 3
    # the good test images are still scored and drawn
    pngs = sorted(p.name for p in (run / "heatmaps").rglob("*.png")) if test_good else []
    assert pngs == [f"{i:03d}.png" for i in range(n_test)]
    assert (run / "heatmaps").exists() == test_good
    assert ("good_test_FPR" in summary) == test_good
    # good parts only still give a deployable patch model: image and pixel thresholds
    # from the held-out good images, the export serving maps and masks
    assert summary["export"]["kind"] == "patch"
    pixel = summary["calibration"]["pool.kde"]["pixel"]
    assert pixel["n_calibration"] == 3 * 32 * 32
    meta = json.loads((run / "export" / "assets" / "droc_export.json").read_text())
    assert meta["pixel_calibration"] == pixel and meta["kind"] == "patch"
