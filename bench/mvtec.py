"""MVTec dense-scoring benchmark: the whole test set of one category through the patch pipeline.

    python -m bench.mvtec [--root DIR] [--category bottle] [--width 0.25]

Times each stage of ``detect.patch_evaluator`` on real data with an untrained
ResNet-18 (training does not change the cost): features of the detector's
training patches, fitting the detector, features of every test patch (83
bottle images x 57 x 57), detector scoring, Gaussian upsampling and the pixel
metrics. Prints patches/s and the process's peak resident memory; with
``--json`` writes the figures there. ``script/benchmark.py --sections=mvtec``
runs this file in a fresh process so the peak memory is this work's alone.

``--mvtec_run RUN_DIR`` scores with a finished patch-mode run's trained model
instead, so the printed image AUROC / pixel AUROC / PRO compare the quality of
``--mvtec_patch_features`` crop and conv (and ``--mvtec_fit_draw``) on one model.
"""

import json
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from util.atomic import write_text_atomic
from util.cli import ArgumentParser, script_main
from util.errors import ConfigError
from util.paths import check_output_path, require_dir

SHARED_MVTEC = Path(__file__).resolve().parents[2] / "shared" / "data" / "mvtec_ad"


def add_args(p):
    p.add_argument("--mvtec_root", default=str(SHARED_MVTEC), help="MVTec AD directory")
    p.add_argument("--mvtec_category", default="bottle")
    p.add_argument("--mvtec_detector", default="kde")
    p.add_argument("--mvtec_train_patches", type=int, default=20000,
                   help="training patches the detector is fit on (--max_detector_train)")
    p.add_argument("--mvtec_images", type=int, default=0,
                   help="score only the first N test images (0 = all)")
    p.add_argument("--mvtec_stride", type=int, default=4, help="test patch grid stride")
    p.add_argument("--mvtec_patch_features", default="conv,crop",
                   help="comma list of --patch_features modes to time, each in its own process")
    p.add_argument("--mvtec_run", default="",
                   help="a finished MVTec patch-mode run directory: score with its trained model "
                        "(and its category), so the printed AUROC / PRO compare the modes' quality")
    p.add_argument("--mvtec_fit_draw", default="phase", choices=("phase", "grid"),
                   help="conv mode: detector training positions from one random shift per image "
                        "(default, one pass per image) or from every shift (4x the passes)")


def peak_rss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # KB on Linux


def training_features(model, images, patch, stride, patch_features, count, fit_draw="phase",
                      batch=512):
    """pool features [count, D] of the detector's training patches, as the run draws them."""
    from detect.localization import (ConvGridFeatures, features_of_patches, patch_feature_fn,
                                     sample_grid_patches)

    if patch_features == "conv":
        grid = ConvGridFeatures(model, images.shape[1], patch, stride, ("pool",))
        return grid.sampled(images, count, seed=0, draw=fit_draw)["pool"]
    patches, _ = sample_grid_patches(images, count, patch, stride, seed=0)
    return features_of_patches(patch_feature_fn(model, ("pool",)), patches, batch)["pool"]


def run(root, category, width=0.25, detector="kde", train_patches=20000, batch=512, images=0,
        stride=4, patch_features="crop", run_dir="", fit_draw="phase", log=print):
    import numpy as np

    from data.mvtec import load_category
    from model.registry import build_model
    from engine.flags import FLAG_DEFAULTS
    from detect.detectors import make_detector
    from detect.localization import (ConvGridFeatures, dense_patch_features, image_scores,
                                     upsample_maps)
    from detect.metrics import roc_auc
    from detect.patch_evaluator import score_chunked
    from detect.pixel_metrics import pixel_metrics

    cfg = dict(FLAG_DEFAULTS)
    p, size = cfg["patch_size"], cfg["mvtec_image_size"]
    t = {}
    t0 = time.perf_counter()
    if run_dir:  # a trained model: its own data and patch geometry
        from engine.run_loading import load_run

        cfg, model, data, _ = load_run(run_dir)
        p, size, category, width = (cfg["patch_size"], cfg["mvtec_image_size"], cfg["category"],
                                    cfg["net_width"])
    else:
        data = load_category(os.path.join(root, category), (size, size, 3), category, "mvtec")
    if images:
        keep = np.r_[np.flatnonzero(data.test_labels == 0)[:images // 2],
                     np.flatnonzero(data.test_labels == 1)[:images - images // 2]]
        data.test_images, data.test_labels = data.test_images[keep], data.test_labels[keep]
        data.test_masks = None if data.test_masks is None else data.test_masks[keep]
    t["load_s"] = time.perf_counter() - t0
    cpu0 = time.process_time()
    if not run_dir:
        model = build_model("rotation", net_width=width, input_shape=(p, p, 3), head_dims="512x8")
    t0 = time.perf_counter()
    if patch_features == "conv":
        grid = ConvGridFeatures(model, size, p, stride, ("pool",))
    train = training_features(model, data.train_images, p, stride, patch_features,
                              train_patches, fit_draw, batch)
    t["train_features_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    det = make_detector(detector).fit(train)
    t["fit_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if patch_features == "conv":
        feats = grid(data.test_images)["pool"]
    else:
        feats = dense_patch_features(model, data.test_images, p, stride, ("pool",), batch)["pool"]
    t["test_features_s"] = time.perf_counter() - t0
    n_img, n = feats.shape[0], feats.shape[1]
    t0 = time.perf_counter()
    maps = score_chunked(det, feats.reshape(-1, feats.shape[-1])).reshape(n_img, n, n)
    t["score_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    pixel = upsample_maps(maps, p, stride)
    metrics = pixel_metrics(data.test_masks, pixel) if data.test_masks is not None else {}
    t["upsample_metrics_s"] = time.perf_counter() - t0
    total_patches = n_img * n * n
    scoring = t["train_features_s"] + t["fit_s"] + t["test_features_s"] + t["score_s"] \
        + t["upsample_metrics_s"]
    cpu = time.process_time() - cpu0
    out = {k: round(v, 2) for k, v in t.items()}
    out.update(
        cpu_s=round(cpu, 1), stride=stride, patch_features=patch_features,
        category=category, width=width, detector=detector, test_images=n_img, grid=n,
        test_patches=total_patches, train_patches=len(train), feature_dim=int(train.shape[1]),
        scoring_s=round(scoring, 2),
        feature_patches_per_s=round((total_patches + len(train))
                                    / (t["train_features_s"] + t["test_features_s"]), 1),
        detector_patches_per_s=round(total_patches / t["score_s"], 1),
        end_to_end_patches_per_s=round(total_patches / scoring, 1),
        peak_rss_gb=round(peak_rss_gb(), 2),
        model=run_dir or "untrained", fit_draw=fit_draw if patch_features == "conv" else "grid",
        image_auroc=round(roc_auc(data.test_labels, image_scores(maps)), 2),
        **{k: round(v, 2) for k, v in metrics.items()})
    log(f"mvtec {category} (--patch_features={patch_features}, {out['model']} model): "
        f"{n_img} images x {n}x{n} = "
        f"{total_patches} test patches, "
        f"{len(train)} training patches, {detector} on {train.shape[1]}-d pool features")
    log(f"  load {out['load_s']}s | train features {out['train_features_s']}s | fit "
        f"{out['fit_s']}s | test features {out['test_features_s']}s | score {out['score_s']}s | "
        f"upsample+metrics {out['upsample_metrics_s']}s")
    log(f"  scoring total {out['scoring_s']}s (target < 120 s); features "
        f"{out['feature_patches_per_s']} patches/s; detector {out['detector_patches_per_s']} "
        f"patches/s; end to end {out['end_to_end_patches_per_s']} patches/s; peak RSS "
        f"{out['peak_rss_gb']} GB (target < 4 GB); process CPU time {out['cpu_s']} s "
        f"(/2 = wall on 2 idle cores)")
    log(f"  {detector}: image AUROC {out['image_auroc']}, pixel AUROC "
        f"{out.get('pixel_auroc', 'n/a')}, PRO {out.get('pro', 'n/a')} "
        f"(detector positions: {out['fit_draw']})")
    return out


def each_mode_in_a_fresh_process(module, args, mode_argv, log=print):
    """{mode: figures} of ``python -m module`` run once per --mvtec_patch_features mode, each
    in a process of its own so its peak memory is that mode's alone; ``mode_argv(mode)`` is
    the module's arguments. A mode that fails keeps its stderr tail under "error"."""
    import subprocess
    import tempfile

    results = {}
    for mode in [m.strip() for m in args.mvtec_patch_features.split(",") if m.strip()]:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "figures.json")
            proc = subprocess.run([sys.executable, "-m", module, *mode_argv(mode), f"--json={path}"],
                                  text=True, capture_output=True)
            log(proc.stdout.strip())
            if proc.returncode:
                log(f"{module} ({mode}) failed:\n{proc.stderr[-2000:]}")
                results[mode] = {"error": proc.stderr[-2000:]}
                continue
            with open(path) as f:
                results[mode] = json.load(f)
    return results


def mvtec_section(args, log=print):
    """For script/benchmark.py: each --mvtec_patch_features mode in a fresh process;
    returns {mode: figures}, plus the crop/conv time ratio."""
    results = each_mode_in_a_fresh_process("bench.mvtec", args, lambda mode: [
        f"--mvtec_root={args.mvtec_root}", f"--mvtec_category={args.mvtec_category}",
        f"--mvtec_detector={args.mvtec_detector}",
        f"--mvtec_train_patches={args.mvtec_train_patches}",
        f"--mvtec_images={args.mvtec_images}", f"--mvtec_stride={args.mvtec_stride}",
        f"--mvtec_patch_features={mode}", f"--width={args.widths.split(',')[0]}",
        f"--mvtec_run={args.mvtec_run}", f"--mvtec_fit_draw={args.mvtec_fit_draw}"], log)
    if all("scoring_s" in results.get(m, {}) for m in ("crop", "conv")):
        ratio = results["crop"]["scoring_s"] / results["conv"]["scoring_s"]
        results["crop_over_conv_time"] = round(ratio, 2)
        log(f"mvtec: conv patch features score {ratio:.1f}x faster than crop (same run)")
    return results


@script_main
def main(argv=None):
    p = ArgumentParser(description=__doc__.splitlines()[0])
    add_args(p)
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args(argv)
    if not args.mvtec_run:
        require_dir(os.path.join(args.mvtec_root, args.mvtec_category),
                    "MVTec category directory (pass --mvtec_root)")
    modes = [m.strip() for m in args.mvtec_patch_features.split(",") if m.strip()]
    if len(modes) != 1 or modes[0] not in ("crop", "conv"):
        raise ConfigError(f"--mvtec_patch_features={args.mvtec_patch_features}: this script "
                          "times one mode (crop or conv); script/benchmark.py --sections=mvtec "
                          "times several")
    if args.json is not None:
        check_output_path(args.json, "file", "--json")
    out = run(args.mvtec_root, args.mvtec_category, args.width, args.mvtec_detector,
              args.mvtec_train_patches, images=args.mvtec_images, stride=args.mvtec_stride,
              patch_features=modes[0], run_dir=args.mvtec_run, fit_draw=args.mvtec_fit_draw)
    if args.json:
        write_text_atomic(args.json, json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
