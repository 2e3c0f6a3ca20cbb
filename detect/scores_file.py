"""The per-image scores file of a run: ``<run>/stats/scores.npz``.

Arrays (one ``np.savez`` archive, written atomically):

* ``label``: int64 [N_test], 0 inlier, 1 outlier;
* ``id``: str [N_test], the test image's index (or file path) as a string;
* ``test/<key>``: float64 [N_test] for every result key (``pool.kde``,
  ``embed.gde``, ``logit``, ``dscore``, ...), higher = more abnormal;
* ``calib/<key>``: float64 [M], the same detector's scores of the held-out
  calibration inliers (or of its own training features when there is no
  calibration set);
* ``maps/<key>``: float32 [N_test, n, n], patch runs only: the patch map of
  every test image (its maximum is ``test/<key>``).

Every metric of a run can be recomputed from this file, and runs can be
ensembled by standardising each key with its ``calib/`` scores.
"""

from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from util.atomic import atomic_path


def write_scores(path: Path | str, labels: np.ndarray, ids: Sequence, test_scores: Mapping,
                 calib_scores: Mapping, maps: Optional[Mapping] = None) -> None:
    """Writes the archive; ``test_scores`` / ``calib_scores`` map key -> 1-D scores,
    ``maps`` (patch runs) key -> [N_test, n, n] patch maps."""
    labels = np.asarray(labels, dtype=np.int64).ravel()
    ids = np.asarray([str(i) for i in ids])
    if len(ids) != len(labels):
        raise ValueError(f"{len(ids)} ids but {len(labels)} labels")
    arrays = {"label": labels, "id": ids}
    for key, s in test_scores.items():
        s = np.asarray(s, dtype=np.float64).ravel()
        if len(s) != len(labels):
            raise ValueError(f"test/{key} has {len(s)} scores for {len(labels)} test images")
        arrays[f"test/{key}"] = s
    for key, s in calib_scores.items():
        arrays[f"calib/{key}"] = np.asarray(s, dtype=np.float64).ravel()
    for key, m in (maps or {}).items():
        m = np.asarray(m, dtype=np.float32)
        if len(m) != len(labels):
            raise ValueError(f"maps/{key} has {len(m)} maps for {len(labels)} test images")
        arrays[f"maps/{key}"] = m
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def read_scores(path: Path | str) -> dict:
    """{"label", "id", "test": {key: scores}, "calib": {key: scores}, "maps": {key: maps}}."""
    with np.load(path, allow_pickle=False) as z:
        out = {"label": z["label"], "id": z["id"], "test": {}, "calib": {}, "maps": {}}
        for name in z.files:
            if "/" in name:
                part, key = name.split("/", 1)
                out[part][key] = z[name]
    return out
