"""Plans and runs every experiment of the paper's tables (and, behind flags, its figures).

    script/reproduce_all.sh [--datasets cifar10ood,cifar20ood,fmnistood] [--seeds 0,1,2,3,4]
        [--tables 2,5,7] [--figures distaug,batch,temperature,unsup,semi,data | --all_figures]
        [--rows NAME,...] [--categories 0,1,...] [--root DIR] [--runs_root runs/paper]
        [--shard i/n] [--smoke] [--dry_run] [--no_summary] [-- EXTRA FLAGS...]

One job = one row x dataset x category x seed, written to
``RUNS_ROOT/<row>/<dataset>/<category>/s<seed>``; a job whose
``stats/summary.json`` exists is skipped, so the script resumes after a crash
and several machines can share a folder. ``--shard i/n`` (0 <= i < n) runs
only jobs number i, i+n, i+2n, ... of the fixed job order. ``--smoke``: one
category (the first, or ``--categories``) and one seed of every row at the
``smoke`` budget preset (width 0.25, 300 steps; heads 512x2 instead of 512x8).
``--dry_run`` prints the commands and runs nothing. Flags after ``--`` go to
every run (last occurrence wins, so they override the row's flags). Then the
ensembles of Table 7 are made with script/ensemble.py and the tables with
script/summarize.py (``RUNS_ROOT/summary``).

Which rows (docs/experiments.md): Table 2 = the paper's main table
(random init, RotNet, rotation prediction with MLP head, contrastive,
distribution-augmented contrastive) plus the baselines we add (raw pixels,
denoising autoencoder, ImageNet ResNet-50 when ``--pretrained_weights`` is
given after ``--``); Table 5 = distribution augmentation types; Table 7 =
ensembles (over seeds, and over the distribution augmentation types of one
seed). The paper's facts available to this project do not list Tables 5 and 7,
so these two are our choice of the paper's ablations.
"""

import os
import shlex
import subprocess
import sys
from pathlib import Path

from data.distaug import distaug_has_hflip
from util.cli import ArgumentParser, script_main
from util.errors import ConfigError
from util.paths import check_output_path

ROOT = Path(__file__).resolve().parents[1]
NCLASS = {"cifar10ood": 10, "cifar20ood": 20, "cifar100ood": 100, "fmnistood": 10,
          "dogvscatood": 2, "digitsood": 10}
# training inliers per class (test protocol): caps the data-efficiency sweep
NTRAIN = {"cifar10ood": 5000, "cifar20ood": 2500, "cifar100ood": 500, "fmnistood": 6000,
          "dogvscatood": 10000, "digitsood": 90}
PAPER_AUG = "cnr0.5+hflip+jitter_b0.4_c0.4_s0.4_h0.4+gray0.2+blur0.5"
SMOKE_AUG = "cnr0.5+hflip+jitter_b0.4_c0.4_s0.4_h0.1+gray0.4"
PAPER_FLAGS = ["--net_type=ResNet18", "--net_width=1", "--learning_rate=0.01", "--momentum=0.9",
               "--weight_decay=3e-4", "--num_epoch=2048", "--sched_type=cos"]
FIGURES = ("distaug", "batch", "temperature", "unsup", "semi", "data")
SERIES_MODELS = {"rotation_head": ["--model_type=rotation", "--batch_size=64"],
                 "contrastive": ["--model_type=contrastive"],
                 "contrastive_da": ["--model_type=contrastive_da", "--distaug_type=rot"]}
FIGURE7_PREFIX = "distaug--"  # rows of the release's Figure-7 block


def heads(smoke):
    return ("512x2", "512x2,128") if smoke else ("512x8", "512x8,128")


def rows_table2(smoke, with_imagenet):
    rot_head, con_head = heads(smoke)
    rot_bs = 16 if smoke else 64  # smoke: 16 images x 4 rotations, like cpu_small_rotation
    rows = [
        ("random_init", ["--model_type=contrastive", "--num_epoch=0", f"--head_dims={con_head}"]),
        ("raw_pixels", ["--model_type=raw_pixels", "--num_epoch=0"]),
        ("denoising", ["--model_type=denoising", "--head_dims="]),
        ("rotnet", ["--model_type=rotation", "--head_dims=", f"--batch_size={rot_bs}"]),
        ("rotation_head", ["--model_type=rotation", f"--head_dims={rot_head}",
                           f"--batch_size={rot_bs}"]),
        ("contrastive", ["--model_type=contrastive", f"--head_dims={con_head}"]),
        ("contrastive_da", ["--model_type=contrastive_da", "--distaug_type=rot",
                            f"--head_dims={con_head}"]),
    ]
    if with_imagenet:
        rows.insert(2, ("imagenet_resnet50", ["--model_type=imagenet_resnet50", "--num_epoch=0"]))
    return rows


def da_row(name, distaug, smoke, extra=()):
    return (name, ["--model_type=contrastive_da", f"--distaug_type={distaug}",
                   f"--head_dims={heads(smoke)[1]}", *extra])


def rows_table5(smoke):
    # contrastive (none) and contrastive_da (rot) are Table 2 rows
    return [da_row("da_hflip", "hflip", smoke), da_row("da_vflip", "vflip", smoke),
            da_row("da_4", "4", smoke)]


def figure_rows(fig, smoke, datasets):
    """Rows named '<figure>--<series>--<x>' (summarize.py plots them)."""
    con_head = heads(smoke)[1]
    rows = []
    if fig == "distaug":
        values = (1, 4, 8) if smoke else range(1, 9)
        rows = [da_row(f"{FIGURE7_PREFIX}contrastive_da--{k}", str(k), smoke) for k in values]
    elif fig in ("batch", "temperature"):
        values = {"batch": (16, 64) if smoke else (16, 32, 64, 128, 256, 512),
                  "temperature": (0.1, 0.5) if smoke else (0.05, 0.1, 0.2, 0.5, 1.0)}[fig]
        flag = {"batch": "batch_size", "temperature": "temperature"}[fig]
        for series in ("contrastive", "contrastive_da"):
            for v in values:
                rows.append((f"{fig}--{series}--{v}",
                             SERIES_MODELS[series] + [f"--head_dims={con_head}", f"--{flag}={v}"]))
    elif fig in ("unsup", "semi"):
        ratios = (0.02, 0.1) if smoke else (0.005, 0.01, 0.02, 0.05, 0.1)
        if fig == "unsup":
            for series in ("rotation_head", "contrastive_da"):
                head = heads(smoke)[0] if series == "rotation_head" else con_head
                for r in ratios:
                    rows.append((f"unsup--{series}--{r}",
                                 SERIES_MODELS[series] + [f"--head_dims={head}",
                                                          f"--outlier_ratio={r}"]))
        else:
            for n in (50, 100):
                for r in ratios:
                    rows.append((f"semi--contrastive_da_n{n}--{r}",
                                 SERIES_MODELS["contrastive_da"] + [
                                     f"--head_dims={con_head}", f"--outlier_ratio={r}",
                                     f"--num_inlier_for_detector={n}"]))
    elif fig == "data":
        sizes = (50, 500) if smoke else (50, 100, 250, 500, 1000, 2000, 5000)
        cap = max(NTRAIN.get(d, 10 ** 9) for d in datasets)
        for series in ("rotation_head", "contrastive_da"):
            head = heads(smoke)[0] if series == "rotation_head" else con_head
            for n in sizes:
                if n <= cap:
                    rows.append((f"data--{series}--{n}",
                                 SERIES_MODELS[series] + [f"--head_dims={head}", f"--num_train={n}"]))
    return rows


def aug_for(name, flags, smoke):
    """--aug_list of a row: the paper's chain, without the random hflip where the release drops
    it. Its Figure-7 block (distribution augmentation types 1..8) drops it for every type, 1
    included; elsewhere it goes when the distribution augmentation itself makes flipped
    copies (a random flip would make an instance its own negative)."""
    aug = SMOKE_AUG if smoke else PAPER_AUG
    distaug = next((f.split("=", 1)[1] for f in flags if f.startswith("--distaug_type=")), "none")
    if name.startswith(FIGURE7_PREFIX) or distaug_has_hflip(distaug):
        aug = aug.replace("+hflip", "")
    return f"--aug_list={aug}"


def plan(args):
    """[(row, dataset, category, seed, model_dir, argv)] in a fixed order."""
    with_imagenet = any(e.startswith("--pretrained_weights") for e in args.extra)
    rows = []
    tables = set(args.tables)
    if "2" in tables:
        rows += rows_table2(args.smoke, with_imagenet)
    if "5" in tables:
        rows += rows_table5(args.smoke)
    if "7" in tables and "2" not in tables:
        rows += [r for r in rows_table2(args.smoke, False) if r[0] == "contrastive_da"]
    if "7" in tables and "5" not in tables:
        rows += rows_table5(args.smoke)
    for fig in args.figures:
        rows += figure_rows(fig, args.smoke, args.datasets)
    if args.rows:
        unknown = args.rows - {r[0] for r in rows}
        if unknown:
            raise ConfigError(f"--rows {', '.join(sorted(unknown))} not among the planned rows "
                              f"({', '.join(r[0] for r in rows)}); check --tables / --figures")
        rows = [r for r in rows if r[0] in args.rows]
    seeds = args.seeds[:1] if args.smoke else args.seeds
    base = ["--preset=smoke"] if args.smoke else list(PAPER_FLAGS)
    if args.root:
        base.append(f"--root={args.root}")
    if args.is_validation:
        base.append("--is_validation")
    jobs = []
    for ds in args.datasets:
        cats = args.categories or [str(c) for c in range(NCLASS[ds])]
        if args.smoke:
            cats = cats[:1]
        for seed in seeds:
            for cat in cats:
                for name, flags in rows:
                    model_dir = Path(args.runs_root) / name / ds / cat / f"s{seed}"
                    argv = [sys.executable, "train_and_eval_loop.py", *base, aug_for(name, flags, args.smoke),
                            *flags, f"--dataset={ds}", f"--category={cat}", f"--seed={seed}",
                            f"--model_dir={model_dir}", *args.extra]
                    jobs.append((name, ds, cat, seed, model_dir, argv))
    return jobs


def ensemble_jobs(args):
    """Table 7: per dataset/category, over seeds (contrastive_da) and over DA types (seed s)."""
    if "7" not in args.tables:
        return []
    root = Path(args.runs_root)
    out = []
    seeds = args.seeds[:1] if args.smoke else args.seeds
    for ds in args.datasets:
        cats = args.categories or [str(c) for c in range(NCLASS[ds])]
        for cat in (cats[:1] if args.smoke else cats):
            if len(seeds) > 1:
                out.append((root / "ensemble--seeds--contrastive_da" / ds / cat,
                            [root / "contrastive_da" / ds / cat / f"s{s}" for s in seeds]))
            s = seeds[0]
            out.append((root / "ensemble--distaug--contrastive_da" / ds / cat,
                        [root / r / ds / cat / f"s{s}"
                         for r in ("contrastive_da", "da_hflip", "da_vflip", "da_4")]))
    return out


def parse_args(argv):
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    else:
        extra = []
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default="cifar10ood,cifar20ood,fmnistood")
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--categories", default="", help="default: every class of the dataset")
    p.add_argument("--tables", default="2,5,7")
    p.add_argument("--figures", default="", help=f"comma list of {', '.join(FIGURES)}")
    p.add_argument("--all_figures", action="store_true")
    p.add_argument("--rows", default="", help="only these row names")
    p.add_argument("--root", default="", help="--root of every run (image folder, pickles)")
    p.add_argument("--is_validation", action="store_true", help="validation protocol")
    p.add_argument("--runs_root", default="runs/paper")
    p.add_argument("--shard", default="0/1", help="i/n: run jobs i, i+n, ... (0 <= i < n)")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--dry_run", action="store_true")
    p.add_argument("--no_summary", action="store_true")
    p.add_argument("--compare_as", default="", help="passed to summarize.py")
    args = p.parse_args(argv)
    args.extra = extra

    def csv_list(text):
        return [x.strip() for x in text.split(",") if x.strip()]

    args.datasets, args.seeds = csv_list(args.datasets), csv_list(args.seeds)
    args.categories, args.tables = csv_list(args.categories), csv_list(args.tables)
    args.rows = set(csv_list(args.rows))
    args.figures = list(FIGURES) if args.all_figures else csv_list(args.figures)
    problems = [f for f in args.figures if f not in FIGURES]
    problems += [f"table {t}" for t in args.tables if t not in ("2", "5", "7")]
    if problems:
        p.error(f"unknown {', '.join(problems)}; figures: {', '.join(FIGURES)}; tables: 2,5,7")
    for ds in args.datasets:
        if ds not in NCLASS and not args.categories:
            p.error(f"--datasets {ds}: unknown number of classes, give --categories")
    try:
        i, n = (int(x) for x in args.shard.split("/"))
        assert 0 <= i < n
    except (ValueError, AssertionError):
        p.error(f"--shard={args.shard} must be i/n with 0 <= i < n, e.g. 0/4")
    args.shard_index, args.shard_count = i, n
    return args


@script_main
def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    jobs = plan(args)
    if not args.dry_run:
        check_output_path(args.runs_root, "dir", "--runs_root")
    mine = [j for k, j in enumerate(jobs) if k % args.shard_count == args.shard_index]
    print(f"{len(jobs)} jobs in all, {len(mine)} in shard {args.shard}", flush=True)
    failed, skipped = [], 0
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    for k, (name, ds, cat, seed, model_dir, argv) in enumerate(mine):
        done = (model_dir / "stats" / "summary.json").exists()
        line = " ".join(shlex.quote(str(a)) for a in argv)
        if args.dry_run:
            print(("# done: " if done else "") + line)
            continue
        if done:
            skipped += 1
            continue
        print(f"[{k + 1}/{len(mine)}] {name} {ds} {cat} s{seed}", flush=True)
        log_path = model_dir.parent / f"s{seed}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "w") as log:
            rc = subprocess.call(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
        if rc:
            failed.append((name, ds, cat, seed, rc, log_path))
            print(f"  FAILED (exit {rc}); log: {log_path}", flush=True)
    if args.dry_run:
        return 0
    for out_dir, members in ensemble_jobs(args):
        have = [m for m in members if (m / "stats" / "scores.npz").exists()]
        if (out_dir / "ensemble.json").exists() or len(have) < 2:
            continue
        subprocess.call([sys.executable, "script/ensemble.py", *map(str, have), "--out",
                         str(out_dir)], cwd=ROOT, stdout=subprocess.DEVNULL)
    print(f"skipped {skipped} finished job(s); {len(failed)} failed", flush=True)
    for f in failed:
        print("  failed: %s %s %s s%s (exit %d) %s" % f)
    if not args.no_summary and Path(args.runs_root).is_dir():
        cmd = [sys.executable, "script/summarize.py", args.runs_root, "--out",
               str(Path(args.runs_root) / "summary")]
        if args.compare_as:
            cmd.append(f"--compare_as={args.compare_as}")
        subprocess.call(cmd, cwd=ROOT)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
