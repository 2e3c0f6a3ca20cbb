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


def run_in_process(args):
    """subprocess.CompletedProcess of ``train_and_eval_loop.py *args`` run in this process."""
    import keras

    import train_and_eval_loop

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = train_and_eval_loop.cli(["train_and_eval_loop.py", *map(str, args)], train=True)
    keras.backend.clear_session()  # the next run builds its own models
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())
