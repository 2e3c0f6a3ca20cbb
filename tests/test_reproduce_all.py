"""script/reproduce_all.sh: the plan (dry run), sharding, skipping, and a real tiny smoke run."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "script" / "reproduce_all.sh"


def run(*args, timeout=120):
    return subprocess.run(["bash", str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout, env={"PATH": "/usr/bin:/bin",
                                                          "PYTHON": sys.executable,
                                                          "TF_CPP_MIN_LOG_LEVEL": "2"})


def commands(out):
    return [l for l in out.stdout.splitlines() if "train_and_eval_loop.py" in l]


def test_smoke_plan_has_every_table_row_once(tmp_path):
    out = run("--smoke", "--dry_run", "--datasets=digitsood", f"--runs_root={tmp_path}")
    assert out.returncode == 0, out.stderr
    cmds = commands(out)
    rows = [c.split("--model_dir=")[1].split()[0].split("/")[-4] for c in cmds]
    assert rows == ["random_init", "raw_pixels", "denoising", "rotnet", "rotation_head",
                    "contrastive", "contrastive_da", "da_hflip", "da_vflip", "da_4"]
    assert all("--preset=smoke" in c and "--category=0" in c and "--seed=0" in c for c in cmds)
    rotnet = cmds[rows.index("rotnet")]
    assert "--model_type=rotation --head_dims= " in rotnet
    hflip = cmds[rows.index("da_hflip")]
    assert "--distaug_type=hflip" in hflip and "+hflip" not in hflip
    assert "+hflip" in cmds[rows.index("contrastive_da")]


def test_figure7_rows_drop_hflip_for_every_type_as_the_release(tmp_path):
    """The release's Figure-7 block trains every distribution-augmentation type 1..8 without
    the random hflip (type 1 included); its main block keeps hflip for rot."""
    out = run("--dry_run", "--datasets=cifar10ood", "--categories=0", "--seeds=1",
              "--tables=2", "--figures=distaug", f"--runs_root={tmp_path}")
    assert out.returncode == 0, out.stderr
    cmds = commands(out)
    fig7 = {c.split("--distaug_type=")[1].split()[0]: c for c in cmds if "/distaug--" in c}
    assert sorted(fig7) == [str(k) for k in range(1, 9)]
    assert all("+hflip" not in c for c in fig7.values())
    main = next(c for c in cmds if "/contrastive_da/" in c)
    assert "--distaug_type=rot" in main and "+hflip" in main


def test_full_plan_size_shards_and_figures(tmp_path):
    full = commands(run("--dry_run", "--datasets=cifar10ood", f"--runs_root={tmp_path}"))
    assert len(full) == 10 * 10 * 5  # rows x classes x seeds
    assert all("--num_epoch=2048" in c for c in full)
    shards = [commands(run("--dry_run", "--datasets=cifar10ood", f"--shard={i}/3",
                           f"--runs_root={tmp_path}")) for i in range(3)]
    assert sorted(sum(shards, [])) == sorted(full) and [len(s) for s in shards] == [167, 167, 166]
    figs = commands(run("--dry_run", "--smoke", "--tables=", "--figures=unsup,data",
                        "--datasets=cifar10ood", f"--runs_root={tmp_path}"))
    names = [c.split("--model_dir=")[1].split("/")[-4] for c in figs]
    assert names == ["unsup--rotation_head--0.02", "unsup--rotation_head--0.1",
                     "unsup--contrastive_da--0.02", "unsup--contrastive_da--0.1",
                     "data--rotation_head--50", "data--rotation_head--500",
                     "data--contrastive_da--50", "data--contrastive_da--500"]
    assert "--outlier_ratio=0.1" in figs[1] and "--num_train=500" in figs[-1]


def test_bad_shard_and_rows_are_errors():
    out = run("--dry_run", "--shard=3/3")
    assert out.returncode == 2 and "--shard=3/3 must be i/n" in out.stderr
    out = run("--dry_run", "--rows=rotnet,nope")
    assert out.returncode == 2 and out.stderr.startswith("error: --rows nope not among")


@pytest.mark.slow
def test_real_tiny_smoke_run_then_skip(tmp_path):
    args = ["--smoke", "--datasets=digitsood", "--categories=3",
            "--rows=random_init,rotnet,contrastive_da", f"--runs_root={tmp_path}", "--",
            "--net_type=ResNet10", "--net_width=0.125", "--num_batch=2", "--batch_size=16",
            "--detectors=kde,gde", "--eval_batch_size=128", "--noexport"]
    out = run(*args, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    for row in ("random_init", "rotnet", "contrastive_da"):
        summary = json.loads((tmp_path / row / "digitsood" / "3" / "s0" / "stats" /
                              "summary.json").read_text())
        assert summary["meta"]["category"] == "3"
        assert summary["meta"]["epochs"] == (0 if row == "random_init" else 4)
    assert "Table 2" in out.stdout and "RotNet / KDE" in out.stdout
    assert (tmp_path / "summary" / "summary.md").exists()
    again = run(*args, timeout=300)
    assert again.returncode == 0 and "skipped 3 finished job(s); 0 failed" in again.stdout
    dry = run(*args[:5], "--dry_run")
    assert sum(l.startswith("# done: ") for l in dry.stdout.splitlines()) == 3
