"""Which compute precision a run uses: ``--mixed_precision=auto`` picks bf16 only on
hardware with bf16 matrix units, where it pays off; elsewhere bf16 is emulated or
computed on the fp32 units and is slower or no faster than fp32.

TF-free: the caller passes the CPU's /proc/cpuinfo text and the GPUs' compute
capabilities, so the rule is testable with faked hardware.
"""

from pathlib import Path
from typing import NamedTuple, Optional, Sequence

PRECISIONS = ("none", "bf16", "fp16", "auto")
#: the Keras mixed-precision policy of each concrete precision
POLICIES = {"none": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
#: how benchmarks name each concrete precision
LABELS = {"none": "fp32", "bf16": "bf16", "fp16": "fp16"}
#: Ampere and later have bf16 tensor cores
MIN_BF16_GPU_CAPABILITY = (8, 0)
#: CPU flags of hardware bf16 arithmetic (AMX tiles, AVX-512 bf16 dot products)
BF16_CPU_FLAGS = {"amx_bf16", "avx512_bf16"}


class PrecisionChoice(NamedTuple):
    """What was asked, what runs (none, bf16 or fp16), why, and a warning when the hardware
    has no units for it (all recorded in summary.json)."""

    requested: str
    precision: str
    reason: str
    warning: Optional[str] = None


def cpu_flags(cpuinfo_text: str) -> set:
    """The feature flags of the first CPU in a /proc/cpuinfo text (empty if none listed)."""
    for line in cpuinfo_text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def read_cpuinfo(path: Path | str = "/proc/cpuinfo") -> str:
    try:
        return Path(path).read_text()
    except OSError:  # not Linux: no flags known, so no AMX assumed
        return ""


def emulation_warning(precision: str, cpuinfo_text: str,
                      gpu_capabilities: Sequence[tuple[int, int]]) -> Optional[str]:
    """Why ``precision`` will be slower than fp32 on this hardware, or None.

    Without bf16 instructions (AVX2-only CPUs) the convolution gradients run
    emulated: a bf16 training step took 5.4x the op time of the fp32 one on a
    2-core AVX2 AMD EPYC (docs/performance.md). With AVX512_BF16 but no AMX bf16
    is faster than fp32 (the width-1 step 2.1x less op time)."""
    if precision == "bf16":
        if gpu_capabilities:
            oldest = min(tuple(c) for c in gpu_capabilities)
            if oldest < MIN_BF16_GPU_CAPABILITY:
                return (f"bf16 on a GPU of compute capability {'.'.join(map(str, oldest))} "
                        "(< 8.0) has no bf16 tensor cores and is emulated")
            return None
        if not cpu_flags(cpuinfo_text) & BF16_CPU_FLAGS:
            return ("bf16 on this CPU is emulated (neither amx_bf16 nor avx512_bf16 in its "
                    "flags): expect it to run several times slower than --mixed_precision=none")
    if precision == "fp16" and not gpu_capabilities:
        return ("fp16 on the CPU is emulated and slower than fp32; it is meant for GPUs "
                "(--mixed_precision=bf16 or none on a CPU)")
    return None


def choose_precision(requested: str, cpuinfo_text: str,
                     gpu_capabilities: Sequence[tuple[int, int]]) -> PrecisionChoice:
    """The run's precision. ``gpu_capabilities``: (major, minor) per visible GPU; with
    GPUs the run trains on them, so their bf16 units decide, else the CPU's AMX."""
    if requested != "auto":
        return PrecisionChoice(requested, requested, "requested",
                               emulation_warning(requested, cpuinfo_text, gpu_capabilities))
    if gpu_capabilities:
        oldest = min(tuple(c) for c in gpu_capabilities)
        cc = ".".join(map(str, oldest))
        if oldest >= MIN_BF16_GPU_CAPABILITY:
            return PrecisionChoice("auto", "bf16", f"every GPU has compute capability >= 8.0 "
                                                   f"(lowest {cc}): bf16 tensor cores")
        return PrecisionChoice("auto", "none", f"a GPU has compute capability {cc} < 8.0: "
                                               "no bf16 tensor cores")
    if "amx_bf16" in cpu_flags(cpuinfo_text):
        return PrecisionChoice("auto", "bf16", "CPU has AMX (amx_bf16): bf16 matrix units")
    return PrecisionChoice("auto", "none", "no GPU, and the CPU has no AMX (amx_bf16 not in "
                                           "its flags): no bf16 matrix units")
