"""Export a finished run again (another detector, another threshold) without retraining.

    python script/export.py RUN_DIR [--export_detector=gde] [--target_fpr=0.05] [--out=DIR]
                            [--format=saved_model|onnx|openvino]

The model is rebuilt from RUN_DIR/stats/hparams.json and its last checkpoint; the
detector is refit on the same training inliers (same calibration split and seed)
as the run, so its scores equal the run's stats/scores.npz. Default output:
RUN_DIR/export (replaced atomically). ``--out`` may only replace a previous
export (recognised by its metadata) holding nothing else, or an empty
directory: anything else, such as the run directory itself, a folder inside an
export or a folder of maps, or one inside what it reads of RUN_DIR (ckpt/,
stats/), is refused before any work (util/ownership.py). --format=onnx or
openvino also converts that SavedModel (deploy/convert.py) and writes DIR.onnx
(with its record DIR.onnx.json) or DIR_openvino/ beside it, under the same
rule. Replacing an export by one that computes something else (another detector or
threshold) removes the conversions made from the previous one.
"""

import sys
from pathlib import Path

from deploy.convert import claim_conversion, convert_export
from deploy.export_format import EXPORT_KIND
from detect.detectors import export_names
from engine.run_loading import read_run_config, run_inputs
from engine.validate import (check_export_format, check_exportable, check_scoring_flags,
                             validate_config)
from util.cli import ArgumentParser, quiet_stderr, script_main
from util.heatmaps import EXPLANATIONS_KIND, MAPS_KIND
from util.ownership import check_apart, claim_output


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dir")
    p.add_argument("--export_detector", default=None,
                   help="auto or a detector the run fit, by its export name "
                        f"({', '.join(export_names())}; default: the run's flag)")
    p.add_argument("--target_fpr", type=float, default=None)
    p.add_argument("--calibration_fraction", type=float, default=None)
    p.add_argument("--out", default=None, help="export directory (default RUN_DIR/export)")
    p.add_argument("--format", default="saved_model",
                   help="saved_model, onnx (also writes OUT.onnx) or openvino (OUT_openvino/)")
    return p.parse_args(argv)


@script_main(kept="the export and its conversions are replaced only when complete, so the "
                  "previous ones are as they were")
def main(argv=None):
    args = parse_args(argv)
    check_export_format(args.format)
    run_dir = Path(args.run_dir)
    cfg = read_run_config(run_dir)
    check_exportable(cfg["model_type"], f"{run_dir}")
    out = claim_output(args.out or run_dir / "export", EXPORT_KIND, "--out",
                       not_inside=(EXPORT_KIND, MAPS_KIND, EXPLANATIONS_KIND))
    check_apart([("--out", out, True)], run_inputs(run_dir))
    if args.format != "saved_model":
        claim_conversion(out, args.format)
    cfg["export"] = True
    for key in ("export_detector", "target_fpr", "calibration_fraction"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    check_scoring_flags(cfg)
    if cfg["export_detector"] != "auto":  # the one detector to fit again
        cfg["detectors"] = export_names()[cfg["export_detector"]].name
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
