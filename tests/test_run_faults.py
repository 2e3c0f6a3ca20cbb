"""Faults of a training run found before any work: damaged checkpoints, run directories
that cannot be made, flags that do not apply, unknown or too small categories, argument
syntax. Each bad command line must end with exit 2 and exactly one ``error:`` line,
without TensorFlow imported and without a file created, changed or deleted anywhere.

The table runs in one fresh interpreter (so ``tensorflow not in sys.modules`` means
something) through the entry point's ``cli(argv, train=True)``, the whole run path.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.entry_point import ROOT, SCRIPT, run_cli, run_in_process
from tests.mvtec_fixture import make_category

RUNNER = r"""
import contextlib, io, json, sys
sys.argv = ["train_and_eval_loop.py"]
import train_and_eval_loop as entry
out = []
for args in json.loads(sys.stdin.read()):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = entry.cli(["train_and_eval_loop.py", *args], train=True)
    out.append({"code": code, "stderr": err.getvalue()})
print(json.dumps({"rows": out, "tensorflow": "tensorflow" in sys.modules}))
"""

DIGITS = ["--dataset=digitsood", "--net_width=0.125", "--num_epoch=1", "--num_batch=2",
          "--batch_size=16", "--detectors=kde", "--eval_epoch=0", "--export=false"]


def _images(folder, n, value=60):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((8, 8, 3), value + 10 * i, np.uint8)).save(folder / f"{i}.png")


def _listing(root):
    """Every path under ``root`` with its size and modification time (files) or kind."""
    entries = []
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        entries.append((str(path.relative_to(root)), path.is_dir(),
                        None if path.is_dir() else (st.st_size, st.st_mtime_ns)))
    return entries


@pytest.fixture(scope="module")
def real_checkpoint(tmp_path_factory):
    """A checkpoint directory written by tf.train.CheckpointManager (ckpt-2, ckpt-3)."""
    import tensorflow as tf

    ckpt = tmp_path_factory.mktemp("real") / "ckpt"
    checkpoint = tf.train.Checkpoint(v=tf.Variable(tf.zeros([4096])))
    manager = tf.train.CheckpointManager(checkpoint, str(ckpt), max_to_keep=2)
    for _ in range(3):
        manager.save()
    return ckpt


def _damaged_runs(tmp, real):
    """{name: run directory whose ckpt/ is damaged in one way}."""
    runs = {}

    def run_with(name, damage):
        run = tmp / name
        shutil.copytree(real, run / "ckpt")
        damage(run / "ckpt")
        runs[name] = run

    def truncate(path, keep):
        path.write_bytes(path.read_bytes()[:keep])

    run_with("state_garbage", lambda c: (c / "checkpoint").write_text("model_checkpoint_path {\n"))
    run_with("state_binary", lambda c: (c / "checkpoint").write_bytes(b"\xff\xfe\x00garbage"))
    run_with("state_names_missing", lambda c: (c / "checkpoint").write_text(
        'model_checkpoint_path: "ckpt-7"\nall_model_checkpoint_paths: "ckpt-7"\n'))
    run_with("state_missing", lambda c: (c / "checkpoint").unlink())
    run_with("index_truncated", lambda c: truncate(c / "ckpt-3.index", 40))
    run_with("index_missing", lambda c: (c / "ckpt-3.index").unlink())
    run_with("data_truncated", lambda c: truncate(c / "ckpt-3.data-00000-of-00001", 100))
    run_with("data_missing", lambda c: (c / "ckpt-3.data-00000-of-00001").unlink())
    run_with("data_is_dir", lambda c: ((c / "ckpt-3.data-00000-of-00001").unlink(),
                                       (c / "ckpt-3.data-00000-of-00001").mkdir()))
    run = tmp / "ckpt_is_file"
    run.mkdir()
    (run / "ckpt").write_text("not a directory")
    runs["ckpt_is_file"] = run
    return runs


def _cases(tmp, real):
    """[(args, words the error line must hold)]."""
    (tmp / "a_file").write_text("x")
    folder = tmp / "imgs"
    _images(folder / "train" / "a", 4)
    _images(folder / "train" / "b", 4, value=120)
    _images(folder / "train" / "lonely", 1)
    broken = tmp / "broken"
    _images(broken / "train" / "a", 3)
    _images(broken / "train" / "b", 3)
    (broken / "train" / "a" / "zz.png").write_bytes(b"not an image")
    mvtec = tmp / "mvtec"
    make_category(str(mvtec / "bottle"), n_train=2, n_good=1, n_defect=1, size=16)
    (mvtec / "empty" / "train" / "good").mkdir(parents=True)
    runs = _damaged_runs(tmp, real)
    fresh = f"--model_dir={tmp / 'fresh_run'}"
    folder_run = ["--dataset=folder", f"--root={folder}", fresh]
    cases = [
        # the run directory
        (["--model_dir=", *DIGITS], ["--model_dir", "empty"]),
        (["--model_dir= ", *DIGITS], ["--model_dir", "empty"]),
        (["--reevaluate", fresh, *DIGITS], ["--reevaluate", "no finished run"]),
        (["--model_dir=/proc/droc/run", *DIGITS], ["--model_dir=/proc/droc/run"]),
        (["--model_dir=/proc", *DIGITS], ["--model_dir=/proc", "not writable"]),
        ([f"--model_dir={tmp / 'a_file'}", *DIGITS], ["a_file", "not a directory"]),
        ([f"--model_dir={tmp / 'a_file' / 'sub' / 'run'}", *DIGITS], ["a_file",
                                                                     "cannot be created"]),
        # flags that do not apply
        ([fresh, *DIGITS, "--mvtec_mode=image"], ["--mvtec_mode", "MVTec"]),
        ([fresh, *DIGITS, "--mvtec_mode=patch"], ["--mvtec_mode", "MVTec"]),
        ([fresh, *DIGITS, "--patch_size=16"], ["--patch_size", "--mvtec_mode=patch"]),
        ([fresh, *DIGITS, "--patch_features=conv"], ["--patch_features"]),
        ([fresh, *DIGITS, "--patches_per_image=2"], ["--patches_per_image"]),
        ([*folder_run, "--category=a", "--mvtec_heatmaps=false"], ["--mvtec_heatmaps"]),
        ([fresh, "--dataset=mvtec", f"--root={mvtec}", "--category=bottle",
          "--mvtec_mode=image", "--patch_stride=8"], ["--patch_stride"]),
        ([fresh, *DIGITS, "--model_type=rotation", "--cutpaste_variant=scar"],
         ["--cutpaste_variant", "--model_type=cutpaste"]),
        ([fresh, *DIGITS, "--noise_std=0.3"], ["--noise_std", "denoising"]),
        ([fresh, *DIGITS, f"--root={folder}"], ["--root"]),
        ([*folder_run, "--category=a", f"--data_dir={tmp}"], ["--data_dir"]),
        ([fresh, *DIGITS, "--optim_type=adam", "--momentum=0.5"], ["--momentum", "sgd"]),
        # the category, from the file listing
        ([*folder_run, "--category=zebra"], ["zebra", "a, b, lonely"]),
        ([*folder_run, "--category=7"], ["7"]),
        ([*folder_run, "--category=lonely"], ["lonely", "only 1 training image"]),
        ([*folder_run, "--category=a", "--is_validation", "--batch_size=8"],
         ["--batch_size=8", "3 training"]),
        ([fresh, "--dataset=mvtec", f"--root={mvtec}", "--category=cable"],
         ["--category=cable", "bottle"]),
        ([fresh, "--dataset=mvtec", f"--root={mvtec}", "--category=empty"],
         ["train/good", "has no images"]),
        ([fresh, "--dataset=mvtec_folder", f"--root={mvtec / 'empty'}"], ["train/good"]),
        # a failed run removes the parent directories it created
        ([f"--model_dir={tmp / 'deep' / 'er' / 'run'}", "--dataset=folder", f"--root={broken}",
          "--category=a"], ["zz.png"]),
        # argument syntax
        ([fresh, "--no_such_flag=1"], ["no_such_flag"]),
        ([fresh, "--batch_size=abc"], ["--batch_size=abc"]),
        ([fresh, "--mvtec_mode=whole"], ["--mvtec_mode=whole"]),
        ([fresh, "--num_epoch"], ["--num_epoch"]),
        ([fresh, "--flagfile=/nonexistent/flags"], ["/nonexistent/flags"]),
        ([fresh, "--force_init=maybe"], ["--force_init"]),
        ([fresh, "positional"], ["positional"]),
    ]
    kept = {"state_garbage": "ckpt-2, ckpt-3", "state_binary": "ckpt-2, ckpt-3",
            "state_names_missing": "ckpt-2, ckpt-3", "state_missing": "ckpt-2, ckpt-3",
            "index_truncated": "ckpt-2", "index_missing": "ckpt-2",
            "data_truncated": "ckpt-2", "data_missing": "ckpt-2", "data_is_dir": "ckpt-2"}
    named = {"state_garbage": "checkpoint", "state_binary": "checkpoint",
             "state_names_missing": "ckpt-7", "state_missing": "checkpoint",
             "index_truncated": "ckpt-3.index", "index_missing": "ckpt-3.index",
             "data_truncated": "ckpt-3.data-00000-of-00001",
             "data_missing": "ckpt-3.data-00000-of-00001",
             "data_is_dir": "ckpt-3.data-00000-of-00001", "ckpt_is_file": "ckpt"}
    for name, run in runs.items():
        words = [f"{run}/ckpt", named[name]] + (["kept: the intact checkpoint", kept[name]]
                                                if name in kept else ["not a directory"])
        cases.append(([f"--model_dir={run}", *DIGITS], words))
    return cases


def test_bad_runs_end_before_any_work(tmp_path, real_checkpoint):
    work = tmp_path / "work"
    work.mkdir()
    cases = _cases(work, real_checkpoint)
    assert len(cases) >= 40
    before = _listing(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(ROOT), DROC_CACHE_DIR=str(tmp_path / "cache"),
               HOME=str(tmp_path / "home"))
    proc = subprocess.run([sys.executable, "-c", RUNNER], input=json.dumps([a for a, _ in cases]),
                          cwd=work, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for (args, words), row in zip(cases, result["rows"]):
        lines = [line for line in row["stderr"].splitlines() if line.strip()]
        assert row["code"] == 2, (args, row)
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, row["stderr"])
        for word in words:
            assert word in lines[0], (args, word, lines[0])
        assert "usage" not in lines[0].lower() and "Traceback" not in row["stderr"]
    assert not result["tensorflow"]
    assert _listing(tmp_path) == before  # nothing created, changed or deleted anywhere


def test_checkpoint_state_parser_reads_what_tensorflow_writes(real_checkpoint):
    from engine.checkpoints import inspect_checkpoints, parse_checkpoint_state, shard_sizes

    latest, named = parse_checkpoint_state(real_checkpoint / "checkpoint")
    assert (latest, named) == ("ckpt-3", ["ckpt-2", "ckpt-3"])
    assert inspect_checkpoints(real_checkpoint) == str(real_checkpoint / "ckpt-3")
    need = shard_sizes((real_checkpoint / "ckpt-3.index").read_bytes())
    assert need == {0: (real_checkpoint / "ckpt-3.data-00000-of-00001").stat().st_size}


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads and writes regardless of modes")
def test_unreadable_checkpoint_files_are_named(tmp_path, real_checkpoint):
    from engine.checkpoints import inspect_checkpoints
    from util.errors import ConfigError

    for target in ("ckpt-3.index", "ckpt-3.data-00000-of-00001", "."):
        ckpt = tmp_path / target.strip(".") / "ckpt"
        shutil.copytree(real_checkpoint, ckpt)
        (ckpt / target).chmod(0)
        try:
            with pytest.raises(ConfigError, match="checkpoint damage") as err:
                inspect_checkpoints(ckpt)
            assert target.strip(".") in str(err.value) or "permissions" in str(err.value)
        finally:
            (ckpt / target).chmod(0o755)


@pytest.mark.slow
def test_damaged_checkpoint_of_a_real_run_is_never_trained_over(tmp_path):
    """A checkpoint that passes the file checks but fails TensorFlow's checksum is reported
    the same way, and no file of the run changes."""
    run = tmp_path / "run"
    assert run_in_process([f"--model_dir={run}", *DIGITS]).returncode == 0
    (run / "stats" / "summary.json").unlink()  # unfinished: a rerun restores and evaluates
    data = run / "ckpt" / "ckpt-1.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    before = [e for e in _listing(run) if e[0] != ".lock"]
    out = run_in_process([f"--model_dir={run}", *DIGITS])
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert out.returncode == 2 and len(errors) == 1, out.stderr
    assert "ckpt-1 cannot be restored" in errors[0] and "no intact checkpoint" in errors[0]
    assert [e for e in _listing(run) if e[0] != ".lock"] == before


@pytest.mark.slow
def test_argument_errors_of_the_script_have_no_usage_block(tmp_path):
    for args in (["--no_such_flag"], ["--mvtec_mode=whole"], ["--num_epoch=1.5"]):
        proc = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True,
                              text=True, cwd=tmp_path, timeout=120)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), \
            proc.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_issue_reproducing_configuration_trains(tmp_path):
    """The configuration that aborted with heap corruption under oneDNN (a Xeon with AMX;
    SIGSEGV / SIGABRT on the 2-core AMD EPYC too): width 0.125 at 64 px. In a process of
    its own, with oneDNN on, it must finish with exit 0."""
    out = run_cli([f"--model_dir={tmp_path / 'run'}", "--dataset=digitsood",
                   "--input_shape=64,64,3", "--model_type=contrastive_da", "--net_width=0.125",
                   "--num_epoch=1", "--num_batch=5", "--detectors=kde", "--export=false"],
                  env=dict(os.environ, TF_ENABLE_ONEDNN_OPTS="1"), timeout=900)
    assert out.returncode == 0, (out.returncode, out.stderr[-2000:])
    assert (tmp_path / "run" / "stats" / "summary.json").is_file()


def test_strided_projection_avoids_the_crashing_kernel_and_computes_the_same():
    """ResNet projections (1x1, stride 2) run as a stride-1 1x1 convolution of every
    second pixel: TF 2.21's oneDNN filter gradient of the strided 1x1 convolution is the
    op that corrupts the heap (bench/repro_onednn.py, proj_backprop_filter)."""
    import keras
    import tensorflow as tf

    from model.resnet import StridedPointwiseConv2D, build_resnet

    net = build_resnet("ResNet18", width=0.125, input_shape=(32, 32, 3))
    strided = [layer for layer in net.layers if layer.name.endswith("_proj")
               and layer.strides == (2, 2)]
    assert [layer.name for layer in strided] == [f"stage{i}_block1_proj" for i in (2, 3, 4)]
    assert all(isinstance(layer, StridedPointwiseConv2D) for layer in strided)
    x = tf.random.normal([2, 9, 10, 8])
    ours = StridedPointwiseConv2D(16, 1, strides=2, padding="valid", use_bias=False)
    plain = keras.layers.Conv2D(16, 1, strides=2, padding="valid", use_bias=False)
    ours.build(x.shape)
    plain.build(x.shape)
    plain.kernel.assign(ours.kernel)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y_ours, y_plain = ours(x), plain(x)
        loss_ours, loss_plain = tf.reduce_sum(y_ours ** 3), tf.reduce_sum(y_plain ** 3)
    np.testing.assert_allclose(y_ours.numpy(), y_plain.numpy(), rtol=1e-6, atol=1e-6)
    for a, b in zip(tape.gradient(loss_ours, [x, ours.kernel]),
                    tape.gradient(loss_plain, [x, plain.kernel])):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("args, word", [(["--candidates=bn8,nosuch"], "nosuch"),
                                        (["--steps=0"], "--steps"),
                                        (["--onednn=maybe"], "--onednn"),
                                        (["--json=/nonexistent/dir/rows.json"], "--json")])
def test_repro_harness_refuses_bad_arguments_in_one_line(capsys, args, word):
    from bench.repro_onednn import CANDIDATES, parse_args

    assert {"bn8", "crop_and_resize", "conv_backprop", "train_step"} <= set(CANDIDATES)
    with pytest.raises(SystemExit) as stop:
        parse_args(args)
    lines = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(lines) == 1
    assert lines[0].startswith("error: ") and word in lines[0]
