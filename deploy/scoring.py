"""Scoring images with a loaded export, the same way for every caller: script/score.py on a
folder and the HTTP service (deploy/service.py) on uploads.

Here live the pieces both need so that their answers cannot drift apart: loading the
export, the thresholds a decision is taken at, the per-image results of one model call
(raw and normalised score, decision, and for map exports the mask at the input's size
and its area), the colour scale of the anomaly-map pictures and the CSV's format.
"""

import csv
import dataclasses
import io
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np

from deploy.export_format import CALIB_SCORES_NAME, damaged_export, has_maps
from util.cli import quiet_stderr
from util.errors import ConfigError
from util.paths import printable_path

CSV_HEADER = ["path", "raw_score", "normalized_score", "decision"]
AREA_COLUMN = "defect_area_px"


def decision_thresholds(meta: Mapping, export_dir: Path | str, threshold: Optional[float] = None,
                        pixel_threshold: Optional[float] = None,
                        target_fpr: Optional[float] = None) -> tuple:
    """(image threshold, pixel threshold or None, where they come from): the export's
    calibrated ones, explicit values, or new ones at ``target_fpr`` on the export's
    calibration scores (assets/calibration_scores.npz)."""
    from detect.calibration import check_calibration_flags, threshold_at_fpr

    mapped = has_maps(meta)
    if pixel_threshold is not None and not mapped:
        raise ConfigError("--pixel_threshold applies to exports with maps only (patch and "
                          "map models)")
    image_thr = float(meta["calibration"]["threshold"])
    pixel_thr = float(meta["pixel_calibration"]["threshold"]) if mapped else None
    fpr = meta["calibration"].get("target_fpr")
    source = "calibrated" + (f" at FPR {fpr}" if fpr is not None else "")
    if target_fpr is not None:
        if threshold is not None or pixel_threshold is not None:
            raise ConfigError("give --target_fpr or explicit thresholds, not both")
        check_calibration_flags(0.0, target_fpr)
        path = Path(export_dir) / "assets" / CALIB_SCORES_NAME
        if not path.is_file():
            raise ConfigError(f"{export_dir} stores no calibration scores ({path}); re-export "
                              "the run with script/export.py RUN_DIR, or pass --threshold")
        try:
            with np.load(path, allow_pickle=False) as z:
                image_thr = threshold_at_fpr(z["image"], target_fpr)
                if mapped:
                    pixel_thr = threshold_at_fpr(z["pixel"], target_fpr)
        except (OSError, ValueError, KeyError) as err:
            raise ConfigError(f"{path} is unreadable: {err}") from None
        source = f"set at FPR {target_fpr} on the export's calibration scores"
    if threshold is not None:
        image_thr, source = float(threshold), "given"
    if pixel_threshold is not None:
        pixel_thr = float(pixel_threshold)
    return image_thr, pixel_thr, source


def load_export(export_dir: Path | str) -> Any:
    """The SavedModel; ConfigError naming the export when TensorFlow cannot load it. What
    TensorFlow logs while it is imported and loads is shown only when the load succeeds,
    so a damaged export prints the error line alone."""
    try:
        with quiet_stderr():
            import tensorflow as tf

            return tf.saved_model.load(str(export_dir))
    except Exception as err:  # TF raises OSError, IndexError, OpError, ... for damage
        raise damaged_export(export_dir, f"{type(err).__name__}: {err}") from None


def mask_at_input_size(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """The working-size {0,1} mask resized (nearest) to the input image's size, 255 = defect."""
    from PIL import Image

    m = Image.fromarray((np.asarray(mask) > 0).astype(np.uint8) * 255)
    if m.size != (width, height):
        m = m.resize((width, height), Image.NEAREST)
    return np.asarray(m)


def at_working_size(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """The input shown under the map: resized to the map's (working) size."""
    from PIL import Image

    if image.shape[:2] == tuple(size):
        return image
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR))


@dataclasses.dataclass
class ScoredImage:
    """One image's result: the CSV's numbers, and for map exports its anomaly map and
    mask at the working size and the mask at the input's size (255 = defect)."""

    raw_score: float
    normalized_score: float
    decision: int
    anomaly_map: Optional[np.ndarray] = None
    mask: Optional[np.ndarray] = None
    full_mask: Optional[np.ndarray] = None

    @property
    def defect_area_px(self) -> Optional[int]:
        return None if self.full_mask is None else int((self.full_mask > 0).sum())


def scored_images(outputs: Mapping[str, Any], images: Sequence[np.ndarray], image_thr: float,
                  pixel_thr: Optional[float]) -> list:
    """The ScoredImage of each of ``images`` from the serving signature's ``outputs`` for
    them (numpy arrays or tensors): decided strictly above ``image_thr``, masked strictly
    above ``pixel_thr``."""
    raw = np.asarray(outputs["raw_score"])
    norm = np.asarray(outputs["normalized_score"])
    dec = (raw > image_thr).astype(np.int64)
    if "anomaly_map" not in outputs:
        return [ScoredImage(float(r), float(n), int(d)) for r, n, d in zip(raw, norm, dec)]
    pixel = np.asarray(outputs["anomaly_map"])
    masks = pixel > pixel_thr
    return [ScoredImage(float(raw[i]), float(norm[i]), int(dec[i]), pixel[i], masks[i],
                        mask_at_input_size(masks[i], img.shape[0], img.shape[1]))
            for i, img in enumerate(images)]


def mask_regions(full_mask: np.ndarray) -> list:
    """The bounding boxes of the mask's connected regions (8-neighbour), largest first:
    ``{"x", "y", "width", "height", "area_px"}`` in the input image's pixels."""
    from scipy import ndimage

    labels, count = ndimage.label(np.asarray(full_mask) > 0, structure=np.ones((3, 3), bool))
    if not count:
        return []
    areas = np.bincount(labels.ravel(), minlength=count + 1)
    boxes = []
    for index, found in enumerate(ndimage.find_objects(labels), start=1):
        rows, cols = found
        boxes.append({"x": int(cols.start), "y": int(rows.start),
                      "width": int(cols.stop - cols.start), "height": int(rows.stop - rows.start),
                      "area_px": int(areas[index])})
    return sorted(boxes, key=lambda b: (-b["area_px"], b["y"], b["x"]))


def map_figure(meta: Mapping, pixel_thr: float, calib_path: Path) -> Any:
    """The anomaly-map picture (util/heatmaps.PredictionFigure), its colour scale fixed by
    the calibration: the calibration pixels' 1st percentile at the bottom, the pixel
    threshold in the middle."""
    from util.heatmaps import PredictionFigure, split_norm

    low = float(meta["pixel_calibration"]["norm_min"])
    if calib_path.is_file():
        with np.load(calib_path, allow_pickle=False) as z:
            if "pixel" in z.files:
                low = float(np.percentile(z["pixel"], 1.0))
    span = max(pixel_thr - low, 1e-6)
    top = min(pixel_thr + 100.0 * span, sys.float_info.max)  # a threshold near the float limit
    return PredictionFigure(split_norm(low, pixel_thr, top),
                            title=f"{meta['score_key']}, pixel threshold {pixel_thr:.4g}")


def csv_text(rows: Iterable[Sequence], area: bool = False) -> str:
    """The score CSV of ``rows`` ((path, raw, normalized, decision[, defect area])): floats
    by their shortest round-trip text (Python's repr), paths printable."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_HEADER + ([AREA_COLUMN] if area else []))
    for row in rows:
        writer.writerow([printable_path(row[0]), repr(float(row[1])), repr(float(row[2])),
                         int(row[3])] + ([int(row[4])] if area else []))
    return buf.getvalue()
