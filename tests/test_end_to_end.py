"""The entry point end to end: every model type, outputs, resume, bad input, learning."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from tests.entry_point import run_cli

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "train_and_eval_loop.py"
DETECTORS = ("kocsvm", "locsvm", "kde", "gde", "auc")
TINY = ["--dataset=digitsood", "--category=3", "--net_type=ResNet10", "--net_width=0.125",
        "--head_dims=32,16", "--num_batch=2", "--batch_size=16", "--eval_batch_size=128",
        "--noexport"]  # the export has its own tests (tests/test_scoring.py)


def saved_epochs(run_dir):
    return sorted(int(p.stem.split("-")[1]) for p in (Path(run_dir) / "ckpt").glob("ckpt-*.index"))


def read_summary(run_dir):
    return json.loads((Path(run_dir) / "stats" / "summary.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("model_type, extra_keys", [
    ("rotation", ("logit.auc", "dscore.auc")), ("contrastive", ()), ("contrastive_da", ())])
def test_each_model_type_writes_full_summary_and_tensorboard_logs(tmp_path, model_type,
                                                                  extra_keys):
    run_dir = tmp_path / "run"
    out = run_cli([f"--model_type={model_type}", f"--model_dir={run_dir}", "--num_epoch=2",
                   "--eval_epoch=1", *TINY])
    assert out.returncode == 0, out.stderr[-3000:]
    summary = read_summary(run_dir)
    keys = [f"{fs}.{d}" for fs in ("pool", "embed") for d in DETECTORS] + list(extra_keys)
    from sklearn.metrics import roc_auc_score  # every AUC is the one of its per-image scores

    scores = np.load(run_dir / "stats" / "scores.npz")
    for key in keys:
        name = key[:-len(".auc")] if key in extra_keys else key  # model scores: logit, dscore
        want = 100.0 * roc_auc_score(scores["label"], scores[f"test/{name}"])
        assert summary[key] == pytest.approx(want, abs=1e-6), key
    meta = summary["meta"]
    assert meta["model_type"] == model_type and meta["dataset"] == "digitsood"
    assert meta["category"] == "3" and meta["epochs"] == 2
    assert {"tensorflow", "keras"} <= set(meta["versions"])
    hparams = json.loads((run_dir / "stats" / "hparams.json").read_text())
    assert hparams["model_type"] == model_type and hparams["num_batch"] == 2
    history = [json.loads(l) for l in (run_dir / "stats" / "eval_history.jsonl").read_text().split("\n") if l]
    assert [h["epoch"] for h in history] == [1, 2]
    assert list((run_dir / "ckpt").glob("ckpt-2.index"))
    assert_tensorboard_logs_losses_and_aucs(run_dir)


def assert_tensorboard_logs_losses_and_aucs(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for events in (run_dir / "logs").rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events.parent))
        acc.Reload()
        tags |= set(acc.Tags().get("tensors", [])) | set(acc.Tags().get("scalars", []))
    for tag in ("epoch_loss", "epoch_proxy_loss", "epoch_l2_loss", "epoch_acc",
                "epoch_learning_rate", "epoch_steps_per_sec", "auc/pool.kde", "auc/embed.kde"):
        assert tag in tags, (tag, tags)


@pytest.mark.parametrize("args, message", [
    (["--model_type=simclr"], "model_type"),
    (["--dataset=imagenet"], "dataset"),
    (["--category=zebra"], "zebra"),
    (["--dataset=folder", "--root=/nonexistent/dir"], "/nonexistent/dir"),
    (["--input_shape=32,48,3"], "input_shape"),
    (["--head_dims=512y8"], "head_dims"),
    (["--aug_list=cnr0.5+spin"], "spin"),
    (["--distaug_type=rot45"], "rot45"),
    (["--is_validation", "--batch_size=512"], "batch_size"),
    (["--preset=gpu_huge"], "preset"),
])
def test_bad_input_fails_cleanly(tmp_path, args, message):
    run_dir = tmp_path / "run"
    out = run_cli([f"--model_dir={run_dir}", "--dataset=digitsood", "--num_epoch=1", *args],
                  timeout=120)
    assert out.returncode != 0
    err_lines = [l for l in out.stderr.splitlines() if l.startswith("error:") or "FATAL" in l
                 or "ERROR" in l]
    assert err_lines and message in " ".join(err_lines), out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    assert not run_dir.exists()


def test_unreadable_image_is_named(tmp_path):
    root = tmp_path / "imgs"
    from PIL import Image
    import numpy as np

    for cls in ("a", "b"):
        (root / "train" / cls).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((10, 10, 3), 40 * i, np.uint8)).save(root / "train" / cls / f"{i}.png")
    (root / "train" / "b" / "broken.jpg").write_bytes(b"not an image")
    out = run_cli([f"--model_dir={tmp_path / 'run'}", "--dataset=folder", f"--root={root}",
                   "--category=a", "--num_epoch=1"], timeout=120,
                  env=dict(os.environ, DROC_CACHE_DIR=str(tmp_path / "cache")))
    assert out.returncode == 2 and "broken.jpg" in out.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_nan_loss_stops_with_message(tmp_path):
    run_dir = tmp_path / "run"
    out = run_cli(["--model_type=rotation", f"--model_dir={run_dir}", "--num_epoch=3",
                   "--learning_rate=1e30", "--sched_type=constant", *TINY])
    assert out.returncode == 3
    assert "NaN" in out.stderr and "checkpoint" in out.stderr
    assert not (run_dir / "stats" / "summary.json").exists()


@pytest.mark.slow
def test_short_real_run_learns_on_digits(tmp_path):
    """The quick-start preset on real digits, shortened to 6 of its 30 epochs: the proxy
    loss falls and the detectors separate inliers clearly (not a fixed number). It runs
    clean (its calibration holds enough images for its target FPR; a collapse it recovers
    from is no warning) and the log names the strategy that trains on one device."""
    import re

    run_dir = tmp_path / "run"
    out = run_cli(["--preset=quickstart", f"--model_dir={run_dir}", "--detectors=kde,gde",
                   "--num_epoch=6", "--noexport"], timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    losses = [float(v) for v in re.findall(r"proxy_loss: ([0-9.]+)", out.stdout)]
    assert len(losses) == 6 and np.mean(losses[-2:]) < np.mean(losses[:2]), losses
    summary = read_summary(run_dir)
    assert summary["pool.kde"] > 75.0
    assert [l for l in (out.stdout + out.stderr).splitlines() if l.startswith("warning:")] == []
    assert "1 replica(s), strategy default (--strategy=mirrored)" in out.stdout
    assert summary["meta"]["strategy"] == "default"
