"""The classes of fault left from tests/test_safety.py, with its contract: the exit code,
exactly one ``error:`` line holding the expected text (the last line), no traceback, and a
hashed listing of every file that is the same before and after, user files inside the
locations.

* the benchmark's inspect section: every run's flags are checked before the first run,
  and ``--out`` follows the ownership rule (util/ownership.py);
* a resumed or re-evaluated run that is not the run it says: every flag that shapes the
  network (engine/resume.py's table) is compared with the recorded one, before anything
  is written;
* messages: broken symlinks and loops warned about once on plain ``warning:`` lines, a
  preset's value blamed on the preset, small images counted in pixels, the calibration
  hold-out described as it happened, and score.py's error before TensorFlow starts.

The rows run in this process and are refused before any model is built; the recorded
runs are configurations (``stats/hparams.json`` beside a summary), not trained networks.
"""

import json
import os
import re
import subprocess
import sys

import pytest

from engine.config import resolve_config
from tests.entry_point import ROOT
from tests.mvtec_fixture import make_category
from tests import test_safety
from tests.test_safety import (GUARD, _fake_export, _png, assert_one_error_line, copy_world,
                               run)

DIGITS = ["--dataset=digitsood", "--category=3", "--num_batch=2", "--batch_size=16",
          "--detectors=kde"]
#: a map run of the inspector's kind on the generated category, small
MAP = ["--dataset=mvtec_folder", "--root={w}/cats/widget", "--model_type=cutpaste_map",
       "--mvtec_mode=map", "--detectors=membank", "--net_type=ResNet10", "--net_width=0.125",
       "--batch_size=2"]
#: a budget run of the inspector preset on the generated category, small
BUDGET = ["--preset=inspector", "--dataset=mvtec_folder", "--root={w}/cats/widget",
          "--mvtec_image_size=96", "--net_width=0.125", "--batch_size=2"]
#: a line of absl's or TensorFlow's logging (``W1207 12:00:00.000 ...``, ``I0000 00:00...``)
LOG_LINE = re.compile(r"^[IWEF]\d{4} ")


def listing(root):
    """tests/test_safety.py's listing, a symlink (broken or looping) by its target."""
    links = {os.path.relpath(os.path.join(d, n), root): "link to " + os.readlink(os.path.join(d, n))
             for d, dirs, files in os.walk(root) for n in dirs + files
             if os.path.islink(os.path.join(d, n))}
    hidden = {}
    for rel in links:  # moved aside while the contents are hashed
        hidden[rel] = os.readlink(os.path.join(root, rel))
        os.unlink(os.path.join(root, rel))
    try:
        return {**test_safety.listing(root), **links}
    finally:
        for rel, target in hidden.items():
            os.symlink(target, os.path.join(root, rel))


def _recorded_run(folder, argv):
    """``folder`` as a finished run recorded with the command line ``argv`` (its
    stats/hparams.json as the entry point resolves it, a summary, no checkpoint)."""
    from engine.flags import parse_run_args

    values, explicit = parse_run_args([*argv, f"--model_dir={folder}"])
    (folder / "stats").mkdir(parents=True)
    (folder / "stats" / "hparams.json").write_text(json.dumps(resolve_config(values, explicit)))
    (folder / "stats" / "summary.json").write_text(json.dumps({"pool.kde": 90.0}))
    _png(folder / "plots" / "roc.png")


def _make_world(w):
    make_category(str(w / "cats" / "widget"), n_train=4, n_good=1, n_defect=1, size=32)
    _recorded_run(w / "run", GUARD + DIGITS)
    _recorded_run(w / "map_run", [a.format(w=w) for a in MAP + ["--mvtec_image_size=96"]])
    _recorded_run(w / "budget_run", [a.format(w=w) for a in BUDGET])
    (w / "notes").mkdir()
    (w / "notes" / "mine.txt").write_text("a user's notes\n")
    # a category whose training folder holds a broken symlink and a loop only
    links = w / "links" / "train" / "good"
    links.mkdir(parents=True)
    os.symlink("gone.png", links / "moved.png")
    os.symlink("loop.png", links / "loop.png")
    _png(w / "links" / "test" / "good" / "t.png", size=32)
    _png(w / "small" / "part.png", size=8)
    (w / "unreadable").mkdir()
    for name in ("a.png", "b.jpg"):
        (w / "unreadable" / name).write_text("not an image\n")
    _fake_export(w / "export")
    return w


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return _make_world(tmp_path_factory.mktemp("safety_more") / "world")


@pytest.fixture
def world(template, tmp_path, monkeypatch):
    return copy_world(template, tmp_path, monkeypatch)


def _ids(cases):
    return [f"{c[0]}-{i}" for i, c in enumerate(cases)]


def _table_test(world, runner, argv, want, also=(), absent=(), exit_code=2):
    before = listing(world)
    code, _, err = run(runner, [a.format(w=world) for a in argv])
    assert_one_error_line(code, err, want, exit_code)
    for text in also:
        assert len(re.findall(re.escape(text), err)) == 1, (text, err)
    for text in absent:
        assert text not in err, (text, err)
    assert not [line for line in err.splitlines() if LOG_LINE.match(line)], err
    assert listing(world) == before


# ------------------------------------------------------ 1. the benchmark's inspect section

INSPECT = ["--sections=inspect", "--root={w}/cats", "--categories=widget"]
BENCHMARK = [
    # a bad flag for every run, or one the entry point does not know, or a bad preset
    ("benchmark", [*INSPECT, "--inspect_flags=--mvtec_image_size=64", "--out={w}/b"],
     "the inspector run of widget (seed 0) would be refused: --mvtec_mode=map: "
     "--mvtec_image_size=64 must be larger"),
    ("benchmark", [*INSPECT, "--inspect_flags=--train_minutes=1e300", "--out={w}/b"],
     "would be refused: --train_minutes=1e+300 is more than a year"),
    ("benchmark", [*INSPECT, "--inspect_flags=--no_such_flag=1", "--out={w}/b"],
     "--inspect_flags: Unknown command line flag 'no_such_flag'"),
    ("benchmark", [*INSPECT, "--inspect_flags=--net_width=wide", "--out={w}/b"],
     "--inspect_flags: flag --net_width=wide"),
    ("benchmark", [*INSPECT, "--inspect_preset=inspecter", "--out={w}/b"],
     "--preset=inspecter is unknown"),
    ("benchmark", [*INSPECT, "--inspect_preset=smoke",
                   "--inspect_flags=--model_type=imagenet_resnet50", "--out={w}/b"],
     "--inspect_flags or --inspect_preset: the inspector run of widget (seed 0) would be "
     "refused: --model_type=imagenet_resnet50 needs --pretrained_weights"),
    # a later seed's run is checked before the first one starts
    ("benchmark", [*INSPECT, "--inspect_seeds=0,2147483648", "--out={w}/b"],
     "(seed 2147483648) would be refused: --seed=2147483648 must be at most"),
    # a flag the section sets for each run itself
    ("benchmark", [*INSPECT, "--inspect_flags=--seed=3", "--out={w}/b"], "sets --seed, which "
     "the section sets"),
    ("benchmark", [*INSPECT, "--inspect_flags=--model_dir={w}/notes", "--out={w}/b"],
     "sets --model_dir"),
    # --out: a user's folder, a previous output holding a user's file
    ("benchmark", [*INSPECT, "--out={w}/notes"], "is not a previous benchmark output folder"),
    ("benchmark", [*INSPECT, "--out={w}/run"], "is not a previous benchmark output folder"),
    ("benchmark", ["--sections=detectors", "--out={w}/notes"],
     "is not a previous benchmark output folder"),
    # --out inside the categories it reads (its runs would become categories' folders)
    ("benchmark", [*INSPECT, "--out={w}/cats/b"], "cats/b lies inside --root="),
]


def _no_work(*args, **kwargs):
    raise AssertionError("the benchmark started work that its checks should have refused")


@pytest.fixture
def no_benchmark_work(monkeypatch):
    """A row whose refusal does not come fails at once instead of training runs."""
    import bench.inspect
    import bench.runner

    monkeypatch.setattr(bench.inspect, "run", _no_work)
    monkeypatch.setattr(bench.runner, "machine_info", _no_work)


@pytest.mark.parametrize("runner, argv, want", BENCHMARK, ids=_ids(BENCHMARK))
def test_the_benchmark_refuses_before_any_work(world, no_benchmark_work, runner, argv, want):
    _table_test(world, runner, argv, want)


def test_a_previous_benchmark_folder_is_reused_and_one_with_a_users_file_refused(
        world, no_benchmark_work):
    """The benchmark's own folder (its marker, or its tables from before the marker) passes
    the checks; a user's file inside it is refused; the checks write nothing."""
    from bench.runner import BENCHMARK_KIND, parse_args, validate_args
    from util.ownership import Manifest

    Manifest(world / "b", BENCHMARK_KIND).start()
    (world / "b" / "inspect_runs" / "widget").mkdir(parents=True)
    (world / "b" / "inspect.md").write_text("| category | seed |\n")
    (world / "old").mkdir()
    (world / "old" / "benchmark.json").write_text('{\n  "machine": {}}')
    (world / "old" / "quality_runs").mkdir()
    before = listing(world)
    for out in ("b", "old", "new"):
        validate_args(parse_args([*[a.format(w=world) for a in INSPECT], f"--out={world / out}"]))
    assert listing(world) == before
    (world / "b" / "mine.txt").write_text("mine\n")
    _table_test(world, "benchmark", [*INSPECT, "--out={w}/b"], "also holds mine.txt")


# ------------------------------------------ 2. a resumed or re-evaluated run is the run it says

RESUME = [
    # what the network sees: --image_norm on --reevaluate, the image size of a map run
    ("train", ["--model_dir={w}/run", "--reevaluate", *GUARD, *DIGITS, "--image_norm=standardize"],
     "--image_norm=standardize (recorded none), which sets what the network sees"),
    ("train", ["--model_dir={w}/map_run", *MAP, "--mvtec_image_size=128"],
     "--mvtec_image_size=128 (recorded 96"),
    ("train", ["--model_dir={w}/map_run", "--reevaluate", *MAP, "--mvtec_image_size=128"],
     "--mvtec_image_size=128 (recorded 96"),
    # what the network is: a map run's stages, its neighbourhood, its variant
    ("train", ["--model_dir={w}/map_run", *MAP, "--mvtec_image_size=96", "--map_stages=2"],
     "--map_stages=2 (recorded 2,3), which sets what the network is"),
    ("train", ["--model_dir={w}/map_run", *MAP, "--mvtec_image_size=96", "--map_neighbourhood=1"],
     "--map_neighbourhood=1 (recorded 3"),
    ("train", ["--model_dir={w}/map_run", *MAP, "--mvtec_image_size=96",
               "--cutpaste_variant=scar"], "--cutpaste_variant=scar (recorded 3way"),
    # how it is trained: the budget's plan, the schedule
    ("train", ["--model_dir={w}/budget_run", *BUDGET, "--train_minutes=0.05"],
     "--train_minutes=0.05 (recorded 15.0), which sets how the network is trained"),
    ("train", ["--model_dir={w}/run", *GUARD, *DIGITS, "--sched_type=halfcos"],
     "--sched_type=halfcos (recorded cos"),
]


@pytest.mark.parametrize("runner, argv, want", RESUME, ids=_ids(RESUME))
def test_a_run_resumed_with_another_network_flag_is_refused(world, runner, argv, want):
    _table_test(world, runner, argv, want)


def test_a_stage_two_flag_may_change(world):
    """A flag that only changes the scoring after training is not compared: the finished
    run reports its stored result (exit 0) and writes nothing but its lock."""
    before = listing(world)
    code, out, err = run("train", [a.format(w=world) for a in [
        "--model_dir={w}/budget_run", *BUDGET, "--detectors=membank,gde", "--target_fpr=0.1",
        "--bank_size=64"]])
    assert code == 0, err
    assert "finished already" in out
    after = listing(world)
    after.pop("budget_run/.lock")  # the run's lock, taken while it read its result
    assert after == before


def test_every_flag_is_compared_on_resume_or_may_change():
    """Each flag of the table is classified once: a new flag must say whether a resumed
    run may change it."""
    from engine.flags import FLAG_DEFAULTS
    from engine.resume import FREE_FLAGS, SHAPING_FLAGS

    assert not set(SHAPING_FLAGS) & set(FREE_FLAGS)
    assert set(SHAPING_FLAGS) | set(FREE_FLAGS) == set(FLAG_DEFAULTS)
    for flag in ("image_norm", "mvtec_image_size", "patch_size", "input_shape", "model_type",
                 "net_type", "net_width", "map_stages", "train_minutes"):
        assert flag in SHAPING_FLAGS
    for flag in ("detectors", "calibration_fraction", "target_fpr", "export_detector"):
        assert flag in FREE_FLAGS


# ------------------------------------------------------------------------------ 3. messages

MESSAGES = [
    # a broken symlink and a loop in train/good: one plain warning each, then the refusal
    ("train", ["--dataset=mvtec_folder", "--root={w}/links", "--model_dir={w}/new", *GUARD],
     "train/good has no images", ["moved.png: broken symlink (its target gone.png does not exist)",
                            "loop.png: symlink loop"], ()),
    # the inspector on data without maps: the preset is named, not its detector
    ("flags", ["--preset=inspector", "--dataset=digitsood", "--model_dir={w}/new"],
     "--preset=inspector does not fit this run: the preset sets --mvtec_mode=map", (),
     ("--detectors=membank",)),
    ("flags", ["--preset=inspector", "--model_dir={w}/new"],
     "not to --dataset=cifar10ood", (), ("--detectors",)),
    # a value the user gave is still blamed on the user
    ("flags", ["--preset=inspector", "--dataset=mvtec_folder", "--root={w}/cats/widget",
               "--mvtec_image_size=64", "--model_dir={w}/new"],
     "error: --mvtec_mode=map: --mvtec_image_size=64", (), ("--preset",)),
    # a small image above a small limit, in pixels
    ("score", ["--export_dir={w}/export", "{w}/small", "--max_image_pixels=50",
               "--out={w}/s.csv"], "none of the 1 files can be scored",
     ["8x8 = 64 pixels, above the limit of 50 pixels"], ("megapixels",)),
]


@pytest.mark.parametrize("runner, argv, want, also, absent", MESSAGES, ids=_ids(MESSAGES))
def test_messages_say_what_happened(world, runner, argv, want, also, absent):
    _table_test(world, runner, argv, want, also, absent)


def test_a_large_image_still_gives_its_megapixels():
    from data.image_io import pixel_count

    assert pixel_count(20_000 * 20_000) == "400000000 pixels (400.0 megapixels)"
    assert pixel_count(64 * 64) == "4096 pixels"


@pytest.mark.parametrize("n_train, fraction, want", [
    (2, 0.2, "--calibration_fraction=0.2 holds out no image of the 2 training images (0.2 x 2 "
             "rounds to 0"),
    (1, 0.9, "--calibration_fraction=0.9 holds out no image of the 1 training image (0.9 x 1 "
             "rounds to 1, and one image stays in the fit)"),
    (40, 0.0, "--calibration_fraction=0 holds out no image:"),
])
def test_the_calibration_warning_says_why_no_image_was_held_out(n_train, fraction, want):
    """One or two training images under a preset's fraction of 0.2: the warning names
    the fraction asked for, not 0."""
    import numpy as np

    from detect.evaluation import Evaluation
    from engine.outputs import calibrate_all

    ev = Evaluation(results={}, test_scores={}, calib_scores={"map.membank": np.ones(2)},
                    detectors={}, labels=np.zeros(0), ids=[], n_calibration=0,
                    n_train=n_train, calibration_fraction=fraction)
    said = []
    calibrate_all(ev, 0.05, log=said.append)
    assert len(said) == 1 and said[0].startswith("warning: ") and want in said[0], said
    assert fraction == 0 or "--calibration_fraction=0 " not in said[0]


def test_score_judges_the_files_before_tensorflow_starts(world):
    """No file readable: the one error line, and nothing of TensorFlow's start-up before
    it (its logging fully on), nothing written."""
    before = listing(world)
    proc = subprocess.run([sys.executable, str(ROOT / "script" / "score.py"),
                           f"--export_dir={world / 'export'}", str(world / "unreadable"),
                           f"--out={world / 'scores.csv'}"],
                          capture_output=True, text=True, cwd=world, timeout=120,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="0", PYTHONPATH=str(ROOT)))
    assert_one_error_line(proc.returncode, proc.stderr, "none of the 2 files could be read")
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert [line.split(":")[0] for line in lines] == ["warning", "warning", "error"], lines
    assert listing(world) == before
