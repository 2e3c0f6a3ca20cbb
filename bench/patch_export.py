"""Patch-export benchmark: one MVTec category's test images scored through an exported patch
model, next to the bare network on the same images in the same process.

    python -m bench.patch_export [--mvtec_root DIR] [--mvtec_category bottle]
        [--mvtec_patch_features conv] [--export_detectors gde,kde] [--mvtec_images 16]

For each detector the model (an untrained ResNet-18 at ``--width``, or the
trained one of ``--mvtec_run``) and a detector fit on the training images'
patches are exported with deploy/export.py; the SavedModel is loaded back and
serves the 256 px test images (image score, patch map, anomaly map, mask).
The baseline is the bare network: the trunk passes the patch features need
(``conv``: one pass per grid shift over the whole image; ``crop``: every
grid window), without the detector, the maps or the resize, timed in the same
rounds. Prints images/s (median of ``--rounds`` rounds), the export / network
time ratio (target: at most 1.5 with GDE) and the process's peak resident
memory. ``script/benchmark.py --sections=patch_export`` runs this file in a
fresh process per mode, so the peak memory is this work's alone.
"""

import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench import mvtec  # noqa: E402  (after the TF log level)
from util.cli import ArgumentParser, script_main  # noqa: E402


def add_args(p):
    p.add_argument("--export_detectors", default="gde,kde",
                   help="detectors exported and timed, each in its own export")
    p.add_argument("--export_batch", type=int, default=4, help="images per serving call")
    p.add_argument("--rounds", type=int, default=3, help="timed passes over the images")


def _images_per_s(fn, images, batch):
    t0 = time.perf_counter()
    for s in range(0, len(images), batch):
        fn(images[s:s + batch])
    return len(images) / (time.perf_counter() - t0)


def run(args, log=print):
    import numpy as np
    import tensorflow as tf

    from data.mvtec import load_category
    from deploy.export import export_patch_model
    from deploy.patch_scorer import PatchScorer
    from detect.calibration import calibration
    from detect.detectors import make_detector
    from detect.evaluation import PatchGrid
    from engine.flags import FLAG_DEFAULTS
    from model.registry import build_model

    mode = args.mvtec_patch_features
    cfg = dict(FLAG_DEFAULTS)
    if args.mvtec_run:
        from engine.run_loading import load_run

        cfg, model, data, _ = load_run(args.mvtec_run)
    else:
        size = cfg["mvtec_image_size"]
        data = load_category(os.path.join(args.mvtec_root, args.mvtec_category),
                             (size, size, 3), args.mvtec_category, "mvtec")
        model = build_model("rotation", net_width=args.width,
                            input_shape=(cfg["patch_size"], cfg["patch_size"], 3),
                            head_dims="512x8")
    p, size, stride = cfg["patch_size"], cfg["mvtec_image_size"], args.mvtec_stride
    images = data.test_images[:args.mvtec_images] if args.mvtec_images else data.test_images
    grid = PatchGrid(size, p, stride, mode)
    train = mvtec.training_features(model, data.train_images, p, stride, mode,
                                          args.mvtec_train_patches)
    out = {"mode": mode, "images": len(images), "image_size": size,
           "width": cfg["net_width"] if args.mvtec_run else args.width,
           "train_patches": len(train), "feature_dim": int(train.shape[1]),
           "model": args.mvtec_run or "untrained"}
    servers = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in [d.strip() for d in args.export_detectors.split(",") if d.strip()]:
            det = make_detector(name).fit(train)
            calib = calibration(det.score(train[:2000]), 0.01)
            export_patch_model(Path(tmp) / name, model, grid, det, calib, calib, cfg,
                               log=lambda *_: None)
            servers[name] = tf.saved_model.load(str(Path(tmp) / name)).signatures[
                "serving_default"]
            if "network" not in servers:  # the bare trunk passes of the same graph
                scorer = PatchScorer(model, grid, det, calib, calib, "pool", "{}", [])
                spec = tf.TensorSpec([None, size, size, 3], tf.float32)
                servers["network"] = tf.function(
                    (lambda x: tf.map_fn(scorer.conv_features, x, fn_output_signature=tf.float32))
                    if mode == "conv" else scorer.crop_features, input_signature=[spec])
        inputs = {"network": tf.constant(images.astype(np.float32) / 255.0)}
        calls = {k: (lambda x, f=f: f(x)) if k == "network" else (lambda x, f=f: f(images=x))
                 for k, f in servers.items()}
        uint8 = tf.constant(images)
        for k, fn in calls.items():  # warm-up: trace and first-call costs
            fn((inputs.get(k, uint8))[:args.export_batch])
        rates = {k: [] for k in calls}
        for _ in range(args.rounds):  # alternating, so machine noise hits every variant
            for k, fn in calls.items():
                rates[k].append(_images_per_s(fn, inputs.get(k, uint8), args.export_batch))
    for k, r in rates.items():
        out[f"{k}_images_per_s"] = round(statistics.median(r), 3)
    net = out["network_images_per_s"]
    for k in servers:
        if k != "network":
            out[f"{k}_over_network_time"] = round(net / out[f"{k}_images_per_s"], 2)
    out["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2, 2)
    log(f"patch export ({mode} features, {out['model']} ResNet-18 width {out['width']}, "
        f"{len(images)} {args.mvtec_category} test images at {size} px, {len(train)} training "
        f"patches, {out['feature_dim']}-d): network {net} images/s; " + "; ".join(
            f"export {k} {out[f'{k}_images_per_s']} images/s = "
            f"{out[f'{k}_over_network_time']}x the network's time" for k in servers
            if k != "network") + f" (target <= 1.5x with gde); peak RSS {out['peak_rss_gb']} GB")
    return out


def patch_export_section(args, log=print):
    """For script/benchmark.py: each --mvtec_patch_features mode in a fresh process."""
    return mvtec.each_mode_in_a_fresh_process("bench.patch_export", args, lambda mode: [
        f"--mvtec_root={args.mvtec_root}", f"--mvtec_category={args.mvtec_category}",
        f"--mvtec_train_patches={args.mvtec_train_patches}",
        f"--mvtec_images={args.mvtec_images or 16}",
        f"--mvtec_stride={args.mvtec_stride}", f"--mvtec_patch_features={mode}",
        f"--width={args.widths.split(',')[0]}", f"--mvtec_run={args.mvtec_run}",
        f"--export_detectors={args.export_detectors}",
        f"--export_batch={args.export_batch}", f"--rounds={args.rounds}"], log)


@script_main
def main(argv=None):
    p = ArgumentParser(description=__doc__.splitlines()[0])
    mvtec.add_args(p)
    add_args(p)
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--json", help="write the figures here")
    p.set_defaults(mvtec_patch_features="conv", mvtec_images=16)
    args = p.parse_args(argv)
    cat_dir = os.path.join(args.mvtec_root, args.mvtec_category)
    if not args.mvtec_run and not os.path.isdir(cat_dir):
        print(f"error: {cat_dir} not found; pass --mvtec_root", file=sys.stderr)
        return 2
    if args.mvtec_patch_features not in ("crop", "conv"):
        print(f"error: --mvtec_patch_features={args.mvtec_patch_features}: this script times "
              "one mode (crop or conv)", file=sys.stderr)
        return 2
    out = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
