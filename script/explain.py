"""Heat maps of why a run's test images are scored abnormal (no retraining).

    python script/explain.py RUN_DIR [--method=ig|gradcam] [--target=kde|rotation]
                             [--num_images=8] [--which=top|outliers|inliers|all] [--out=DIR]

Rebuilds the model from RUN_DIR (stats/hparams.json + last checkpoint), refits
the KDE on pool features of the same training inliers as the run (same
calibration split), and writes one PNG per test image (input | heat map) to
RUN_DIR/explain/ (default): ``--which=top`` takes the highest-scored test
images, ``outliers`` / ``inliers`` the highest-scored of that label, ``all``
every test image. ``--target=rotation`` explains the rotation classifier's
``logit`` score instead (rotation models only). The output folder may be new,
empty or a previous folder of explanations (recognised by its manifest,
util/ownership.py), apart from what it reads of RUN_DIR (its checkpoints and
stats/); anything else is refused before any work. The folder is locked while
it is written (util/runlock.py): a second explain.py or score.py into it is
refused with one ``error:`` line.
"""

import contextlib
import sys
from pathlib import Path

from engine.run_loading import read_run_config, run_inputs
from engine.validate import validate_config
from model.registry import MODEL_TYPES
from deploy.export_format import EXPORT_KIND
from util.cli import ArgumentParser, quiet_stderr, script_main
from util.errors import ConfigError
from util.heatmaps import EXPLANATIONS_KIND, MAPS_KIND
from util.ownership import Manifest, check_apart, claim_output, lock_manifest_folder


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dir")
    p.add_argument("--method", choices=("ig", "gradcam"), default="gradcam")
    p.add_argument("--target", choices=("kde", "rotation"), default="kde")
    p.add_argument("--num_images", type=int, default=8)
    p.add_argument("--which", choices=("top", "outliers", "inliers", "all"), default="top")
    p.add_argument("--ig_steps", type=int, default=32)
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


def model_score_keys(model_type):
    """The score keys a model type adds (``logit`` for the rotation classifier)."""
    return MODEL_TYPES.get(model_type, {}).get("score_keys", ())


def pick(scores, labels, which, n):
    import numpy as np

    order = np.argsort(-scores, kind="stable")
    if which == "outliers":
        order = order[labels[order] == 1]
    elif which == "inliers":
        order = order[labels[order] == 0]
    return order if which == "all" else order[:n]


@script_main(kept="the PNGs written so far are kept")
def main(argv=None):
    args = parse_args(argv)
    with contextlib.ExitStack() as locks:
        return explain(args, locks)


def explain(args, locks):
    """Writes the explanations; the output folder's lock is entered into ``locks``."""
    if args.num_images <= 0 or args.ig_steps <= 0:
        raise ConfigError("--num_images and --ig_steps must be positive")
    cfg = read_run_config(args.run_dir)
    out = claim_output(args.out or Path(args.run_dir) / "explain", EXPLANATIONS_KIND, "--out",
                       not_inside=(EXPORT_KIND, MAPS_KIND))
    check_apart([("--out", out, True)], run_inputs(args.run_dir))
    manifest = Manifest(out, EXPLANATIONS_KIND)
    if args.target == "rotation" and "logit" not in model_score_keys(cfg["model_type"]):
        raise ConfigError(f"--target=rotation needs a rotation model, this run is "
                          f"{cfg['model_type']}")
    cfg["detectors"] = "kde"
    if validate_config(cfg).evaluator.maps:
        raise ConfigError(f"{args.run_dir} is a {cfg['mvtec_mode']} run: its anomaly maps are under "
                          "heatmaps/, and score.py --maps_dir draws them for new images")
    lock_manifest_folder(manifest, "--out", locks, not_inside=(EXPORT_KIND, MAPS_KIND))

    from tqdm import tqdm

    from data.augment import to_float_images
    from deploy.explain import (ScoreFunction, detector_head, heatmap, rotation_head,
                                save_explanation)
    from engine.run_loading import load_run
    from model.trunk import conv_trunk

    with quiet_stderr():  # TensorFlow's import lines only if the run loads
        _, model, data, evaluator = load_run(args.run_dir, cfg)
    ev = evaluator.final(model, data)
    if args.target == "kde":
        kde = ev.detectors["pool.kde"]
        head = detector_head(model, kde.graph_score, kde.export_params())
        scores = ev.test_scores["pool.kde"]
    else:
        head = rotation_head(model)
        scores = ev.test_scores["logit"]
    score_fn = ScoreFunction(conv_trunk(model), head)
    idx = pick(scores, ev.labels, args.which, args.num_images)
    manifest.start()
    for i in tqdm(idx, desc=f"{args.method} maps", unit="img", file=sys.stderr):
        img = data.test_images[i:i + 1]
        heat = heatmap(args.method, score_fn, to_float_images(img), args.ig_steps)[0]
        kind = "outlier" if ev.labels[i] else "inlier"
        save_explanation(manifest.add(f"{args.method}_{int(i):05d}_{kind}.png"), img[0],
                         heat.numpy(), method=f"{args.method} of {args.target} score",
                         title=f"test #{int(i)} ({kind}), score {scores[i]:.4g}")
    print(f"wrote {len(idx)} PNGs to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
