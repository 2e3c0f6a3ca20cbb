"""Where a command may write: a location is its own, or the command refuses it before any work.

One rule for every output of every command. An output location may be

* missing: the command creates it;
* an empty directory;
* a previous output of the same kind, recognised by the record that kind keeps in it
  (an export by its metadata, a run by ``stats/hparams.json``, a folder of maps or
  explanations by its manifest, a converted model by its record), holding nothing that
  kind does not write.

Anything else, a user's folder, a file that would be replaced or a previous output with
a user's file inside, is refused with one ConfigError naming it. An output is refused
inside a recognised output of another kind as well (PNGs inside a SavedModel would make
it foreign to the next export). Each command supplies its kinds (``OutputKind``); this
module holds the rule and the manifest of folders whose files are written one by one.

Outputs and inputs stay apart (``check_apart``): an output location that is, contains
or lies inside one of the command's inputs, or another of its outputs, is refused
before any work, since the command would read what it writes or replace what it reads.
An output file inside an input folder is allowed only when the command never reads
such a file from there (a CSV beside the images a command scores). A folder recognised
by its manifest is never an input of the commands that write such folders
(``recognised_output``): score.py skips it while searching an input folder.

A manifest folder holds, besides the files its manifest lists, the manifest itself,
the lock of the process writing it (util/runlock.py) and what a write killed before
its rename left of a listed file (util/atomic.py's temporary name): that is the
command's own and the next ``Manifest.start`` removes it, so a killed command never
makes its folder foreign.
"""

import dataclasses
import json
import os
from pathlib import Path
from typing import Callable

from util.atomic import append_jsonl, temporary_target, write_text_atomic
from util.errors import ConfigError
from util.paths import check_output_path, printable_path
from util.runlock import LOCK_NAME, folder_lock

#: the record of a folder whose files a command writes one at a time
MANIFEST_NAME = ".droc_outputs.jsonl"
SHOWN = 3  # foreign entries named in a refusal


def _everything(root, rel):
    return True


@dataclasses.dataclass(frozen=True)
class OutputKind:
    """A kind of output: ``recognise(path)`` says whether ``path`` is a previous output of
    this kind (by its record); ``owns(root, rel)`` whether the entry ``rel`` (a relative
    POSIX path) inside such a directory is one it writes."""

    name: str
    recognise: Callable[[Path], bool]
    owns: Callable[[Path, str], bool] = _everything


def entries(root):
    """Relative POSIX paths of every file (and empty directory) under ``root``."""
    root = Path(root)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        found.extend((rel / name).as_posix() for name in filenames)
        if not dirnames and not filenames and Path(dirpath) != root:
            found.append(rel.as_posix() + "/")
    return sorted(found)


def foreign_entries(path, kind):
    """Entries of the directory ``path`` that ``kind`` does not write."""
    return [rel for rel in entries(path) if not kind.owns(Path(path), rel.rstrip("/"))]


def _named(items):
    more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return ", ".join(printable_path(i) for i in items[:SHOWN]) + more


def check_not_inside(path, flag, outer_kinds):
    """ConfigError when ``path`` lies inside a recognised output of one of ``outer_kinds``."""
    for parent in Path(os.path.abspath(path)).parents:
        for outer in outer_kinds:
            if outer.recognise(parent):
                raise ConfigError(f"{flag}={printable_path(path)} is inside the {outer.name} "
                                  f"{printable_path(parent)}, which holds only what it was "
                                  "written with; choose a path outside it")


def _real(path):
    return Path(os.path.realpath(os.path.abspath(path)))


def _shown(label, path):
    return f"{label}={printable_path(path)}" if label.startswith("-") else \
        f"{label} {printable_path(path)}"


def _relation(a, b):
    """How location ``a`` stands to ``b``: "is", "lies inside", "contains" or None."""
    a, b = _real(a), _real(b)
    if a == b:
        return "is"
    if b in a.parents:
        return "lies inside"
    if a in b.parents:
        return "contains"
    return None


def check_apart(outputs, inputs, reads=None):
    """ConfigError when an output location is, contains or lies inside an input, or
    another output. ``outputs``: ``(flag, path, is_dir)``; ``inputs``: ``(label, path)``
    (a flag such as ``--export_dir`` or a word such as ``input``). ``reads(path)``: True
    for a file the command would read from an input folder; an output file inside an
    input folder that it would not read is allowed (without ``reads``: refused)."""
    outputs = [(flag, Path(path), is_dir) for flag, path, is_dir in outputs if path is not None]
    for flag, out, is_dir in outputs:
        for label, source in inputs:
            relation = _relation(out, source)
            if relation is None:
                continue
            if relation == "lies inside" and not is_dir and reads is not None \
                    and not reads(out) and _real(source).is_dir():
                continue
            raise ConfigError(f"{_shown(flag, out)} {relation} {_shown(label, source)}: "
                              "a command never writes where it reads (it would read its own "
                              "outputs or replace what it reads); choose a path outside it")
    for i, (flag, out, is_dir) in enumerate(outputs):
        for other_flag, other, _ in outputs[i + 1:]:
            relation = _relation(out, other)
            if relation is not None:
                raise ConfigError(f"{_shown(flag, out)} {relation} {_shown(other_flag, other)}, "
                                  "another output of this command; give each its own path")


def recognised_output(path, kinds):
    """The kind among ``kinds`` that recognises ``path`` as one of its outputs, or None."""
    return next((kind for kind in kinds if kind.recognise(Path(path))), None)


def claim_output(path, kind, flag, *, file=False, not_inside=()):
    """``path`` checked for ``kind``'s output under the rule above (util.paths checks first
    that it can be written at all); returns ``Path(path)``. Creates and deletes nothing."""
    path = check_output_path(path, "file" if file else "dir", flag, replaces=kind.recognise,
                             what=kind.name)
    check_not_inside(path, flag, not_inside)
    if not file and path.is_dir() and kind.recognise(path):
        foreign = foreign_entries(path, kind)
        if foreign:
            raise ConfigError(f"{flag}={printable_path(path)} is a previous {kind.name} but "
                              f"also holds {_named(foreign)}, which it did not write: move "
                              "them away or choose another path")
    return path


# ----------------------------------------------------------------- folders written file by file

def manifest_header(directory):
    """The first record of ``directory``'s manifest (its kind, and for a run its id), or
    None when it has none."""
    lines = _manifest_lines(directory)
    return lines[0] if lines else None


def manifest_files(directory):
    """The files (relative POSIX paths) that ``directory``'s manifest lists."""
    return {r["file"] for r in _manifest_lines(directory)[1:] if isinstance(r.get("file"), str)}


def _manifest_lines(directory):
    try:
        lines = (Path(directory) / MANIFEST_NAME).read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:  # a torn last line: the file it named was never written
            continue
    return [r for r in records if isinstance(r, dict)]


def manifest_kind(name):
    """The OutputKind of a folder of ``name`` files written one by one: recognised by its
    manifest's first line, owning the manifest, its lock, the files it lists and what a
    killed write of one of them left."""

    def recognise(path):
        header = manifest_header(path)
        return header is not None and header.get("kind") == name

    def owns(root, rel):
        return manifest_owns(rel, manifest_files(root))

    return OutputKind(name, recognise, owns)


def manifest_owns(rel, listed):
    """True for the entry ``rel`` of a manifest folder whose manifest lists ``listed``."""
    if rel in (MANIFEST_NAME, LOCK_NAME) or rel in listed:
        return True
    folder, _, name = rel.rpartition("/")
    target = temporary_target(name)
    return target is not None and (f"{folder}/{target}" if folder else target) in \
        listed | {MANIFEST_NAME}


def lock_manifest_folder(manifest, flag, locks, not_inside=()):
    """Takes the lock of the folder of ``manifest`` (util/runlock.py; ConfigError when
    another process holds it) into ``locks`` (an ExitStack) and claims the folder again
    under it: what another process left there between the first claim and the lock."""
    locks.enter_context(folder_lock(manifest.directory, flag))
    if entries(manifest.directory) != [LOCK_NAME]:  # not created just now by the lock
        claim_output(manifest.directory, manifest.kind, flag, not_inside=not_inside)


class Manifest:
    """The record of a folder claimed for ``kind`` (a ``manifest_kind``): ``start`` removes
    the files of the previous output of that kind and begins a new record; ``add(name)``
    records a file before it is written, so a file left by an interrupted command is
    still recognised as the command's own."""

    def __init__(self, directory, kind):
        self.directory = Path(directory)
        self.kind = kind

    def start(self):
        listed = {name for name in manifest_files(self.directory)
                  if "/" not in name and name != MANIFEST_NAME}
        for entry in os.listdir(self.directory) if self.directory.is_dir() else ():
            target = temporary_target(entry)
            if entry in listed or target in listed or target == MANIFEST_NAME:
                (self.directory / entry).unlink(missing_ok=True)
        write_text_atomic(self.directory / MANIFEST_NAME,
                          json.dumps({"kind": self.kind.name}) + "\n")

    def add(self, name):
        append_jsonl(self.directory / MANIFEST_NAME, {"file": str(name)}, durable=False)
        return self.directory / name
