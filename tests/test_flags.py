"""Bad command lines: exit 2, one `error:` line naming the flag, nothing written, no TF.

The table runs in one fresh interpreter (so `tensorflow not in sys.modules` is
meaningful) through the entry point's own `cli(argv)`; a few rows also run as
real subprocesses to check the exit status and stderr of the script itself.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "train_and_eval_loop.py"

GOOD_TF_CONFIG = json.dumps({"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]},
                             "task": {"type": "worker", "index": 0}})

# (args, flag the error line must name, TF_CONFIG or None)
BAD = [
    (["--batch_size=abc"], "batch_size", None),
    (["--seed=abc"], "seed", None),
    (["--seed=-1"], "seed", None),
    (["--seed=99999999999"], "seed", None),
    (["--max_detector_train=-1"], "max_detector_train", None),
    (["--stem_width=-8"], "stem_width", None),
    (["--momentum=1.5"], "momentum", None),
    (["--momentum=-0.1"], "momentum", None),
    (["--net_width=nan"], "net_width", None),
    (["--net_width=0"], "net_width", None),
    (["--net_type=ResNet99"], "net_type", None),
    (["--detectors=kde,kde"], "detectors", None),
    (["--detectors=kde,svm"], "detectors", None),
    (["--temperature=0"], "temperature", None),
    (["--temperature=1e-9"], "temperature", None),
    (["--learning_rate=-1"], "learning_rate", None),
    (["--learning_rate=inf"], "learning_rate", None),
    (["--weight_decay=-1"], "weight_decay", None),
    (["--num_epoch=-2"], "num_epoch", None),
    (["--num_batch=-1"], "num_batch", None),
    (["--eval_epoch=-1"], "eval_epoch", None),
    (["--batch_size=0"], "batch_size", None),
    (["--ckpt_epoch=0"], "ckpt_epoch", None),
    (["--eval_batch_size=0"], "eval_batch_size", None),
    (["--model_type=simclr"], "model_type", None),
    (["--dataset=imagenet"], "dataset", None),
    (["--dataset=folder"], "root", None),
    (["--root=/nonexistent/droc"], "root", None),
    (["--input_shape=32,48,3"], "input_shape", None),
    (["--input_shape=abc"], "input_shape", None),
    (["--input_bits=7"], "input_bits", None),
    (["--input_bits=17"], "input_bits", None),
    (["--input_bits=12"], "input_bits", None),  # digitsood is not read from image files
    (["--head_dims=512y8"], "head_dims", None),
    (["--head_dims=", "--model_type=contrastive"], "head_dims", None),
    (["--aug_list=cnr0.5+spin"], "aug_list", None),
    (["--distaug_type=rot45"], "distaug_type", None),
    (["--preset=gpu_huge"], "preset", None),
    (["--strategy=tpu"], "strategy", None),
    (["--mixed_precision=fp8"], "mixed_precision", None),
    (["--nosuch_flag=1"], "nosuch_flag", None),
    (["--force_init", "--reevaluate"], "reevaluate", None),
    (["--strategy=multi_worker"], "TF_CONFIG", ""),
    (["--strategy=multi_worker"], "TF_CONFIG", "{not json"),
    (["--strategy=multi_worker"], "TF_CONFIG",
     json.dumps({"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 3}})),
    (["--strategy=multi_worker"], "TF_CONFIG",
     json.dumps({"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "chief", "index": 0}})),
    (["--model_dir=FILE"], "model_dir", None),
    (["--model_dir=FILE/run"], "model_dir", None),
    (["stray_argument"], "stray_argument", None),
]

RUNNER = r"""
import contextlib, io, json, os, sys
sys.argv = ["train_and_eval_loop.py"]
import train_and_eval_loop as entry
rows = json.loads(sys.stdin.read())
out = []
for args, tf_config in rows:
    os.environ.pop("TF_CONFIG", None)
    if tf_config is not None:
        os.environ["TF_CONFIG"] = tf_config
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = entry.cli(["train_and_eval_loop.py", *args])
    out.append({"code": code, "stderr": err.getvalue()})
print(json.dumps({"rows": out, "tensorflow": "tensorflow" in sys.modules,
                  "keras": "keras" in sys.modules}))
"""


def _materialise(args, tmp):
    return [a.replace("FILE", str(tmp / "a_file")) for a in args]


def test_bad_command_table(tmp_path):
    assert len(BAD) >= 25
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (tmp_path / "a_file").write_text("not a directory")
    before = sorted(p.name for p in tmp_path.iterdir())
    rows = [(["--dataset=digitsood", f"--model_dir={tmp_path / 'run'}", *_materialise(a, tmp_path)]
             if not any(x.startswith("--model_dir") for x in a) else _materialise(a, tmp_path),
             tf_config) for a, _, tf_config in BAD]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("TF_CONFIG", None)
    proc = subprocess.run([sys.executable, "-c", RUNNER], input=json.dumps(rows), cwd=cwd,
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for (args, flag, _), row in zip(BAD, result["rows"]):
        lines = [line for line in row["stderr"].splitlines() if line.strip()]
        assert row["code"] == 2, (args, row)
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, row["stderr"])
        assert flag in lines[0], (args, lines[0])
    assert not result["tensorflow"] and not result["keras"]
    assert list(cwd.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no run directory
    assert not (ROOT / "runs").exists() or not any((ROOT / "runs").glob("digitsood_*"))


@pytest.mark.parametrize("args, flag", [(["--batch_size=abc"], "batch_size"),
                                        (["--seed=-1"], "seed"),
                                        (["--strategy=tpu"], "strategy")])
def test_script_exit_status_and_one_line(tmp_path, args, flag):
    proc = subprocess.run([sys.executable, str(SCRIPT), f"--model_dir={tmp_path / 'run'}", *args],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and flag in lines[0]
    assert [p.name for p in tmp_path.iterdir()] == []


def test_good_tf_config_passes():
    from engine.distribute import is_chief, parse_tf_config

    cluster, kind, index = parse_tf_config(GOOD_TF_CONFIG)
    assert (kind, index, len(cluster["worker"])) == ("worker", 0, 2)
    assert is_chief("multi_worker", {"TF_CONFIG": GOOD_TF_CONFIG})
    other = GOOD_TF_CONFIG.replace('"index": 0', '"index": 1')
    assert not is_chief("multi_worker", {"TF_CONFIG": other})
    assert is_chief("mirrored", {})


def test_flag_precedence_explicit_then_preset_then_model_default():
    from engine.config import resolve_config
    from engine.presets import PRESETS

    preset = PRESETS["cpu_small"]
    # explicit flag beats the preset
    cfg = resolve_config(dict(preset="cpu_small", batch_size=48, learning_rate=0.5),
                         explicit={"batch_size", "learning_rate"})
    assert cfg["batch_size"] == 48 and cfg["learning_rate"] == 0.5
    # the preset beats the per-model default and the flag default
    assert cfg["head_dims"] == preset["head_dims"] != "512x8,128"
    assert cfg["num_epoch"] == preset["num_epoch"]
    # a value equal to the flag default but given explicitly still beats the preset
    cfg = resolve_config(dict(preset="cpu_small", learning_rate=0.01), explicit={"learning_rate"})
    assert cfg["learning_rate"] == 0.01 != preset["learning_rate"]
    # without flag or preset: the per-model default
    cfg = resolve_config(dict(model_type="rotation"), explicit={"model_type"})
    assert (cfg["batch_size"], cfg["head_dims"], cfg["distaug_type"]) == (64, "512x8", "none")
    cfg = resolve_config(dict(model_type="contrastive_da"), explicit={"model_type"})
    assert (cfg["batch_size"], cfg["distaug_type"]) == (32, "rot")
    # an explicit flag beats the per-model default
    cfg = resolve_config(dict(model_type="rotation", batch_size=8), explicit={"batch_size"})
    assert cfg["batch_size"] == 8


def test_tf_free_tables_match_the_real_builders():
    """model/spec.py and the string class names of model/registry.py agree with the models."""
    from model import heads, resnet
    from model.registry import MODEL_TYPES, model_class
    from model.spec import RESNET_SPECS, check_input_shape, parse_head_dims

    assert resnet.RESNET_SPECS is RESNET_SPECS and resnet.check_input_shape is check_input_shape
    assert heads.parse_head_dims is parse_head_dims
    from model.base import OneClassModel
    from model.contrastive import ContrastiveModel

    for name, spec in MODEL_TYPES.items():
        cls = model_class(name)
        assert issubclass(cls, OneClassModel)
        assert spec["contrastive"] == issubclass(cls, ContrastiveModel)


def test_rotation_preset_views_are_crop_flip_gray_then_each_fixed_rotation():
    """cpu_small_rotation: four independent crop+flip+grayscale views, view k rotated by k*90
    degrees, no colour jitter or blur (picked on the validation protocol); the test views are
    the plain rotations."""
    from data.aug_spec import parse_aug_list
    from engine.config import resolve_config

    cfg = resolve_config(dict(preset="cpu_small_rotation"))
    assert cfg["model_type"] == "rotation"
    chains = parse_aug_list(cfg["aug_list"])
    rotations = [None, "rotate90", "rotate180", "rotate270"]
    assert len(chains) == 4
    for chain, rotation in zip(chains, rotations):
        names = [name for name, _ in chain]
        assert names == ["cnr", "hflip", "gray"] + ([rotation] if rotation else [])
    assert [[name for name, _ in c] for c in parse_aug_list(cfg["aug_list_for_test"])] == \
        [[r] if r else [] for r in rotations]
    # the paper's rotation recipe (colour jitter, grayscale, blur) stays the model default
    paper = resolve_config(dict(model_type="rotation"), explicit={"model_type"})
    assert {"jitter", "gray", "blur"} <= {n for c in parse_aug_list(paper["aug_list"]) for n, _ in c}
