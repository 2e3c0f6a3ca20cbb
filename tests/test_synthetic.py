"""--synthetic_validation=cutpaste: damaged copies of held-out good images, scored as a test set."""

import json

import numpy as np
import pytest

from data.base import OneClassData
from detect.calibration import split_calibration
from detect.evaluation import EvalSettings, Evaluation
from detect.synthetic import damage, synthetic_check, synthetic_data


def smooth_images(n, size=16, seed=0):
    """Nearly identical smooth gradients with mild noise: good parts of one kind."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    base = np.stack([60 + 4 * x, 80 + 3 * y, 100 + 2 * (x + y)], axis=-1)
    return np.clip(base[None] + rng.normal(0, 2, (n, size, size, 3)), 0, 255).astype(np.uint8)


def _data(images):
    return OneClassData(train_images=images, test_images=images[:0],
                        test_labels=np.zeros(0, np.int64), class_names=["good"],
                        category="good", category_index=0, dataset="t", protocol="test")


def test_damage_is_local_and_each_copy_is_damaged():
    clean = smooth_images(6, size=32)
    damaged = damage(clean)
    assert damaged.shape == clean.shape and damaged.dtype == np.uint8
    changed = np.any(np.abs(damaged.astype(int) - clean.astype(int)) > 12, axis=-1)
    per_image = changed.reshape(6, -1).mean(axis=1)
    # every copy is damaged somewhere, but only locally (CutPaste: at most 15% of the area)
    assert np.all(per_image > 0) and np.all(per_image < 0.5), per_image


def test_synthetic_data_holds_out_the_calibration_images():
    images = smooth_images(20)
    synth = synthetic_data(_data(images), 0.25, seed=3)
    fit, held = split_calibration(20, 0.25, 3)
    np.testing.assert_array_equal(synth.detector_images, images[fit])
    np.testing.assert_array_equal(synth.test_images[:5], images[held])
    assert synth.test_labels.tolist() == [0] * 5 + [1] * 5
    assert not np.array_equal(synth.test_images[5:], images[held])
    assert synthetic_data(_data(images), 0.0, seed=3) is None


class _RecordingEvaluator:
    """An evaluator whose scores are each test image's distance from the mean good image."""

    def __init__(self):
        self.seen = None

    def final(self, model, data):
        from detect.metrics import roc_auc

        self.seen = data
        mean = data.detector_images.astype(float).mean(0)
        scores = np.abs(data.test_images - mean).reshape(len(data.test_images), -1).max(1)
        results = {"pool.kde": roc_auc(data.test_labels, scores), "logit.auc": 50.0}
        return Evaluation(results=results, test_scores={"pool.kde": scores, "logit": scores},
                          calib_scores={}, detectors={}, labels=data.test_labels,
                          ids=[], n_calibration=0)


def test_check_reports_the_first_key_of_the_evaluation():
    ev, lines = _RecordingEvaluator(), []
    out = synthetic_check(ev, None, _data(smooth_images(20)), 0.5, 0, log=lines.append)
    assert len(ev.seen.detector_images) == 10 and len(ev.seen.test_images) == 20
    assert out["synthetic_image_AUROC"] == out["synthetic_validation"]["image_AUROC"]["pool.kde"]
    assert out["synthetic_validation"]["image_AUROC"].keys() == {"pool.kde"}
    assert out["synthetic_image_AUROC"] > 90  # pasted damage stands out from smooth parts
    assert len(lines) == 1 and "not real defects" in lines[0]


def test_raw_pixel_detector_sees_the_damage():
    """The real image evaluator on raw pixels: damaged copies score above clean ones."""
    from detect.image_evaluator import ImageEvaluator
    from model.registry import build_model

    model = build_model("raw_pixels", input_shape=(16, 16, 3))
    evaluator = ImageEvaluator(EvalSettings(("kde",), max_train=100, batch_size=64,
                                            calibration_fraction=0.0))
    out = synthetic_check(evaluator, model, _data(smooth_images(40)), 0.25, 0, log=print)
    assert out["synthetic_validation"]["score_key"] == "pool.kde"
    assert out["synthetic_image_AUROC"] > 90


def test_synthetic_check_needs_held_out_images(capsys):
    import train_and_eval_loop

    code = train_and_eval_loop.cli(["x", "--dataset=digitsood", "--synthetic_validation=cutpaste",
                                    "--calibration_fraction=0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--calibration_fraction=0 holds out none" in err[0]


@pytest.mark.slow
def test_good_only_run_reports_synthetic_auroc(tmp_path):
    from tests.entry_point import run_in_process
    from tests.test_good_only import TINY, good_only_category

    root = good_only_category(str(tmp_path / "parts"), test_good=False)
    run = tmp_path / "run"
    out = run_in_process(["--dataset=mvtec_folder", f"--root={root}", "--model_type=rotation",
                          "--mvtec_mode=image", "--input_shape=16,16,3", f"--model_dir={run}",
                          "--synthetic_validation=cutpaste", *TINY])
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((run / "stats" / "summary.json").read_text())
    assert summary["metrics"] is None
    synth = summary["synthetic_validation"]
    assert synth["n_good"] == synth["n_damaged"] == 3 and synth["score_key"] == "pool.kde"
    assert summary["synthetic_image_AUROC"] == synth["image_AUROC"]["pool.kde"]
    assert set(synth["image_AUROC"]) == {"pool.kde", "pool.gde", "embed.kde", "embed.gde"}
