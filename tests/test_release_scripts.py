"""The release's three run scripts, flag for flag, against our entry point.

RELEASE holds the flags of the release's script/run_rotation.sh, run_contrastive.sh
and run_contrastive_da.sh with their variables filled in (DATA=cifar10ood,
SEED=1, CATEGORY=0, PREFIX empty as in the scripts, MODEL_DIR a path). Each set
must (1) parse, (2) resolve to the same configuration as our own script for the
same experiment and as our bare per-model-type defaults, and (3) train for a
few steps through train_and_eval_loop.py.
"""

import importlib.util
import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest
from absl import flags

from model.heads import parse_head_dims
from engine.config import resolve_config
from engine.flags import FLAG_DEFAULTS, define_flags

ROOT = Path(__file__).resolve().parents[1]
AUG = "cnr0.5+hflip+jitter_b0.4_c0.4_s0.4_h0.4+gray0.2+blur0.5"
COMMON = ["--dataset=cifar10ood", "--category=0", "--seed=1", "--root=", "--net_type=ResNet18",
          "--net_width=1", "--input_shape=32,32,3", "--optim_type=sgd", "--sched_type=cos",
          "--learning_rate=0.01", "--momentum=0.9", "--weight_decay=0.0003", "--num_epoch=2048"]
RELEASE = {
    "rotation": ["--method=UnsupEmbed", "--file_path=cifar10ood__s1_c0", *COMMON,
                 "--latent_dim=4", f"--aug_list={AUG},+rotate90,+rotate180,+rotate270",
                 "--aug_list_for_test=x,+rotate90,+rotate180,+rotate270",
                 "--head_dims=512,512,512,512,512,512,512,512", "--batch_size=64"],
    "contrastive": ["--method=Contrastive", "--file_path=cifar10ood__s1_c0", *COMMON,
                    "--latent_dim=0", f"--aug_list={AUG},+", "--aug_list_for_test=x",
                    "--head_dims=512,512,512,512,512,512,512,512,128", "--batch_size=32",
                    "--temperature=0.2", "--distaug_type", "1"],
    "contrastive_da": ["--method=Contrastive", "--file_path=cifar10ood__s1_c0", *COMMON,
                       "--latent_dim=0", f"--aug_list={AUG},+", "--aug_list_for_test=x",
                       "--head_dims=512,512,512,512,512,512,512,512,128", "--batch_size=32",
                       "--temperature=0.2", "--distaug_type", "rot"],
}
# i7a's multi-view augmentation grammar and --aug_list_for_test (data/aug_spec.py)
HAVE_VIEW_GRAMMAR = importlib.util.find_spec("data.aug_spec") is not None
HAVE_TEST_AUG = "aug_list_for_test" in FLAG_DEFAULTS


def parse(args):
    fv = flags.FlagValues()

    class Defs:
        def __getattr__(self, name):
            fn = getattr(flags, name)
            return lambda *a, **k: fn(*a, flag_values=fv, **k)

    define_flags(Defs())
    fv(["train_and_eval_loop.py", *args])
    explicit = {name for name in FLAG_DEFAULTS if fv[name].present}
    return resolve_config({name: fv[name].value for name in FLAG_DEFAULTS}, explicit)


def without_test_views(args):
    return [a for a in args if HAVE_TEST_AUG or not a.startswith("--aug_list_for_test")]


def our_script_args(model_type):
    """The arguments our script/run_<model_type>.sh passes (its python replaced by echo)."""
    out = subprocess.run(["bash", str(ROOT / "script" / f"run_{model_type}.sh"), "cifar10ood",
                          "0", "1"], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHON="echo"))
    return shlex.split(out.stdout)[1:]


def views(cfg):
    """The augmentation chain of every view, in the release's grammar ('+x' appends to
    the first entry). A single chain of ours is the model's implicit view set."""
    entries = cfg["aug_list"].split(",")
    if len(entries) == 1 and cfg["model_type"] != "rotation":
        return entries * 2  # a contrastive model draws a one-entry list twice
    if len(entries) == 1 and not HAVE_VIEW_GRAMMAR:
        a = entries[0]
        return [a] + [f"{a}+rotate{d}" for d in (90, 180, 270)]
    first = entries[0]
    return [first] + [(first + e).rstrip("+") if e.startswith("+") else e for e in entries[1:]]


def comparable(cfg):
    out = {k: v for k, v in cfg.items()
           if k not in ("method", "file_path", "latent_dim", "model_dir", "aug_list", "root")}
    out["head_dims"] = parse_head_dims(cfg["head_dims"])
    out["views"] = views(cfg)
    return out


@pytest.mark.parametrize("model_type", list(RELEASE))
def test_release_flags_resolve_to_our_recipe(model_type):
    release = parse(without_test_views(RELEASE[model_type]))
    ours = parse(our_script_args(model_type))
    bare = parse([f"--model_type={model_type}", "--dataset=cifar10ood", "--category=0",
                  "--seed=1"])
    assert release["model_type"] == model_type
    assert comparable(release) == comparable(ours) == comparable(bare)
    assert release["model_dir"] == "runs/cifar10ood_s1_c0"
    assert ours["model_dir"] == bare["model_dir"] == f"runs/cifar10ood_0_{model_type}_s1"


def tiny(args, model_dir):
    """The release's flags with paths, dataset, epochs and width made tiny; one detector
    (the release's flags name none; tests/test_end_to_end.py runs them all)."""
    out = []
    for a in args:
        if a.startswith(("--dataset=", "--num_epoch=", "--net_width=")):
            continue
        if not HAVE_VIEW_GRAMMAR and a.startswith("--aug_list"):
            # before the multi-view grammar: our single chain is the same view set
            if a.startswith("--aug_list_for_test"):
                continue
            a = a.split(",")[0]
        out.append(a)
    return out + [f"--model_dir={model_dir}", "--dataset=digitsood", "--num_epoch=1",
                  "--num_batch=2", "--net_width=0.125", "--eval_epoch=0", "--noexport",
                  "--detectors=kde"]


@pytest.mark.slow
@pytest.mark.parametrize("model_type", list(RELEASE))
def test_release_flags_train_through_the_entry_point(tmp_path, model_type, monkeypatch):
    from tests.entry_point import run_in_process

    args = tiny(RELEASE[model_type], tmp_path)
    monkeypatch.setenv("DROC_CACHE_DIR", str(tmp_path / "cache"))
    proc = run_in_process(args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "cifar10ood_s1_c0"  # --file_path under --model_dir, '__' collapsed
    summary = json.loads((run_dir / "stats" / "summary.json").read_text())
    hparams = json.loads((run_dir / "stats" / "hparams.json").read_text())
    assert summary["meta"]["model_type"] == model_type
    assert summary["meta"]["steps_per_epoch"] == 2
    assert hparams["optim_type"] == "sgd" and hparams["sched_type"] == "cos"
    assert parse_head_dims(hparams["head_dims"])[0] == 512
    assert ("logit.auc" in summary) is (model_type == "rotation")
