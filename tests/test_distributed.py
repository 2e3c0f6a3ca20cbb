"""One training step on 2 replicas equals the same global batch on 1 replica."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("model_type", ["contrastive", "rotation"])
def test_two_replicas_match_one(model_type):
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run([sys.executable, str(ROOT / "tests" / "replica_check.py"), model_type],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["max_update"] > 1e-3  # the step really moved the weights
    assert abs(result["loss1"] - result["loss2"]) < 1e-5
    assert result["max_weight_diff"] < 1e-6


def test_mirrored_on_one_device_runs_on_the_default_strategy():
    """A one-replica MirroredStrategy only adds overhead (1.5x slower on CPU): with at most
    one GPU, --strategy=mirrored must hand back TensorFlow's default strategy."""
    import tensorflow as tf

    from engine.distribute import make_strategy, strategy_kind

    if len(tf.config.list_logical_devices("GPU")) > 1:
        pytest.skip("several GPUs: mirrored must mirror")
    strategy = make_strategy("mirrored")
    assert not isinstance(strategy, tf.distribute.MirroredStrategy)
    assert strategy is tf.distribute.get_strategy()
    assert strategy.num_replicas_in_sync == 1
    assert isinstance(make_strategy("one_device"), tf.distribute.OneDeviceStrategy)
    # what the log and summary.json name: the strategy that runs, not the flag
    assert strategy_kind(strategy) == "default"
    assert strategy_kind(make_strategy("one_device")) == "one_device"
    assert strategy_kind(tf.distribute.MirroredStrategy(["/cpu:0"])) == "mirrored"
