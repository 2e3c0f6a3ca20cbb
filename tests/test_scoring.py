"""Per-image scores, calibration, metrics, the SavedModel export and script/score.py.

The session's tiny run (tests/conftest.py: 1 epoch x 2 steps on digitsood, every
detector) is shared; its export is loaded in a fresh Python process that cannot import
the project.
"""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")


def run_py(args, cwd=ROOT, timeout=900):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd,
                          env=ENV, timeout=timeout)


@pytest.fixture(scope="module")
def test_images(tiny_run):
    from data.registry import load_one_class_data

    data = load_one_class_data("digitsood", "3", input_shape=(32, 32, 3), seed=0)
    return data


# -------------------------------------------------------------- pure functions

def test_metrics_against_hand_computed_case():
    from detect.metrics import average_precision, f1_max, image_metrics, rates_at_threshold

    y, s = [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]
    # ranking 0.8(+) 0.4(-) 0.35(+) 0.1(-): AP = 1/2 * 1 + 1/2 * 2/3
    assert average_precision(y, s) == pytest.approx(100 * (0.5 + 1 / 3))
    # thresholds >=0.8: F1 2/3; >=0.4: 1/2; >=0.35: P 2/3 R 1 -> 0.8; >=0.1: 2/3
    assert f1_max(y, s) == pytest.approx(80.0)
    assert rates_at_threshold(y, s, 0.3) == (1.0, 0.5)
    assert rates_at_threshold(y, s, 0.4) == (0.5, 0.0)  # strictly above the threshold
    m = image_metrics(y, s, threshold=0.3)
    assert m["image_AUROC"] == pytest.approx(75.0)
    assert (m["image_TPR"], m["image_FPR"]) == (1.0, 0.5)


def test_metrics_ties_match_sklearn():
    from sklearn.metrics import average_precision_score, precision_recall_curve

    from detect.metrics import average_precision, f1_max

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.normal(size=300) + y, 1)  # many ties
    p, r, _ = precision_recall_curve(y, s)
    assert average_precision(y, s) == pytest.approx(100 * average_precision_score(y, s))
    assert f1_max(y, s) == pytest.approx(100 * np.max(2 * p * r / np.maximum(p + r, 1e-12)))


@pytest.mark.parametrize("n, fpr", [(1000, 0.01), (1000, 0.05), (250, 0.1), (37, 0.2)])
def test_threshold_gives_target_fpr_on_calibration_scores(n, fpr):
    from detect.calibration import calibration, normalise, threshold_at_fpr

    s = np.random.default_rng(n).normal(size=n)
    t = threshold_at_fpr(s, fpr)
    achieved = np.mean(s > t)
    assert achieved <= fpr
    # the next lower calibration score would exceed the target: t is the tightest
    assert np.mean(s >= t) > fpr
    assert achieved == pytest.approx(np.floor(fpr * n) / n)
    c = calibration(s, fpr)
    assert c["calibration_fpr"] == achieved and c["threshold"] == t
    assert normalise([s.min(), s.max(), s.max() + 5], c).tolist() == [0.0, 1.0, 1.0]


def test_small_calibration_set_warns():
    from detect.calibration import split_calibration, warn_if_small

    assert warn_if_small(99, 0.01, log=lambda m: None) is not None
    assert warn_if_small(100, 0.01, log=lambda m: None) is None
    fit, cal = split_calibration(91, 0.1, seed=0)
    assert len(cal) == 9 and len(fit) == 82 and not set(fit) & set(cal)
    assert sorted(np.r_[fit, cal]) == list(range(91))


def test_bad_scoring_flags_are_config_errors():
    from util.errors import ConfigError
    from engine.validate import check_scoring_flags

    for bad in ({"calibration_fraction": 1.0}, {"target_fpr": 0.0}, {"export_detector": "svm"}):
        with pytest.raises(ConfigError):
            check_scoring_flags(bad)


# -------------------------------------------------------------- a run's outputs

@pytest.mark.slow
def test_run_writes_scores_metrics_plots_and_export(tiny_run, test_images):
    from detect.metrics import roc_auc
    from detect.scores_file import read_scores

    summary = json.loads((tiny_run / "stats" / "summary.json").read_text())
    sc = read_scores(tiny_run / "stats" / "scores.npz")
    np.testing.assert_array_equal(sc["label"], test_images.test_labels)
    assert sc["id"][5] == "5"
    for key in ("pool.kde", "pool.gde", "embed.kocsvm", "pool.auc"):
        assert roc_auc(sc["label"], sc["test"][key]) == pytest.approx(summary[key])
        assert len(sc["calib"][key]) == 9  # round(0.1 * 91) held-out training inliers
        m, c = summary["metrics"][key], summary["calibration"][key]
        assert m["image_AUROC"] == pytest.approx(summary[key])
        tpr = np.mean(sc["test"][key][sc["label"] == 1] > c["threshold"])
        fpr = np.mean(sc["test"][key][sc["label"] == 0] > c["threshold"])
        assert (m["image_TPR"], m["image_FPR"]) == pytest.approx((tpr, fpr))
        assert c["threshold"] == np.sort(sc["calib"][key])[-1]  # 9 < 1/0.01 scores
    for png in ("roc.png", "score_hist.png"):
        assert (tiny_run / "plots" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert summary["export"]["score_key"] == "pool.kde"  # test protocol: kde
    meta = json.loads((tiny_run / "export" / "assets" / "droc_export.json").read_text())
    assert meta["calibration"] == summary["calibration"]["pool.kde"]
    assert meta["config"]["net_width"] == 0.125 and "tensorflow" in meta["versions"]


@pytest.mark.slow
def test_reported_aucs_come_from_a_fit_on_all_training_inliers(tiny_run):
    """As in the release, every reported AUC comes from detectors fit on all training
    inliers (91 here); the threshold's scores come from a second fit that leaves the 9
    held-out calibration inliers out, and F1-max is on the AUCs' x 100 scale."""
    from sklearn.metrics import precision_recall_curve

    from detect.calibration import split_calibration
    from detect.detectors import make_detector
    from detect.image_evaluator import extract_features
    from detect.metrics import roc_auc
    from detect.scores_file import read_scores
    from engine.run_loading import load_run

    summary = json.loads((tiny_run / "stats" / "summary.json").read_text())
    sc = read_scores(tiny_run / "stats" / "scores.npz")
    _, model, data, _ = load_run(tiny_run)
    train = extract_features(model, data.train_images, 128)
    test = extract_features(model, data.test_images, 128)
    fit, calib = split_calibration(len(data.train_images), 0.1, seed=0)
    assert len(train["pool"]) == 91 and len(calib) == 9
    for key in ("pool.kde", "pool.gde", "embed.auc"):
        fs, name = key.split(".")
        full = make_detector(name).fit(train[fs]).score(test[fs])
        assert summary[key] == pytest.approx(roc_auc(data.test_labels, full), abs=1e-4), key
        held = make_detector(name).fit(train[fs][fit]).score(train[fs][calib])
        np.testing.assert_allclose(sc["calib"][key], held, rtol=1e-4, atol=1e-6)
        p, r, _ = precision_recall_curve(sc["label"], sc["test"][key])
        f1 = 100 * np.max(2 * p * r / np.maximum(p + r, 1e-12))
        assert summary["metrics"][key]["image_F1Max"] == pytest.approx(f1)


FRESH = r"""
import json, sys
import numpy as np
import tensorflow as tf
assert not any(m.split(".")[0] in ("util", "model", "data", "detect", "deploy", "engine")
               for m in sys.modules)
assert not any(p and "{root}" in p for p in sys.path), sys.path
out = {{}}
for name, exp in json.loads(sys.argv[1]).items():
    f = tf.saved_model.load(exp).signatures["serving_default"]
    res = {{}}
    for part in ("same", "big", "big_resized"):
        o = f(images=tf.constant(np.load(sys.argv[2] + "/" + part + ".npy")))
        res[part] = {{k: v.numpy().tolist() for k, v in o.items()}}
    out[name] = res
print(json.dumps(out))
"""


@pytest.mark.slow
def test_export_equals_pipeline_in_fresh_process(tiny_run, test_images, tmp_path):
    from data.base import conform_images
    from detect.scores_file import read_scores

    from script import export

    exports = {"kde": tiny_run / "export"}
    for det in ("gde", "kocsvm", "nn"):  # script/export.py, in this process
        exports[det] = tmp_path / f"export_{det}"
        assert export.main([str(tiny_run), f"--export_detector={det}",
                            f"--out={exports[det]}"]) == 0
    imgs = test_images.test_images
    np.save(tmp_path / "same.npy", imgs)
    big = np.stack([np.asarray(
        __import__("PIL.Image", fromlist=["Image"]).fromarray(im).resize((50, 40)))
        for im in imgs[:16]])
    np.save(tmp_path / "big.npy", big)
    np.save(tmp_path / "big_resized.npy", conform_images(big, (32, 32, 3)))
    fresh_dir = tmp_path / "elsewhere"
    fresh_dir.mkdir()
    script = fresh_dir / "load.py"
    script.write_text(FRESH.format(root=str(ROOT)))
    env = {k: v for k, v in ENV.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-I", str(script),
                          json.dumps({k: str(v) for k, v in exports.items()}), str(tmp_path)],
                         capture_output=True, text=True, cwd=fresh_dir, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    sc = read_scores(tiny_run / "stats" / "scores.npz")
    keys = {"kde": "pool.kde", "gde": "pool.gde", "kocsvm": "pool.kocsvm", "nn": "pool.auc"}
    for det, key in keys.items():
        raw = np.array(got[det]["same"]["raw_score"])
        want = sc["test"][key]
        scale = np.abs(want).max()
        # 1-NN: 1 - cos near 1 cancels in float32, so an absolute floor of ~float32 eps
        np.testing.assert_allclose(raw, want, rtol=1e-4, atol=max(1e-5 * scale, 1e-6),
                                   err_msg=det)
        meta = json.loads((exports[det] / "assets" / "droc_export.json").read_text())
        c = meta["calibration"]
        np.testing.assert_array_equal(got[det]["same"]["decision"], raw > c["threshold"])
        norm = np.clip((raw - c["norm_min"]) / (c["norm_max"] - c["norm_min"]), 0, 1)
        np.testing.assert_allclose(got[det]["same"]["normalized_score"], norm, atol=1e-9)
        # any input size: the graph resizes exactly like the data layer does
        np.testing.assert_allclose(got[det]["big"]["raw_score"],
                                   got[det]["big_resized"]["raw_score"], rtol=1e-5,
                                   atol=1e-6 * scale)


@pytest.mark.slow
def test_explain_cli_maps_the_top_scored_test_images(tiny_run, tmp_path):
    """script/explain.py rebuilds the run and writes one PNG per explained image: the
    highest pool.kde scores of the run's scores.npz, in order."""
    from detect.scores_file import read_scores
    from script import explain

    assert explain.main([str(tiny_run), "--method=gradcam", "--num_images=2",
                         f"--out={tmp_path}"]) == 0
    sc = read_scores(tiny_run / "stats" / "scores.npz")
    top = np.argsort(-sc["test"]["pool.kde"], kind="stable")[:2]
    want = sorted(f"gradcam_{int(i):05d}_{'outlier' if sc['label'][i] else 'inlier'}.png"
                  for i in top)
    assert sorted(p.name for p in tmp_path.glob("*.png")) == want


# -------------------------------------------------------------- script/score.py

def _write_folder(folder, imgs):
    from PIL import Image

    (folder / "sub").mkdir(parents=True)
    Image.fromarray(imgs[0]).save(folder / "a.png")
    Image.fromarray(imgs[1][..., 0]).save(folder / "gray.png")  # digits are gray: R=G=B
    rgba = np.dstack([imgs[2], np.full(imgs[2].shape[:2], 90, np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(folder / "sub" / "rgba.png")
    Image.fromarray(imgs[3]).save(folder / "d.bmp")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    (folder / "notes.txt").write_text("ignored: not an image suffix")


@pytest.mark.slow
def test_score_cli_folder_with_gray_rgba_and_corrupt_files(tiny_run, test_images, tmp_path):
    from detect.scores_file import read_scores

    imgs = test_images.test_images
    assert (imgs[1][..., 0] == imgs[1][..., 2]).all()
    folder = tmp_path / "imgs"
    _write_folder(folder, imgs)
    csv_path = tmp_path / "out.csv"
    out = run_py([str(ROOT / "script" / "score.py"), f"--export_dir={tiny_run / 'export'}",
                  str(folder), f"--out={csv_path}"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "broken.png" in out.stderr and "warning" in out.stderr
    rows = list(csv.DictReader(csv_path.open()))
    assert [Path(r["path"]).name for r in rows] == ["a.png", "d.bmp", "gray.png", "rgba.png"]
    sc = read_scores(tiny_run / "stats" / "scores.npz")
    want = sc["test"]["pool.kde"][[0, 3, 1, 2]]
    raw = np.array([float(r["raw_score"]) for r in rows])
    np.testing.assert_allclose(raw, want, rtol=1e-4, atol=1e-6)
    thr = json.loads((tiny_run / "export" / "assets" / "droc_export.json").read_text())[
        "calibration"]["threshold"]
    dec = [int(r["decision"]) for r in rows]
    assert dec == [int(v > thr) for v in raw]
    assert all(0.0 <= float(r["normalized_score"]) <= 1.0 for r in rows)
    assert f"scored 4, flagged {sum(dec)}, skipped 1" in out.stdout


@pytest.mark.slow
def test_score_cli_errors_exit_2_with_one_line(tiny_run, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    img_dir = tmp_path / "one"
    img_dir.mkdir()
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img_dir / "x.png")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "saved_model.pb").write_bytes(b"")
    old = tmp_path / "old_export"
    shutil.copytree(tiny_run / "export", old)
    meta_path = old / "assets" / "droc_export.json"
    meta = json.loads(meta_path.read_text())
    meta["version"] = 99
    meta_path.write_text(json.dumps(meta))
    cases = [(tiny_run / "export", empty, "no .jpg"),
             (tmp_path / "missing", img_dir, "does not exist"),
             (foreign, img_dir, "not a DROC export"),
             (old, img_dir, "version 99")]
    for export_dir, inp, text in cases:
        csv_path = tmp_path / "never.csv"
        out = run_py([str(ROOT / "script" / "score.py"), f"--export_dir={export_dir}", str(inp),
                      f"--out={csv_path}"], cwd=tmp_path)
        assert out.returncode == 2, (text, out.stderr[-2000:])
        lines = [l for l in out.stderr.splitlines() if l.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:") and text in lines[0], lines
        assert not csv_path.exists()


def _score_in_process(export_dir, folder, csv_path, *extra):
    """raw_score per file name of script/score.py run in this process."""
    from script import score

    assert score.main([f"--export_dir={export_dir}", str(folder), f"--out={csv_path}",
                       *extra]) == 0
    return {Path(r["path"]).name: float(r["raw_score"]) for r in csv.DictReader(csv_path.open())}


@pytest.mark.slow
def test_score_cli_16bit_png_tiff_and_12bit_files_score_as_8bit(tiny_run, test_images,
                                                                 tmp_path):
    """16-bit PNG and TIFF copies of the test images score as the run scored the 8-bit
    images; 12-bit sensor values do with --input_bits=12, or with the export's input_bits."""
    from detect.scores_file import read_scores
    from tests.image_files import to_12bit, to_16bit, write_png16, write_tiff

    imgs = test_images.test_images[:4]
    want = read_scores(tiny_run / "stats" / "scores.npz")["test"]["pool.kde"][:4]
    sixteen, twelve = tmp_path / "sixteen", tmp_path / "twelve"
    sixteen.mkdir()
    twelve.mkdir()
    for i, img in enumerate(imgs):
        (write_png16 if i % 2 else write_tiff)(sixteen / f"{i}.{'png' if i % 2 else 'tif'}",
                                               to_16bit(img))
        (write_png16 if i % 2 else write_tiff)(twelve / f"{i}.{'png' if i % 2 else 'tiff'}",
                                               to_12bit(img))
    export = tiny_run / "export"
    meta = json.loads((export / "assets" / "droc_export.json").read_text())
    assert meta["input_bits"] == 0  # the run read each file at its own depth
    names = ["0.tif", "1.png", "2.tif", "3.png"]
    got = _score_in_process(export, sixteen, tmp_path / "16.csv")
    np.testing.assert_allclose([got[n] for n in names], want, rtol=1e-4, atol=1e-6)
    got = _score_in_process(export, twelve, tmp_path / "12.csv", "--input_bits=12")
    names12 = ["0.tiff", "1.png", "2.tiff", "3.png"]
    np.testing.assert_allclose([got[n] for n in names12], want, rtol=1e-4, atol=1e-6)
    # an export of a run trained with --input_bits=12 reads 12-bit files so by default
    export12 = tmp_path / "export12"
    shutil.copytree(export, export12)
    meta["input_bits"] = 12
    (export12 / "assets" / "droc_export.json").write_text(json.dumps(meta))
    got = _score_in_process(export12, twelve, tmp_path / "12meta.csv")
    np.testing.assert_allclose([got[n] for n in names12], want, rtol=1e-4, atol=1e-6)
    dark = _score_in_process(export12, twelve, tmp_path / "12own.csv", "--input_bits=0")
    assert not np.allclose([dark[n] for n in names12], want, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_run_with_input_bits_12_exports_it_for_score_py(test_images, tmp_path):
    """--dataset=folder of 12-bit files with --input_bits=12: the export records it, and
    score.py reads 12-bit files as their 8-bit originals without being told."""
    from PIL import Image

    from tests.entry_point import run_in_process
    from tests.image_files import to_12bit, write_png16

    root, eight = tmp_path / "parts", tmp_path / "eight"
    eight.mkdir()
    imgs, labels = test_images.test_images, test_images.test_labels
    for cls, label in (("three", 0), ("other", 1)):
        (root / "train" / cls).mkdir(parents=True)
        for i in np.flatnonzero(labels == label)[:40]:
            write_png16(root / "train" / cls / f"{i}.png", to_12bit(imgs[i]))
            if cls == "three" and len(list(eight.iterdir())) < 4:
                Image.fromarray(imgs[i]).save(eight / f"{i}.png")
    run_dir = tmp_path / "run"
    from tests.entry_point import TINY_RUN

    flags = [a for a in TINY_RUN if not a.startswith(("--dataset", "--category", "--detectors"))]
    out = run_in_process([f"--model_dir={run_dir}", "--dataset=folder", f"--root={root}",
                          "--category=three", "--input_bits=12", "--detectors=kde",
                          "--input_shape=32,32,3", *flags])
    assert out.returncode == 0, out.stderr[-3000:]
    meta = json.loads((run_dir / "export" / "assets" / "droc_export.json").read_text())
    assert meta["input_bits"] == 12
    twelve = root / "train" / "three"
    names = sorted(p.name for p in eight.iterdir())
    got = _score_in_process(run_dir / "export", twelve, tmp_path / "12.csv")
    want = _score_in_process(run_dir / "export", eight, tmp_path / "8.csv")
    np.testing.assert_allclose([got[n] for n in names], [want[n] for n in names], rtol=1e-5,
                               atol=1e-7)


def test_batchnorm_folding_keeps_the_trunk_function():
    """deploy/fold_bn.py (used by the export's serving graph): with non-trivial BatchNorm
    statistics the folded trunk computes the original trunk's output, every conv -> BN
    pair is folded, and the original model is left untouched."""
    import keras

    from model.registry import build_model
    from deploy.fold_bn import fold_batchnorm, foldable_pairs
    from model.trunk import conv_trunk

    model = build_model("contrastive", net_type="ResNet10", net_width=0.125, head_dims="16")
    trunk = conv_trunk(model)
    rng = np.random.default_rng(0)
    bns = [l for l in trunk.layers if isinstance(l, keras.layers.BatchNormalization)]
    for bn in bns:  # trained-looking statistics: folding with identity stats proves nothing
        c = bn.gamma.shape[0]
        bn.set_weights([rng.uniform(0.5, 2, c), rng.normal(0, 0.5, c), rng.normal(0, 0.5, c),
                        rng.uniform(0.2, 3, c)])
    before = [w.copy() for w in trunk.get_weights()]
    folded = fold_batchnorm(trunk)
    assert len(foldable_pairs(trunk)) == len(bns)
    assert not any(isinstance(l, keras.layers.BatchNormalization) for l in folded.layers)
    x = rng.random((4, 32, 32, 3)).astype(np.float32)
    ref = np.asarray(trunk(x, training=False))
    out = np.asarray(folded(x, training=False))
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    assert all(np.array_equal(a, b) for a, b in zip(before, trunk.get_weights()))


def test_score_batches_hold_one_size_and_a_bounded_number_of_pixels():
    from script.score import MAX_BATCH_PIXELS, batches_by_size

    small = [(f"s{i}", np.zeros((256, 256, 3), np.uint8)) for i in range(300)]
    big = [(f"b{i}", np.zeros((1024, 1024, 3), np.uint8)) for i in range(20)]
    sizes = [len(g) for g in batches_by_size(small + big, 256)]
    assert sizes == [256, 44, 16, 4]  # 256 px images as before; 1024 px ones 16 at a time
    assert MAX_BATCH_PIXELS == 256 * 256 * 256
    assert [len(g) for g in batches_by_size(small[:10], 4)] == [4, 4, 2]
