"""Run lifecycle under faults: lock, resume rules, finished runs, corrupt checkpoints,
atomic writes, SIGKILL at random points, collapse detection, determinism."""

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.entry_point import run_cli
from util.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "train_and_eval_loop.py"
TINY = ["--dataset=digitsood", "--category=3", "--net_type=ResNet10", "--net_width=0.125",
        "--head_dims=32,16", "--num_batch=2", "--batch_size=16", "--eval_batch_size=128",
        "--detectors=kde", "--noexport"]  # the export has its own tests (tests/test_scoring.py)


def error_lines(out):
    return [line for line in out.stderr.splitlines() if line.startswith("error:")]


def history_lines(run_dir):
    return (run_dir / "stats" / "eval_history.jsonl").read_text().splitlines()


# ----------------------------------------------------------------- lock


HOLDER = "import sys, time; from util.runlock import run_lock\n" \
         "with run_lock(sys.argv[1]):\n    print('locked', flush=True); time.sleep(600)\n"


def test_second_process_refused_and_killed_holder_releases(tmp_path):
    from util.runlock import run_lock

    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigError, match=f"in use by another run \\(pid {holder.pid}"):
            with run_lock(run_dir):
                pass
        # the entry point refuses too, with one line, before loading anything
        out = run_cli([f"--model_dir={run_dir}", *TINY], timeout=120)
        assert out.returncode == 2 and "in use by another run" in error_lines(out)[0]
        assert "Traceback" not in out.stderr
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with run_lock(run_dir):  # a SIGKILLed holder does not leave the lock stuck
        pass


# ----------------------------------------------------------------- resume rules


def test_different_configuration_refused_and_hparams_kept(tmp_path):
    from util.atomic import write_json_atomic
    from engine.config import resolve_config
    from engine.run_files import mark_run
    from util.ownership import MANIFEST_NAME

    run_dir = tmp_path / "run"
    recorded = resolve_config(dict(dataset="digitsood", category="3", net_width=0.125,
                                   model_type="rotation", model_dir=str(run_dir)))
    run_dir.mkdir()
    mark_run(run_dir)  # a run: its marker, then its configuration
    write_json_atomic(run_dir / "stats" / "hparams.json", recorded)
    before = (run_dir / "stats" / "hparams.json").read_bytes()
    out = run_cli([f"--model_dir={run_dir}", "--dataset=digitsood", "--category=3",
                   "--net_width=0.25", "--model_type=contrastive"], timeout=120)
    assert out.returncode == 2
    (line,) = error_lines(out)
    assert "--net_width=0.25 (recorded 0.125)" in line
    assert "--model_type=contrastive (recorded rotation)" in line
    assert "--batch_size=32 (recorded 64)" in line  # per-model defaults count too
    assert (run_dir / "stats" / "hparams.json").read_bytes() == before
    assert sorted(p.name for p in run_dir.rglob("*")) == [MANIFEST_NAME, "hparams.json",
                                                          "stats"]  # no lock


@pytest.mark.slow
def test_finished_run_reports_reevaluates_and_survives_corrupt_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    args = ["--model_type=rotation", f"--model_dir={run_dir}", "--num_epoch=2", "--eval_epoch=1",
            *TINY]
    out = run_cli(args)
    assert out.returncode == 0, out.stderr[-3000:]
    first = history_lines(run_dir)
    assert [json.loads(l)["epoch"] for l in first] == [1, 2]
    summary = json.loads((run_dir / "stats" / "summary.json").read_text())

    out = run_cli(args)  # finished: print the stored result, evaluate nothing
    assert out.returncode == 0, out.stderr[-3000:]
    assert "finished already" in out.stdout and "Extracting" not in out.stdout
    assert f"{summary['pool.kde']:.2f}" in out.stdout
    assert history_lines(run_dir) == first

    out = run_cli([*args, "--reevaluate"])
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Extracting" in out.stdout and "Epoch" not in out.stdout  # no training
    again = history_lines(run_dir)
    assert [json.loads(l)["epoch"] for l in again] == [1, 2]  # replaced, not appended

    data_files = sorted((run_dir / "ckpt").glob("ckpt-2.data-*"))
    for f in data_files:
        f.write_bytes(b"\0garbage" * 10)
    out = run_cli([*args, "--reevaluate"])
    assert out.returncode == 2
    (line,) = error_lines(out)
    assert "ckpt-2.data-00000-of-00001 is truncated" in line and "--force_init" in line
    assert "Traceback" not in out.stderr
    assert all(f.exists() for f in data_files)  # never silently discarded
    assert history_lines(run_dir) == again


# ----------------------------------------------------------------- atomic writes


def test_interrupted_write_leaves_old_file(tmp_path, monkeypatch):
    from util import atomic
    from engine.callbacks import record_history

    path = tmp_path / "summary.json"
    atomic.write_json_atomic(path, {"pool.kde": 1.0})

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic.write_json_atomic(path, {"pool.kde": 2.0, "big": list(range(100000))})
    assert json.loads(path.read_text()) == {"pool.kde": 1.0}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temp file left
    monkeypatch.undo()

    history = tmp_path / "eval_history.jsonl"
    record_history(history, 1, {"pool.kde": 50.0})
    with open(history, "a") as f:
        f.write('{"epoch": 2, "pool.')  # a torn line left by a crash of an older writer
    record_history(history, 2, {"pool.kde": 60.0})
    record_history(history, 1, {"pool.kde": 55.0})
    records = [json.loads(l) for l in history.read_text().splitlines()]
    assert records == [{"epoch": 1, "pool.kde": 55.0}, {"epoch": 2, "pool.kde": 60.0}]


# ----------------------------------------------------------------- SIGKILL


def saved_epochs(run_dir):
    return sorted(int(p.stem.split("-")[1]) for p in (run_dir / "ckpt").glob("ckpt-*.index"))


def learning_rates(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values = []
    for events in (run_dir / "logs" / "train").glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events), size_guidance={"tensors": 0})
        acc.Reload()
        if "epoch_learning_rate" not in acc.Tags()["tensors"]:
            continue  # a process killed before it finished an epoch
        for event in acc.Tensors("epoch_learning_rate"):
            values.append((event.step, float(np.asarray(
                __import__("tensorflow").make_ndarray(event.tensor_proto)))))
    return values


@pytest.mark.slow
def test_three_random_sigkills_then_finish(tmp_path):
    """Killed three times at random points, the run resumes from its last checkpoint each
    time, trains only the remaining epochs and ends as one uninterrupted run would."""
    rng = random.Random(8)
    run_dir = tmp_path / "run"
    epochs, steps, lr = 12, 2, 0.05
    args = ["--model_type=rotation", f"--model_dir={run_dir}", f"--num_epoch={epochs}",
            "--ckpt_epoch=1", "--eval_epoch=3", f"--learning_rate={lr}", *TINY]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    last = 0
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, str(SCRIPT), *args], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 600
        while time.time() < deadline and not [e for e in saved_epochs(run_dir) if e > last]:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.0))  # a random point: mid-step, mid-eval, mid-save
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        saved = saved_epochs(run_dir)
        assert saved and saved[-1] < epochs, saved
        last = saved[-1]
        assert not (run_dir / "stats" / "summary.json").exists()
    out = run_cli(args)
    assert out.returncode == 0, out.stderr[-3000:]
    # a kill can land between writing ckpt-N and recording it as the latest: then the
    # previous checkpoint is the one restored
    match = re.search(r"Resumed from .*ckpt-(\d+) \(epoch (\d+)\)", out.stdout)
    assert match, out.stdout[-2000:]
    resumed = int(match.group(2))
    assert 1 <= resumed <= last and int(match.group(1)) == resumed
    # only the remaining epochs were trained
    assert f"Epoch {resumed + 1}/{epochs}" in out.stdout and f"Epoch 1/{epochs}" not in out.stdout
    meta = json.loads((run_dir / "stats" / "summary.json").read_text())["meta"]
    assert meta["optimizer_steps"] == epochs * steps and meta["epochs"] == epochs
    lines = history_lines(run_dir)
    records = [json.loads(l) for l in lines]  # no torn line
    assert [r["epoch"] for r in records] == sorted({r["epoch"] for r in records})  # no duplicate
    assert {3, 6, 9, 12} == {r["epoch"] for r in records}
    # the cosine schedule continued where it stopped: Keras's TensorBoard callback logs, for
    # epoch e, the rate after its last step, i.e. lr(e + 1) = lr0/2 (1 + cos(pi (e+1) / E))
    # (TensorBoard buffers its events: epochs of a killed process may be missing, but every
    # epoch of the final process is there)
    logged = learning_rates(run_dir)
    assert set(range(resumed, epochs)) <= {s for s, _ in logged} <= set(range(epochs))
    for step, value in logged:
        expected = lr * 0.5 * (1 + np.cos(np.pi * (step + 1) / epochs))
        assert value == pytest.approx(expected, rel=1e-5, abs=1e-7)
    # --force_init starts over
    out = run_cli([*args, "--num_epoch=1", "--force_init"])
    assert out.returncode == 0 and "Resumed" not in out.stdout
    assert json.loads((run_dir / "stats" / "summary.json").read_text())["meta"]["epochs"] == 1


# ----------------------------------------------------------------- collapse


@pytest.mark.slow
def test_collapse_detected_on_constant_images(tmp_path, monkeypatch):
    from PIL import Image

    root = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for cls in ("flat", "noise"):
        (root / "train" / cls).mkdir(parents=True)
        for i in range(40):
            pixels = (np.full((32, 32, 3), 128, np.uint8) if cls == "flat"
                      else rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
            Image.fromarray(pixels).save(root / "train" / cls / f"{i}.png")
    run_dir = tmp_path / "run"
    monkeypatch.setenv("DROC_CACHE_DIR", str(tmp_path / "cache"))
    out = run_cli([f"--model_dir={run_dir}", "--dataset=folder", f"--root={root}",
                   "--category=flat", "--model_type=contrastive", "--num_epoch=2",
                   *[a for a in TINY if not a.startswith(("--dataset", "--category"))]])
    assert out.returncode == 0, out.stderr[-3000:]
    assert "representation collapse at epoch 1" in out.stdout + out.stderr
    collapse = json.loads((run_dir / "stats" / "summary.json").read_text())["meta"]["collapse"]
    assert collapse["detected"] and collapse["first_epoch"] == 1
    assert collapse["recovered_epoch"] is None
    assert collapse["last_spread"] < 0.01
    collapse_warnings = [l for l in (out.stdout + out.stderr).splitlines()
                         if l.startswith("warning:") and "collapse" in l]
    assert len(collapse_warnings) == 1, collapse_warnings  # the verdict's, at the end
    assert "still collapsed at the end" in collapse_warnings[0]


def test_a_collapse_the_network_recovers_from_is_not_the_verdict():
    """A freshly initialised network can start below the threshold (the quick start's
    first epoch, spread 0.005) and spread out: the verdict is the last epoch's, and the
    lines printed during training are information, not warnings."""
    from engine.collapse import load_verdict, update_verdict

    verdict = load_verdict(None)
    msgs = [update_verdict(verdict, e, s) for e, s in enumerate([0.005, 0.04, 0.5], 1)]
    assert msgs[0].startswith("representation collapse at epoch 1")
    assert "spread out again at epoch 2" in msgs[1] and msgs[2] is None
    assert verdict["detected"] is False
    assert (verdict["first_epoch"], verdict["recovered_epoch"]) == (1, 2)
    # NaN collapses
    assert update_verdict(verdict, 4, float("nan")).startswith("representation collapse at epoch 4")
    assert verdict["detected"] and verdict["first_epoch"] == 1
    assert verdict["recovered_epoch"] is None and verdict["last_spread"] != verdict["last_spread"]


def test_embedding_spread_separates_collapsed_from_spread_features():
    from engine.collapse import THRESHOLD, embedding_spread

    rng = np.random.default_rng(0)
    spread = rng.normal(size=(256, 32))
    assert embedding_spread(spread) > 0.8
    collapsed = np.ones((256, 32)) + 1e-6 * rng.normal(size=(256, 32))
    assert embedding_spread(collapsed) < THRESHOLD
    assert np.isnan(embedding_spread(np.full((4, 3), np.nan)))


def test_the_collapse_probe_costs_the_same_pixels_whatever_the_image_size():
    """256 images of 32 px, but 32 of 256 px (the probe runs at every epoch end: a full
    probe of large images ate a third of a budgeted epoch); the subset is fixed by seed."""
    from engine.collapse import MIN_PROBE, PROBE_SIZE, probe_images

    small = np.arange(300)[:, None, None, None] * np.ones([1, 32, 32, 3], np.uint8)
    large = np.zeros([300, 256, 256, 1], np.uint8)
    assert len(probe_images(small, seed=1)) == PROBE_SIZE == 256
    assert len(probe_images(large, seed=1)) == MIN_PROBE == 32
    np.testing.assert_array_equal(probe_images(small, seed=1), probe_images(small, seed=1))
    assert len(probe_images(small[:100])) == 100


# ----------------------------------------------------------------- determinism


@pytest.mark.slow
def test_deterministic_runs_give_identical_numbers(tmp_path):
    summaries = []
    for name in ("a", "b"):
        # a new interpreter each: op determinism, once on, stays on for the whole process
        out = run_cli(["--model_type=contrastive_da", f"--model_dir={tmp_path / name}",
                       "--num_epoch=2", "--deterministic", *TINY], env=dict(os.environ))
        assert out.returncode == 0, out.stderr[-3000:]
        summaries.append(json.loads((tmp_path / name / "stats" / "summary.json").read_text()))
    a, b = summaries
    keys = [k for k in a if k not in ("meta", "export")]  # export names the run's own path
    assert keys and {k: a[k] for k in keys} == {k: b[k] for k in keys}
    assert a["meta"]["collapse"]["last_spread"] == b["meta"]["collapse"]["last_spread"]
    assert a["meta"]["deterministic"] is True


def test_nan_message_blames_learning_rate_only_when_weights_diverged():
    from model.registry import build_model
    from engine.callbacks import nan_message
    from engine.config import resolve_config

    cfg = resolve_config(dict(model_type="contrastive", learning_rate=0.5))
    model = build_model("contrastive", net_type="ResNet10", net_width=0.125, head_dims="32,16")
    finite = nan_message(model, cfg, 4, "ckpt-4")
    assert "epoch 5" in finite and "ckpt-4" in finite
    assert "--learning_rate" not in finite and "--temperature" in finite
    weights = model.get_weights()
    weights[0] = np.full_like(weights[0], np.nan)
    model.set_weights(weights)
    diverged = nan_message(model, cfg, 4, "ckpt-4")
    assert "--learning_rate (now 0.5" in diverged

