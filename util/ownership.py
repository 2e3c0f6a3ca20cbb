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
"""

import dataclasses
import json
import os
from pathlib import Path
from typing import Callable

from util.atomic import append_jsonl, write_text_atomic
from util.errors import ConfigError
from util.paths import check_output_path, printable_path

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
    manifest's first line, owning the manifest and the files it lists."""

    def recognise(path):
        lines = _manifest_lines(path)
        return bool(lines) and lines[0].get("kind") == name

    def owns(root, rel):
        return rel == MANIFEST_NAME or rel in {r.get("file") for r in _manifest_lines(root)}

    return OutputKind(name, recognise, owns)


class Manifest:
    """The record of a folder claimed for ``kind`` (a ``manifest_kind``): ``start`` removes
    the files of the previous output of that kind and begins a new record; ``add(name)``
    records a file before it is written, so a file left by an interrupted command is
    still recognised as the command's own."""

    def __init__(self, directory, kind):
        self.directory = Path(directory)
        self.kind = kind

    def start(self):
        for record in _manifest_lines(self.directory)[1:]:
            name = record.get("file")
            if name and "/" not in name and name != MANIFEST_NAME:
                (self.directory / name).unlink(missing_ok=True)
        write_text_atomic(self.directory / MANIFEST_NAME,
                          json.dumps({"kind": self.kind.name}) + "\n")

    def add(self, name):
        append_jsonl(self.directory / MANIFEST_NAME, {"file": str(name)}, durable=False)
        return self.directory / name
