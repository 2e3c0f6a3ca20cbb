"""Section ``inspect``: the inspector on every MVTec-layout category under a folder.

    python script/benchmark.py --sections=inspect --root=DIR [--categories=a,b]
        [--inspect_seeds=0,1,2] [--inspect_flags="--train_minutes=5"]

For each category (a folder with ``train/good`` and ``test/``) and seed it runs,
each in a fresh process as a user would:

1. ``train_and_eval_loop.py --dataset=mvtec_folder --root=CATEGORY
   --preset=inspector`` (plus ``--inspect_flags``), and reads the run's
   ``summary.json``: training minutes, feature + fit minutes (the final
   evaluation), image AUROC, pixel AUROC, PRO, and the false alarms on good
   test parts at the stored threshold (``image_FPR`` of the exported key);
2. ``script/score.py`` on every test image through the run's export with
   ``--maps_dir``: images/s (scoring only, the export's load excluded);
   With ``--inspect_lighting=0.8`` the export also scores a copy of the test
   images 0.8 times as bright (lighting drift between the training parts and new
   ones, under ``<out>/inspect_data/``): image AUROC and good-part false alarms at
   the stored threshold, next to those of the original images;
3. the raw-pixel baseline on the same grid (``--model_type=raw_pixels
   --mvtec_mode=map``: each cell's own pixels, the same detector), once per
   category.

Writes ``<out>/inspect.md`` (a row per category and seed, the mean over
categories per seed, and the spread over seeds of each category) and
``<out>/inspect.json``; the runs stay under ``<out>/inspect_runs/``.

The command line of every run the section will start is checked as the entry point
checks it (engine/config.py's ``resolve_and_check``, without TensorFlow) before the
first one starts: a bad ``--inspect_flags`` or ``--inspect_preset`` is one error
line and nothing written, not a failed run after others have trained.
"""

import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from engine.config import resolve_and_check
from engine.flags import parse_run_args
from util.atomic import write_text_atomic
from util.errors import ConfigError
from util.ownership import check_apart

ROOT = Path(__file__).resolve().parents[1]
ENTRY = ROOT / "train_and_eval_loop.py"
SCORE = ROOT / "script" / "score.py"
#: the issue's goal for the inspector on 2 CPU cores (docs/mvtec.md)
GOAL = {"train_min": 15.0, "fit_min": 3.0, "image_auroc": 95.0, "pixel_auroc": 95.0,
        "pro": 85.0, "seed_spread": 2.0, "fpr_ratio": 2.0, "images_per_s": 10.0}
#: the raw-pixel baseline: each cell's own pixels, scored by the inspector's detector
RAW_PIXEL_FLAGS = ("--model_type=raw_pixels", "--mvtec_mode=map", "--detectors=membank",
                   "--calibration_fraction=0.2", "--nomvtec_heatmaps")
METRICS = ("image_auroc", "pixel_auroc", "pro")
#: the flags the section gives every run itself (the category, its preset, seed and folder)
SECTION_FLAGS = ("dataset", "root", "preset", "seed", "model_dir")


def add_args(p):
    p.add_argument("--root", default=None,
                   help="inspect: a folder of MVTec-layout categories (or one category)")
    p.add_argument("--categories", default=None,
                   help="inspect: comma list of the categories under --root (default: all)")
    p.add_argument("--inspect_seeds", default="0", help="inspect: seeds of each category")
    p.add_argument("--inspect_preset", default="inspector",
                   help="inspect: the preset every run starts from")
    p.add_argument("--inspect_flags", default="",
                   help="inspect: more flags for every inspector run, space separated "
                        "(e.g. '--train_minutes=5 --net_width=0.25')")
    p.add_argument("--inspect_lighting", default=None,
                   help="inspect: also run each category on a copy whose test images are "
                        "scaled by these factors, e.g. 0.8 (darker) or 0.8,1.2: lighting "
                        "drift between the training parts and new ones")
    p.add_argument("--inspect_raw_pixels", default=True, action="store_true")
    p.add_argument("--noinspect_raw_pixels", dest="inspect_raw_pixels", action="store_false",
                   help="inspect: skip the raw-pixel baseline")


def is_category(path):
    return (Path(path) / "train" / "good").is_dir()


def find_categories(root, names=None):
    """[(name, folder)]: ``root`` itself when it is a category, else its sub-folders that
    are (``names`` picks some, in that order); ConfigError when none is found."""
    if not Path(root).is_dir():
        raise ConfigError(f"--root={root} is not a folder")
    root = Path(os.path.abspath(root))  # the runs start in the project's folder
    if is_category(root):
        found = {root.name: root}
    else:
        found = {p.name: p for p in sorted(root.iterdir()) if p.is_dir() and is_category(p)}
    if names:
        missing = [n for n in names if n not in found]
        if missing:
            raise ConfigError(f"--categories: {', '.join(missing)} not found under {root} "
                              f"(found: {', '.join(found) or 'none'})")
        return [(n, found[n]) for n in names]
    if not found:
        raise ConfigError(f"--root={root} holds no MVTec-layout category (CATEGORY/train/good)")
    return list(found.items())


def check_args(args):
    """The section's arguments, checked before anything runs."""
    if args.root is None:
        raise ConfigError("--sections=inspect needs --root=DIR (a folder of MVTec-layout "
                          "categories)")
    names = [c.strip() for c in (args.categories or "").split(",") if c.strip()]
    find_categories(args.root, names or None)
    check_apart([("--out", args.out, True)], [("--root", args.root)])
    try:
        seeds = [int(s) for s in args.inspect_seeds.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--inspect_seeds={args.inspect_seeds} must be a comma list of "
                          "integers") from None
    if not seeds or min(seeds) < 0:
        raise ConfigError(f"--inspect_seeds={args.inspect_seeds} must list seeds >= 0")
    lighting_factors(args.inspect_lighting)
    check_run_flags(args, runs_folder(args.out))


def runs_folder(out):
    """Where the section's runs go: ``<out>/inspect_runs``, absolute since the runs start
    in the project's folder."""
    return Path(os.path.abspath(out)) / "inspect_runs"


def inspector_args(name, folder, seed, args, out_dir):
    """The command line of the inspector run of a category and seed (after the script)."""
    return ["--dataset=mvtec_folder", f"--root={folder}", f"--preset={args.inspect_preset}",
            f"--seed={seed}", f"--model_dir={Path(out_dir) / name / f's{seed}'}",
            *args.inspect_flags.split()]


def raw_pixel_args(name, folder, out_dir):
    """The command line of the raw-pixel baseline of a category (after the script)."""
    return ["--dataset=mvtec_folder", f"--root={folder}", *RAW_PIXEL_FLAGS,
            f"--model_dir={Path(out_dir) / name / 'raw_pixels'}"]


def check_run_flags(args, out_dir):
    """ConfigError naming the run and the section's flag when a run the section will start
    would be refused for its flags (checked as the entry point checks them)."""
    _, given = parse_run_args_of("--inspect_flags", args.inspect_flags.split())
    taken = [name for name in SECTION_FLAGS if name in given]
    if taken:
        raise ConfigError(f"--inspect_flags={args.inspect_flags} sets --{taken[0]}, which the "
                          "section sets for every run itself (--root, --categories, "
                          "--inspect_preset, --inspect_seeds, --out); drop it there")
    names = [c.strip() for c in (args.categories or "").split(",") if c.strip()]
    runs = []
    for name, folder in find_categories(args.root, names or None):
        runs += [(f"the inspector run of {name} (seed {seed})", "--inspect_flags or "
                  "--inspect_preset", inspector_args(name, folder, seed, args, out_dir))
                 for seed in (int(s) for s in args.inspect_seeds.split(",") if s.strip())]
        if args.inspect_raw_pixels:
            runs.append((f"the raw-pixel baseline of {name}", "--root",
                         raw_pixel_args(name, folder, out_dir)))
    for what, flags, argv in runs:
        try:
            resolve_and_check(*parse_run_args_of(flags, argv))
        except ConfigError as err:
            raise ConfigError(f"{flags}: {what} would be refused: {err}") from None


def parse_run_args_of(flag, argv):
    """parse_run_args with its ConfigError naming ``flag``, the section's flag it came from."""
    try:
        return parse_run_args(argv)
    except ConfigError as err:
        raise ConfigError(f"{flag}: {err}") from None


def lighting_factors(spec):
    """--inspect_lighting as a list of positive factors (none when unset)."""
    if not spec:
        return []
    try:
        factors = [float(f) for f in spec.split(",") if f.strip()]
    except ValueError:
        raise ConfigError(f"--inspect_lighting={spec} must be a comma list of numbers") from None
    if not factors or any(not 0 < f < 10 for f in factors):
        raise ConfigError(f"--inspect_lighting={spec} must list factors in (0, 10), e.g. 0.8")
    return factors


def relit_test_images(folder, factor, out_dir):
    """A copy of the category's test/ tree whose images are the originals times
    ``factor`` (clipped, 8-bit PNG, one folder per class as in test/); returns it."""
    from PIL import Image

    import numpy as np

    copy = Path(out_dir) / f"{Path(folder).name}_test_x{factor:g}"
    if copy.is_dir():
        return copy
    staging = copy.with_name(copy.name + ".tmp")
    for src in sorted((Path(folder) / "test").rglob("*")):
        if src.is_file() and not src.name.startswith("."):
            dst = (staging / src.relative_to(Path(folder) / "test")).with_suffix(".png")
            dst.parent.mkdir(parents=True, exist_ok=True)
            img = np.asarray(Image.open(src))
            Image.fromarray(np.clip(np.round(img * factor), 0, 255).astype(np.uint8)).save(dst)
    staging.rename(copy)
    return copy


def scored_test_tree(export_dir, test_dir, out_csv, log):
    """(image AUROC, good-part false alarm rate at the export's threshold) of the images of
    a test/<class>/ tree (class 'good' = 0, others 1) scored by script/score.py."""
    import csv

    from detect.metrics import roc_auc

    code, out, _ = run([sys.executable, SCORE, f"--export_dir={export_dir}", str(test_dir),
                        f"--out={out_csv}"], log)
    if code:
        log(f"  score.py failed ({code}): {out.strip().splitlines()[-1]}")
        return None, None
    rows = list(csv.DictReader(Path(out_csv).open()))
    labels = [int(Path(r["path"]).parent.name != "good") for r in rows]
    good = [int(r["decision"]) for r, y in zip(rows, labels) if y == 0]
    auroc = roc_auc(labels, [float(r["raw_score"]) for r in rows]) \
        if 0 < sum(labels) < len(labels) else None
    return auroc, (sum(good) / len(good) if good else None)


def run(cmd, log):
    """(exit code, stdout + stderr, seconds) of a command run from the project root."""
    log("  $ " + " ".join(str(c) for c in cmd))
    t0 = time.perf_counter()
    done = subprocess.run([str(c) for c in cmd], cwd=ROOT, capture_output=True, text=True)
    return done.returncode, done.stdout + done.stderr, time.perf_counter() - t0


def read_summary(run_dir):
    return json.loads((Path(run_dir) / "stats" / "summary.json").read_text())


def run_figures(summary):
    """The inspector's figures from a run's summary.json."""
    meta = summary["meta"]
    key = (summary["export"]["score_key"] if summary.get("export")
           else next(k for k in summary if k.endswith(".pro")).rsplit(".", 1)[0])
    at_threshold = (summary.get("metrics") or {}).get(key, {})
    return {"score_key": key,
            "train_min": round(meta["train_seconds"] / 60.0, 2),
            "fit_min": round(meta.get("evaluate_seconds", float("nan")) / 60.0, 2),
            "epochs": meta.get("epochs"), "steps": meta.get("optimizer_steps"),
            "image_auroc": summary.get(key), "pixel_auroc": summary.get(f"{key}.pixel_auroc"),
            "pro": summary.get(f"{key}.pro"),
            "good_fpr": at_threshold.get("image_FPR"),
            "target_fpr": (summary.get("calibration") or {}).get(key, {}).get("target_fpr")}


def score_speed(export_dir, category, maps_dir, log):
    """images/s of script/score.py with maps over the category's test images."""
    code, out, _ = run([sys.executable, SCORE, f"--export_dir={export_dir}",
                        str(Path(category) / "test"), f"--maps_dir={maps_dir}",
                        f"--out={Path(maps_dir).parent / 'scores.csv'}"], log)
    found = re.search(r"([0-9.]+) images/s", out)
    if code or not found:
        log(f"  score.py failed ({code}): {out.strip().splitlines()[-1] if out.strip() else ''}")
        return None
    return float(found.group(1))


def inspect_category(name, folder, seed, args, out_dir, log):
    """One inspector run of a category and its scoring speed."""
    run_dir = out_dir / name / f"s{seed}"
    code, out, wall = run([sys.executable, ENTRY, *inspector_args(name, folder, seed, args,
                                                                  out_dir)], log)
    if code:
        log(f"  the inspector run of {name} (seed {seed}) failed ({code}): "
            + " / ".join(out.strip().splitlines()[-3:]))
        return None
    row = {"category": name, "seed": seed, "wall_min": round(wall / 60.0, 2),
           **run_figures(read_summary(run_dir))}
    row["images_per_s"] = score_speed(run_dir / "export", folder, out_dir / name /
                                      f"s{seed}_score" / "maps", log)
    log(f"  {name} s{seed}: " + ", ".join(f"{k} {row[k]}" for k in (
        "train_min", "fit_min", "image_auroc", "pixel_auroc", "pro", "good_fpr",
        "images_per_s")))
    return row


def raw_pixel_baseline(name, folder, out_dir, log):
    run_dir = out_dir / name / "raw_pixels"
    code, out, _ = run([sys.executable, ENTRY, *raw_pixel_args(name, folder, out_dir)], log)
    if code:
        log(f"  raw pixels of {name} failed: {out.strip().splitlines()[-1]}")
        return None
    s = read_summary(run_dir)
    key = "map.membank"
    return {"image_auroc": s.get(key), "pixel_auroc": s.get(f"{key}.pixel_auroc"),
            "pro": s.get(f"{key}.pro")}


def mean(values):
    values = [v for v in values if v is not None]
    return round(statistics.fmean(values), 2) if values else None


def summarise(rows, raw):
    """Mean rows over categories (per seed) and the spread over seeds per category."""
    seeds = sorted({r["seed"] for r in rows})
    keys = ("train_min", "fit_min", *METRICS, "good_fpr", "images_per_s")
    means = [{"seed": s, **{k: mean([r[k] for r in rows if r["seed"] == s]) for k in keys}}
             for s in seeds]
    spread = {}
    for cat in dict.fromkeys(r["category"] for r in rows):
        mine = [r for r in rows if r["category"] == cat]
        spread[cat] = {k: round(max(r[k] for r in mine) - min(r[k] for r in mine), 2)
                       for k in METRICS if all(r[k] is not None for r in mine)}
    raw_mean = {k: mean([v[k] for v in raw.values() if v]) for k in METRICS} if raw else None
    return {"means": means, "seed_spread": spread, "raw_pixels_mean": raw_mean}


def fmt(v, digits=1):
    return "" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))


def markdown(result):
    """The section's table: a row per run, the means, the spread over seeds, the goal."""
    raw = result["raw_pixels"]
    head = ("| category | seed | train min | fit min | image AUROC | pixel AUROC | PRO | "
            "good FPR (target) | score img/s | raw pixels image / pixel / PRO |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in result["rows"]:
        b = raw.get(r["category"]) or {}
        lines.append(
            f"| {r['category']} | {r['seed']} | {fmt(r['train_min'])} | {fmt(r['fit_min'])} | "
            f"{fmt(r['image_auroc'])} | {fmt(r['pixel_auroc'])} | {fmt(r['pro'])} | "
            f"{fmt(r['good_fpr'], 3)} ({fmt(r['target_fpr'], 3)}) | {fmt(r['images_per_s'])} | "
            f"{' / '.join(fmt(b.get(k)) for k in METRICS) if b else ''} |")
    s = result["summary"]
    rp = s["raw_pixels_mean"] or {}
    for m in s["means"]:
        lines.append(
            f"| **mean** | {m['seed']} | {fmt(m['train_min'])} | {fmt(m['fit_min'])} | "
            f"{fmt(m['image_auroc'])} | {fmt(m['pixel_auroc'])} | {fmt(m['pro'])} | "
            f"{fmt(m['good_fpr'], 3)} | {fmt(m['images_per_s'])} | "
            f"{' / '.join(fmt(rp.get(k)) for k in METRICS) if rp else ''} |")
    g = GOAL
    lines.append(f"| goal | | <= {g['train_min']:g} | <= {g['fit_min']:g} | >= "
                 f"{g['image_auroc']:g} | >= {g['pixel_auroc']:g} | >= {g['pro']:g} | "
                 f"<= {g['fpr_ratio']:g} x target | >= {g['images_per_s']:g} | |")
    if result.get("lighting"):
        lines += ["", "| category | seed | test images x | image AUROC (x1) | good FPR (x1) |",
                  "|---|---|---|---|---|"]
        for r in result["lighting"]:
            lines.append(f"| {r['category']} | {r['seed']} | {r['factor']:g} | "
                         f"{fmt(r['image_auroc'])} ({fmt(r['image_auroc_x1'])}) | "
                         f"{fmt(r['good_fpr'], 3)} ({fmt(r['good_fpr_x1'], 3)}) |")
    if len({r["seed"] for r in result["rows"]}) > 1:
        lines += ["", "| category | spread over seeds: image AUROC | pixel AUROC | PRO |",
                  "|---|---|---|---|"]
        for cat, sp in s["seed_spread"].items():
            lines.append(f"| {cat} | " + " | ".join(fmt(sp.get(k)) for k in METRICS) + " |")
    return "\n".join(lines)


def inspect_section(args, out, log):
    """Runs the section; writes inspect.md and inspect.json into ``out``."""
    names = [c.strip() for c in (args.categories or "").split(",") if c.strip()]
    categories = find_categories(args.root, names or None)
    seeds = [int(s) for s in args.inspect_seeds.split(",") if s.strip()]
    runs = runs_folder(out)
    rows, raw, failed, lighting = [], {}, [], []
    factors = lighting_factors(args.inspect_lighting)
    for name, folder in categories:
        log(f"inspect {name} ({folder}):")
        for seed in seeds:
            row = inspect_category(name, folder, seed, args, runs, log)
            if row is None:
                failed.append(f"{name} s{seed}")
                continue
            rows.append(row)
            for factor in factors:
                test_dir = relit_test_images(folder, factor, runs.parent / "inspect_data")
                auroc, fpr = scored_test_tree(runs / name / f"s{seed}" / "export", test_dir,
                                              runs / name / f"s{seed}_light{factor:g}.csv", log)
                lighting.append({"category": name, "seed": seed, "factor": factor,
                                 "image_auroc": auroc, "good_fpr": fpr,
                                 "image_auroc_x1": row["image_auroc"],
                                 "good_fpr_x1": row["good_fpr"]})
        if args.inspect_raw_pixels:
            raw[name] = raw_pixel_baseline(name, folder, runs, log)
    result = {"preset": args.inspect_preset, "flags": args.inspect_flags, "rows": rows,
              "failed": failed, "raw_pixels": raw, "lighting": lighting, "goal": GOAL}
    result["summary"] = summarise(rows, raw)
    table = markdown(result) + (f"\n\nfailed runs: {', '.join(failed)}" if failed else "")
    write_text_atomic(Path(out) / "inspect.md", table + "\n")
    write_text_atomic(Path(out) / "inspect.json", json.dumps(result, indent=2) + "\n")
    log(table)
    return result
