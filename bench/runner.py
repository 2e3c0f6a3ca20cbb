"""Speed and quality benchmark: how fast we train, and how well we detect at a budget.

    python script/benchmark.py                 # full run (~1.5 h on 2 CPU cores)
    python script/benchmark.py --quick         # 2-minute smoke version
    python script/benchmark.py --sections=throughput,detectors

Sections (each figure is the median of several timed repetitions after warm-up):
  throughput  training images/s (every view counted) through the real model.fit
              path with the real input pipeline; the same step fed from one
              in-memory batch (model-only ceiling); the input pipeline alone;
              the pipeline's share of a step = (ceiling - real) / ceiling, and
              the share it would take alone = ceiling / pipeline rate (robust to
              other load on the cores); forward-only feature extraction images/s.
              Every trainable proxy task by default. --jit_compile times XLA steps,
              --tfdata_threads a private tf.data pool; op thread pools are set by
              TF_NUM_INTRAOP_THREADS / TF_NUM_INTEROP_THREADS in the environment
              (recorded under machine.threads).
  detectors   fit / score seconds and peak memory of every detector.
  scoring     images/s through the exported SavedModel (KDE over 5,000 features)
              and its load time (bench/scoring.py).
  formats     (not in the default list) the same export through TensorFlow, ONNX
              Runtime and OpenVINO, images/s on the same batches
              (bench/formats.py; needs requirements-deploy.txt).
  flops       FLOPs per view of the training step and the achieved GFLOP/s of the
              throughput figures as a fraction of a large fp32 matmul measured in
              the same run (bench/flops.py).
  profile     (not in the default list) per-op times of the model-only step under the
              TF profiler, grouped (conv/matmul, BatchNorm, optimizer, L2 penalty,
              ...), with the top ops (bench/op_profile.py).
  determinism (not in the default list) training images/s with and without
              --deterministic, alternating runs (bench/determinism.py).
  quality     on real CIFAR-10 (validation protocol), every detector's AUC after
              training contrastive_da and rotation for their presets' budgets
              (4,500 and 6,750 steps; --budget_steps sets one budget for both),
              next to a random-init network (3 seeds) and raw pixels.
  mvtec       (not in the default list) dense patch scoring of a whole MVTec test
              set with KDE (bench/mvtec.py), per --mvtec_patch_features mode
              (conv, crop): seconds, patches/s, peak memory, and their ratio.
  inspect     (not in the default list) the inspector (--preset=inspector) on every
              MVTec-layout category under --root, in fresh processes: training and
              feature + fit minutes, image AUROC, pixel AUROC, PRO, false alarms on
              good test parts at the stored threshold, score.py images/s with maps,
              the raw-pixel baseline beside them (bench/inspect.py; writes inspect.md
              and inspect.json).
  patch_export (not in the default list) the same test images through exported
              patch models (GDE, KDE: score, maps, mask) next to the bare
              network's patch features, per mode: images/s, the export /
              network time ratio, peak memory (bench/patch_export.py).
  serve       (not in the default list) the HTTP service (script/serve.py) on loopback
              with 1, 4 and 16 clients, 256 px and 1024 px images with maps: images/s,
              median and p95 latency, score.py's images/s on the same images
              (bench/serve.py; needs requirements-serve.txt).
Writes <out>/benchmark.json and <out>/quality.md, prints tables.
"""

import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from engine.precision import LABELS, PRECISIONS, cpu_flags, read_cpuinfo
from bench import inspect, mvtec, patch_export, serve
from util.atomic import temporary_target, write_text_atomic
from util.cli import ArgumentParser, script_main
from util.errors import ConfigError
from util.ownership import MANIFEST_NAME, Manifest, OutputKind, claim_output, manifest_header
from util.paths import check_output_path, first_bytes_are

SHARED_CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"
# every trainable proxy task (raw_pixels and imagenet_resnet50 are frozen baselines)
MODEL_TYPES = ("contrastive_da", "contrastive", "rotation", "denoising", "cutpaste")
QUALITY_MODELS = ("contrastive_da", "rotation")  # trained in the quality section
THREAD_ENV = {"intra_op": "TF_NUM_INTRAOP_THREADS", "inter_op": "TF_NUM_INTEROP_THREADS"}
SECTIONS = ("throughput", "flops", "profile", "detectors", "scoring", "formats", "determinism",
            "mvtec", "patch_export", "quality", "inspect", "serve")


QUALITY_HEADER = "| class | representation | "
# the files written into --out, each recognised by how it starts (what it may replace)
OUT_FILES = {"benchmark.json": '{\n  "machine": ', "quality.md": QUALITY_HEADER,
             "inspect.md": "| category | seed |", "inspect.json": '{\n  "preset": '}
#: the folders the sections write their runs and data into, inside --out
OUT_FOLDERS = ("quality_runs", "inspect_runs", "inspect_data", "serve_run", "serve_images",
               "score_py")
BENCHMARK_KIND_NAME = "benchmark output folder"


def _previous_benchmark(path):
    """A folder this command wrote: its marker, or (written before the marker) one of its
    files as the command writes it."""
    header = manifest_header(path)
    if header is not None:
        return header.get("kind") == BENCHMARK_KIND_NAME
    return any(first_bytes_are(start)(Path(path) / name) for name, start in OUT_FILES.items())


def _benchmark_owns(root, rel):
    top = rel.split("/", 1)[0]
    return (top in OUT_FOLDERS or rel in OUT_FILES or rel == MANIFEST_NAME
            or temporary_target(rel) in OUT_FILES)


#: --out under util/ownership.py's rule: new, empty, or this command's previous output
#: folder (reused: its runs are resumed or reported, its tables replaced), never a user's
BENCHMARK_KIND = OutputKind(BENCHMARK_KIND_NAME, _previous_benchmark, _benchmark_owns)


def _csv(value, kind, flag, allowed=None):
    try:
        items = [kind(v.strip()) for v in value.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--{flag}={value} must be a comma-separated list of "
                          f"{kind.__name__}s") from None
    if not items:
        raise ConfigError(f"--{flag} is empty")
    if allowed is not None and set(items) - set(allowed):
        raise ConfigError(f"--{flag}={value}: {', '.join(sorted(set(items) - set(allowed)))} "
                         f"unknown; choose from {', '.join(allowed)}")
    if kind in (int, float) and min(items) <= 0:
        raise ConfigError(f"--{flag}={value} must hold positive numbers")
    return items


def validate_args(args):
    """Every argument checked before an output directory is created (ConfigError)."""
    from engine.presets import PRESETS

    _csv(args.sections, str, "sections", SECTIONS)
    _csv(args.widths, float, "widths")
    _csv(args.model_types, str, "model_types", MODEL_TYPES)
    _csv(args.quality_models, str, "quality_models", QUALITY_MODELS)
    _csv(args.classes, str, "classes")
    _csv(args.detector_sizes, int, "detector_sizes")
    _csv(args.detector_dims, int, "detector_dims")
    _csv(args.mvtec_patch_features, str, "mvtec_patch_features", ("crop", "conv"))
    if args.step_precisions is not None:
        _csv(args.step_precisions, str, "step_precisions", PRECISIONS)
    for flag in ("steps", "repeats", "budget_steps", "detector_test"):
        if getattr(args, flag) is not None and getattr(args, flag) <= 0:
            raise ConfigError(f"--{flag}={getattr(args, flag)} must be a positive integer")
    if args.tfdata_threads < 0:
        raise ConfigError(f"--tfdata_threads={args.tfdata_threads} must be 0 (TensorFlow's "
                          "pool) or a positive integer")
    for flag in ("contrastive_preset", "rotation_preset"):
        if getattr(args, flag) not in PRESETS:
            raise ConfigError(f"--{flag}={getattr(args, flag)} is unknown; choose from "
                             f"{', '.join(PRESETS)}")
    claim_output(args.out, BENCHMARK_KIND, "--out")
    if "inspect" in args.sections.split(","):
        inspect.check_args(args)
    if "serve" in args.sections.split(","):
        serve.check_args(args)
    for name, start in OUT_FILES.items():
        check_output_path(Path(args.out) / name, "file", "--out", replaces=first_bytes_are(start),
                          what=f"benchmark output ({name})")


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny 2-minute smoke version")
    p.add_argument("--sections", default="throughput,flops,detectors,quality")
    p.add_argument("--serve_export", default=None,
                   help="serve: the export to serve (default: a short inspector run on "
                        "--serve_root, trained once under --out)")
    p.add_argument("--serve_root", default=str(serve.SHARED_BOTTLE),
                   help="serve: the MVTec-layout category of the images (and of the run)")
    p.add_argument("--serve_train_minutes", type=float, default=3.0,
                   help="serve: training minutes of the inspector run it trains")
    p.add_argument("--serve_images", type=int, default=40,
                   help="serve: test images of each size (256 px and 1024 px)")
    p.add_argument("--out", default="benchmark_out", help="output directory")
    p.add_argument("--cifar_root", default=str(SHARED_CIFAR),
                   help="CIFAR-10 image folder (DIR/train/<class>/*.jpg)")
    p.add_argument("--widths", default="0.25,1")
    p.add_argument("--model_types", default=",".join(MODEL_TYPES))
    p.add_argument("--steps", type=int, default=30, help="timed steps per repetition")
    p.add_argument("--repeats", type=int, default=5, help="timed repetitions (median)")
    p.add_argument("--classes", default="cat,dog,bird,deer")
    p.add_argument("--budget_steps", type=int, default=None,
                   help="training steps of every quality run (default: each preset's own)")
    p.add_argument("--contrastive_preset", default="cpu_small")
    p.add_argument("--rotation_preset", default="cpu_small_rotation")
    p.add_argument("--quality_models", default=",".join(QUALITY_MODELS),
                   help="proxy tasks trained in the quality section (e.g. only the one "
                        "whose preset changed)")
    p.add_argument("--detector_sizes", default="5000,20000", help="N_train values")
    p.add_argument("--detector_dims", default="128,512")
    p.add_argument("--detector_test", type=int, default=10000)
    p.add_argument("--mixed_precision", default="none", choices=list(PRECISIONS))
    p.add_argument("--jit_compile", action="store_true",
                   help="throughput: compile each step with XLA (Keras jit_compile)")
    p.add_argument("--tfdata_threads", type=int, default=0,
                   help="throughput: size of the input pipeline's private tf.data thread pool "
                        "(0: TensorFlow's shared pool). Op thread pools are set before "
                        "TensorFlow starts, by TF_NUM_INTRAOP_THREADS / TF_NUM_INTEROP_THREADS")
    p.add_argument("--step_precisions", default=None,
                   help="precisions the throughput section times each step in, e.g. "
                        "none,bf16 (default: --mixed_precision)")
    mvtec.add_args(p)  # section mvtec: dense patch scoring of one MVTec category
    patch_export.add_args(p)  # section patch_export: the same through a patch export
    inspect.add_args(p)  # section inspect: the inspector on MVTec-layout categories
    args = p.parse_args(argv)
    if args.quick:
        if args.model_types == ",".join(MODEL_TYPES):  # contrastive runs contrastive_da's step
            args.model_types = "contrastive_da,rotation"
        args.widths, args.steps, args.repeats = "0.25", 2, 2
        args.classes, args.budget_steps = args.classes.split(",")[0], 8
        args.detector_sizes, args.detector_dims, args.detector_test = "500", "64", 500
    return args


# ---------------------------------------------------------------- machine


def machine_info():
    import keras
    import tensorflow as tf

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpus = tf.config.list_physical_devices("GPU")
    names = []
    for g in gpus:
        try:
            names.append(tf.config.experimental.get_device_details(g).get("device_name", g.name))
        except Exception:  # details are best effort
            names.append(g.name)
    flags = cpu_flags(read_cpuinfo())
    return {"cpu": cpu, "cores": os.cpu_count(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "gpu_used": bool(gpus), "gpus": names,
            "python": platform.python_version(),
            # what decides bf16 speed: AMX tiles, AVX-512 bf16 dot products, or neither
            "cpu_matrix_flags": sorted(flags & {"amx_bf16", "amx_tile", "avx512_bf16",
                                                "avx512f", "avx2", "fma"}),
            # as set through the environment before TensorFlow started (null: its default,
            # one thread per core)
            "threads": {name: os.environ.get(var) for name, var in THREAD_ENV.items()}}


# ---------------------------------------------------------------- data


def training_images(args, n=5000):
    """Real CIFAR-10 images of one class when available, else random pixels."""
    root = Path(args.cifar_root)
    if (root / "train").is_dir():
        from data.registry import load_one_class_data

        data = load_one_class_data("folder", "cat", root=str(root), input_shape=(32, 32, 3),
                                   is_validation=True)
        return data.train_images[:n], "cifar10 folder (cat)"
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), "random uint8"


# ---------------------------------------------------------------- throughput


class _Timer:
    """Keras callback: wall time of each epoch (one epoch = one timed repetition)."""

    def __init__(self):
        import keras

        class CB(keras.callbacks.Callback):
            def __init__(cb):
                super().__init__()
                cb.times = []

            def on_epoch_begin(cb, epoch, logs=None):
                cb.t0 = time.perf_counter()

            def on_epoch_end(cb, epoch, logs=None):
                cb.times.append(time.perf_counter() - cb.t0)

        self.cb = CB()


def _fit_rate(model, ds, steps, repeats, images_per_step):
    """Median images/s over ``repeats`` epochs of ``steps`` after one warm-up epoch."""
    timer = _Timer()
    model.fit(ds, epochs=repeats + 1, steps_per_epoch=steps, verbose=0, callbacks=[timer.cb])
    rates = [steps * images_per_step / t for t in timer.cb.times[1:]]
    return float(np.median(rates)), rates


def throughput_section(args, log):
    import keras
    import tensorflow as tf

    from data.distaug import apply_distribution_augmentation
    from data.pipeline import eval_dataset, train_dataset
    from model.registry import model_class
    from engine.config import resolve_config
    from engine.distribute import make_strategy
    from engine.experiment import augment_options, build_training, resolve_precision

    images, source = training_images(args)
    log(f"throughput: images from {source}, {len(images)} x 32x32x3")
    strategy = make_strategy("mirrored")  # what a run's default --strategy builds here
    precisions = (args.step_precisions or args.mixed_precision).split(",")
    results = []
    for width, model_type, requested in [(float(w), m, p) for w in args.widths.split(",")
                                         for m in args.model_types.split(",")
                                         for p in precisions]:
        precision = resolve_precision(requested).precision
        cfg = resolve_config(dict(model_type=model_type, net_width=width,
                                  mixed_precision=precision, num_epoch=10**6))
        views = model_class(model_type).views_per_image
        # augmented batches the pipeline makes per step (CutPaste makes its copies in the step)
        input_views = model_class(model_type).input_views or views
        batch = cfg["batch_size"]
        model, _ = build_training(cfg, (32, 32, 3), strategy, steps_per_epoch=1000)
        if args.jit_compile:  # before the first fit builds the step; else Keras's "auto"
            model.jit_compile = True
        train_images = apply_distribution_augmentation(images, cfg["distaug_type"])
        ds, _ = train_dataset(train_images, batch, cfg["aug_list"], num_views=input_views,
                              options=augment_options(cfg))
        if args.tfdata_threads:
            threads = tf.data.Options()
            threads.threading.private_threadpool_size = args.tfdata_threads
            ds = ds.with_options(threads)
        # about the same seconds per repetition at every width (width 1 is ~10x slower)
        steps = args.steps if width <= 0.5 else max(3, args.steps // 6)
        real, real_all = _fit_rate(model, ds, steps, args.repeats, batch * views)

        fixed = next(iter(ds))  # one augmented batch kept in memory: no pipeline at all
        mem = tf.data.Dataset.from_tensors(fixed).repeat()
        ceiling, ceiling_all = _fit_rate(model, mem, steps, args.repeats, batch * views)

        pipe_rates = []
        it = iter(ds)
        pipe_steps = 5 * args.steps  # long enough that the prefetch buffer does not count
        for _ in range(2):
            next(it)
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for _ in range(pipe_steps):
                next(it)
            pipe_rates.append(pipe_steps * batch * views / (time.perf_counter() - t0))
        pipeline = float(np.median(pipe_rates))

        n_eval = min(len(images), 2000 if not args.quick else 256)
        ev = eval_dataset(images[:n_eval], 256)
        model.predict(ev.take(1), verbose=0)
        ex_rates = []
        for _ in range(max(2, args.repeats // 2)):
            t0 = time.perf_counter()
            model.predict(ev, verbose=0)
            ex_rates.append(n_eval / (time.perf_counter() - t0))
        row = dict(model_type=model_type, net_width=width,
                   precision=LABELS[precision], jit_compile=bool(model.jit_compile),
                   batch_size=batch, steps=steps,
                   views_per_image=views, train_images_per_sec=real,
                   ceiling_images_per_sec=ceiling, pipeline_images_per_sec=pipeline,
                   # not clamped: a small negative share is timing noise
                   pipeline_share=(ceiling - real) / ceiling,
                   # the share of a step the augmentation alone would take without overlap:
                   # robust to other load on the cores, unlike pipeline_share
                   pipeline_step_fraction=ceiling / pipeline,
                   extract_images_per_sec=float(np.median(ex_rates)),
                   repetitions=dict(train=real_all, ceiling=ceiling_all, pipeline=pipe_rates))
        results.append(row)
        log(f"  {model_type:15s} w={width:<5g} {row['precision']} batch {batch:3d}x{views}: "
            f"real {real:7.0f} img/s, ceiling {ceiling:7.0f}, pipeline alone {pipeline:7.0f}, share "
            f"{100 * row['pipeline_share']:5.1f}% (alone {100 * row['pipeline_step_fraction']:4.1f}% "
            f"of a step), extract {row['extract_images_per_sec']:6.0f}")
        del model
        keras.backend.clear_session()
    keras.mixed_precision.set_global_policy("float32")  # later sections build fp32 models
    return results


# ---------------------------------------------------------------- detectors


def detectors_section(args, log):
    from bench.detectors import benchmark_detector

    results = []
    for n_train in [int(n) for n in args.detector_sizes.split(",")]:
        for dim in [int(d) for d in args.detector_dims.split(",")]:
            for name in ("kde", "gde", "auc", "kocsvm", "locsvm"):
                if name in ("kocsvm", "locsvm") and n_train > 5000 and not args.quick:
                    # libsvm fits are O(n^2); 20k takes ~50 s each, measured once below
                    if dim != 512:
                        continue
                r = benchmark_detector(name, n_train, args.detector_test, dim)
                row = dict(detector=name, n_train=n_train, n_test=args.detector_test, dim=dim,
                           fit_s=r["fit_s"], score_s=r["score_s"], peak_mb=r["peak_mb"])
                results.append(row)
                log(f"  {name:7s} {n_train:6d} x {args.detector_test:6d} x {dim:4d}: fit "
                    f"{r['fit_s']:6.2f} s, score {r['score_s']:6.2f} s, peak +{r['peak_mb']:.0f} MB")
    return results


# ---------------------------------------------------------------- quality


def _quality_data(args, category):
    from data.registry import load_one_class_data

    root = Path(args.cifar_root)
    if (root / "train").is_dir() and not args.quick:
        return "folder", str(root), category, load_one_class_data(
            "folder", category, root=str(root), input_shape=(32, 32, 3), is_validation=True)
    # --quick, or no CIFAR here (e.g. a CI machine without shared data): the bundled digits
    # keep the section alive in seconds
    return "digitsood", None, "0", load_one_class_data("digitsood", "0", is_validation=True)


def quality_config(args, model_type, preset, dataset, root, category, out, seed=0, epochs=None):
    """The full configuration of one quality run: the preset's, with its own step budget
    unless --budget_steps (or --quick) sets one; epochs=0 is the random-init baseline."""
    from engine.config import resolve_config

    cfg = dict(preset=preset, model_type=model_type, dataset=dataset, root=root,
               category=category, is_validation=True, seed=seed, force_init=True,
               model_dir=str(out), mixed_precision=args.mixed_precision,
               export=False)  # the quality table needs the AUCs only
    explicit = set(cfg)
    if epochs is not None:
        cfg["num_epoch"] = epochs
        explicit.add("num_epoch")
    if args.quick:
        cfg.update(net_width=0.125, head_dims="64,32", num_batch=max(1, args.budget_steps // 2),
                   num_epoch=2 if epochs is None else epochs, eval_epoch=1, ckpt_epoch=1,
                   detectors="kde,gde,auc")
        explicit |= {"net_width", "head_dims", "num_batch", "num_epoch", "eval_epoch",
                     "ckpt_epoch", "detectors"}
    full = resolve_config(cfg, explicit)
    if epochs is None and not args.quick and args.budget_steps:
        # an explicit step budget is exact: epochs x steps/epoch
        full["num_epoch"] = max(1, args.budget_steps // full["num_batch"])
    return full


def _train(args, model_type, preset, dataset, root, category, out, seed=0, epochs=None):
    from engine.experiment import run_experiment

    full = quality_config(args, model_type, preset, dataset, root, category, out, seed, epochs)
    code = run_experiment(full, log=lambda *_: None)
    if code:
        raise RuntimeError(f"training {model_type} on {category} failed with exit code {code}")
    summary = json.loads((Path(out) / "stats" / "summary.json").read_text())
    history = [json.loads(l) for l in (Path(out) / "stats" / "eval_history.jsonl")
               .read_text().splitlines() if l]
    meta = summary.pop("meta")
    return summary, history, meta, full


def quality_section(args, log):
    from detect.detectors import evaluate_detectors

    out_root = Path(args.out) / "quality_runs"
    rows = []
    for category in args.classes.split(","):
        dataset, root, category, data = _quality_data(args, category)
        log(f"quality: {dataset} {category}: {data.describe()}")
        raw = evaluate_detectors(data.train_images.reshape(len(data.train_images), -1)
                                 .astype(np.float32) / 255.0,
                                 data.test_images.reshape(len(data.test_images), -1)
                                 .astype(np.float32) / 255.0,
                                 data.test_labels, names=["kde", "gde", "auc"])
        row = dict(category=category, dataset=dataset, raw_pixels={k: float(v) for k, v in raw.items()})
        row["random_init"] = []
        for seed in (0, 1, 2):
            summary, _, _, _ = _train(args, "contrastive_da", args.contrastive_preset, dataset,
                                      root, category, out_root / f"{category}_random_s{seed}",
                                      seed=seed, epochs=0)
            row["random_init"].append(summary)
        presets = {"contrastive_da": args.contrastive_preset, "rotation": args.rotation_preset}
        for model_type in args.quality_models.split(","):
            preset = presets[model_type]
            t0 = time.time()
            summary, history, meta, cfg = _train(args, model_type, preset, dataset, root, category,
                                                 out_root / f"{category}_{model_type}")
            best = max(h["pool.kde"] for h in history)
            row[model_type] = dict(final=summary, best_pool_kde=best,
                                   history=[{k: h[k] for k in ("epoch", "pool.kde")} for h in history],
                                   steps=cfg["num_epoch"] * cfg["num_batch"],
                                   train_seconds=meta["train_seconds"],
                                   images_per_sec=meta["train_images_per_sec"],
                                   wall_seconds=round(time.time() - t0, 1))
            log(f"  {model_type:15s} pool.kde {summary['pool.kde']:.1f} (best during training "
                f"{best:.1f}), {cfg['num_epoch'] * cfg['num_batch']} steps, "
                f"{meta['train_seconds']:.0f} s")
        best_random = max(r["pool.kde"] for r in row["random_init"])
        row["baseline_pool_kde"] = max(best_random, row["raw_pixels"]["kde"])
        randoms = ", ".join(f"{r['pool.kde']:.1f}" for r in row["random_init"])
        log(f"  baselines: raw pixels kde {row['raw_pixels']['kde']:.1f}, random init kde {randoms}")
        rows.append(row)
    return rows


def quality_markdown(rows):
    keys = ["pool.kde", "pool.gde", "pool.kocsvm", "pool.auc", "embed.kde"]
    lines = [QUALITY_HEADER + " | ".join(keys) + " |",
             "|---|---|" + "---|" * len(keys)]
    for r in rows:
        lines.append(f"| {r['category']} | raw pixels | {r['raw_pixels']['kde']:.1f} | "
                     f"{r['raw_pixels']['gde']:.1f} | | {r['raw_pixels']['auc']:.1f} | |")
        for i, s in enumerate(r["random_init"]):
            lines.append(f"| {r['category']} | random init (seed {i}) | " +
                         " | ".join(f"{s[k]:.1f}" if k in s else "" for k in keys) + " |")
        for mt in QUALITY_MODELS:
            if mt not in r:
                continue
            s = r[mt]["final"]
            lines.append(f"| {r['category']} | {mt} ({r[mt]['steps']} steps; best pool.kde "
                         f"{r[mt]['best_pool_kde']:.1f}) | " +
                         " | ".join(f"{s[k]:.1f}" if k in s else "" for k in keys) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------- main


@script_main
def main(argv=None):
    args = parse_args(argv)
    validate_args(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if manifest_header(out) is None:
        Manifest(out, BENCHMARK_KIND).start()  # the folder's marker, before its first file
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]

    def log(msg):
        print(msg, flush=True)

    result = {"machine": machine_info(), "args": vars(args)}
    m = result["machine"]
    log(f"machine: {m['cpu']}, {m['cores']} cores, TF {m['tensorflow']}, Keras {m['keras']}, "
        f"GPU used: {m['gpu_used']} {' '.join(m['gpus'])}")
    t0 = time.time()
    if "throughput" in sections:
        result["throughput"] = throughput_section(args, log)
    if "flops" in sections:
        from bench.flops import flops_section

        result["flops"] = flops_section(args, log, result.get("throughput"))
    if "profile" in sections:  # bench/op_profile.py
        from bench.op_profile import profile_section
        result["profile"] = profile_section(args, log, training_images(args, n=512)[0])
    if "detectors" in sections:
        log("detectors:")
        result["detectors"] = detectors_section(args, log)
    if "scoring" in sections:  # bench/scoring.py
        from bench.scoring import scoring_section
        result["scoring"] = scoring_section(args, log)
    if "formats" in sections:  # bench/formats.py
        from bench.formats import formats_section
        result["formats"] = formats_section(args, log)
    if "determinism" in sections:  # bench/determinism.py
        from bench.determinism import determinism_section
        result["determinism"] = determinism_section(args, log)
    if "quality" in sections:
        result["quality"] = quality_section(args, log)
        table = quality_markdown(result["quality"])
        write_text_atomic(out / "quality.md", table + "\n")
        log(table)
    if "mvtec" in sections:
        result["mvtec"] = mvtec.mvtec_section(args, log)
    if "patch_export" in sections:
        result["patch_export"] = patch_export.patch_export_section(args, log)
    if "inspect" in sections:
        result["inspect"] = inspect.inspect_section(args, out, log)
    if "serve" in sections:  # bench/serve.py
        result["serve"] = serve.serve_section(args, out, log)
    result["wall_seconds"] = round(time.time() - t0, 1)
    write_text_atomic(out / "benchmark.json", json.dumps(result, indent=2))
    log(f"wrote {out / 'benchmark.json'} ({result['wall_seconds']} s)")
    failed = (result.get("inspect") or {}).get("failed")
    if failed:  # the figures of the others are written; the exit code says some are missing
        print(f"error: inspect: these runs failed (their log lines above): {', '.join(failed)}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
