"""Benchmark section ``determinism``: what ``--deterministic`` costs in training speed.

Trains the same small run (contrastive_da, ResNet-18 width 0.25, the embedded
digits data, so no download and no decoding time) with and without
``--deterministic``, alternating A, B, A, B, ... in fresh processes so that
the machine's load drifts over both alike. The figure is the run's own median
training images/s (``meta.train_images_per_sec`` of summary.json: the median
over epochs, the first one with its tracing included). Also checks that the
deterministic runs gave identical AUCs (what the flag promises).
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RUN_FLAGS = ["--model_type=contrastive_da", "--dataset=digitsood", "--category=0",
             "--net_width=0.25", "--batch_size=32", "--num_batch=20", "--num_epoch=3",
             "--eval_epoch=0", "--detectors=kde", "--seed=0"]


def _one_run(run_dir, deterministic):
    flag = "--deterministic" if deterministic else "--nodeterministic"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, str(ROOT / "train_and_eval_loop.py"), *RUN_FLAGS,
                           flag, f"--model_dir={run_dir}"], capture_output=True, text=True,
                          env=env, cwd=ROOT)
    if proc.returncode:
        raise RuntimeError(f"determinism benchmark run failed:\n{proc.stderr[-2000:]}")
    summary = json.loads((Path(run_dir) / "stats" / "summary.json").read_text())
    meta = summary.pop("meta")
    aucs = {k: v for k, v in summary.items() if isinstance(v, float)}
    return float(meta["train_images_per_sec"]), aucs


def determinism_section(args, log, pairs=None):
    pairs = pairs or (1 if getattr(args, "quick", False) else 3)
    rates = {False: [], True: []}
    aucs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(pairs):
            for det in (False, True):
                rate, auc = _one_run(f"{tmp}/{'det' if det else 'nondet'}{i}", det)
                rates[det].append(rate)
                if det:
                    aucs.append(auc)
                log(f"  determinism pair {i}: {'--deterministic  ' if det else 'default          '}"
                    f"{rate:7.1f} images/s")
    base, det = float(np.median(rates[False])), float(np.median(rates[True]))
    identical = all(a == aucs[0] for a in aucs[1:])
    log(f"determinism: median {base:.1f} images/s default vs {det:.1f} with --deterministic "
        f"(ratio {det / base:.2f}); deterministic runs identical: {identical} "
        f"({len(aucs)} runs)")
    return {"flags": RUN_FLAGS, "default_images_per_sec": rates[False],
            "deterministic_images_per_sec": rates[True], "median_default": base,
            "median_deterministic": det, "ratio": round(det / base, 3),
            "deterministic_runs_identical": identical}
