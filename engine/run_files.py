"""What a run directory holds, and which of it is the run's own (util/ownership.py's rule).

A run directory is recognised by ``stats/hparams.json``, which every run writes
before it trains. ``--model_dir`` may be a new or empty directory, a directory
holding only what a run killed before that file left (its lock, temporary
files), or a run; a user's folder is refused before anything inside it is
touched. Inside a run, the run replaces or removes only its own files:
``export/`` is replaced only when it is a previous export holding nothing else,
and ``--force_init`` removes only the files of ``RUN_FILES`` below ``ckpt/``,
``logs/`` and ``stats/``, so a user's notes there survive.
"""

import fnmatch
import json
import os
import shutil
from pathlib import Path
from typing import Mapping

from deploy.export_format import EXPORT_KIND
from engine.checkpoints import inspect_checkpoints
from util.errors import ConfigError
from util.ownership import check_not_inside, claim_output, entries
from util.runlock import LOCK_NAME

#: what a run writes, relative to its directory (fnmatch patterns; ``*`` spans folders)
RUN_FILES = (
    LOCK_NAME, "ckpt/checkpoint", "ckpt/ckpt-*", "ckpt/*.tempstate*",
    "logs/*events.out.tfevents.*",
    "stats/hparams.json", "stats/summary.json", "stats/scores.npz",
    "stats/eval_history.jsonl", "stats/collapse.json",
    "plots/roc.png", "plots/score_hist.png", "heatmaps/*.png", "heatmaps/maps.npz",
)
#: temporary names of util/atomic.py's writes (left by a kill in the middle of one)
TEMPORARY = ("*/.*.tmp*", ".*.tmp*")
#: what --force_init starts over: every own file below these
RESTARTED = ("ckpt", "logs", "stats")


def _is_run(path):
    try:
        return isinstance(json.loads((Path(path) / "stats" / "hparams.json").read_text()), dict)
    except (OSError, ValueError):
        return False


def run_owns(rel: str) -> bool:
    """True for a path (relative to the run directory) that a run writes."""
    return any(fnmatch.fnmatch(rel, p) for p in RUN_FILES + TEMPORARY)


def only_leftovers(root: Path | str) -> bool:
    """True when everything under ``root`` is what a run killed before it recorded its
    configuration leaves: its lock, temporary files and empty folders."""
    return all(rel.endswith("/") or rel == LOCK_NAME
               or any(fnmatch.fnmatch(rel, p) for p in TEMPORARY) for rel in entries(root))


def claim_run_dir(cfg: Mapping, root: Path | str, chief: bool = True) -> None:
    """The run directory and what the run will replace in it, checked under the ownership
    rule before the lock and before anything is loaded or written; ConfigError otherwise."""
    root = Path(root)
    flag = f"--model_dir={root}"
    check_not_inside(root, "--model_dir", (EXPORT_KIND,))
    if root.is_dir() and not _is_run(root) and not only_leftovers(root):
        shown = ", ".join(sorted(os.listdir(root))[:3])
        raise ConfigError(f"{flag} is not a run directory (no stats/hparams.json) and is not "
                          f"empty (it holds {shown}); a run writes only into a new or empty "
                          "directory or its own run: choose another --model_dir")
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
    for name in RESTARTED:
        top = root / name
        if not top.is_dir():
            continue
        for rel in entries(top):
            path = top / rel
            if rel.endswith("/"):
                continue
            if run_owns(f"{name}/{rel}"):
                path.unlink()
        for dirpath, _, _ in sorted(os.walk(top), key=lambda w: -len(w[0])):
            if not os.listdir(dirpath):
                shutil.rmtree(dirpath, ignore_errors=True)
