"""--mixed_precision=auto: bf16 only where the hardware has bf16 matrix units, and
summary.json says which precision ran and why."""

import json

import keras
import pytest

from engine.precision import choose_precision, cpu_flags
from tests.entry_point import run_cli

AMX_CPU = ("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8481C\n"
           "flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n")
EPYC_BF16 = ("processor\t: 0\nmodel name\t: AMD EPYC 9B14\n"
             "flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n")


AVX2_CPU = ("processor\t: 0\nmodel name\t: AMD EPYC 7B13\n"
            "flags\t\t: fpu sse2 avx avx2 fma\n")


@pytest.mark.parametrize("mode, cpuinfo, gpus, warned", [
    ("bf16", AVX2_CPU, [], True),  # no bf16 instructions: oneDNN emulates it
    ("bf16", "", [], True),  # flags unknown: no bf16 unit can be assumed
    ("bf16", EPYC_BF16, [], False),
    ("bf16", AMX_CPU, [], False),
    ("bf16", AVX2_CPU, [(8, 0)], False),  # the GPU trains, with bf16 tensor cores
    ("bf16", AMX_CPU, [(7, 5)], True),  # the GPU trains, without them
    ("fp16", AMX_CPU, [], True),
    ("fp16", AVX2_CPU, [(7, 0)], False),
    ("none", AVX2_CPU, [], False),
])
def test_a_precision_the_hardware_would_emulate_is_warned_about(mode, cpuinfo, gpus, warned):
    choice = choose_precision(mode, cpuinfo, gpus)
    assert choice.precision == mode
    assert bool(choice.warning) == warned


def test_auto_never_picks_an_emulated_precision():
    for cpuinfo in (AMX_CPU, EPYC_BF16, AVX2_CPU, ""):
        for gpus in ([], [(7, 5)], [(8, 6)]):
            assert choose_precision("auto", cpuinfo, gpus).warning is None


def test_cpu_flags_are_read_from_the_flags_line():
    assert {"amx_bf16", "avx512_bf16"} <= cpu_flags(AMX_CPU)
    assert cpu_flags("model name : amx_bf16 in a name\n") == set()  # only the flags line


@pytest.mark.parametrize("cpuinfo, gpus, want", [
    (AMX_CPU, [], "bf16"),
    (EPYC_BF16, [], "none"),  # AVX512_BF16 dot products, but no matrix unit
    ("", [], "none"),  # no /proc/cpuinfo (not Linux)
    (EPYC_BF16, [(8, 0)], "bf16"),  # an Ampere GPU trains the run
    (EPYC_BF16, [(9, 0), (8, 6)], "bf16"),
    (AMX_CPU, [(7, 5)], "none"),  # a Turing GPU trains the run, the CPU's AMX is idle
    (EPYC_BF16, [(8, 0), (7, 0)], "none"),  # the oldest GPU decides
])
def test_auto_picks_bf16_only_with_bf16_matrix_units(cpuinfo, gpus, want):
    choice = choose_precision("auto", cpuinfo, gpus)
    assert (choice.requested, choice.precision) == ("auto", want)
    assert choice.reason


@pytest.mark.parametrize("mode", ["none", "bf16", "fp16"])
def test_explicit_modes_are_taken_as_asked_on_any_hardware(mode):
    assert choose_precision(mode, AMX_CPU, [(7, 5)]).precision == mode
    assert choose_precision(mode, "", []).precision == mode


@pytest.mark.slow
@pytest.mark.parametrize("cpuinfo, want", [(AMX_CPU, "bf16"), (EPYC_BF16, "none")])
def test_summary_records_the_precision_auto_ran(tmp_path, monkeypatch, cpuinfo, want):
    import engine.experiment

    monkeypatch.setattr(engine.experiment, "read_cpuinfo", lambda: cpuinfo)
    applied = []  # the policy the model was built under (the session is cleared after a run)
    set_precision = engine.experiment.set_precision

    def spy(mode):
        choice = set_precision(mode)
        applied.append(keras.mixed_precision.global_policy().name)
        return choice

    monkeypatch.setattr(engine.experiment, "set_precision", spy)
    run_dir = tmp_path / "run"
    try:
        out = run_cli(["--dataset=digitsood", "--category=0", "--model_type=contrastive",
                       "--net_type=ResNet10", "--net_width=0.125", "--head_dims=32,16",
                       "--num_epoch=1", "--num_batch=2", "--batch_size=16",
                       "--detectors=kde", "--noexport", "--mixed_precision=auto",
                       f"--model_dir={run_dir}"])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert out.returncode == 0, out.stderr[-3000:]
    meta = json.loads((run_dir / "stats" / "summary.json").read_text())["meta"]
    assert meta["precision"]["requested"] == "auto"
    assert meta["precision"]["precision"] == want
    assert ("amx_bf16" in meta["precision"]["reason"]) and meta["precision"]["reason"]
    assert applied == [{"bf16": "mixed_bfloat16", "none": "float32"}[want]]
    # the run's configuration keeps what was asked: a rerun with auto resumes it
    assert json.loads((run_dir / "stats" / "hparams.json").read_text())["mixed_precision"] == "auto"
