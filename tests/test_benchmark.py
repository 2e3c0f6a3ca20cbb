"""script/benchmark.py --quick runs and its JSON has every field (timings are not asserted).

The benchmark runs in the test process (bench.runner.main, what script/benchmark.py
calls): its sections already build, train and clear their models in one process."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_throughput_times_every_trainable_proxy_task(tmp_path, monkeypatch):
    """CutPaste makes its defect copies inside the step: its pipeline hands one batch,
    and every network input (3 per image) is counted; denoising one view; the op
    thread settings are read from the environment TensorFlow started with."""
    from bench.runner import main

    monkeypatch.setenv("TF_NUM_INTEROP_THREADS", "1")
    monkeypatch.delenv("TF_NUM_INTRAOP_THREADS", raising=False)
    assert main(["--sections=throughput", "--widths=0.125", "--steps=1", "--repeats=1",
                 "--model_types=cutpaste,denoising", "--tfdata_threads=1",
                 f"--out={tmp_path}"]) == 0
    result = json.loads((tmp_path / "benchmark.json").read_text())
    assert result["machine"]["threads"] == {"intra_op": None, "inter_op": "1"}
    rows = {r["model_type"]: r for r in result["throughput"]}
    assert (rows["cutpaste"]["views_per_image"], rows["denoising"]["views_per_image"]) == (3, 1)
    for r in rows.values():
        assert r["train_images_per_sec"] > 0 and r["jit_compile"] is False
        assert r["pipeline_step_fraction"] == pytest.approx(
            r["ceiling_images_per_sec"] / r["pipeline_images_per_sec"])


@pytest.mark.slow
def test_quick_benchmark_writes_every_field(tmp_path, monkeypatch):
    from bench.runner import main

    for var in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        monkeypatch.delenv(var, raising=False)
    assert main(["--quick", f"--out={tmp_path}"]) == 0
    result = json.loads((tmp_path / "benchmark.json").read_text())
    assert {"cpu", "cores", "tensorflow", "keras", "gpu_used"} <= set(result["machine"])
    from engine.precision import cpu_flags, read_cpuinfo

    # the flags that decide bf16 speed, as this machine has them; thread settings from env
    assert set(result["machine"]["cpu_matrix_flags"]) == cpu_flags(read_cpuinfo()) & {
        "amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2", "fma"}
    assert result["machine"]["threads"] == {"intra_op": None, "inter_op": None}
    rows = result["throughput"]
    assert {r["model_type"] for r in rows} == {"contrastive_da", "rotation"}  # --quick's two
    for r in rows:
        for key in ("train_images_per_sec", "ceiling_images_per_sec", "pipeline_images_per_sec",
                    "extract_images_per_sec"):
            assert r[key] > 0, key
        # the share is the one derived from the two reported rates (not clamped)
        assert r["pipeline_share"] == pytest.approx(
            (r["ceiling_images_per_sec"] - r["train_images_per_sec"]) / r["ceiling_images_per_sec"])
        assert r["train_images_per_sec"] == pytest.approx(np.median(r["repetitions"]["train"]))
        assert r["pipeline_step_fraction"] == pytest.approx(
            r["ceiling_images_per_sec"] / r["pipeline_images_per_sec"])
        assert r["views_per_image"] == (4 if r["model_type"] == "rotation" else 2)
    flops = result["flops"]  # bench/flops.py: one row per throughput row
    assert [(f["model_type"], f["net_width"]) for f in flops["rows"]] == \
        [(r["model_type"], r["net_width"]) for r in rows]
    for prec in ("fp32", "bf16"):  # both references measured in the same run
        assert flops["references"][prec]["matmul_gflops"] > 0
        assert flops["references"][prec]["conv_gflops"] > 0
    for f, r in zip(flops["rows"], rows):
        assert f["precision"] == r["precision"] == "fp32"  # --mixed_precision's default
        assert "fit_fraction_of_bf16_matmul" not in f
        assert f["gflop_per_view"] == pytest.approx(0.279, abs=0.002)  # width 0.25
        assert f["fit_gflops"] == pytest.approx(f["gflop_per_view"] * r["train_images_per_sec"])
        assert f["fit_fraction_of_matmul"] == pytest.approx(f["fit_gflops"] / flops["matmul_gflops"])
    detectors = {d["detector"] for d in result["detectors"]}
    assert detectors == {"kde", "gde", "auc", "kocsvm", "locsvm"}
    for d in result["detectors"]:
        assert d["fit_s"] >= 0 and d["score_s"] >= 0 and "peak_mb" in d
    quality = result["quality"]
    assert len(quality) == 1
    q = quality[0]
    assert len(q["random_init"]) == 3 and "kde" in q["raw_pixels"]
    for mt in ("contrastive_da", "rotation"):
        # the final AUC is the last evaluation of the history, the best is its maximum
        history = q[mt]["history"]
        assert history[-1]["pool.kde"] == q[mt]["final"]["pool.kde"]
        assert q[mt]["best_pool_kde"] == max(h["pool.kde"] for h in history)
        assert [h["epoch"] for h in history] == sorted({h["epoch"] for h in history})
        assert q[mt]["steps"] == 8  # --quick's budget: 2 epochs x 4 steps
    assert (tmp_path / "quality.md").read_text().startswith("| class |")


@pytest.mark.slow
def test_quality_models_rejects_unknown_model(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "script" / "benchmark.py"), "--quick",
                          "--sections=quality", "--quality_models=contrastive_da,simclr",
                          f"--out={tmp_path}"], capture_output=True, text=True, cwd=ROOT,
                         timeout=300)
    assert out.returncode == 2
    assert "simclr" in out.stderr and not (tmp_path / "benchmark.json").exists()


def test_quality_markdown_skips_models_not_trained():
    from bench.runner import quality_markdown

    final = {"pool.kde": 70.0, "pool.gde": 69.0}
    row = dict(category="cat", raw_pixels={"kde": 45.0, "gde": 55.0, "auc": 47.0},
               random_init=[final] * 3,
               contrastive_da=dict(final=final, steps=4500, best_pool_kde=71.0))
    table = quality_markdown([row])
    assert "contrastive_da (4500 steps; best pool.kde 71.0) | 70.0 | 69.0 |" in table
    assert "rotation" not in table


BAD_ARGUMENTS = [
    (["--sections=speed"], "sections"), (["--widths=0.25,-1"], "widths"),
    (["--steps=0"], "steps"), (["--steps=abc"], "steps"), (["--model_types=simclr"], "model_types"),
    (["--contrastive_preset=nope"], "contrastive_preset"), (["--detector_sizes=x"], "detector_sizes"),
    (["--budget_steps=0"], "budget_steps"), (["--step_precisions=none,fp8"], "step_precisions"),
    (["--tfdata_threads=-1"], "tfdata_threads"),
    (["--sections=serve", "--serve_export=no/such/export"], "--serve_export"),
    (["--sections=serve", "--serve_images=0"], "--serve_images"),
]


@pytest.mark.parametrize("args, flag", BAD_ARGUMENTS)
def test_bad_arguments_exit_2_before_any_output(tmp_path, args, flag, capsys, monkeypatch):
    """What script/benchmark.py runs (bench.runner.main), in this process: one error line,
    exit code 2, no output folder."""
    from bench.runner import main

    monkeypatch.chdir(tmp_path)
    out_dir = tmp_path / "out"
    code = main([*args, f"--out={out_dir}"])
    lines = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:"), lines
    assert flag in lines[0]
    assert not out_dir.exists()


def test_the_script_prints_only_the_error_line(tmp_path):
    """The command itself, in a new interpreter: nothing from TensorFlow or Python but the
    one error line on stderr."""
    args, flag = BAD_ARGUMENTS[10]
    out_dir = tmp_path / "out"
    out = subprocess.run([sys.executable, str(ROOT / "script" / "benchmark.py"), *args,
                          f"--out={out_dir}"], capture_output=True, text=True, cwd=tmp_path,
                         timeout=120)
    lines = [l for l in out.stderr.splitlines() if l.strip()]
    assert out.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"), out.stderr
    assert flag in lines[0]
    assert not out_dir.exists()


def test_quality_runs_train_for_their_presets_budget_unless_one_is_given(tmp_path):
    """Each proxy task's quality run uses its own preset's step budget (contrastive 4,500,
    rotation 6,750 steps); --budget_steps overrides both exactly; random init trains 0 epochs."""
    from bench.runner import parse_args, quality_config

    def steps(argv, model_type, preset, epochs=None):
        cfg = quality_config(parse_args(argv), model_type, preset, "digitsood", None, "0",
                             tmp_path, epochs=epochs)
        return cfg["num_epoch"] * cfg["num_batch"]

    assert steps([], "contrastive_da", "cpu_small") == 4500
    assert steps([], "rotation", "cpu_small_rotation") == 6750
    assert steps(["--budget_steps=1000"], "rotation", "cpu_small_rotation") == 1000
    assert steps(["--budget_steps=1000"], "contrastive_da", "cpu_small", epochs=0) == 0
