"""Export a finished run again (another detector, another threshold) without retraining.

    python script/export.py RUN_DIR [--export_detector=gde] [--target_fpr=0.05] [--out=DIR]
                            [--format=saved_model|onnx|openvino]

The model is rebuilt from RUN_DIR/stats/hparams.json and its last checkpoint; the
detector is refit on the same training inliers (same calibration split and seed)
as the run, so its scores equal the run's stats/scores.npz. Default output:
RUN_DIR/export (replaced atomically). ``--out`` may only replace a previous
export (recognised by its metadata) or an empty directory: anything else, such
as the run directory itself, is refused before any work. --format=onnx or
openvino also converts that SavedModel (deploy/convert.py) and writes DIR.onnx
or DIR_openvino/ beside it, under the same rule.
"""

import sys
from pathlib import Path

from deploy.convert import convert_export, converted_path, is_converted
from deploy.export_format import EXPORT_DETECTORS, is_export
from engine.run_loading import read_run_config
from engine.validate import check_export_format, check_scoring_flags, validate_config
from util.cli import ArgumentParser, quiet_stderr, script_main
from util.paths import check_output_path


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dir")
    p.add_argument("--export_detector", default=None,
                   help="auto, kde, gde, kocsvm, locsvm or nn (default: the run's flag)")
    p.add_argument("--target_fpr", type=float, default=None)
    p.add_argument("--calibration_fraction", type=float, default=None)
    p.add_argument("--out", default=None, help="export directory (default RUN_DIR/export)")
    p.add_argument("--format", default="saved_model",
                   help="saved_model, onnx (also writes OUT.onnx) or openvino (OUT_openvino/)")
    return p.parse_args(argv)


@script_main
def main(argv=None):
    args = parse_args(argv)
    check_export_format(args.format)
    run_dir = Path(args.run_dir)
    cfg = read_run_config(run_dir)
    out = check_output_path(args.out or run_dir / "export", "dir", "--out", replaces=is_export,
                            what="export")
    if args.format != "saved_model":
        check_output_path(converted_path(out, args.format),
                          "file" if args.format == "onnx" else "dir", "--format",
                          replaces=lambda p: is_converted(p, args.format),
                          what=f"{args.format} export")
    for key in ("export_detector", "target_fpr", "calibration_fraction"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    check_scoring_flags(cfg)
    dets = sorted(set(EXPORT_DETECTORS.values()) & set(cfg["detectors"].split(",")))
    if cfg["export_detector"] != "auto":
        dets = [EXPORT_DETECTORS[cfg["export_detector"]]]
    cfg["detectors"] = ",".join(dets) if dets else cfg["detectors"]
    validate_config(cfg)

    from engine.outputs import calibrate_all, export_evaluation
    from engine.run_loading import load_run

    with quiet_stderr():  # TensorFlow's import lines only if the run loads
        _, model, data, evaluator = load_run(run_dir, cfg)
    ev = evaluator.final(model, data)
    calibs = calibrate_all(ev, cfg["target_fpr"])
    export_evaluation(out, cfg, model, data, ev, calibs)
    if args.format != "saved_model":
        convert_export(out, args.format)
    return 0


if __name__ == "__main__":
    sys.exit(main())
