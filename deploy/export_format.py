"""The export's format, readable without TensorFlow: its metadata and which detector goes in.

An export directory is a SavedModel plus ``assets/droc_export.json``;
``read_export_meta`` checks that file before anything loads TensorFlow, so a
wrong path is answered at once.
"""

import hashlib
import json
from pathlib import Path
from typing import Any, Collection, Mapping, Optional

from detect.detectors import DETECTORS, export_names
from util.errors import ConfigError
from util.ownership import OutputKind
from util.paths import require_dir

EXPORT_FORMAT = "droc-savedmodel"
EXPORT_VERSION = 1
META_NAME = "droc_export.json"
#: the held-out inliers' image (and, for patch models, pixel) scores behind the thresholds
CALIB_SCORES_NAME = "calibration_scores.npz"
#: export kinds whose serving signature returns maps (cell or patch map, anomaly map, mask)
MAP_KINDS = ("patch", "map")


#: the output of a feature-map export with its cell map, by the names it has had
CELL_MAP_OUTPUTS = ("cell_map", "patch_map")


def has_maps(meta: Mapping) -> bool:
    """Whether an export (its metadata) returns anomaly maps and a predicted mask."""
    return meta.get("kind") in MAP_KINDS


def cell_map(outputs: Mapping) -> Any:
    """The cell (or patch) map among a serving signature's outputs, whichever name the
    export wrote it under."""
    for name in CELL_MAP_OUTPUTS:
        if name in outputs:
            return outputs[name]
    raise KeyError(f"no cell map among the outputs {sorted(outputs)}")


EXPORT_FEATURE_SET = "pool"


def export_choices() -> tuple:
    """The values of ``--export_detector``: auto and every registered detector's export
    name."""
    return ("auto", *export_names())


def choose_detector(name: str, protocol: str, results: Mapping, available: Collection[str],
                    feature_set: str = EXPORT_FEATURE_SET) -> str:
    """Registry name of the detector to export; ``available``: the run's detector names.

    ``auto``: under the validation protocol the detector of ``feature_set`` with the best
    AUC (the validation protocol exists to make such choices), else the fitted detector
    with the lowest ``auto_export_rank`` (kde, then membank for feature maps), else the
    first fitted one.
    """
    if name != "auto":
        det = export_names()[name].name
        if det not in available:
            raise ConfigError(f"--export_detector={name} was not fit in this run; add "
                              f"{det} to --detectors")
        return det
    candidates = [cls for cls in DETECTORS.values() if cls.name in available]
    ranked = [cls.name for cls in candidates if f"{feature_set}.{cls.name}" in results]
    if protocol == "validation" and ranked:  # no AUCs (good images only): ranks, as below
        return max(ranked, key=lambda d: results[f"{feature_set}.{d}"])
    if not candidates:
        raise ConfigError("none of the run's detectors can be exported; add kde to --detectors")
    preferred = [cls for cls in candidates if cls.auto_export_rank is not None]
    if preferred:
        return min(preferred, key=lambda cls: cls.auto_export_rank).name
    return candidates[0].name


def is_export(path: Path | str) -> bool:
    """True when ``path`` holds an export of this format (any version): what an export may
    replace, so that a run directory or a user's folder is never deleted for one."""
    try:
        meta = json.loads((Path(path) / "assets" / META_NAME).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("format") == EXPORT_FORMAT


#: what a SavedModel export directory holds; anything else in it is a user's
SAVEDMODEL_ENTRIES = ("saved_model.pb", "fingerprint.pb", "variables/", "assets/")


def _export_owns(root, rel):
    return any(rel == entry or (entry.endswith("/") and rel.startswith(entry))
               for entry in SAVEDMODEL_ENTRIES)


EXPORT_KIND = OutputKind("export", is_export, _export_owns)


def export_fingerprint(export_dir: Path | str) -> Optional[str]:
    """sha256 of what the export computes: its metadata (detector, thresholds, the run's
    configuration, versions; not its creation time) and the scores it gives the held-out
    calibration images, which any change of the weights or the detector changes. Two
    exports of one run with the same settings share it; a conversion records it."""
    import numpy as np

    export_dir = Path(export_dir)
    digest = hashlib.sha256()
    try:
        meta = json.loads((export_dir / "assets" / META_NAME).read_text())
        meta.pop("created", None)
        digest.update(json.dumps(meta, sort_keys=True, default=str).encode())
        with np.load(export_dir / "assets" / CALIB_SCORES_NAME, allow_pickle=False) as z:
            for key in sorted(z.files):
                digest.update(key.encode() + b"\0" + np.ascontiguousarray(z[key]).tobytes())
    except (OSError, ValueError, AttributeError):  # missing or garbled: matches no record
        return None
    return digest.hexdigest()


def read_export_meta(export_dir: Path | str) -> dict:
    """The export's metadata; ConfigError for a missing, foreign or incompatible export."""
    export_dir = require_dir(export_dir, "export directory")
    path = export_dir / "assets" / META_NAME
    if not path.exists():
        raise ConfigError(f"{export_dir} is not a DROC export (no saved_model.pb and "
                          f"assets/{META_NAME}); export a run with script/export.py RUN_DIR")
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path} is unreadable: {err}") from None
    if not isinstance(meta, dict):
        raise ConfigError(f"{path} does not hold export metadata")
    if meta.get("format") != EXPORT_FORMAT:
        raise ConfigError(f"{export_dir} is not a DROC export (format {meta.get('format')!r})")
    if meta.get("version") != EXPORT_VERSION:
        raise ConfigError(f"{export_dir} has export version {meta.get('version')!r}, this code "
                          f"reads version {EXPORT_VERSION}; re-export the run with "
                          "script/export.py RUN_DIR")
    return meta


def check_savedmodel_files(export_dir: Path | str) -> None:
    """ConfigError naming the export when a file TensorFlow needs to load it is missing or
    empty: saved_model.pb, variables/variables.index and its data shards (a truncated
    file is found when loading: see ``damaged_export``)."""
    export_dir = Path(export_dir)
    variables = export_dir / "variables"
    needed = [export_dir / "saved_model.pb", variables / "variables.index"]
    needed += sorted(variables.glob("variables.data-*")) or [variables / "variables.data-*"]
    for path in needed:
        if not path.is_file() or path.stat().st_size == 0:
            state = "empty" if path.is_file() else "missing"
            raise damaged_export(export_dir, f"{path.relative_to(export_dir)} is {state}")


def damaged_export(export_dir: Path | str, reason: object) -> ConfigError:
    """The ConfigError of an export that cannot be loaded."""
    first = str(reason).strip().splitlines()[0] if str(reason).strip() else type(reason).__name__
    return ConfigError(f"export {export_dir} is damaged ({first}); re-export the run with "
                       "script/export.py RUN_DIR")
