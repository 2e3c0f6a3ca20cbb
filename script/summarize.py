"""The paper's tables and figures from a folder of runs, next to the paper's numbers.

    python script/summarize.py RUNS_ROOT [--out DIR] [--compare_as folder=cifar10ood]
        [--tol 1.0] [--no_plots] [--csv runs.csv] [--markdown summary.md]

Reads every ``stats/summary.json`` under RUNS_ROOT. A run's *row* is the first
folder under RUNS_ROOT (script/reproduce_all.sh writes
``RUNS_ROOT/<row>/<dataset>/<category>/s<seed>``; a run directly in RUNS_ROOT
is its model type). A cell is the AUC averaged over the categories of one seed,
then mean +- std over seeds (population std; 0 for one seed).

Writes into ``--out`` (default RUNS_ROOT/summary):
  summary.md    Tables 2, 5, 7 (ours | paper | difference, with a check mark
                when |difference| <= --tol), the paper's orderings, the
                per-class tables and every (row, dataset, metric)
  tables.csv    the cells of Tables 2 and 5 (and the long table) for plotting
  runs.csv      one line per run and metric
  figures.csv   the points of the figures; fig_<figure>_<dataset>.png the plots
                (AUC vs outlier ratio, vs training-set size, vs batch size, vs
                temperature; bars per distribution augmentation)
and prints Tables 2, 5, 7 and the orderings. Bad arguments end with one
``error:`` line and exit code 2 before anything is written.
"""

import csv
import io
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from util.atomic import write_bytes_atomic, write_text_atomic
from util.cli import ArgumentParser, script_main
from util.errors import ConfigError
from util.paths import check_output_path, first_bytes_are, require_dir

DATASET_ORDER = ["cifar10ood", "cifar20ood", "fmnistood", "dogvscatood", "celeba"]


def _paper(*values):
    return {d: v for d, v in zip(DATASET_ORDER, values) if v is not None}


# (row, metric key, label, paper mean AUC per dataset) -- docs/method.md "Published numbers"
TABLE2 = [
    ("random_init", "pool.kocsvm", "ResNet-18 random init / OC-SVM",
     _paper(61.2, 59.6, 89.8, 50.7, 57.1)),
    ("raw_pixels", "pool.kocsvm", "Raw pixels / OC-SVM", {}),
    ("imagenet_resnet50", "pool.kocsvm", "ImageNet ResNet-50 / OC-SVM", {}),
    ("denoising", "pool.kocsvm", "Denoising autoencoder / OC-SVM", {}),
    ("rotnet", "logit.auc", "RotNet / rotation classifier", _paper(86.8, 80.3, 87.4, 86.1, 51.4)),
    ("rotnet", "pool.kde", "RotNet / KDE", _paper(89.3, 81.9, 94.6, 86.4, 77.4)),
    ("rotation_head", "logit.auc", "Rotation prediction (MLP head) / rotation classifier", {}),
    ("rotation_head", "pool.kde", "Rotation prediction (MLP head) / KDE",
     _paper(91.3, 84.1, 95.8, 86.4, 69.5)),
    ("contrastive", "pool.kocsvm", "Contrastive / OC-SVM", _paper(89.0, 82.4, 93.9, 87.7, 83.5)),
    ("contrastive_da", "pool.kocsvm", "Contrastive (DA, rot) / OC-SVM",
     _paper(92.5, 86.5, 94.8, 89.6, 84.5)),
    ("contrastive_da", "pool.gde", "Contrastive (DA, rot) / GDE",
     _paper(92.0, 86.0, 95.5, 88.9, 90.6)),
]
# Distribution augmentation types (our choice of rows; the paper's best single CIFAR-10
# model, hflip+rot90+rot90hflip = variant 4, has 93.7 mean AUC, detector not stated)
TABLE5 = [
    ("contrastive", "pool.kocsvm", "none (vanilla contrastive) / OC-SVM", {}),
    ("contrastive_da", "pool.kocsvm", "rot (4x) / OC-SVM", _paper(92.5, 86.5, 94.8, 89.6, 84.5)),
    ("da_hflip", "pool.kocsvm", "hflip (2x) / OC-SVM", {}),
    ("da_vflip", "pool.kocsvm", "vflip (2x) / OC-SVM", {}),
    ("da_4", "pool.kocsvm", "hflip+rot90+rot90hflip (4x) / OC-SVM", _paper(93.7)),
]
# MVTec AD (patch protocol, mean over categories): the paper's image / pixel AUROC with KDE.
# Rows are script/run_mvtec.sh's: RUNS_ROOT/<row>/mvtec/<category>/s<seed>.
MVTEC_DATASETS = ("mvtec", "mvtec_folder")
MVTEC_PAPER = {"rotnet": ("RotNet", 83.5, 92.6), "rotation_head": ("RotNet with MLP head", 86.3, 93.0),
               "contrastive_da": ("DistAug contrastive", 86.5, 90.4),
               "contrastive": ("Contrastive", None, None),
               "cutpaste": ("CutPaste 3-way (not in the paper)", None, None),
               "denoising": ("Denoising autoencoder", None, None),
               "raw_pixels": ("Raw pixels (no training)", None, None)}
TABLE_MVTEC = [
    spec
    for row, (name, image, pixel) in MVTEC_PAPER.items()
    for det in ("kde", "gde")
    for spec in (
        (row, f"pool.{det}", f"{name} / {det.upper()}: image AUROC",
         {"mvtec": image} if image is not None and det == "kde" else {}),
        (row, f"pool.{det}.pixel_auroc", f"{name} / {det.upper()}: pixel AUROC",
         {"mvtec": pixel} if pixel is not None and det == "kde" else {}),
        (row, f"pool.{det}.pro", f"{name} / {det.upper()}: PRO", {}),
    )
]
# the paper's orderings: (description, (row, key) expected higher, (row, key) lower)
ORDERINGS = [
    ("distribution-augmented contrastive above vanilla contrastive (OC-SVM)",
     ("contrastive_da", "pool.kocsvm"), ("contrastive", "pool.kocsvm")),
    ("KDE on RotNet features above RotNet's rotation classifier",
     ("rotnet", "pool.kde"), ("rotnet", "logit.auc")),
    ("MLP head helps rotation prediction (KDE)", ("rotation_head", "pool.kde"),
     ("rotnet", "pool.kde")),
    ("MLP head helps rotation prediction (rotation classifier)", ("rotation_head", "logit.auc"),
     ("rotnet", "logit.auc")),
]
FIGURES = {  # figure -> (x label, log x, bars)
    "unsup": ("outlier ratio in the training set (%)", False, False),
    "semi": ("outlier ratio in the training set (%)", False, False),
    "data": ("representation training-set size", True, False),
    "batch": ("batch size", True, False),
    "temperature": ("temperature", True, False),
    "distaug": ("distribution augmentation variant (first k of 8 transforms)", False, True),
}
SERIES_KEY = {"rotation_head": "pool.kde", "rotnet": "pool.kde"}  # default: pool.kocsvm


# ----------------------------------------------------------------------------- loading

def load_runs(root):
    """[(run_dir, row, meta, metrics)] for every stats/summary.json under ``root``."""
    root = Path(root)
    runs = []
    for path in sorted(root.rglob("stats/summary.json")):
        try:
            summary = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise ConfigError(f"cannot read {path}: {err}") from None
        meta = summary.pop("meta", {}) or {}
        metrics = {k: float(v) for k, v in summary.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        run_dir = path.parent.parent
        rel = run_dir.relative_to(root).parts
        row = rel[0] if rel else str(meta.get("model_type"))
        runs.append((run_dir, row, meta, metrics))
    return runs


def load_ensembles(root):
    """{(kind_row, dataset, key): {category: ensemble AUC}} from ensemble--*/ds/cat/."""
    out = defaultdict(dict)
    for path in sorted(Path(root).glob("ensemble--*/*/*/ensemble.json")):
        kind, ds, cat = path.parent.relative_to(root).parts
        for r in json.loads(path.read_text()).get("results", []):
            out[(kind, ds, r["key"])][cat] = (float(r["ensemble"]), float(r["member_mean"]))
    return out


# ------------------------------------------------------------------------- aggregation

def aggregate(runs):
    """{(row, dataset, key): {seed: {category: auc}}}."""
    cells = defaultdict(lambda: defaultdict(dict))
    for _, row, meta, metrics in runs:
        for key, value in metrics.items():
            cells[(row, meta.get("dataset"), key)][meta.get("seed")][str(meta.get("category"))] = value
    return cells


def cell_stats(by_seed):
    """Mean over categories per seed, then (mean, std, n seeds, n categories) over seeds."""
    seed_means = [float(np.mean(list(c.values()))) for c in by_seed.values() if c]
    if not seed_means:
        return None
    n_cat = max(len(c) for c in by_seed.values())
    return float(np.mean(seed_means)), float(np.std(seed_means)), len(seed_means), n_cat


def class_stats(by_seed):
    """{category: (mean, std, n seeds)} over seeds."""
    per = defaultdict(list)
    for cats in by_seed.values():
        for cat, v in cats.items():
            per[cat].append(v)
    return {c: (float(np.mean(v)), float(np.std(v)), len(v)) for c, v in per.items()}


def datasets_of(cells):
    found = {ds for (_, ds, _) in cells}
    return [d for d in DATASET_ORDER if d in found] + sorted(found - set(DATASET_ORDER))


def table_cells(spec, cells, datasets, compare_as, tol):
    """Rows of a paper table: [{label, row, key, dataset, mean, std, seeds, categories,
    paper, diff, match}] for every spec row with at least one run."""
    out = []
    for row, key, label, paper in spec:
        if not any((row, ds, key) in cells for ds in datasets):
            continue
        for ds in datasets:
            st = cell_stats(cells.get((row, ds, key), {}))
            p = paper.get(compare_as.get(ds, ds))
            rec = dict(label=label, row=row, key=key, dataset=ds, mean=None, std=None, seeds=0,
                       categories=0, paper=p, diff=None, match=None)
            if st:
                rec.update(mean=st[0], std=st[1], seeds=st[2], categories=st[3])
                if p is not None:
                    rec["diff"] = st[0] - p
                    rec["match"] = abs(st[0] - p) <= tol
            out.append(rec)
    return out


# ---------------------------------------------------------------------------- markdown

def fmt_cell(rec):
    if rec["mean"] is None:
        ours = "—"
    else:
        ours = f"{rec['mean']:.1f} ± {rec['std']:.1f}"
    if rec["paper"] is None:
        return ours, "", ""
    if rec["diff"] is None:
        return ours, f"{rec['paper']:.1f}", ""
    mark = "✓" if rec["match"] else "✗"
    return ours, f"{rec['paper']:.1f}", f"{rec['diff']:+.1f} {mark}"


def table_markdown(title, recs, datasets, compare_as):
    if not recs:
        return f"## {title}\n\n(no runs)\n"
    head = ["representation / detector"]
    for ds in datasets:
        shown = ds if ds not in compare_as else f"{ds} (paper: {compare_as[ds]})"
        head += [f"{shown} ours", "paper", "diff"]
    lines = [f"## {title}", "", "| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    by_label = defaultdict(dict)
    order = []
    for r in recs:
        if r["label"] not in by_label:
            order.append(r["label"])
        by_label[r["label"]][r["dataset"]] = r
    for label in order:
        cells = [label]
        for ds in datasets:
            cells += list(fmt_cell(by_label[label][ds]))
        lines.append("| " + " | ".join(cells) + " |")
    seeds = sorted({(r["seeds"], r["categories"]) for r in recs if r["seeds"]})
    lines += ["", "ours: mean ± std over seeds of the AUC averaged over categories "
              f"((seeds, categories) per cell: {', '.join(f'({s}, {c})' for s, c in seeds)}); "
              "✓ = within the tolerance of the paper's number."]
    return "\n".join(lines) + "\n"


def orderings(cells, datasets):
    lines, results = [], []
    for desc, hi, lo in ORDERINGS:
        for ds in datasets:
            a = cell_stats(cells.get((hi[0], ds, hi[1]), {}))
            b = cell_stats(cells.get((lo[0], ds, lo[1]), {}))
            if not (a and b):
                continue
            holds = a[0] > b[0]
            results.append(dict(ordering=desc, dataset=ds, higher=a[0], lower=b[0], holds=holds))
            lines.append(f"- {desc}, {ds}: {a[0]:.1f} vs {b[0]:.1f} -> "
                         f"{'holds' if holds else 'does NOT hold'}")
    text = "## The paper's orderings\n\n" + ("\n".join(lines) if lines else "(not enough runs)")
    return text + "\n", results


def ensembles_markdown(ens, datasets):
    if not ens:
        return "## Table 7: ensembles\n\n(no ensembles: script/ensemble.py needs stats/scores.npz)\n"
    lines = ["## Table 7: ensembles", "", "| ensemble | key | " +
             " | ".join(f"{ds} ensemble (mean of members)" for ds in datasets) + " |",
             "|---|---|" + "---|" * len(datasets)]
    for (kind, key) in sorted({(k, key) for (k, _, key) in ens}):
        cells = []
        for ds in datasets:
            per = ens.get((kind, ds, key))
            if not per:
                cells.append("—")
                continue
            e = np.mean([v[0] for v in per.values()])
            m = np.mean([v[1] for v in per.values()])
            cells.append(f"{e:.1f} ({m:.1f}), {len(per)} categories")
        lines.append(f"| {kind.split('--', 1)[1]} | {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def per_class_markdown(cells, datasets):
    parts = ["## Per-class AUC (mean ± std over seeds)"]
    for ds in datasets:
        spec = TABLE_MVTEC if ds in MVTEC_DATASETS else TABLE2
        cols = [(row, key) for row, key, _, _ in spec if (row, ds, key) in cells]
        if not cols:
            continue
        stats = {c: class_stats(cells[(c[0], ds, c[1])]) for c in cols}
        cats = sorted({cat for s in stats.values() for cat in s},
                      key=lambda c: (not c.isdigit(), int(c) if c.isdigit() else 0, c))
        parts += ["", f"### {ds}", "", "| class | " + " | ".join(f"{r} {k}" for r, k in cols) +
                  " |", "|---|" + "---|" * len(cols)]
        for cat in cats:
            vals = [f"{stats[c][cat][0]:.1f} ± {stats[c][cat][1]:.1f}" if cat in stats[c] else "—"
                    for c in cols]
            parts.append(f"| {cat} | " + " | ".join(vals) + " |")
    return "\n".join(parts) + "\n"


def long_rows(cells):
    out = []
    for (row, ds, key), by_seed in sorted(cells.items(), key=lambda kv: tuple(map(str, kv[0]))):
        st = cell_stats(by_seed)
        if st:
            out.append(dict(row=row, dataset=ds, key=key, mean=st[0], std=st[1], seeds=st[2],
                            categories=st[3]))
    return out


def long_markdown(rows):
    lines = ["## Every row, dataset and metric", "",
             "| row | dataset | metric | mean ± std over seeds | seeds | categories |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['row']} | {r['dataset']} | {r['key']} | {r['mean']:.2f} ± "
                     f"{r['std']:.2f} | {r['seeds']} | {r['categories']} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- figures

def figure_points(cells):
    """[{figure, dataset, series, x, key, mean, std, seeds}] from rows 'fig--series--x'."""
    pts = []
    for (row, ds, key), by_seed in cells.items():
        parts = row.split("--")
        if len(parts) != 3 or parts[0] not in FIGURES:
            continue
        fig, series, x = parts
        base = series.split("_n")[0]
        if key != SERIES_KEY.get(base, "pool.kocsvm"):
            continue
        st = cell_stats(by_seed)
        try:
            xv = float(x)
        except ValueError:
            continue
        if fig in ("unsup", "semi"):
            xv *= 100.0
        pts.append(dict(figure=fig, dataset=ds, series=series, x=xv, key=key, mean=st[0],
                        std=st[1], seeds=st[2]))
    return sorted(pts, key=lambda p: (p["figure"], str(p["dataset"]), p["series"], p["x"]))


def plot_figures(points, out_dir):
    if not points:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    groups = defaultdict(list)
    for p in points:
        groups[(p["figure"], p["dataset"])].append(p)
    for (fig, ds), pts in sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))):
        xlabel, logx, bars = FIGURES[fig]
        f, ax = plt.subplots(figsize=(6, 4))
        series = sorted({p["series"] for p in pts})
        for i, s in enumerate(series):
            sp = [p for p in pts if p["series"] == s]
            x = np.array([p["x"] for p in sp])
            y = np.array([p["mean"] for p in sp])
            e = np.array([p["std"] for p in sp])
            label = f"{s} ({sp[0]['key']})"
            if bars:
                w = 0.8 / len(series)
                ax.bar(x + (i - (len(series) - 1) / 2) * w, y, w, yerr=e, label=label, capsize=3)
            else:
                ax.errorbar(x, y, yerr=e, marker="o", capsize=3, label=label)
        if logx:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("mean AUC over classes")
        ax.set_title(f"{fig}: {ds}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        f.tight_layout()
        buf = io.BytesIO()
        f.savefig(buf, format="png", dpi=120)
        plt.close(f)
        path = Path(out_dir) / f"fig_{fig}_{ds}.png"
        write_bytes_atomic(path, buf.getvalue())
        written.append(path)
    return written


# -------------------------------------------------------------------------------- CSV

def csv_text(header, rows):
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    for r in rows:
        w.writerow(["" if r.get(h) is None else (f"{r[h]:.4f}" if isinstance(r.get(h), float)
                                                 else r[h]) for h in header])
    return buf.getvalue()


# ------------------------------------------------------------------------------- main

SUMMARY_TITLE = "# Summary of "
TABLE2_TITLE = "Table 2: representations and detectors (mean AUC over classes)"
TABLES_COLUMNS = ["table", "label", "row", "key", "dataset", "mean", "std", "seeds",
                  "categories", "paper", "diff", "match"]
RUNS_COLUMNS = ["run", "row", "dataset", "category", "seed", "protocol", "key", "value"]
FIGURES_COLUMNS = ["figure", "dataset", "series", "x", "key", "mean", "std", "seeds"]


def _csv_start(columns):
    return ",".join(columns) + "\r\n"


# the files written into --out, each recognised by how it starts (what it may replace)
OUT_FILES = {"summary.md": SUMMARY_TITLE, "tables.csv": _csv_start(TABLES_COLUMNS),
             "runs.csv": _csv_start(RUNS_COLUMNS), "figures.csv": _csv_start(FIGURES_COLUMNS)}


def parse_args(argv):
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", help="folder holding run directories (RUNS_ROOT)")
    p.add_argument("--out", help="output folder (default RUNS_ROOT/summary)")
    p.add_argument("--compare_as", default="", help="compare a dataset with the paper's numbers "
                   "of another, e.g. folder=cifar10ood (comma-separated pairs)")
    p.add_argument("--tol", type=float, default=1.0, help="|ours - paper| that counts as a match")
    p.add_argument("--no_plots", action="store_true")
    p.add_argument("--csv", help="also write runs.csv here")
    p.add_argument("--markdown", help="also write summary.md here")
    return p.parse_args(argv)


def check_outputs(args):
    """Every output path (--out and its files, --csv, --markdown), before anything is read."""
    out = args.out if args.out is not None else Path(args.root) / "summary"
    check_output_path(out, "dir", "--out")
    for name, start in OUT_FILES.items():
        check_output_path(Path(out) / name, "file", "--out", replaces=first_bytes_are(start),
                          what=f"summary output ({name})")
    if args.csv is not None:
        check_output_path(args.csv, "file", "--csv", what="runs.csv",
                          replaces=first_bytes_are(OUT_FILES["runs.csv"]))
    if args.markdown is not None:
        check_output_path(args.markdown, "file", "--markdown", what="summary",
                          replaces=first_bytes_are(f"## {TABLE2_TITLE}"))


def validate(args):
    """Everything checked before any output exists; returns (runs, compare_as)."""
    root = require_dir(args.root, "RUNS_ROOT")
    if not (args.tol >= 0 and math.isfinite(args.tol)):
        raise ConfigError(f"--tol={args.tol} must be a finite number >= 0")
    compare_as = {}
    for pair in filter(None, (s.strip() for s in args.compare_as.split(","))):
        ours, sep, theirs = pair.partition("=")
        if not sep or not ours or theirs not in DATASET_ORDER:
            raise ConfigError(f"--compare_as={args.compare_as}: expected ours=paper pairs with "
                              f"paper one of {', '.join(DATASET_ORDER)}, e.g. folder=cifar10ood")
        compare_as[ours] = theirs
    check_outputs(args)
    runs = load_runs(root)
    if not runs:
        raise ConfigError(f"no stats/summary.json under {args.root}")
    return runs, compare_as


@script_main
def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    runs, compare_as = validate(args)
    out = Path(args.out) if args.out else Path(args.root) / "summary"
    cells = aggregate(runs)
    found = datasets_of(cells)
    datasets = [d for d in found if d not in MVTEC_DATASETS]
    mvtec = [d for d in found if d in MVTEC_DATASETS]
    t2 = table_cells(TABLE2, cells, datasets, compare_as, args.tol)
    t5 = table_cells(TABLE5, cells, datasets, compare_as, args.tol)
    tm = table_cells(TABLE_MVTEC, cells, mvtec, compare_as, args.tol)
    ens = load_ensembles(args.root)
    order_text, _ = orderings(cells, datasets)
    head = [table_markdown(TABLE2_TITLE, t2, datasets, compare_as),
            table_markdown("Table 5: distribution augmentation types (contrastive, mean AUC)",
                           t5, datasets, compare_as),
            ensembles_markdown(ens, datasets), order_text]
    if mvtec:
        head.append(table_markdown("MVTec AD: patch protocol (mean over categories)", tm, mvtec,
                                   compare_as))
    long = long_rows(cells)
    text = "\n".join(head + [per_class_markdown(cells, found), long_markdown(long)])
    print("\n".join(head))
    if not any(r["mean"] is not None for r in t2 + t5 + tm):
        # a user's own rows or datasets: no cell of the paper's tables, so the long table
        # is the summary worth reading
        print(long_markdown(long))

    write_text_atomic(out / "summary.md", f"{SUMMARY_TITLE}{len(runs)} runs under {args.root}\n\n"
                      + text)
    table_rows = ([dict(r, table="2") for r in t2] + [dict(r, table="5") for r in t5] +
                  [dict(r, table="mvtec") for r in tm] + [dict(r, table="all") for r in long])
    write_text_atomic(out / "tables.csv", csv_text(TABLES_COLUMNS, table_rows))
    run_rows = [dict(run=str(d), row=row, dataset=m.get("dataset"), category=m.get("category"),
                     seed=m.get("seed"), protocol=m.get("protocol"), key=k, value=v)
                for d, row, m, metrics in runs for k, v in sorted(metrics.items())]
    runs_csv = csv_text(RUNS_COLUMNS, run_rows)
    write_text_atomic(out / "runs.csv", runs_csv)
    points = figure_points(cells)
    write_text_atomic(out / "figures.csv", csv_text(FIGURES_COLUMNS, points))
    plots = [] if args.no_plots else plot_figures(points, out)
    if args.csv:
        write_text_atomic(Path(args.csv), runs_csv)
    if args.markdown:
        write_text_atomic(Path(args.markdown), text)
    print(f"Wrote {out}/summary.md, tables.csv, runs.csv, figures.csv"
          + (f" and {len(plots)} plot(s)" if plots else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
