"""Bad input to every script: exit 2, exactly one `error:` line, no traceback, nothing written.

The table runs each script's ``main(argv)`` in this process on generated inputs: a
fake run directory (stats/hparams.json only), a fake export (its metadata and
non-empty SavedModel files) and generated score and summary files; every case is
refused before anything is loaded, so none needs TensorFlow. For each case the
tree under ``tmp_path`` is listed before and after (names, sizes, mtimes) and must
not change. A few rows also run through the real scripts in fresh interpreters
(argparse's usage block and TensorFlow's log lines would show there).
"""

import contextlib
import io
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def snapshot(root):
    """{relative path: (is dir, size, mtime_ns)} of everything under ``root``."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            out[os.path.relpath(path, root)] = (stat.S_ISDIR(st.st_mode), st.st_size,
                                                 st.st_mtime_ns)
    return out


def call_main(module, argv):
    """(exit code, stdout, stderr) of ``module.main(argv)`` run in this process: a script's
    name (``score``) or a dotted module (``bench.mvtec``)."""
    import importlib

    main = importlib.import_module(module if "." in module else f"script.{module}").main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse --help and the like; never an error here
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def assert_one_error_line(code, stderr, want):
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2, (code, stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr and "usage:" not in stderr
    assert want in lines[0], lines[0]


@pytest.fixture
def world(tmp_path):
    """Generated inputs: a run, an export, two score files, a summary tree, files and dirs."""
    from deploy.export_format import EXPORT_FORMAT, EXPORT_VERSION, META_NAME

    run = tmp_path / "run"
    (run / "stats").mkdir(parents=True)
    (run / "ckpt").mkdir()
    (run / "ckpt" / "checkpoint").write_text("model_checkpoint_path: \"ckpt-1\"\n")
    (run / "stats" / "hparams.json").write_text(json.dumps(
        {"dataset": "digitsood", "category": "3", "model_type": "contrastive_da",
         "detectors": "kde", "num_epoch": 1}))
    export = tmp_path / "export"
    (export / "assets").mkdir(parents=True)
    (export / "variables").mkdir()
    (export / "saved_model.pb").write_bytes(b"\x08\x01")
    (export / "variables" / "variables.index").write_bytes(b"index")
    (export / "variables" / "variables.data-00000-of-00001").write_bytes(b"data")
    (export / "assets" / META_NAME).write_text(json.dumps(
        {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "score_key": "pool.kde",
         "calibration": {"threshold": 0.0}}))
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(imgs / "x.png")
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("a user's file\n")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("keep me\n")
    for name, test in (("a", [-1, 0, 1, 2]), ("b", [0, 1, -1, 0.5])):
        stats = tmp_path / name / "stats"
        stats.mkdir(parents=True)
        np.savez(stats / "scores.npz", label=np.array([0, 0, 1, 1]), id=np.array(list("0123")),
                 **{"test/pool.kde": np.array(test, float), "calib/pool.kde": np.array([-1., 1.])})
    summ = tmp_path / "runs" / "contrastive" / "cifar10ood" / "0" / "s0" / "stats"
    summ.mkdir(parents=True)
    (summ / "summary.json").write_text(json.dumps(
        {"pool.kocsvm": 90.0, "meta": {"model_type": "contrastive", "dataset": "cifar10ood",
                                       "category": "0", "seed": 0, "protocol": "test"}}))
    (tmp_path / "ensdir").mkdir()
    (tmp_path / "ensdir" / "ensemble.md").mkdir()  # a directory where a file will go
    return tmp_path


def damage(world, what):
    """Damages the fake export in one way (a copy of the real layout's files)."""
    export = world / "export"
    if what == "no_pb":
        (export / "saved_model.pb").unlink()
    elif what == "no_index":
        (export / "variables" / "variables.index").unlink()
    elif what == "empty_shard":
        (export / "variables" / "variables.data-00000-of-00001").write_bytes(b"")
    elif what == "bad_meta":
        (export / "assets" / "droc_export.json").write_text("{not json")
    elif what == "list_meta":
        (export / "assets" / "droc_export.json").write_text("[]")


def bad_hparams(world, text):
    (world / "run" / "stats" / "hparams.json").write_text(text)


# (script or dotted module, argv with {w} = the generated world, text the error line must hold, setup or None)
E = "--export_dir={w}/export"
CASES = [
    # one error shape for argument syntax, in every script
    ("score", [], "required", None),
    ("score", [E, "{w}/imgs", "--batch_size=abc"], "--batch_size", None),
    ("score", [E, "{w}/imgs", "--explain=shap"], "--explain", None),
    ("score", [E, "{w}/imgs", "--no_such_flag"], "unrecognized arguments", None),
    ("export", [], "run_dir", None),
    ("export", ["{w}/run", "--target_fpr=abc"], "--target_fpr", None),
    ("explain", ["{w}/run", "--method=lime"], "--method", None),
    ("ensemble", ["--keys=pool.kde"], "runs", None),
    ("summarize", ["{w}/runs", "--tol=abc"], "--tol", None),
    ("benchmark", ["--steps=abc"], "--steps", None),
    ("reproduce", ["--shard=5/2"], "--shard", None),
    ("reproduce", ["--tables=9"], "table 9", None),
    ("bench.detectors", ["kde", "10"], "required", None),
    ("bench.detectors", ["kde", "abc", "10", "4"], "n_train", None),
    ("bench.mvtec", ["--width=abc"], "--width", None),
    # values
    ("score", [E, "{w}/imgs", "--batch_size=0"], "--batch_size=0 must be positive", None),
    ("score", [E, "{w}/imgs", "--ig_steps=0"], "--ig_steps=0 must be positive", None),
    ("score", [E, "{w}/nothing"], "does not exist", None),
    ("score", [E, "{w}/empty"], "no .jpg", None),
    ("score", [E, "{w}/loop.png"], "loop.png is a broken or looping symlink",
     lambda w: os.symlink("loop.png", w / "loop.png")),
    ("explain", ["{w}/run", "--num_images=0"], "must be positive", None),
    ("explain", ["{w}/run", "--target=rotation"], "needs a rotation model", None),
    ("ensemble", ["{w}/a"], "at least 2 run directories", None),
    ("ensemble", ["{w}/a", "{w}/file.txt"], "file.txt is not a directory", None),
    ("ensemble", ["{w}/a", "{w}/missing"], "missing does not exist", None),
    ("summarize", ["{w}/file.txt"], "is not a directory", None),
    ("bench.detectors", ["kde", "0", "10", "4"], "N_TRAIN=0 must be positive", None),
    ("bench.mvtec", ["--mvtec_root={w}/nothing"], "does not exist", None),
    ("benchmark", ["--sections=speed"], "--sections", None),
    # the export: missing, a file, foreign, damaged
    ("score", ["--export_dir={w}/nothing", "{w}/imgs"], "does not exist", None),
    ("score", ["--export_dir={w}/file.txt", "{w}/imgs"], "file.txt is not a directory", None),
    ("score", ["--export_dir={w}/foreign", "{w}/imgs"], "not a DROC export", None),
    ("score", [E, "{w}/imgs"], "saved_model.pb is missing", lambda w: damage(w, "no_pb")),
    ("score", [E, "{w}/imgs"], "variables.index is missing", lambda w: damage(w, "no_index")),
    ("score", [E, "{w}/imgs"], "is empty", lambda w: damage(w, "empty_shard")),
    ("score", [E, "{w}/imgs"], "is unreadable", lambda w: damage(w, "bad_meta")),
    ("score", [E, "{w}/imgs"], "does not hold export metadata", lambda w: damage(w, "list_meta")),
    # the run: missing, a file, no hparams, unreadable or invalid hparams
    ("export", ["{w}/nothing"], "does not exist", None),
    ("export", ["{w}/file.txt"], "file.txt is not a directory", None),
    ("export", ["{w}/foreign"], "no stats/hparams.json", None),
    ("export", ["{w}/run"], "cannot be read", lambda w: bad_hparams(w, "{\"dataset\": ")),
    ("export", ["{w}/run"], "does not hold a run configuration", lambda w: bad_hparams(w, "[1]")),
    ("export", ["{w}/run"], "net_width='abc'", lambda w: bad_hparams(w, '{"net_width": "abc"}')),
    ("export", ["{w}/run"], "detectors=5", lambda w: bad_hparams(w, '{"detectors": 5}')),
    ("explain", ["{w}/run"], "cannot be read", lambda w: bad_hparams(w, "\x00\x01")),
    ("explain", ["{w}/run"], "num_epoch='x'", lambda w: bad_hparams(w, '{"num_epoch": "x"}')),
    ("export", ["{w}/run", "--export_detector=svm"], "export_detector", None),
    # outputs that would replace something that is not a previous output of that kind
    ("export", ["{w}/run", "--out={w}/run"], "is not a previous export", None),
    ("export", ["{w}/run", "--out={w}/foreign"], "is not a previous export", None),
    ("export", ["{w}/run", "--out={w}/file.txt"], "is a file, not a directory", None),
    ("export", ["{w}/run", "--out={w}/run/stats"], "is not a previous export", None),
    ("score", [E, "{w}/imgs", "--out={w}/file.txt"], "not a previous score CSV", None),
    ("ensemble", ["{w}/a", "{w}/b", "--out={w}/foreign"], "not a previous ensemble output",
     lambda w: (w / "foreign" / "ensemble.csv").write_text("my,own\n")),
    ("summarize", ["{w}/runs", "--csv={w}/file.txt"], "not a previous runs.csv", None),
    ("summarize", ["{w}/runs", "--markdown={w}/file.txt"], "not a previous summary", None),
    # outputs that cannot be created
    ("score", [E, "{w}/imgs", "--out=/proc/droc_scores.csv"], "proc filesystem", None),
    ("score", [E, "{w}/imgs", "--out={w}/file.txt/scores.csv"], "is a file, not a directory", None),
    ("score", [E, "{w}/imgs", "--out={w}/empty"], "is a directory, not a file", None),
    ("score", [E, "{w}/imgs", "--out="], "--out is empty", None),
    ("score", [E, "{w}/imgs", "--explain=ig", "--explain_dir={w}/file.txt"],
     "--explain_dir", None),
    ("score", [E, "{w}/imgs", "--explain=gradcam", "--explain_dir=/proc/self/x/y"],
     "proc filesystem", None),
    ("export", ["{w}/run", "--out=/proc/droc_export"], "proc filesystem", None),
    ("export", ["{w}/run", "--out={w}/file.txt/export"], "is a file, not a directory", None),
    ("explain", ["{w}/run", "--out={w}/file.txt"], "is a file, not a directory", None),
    ("explain", ["{w}/run", "--out=/proc/droc/explain"], "proc filesystem", None),
    ("ensemble", ["{w}/a", "{w}/b", "--out={w}/file.txt"], "is a file, not a directory", None),
    ("ensemble", ["{w}/a", "{w}/b", "--out=/proc/ens"], "proc filesystem", None),
    ("ensemble", ["{w}/a", "{w}/b", "--out={w}/ensdir"], "is a directory, not a file", None),
    ("summarize", ["{w}/runs", "--out={w}/file.txt"], "is a file, not a directory", None),
    ("summarize", ["{w}/runs", "--out=/sys/droc"], "sysfs filesystem", None),
    ("summarize", ["{w}/runs", "--csv={w}/empty"], "is a directory, not a file", None),
    ("summarize", ["{w}/runs", "--markdown={w}/file.txt/s.md"], "is a file", None),
    ("benchmark", ["--out=/proc/bench"], "proc filesystem", None),
    ("benchmark", ["--out={w}/file.txt"], "is a file, not a directory", None),
    ("bench.mvtec", ["--mvtec_run={w}/run", "--mvtec_patch_features=conv", "--json={w}/empty"],
     "is a directory", None),
    ("reproduce", ["--datasets=digitsood", "--smoke", "--runs_root={w}/file.txt/runs"],
     "is a file, not a directory", None),
]


@pytest.mark.parametrize("script, argv, want, setup", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_bad_input_is_one_error_line_and_nothing_written(world, script, argv, want, setup):
    if setup is not None:
        setup(world)
    before = snapshot(world)
    code, _, err = call_main(script, [a.format(w=world) for a in argv])
    assert_one_error_line(code, err, want)
    assert snapshot(world) == before


def test_enough_bad_inputs_across_the_scripts():
    per_script = {}
    for script, *_ in CASES:
        per_script[script] = per_script.get(script, 0) + 1
    assert len(CASES) >= 60 and min(per_script.values()) >= 3, per_script


@pytest.mark.slow
@pytest.mark.parametrize("script, argv, want", [
    ("score.py", ["--export_dir={w}/export", "{w}/imgs", "--batch_size=x"], "--batch_size"),
    ("export.py", ["{w}/run", "--out={w}/run"], "is not a previous export"),
    ("explain.py", [], "run_dir"),
    ("ensemble.py", ["{w}/a", "{w}/b", "--out=/proc/x"], "proc filesystem"),
    ("summarize.py", ["{w}/runs", "--bogus"], "unrecognized arguments"),
    ("benchmark.py", ["--repeats=0"], "--repeats=0"),
])
def test_real_scripts_print_only_the_error_line(world, script, argv, want):
    """In a fresh interpreter: no usage block, no TensorFlow import line, exit 2."""
    before = snapshot(world)
    proc = subprocess.run([sys.executable, str(ROOT / "script" / script),
                           *[a.format(w=world) for a in argv]], capture_output=True, text=True,
                          cwd=world, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="0"))
    assert_one_error_line(proc.returncode, proc.stderr, want)
    assert proc.stdout == ""
    assert snapshot(world) == before


def test_failed_script_removes_the_directories_it_created(world, monkeypatch):
    """summarize.py --out=new/deep fails at its first write (disk full): the folders made
    for the output are removed again, the folders that were there stay."""
    from script import summarize

    def full_disk(path, *args, **kwargs):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(summarize, "write_text_atomic", full_disk)
    with pytest.raises(OSError):
        summarize.main([str(world / "runs"), f"--out={world / 'new' / 'deep'}", "--no_plots"])
    assert not (world / "new").exists()
    assert (world / "runs").is_dir()


def test_outputs_replace_only_previous_outputs_of_their_kind(world):
    """A second run of ensemble.py / summarize.py replaces their own files; a score CSV
    replaces a score CSV."""
    out = world / "ens"
    for _ in range(2):
        code, _, err = call_main("ensemble", [str(world / "a"), str(world / "b"), f"--out={out}"])
        assert code == 0, err
    summary_args = [str(world / "runs"), f"--out={world / 'summary'}", "--no_plots",
                    f"--csv={world / 'r.csv'}", f"--markdown={world / 's.md'}"]
    for _ in range(2):
        code, _, err = call_main("summarize", summary_args)
        assert code == 0, err
    from util.paths import check_output_path, first_bytes_are
    from script.score import CSV_HEADER, write_csv_atomic

    csv_path = world / "scores.csv"
    write_csv_atomic(csv_path, [("a.png", 1.0, 0.5, 1)])
    assert check_output_path(csv_path, "file", replaces=first_bytes_are(
        ",".join(CSV_HEADER) + "\n")) == csv_path


@pytest.mark.parametrize("script, argv", [
    ("score", [E, "{w}/imgs", "--out={w}/empty/new/scores.csv"]),
    ("export", ["{w}/run", "--out={w}/empty/export"]),
    ("summarize", ["{w}/runs", "--out={w}/empty/summary"]),
])
def test_unwritable_output_directory_is_refused(world, monkeypatch, script, argv):
    """A directory the user may not write to (simulated: these tests run as root, for whom
    every directory is writable) is refused before any work."""
    import util.paths

    real_access = os.access
    monkeypatch.setattr(util.paths.os, "access", lambda path, mode: (
        False if Path(path) == world / "empty" else real_access(path, mode)))
    before = snapshot(world)
    code, _, err = call_main(script, [a.format(w=world) for a in argv])
    assert_one_error_line(code, err, f"{world / 'empty'} is not writable")
    assert snapshot(world) == before
