"""One process per output directory: an advisory ``fcntl`` lock on ``<dir>/.lock``.

A run directory (``run_lock``) and a folder that score.py or explain.py writes
image by image (``folder_lock``) are held by one process at a time; a second
process is refused at once with one error line naming the holder (it does not
wait: a run or a scoring can take hours, and a command that blocks silently
looks hung). The kernel drops the lock when its process dies (even by
SIGKILL), so a killed command never leaves it stuck; the file keeps the
holder's pid and host for the message the second process prints. (Advisory
locks need a local filesystem or an NFS server with lock support.)

A run directory keeps its lock file. A folder lock removes it on release, so a
folder written by a finished command holds only what the command wrote; the
lock is re-checked after it is taken, so a process that opened the file just
before its holder removed it does not hold a lock on a file no one else sees.
"""

import contextlib
import fcntl
import os
import socket
from pathlib import Path

from util.errors import ConfigError

LOCK_NAME = ".lock"


def _acquire(path):
    """An open descriptor of ``path`` holding its exclusive lock, or (None, the holder)."""
    while True:
        fd = os.open(str(path), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "unknown"
            os.close(fd)
            return None, holder
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
            return fd, None
        os.close(fd)  # its holder removed it on release: lock the file that is there now


@contextlib.contextmanager
def run_lock(run_dir):
    """Holds the run directory's lock for the body; ConfigError if another process has it."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    fd, holder = _acquire(path)
    if fd is None:
        raise ConfigError(f"--model_dir={run_dir} is in use by another run ({holder}); "
                          "wait for it to finish or use another --model_dir")
    try:
        yield path
    finally:
        os.close(fd)  # closing releases the lock


@contextlib.contextmanager
def folder_lock(directory, flag):
    """Holds the lock of the output folder ``directory`` (given as ``flag``) for the body,
    creating the folder; ConfigError if another process has it. The lock file is removed
    on release."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_NAME
    fd, holder = _acquire(path)
    if fd is None:
        raise ConfigError(f"{flag}={directory} is in use by another process ({holder}) "
                          f"writing into it; wait for it to finish or choose another {flag}")
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)  # while still held: the next process locks a new file
        os.close(fd)
