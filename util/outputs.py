"""What a finished run leaves besides summary.json AUCs: per-image scores, calibrated
thresholds and the metrics at them, plots, and the exported SavedModel.

``finish_outputs`` is the one call util/experiment.py makes after the final
evaluation (util.evaluation.evaluate_final); it returns the entries it adds to
summary.json: ``metrics`` ({key: image_AUROC, image_AUPR, image_F1Max,
image_TPR, image_FPR}), ``calibration`` ({key: threshold, normalisation, ...})
and ``export`` (what was exported, or null).
"""

from pathlib import Path

from util.calibration import calibration, warn_if_small
from util.metrics import image_metrics
from util.plots import plot_histograms, plot_roc
from util.scores_file import write_scores


def check_flags(cfg):
    """The scoring & export flags, checked before anything is written (no TensorFlow)."""
    from util.calibration import check_calibration_flags
    from util.config import FLAG_DEFAULTS
    from util.export import check_export_detector

    get = lambda k: cfg.get(k, FLAG_DEFAULTS[k])  # noqa: E731 (runs made before these flags)
    check_calibration_flags(get("calibration_fraction"), get("target_fpr"))
    check_export_detector(get("export_detector"))


def calibrate_all(ev, target_fpr, log=print):
    if ev.n_calibration:
        warn_if_small(ev.n_calibration, target_fpr, log=log)
    else:
        log("warning: --calibration_fraction=0: thresholds are set on the detectors' own "
            "training features, which look more normal than new inliers")
    return {key: calibration(s, target_fpr) for key, s in ev.calib_scores.items()}


def finish_outputs(run_dir, cfg, model, data, ev, log=print):
    run_dir = Path(run_dir)
    calibs = calibrate_all(ev, cfg.get("target_fpr", 0.01), log)
    metrics = {key: image_metrics(ev.labels, s, calibs[key]["threshold"])
               for key, s in ev.test_scores.items()}
    write_scores(run_dir / "stats" / "scores.npz", ev.labels, ev.ids, ev.test_scores,
                 ev.calib_scores)
    aucs = {key: m["image_AUROC"] for key, m in metrics.items()}
    plot_roc(run_dir / "plots" / "roc.png", ev.labels, ev.test_scores, aucs,
             title=f"{data.dataset} {data.category!r} ({data.protocol}), AUC x 100")
    plot_histograms(run_dir / "plots" / "score_hist.png", ev.labels, ev.test_scores,
                    {k: c["threshold"] for k, c in calibs.items()})
    exported = None
    if cfg.get("export", True):
        exported = export_evaluation(run_dir / "export", cfg, model, data, ev, calibs, log)
    log(f"Wrote {run_dir / 'stats' / 'scores.npz'} and {run_dir / 'plots'}")
    return {"metrics": metrics, "calibration": calibs, "export": exported}


def export_evaluation(export_dir, cfg, model, data, ev, calibs, log=print):
    from util.export import EXPORT_FEATURE_SET, choose_detector, export_saved_model

    available = {k.split(".", 1)[1] for k in ev.detectors if k.startswith(EXPORT_FEATURE_SET)}
    name = choose_detector(cfg.get("export_detector", "auto"), data.protocol, ev.results,
                           available)
    key = f"{EXPORT_FEATURE_SET}.{name}"
    meta = export_saved_model(export_dir, model, data.input_shape, ev.detectors[key],
                              ev.fit_feats[EXPORT_FEATURE_SET], calibs[key], cfg,
                              results=ev.results, log=log)
    return {"dir": str(export_dir), "score_key": key, "detector": meta["detector"]}
