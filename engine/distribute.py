"""``--strategy``: which ``tf.distribute`` strategy trains, and who writes what.

* ``mirrored`` (default): ``MirroredStrategy`` over every local GPU when there are
  two or more; on one GPU or the CPU, TensorFlow's default strategy (one replica,
  the same math without the mirroring overhead).
* ``one_device``: ``OneDeviceStrategy`` on the first GPU (or the CPU).
* ``multi_worker``: ``MultiWorkerMirroredStrategy`` configured from the
  ``TF_CONFIG`` environment variable (one process per machine).

With several workers the chief (task ``chief`` 0, or ``worker`` 0 when the
cluster has no chief) alone writes summaries, results and TensorBoard logs; the
other workers write their checkpoints to a private temporary directory, as
TensorFlow's multi-worker rules require (every worker must take part in a save).
``parse_tf_config`` needs no TensorFlow, so a bad ``TF_CONFIG`` is refused
with the other flag errors, before anything is loaded.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import TYPE_CHECKING, Mapping, Optional

from util.errors import ConfigError

if TYPE_CHECKING:
    import tensorflow as tf


def parse_tf_config(text: Optional[str]) -> tuple[dict, str, int]:
    """TF_CONFIG JSON -> (cluster dict, task type, task index); ConfigError when wrong."""
    if not text:
        raise ConfigError("--strategy=multi_worker needs the TF_CONFIG environment variable, "
                          'e.g. {"cluster": {"worker": ["host1:2222", "host2:2222"]}, '
                          '"task": {"type": "worker", "index": 0}}')
    try:
        conf = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"TF_CONFIG is not valid JSON ({err.msg} at character {err.pos})") \
            from None
    if not isinstance(conf, dict) or not isinstance(conf.get("cluster"), dict):
        raise ConfigError('TF_CONFIG needs a "cluster" object mapping task types to '
                          '"host:port" lists')
    cluster = conf["cluster"]
    for kind, addresses in cluster.items():
        if kind not in ("chief", "worker", "evaluator", "ps"):
            raise ConfigError(f"TF_CONFIG cluster has an unknown task type {kind!r}; "
                              "use chief and worker")
        if not isinstance(addresses, list) or not addresses or not all(
                isinstance(a, str) and a.rpartition(":")[2].isdigit() for a in addresses):
            raise ConfigError(f"TF_CONFIG cluster[{kind!r}] must be a non-empty list of "
                              f'"host:port" strings, got {addresses!r}')
    if "ps" in cluster:
        raise ConfigError("TF_CONFIG names parameter servers (ps); --strategy=multi_worker "
                          "uses chief and worker tasks only")
    if len(cluster.get("chief", [])) > 1:
        raise ConfigError("TF_CONFIG may name at most one chief")
    task = conf.get("task")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise ConfigError('TF_CONFIG needs "task": {"type": "worker", "index": N} naming this '
                          "process")
    kind, index = task["type"], task["index"]
    if kind not in cluster:
        raise ConfigError(f"TF_CONFIG task type {kind!r} is not in the cluster "
                          f"({', '.join(cluster)})")
    if isinstance(index, bool) or not isinstance(index, int) or not \
            0 <= index < len(cluster[kind]):
        raise ConfigError(f"TF_CONFIG task index {index!r} is out of range: the cluster has "
                          f"{len(cluster[kind])} {kind} task(s)")
    return cluster, kind, index


def is_chief(strategy_name: str, env: Optional[Mapping] = None) -> bool:
    """True for the process that writes results (always, unless multi_worker)."""
    if strategy_name != "multi_worker":
        return True
    cluster, kind, index = parse_tf_config((env or os.environ).get("TF_CONFIG"))
    if "chief" in cluster:
        return kind == "chief"
    return kind == "worker" and index == 0


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The tf.distribute strategy named by ``--strategy``."""
    import tensorflow as tf

    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if len(gpus) <= 1:
        # One device: a MirroredStrategy would hold one replica and only add its wrapping
        # (dataset distribution, per-step replica dispatch): measured 1.5x slower training
        # on 2 CPU cores (preset cpu_small: 99 against 144 views/s). The default strategy
        # runs the same math on that device.
        return tf.distribute.get_strategy()
    return tf.distribute.MirroredStrategy()


def strategy_kind(strategy: tf.distribute.Strategy) -> str:
    """What trains, by the name of its --strategy value: ``default`` is TensorFlow's
    default strategy, which --strategy=mirrored runs on one device."""
    import tensorflow as tf

    kinds = [(tf.distribute.MultiWorkerMirroredStrategy, "multi_worker"),
             (tf.distribute.MirroredStrategy, "mirrored"),
             (tf.distribute.OneDeviceStrategy, "one_device")]
    return next((name for cls, name in kinds if isinstance(strategy, cls)), "default")


def worker_dir(run_dir: str, chief: bool) -> str:
    """Where this worker writes: the run directory on the chief, a private temp dir otherwise."""
    if chief:
        return run_dir
    _, kind, index = parse_tf_config(os.environ.get("TF_CONFIG"))
    return tempfile.mkdtemp(prefix=f"droc_{kind}{index}_")
