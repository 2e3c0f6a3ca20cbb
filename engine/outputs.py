"""What a finished run leaves besides summary.json's metrics: per-image scores,
calibrated thresholds and the metrics at them, plots, heat maps and the export.

engine/experiment.py makes two calls after the final evaluation, whatever the
evaluator (detect.evaluation.Evaluation). ``record_results`` writes
``stats/scores.npz`` and returns the entries it adds to summary.json:
``metrics`` ({key: image_AUROC, image_AUPR, image_F1Max, image_TPR,
image_FPR}) and ``calibration`` ({key: threshold, normalisation, ...}); the
run writes summary.json from them at once, so the results exist before any
later step runs. ``write_extras`` then writes the plots, the heat maps and the
export (``export``: what was exported, or null), each step on its own: a step
that fails is named in the list it returns, and the others and the results
are kept.
A test set without both good and defective images (detect.evaluation.aucs_defined)
gets ``metrics: null`` and no ROC plot; its scores, calibration and export are
written as for any run, and a test set of good images only adds ``good_test_FPR``
({key: the fraction of them above the threshold}).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping

import numpy as np

from deploy.export_format import EXPORT_FEATURE_SET, choose_detector
from detect.calibration import calibration, warn_if_small
from detect.evaluation import MapGrid, aucs_defined
from detect.metrics import image_metrics
from detect.scores_file import write_scores
from util.heatmaps import write_heatmaps
from util.plots import plot_histograms, plot_roc

if TYPE_CHECKING:
    import keras

    from data.base import OneClassData
    from detect.evaluation import Evaluation


def no_held_out_images(fraction: float, n_train: int) -> str:
    """Why no training image was held out for calibration: the flag is 0, or it asked for
    some and the training images are too few (one always stays in the fit)."""
    if fraction <= 0:
        return "--calibration_fraction=0 holds out no image"
    return (f"--calibration_fraction={fraction:g} holds out no image of the {n_train} "
            f"training image{'s' if n_train != 1 else ''} ({fraction:g} x {n_train} rounds to "
            f"{round(fraction * n_train)}, and one image stays in the fit)")


def calibrate_all(ev: Evaluation, target_fpr: float, log: Callable[[str], None] = print) -> dict:
    if ev.n_calibration:
        warn_if_small(ev.n_calibration, target_fpr, log=log)
    else:
        log(f"warning: {no_held_out_images(ev.calibration_fraction, ev.n_train)}: thresholds "
            "are set on the detectors' own training features, which look more normal than "
            "new inliers")
    calibs = {key: calibration(s, target_fpr) for key, s in ev.calib_scores.items()}
    for key, pixels in (ev.calib_pixel_scores or {}).items():
        calibs[key]["pixel"] = calibration(pixels, target_fpr)
    return calibs


def record_results(run_dir: Path | str, cfg: dict, ev: Evaluation,
                   log: Callable[[str], None] = print) -> dict:
    """Writes ``stats/scores.npz``; returns the summary.json entries of the evaluation."""
    run_dir = Path(run_dir)
    calibs = calibrate_all(ev, cfg.get("target_fpr", 0.01), log)
    metrics = None
    write_scores(run_dir / "stats" / "scores.npz", ev.labels, ev.ids, ev.test_scores,
                 ev.calib_scores, maps=ev.cell_maps)
    if aucs_defined(ev.labels):
        metrics = {key: image_metrics(ev.labels, s, calibs[key]["threshold"])
                   for key, s in ev.test_scores.items()}
    sections = {"metrics": metrics, "calibration": calibs, "export": None}
    if len(ev.labels) and not ev.labels.any():  # good test images only: their false alarms
        sections["good_test_FPR"] = {key: float(np.mean(np.asarray(s) > calibs[key]["threshold"]))
                                     for key, s in ev.test_scores.items()}
    log(f"Wrote {run_dir / 'stats' / 'scores.npz'}")
    return sections


def _one_line(err):
    text = (str(err).strip().splitlines() or [""])[0][:300]
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def write_extras(run_dir: Path | str, cfg: dict, model: keras.Model, data: OneClassData,
                 ev: Evaluation, sections: dict,
                 log: Callable[[str], None] = print) -> list[tuple[str, str]]:
    """Plots, heat maps and the export of a run whose results are recorded; each step
    runs on its own. Sets ``sections["export"]``; returns ``[(what, why)]`` of the steps
    that failed (empty when everything was written)."""
    run_dir = Path(run_dir)
    calibs, metrics = sections["calibration"], sections["metrics"]
    steps = []
    if metrics is not None:
        aucs = {key: m["image_AUROC"] for key, m in metrics.items()}
        steps.append(("the ROC plot", lambda: plot_roc(
            run_dir / "plots" / "roc.png", ev.labels, ev.test_scores, aucs,
            title=f"{data.dataset} {data.category!r} ({data.protocol}), AUC x 100")))
    if len(ev.labels):
        steps.append(("the score histograms", lambda: plot_histograms(
            run_dir / "plots" / "score_hist.png", ev.labels, ev.test_scores,
            {k: c["threshold"] for k, c in calibs.items()})))
    if ev.pixel_maps and cfg.get("mvtec_heatmaps", True):
        steps.append(("the heat maps", lambda: write_run_heatmaps(
            run_dir / "heatmaps", cfg["model_type"], data, ev)))
    if cfg.get("export", True):
        steps.append(("the export", lambda: sections.update(export=export_evaluation(
            run_dir / "export", cfg, model, data, ev, calibs, log))))
    failed = []
    for what, step in steps:
        try:
            step()
        except Exception as err:  # noqa: BLE001  (any failure of one step; Ctrl-C passes)
            failed.append((what, _one_line(err)))
    if len(ev.labels) and not any("plot" in what or "histogram" in what for what, _ in failed):
        log(f"Wrote {run_dir / 'plots'}")
    return failed


def write_run_heatmaps(out_dir: Path | str, model_type: str, data: OneClassData,
                       ev: Evaluation) -> None:
    """<run>/heatmaps/<defect>/<name>.png and maps.npz of the evaluation's first key."""
    key, pixel = next(iter(ev.pixel_maps.items()))
    # folders of images (--dataset=folder) have no defect types, file names or masks
    defects = getattr(data, "test_defects", None) or [
        "good" if y == 0 else "anomalous" for y in ev.labels]
    write_heatmaps(str(out_dir), data.test_images, pixel, ev.cell_maps[key], ev.test_scores[key],
                   ev.labels, defects, getattr(data, "test_names", None) or ev.ids,
                   getattr(data, "test_masks", None), title=f"{model_type} {key}")


def export_evaluation(export_dir: Path | str, cfg: dict, model: keras.Model, data: OneClassData,
                      ev: Evaluation, calibs: Mapping, log: Callable[[str], None] = print) -> dict:
    """Exports the run's chosen detector: a whole-image model, or a patch or feature-map
    model with its maps when the evaluation has a patch grid or a map grid."""
    from deploy.export import export_map_model, export_patch_model, export_saved_model

    feature_sets = ev.feature_sets
    feature_set = EXPORT_FEATURE_SET if EXPORT_FEATURE_SET in feature_sets else feature_sets[0]
    available = {k.split(".", 1)[1] for k in ev.detectors if k.startswith(feature_set + ".")}
    name = choose_detector(cfg.get("export_detector", "auto"), data.protocol, ev.results,
                           available, feature_set)
    key = f"{feature_set}.{name}"
    common = dict(run_config=cfg, feature_set=feature_set, results=ev.results,
                  calib_scores=ev.calib_scores[key],
                  input_bits=cfg.get("input_bits") or 0, log=log)
    if ev.grid is None:
        meta = export_saved_model(export_dir, model, data.input_shape, ev.detectors[key],
                                  calibs[key], **common)
    else:
        export_maps = export_map_model if isinstance(ev.grid, MapGrid) else export_patch_model
        meta = export_maps(export_dir, model, ev.grid, ev.detectors[key], calibs[key],
                           calibs[key]["pixel"], pixel_scores=ev.calib_pixel_scores[key],
                           **common)
    return {"dir": str(export_dir), "score_key": key, "detector": meta["detector"],
            "kind": meta["kind"]}
