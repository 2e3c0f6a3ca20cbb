"""A run writes only into what is its own, and no command ends in a traceback after its work.

One table per class of fault (docs/robustness.md, "Outputs that are not a command's own"
and the sections after it). Every row runs the entry point or a script's ``main`` in this
process on a generated world that holds a user's files inside the output locations, and
checks: the exit code, exactly one ``error:`` line holding the expected text, no
traceback, and a listing of every file with its contents hashed that is the same before
and after. The rows are refused before any model is built; the few tests below the
tables that need a finished run use the frozen raw-pixel baseline (no training).
"""

import contextlib
import hashlib
import io
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.entry_point import ROOT, SCRIPT
from tests.image_headers import bmp_header, png_header, tiff_header
from tests.mvtec_fixture import make_category

# ------------------------------------------------------------------------------ helpers


def listing(root):
    """{relative path: sha256 of the contents, or "dir"} of everything under ``root``."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            out[os.path.relpath(os.path.join(dirpath, name), root)] = "dir"
        for name in filenames:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def run_entry_point(argv):
    """(exit code, stdout, stderr) of ``train_and_eval_loop.py *argv`` in this process."""
    import train_and_eval_loop

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = train_and_eval_loop.cli(["train_and_eval_loop.py", *argv], train=True)
    return code, out.getvalue(), err.getvalue()


def run_script(name, argv):
    import importlib

    main = importlib.import_module(f"script.{name}").main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def check_flags(argv):
    """(exit code, stdout, stderr) of only checking ``train_and_eval_loop.py *argv``'s flags,
    as the entry point does before any work (nothing runs, whatever the flags say)."""
    import train_and_eval_loop

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = train_and_eval_loop.cli(["train_and_eval_loop.py", *argv])
    return code, out.getvalue(), err.getvalue()


def run(runner, argv):
    if runner == "flags":
        return check_flags(argv)
    return run_entry_point(argv) if runner == "train" else run_script(runner, argv)


def assert_one_error_line(code, stderr, want, exit_code=2):
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert code == exit_code, (code, stderr)
    assert len(errors) == 1 and errors == lines[-1:], stderr
    assert "Traceback" not in stderr and "usage:" not in stderr
    assert want in errors[0], errors[0]


def _png(path, value=90, size=8):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(path)
    return path


def _fake_export(path, kind="image"):
    from deploy.export_format import EXPORT_FORMAT, EXPORT_VERSION, META_NAME

    (path / "assets").mkdir(parents=True)
    (path / "variables").mkdir()
    (path / "saved_model.pb").write_bytes(b"\x08\x01")
    (path / "variables" / "variables.index").write_bytes(b"index")
    (path / "variables" / "variables.data-00000-of-00001").write_bytes(b"data")
    meta = {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "score_key": "pool.kde",
            "kind": kind, "calibration": {"threshold": 0.0, "target_fpr": 0.01}}
    if kind == "patch":
        meta["pixel_calibration"] = {"threshold": 0.0, "norm_min": 0.0, "target_fpr": 0.01}
    (path / "assets" / META_NAME).write_text(json.dumps(meta))
    return path


def run_config(**values):
    """A run's stats/hparams.json as the entry point records it (resolved, every flag)."""
    from engine.config import resolve_config

    values = {**dict(dataset="digitsood", category="3", net_type="ResNet10", net_width=0.125,
                     num_epoch=1, num_batch=2, batch_size=16, detectors="kde", eval_epoch=0,
                     max_detector_train=50), **values}
    return resolve_config(values, explicit=set(values))


def _make_world(w):
    """Everything the rows point at (see each group of rows)."""
    # a finished run (without checkpoints) and its export
    run = w / "run"
    (run / "stats").mkdir(parents=True)
    (run / "stats" / "hparams.json").write_text(json.dumps(run_config()))
    (run / "stats" / "summary.json").write_text(json.dumps({"pool.kde": 90.0}))
    _fake_export(run / "export")
    _png(run / "plots" / "roc.png")
    # a run of the raw-pixel baseline (no conv trunk, nothing to export)
    raw = w / "raw_run"
    (raw / "stats").mkdir(parents=True)
    (raw / "stats" / "hparams.json").write_text(json.dumps(run_config(
        model_type="raw_pixels", num_epoch=0, head_dims="", aug_list="x")))
    _fake_export(w / "export")
    _fake_export(w / "patch_export", kind="patch")
    # a user's folder that happens to hold a run's folder names
    user = w / "userdir"
    for rel, text in (("export/report.csv", "a,b\n1,2\n"), ("stats/notes.txt", "notes\n"),
                      ("logs/diary.txt", "dear diary\n")):
        (user / rel).parent.mkdir(parents=True, exist_ok=True)
        (user / rel).write_text(text)
    _png(user / "plots" / "roc.png", value=10)
    _png(w / "photos" / "holiday.png", value=200)
    _png(w / "imgs" / "x.png")
    (w / "file.txt").write_text("a user's file\n")
    (w / "weights.h5").write_bytes(b"not really weights")
    # image files that only claim a size (their headers), one per decoder
    big = w / "big"
    big.mkdir()
    png_header(big / "a.png", 20_000, 20_000)
    png_header(big / "b16.png", 14_000, 14_000, bits=16)
    tiff_header(big / "c.tif", 14_000, 14_000)
    bmp_header(big / "d.bmp", 12_000, 12_000)
    # image folders: a small folder dataset, one with a huge file in training
    for cls, value in (("a", 60), ("b", 160)):
        for i in range(4):
            _png(w / "folder" / "train" / cls / f"{i}.png", value + 5 * i)
    for cls in ("a", "b"):
        for i in range(3):
            _png(w / "folder_big" / "train" / cls / f"{i}.png", 40 + 30 * i)
    png_header(w / "folder_big" / "train" / "a" / "huge.png", 20_000, 20_000)
    # MVTec-layout trees: good parts only; with a 16-bit PNG, a TIFF or a BMP too large
    make_category(str(w / "mvtec" / "widget"), n_train=10, n_good=0, defects=(), size=16)
    for name, make in (("png16", lambda p: png_header(p.with_suffix(".png"), 14_000, 14_000, 16)),
                       ("tiff", lambda p: tiff_header(p.with_suffix(".tif"), 14_000, 14_000)),
                       ("bmp", lambda p: bmp_header(p.with_suffix(".bmp"), 12_000, 12_000))):
        make_category(str(w / "mvtec" / name), n_train=3, n_good=1, defects=(), size=16)
        make(w / "mvtec" / name / "train" / "good" / "zz")
    # image_dirs folders: good parts, a crack folder with its masks beside, masks/
    for i in range(6):
        _png(w / "dirs" / "good" / f"g{i}.png", 50 + 10 * i, size=16)
    for i in range(2):
        _png(w / "dirs" / "crack" / f"c{i}.png", 5, size=16)
        _png(w / "dirs" / "masks" / "crack" / f"c{i}_mask.png", 255, size=16)
    return w


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return _make_world(tmp_path_factory.mktemp("safety") / "world")


def copy_world(template, tmp_path, monkeypatch):
    """A test's own copy of a module's ``template`` world, its working directory and cache."""
    w = tmp_path / "world"
    shutil.copytree(template, w, symlinks=True)
    monkeypatch.setenv("DROC_CACHE_DIR", str(w / "cache"))
    monkeypatch.chdir(w)
    return w


@pytest.fixture
def world(template, tmp_path, monkeypatch):
    return copy_world(template, tmp_path, monkeypatch)


#: put before a training row's own flags: should its refusal ever not come, the run it
#: starts stays tiny instead of training a full network for hours
GUARD = ["--net_type=ResNet10", "--net_width=0.125", "--num_epoch=1", "--num_batch=1",
         "--eval_epoch=0", "--max_detector_train=50"]
FROZEN = ("--model_type=raw_pixels", "--model_type=imagenet_resnet50")


def _table_test(world, monkeypatch, runner, argv, want, setup, exit_code=2):
    if setup is not None:
        setup(world, monkeypatch)
    if runner == "train" and not any(a in FROZEN for a in argv):
        argv = GUARD + list(argv)
    before = listing(world)
    code, _, err = run(runner, [a.format(w=world) for a in argv])
    assert_one_error_line(code, err, want, exit_code)
    assert listing(world) == before


def _ids(cases):
    """"<runner>-<row>": stable across processes (pytest-xdist workers compare them)."""
    return [f"{getattr(c, 'values', c)[0]}-{i}" for i, c in enumerate(cases)]


def _add(rel, text="mine\n"):
    """setup: a user's file at ``rel`` inside the world."""
    def setup(w, _):
        (w / rel).parent.mkdir(parents=True, exist_ok=True)
        (w / rel).write_text(text)
    return setup


def _previous_manifest(folder, kind, *files):
    """setup: ``folder`` as a previous output of ``kind`` (its manifest), its ``files``."""
    def setup(w, _):
        from util.ownership import Manifest

        manifest = Manifest(w / folder, kind)
        manifest.start()
        for name in files:
            _png(manifest.add(name))
    return setup


def _needs(*packages):
    return pytest.mark.skipif(any(importlib.util.find_spec(p) is None for p in packages),
                              reason=f"needs {', '.join(packages)}")


DIGITS = ["--dataset=digitsood", "--category=3", "--net_width=0.125", "--num_epoch=1",
          "--num_batch=2", "--batch_size=16", "--detectors=kde", "--eval_epoch=0"]
EXPORT = "--export_dir={w}/export"
PATCH = "--export_dir={w}/patch_export"
ONNX = pytest.param  # rows that need the converter packages

# ------------------------------------------------------- 1. outputs that are not the command's own

OWNERSHIP = [
    # --model_dir: a user's folder with a run's folder names in it, with and without --force_init
    ("train", ["--model_dir={w}/userdir", *DIGITS], "is not a run directory", None),
    ("train", ["--model_dir={w}/userdir", "--force_init", *DIGITS], "is not a run directory",
     None),
    ("train", ["--model_dir={w}/photos", *DIGITS, "--export=false"], "holds holiday.png", None),
    # a finished run whose export/ holds a user's files: --reevaluate, --force_init
    ("train", ["--model_dir={w}/run", "--reevaluate", *DIGITS], "also holds my_notes.txt",
     lambda w, m: (_add("run/export/my_notes.txt")(w, m), _add("run/export/results.xlsx")(w, m))),
    ("train", ["--model_dir={w}/run", "--force_init", *DIGITS], "also holds my_notes.txt",
     _add("run/export/my_notes.txt")),
    # --reevaluate without a checkpoint would train from scratch over the only export
    ("train", ["--model_dir={w}/run", "--reevaluate", *DIGITS], "holds no checkpoint", None),
    # a run whose export/ is a user's folder; a run directory inside an export
    ("train", ["--model_dir={w}/run", "--force_init", *DIGITS], "is not a previous export",
     lambda w, m: (shutil.rmtree(w / "run" / "export"), _add("run/export/mine.txt")(w, m))),
    ("train", ["--model_dir={w}/export/run", *DIGITS], "is inside the export", None),
    # score.py: maps and explanations
    ("score", [PATCH, "{w}/imgs", "--maps_dir={w}/photos"], "not a previous folder of anomaly",
     None),
    ("score", [PATCH, "{w}/imgs", "--maps_dir={w}/patch_export/maps"], "is inside the export",
     None),
    ("score", [PATCH, "{w}/imgs", "--maps_dir={w}/maps"], "also holds holiday.png",
     lambda w, m: (_previous_manifest("maps", __import__("util.heatmaps").heatmaps.MAPS_KIND,
                                      "000000_x.png")(w, m),
                   shutil.copy(w / "photos" / "holiday.png", w / "maps"))),
    ("score", [EXPORT, "{w}/imgs", "--explain=ig", "--explain_dir={w}/photos"],
     "not a previous folder of explanations", None),
    ("score", [EXPORT, "{w}/imgs", "--explain=gradcam", "--explain_dir={w}/export/why"],
     "is inside the export", None),
    ("score", [EXPORT, "{w}/imgs", "--out={w}/export/scores.csv"], "is inside the export", None),
    # explain.py: the default folder and --out
    ("explain", ["{w}/run", "--out={w}/photos"], "not a previous folder of explanations", None),
    ("explain", ["{w}/run"], "not a previous folder of explanations", _add("run/explain/a.txt")),
    ("explain", ["{w}/run", "--out={w}/why"], "also holds mine.txt",
     lambda w, m: (_previous_manifest("why", __import__("util.heatmaps").heatmaps
                                      .EXPLANATIONS_KIND, "gradcam_00001_inlier.png")(w, m),
                   _add("why/mine.txt")(w, m))),
    # export.py: an export with a user's file in it, a conversion's record that is a user's
    ("export", ["{w}/run"], "also holds my_notes.txt", _add("run/export/my_notes.txt")),
    ("export", ["{w}/run", "--out={w}/export"], "also holds notes.txt",
     _add("export/notes.txt")),
    ("export", ["{w}/run", "--out={w}/export/sub"], "is inside the export", None),
    ONNX("export", ["{w}/run", "--format=onnx", "--out={w}/x"], "x.onnx.json exists and is not",
         _add("x.onnx.json", "{\"mine\": 1}"), marks=_needs("tf2onnx", "onnx", "onnxruntime")),
    ONNX("export", ["{w}/run", "--format=onnx", "--out={w}/x"], "x.onnx exists and is not",
         _add("x.onnx", "my model"), marks=_needs("tf2onnx", "onnx", "onnxruntime")),
    ONNX("export", ["{w}/run", "--format=openvino", "--out={w}/x"], "is not a previous openvino",
         _add("x_openvino/model.xml", "<mine/>"), marks=_needs("openvino")),
]


@pytest.mark.parametrize("runner, argv, want, setup", OWNERSHIP, ids=_ids(OWNERSHIP))
def test_outputs_that_are_not_the_commands_own_are_refused(world, monkeypatch, runner, argv,
                                                           want, setup):
    _table_test(world, monkeypatch, runner, argv, want, setup)


# ---------------------------------------------------------------- 2. failures known before work

LATE = [
    # the frozen baselines have no conv trunk: their export would fail after all the scoring
    ("train", ["--model_dir={w}/new", "--dataset=mvtec", "--root={w}/mvtec", "--category=widget",
               "--model_type=raw_pixels", "--head_dims=", "--aug_list=x", "--export",
               "--mvtec_image_size=16", "--patch_size=16", "--max_detector_train=50"],
     "has no convolutional trunk", None),
    ("train", ["--model_dir={w}/new", *DIGITS[:2], "--model_type=imagenet_resnet50",
               "--pretrained_weights={w}/weights.h5", "--export=true"],
     "has no convolutional trunk", None),
    ("export", ["{w}/raw_run"], "has no convolutional trunk", None),
    # too few training images left for a detector after the calibration hold-out
    ("train", ["--model_dir={w}/new", "--dataset=mvtec", "--root={w}/mvtec", "--category=widget",
               "--mvtec_mode=image", "--input_shape=16,16,3", "--calibration_fraction=0.99",
               "--detectors=kde,gde"], "leaving 1 to fit gde", None),
    ("train", ["--model_dir={w}/new", "--dataset=folder", "--root={w}/folder", "--category=a",
               "--calibration_fraction=0.9", "--detectors=gde"], "leaving 1 to fit gde", None),
    ("train", ["--model_dir={w}/new", *DIGITS[:2], "--detectors=kde,gde",
               "--calibration_fraction=0.999"], "leaving 1 to fit gde", None),
    ("train", ["--model_dir={w}/new", *DIGITS[:2], "--detectors=gde", "--max_detector_train=1"],
     "--max_detector_train=1 leaves 1", None),
    ("train", ["--model_dir={w}/new", "--dataset=image_dirs", "--normal_dir={w}/dirs/good",
               "--mvtec_mode=image", "--input_shape=16,16,3", "--calibration_fraction=0.95",
               "--detectors=gde,kde"],
     "leaving 1 to fit gde", None),
    ("train", ["--model_dir={w}/new", "--dataset=mvtec", "--root={w}/mvtec", "--category=widget",
               "--mvtec_image_size=16", "--patch_size=16", "--detectors=gde",
               "--max_detector_train=1"], "--max_detector_train=1", None),
]


@pytest.mark.parametrize("runner, argv, want, setup", LATE, ids=_ids(LATE))
def test_what_would_fail_after_the_work_is_refused_before_it(world, monkeypatch, runner, argv,
                                                             want, setup):
    _table_test(world, monkeypatch, runner, argv, want, setup)


# --------------------------------------------------------------------- 3. images that are too large

SIZES = [
    ("train", ["--model_dir={w}/new", "--dataset=folder", "--root={w}/folder_big",
               "--category=a", "--input_shape=16,16,3"], "huge.png (20000x20000", None),
    ("train", ["--model_dir={w}/new", "--dataset=mvtec", "--root={w}/mvtec", "--category=png16",
               "--mvtec_mode=image", "--input_shape=16,16,3"], "zz.png (14000x14000", None),
    ("train", ["--model_dir={w}/new", "--dataset=mvtec", "--root={w}/mvtec", "--category=tiff",
               "--mvtec_mode=image", "--input_shape=16,16,3"], "zz.tif (14000x14000", None),
    ("train", ["--model_dir={w}/new", "--dataset=mvtec", "--root={w}/mvtec", "--category=bmp",
               "--mvtec_mode=image", "--input_shape=16,16,3"], "zz.bmp (12000x12000", None),
    ("train", ["--model_dir={w}/new", "--dataset=folder", "--root={w}/folder", "--category=a",
               "--input_shape=16,16,3", "--max_image_pixels=50"],
     "above the limit of 50 pixels", None),
    ("train", ["--model_dir={w}/new", "--dataset=folder", "--root={w}/folder", "--category=a",
               "--max_image_pixels=0"], "--max_image_pixels=0 must be a positive", None),
    ("train", ["--model_dir={w}/new", *DIGITS, "--max_image_pixels=100000"],
     "--max_image_pixels=100000 is not used by this run", None),
    ("score", [EXPORT, "{w}/big"], "none of the 4 files can be scored", None),
    ("score", [EXPORT, "{w}/imgs", "--max_image_pixels=10"], "none of the 1 files can be scored",
     None),
    ("score", [EXPORT, "{w}/imgs", "--max_image_pixels=0"], "--max_image_pixels=0 must be a "
     "positive", None),
    ("score", [EXPORT, "{w}/imgs", "--max_image_pixels=1e9"], "invalid int value: '1e9'", None),
]


@pytest.mark.parametrize("runner, argv, want, setup", SIZES, ids=_ids(SIZES))
def test_images_above_the_size_limit_are_refused_before_decoding(world, monkeypatch, runner,
                                                                 argv, want, setup):
    _table_test(world, monkeypatch, runner, argv, want, setup)


# -------------------------------------------------------------- 4. values that mean nothing

NEW = "--model_dir={w}/new"
DIRS = ["--dataset=image_dirs", "--normal_dir={w}/dirs/good", "--abnormal_dir={w}/dirs/crack"]
VALUES = [
    ("score", [EXPORT, "{w}/imgs", "--threshold=nan"], "--threshold: nan is not a finite", None),
    ("score", [EXPORT, "{w}/imgs", "--threshold=-inf"], "--threshold: -inf is not a finite",
     None),
    ("score", [PATCH, "{w}/imgs", "--pixel_threshold=nan"], "--pixel_threshold: nan", None),
    ("score", [EXPORT, "{w}/imgs", "--target_fpr=nan"], "--target_fpr: nan", None),
    ("export", ["{w}/run", "--target_fpr=inf"], "--target_fpr: inf", None),
    ("export", ["{w}/run", "--calibration_fraction=nan"], "--calibration_fraction: nan", None),
    ("summarize", ["{w}/run", "--tol=nan"], "--tol: nan", None),
    ("train", [NEW, *DIGITS, "--learning_rate=nan"], "--learning_rate=nan must be a finite",
     None),
    ("train", [NEW, *DIGITS, "--weight_decay=inf"], "--weight_decay=inf must be a finite", None),
    ("train", [NEW, *DIGITS, "--calibration_fraction=nan"], "--calibration_fraction=nan", None),
    ("train", [NEW, *DIGITS, "--target_fpr=nan"], "--target_fpr=nan", None),
    ("train", [NEW, *DIGITS, "--outlier_ratio=nan"], "--outlier_ratio=nan", None),
    ("train", [NEW, *DIGITS, "--model_type=denoising", "--head_dims=", "--noise_std=nan"],
     "--noise_std=nan must be a finite", None),
    ("train", [NEW, *DIGITS, "--sched_type=step", "--sched_gamma=inf"],
     "--sched_gamma=inf must be a finite", None),
    ("train", [NEW, *DIGITS, "--sched_min_rate=nan"], "--sched_min_rate=nan", None),
    ("train", [NEW, *DIGITS, "--temperature=nan"], "--temperature=nan", None),
    ("train", [NEW, *DIRS, "--normal_test_fraction=nan"], "--normal_test_fraction=nan", None),
    # image_dirs: masks looked up in a folder of images
    ("train", [NEW, *DIRS, "--mask_dir={w}/dirs/crack"], "is also a folder of images "
     "(--abnormal_dir)", None),
    ("train", [NEW, *DIRS, "--mask_dir={w}/dirs/good"], "is also a folder of images "
     "(--normal_dir)", None),
    ("train", [NEW, *DIRS, "--mask_dir={w}/dirs"], "holds the masks of", None),
]


@pytest.mark.parametrize("runner, argv, want, setup", VALUES, ids=_ids(VALUES))
def test_values_that_mean_nothing_are_refused(world, monkeypatch, runner, argv, want, setup):
    _table_test(world, monkeypatch, runner, argv, want, setup)


# --------------------------------------------------------------------- 5. interrupts (Ctrl-C)

def _interrupt(module, name):
    """setup: ``module.name`` raises KeyboardInterrupt, as Ctrl-C there would."""
    def setup(_, monkeypatch):
        import importlib

        def stop(*args, **kwargs):
            raise KeyboardInterrupt
        monkeypatch.setattr(importlib.import_module(module), name, stop)
    return setup


INTERRUPTS = [
    ("train", [NEW, *DIGITS], "interrupted (Ctrl-C) before the run started",
     _interrupt("engine.experiment", "list_data")),
    ("train", [NEW, *DIGITS], "while loading the data and the model; nothing was kept",
     _interrupt("engine.experiment", "load_data")),
    ("score", [EXPORT, "{w}/imgs"], "score.py stopped; the CSV is written only at the end",
     _interrupt("script.score", "load_export")),
    ("export", ["{w}/run"], "export.py stopped; the export and its conversions",
     _interrupt("engine.run_loading", "load_run")),
    ("explain", ["{w}/run", "--out={w}/why"], "explain.py stopped",
     _interrupt("engine.run_loading", "load_run")),
    ("summarize", ["{w}/run", "--out={w}/summary"], "summarize.py stopped; its outputs are "
     "written whole", _interrupt("script.summarize", "load_runs")),
]


@pytest.mark.parametrize("runner, argv, want, setup", INTERRUPTS, ids=_ids(INTERRUPTS))
def test_ctrl_c_is_one_line_and_exit_130(world, monkeypatch, runner, argv, want, setup):
    _table_test(world, monkeypatch, runner, argv, want, setup, exit_code=130)


# ------------------------------------------- 6. outputs that know their inputs (and each other)

def _maps(folder="maps", *files):
    """setup: ``folder`` as a previous folder of anomaly maps holding ``files``."""
    from util.heatmaps import MAPS_KIND

    return _previous_manifest(folder, MAPS_KIND, *(files or ("000000_x.png", "000000_x_mask.png")))


def _copied_hparams(folder):
    """setup: a user's ``folder`` (a report, a plot) with a run's hparams.json copied in."""
    def setup(w, _):
        (w / folder / "stats").mkdir(parents=True, exist_ok=True)
        shutil.copy(w / "run" / "stats" / "hparams.json", w / folder / "stats")
    return setup


def _marked_run_without(rel):
    """setup: ``run`` marked (as a run writes its marker) with ``rel`` left out of its
    manifest, and a user's file at ``rel``."""
    def setup(w, m):
        from engine.run_files import FIXED_FILES, RUN_KIND
        from util.ownership import MANIFEST_NAME

        lines = [{"kind": RUN_KIND, "run_id": "0123abcd"}] + [
            {"file": f} for f in FIXED_FILES if f != rel]
        (w / "run" / MANIFEST_NAME).write_text("".join(json.dumps(r) + "\n" for r in lines))
        _add(rel, "my own plot\n")(w, m)
    return setup


def _held(folder):
    """setup: another process's lock on ``folder`` (util/runlock.py), held to the end of the
    test process."""
    def setup(w, _):
        import fcntl

        fd = os.open(w / folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        os.write(fd, b"pid 1 on elsewhere\n")
        fcntl.flock(fd, fcntl.LOCK_EX)
        _HELD.append(fd)
    return setup


_HELD = []
MVTEC = ["--dataset=mvtec", "--root={w}/mvtec", "--category=widget"]
APART = [
    # score.py: the maps folder is the folder scored, lies inside it, holds an input
    ("score", [PATCH, "{w}/maps", "--maps_dir={w}/maps"], "is input", _maps()),
    ("score", [PATCH, "{w}/imgs", "--maps_dir={w}/imgs/maps"], "lies inside input", None),
    ("score", [PATCH, "{w}/maps/000000_x.png", "--maps_dir={w}/maps"], "contains input",
     _maps()),
    ("score", [PATCH, "{w}/imgs", "{w}/photos", "--maps_dir={w}/photos/new"],
     "lies inside input", None),
    ("score", [EXPORT, "{w}/imgs", "--explain=ig", "--explain_dir={w}/imgs/why"],
     "lies inside input", None),
    ("score", [EXPORT, "{w}/imgs", "--out={w}/imgs/scores.png"], "lies inside input", None),
    # score.py: a maps folder is never an input; an output inside another output
    ("score", [PATCH, "{w}/maps", "--maps_dir={w}/maps2"], "is a folder of anomaly maps this "
     "command wrote", _maps()),
    ("score", [PATCH, "{w}/imgs", "--maps_dir={w}/new", "--out={w}/new/scores.csv"],
     "lies inside --maps_dir", None),
    ("score", [PATCH, "{w}/imgs", "--maps_dir={w}/new", "--out={w}/new/scores.csv"],
     "is inside the folder of anomaly maps", _maps("new")),
    ("score", [PATCH, "{w}/imgs", "--out={w}/maps/scores.csv"], "is inside the folder of "
     "anomaly maps", _maps()),
    ("score", [PATCH, "{w}/imgs", "--maps_dir={w}/maps/deeper"], "is inside the folder of "
     "anomaly maps", _maps()),
    # one process at a time writes a folder of maps or explanations
    ("score", [PATCH, "{w}/imgs", "--maps_dir={w}/maps"], "is in use by another process (pid 1 "
     "on elsewhere)", lambda w, m: (_maps()(w, m), _held("maps")(w, m))),
    ("explain", ["{w}/run", "--out={w}/why"], "is in use by another process",
     lambda w, m: (_previous_manifest("why", __import__("util.heatmaps").heatmaps
                                      .EXPLANATIONS_KIND, "gradcam_00001_inlier.png")(w, m),
                   _held("why")(w, m))),
    # export.py and explain.py: never inside what they read of the run, nor in a maps folder
    ("export", ["{w}/run", "--out={w}/run/stats/export"], "lies inside input", None),
    ("export", ["{w}/run", "--out={w}/maps/export"], "is inside the folder of anomaly maps",
     _maps()),
    ("explain", ["{w}/run", "--out={w}/run/stats/why"], "lies inside input", None),
    ("explain", ["{w}/run", "--out={w}/maps/why"], "is inside the folder of anomaly maps",
     _maps()),
    # a run: not a copied hparams.json, apart from its data, not inside a maps folder
    ("train", ["--model_dir={w}/userdir", *DIGITS], "no run marker", _copied_hparams("userdir")),
    ("train", ["--model_dir={w}/userdir", "--force_init", *DIGITS], "no run marker",
     _copied_hparams("userdir")),
    ("train", ["--model_dir={w}/photos", *DIGITS], "no run marker", _copied_hparams("photos")),
    ("train", ["--model_dir={w}/run", "--reevaluate", *DIGITS], "also holds plots/roc.png",
     _marked_run_without("run/plots/roc.png".removeprefix("run/"))),
    ("train", ["--model_dir={w}/mvtec/widget/train/good/run", *MVTEC, "--mvtec_image_size=16",
               "--patch_size=16"], "lies inside --root", None),
    ("train", ["--model_dir={w}/dirs/good", "--dataset=image_dirs", "--normal_dir={w}/dirs/good",
               "--abnormal_dir={w}/dirs/crack"], "is --normal_dir", None),
    ("train", ["--model_dir={w}/maps/run", *DIGITS], "is inside the folder of anomaly maps",
     _maps()),
    # the budget: bounded when the flags are checked; 0 under the inspector says what it means
    ("flags", ["--model_dir={w}/new", *MVTEC, "--preset=inspector", "--train_minutes=1e300"],
     "is more than a year", None),
    ("flags", ["--model_dir={w}/new", *MVTEC, "--preset=inspector", "--train_minutes=0"],
     "--train_minutes=0 turns off the clock of --preset=inspector", None),
    ("flags", ["--model_dir={w}/new", *DIGITS[:2], "--train_minutes=600000"],
     "is more than a year", None),
]


@pytest.mark.parametrize("runner, argv, want, setup", APART, ids=_ids(APART))
def test_outputs_stay_apart_from_inputs_and_from_each_other(world, monkeypatch, runner, argv,
                                                             want, setup):
    _table_test(world, monkeypatch, runner, argv, want, setup)


def test_enough_new_cases():
    tables = (OWNERSHIP, LATE, SIZES, VALUES, INTERRUPTS, APART)
    assert sum(len(t) for t in tables) >= 60 and min(len(t) for t in tables) >= 6


# ------------------------------------------------------------ what the rules keep and write

RAW = ["--dataset=digitsood", "--category=3", "--model_type=raw_pixels", "--head_dims=",
       "--aug_list=x", "--input_shape=16,16,3", "--detectors=kde", "--eval_epoch=0"]


def test_force_init_removes_only_the_runs_own_files(tmp_path):
    """--force_init starts a run over: its own files under ckpt/, logs/ and stats/ go (one
    evaluation's TensorBoard file is left, not two), a user's notes there stay."""
    run = tmp_path / "run"
    code, _, err = run_entry_point([f"--model_dir={run}", *RAW])
    assert code == 0, err
    for rel in ("stats/notes.txt", "logs/diary.txt", "logs/eval/mine.txt"):
        (run / rel).write_text("mine\n")
    code, _, err = run_entry_point([f"--model_dir={run}", *RAW, "--force_init"])
    assert code == 0, err
    for rel in ("stats/notes.txt", "logs/diary.txt", "logs/eval/mine.txt"):
        assert (run / rel).read_text() == "mine\n"
    assert len(list((run / "logs" / "eval").glob("events.out.tfevents.*"))) == 1
    assert json.loads((run / "stats" / "summary.json").read_text())["pool.kde"] > 50


def test_a_run_is_marked_and_a_run_from_before_the_marker_still_reevaluates(tmp_path):
    """A run writes its marker (its id, the files it writes) before anything else; a run of
    an older version (no marker, a summary) re-evaluates as before and gets one, a user's
    file in it stays. A copied hparams.json is no run; beside a checkpoint index it is."""
    from engine.run_files import _is_run, legacy_run, run_marker
    from util.ownership import MANIFEST_NAME, manifest_files

    run = tmp_path / "run"
    code, _, err = run_entry_point([f"--model_dir={run}", *RAW])
    assert code == 0, err
    first = run_marker(run)
    assert len(first["run_id"]) == 32 and not legacy_run(run)
    assert {"stats/hparams.json", "stats/summary.json", "plots/roc.png"} <= manifest_files(run)
    (run / MANIFEST_NAME).unlink()  # as a run of an older version left its directory
    assert legacy_run(run) and _is_run(run)
    (run / "plots" / "mine.txt").write_text("mine\n")
    code, _, err = run_entry_point([f"--model_dir={run}", *RAW, "--reevaluate"])
    assert code == 0, err
    assert run_marker(run)["run_id"] != first["run_id"]
    assert (run / "plots" / "mine.txt").read_text() == "mine\n"
    report = tmp_path / "report"
    (report / "stats").mkdir(parents=True)
    shutil.copy(run / "stats" / "hparams.json", report / "stats")
    _png(report / "plots" / "roc.png")
    assert not _is_run(report)
    (report / "ckpt").mkdir()
    (report / "ckpt" / "checkpoint").write_text('model_checkpoint_path: "ckpt-1"\n')
    assert legacy_run(report)


def test_a_failing_later_step_keeps_the_results_and_names_what_is_missing(tmp_path,
                                                                          monkeypatch):
    """The ROC plot fails (a full disk): summary.json and scores.npz are written, the score
    histograms too, and one line says what was not written; exit status 1."""
    import engine.outputs

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(engine.outputs, "plot_roc", full_disk)
    run = tmp_path / "run"
    code, _, err = run_entry_point([f"--model_dir={run}", *RAW])
    assert_one_error_line(code, err, "not written: the ROC plot (OSError: [Errno 28] No space",
                          exit_code=1)
    summary = json.loads((run / "stats" / "summary.json").read_text())
    assert summary["metrics"]["pool.kde"]["image_AUROC"] == summary["pool.kde"] > 50
    assert (run / "stats" / "scores.npz").is_file() and (run / "plots" / "score_hist.png").is_file()
    assert not (run / "plots" / "roc.png").exists()


@pytest.mark.slow
def test_raw_pixel_mvtec_baseline_writes_its_summary(tmp_path):
    """script/run_mvtec.sh raw_pixels (docs/mvtec.md) on a tiny tree: the frozen baseline
    exports nothing by default, so its scoring ends in summary.json with its metrics."""
    make_category(str(tmp_path / "DIR" / "widget"), n_train=4, n_good=2, n_defect=1, size=32)
    run = tmp_path / "run"
    code, _, err = run_entry_point([
        "--model_type=raw_pixels", "--num_epoch=0", "--head_dims=", "--aug_list=x",
        "--detectors=kde,gde", "--dataset=mvtec", f"--root={tmp_path / 'DIR'}",
        "--category=widget", "--mvtec_mode=patch", "--mvtec_image_size=32", "--patch_size=16",
        "--patch_stride=4", "--eval_epoch=0", f"--model_dir={run}"])
    assert code == 0, err
    summary = json.loads((run / "stats" / "summary.json").read_text())
    assert summary["export"] is None and not (run / "export").exists()
    for key in ("pool.kde", "pool.gde"):
        assert summary["metrics"][key]["image_AUROC"] == summary[key]
        assert 0 < summary[f"{key}.pixel_auroc"] <= 100
    assert (run / "heatmaps" / "maps.npz").is_file()


def test_manifest_folders_replace_only_what_they_list(tmp_path):
    """A folder of maps is claimed again only while it holds nothing but its manifest's
    files; starting it again removes exactly those."""
    from util.errors import ConfigError
    from util.heatmaps import EXPLANATIONS_KIND, MAPS_KIND
    from util.ownership import Manifest, claim_output

    maps = claim_output(tmp_path / "maps", MAPS_KIND, "--maps_dir")
    first = Manifest(maps, MAPS_KIND)
    first.start()
    _png(first.add("000000_a.png"))
    _png(first.add("000001_b.png"))
    claim_output(maps, MAPS_KIND, "--maps_dir")  # its own previous output
    with pytest.raises(ConfigError, match="not a previous folder of explanations"):
        claim_output(maps, EXPLANATIONS_KIND, "--explain_dir")
    Manifest(maps, MAPS_KIND).start()
    assert sorted(p.name for p in maps.iterdir()) == [".droc_outputs.jsonl"]
    (maps / "holiday.png").write_bytes(b"mine")
    with pytest.raises(ConfigError, match="also holds holiday.png"):
        claim_output(maps, MAPS_KIND, "--maps_dir")


def test_replacing_an_export_removes_its_conversions(tmp_path):
    """A conversion's record names the export's fingerprint and its files' hashes: a changed
    export or file no longer passes for current; writing an export that computes the same
    keeps the conversions beside it, one that computes something else removes them (a
    user's file beside them stays)."""
    import tensorflow as tf

    from deploy.convert import check_conversion
    from deploy.export import _write_export
    from deploy.export_format import META_NAME, export_fingerprint
    from util.errors import ConfigError

    def build(meta_json, assets):
        module = tf.Module()
        module.v = tf.Variable(1.0)
        module.files = [tf.saved_model.Asset(str(a)) for a in assets]
        return module, {}

    def write(threshold):
        _write_export(export, {"score_key": "pool.kde", "kind": "image", "calibration": {
            "threshold": threshold, "target_fpr": 0.01}}, build,
            {"image": np.arange(5.0)}, log=lambda m: None)

    def convert():
        onnx.write_bytes(b"onnx model")
        (tmp_path / "export.onnx.json").write_text(json.dumps({
            "format": "droc-onnx",
            "files": {"export.onnx": hashlib.sha256(b"onnx model").hexdigest()},
            "converted_from": {"path": str(export), "fingerprint": export_fingerprint(export)}}))

    export, onnx = tmp_path / "export", tmp_path / "export.onnx"
    write(0.5)
    convert()
    (tmp_path / "export.onnx.txt").write_text("mine\n")
    assert check_conversion(onnx, "onnx")["format"] == "droc-onnx"
    onnx.write_bytes(b"another model")
    with pytest.raises(ConfigError, match="is not the file its record"):
        check_conversion(onnx, "onnx")
    onnx.write_bytes(b"onnx model")
    write(0.5)  # the same export again: its conversion is still current
    assert check_conversion(onnx, "onnx")["format"] == "droc-onnx"
    meta = json.loads((export / "assets" / META_NAME).read_text())
    (export / "assets" / META_NAME).write_text(json.dumps(dict(meta, detector="gde")))
    with pytest.raises(ConfigError, match="has changed since"):
        check_conversion(onnx, "onnx")
    write(0.5)
    (tmp_path / "export_openvino").mkdir()
    (tmp_path / "export_openvino" / "droc_export.json").write_text('{"format": "droc-openvino"}')
    write(0.7)  # another threshold: the conversions of the old export go
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "export.onnx.txt"]


def test_atomic_dir_sweeps_only_its_own_stale_temporaries(tmp_path):
    """What a killed export left (its temporary directory, its previous export moved
    aside) is swept on the next one; a live process's, another host's and a user's
    look-alike stay."""
    from util.atomic import _host_tag, atomic_dir, sweep_stale_dirs

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True)
    dead, host = int(done.stdout), _host_tag()
    stale = tmp_path / f".export.{host}-{dead}.k3j_9x.tmp"
    live = tmp_path / f".export.{host}-{os.getpid()}.abcd12.tmp"
    elsewhere = tmp_path / f".export.otherhost-{dead}.abcd12.tmp"
    look_alike = tmp_path / ".export.notes.tmp"
    for folder in (stale, live, elsewhere, look_alike):
        folder.mkdir()
    old = tmp_path / f".export.{host}-{dead}.old"
    old.mkdir()
    (old / "saved_model.pb").write_text("previous")
    sweep_stale_dirs(tmp_path / "export")  # the export itself is gone: the old one is back
    assert (tmp_path / "export" / "saved_model.pb").read_text() == "previous"
    with atomic_dir(tmp_path / "export") as tmp:
        (tmp / "saved_model.pb").write_text("new")
    assert (tmp_path / "export" / "saved_model.pb").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["export", live.name, elsewhere.name, look_alike.name])


def test_mask_files_are_not_images_and_shared_mask_folders_warn(tmp_path, caplog):
    from data.image_dirs import DirLayout, list_layout

    for folder in ("a/crack", "b/crack"):
        _png(tmp_path / folder / "p0.png", 10)
        _png(tmp_path / folder / "p0_mask.png", 255)
    _png(tmp_path / "masks" / "crack" / "p0_mask.png", 255)
    for i in range(3):
        _png(tmp_path / "good" / f"g{i}.png", 100)
    layout = DirLayout(normal=(str(tmp_path / "good"),),
                       abnormal=(str(tmp_path / "a" / "crack"), str(tmp_path / "b" / "crack")),
                       masks=(str(tmp_path / "masks"),))
    with caplog.at_level("WARNING"):
        _, test, masks = list_layout(layout)
    abnormal = [Path(p).name for p, defect in test if defect != "good"]
    assert abnormal == ["p0.png", "p0.png"]
    assert [Path(m).name for m in masks if m] == ["p0_mask.png", "p0_mask.png"]
    shared = [r for r in caplog.records if "share the name 'crack'" in r.getMessage()]
    assert len(shared) == 1


@pytest.mark.slow
def test_no_tensorflow_line_before_the_error(tmp_path):
    """A category found unknown only once the data loads (TensorFlow is imported by then)
    prints the error line alone, even with TensorFlow's logging on."""
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dataset=digitsood", "--category=10",
                           f"--model_dir={tmp_path / 'run'}"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="0", PYTHONPATH=str(ROOT)))
    assert_one_error_line(proc.returncode, proc.stderr, "unknown category '10'")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------- score.py's maps folder: one writer, kills leave no trap

#: score.py run as its own process, its SavedModel replaced by a stand-in (an anomaly map of
#: ones per image, no TensorFlow) so that a test needs no trained export. While the file
#: PAUSE exists, the process holds inside its first write of a map: the temporary file
#: exists, the rename has not happened yet.
SCORE_PROCESS = r"""
import os, sys, time, types
import numpy as np
sys.modules["tensorflow"] = types.SimpleNamespace(constant=np.asarray)
import script.score as score
from util.atomic import atomic_path

PAUSE = sys.argv[1]

class Tensor:
    def __init__(self, value):
        self.value = value

    def numpy(self):
        return self.value

def serve(images):
    n = len(images)
    return {"raw_score": Tensor(np.arange(n, dtype=np.float32)),
            "normalized_score": Tensor(np.zeros(n, np.float32)),
            "anomaly_map": Tensor(np.ones((n, 8, 8), np.float32))}

score.load_export = lambda export_dir: types.SimpleNamespace(
    signatures={"serving_default": serve})
write = score.write_png_atomic

def held_write(path, array):
    with atomic_path(path) as tmp:
        tmp.write_bytes(b"half a png")
        while os.path.exists(PAUSE):
            time.sleep(0.05)
    write(path, array)

score.write_png_atomic = held_write
sys.exit(score.main(sys.argv[2:]))
"""


def _score_process(world, maps, pause, *extra):
    script = world.parent / "score_process.py"
    script.write_text(SCORE_PROCESS)
    return subprocess.Popen(
        [sys.executable, str(script), str(pause), f"--export_dir={world / 'patch_export'}",
         str(world / "folder"), f"--maps_dir={maps}", f"--out={world.parent / 'scores.csv'}",
         "--batch_size=2", *extra],
        cwd=world, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3"))


def _wait_for_temporary(maps, proc, timeout=120):
    """Waits until ``proc`` holds inside a write in ``maps`` (its temporary file exists)."""
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        if maps.is_dir() and any(p.name.endswith(".tmp.png") for p in maps.iterdir()):
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("the scoring process never started writing its maps")


def _wait_for_listed(maps, n_files, proc, timeout=120):
    """Waits until ``proc``'s manifest in ``maps`` lists ``n_files`` files."""
    import time

    from util.ownership import manifest_files

    deadline = time.time() + timeout
    while len(manifest_files(maps)) < n_files:
        assert time.time() < deadline and proc.poll() is None, "the manifest stayed short"
        time.sleep(0.05)


def _complete_maps_folder(maps, n_images):
    """The folder holds its manifest and exactly the two PNGs per image it lists."""
    from util.ownership import MANIFEST_NAME, manifest_files

    listed = manifest_files(maps)
    assert len(listed) == 2 * n_images
    assert sorted(p.name for p in maps.iterdir()) == sorted(listed | {MANIFEST_NAME})


def test_a_second_score_into_a_folder_in_use_is_refused_and_changes_nothing(world):
    """Two score.py processes on one --maps_dir: the second, started while the first writes
    its maps, is refused with one error line and writes nothing; the first completes its
    folder, and a third run into it afterwards is not refused."""
    maps, pause = world / "maps", world.parent / "pause"
    (world / "notes.txt").write_text("mine\n")  # a user's file beside the outputs
    pause.touch()
    first = _score_process(world, maps, pause)
    try:
        _wait_for_temporary(maps, first)
        _wait_for_listed(maps, 2 * 8, first)  # its other maps queued behind the held one
        before = listing(world)
        second = _score_process(world, maps, world.parent / "no_pause")
        _, err = second.communicate(timeout=300)
        assert_one_error_line(second.returncode, err, f"--maps_dir={maps} is in use by another "
                              "process")
        assert listing(world) == before
    finally:
        pause.unlink()
        _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    _complete_maps_folder(maps, 8)
    third = _score_process(world, maps, pause)
    _, err = third.communicate(timeout=300)
    assert third.returncode == 0, err
    _complete_maps_folder(maps, 8)
    assert (world / "notes.txt").read_text() == "mine\n"


def test_a_score_killed_while_writing_maps_leaves_no_trap(world):
    """SIGTERM while score.py writes a map leaves its temporary file and lock: the next run
    into the folder takes them as its own, removes them and completes the folder."""
    import signal

    maps, pause = world / "maps", world.parent / "pause"
    pause.touch()
    first = _score_process(world, maps, pause)
    _wait_for_temporary(maps, first)
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=60)
    assert first.returncode == -signal.SIGTERM
    assert any(p.name.endswith(".tmp.png") for p in maps.iterdir())  # what the kill left
    pause.unlink()
    again = _score_process(world, maps, pause)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert "scored 8" in out
    _complete_maps_folder(maps, 8)


def test_a_map_threshold_at_the_float_limits_draws_its_maps(tmp_path):
    """--pixel_threshold=-1e30 (every pixel flagged) or near the largest float: the colour
    scale of the maps keeps a width, the PNG is written."""
    from script.score import map_figure

    meta = {"score_key": "map.membank", "pixel_calibration": {"threshold": 0.5,
                                                              "norm_min": 0.0}}
    image = np.full((8, 8, 3), 100, np.uint8)
    for i, threshold in enumerate((-1e30, 1e30, -1.7e308, 1.7e308, 0.0)):
        figure = map_figure(meta, threshold, tmp_path / "none.npz")
        pixel = np.linspace(-1, 1, 64, dtype=np.float32).reshape(8, 8)
        figure.write(tmp_path / f"{i}.png", image, pixel, pixel.astype(float) > threshold, "caption")
        figure.close()
        assert Image.open(tmp_path / f"{i}.png").size[0] > 8


def test_a_maps_folder_inside_the_scored_folder_is_not_scored(world):
    """A previous folder of maps inside the folder scored is recognised by its manifest and
    skipped with a note: its PNGs are not parts (8 photos give 8 rows, not 10)."""
    _maps("folder/train/a/old_maps")(world, None)
    proc = _score_process(world, world / "maps", world.parent / "no_pause")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "scored 8, flagged" in out and "skipped 0" in out
    assert "note: not scoring" in err and "old_maps" in err and "warning" not in err
