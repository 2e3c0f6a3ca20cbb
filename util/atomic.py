"""Crash-safe file writes: a result file is either complete or absent, never torn.

Whole files are written to a temporary name in the same directory, flushed to
disk and renamed over the target (rename is atomic on POSIX). Appends to a
JSON-lines log are one ``write`` of a whole line, so a reader never sees half
a line; a torn last line left by a crash of an older version is skipped by
``read_jsonl``. A directory is written into ``.NAME.HOST-PID.XXXX.tmp`` beside it
and renamed into place; what a killed writer left there is swept by the next
write of the same directory (``sweep_stale_dirs``).
"""

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
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


_TEMPORARY_FILE = re.compile(r"^\.(?P<name>.+)\.[0-9a-f]{12}\.tmp(?P<suffix>(\.[^./]*)?)$")


def temporary_target(name):
    """The file name whose ``atomic_path`` write left the temporary file ``name`` (killed
    between creating it and renaming it), or None when ``name`` is not such a file."""
    match = _TEMPORARY_FILE.match(name)
    if match and Path(match["name"]).suffix == match["suffix"]:
        return match["name"]
    return None


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


def _host_tag():
    """This machine's name as one dot-free word (part of the temporary names below)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"


def _alive(pid):
    """True when process ``pid`` exists on this machine (or might: not ours to signal)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_dirs(path):
    """Removes what an ``atomic_dir(path)`` killed on this machine left beside ``path``:
    its temporary directory ``.NAME.HOST-PID.XXXX.tmp`` and, when ``path`` itself is
    gone (a kill between the two renames), puts the previous ``.NAME.HOST-PID.old`` back.
    Only names of that pattern, of this host, whose process is dead are touched."""
    path = Path(path)
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.{re.escape(_host_tag())}-(\d+)\."
                         r"(?:[A-Za-z0-9_]+\.tmp|old)$")
    try:
        names = [n for n in os.listdir(path.parent) if n.startswith(f".{path.name}.")]
    except OSError:
        return
    for name in sorted(names, key=lambda n: not n.endswith(".old")):
        match = pattern.match(name)
        if not match or _alive(int(match.group(1))):
            continue
        stale = path.parent / name
        if name.endswith(".old") and not os.path.lexists(path):
            os.replace(stale, path)  # the previous output, moved aside just before the kill
        else:
            shutil.rmtree(stale, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(path):
    """Yields an empty temporary directory beside ``path``; on success it replaces ``path``
    (a directory written by several files is then complete or absent, never half old).
    What an earlier call killed on this machine left beside ``path`` is swept first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_dirs(path)
    owner = f"{_host_tag()}-{os.getpid()}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{owner}.", suffix=".tmp",
                                dir=str(path.parent)))
    os.chmod(tmp, 0o777 & ~_process_umask())  # mkdtemp's 0700 would hide it from the group
    old = path.parent / f".{path.name}.{owner}.old"
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


def append_jsonl(path, record, durable=True):
    """Appends one JSON object as a single whole line (one write call, then fsync unless
    not ``durable``: a record whose loss in a power cut is harmless)."""
    line = (json.dumps(record, sort_keys=True) + "\n").encode("utf-8")
    fd = os.open(str(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, line)
        if durable:
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
