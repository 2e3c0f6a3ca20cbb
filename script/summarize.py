"""Collects every stats/summary.json under a directory into one table.

    python script/summarize.py runs [--csv all.csv] [--markdown table.md]

Rows: (dataset, model_type, protocol, metric); value: mean AUC over categories,
then mean +- std over seeds; next to the paper's number where it reports one.
The CSV has one line per run and metric, for plotting.
"""

import argparse
import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

# REFERENCE.md "Published numbers": (model_type, metric) -> {dataset: mean AUC}
PAPER = {
    ("rotation", "logit.auc"): {"cifar10ood": 86.8, "cifar20ood": 80.3, "fmnistood": 87.4},
    ("rotation", "pool.kde"): {"cifar10ood": 91.3, "cifar20ood": 84.1, "fmnistood": 95.8},
    ("contrastive", "pool.kocsvm"): {"cifar10ood": 89.0, "cifar20ood": 82.4, "fmnistood": 93.9},
    ("contrastive_da", "pool.kocsvm"): {"cifar10ood": 92.5, "cifar20ood": 86.5, "fmnistood": 94.8},
    ("contrastive_da", "pool.gde"): {"cifar10ood": 92.0, "cifar20ood": 86.0, "fmnistood": 95.5},
    # MVTec AD image / pixel AUROC (KDE), mean over the 15 categories. Our rotation model has
    # the MLP head; the paper's RotNet without it (--head_dims='') has 83.5 / 92.6.
    ("rotation", "image_AUROC"): {"mvtec": 86.3},
    ("rotation", "pixel_AUROC"): {"mvtec": 93.0},
    ("contrastive_da", "image_AUROC"): {"mvtec": 86.5},
    ("contrastive_da", "pixel_AUROC"): {"mvtec": 90.4},
}


def load_runs(root):
    runs = []
    for path in sorted(Path(root).rglob("stats/summary.json")):
        summary = json.loads(path.read_text())
        meta = summary.pop("meta", {})
        runs.append((path.parent.parent, meta, summary))
    return runs


def summarize(runs):
    """{(dataset, model_type, protocol, metric): {seed: [auc per category]}}."""
    table = defaultdict(lambda: defaultdict(list))
    for _, meta, metrics in runs:
        for metric, value in metrics.items():
            key = (meta.get("dataset"), meta.get("model_type"), meta.get("protocol"), metric)
            table[key][meta.get("seed")].append(float(value))
    return table


def rows(table):
    out = []
    for (dataset, model_type, protocol, metric), by_seed in sorted(table.items()):
        seed_means = [np.mean(v) for v in by_seed.values()]
        n_cat = max(len(v) for v in by_seed.values())
        paper = PAPER.get((model_type, metric), {}).get(dataset)
        out.append(dict(dataset=dataset, model_type=model_type, protocol=protocol, metric=metric,
                        mean=float(np.mean(seed_means)), std=float(np.std(seed_means)),
                        seeds=len(seed_means), categories=n_cat, paper=paper))
    return out


def markdown(table_rows):
    lines = ["| dataset | model | protocol | metric | AUC (mean +- std over seeds) | seeds | "
             "categories | paper |", "|---|---|---|---|---|---|---|---|"]
    for r in table_rows:
        paper = "" if r["paper"] is None else f"{r['paper']:.1f}"
        lines.append(f"| {r['dataset']} | {r['model_type']} | {r['protocol']} | {r['metric']} | "
                     f"{r['mean']:.1f} +- {r['std']:.1f} | {r['seeds']} | {r['categories']} | "
                     f"{paper} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="directory holding run directories")
    parser.add_argument("--csv", help="write one line per run and metric here")
    parser.add_argument("--markdown", help="write the summary table here")
    args = parser.parse_args(argv)
    runs = load_runs(args.root)
    if not runs:
        print(f"error: no stats/summary.json under {args.root}", file=sys.stderr)
        return 2
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["run", "dataset", "model_type", "protocol", "category", "seed",
                             "metric", "auc"])
            for run_dir, meta, metrics in runs:
                for metric, value in sorted(metrics.items()):
                    writer.writerow([run_dir, meta.get("dataset"), meta.get("model_type"),
                                     meta.get("protocol"), meta.get("category"), meta.get("seed"),
                                     metric, value])
    text = markdown(rows(summarize(runs)))
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
