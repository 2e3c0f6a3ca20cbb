"""The entry point run inside the test process: the same command line, outputs and exit
code as ``python train_and_eval_loop.py ...``, without starting a new interpreter and
importing TensorFlow again for every run (about 7 s each on 2 cores).

Tests that need a separate process (kills, a second process, the TF_CONFIG of
several workers, op determinism, which stays on for the whole process) start
one instead.
"""

import contextlib
import io
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "train_and_eval_loop.py"


def run_in_process(args):
    """subprocess.CompletedProcess of ``train_and_eval_loop.py *args`` run in this process."""
    import keras

    import train_and_eval_loop

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = train_and_eval_loop.cli(["train_and_eval_loop.py", *map(str, args)], train=True)
    keras.backend.clear_session()  # the next run builds its own models
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


#: a run small enough for the tests of a finished run's outputs: digitsood digit 3,
#: ResNet10 at width 0.125, 1 epoch x 2 steps of 16
TINY_RUN = ["--dataset=digitsood", "--category=3", "--net_type=ResNet10", "--net_width=0.125",
            "--head_dims=32,16", "--num_batch=2", "--batch_size=16", "--eval_batch_size=128",
            "--num_epoch=1"]


def finished_tiny_run(run_dir, *flags):
    """``run_dir`` after a TINY_RUN training with ``flags`` added (asserting it succeeded)."""
    out = run_in_process([f"--model_dir={run_dir}", *TINY_RUN, *flags])
    assert out.returncode == 0, out.stderr[-3000:]
    return run_dir


def run_cli(args, timeout=900, env=None):
    """The entry point in this process; in a new interpreter with ``env`` when it is given."""
    if env is None:
        return run_in_process(args)
    env = dict(env, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=timeout)
