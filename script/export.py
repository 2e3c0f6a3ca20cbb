"""Export a finished run again (another detector, another threshold) without retraining.

    python script/export.py RUN_DIR [--export_detector=gde] [--target_fpr=0.05] [--out=DIR]

The model is rebuilt from RUN_DIR/stats/hparams.json and its last checkpoint; the
detector is refit on the same training inliers (same calibration split and seed)
as the run, so its scores equal the run's stats/scores.npz. Default output:
RUN_DIR/export (replaced atomically).
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from util.errors import ConfigError  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dir")
    p.add_argument("--export_detector", default=None,
                   help="auto, kde, gde, kocsvm, locsvm or nn (default: the run's flag)")
    p.add_argument("--target_fpr", type=float, default=None)
    p.add_argument("--calibration_fraction", type=float, default=None)
    p.add_argument("--out", default=None, help="export directory (default RUN_DIR/export)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        from util.config import FLAG_DEFAULTS
        from util.outputs import check_flags

        run_dir = Path(args.run_dir)
        if not (run_dir / "stats" / "hparams.json").exists():
            raise ConfigError(f"{run_dir} is not a run directory (no stats/hparams.json)")
        import json

        cfg = dict(FLAG_DEFAULTS)
        cfg.update(json.loads((run_dir / "stats" / "hparams.json").read_text()))
        for key in ("export_detector", "target_fpr", "calibration_fraction"):
            if getattr(args, key) is not None:
                cfg[key] = getattr(args, key)
        check_flags(cfg)

        from util.evaluation import evaluate_final
        from util.export import EXPORT_DETECTORS, EXPORT_FEATURE_SET, load_run
        from util.outputs import calibrate_all, export_evaluation

        _, model, data = load_run(run_dir)
        dets = sorted(set(EXPORT_DETECTORS.values()) & set(cfg["detectors"].split(",")))
        if cfg["export_detector"] != "auto":
            dets = [EXPORT_DETECTORS[cfg["export_detector"]]]
        ev = evaluate_final(model, data, detectors=dets, max_train=cfg["max_detector_train"],
                            seed=cfg["seed"], batch_size=cfg["eval_batch_size"],
                            calibration_fraction=cfg["calibration_fraction"])
        ev.detectors = {k: v for k, v in ev.detectors.items()
                        if k.startswith(EXPORT_FEATURE_SET + ".")}
        calibs = calibrate_all(ev, cfg["target_fpr"])
        export_evaluation(Path(args.out or run_dir / "export"), cfg, model, data, ev, calibs)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
