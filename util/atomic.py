"""Crash-safe file writes: a result file is either complete or absent, never torn.

Whole files are written to a temporary name in the same directory, flushed to
disk and renamed over the target (rename is atomic on POSIX). Appends to a
JSON-lines log are one ``write`` of a whole line, so a reader never sees half
a line; a torn last line left by a crash of an older version is skipped by
``read_jsonl``.
"""

import contextlib
import json
import os
import secrets
import shutil
import tempfile
from pathlib import Path


def _create_temporary(path):
    """A new empty file beside ``path``, created with mode 0666 minus the process umask
    (as ``open`` would make it; ``tempfile.mkstemp`` forces 0600, so a colleague could
    not read a shared run's results)."""
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp{path.suffix}"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


def _process_umask():
    """The process umask (reading it means setting it: set back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside ``path``; renames it onto ``path`` on success.

    For writers that want a file name (np.savez, matplotlib, csv). On an
    exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temporary(path)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path):
    """Yields an empty temporary directory beside ``path``; on success it replaces ``path``
    (a directory written by several files is then complete or absent, never half old)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent)))
    os.chmod(tmp, 0o777 & ~_process_umask())  # mkdtemp's 0700 would hide it from the group
    old = path.parent / f".{path.name}.old-{os.getpid()}"
    try:
        yield tmp
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_bytes_atomic(path, data):
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)


def write_text_atomic(path, text):
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path, obj, **kwargs):
    kwargs.setdefault("indent", 2)
    kwargs.setdefault("sort_keys", True)
    write_text_atomic(path, json.dumps(obj, **kwargs) + "\n")


def append_jsonl(path, record):
    """Appends one JSON object as a single whole line (one write call, then fsync)."""
    line = (json.dumps(record, sort_keys=True) + "\n").encode("utf-8")
    fd = os.open(str(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_jsonl(path):
    """Records of a JSON-lines file; a torn (unparsable) last line is ignored."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise
    return records
