"""What a run directory holds, and which of it is the run's own (util/ownership.py's rule).

A run directory is recognised by its marker, not by one file anyone can copy:
before a run writes anything (``mark_run``, under the run's lock), it writes
``.droc_outputs.jsonl`` at the top of the directory (util/ownership.py's
manifest): a first line with the kind ``run directory`` and the run's own id
(``run_id``), then the files the run writes under fixed names (``FIXED_FILES``),
each recorded before it is written. The names that TensorFlow and the heat maps
generate (checkpoints, event files, ``heatmaps/<defect>/*.png``) are the run's
by their pattern (``GENERATED``). A run directory is then ``stats/hparams.json``
with that marker.

A run written before the marker existed is still recognised
(``legacy_run``): ``stats/hparams.json`` beside what only a run that trained or
finished leaves, a checkpoint index ``ckpt/checkpoint`` or ``stats/summary.json``.
It resumes, re-evaluates and exports as before, its files are the run's by the
patterns of ``RUN_FILES``, and it gets its marker (adopting those files) when
it next writes. A folder holding a copied ``hparams.json`` without a marker, a
checkpoint or a summary (a report, a plot) is a user's folder. (A run of an
older version killed before its first checkpoint is refused too; it holds
nothing to resume: remove it.)

``--model_dir`` may be a new or empty directory, a directory holding only what
a run killed before it recorded its configuration left (its lock, its marker,
temporary files), or a run; a user's folder is refused before anything inside
it is touched, and so is a run directory that is, contains or lies inside one
of the run's data folders (``--root``, ``--normal_dir``, ...), or lies inside an
export or a folder of maps or explanations. Inside a run, the run replaces or
removes only its own files: a marked run refuses a file at one of its fixed
names that its manifest does not list, ``export/`` is replaced only when it is
a previous export holding nothing else, and ``--force_init`` removes only the
run's own files below ``ckpt/``, ``logs/`` and ``stats/``, so a user's notes
there survive.
"""

import fnmatch
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Mapping, Optional

from deploy.export_format import EXPORT_KIND
from engine.checkpoints import inspect_checkpoints
from util.atomic import write_text_atomic
from util.errors import ConfigError
from util.heatmaps import EXPLANATIONS_KIND, MAPS_KIND
from util.ownership import (MANIFEST_NAME, check_apart, check_not_inside, claim_output, entries,
                            manifest_files, manifest_header, manifest_owns)
from util.paths import printable_path
from util.runlock import LOCK_NAME

#: the kind a run's marker names
RUN_KIND = "run directory"
#: what a run writes under fixed names, relative to its directory
FIXED_FILES = (
    "stats/hparams.json", "stats/summary.json", "stats/scores.npz", "stats/eval_history.jsonl",
    "stats/collapse.json", "stats/budget.json", "plots/roc.png", "plots/score_hist.png",
    "heatmaps/maps.npz",
)
#: what a run writes under names it generates (fnmatch patterns; ``*`` spans folders)
GENERATED = (LOCK_NAME, "ckpt/checkpoint", "ckpt/ckpt-*", "ckpt/*.tempstate*",
             "logs/*events.out.tfevents.*", "heatmaps/*.png")
#: the data a run reads: a run directory stays apart from these folders and files
DATA_FLAGS = ("root", "data_dir", "normal_dir", "abnormal_dir", "normal_test_dir", "mask_dir",
              "pretrained_weights")

#: what a run writes, relative to its directory (fnmatch patterns; ``*`` spans folders)
RUN_FILES = GENERATED + FIXED_FILES
#: temporary names of util/atomic.py's writes (left by a kill in the middle of one)
TEMPORARY = ("*/.*.tmp*", ".*.tmp*")
#: what --force_init starts over: every own file below these
RESTARTED = ("ckpt", "logs", "stats")


def _json_dict(path):
    try:
        return isinstance(json.loads(Path(path).read_text()), dict)
    except (OSError, ValueError, UnicodeDecodeError):
        return False


def run_marker(root: Path | str) -> Optional[dict]:
    """The run's marker (the first record of its manifest: kind and run id), or None."""
    header = manifest_header(root)
    if header is None or header.get("kind") != RUN_KIND or not header.get("run_id"):
        return None
    return header


def legacy_run(root: Path | str) -> bool:
    """True for a run written before the marker: stats/hparams.json beside a checkpoint
    index or a summary, and no marker."""
    root = Path(root)
    return (run_marker(root) is None and _json_dict(root / "stats" / "hparams.json")
            and ((root / "ckpt" / "checkpoint").is_file()
                 or _json_dict(root / "stats" / "summary.json")))


def _is_run(path):
    return _json_dict(Path(path) / "stats" / "hparams.json") and (
        run_marker(path) is not None or legacy_run(path))


def run_owns(rel: str, listed: Optional[set] = None) -> bool:
    """True for a path (relative to the run directory) that the run writes: by the
    patterns of what a run writes, and with ``listed`` (a marked run's manifest) only
    the fixed names listed there."""
    if any(fnmatch.fnmatch(rel, p) for p in GENERATED + TEMPORARY):
        return True
    if listed is None:
        return any(fnmatch.fnmatch(rel, p) for p in RUN_FILES)
    return manifest_owns(rel, listed)


def _owner(root):
    """``run_owns`` for the run at ``root``: by its manifest when it is marked."""
    listed = manifest_files(root) if run_marker(root) is not None else None
    return lambda rel: run_owns(rel, listed)


def only_leftovers(root: Path | str) -> bool:
    """True when everything under ``root`` is what a run killed before it recorded its
    configuration leaves: its lock, its marker, temporary files and empty folders."""
    marker = run_marker(root) is not None
    return all(rel.endswith("/") or rel == LOCK_NAME or (marker and rel == MANIFEST_NAME)
               or any(fnmatch.fnmatch(rel, p) for p in TEMPORARY) for rel in entries(root))


def mark_run(root: Path | str) -> str:
    """Writes (under the run's lock, before the run writes anything else) the run's marker
    and the fixed names it writes; a run from before the marker adopts its files. Returns
    the run id."""
    root = Path(root)
    marker = run_marker(root)
    if marker is None:
        marker, listed = {"kind": RUN_KIND, "run_id": uuid.uuid4().hex}, set()
    else:
        listed = manifest_files(root)
        if set(FIXED_FILES) <= listed:
            return marker["run_id"]
    lines = [marker] + [{"file": name} for name in sorted(listed | set(FIXED_FILES))]
    write_text_atomic(root / MANIFEST_NAME, "".join(json.dumps(r) + "\n" for r in lines))
    return marker["run_id"]


def data_inputs(cfg: Mapping) -> list:
    """(flag, path) of every data folder or file the run reads."""
    found = []
    for name in DATA_FLAGS:
        value = cfg.get(name)
        for path in value if isinstance(value, (list, tuple)) else [value]:
            if path not in (None, ""):
                found.append((f"--{name}", path))
    return found


def _not_a_run(root):
    shown = ", ".join(printable_path(n) for n in sorted(os.listdir(root))[:3])
    return ConfigError(f"--model_dir={printable_path(root)} is not a run directory (no run "
                       f"marker {MANIFEST_NAME}, nor a checkpoint or a summary beside "
                       f"stats/hparams.json) and is not empty (it holds {shown}); a run writes "
                       "only into a new or empty directory or its own run: choose another "
                       "--model_dir")


def check_recorded_run(root: Path | str) -> None:
    """ConfigError when ``root`` holds a stats/hparams.json but is not a run: a copied
    configuration is not compared with the flags as if a run had recorded it."""
    root = Path(root)
    if (root / "stats" / "hparams.json").exists() and not _is_run(root):
        raise _not_a_run(root)


def check_run_root(cfg: Mapping, root: Path | str) -> None:
    """ConfigError, before the run writes anything, when ``--model_dir`` is not a new or
    empty directory, what a killed run left, or a run (its marker, or a run from before
    the marker); when it is not apart from the run's data or lies inside an output of
    another kind; or when a marked run holds a file at one of its fixed names that its
    manifest does not list."""
    root = Path(root)
    flag = f"--model_dir={printable_path(root)}"
    check_not_inside(root, "--model_dir", (EXPORT_KIND, MAPS_KIND, EXPLANATIONS_KIND))
    check_apart([("--model_dir", root, True)], data_inputs(cfg))
    if root.is_dir() and not _is_run(root) and not only_leftovers(root):
        raise _not_a_run(root)
    if run_marker(root) is not None:
        listed = manifest_files(root)
        foreign = [rel for rel in FIXED_FILES if (root / rel).exists() and rel not in listed]
        if foreign:
            raise ConfigError(f"{flag} is a run but also holds {', '.join(foreign[:3])}, which "
                              "it did not write (its manifest does not list them): move them "
                              "away or choose another --model_dir")


def claim_run_dir(cfg: Mapping, root: Path | str, chief: bool = True) -> None:
    """The run directory and what the run will replace in it, checked under the ownership
    rule before the lock and before anything is loaded or written; ConfigError otherwise."""
    root = Path(root)
    check_run_root(cfg, root)
    if cfg.get("export", True) and chief:
        try:
            claim_output(root / "export", EXPORT_KIND, "--model_dir")
        except ConfigError as err:
            raise ConfigError(f"{err}; or run with --noexport") from None
    if cfg["reevaluate"] and int(cfg["num_epoch"]) > 0 and inspect_checkpoints(root / "ckpt") is None:
        raise ConfigError(f"--reevaluate: {root / 'ckpt'} holds no checkpoint of the finished "
                          "run to evaluate (its results stay in stats/summary.json: rerun "
                          "without --reevaluate to print them, or pass --force_init to train "
                          "it again)")


def remove_own_files(root: Path | str) -> None:
    """--force_init: removes the run's own files below ``RESTARTED`` (and the folders left
    empty); anything else there is a user's and stays."""
    root = Path(root)
    owns = _owner(root)
    for name in RESTARTED:
        top = root / name
        if not top.is_dir():
            continue
        for rel in entries(top):
            path = top / rel
            if rel.endswith("/"):
                continue
            if owns(f"{name}/{rel}"):
                path.unlink()
        for dirpath, _, _ in sorted(os.walk(top), key=lambda w: -len(w[0])):
            if not os.listdir(dirpath):
                shutil.rmtree(dirpath, ignore_errors=True)
