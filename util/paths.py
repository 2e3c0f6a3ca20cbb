"""Paths the tools read and write, checked before any work starts.

``check_output_path`` answers, without creating anything, whether an output
can be written where the user asked: its parent chain must end in a writable
directory on a real filesystem, a file must not sit where a directory is
expected (or the reverse), and an existing output is only replaced when it is
a previous output of the same kind. The directories it would create are
remembered, so a tool that fails later removes the empty ones it made
(``remove_created_dirs``, called by ``util.cli.script_main``).

The image-folder helpers skip symlink loops and broken symlinks with a warning
instead of raising or staying silent: one plain ``warning:`` line on stderr per
file and process (``warn_once``; a folder is listed once to count it and again
to load it), and ``printable_path`` turns a file name that is not valid UTF-8 into text a
CSV or a terminal can hold.
"""

import errno
import os
import sys
from pathlib import Path

from util.errors import ConfigError

# Kernel filesystems: they accept no files of ours even for root.
PSEUDO_FILESYSTEMS = frozenset({"proc", "sysfs", "cgroup", "cgroup2", "devpts", "debugfs",
                                "tracefs", "securityfs", "pstore", "bpf", "configfs",
                                "fusectl", "mqueue", "binfmt_misc", "efivarfs"})

_created = []  # directories check_output_path found missing, outermost first


def printable_path(path):
    """``path`` as valid text: undecodable bytes of a file name become ``\\xNN`` escapes."""
    return os.fsdecode(os.fspath(path)).encode("utf-8", "surrogateescape").decode(
        "utf-8", "backslashreplace")


def require_dir(path, what="directory"):
    """ConfigError unless ``path`` is an existing directory, saying which of the two it is not."""
    path = Path(path)
    if path.is_dir():
        return path
    if os.path.lexists(path) and not path.exists():
        raise ConfigError(f"{what} {printable_path(path)} is a broken or looping symlink")
    if path.exists():
        raise ConfigError(f"{what} {printable_path(path)} is not a directory")
    raise ConfigError(f"{what} {printable_path(path)} does not exist")


def _mount_type(path):
    """Filesystem type of the mount holding ``path`` (Linux; None elsewhere)."""
    try:
        with open("/proc/self/mounts") as f:
            mounts = [line.split()[1:3] for line in f if len(line.split()) >= 3]
    except OSError:
        return None
    real = os.path.realpath(path)
    best, kind = "", None
    for point, fstype in mounts:
        point = point.replace("\\040", " ")
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fstype
    return kind


def _writable_dir(directory, flag, path):
    """ConfigError unless files can be created in the existing ``directory``."""
    shown = f"{flag}={printable_path(path)}"
    if _mount_type(directory) in PSEUDO_FILESYSTEMS:
        raise ConfigError(f"{shown} cannot be created: {printable_path(directory)} is on a "
                          f"{_mount_type(directory)} filesystem, which holds no files")
    try:
        read_only = os.statvfs(directory).f_flag & os.ST_RDONLY
    except OSError:
        read_only = False
    if read_only:
        raise ConfigError(f"{shown} cannot be created: {printable_path(directory)} is on a "
                          "read-only filesystem")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ConfigError(f"{shown} cannot be created: {printable_path(directory)} is not "
                          "writable")


def check_output_path(path, kind, flag="--out", replaces=None, what=None):
    """Refuses (ConfigError) an output ``path`` that cannot be written or must not be replaced.

    ``kind`` is ``"file"`` or ``"dir"``. ``replaces(path) -> bool`` recognises a previous
    output of the same kind (``what`` names it in the message); an existing path it does
    not recognise is refused (for a directory: unless it is empty). Without ``replaces``
    an existing file may be replaced and an existing directory is written into. Creates
    nothing; returns ``Path(path)``.
    """
    if kind not in ("file", "dir"):
        raise ValueError(f"kind must be 'file' or 'dir', not {kind!r}")
    if path is None or str(path) == "":
        raise ConfigError(f"{flag} is empty: give a path")
    path = Path(path)
    shown = f"{flag}={printable_path(path)}"
    what = what or ("output directory" if kind == "dir" else "output file")
    if os.path.lexists(path):
        if not path.exists():
            raise ConfigError(f"{shown} is a broken or looping symlink")
        if kind == "file" and path.is_dir():
            raise ConfigError(f"{shown} is a directory, not a file")
        if kind == "file" and not path.is_file():
            raise ConfigError(f"{shown} exists and is not a regular file")
        if kind == "dir" and not path.is_dir():
            raise ConfigError(f"{shown} is a file, not a directory")
        if replaces is not None and not replaces(path):
            if not (kind == "dir" and not any(os.scandir(path))):
                raise ConfigError(f"{shown} exists and is not a previous {what}: refusing to "
                                  "replace it (remove it or choose another path)")
        _writable_dir(path.parent if kind == "file" or replaces else path, flag, path)
        return path
    missing = [path] if kind == "dir" else []
    parent = path.parent
    while not os.path.lexists(parent):
        missing.append(parent)
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{shown} cannot be created: {printable_path(parent)} is "
                          + ("a file, not a directory" if parent.exists()
                             else "a broken or looping symlink"))
    _writable_dir(parent, flag, path)
    _created.extend(reversed(missing))
    return path


def forget_created_dirs():
    _created.clear()


def remove_created_dirs():
    """Removes, innermost first, the directories check_output_path found missing that now
    exist and are empty (a failed tool leaves no empty folders behind)."""
    for directory in sorted(set(_created), key=lambda p: len(p.parts), reverse=True):
        try:
            directory.rmdir()
        except OSError:
            pass
    _created.clear()


def first_bytes_are(prefix):
    """``replaces`` predicate: a file whose first bytes are ``prefix`` (a previous output)."""
    prefix = prefix.encode("utf-8") if isinstance(prefix, str) else prefix

    def recognise(path):
        try:
            with open(path, "rb") as f:
                return f.read(len(prefix)) == prefix
        except OSError:
            return False
    return recognise


def _is_loop(path):
    """True when resolving ``path`` fails because its symlinks loop."""
    try:
        os.stat(path)
    except OSError as err:
        return err.errno == errno.ELOOP
    return False


_warned = set()  # the messages warn_once has printed in this process


def warn_once(message):
    """Prints ``warning: message`` to stderr, the first time only: the image-folder
    helpers' default for a file they skip."""
    if message not in _warned:
        _warned.add(message)
        print(f"warning: {message}", file=sys.stderr, flush=True)


def _warn_loop(path, warn):
    (warn or warn_once)(f"skipping {printable_path(path)}: symlink loop")


def _warn_broken(path, warn):
    (warn or warn_once)(f"skipping {printable_path(path)}: broken symlink (its target "
                        f"{printable_path(os.readlink(path))} does not exist)")


def is_regular_file(path, warn=None):
    """True for a (symlink to a) regular file; a symlink loop or a broken symlink is
    skipped: ``warn(message)`` (default: ``warn_once``) and False."""
    if Path(path).is_file():
        return True
    if os.path.islink(path):
        if _is_loop(path):
            _warn_loop(path, warn)
        elif not os.path.exists(path):
            _warn_broken(path, warn)
    return False


def is_directory(path, warn=None):
    """True for a (symlink to a) directory; a symlink loop is skipped as in is_regular_file."""
    if Path(path).is_dir():
        return True
    if os.path.islink(path) and _is_loop(path):
        _warn_loop(path, warn)
    return False


def walk_files(root, suffixes, warn=None, skip_dir=None):
    """Sorted files under ``root`` (recursive, following symlinks) whose lower-cased names end
    in one of ``suffixes``. A symlink loop (a link to itself, or to a directory above it)
    and a broken symlink of such a name are skipped with ``warn(message)`` (default:
    ``warn_once``); so is a folder
    below ``root`` for which ``skip_dir(path)`` is True (it says why itself)."""
    found = []
    stack = [(Path(root), frozenset())]
    while stack:
        directory, ancestors = stack.pop()
        try:
            st = directory.stat()
        except OSError:
            if _is_loop(directory):
                _warn_loop(directory, warn)
                continue
            raise
        here = (st.st_dev, st.st_ino)
        if here in ancestors:
            _warn_loop(directory, warn)
            continue
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda e: e.name, reverse=True)
        for entry in entries:
            path = Path(entry.path)
            if entry.is_symlink() and _is_loop(path):
                _warn_loop(path, warn)
            elif entry.is_symlink() and not os.path.exists(path):
                if entry.name.lower().endswith(tuple(suffixes)):
                    _warn_broken(path, warn)
            elif entry.is_dir():
                if skip_dir is None or not skip_dir(path):
                    stack.append((path, ancestors | {here}))
            elif entry.is_file() and entry.name.lower().endswith(tuple(suffixes)):
                found.append(path)
    return sorted(found)
