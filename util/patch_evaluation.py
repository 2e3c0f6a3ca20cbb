"""The MVTec protocol inside a run: shapes, patch training input, and evaluation.

util/experiment.py calls a few functions of this module when ``--dataset`` is
an MVTec-layout dataset (mvtec, mvtec_folder):

* ``mvtec_shapes``: in patch mode the network sees ``--patch_size`` patches
  while the images are loaded at ``--mvtec_image_size``;
* ``mvtec_steps`` / ``mvtec_train_dataset``: random training patches
  (data/patches.py) and the steps of one epoch;
* ``mvtec_evaluate``: in patch mode, detectors fit on features of clean
  patches of the good training images (``--max_detector_train`` patches on the
  test grid), every test patch scored -> patch maps -> image score = max,
  pixel maps by Gaussian upsampling -> image AUROC / F1-max, pixel AUROC,
  PRO, pixel F1-max, heat maps. In image mode, the usual image-level
  evaluation plus image F1-max.

Result keys: ``<features>.<detector>`` is the image AUROC (as for every
dataset), ``<features>.<detector>.<metric>`` the others. The first feature
set and first detector give anomalib's names as aliases: ``image_AUROC``,
``image_F1Max``, ``pixel_AUROC``, ``pixel_PRO``, ``pixel_F1Max``.
"""

import time

import numpy as np

from util.errors import ConfigError

MVTEC_DATASETS = ("mvtec", "mvtec_folder")
FEATURE_SETS = ("pool", "embed")
ALIASES = {"image_AUROC": "", "image_F1Max": ".image_f1max", "pixel_AUROC": ".pixel_auroc",
           "pixel_PRO": ".pro", "pixel_F1Max": ".pixel_f1max"}
SCORE_CHUNK = 32768  # test patches per detector.score call: bounds the feature copies


def is_mvtec(cfg):
    return str(cfg["dataset"]).strip().lower() in MVTEC_DATASETS


def patch_mode(cfg):
    return is_mvtec(cfg) and cfg["mvtec_mode"] == "patch"


def feature_sets(cfg):
    names = [f.strip() for f in str(cfg["mvtec_features"]).split(",") if f.strip()]
    bad = [f for f in names if f not in FEATURE_SETS]
    if bad or not names:
        raise ConfigError(f"--mvtec_features={cfg['mvtec_features']} must list some of "
                          f"{', '.join(FEATURE_SETS)}")
    return names


def mvtec_shapes(cfg, shape):
    """(network input shape, image shape to load); checks the patch flags (no data needed)."""
    if not patch_mode(cfg):
        return shape, shape
    from data.patches import check_patch_flags
    from model.spec import check_input_shape
    from util.localization import grid_size

    size, p = int(cfg["mvtec_image_size"]), int(cfg["patch_size"])
    if size <= 0:
        raise ConfigError(f"--mvtec_image_size={size} must be positive")
    check_patch_flags(size, p, int(cfg["patches_per_image"]))
    grid_size(size, p, int(cfg["patch_stride"]))
    feature_sets(cfg)
    if cfg.get("patch_features", "crop") == "conv":
        check_conv_patch_features(cfg["model_type"], p)
    return check_input_shape((p, p, 3)), (size, size, 3)


def check_conv_patch_features(model_type, patch_size):
    """--patch_features=conv needs a ResNet trunk whose total stride divides the patch."""
    from model.registry import model_spec
    from model.spec import SMALL_STEM_MAX_SIZE

    if model_spec(model_type).get("build"):
        raise ConfigError(f"--patch_features=conv needs a ResNet proxy-task model; "
                          f"--model_type={model_type} has no conv trunk (use crop)")
    net_stride = 8 if patch_size <= SMALL_STEM_MAX_SIZE else 32
    if patch_size % net_stride:
        raise ConfigError(f"--patch_features=conv: --patch_size={patch_size} is not a multiple "
                          f"of the network's stride {net_stride} (use crop)")


def mvtec_steps(cfg, num_images, default):
    """Steps of one epoch: one pass over the images at --patches_per_image in patch mode."""
    if not patch_mode(cfg) or cfg["num_batch"]:
        return default
    from data.patches import steps_per_epoch

    return steps_per_epoch(num_images, cfg["batch_size"], cfg["patches_per_image"])


def mvtec_train_dataset(cfg, train_images, views):
    """Infinite dataset of augmented random training patches (patch mode)."""
    from data.patches import patch_train_dataset

    return patch_train_dataset(train_images, cfg["batch_size"], cfg["aug_list"],
                               num_views=views, patch_size=cfg["patch_size"],
                               patches_per_image=cfg["patches_per_image"], seed=cfg["seed"],
                               clip_pixels=cfg["clip_pixels"])


def add_aliases(results, primary):
    for alias, suffix in ALIASES.items():
        if primary + suffix in results:
            results[alias] = results[primary + suffix]
    return results


def _score_chunked(detector, feats, desc="scoring"):
    """Scores in SCORE_CHUNK slices (bounded memory), with a progress bar: a KDE over
    high-dimensional patches (e.g. raw pixels) takes minutes for a dense test grid."""
    from tqdm import tqdm

    starts = range(0, len(feats), SCORE_CHUNK)
    return np.concatenate([detector.score(feats[s:s + SCORE_CHUNK])
                           for s in tqdm(starts, desc=desc, unit="chunk", mininterval=2,
                                         disable=len(starts) < 2)])


def patch_scores(model, data, cfg, detectors, log=print):
    """{'<fs>.<det>': patch maps float64 [N, n, n]} from detectors fit on clean training patches."""
    from util.detectors import make_detector
    from util.localization import (ConvGridFeatures, dense_patch_features, features_of_patches,
                                   patch_feature_fn, sample_grid_patches)

    p, stride = int(cfg["patch_size"]), int(cfg["patch_stride"])
    sets = feature_sets(cfg)
    batch = int(cfg["eval_batch_size"])
    fit_images = getattr(data, "detector_images", None)
    fit_images = data.train_images if fit_images is None else fit_images
    t0 = time.perf_counter()
    if cfg.get("patch_features", "crop") == "conv":
        grid = ConvGridFeatures(model, data.test_images.shape[1], p, stride, sets)
        train_feats = grid.sampled(fit_images, cfg["max_detector_train"], seed=cfg["seed"])
        test_feats = grid(data.test_images)
    else:
        train_patches, _ = sample_grid_patches(fit_images, cfg["max_detector_train"], p, stride,
                                               seed=cfg["seed"])
        train_feats = features_of_patches(patch_feature_fn(model, tuple(sets)), train_patches,
                                          batch)
        test_feats = dense_patch_features(model, data.test_images, p, stride, sets, batch)
    log(f"patch features ({cfg.get('patch_features', 'crop')}): {len(fit_images)} training and "
        f"{len(data.test_images)} test images in {time.perf_counter() - t0:.1f}s")
    maps = {}
    for fs in sets:
        grid = test_feats[fs].shape[:3]
        flat = test_feats[fs].reshape(-1, test_feats[fs].shape[-1])
        for name in detectors:
            t0 = time.perf_counter()
            det = make_detector(name).fit(train_feats[fs])
            maps[f"{fs}.{name}"] = _score_chunked(det, flat, f"{fs}.{name} scoring").reshape(grid)
            log(f"{fs}.{name}: fit on {len(train_feats[fs])} training patches, scored "
                f"{len(flat)} test patches in {time.perf_counter() - t0:.1f}s")
    return maps


def mvtec_evaluate(model, data, cfg, detectors, run_dir=None, log=print):
    """Metrics of an MVTec-layout run (see module docstring); writes heat maps in patch mode."""
    if not patch_mode(cfg):
        return _image_mode(model, data, cfg, detectors)
    from util.localization import image_scores, upsample_maps
    from util.pixel_metrics import f1_max, pixel_metrics
    from util.metrics import roc_auc

    maps = patch_scores(model, data, cfg, detectors, log)
    results, primary = {}, next(iter(maps))
    for key, m in maps.items():
        scores = image_scores(m)
        results[key] = roc_auc(data.test_labels, scores)
        results[f"{key}.image_f1max"] = f1_max(data.test_labels, scores)
        if data.test_masks is not None or (key == primary and cfg["mvtec_heatmaps"]):
            pixel = upsample_maps(m, int(cfg["patch_size"]), int(cfg["patch_stride"]))
        if data.test_masks is not None:
            results.update({f"{key}.{k}": v
                            for k, v in pixel_metrics(data.test_masks, pixel).items()})
        if key == primary and cfg["mvtec_heatmaps"] and run_dir is not None:
            from pathlib import Path

            from util.heatmaps import write_heatmaps

            write_heatmaps(str(Path(run_dir) / "heatmaps"), data.test_images, pixel, m, scores,
                           data.test_labels, data.test_defects, data.test_names,
                           data.test_masks, title=f"{cfg['model_type']} {key}")
    return add_aliases(results, primary)


def _image_mode(model, data, cfg, detectors):
    """Image-level detectors (as for CIFAR) plus image F1-max and anomalib aliases."""
    from util.detectors import score_detectors
    from util.detectors import subsample_rows
    from util.evaluation import extract_features
    from util.metrics import roc_auc
    from util.pixel_metrics import f1_max

    fit_images = getattr(data, "detector_images", None)
    fit_images = data.train_images if fit_images is None else fit_images
    batch = int(cfg["eval_batch_size"])
    train = extract_features(model, subsample_rows(fit_images, cfg["max_detector_train"],
                                                    cfg["seed"]), batch)
    test = extract_features(model, data.test_images, batch)
    results = {}
    for fs in ("pool", "embed"):
        for name, s in score_detectors(train[fs], test[fs], names=detectors,
                                       max_train=None).items():
            results[f"{fs}.{name}"] = roc_auc(data.test_labels, s)
            results[f"{fs}.{name}.image_f1max"] = f1_max(data.test_labels, s)
    for key in sorted(set(test) - {"pool", "embed"}):
        results[f"{key}.auc"] = roc_auc(data.test_labels, test[key])
    return add_aliases(results, f"pool.{detectors[0]}")
