"""One process per run directory: an advisory ``fcntl`` lock on ``<run>/.lock``.

The kernel drops the lock when its process dies (even by SIGKILL), so a killed
run never leaves it stuck; the file keeps the holder's pid and host for the
message the second process prints. (Advisory locks need a local filesystem or
an NFS server with lock support.)
"""

import contextlib
import fcntl
import os
import socket
from pathlib import Path

from util.errors import ConfigError

LOCK_NAME = ".lock"


@contextlib.contextmanager
def run_lock(run_dir):
    """Holds the run directory's lock for the body; ConfigError if another process has it."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    fd = os.open(str(path), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "unknown"
            raise ConfigError(f"--model_dir={run_dir} is in use by another run ({holder}); "
                              "wait for it to finish or use another --model_dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # closing releases the lock
