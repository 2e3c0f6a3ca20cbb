"""Ensemble of several runs: average their standardised per-image test scores.

    python script/ensemble.py RUN_DIR [RUN_DIR ...] [--keys pool.kde,pool.gde] [--out DIR]

Every run must have written ``stats/scores.npz`` (per-image scores: ``label``,
``id``, ``test/<key>``, ``calib/<key>``) on the same test set (same ids and
labels, in the same order). For every score key the runs share, each run's
test scores are standardised with the mean and standard deviation of the
same run's calibration scores ``calib/<key>`` (held-out inliers, or the
detector's own training features), so runs with different scales count
equally; the ensemble score is the mean of the standardised scores, and its
ROC AUC (x 100) is reported next to each member's AUC.

Output: a markdown table on stdout; with ``--out DIR`` also ``ensemble.md``,
``ensemble.csv`` and ``ensemble.json``. Problems with the inputs (a run
without scores, different test sets, no shared key) end with one ``error:``
line and exit code 2 before anything is written.
"""

import csv
import io
import sys
from pathlib import Path

import numpy as np

from detect.metrics import roc_auc
from util.atomic import write_json_atomic, write_text_atomic
from util.cli import ArgumentParser, script_main
from util.errors import ConfigError
from util.paths import check_output_path, first_bytes_are, require_dir

SCORES = Path("stats") / "scores.npz"
TABLE_TITLE = "Ensemble of "
CSV_HEADER = "key,ensemble_auc,member_mean,member_best"
# the files written into --out, each recognised by how it starts (what it may replace)
OUTPUTS = {"ensemble.md": TABLE_TITLE, "ensemble.csv": CSV_HEADER + ",",
           "ensemble.json": '{\n  "results": '}


def load_scores(run_dir):
    path = require_dir(run_dir, "run directory") / SCORES
    if not path.is_file():
        raise ConfigError(f"{run_dir} has no {SCORES}: it is not a finished run, or it was made "
                          "by a version that did not save per-image scores (rerun it)")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as err:
        raise ConfigError(f"cannot read {path}: {err}") from None


def check_same_test_set(runs):
    first_dir, first = runs[0]
    for run_dir, s in runs[1:]:
        for field in ("label", "id"):
            if field not in s or field not in first:
                raise ConfigError(f"{run_dir}: {SCORES} lacks the '{field}' array")
            a, b = np.asarray(first[field]), np.asarray(s[field])
            if a.shape != b.shape or not np.array_equal(a, b):
                raise ConfigError(f"{run_dir} and {first_dir} were scored on different test sets "
                                  f"('{field}' differs: {len(b)} vs {len(a)} images); ensembles "
                                  "need the same dataset, category and protocol")


def standardise(test, calib):
    calib = np.asarray(calib, np.float64)
    mean, std = float(np.mean(calib)), float(np.std(calib))
    return (np.asarray(test, np.float64) - mean) / (std if std > 0 else 1.0)


def shared_keys(runs, wanted=None):
    keys = None
    for _, s in runs:
        have = {k[len("test/"):] for k in s if k.startswith("test/") and f"calib/{k[5:]}" in s}
        keys = have if keys is None else keys & have
    keys = sorted(keys or ())
    if wanted:
        missing = [k for k in wanted if k not in keys]
        if missing:
            raise ConfigError(f"--keys {', '.join(missing)} not in every run (shared: "
                              f"{', '.join(keys) or 'none'})")
        keys = list(wanted)
    if not keys:
        raise ConfigError("the runs share no score key with both test/ and calib/ arrays")
    return keys


def ensemble(runs, keys):
    """[{key, ensemble, members: [AUC per run], member_mean, member_best}]."""
    labels = np.asarray(runs[0][1]["label"])
    out = []
    for key in keys:
        z = [standardise(s[f"test/{key}"], s[f"calib/{key}"]) for _, s in runs]
        members = [float(roc_auc(labels, s[f"test/{key}"])) for _, s in runs]
        out.append(dict(key=key, ensemble=float(roc_auc(labels, np.mean(z, axis=0))),
                        members=members, member_mean=float(np.mean(members)),
                        member_best=float(np.max(members))))
    return out


def markdown(rows, n_runs):
    lines = [f"{TABLE_TITLE}{n_runs} runs (standardised by calibration scores, then averaged)",
             "", "| key | ensemble AUC | mean of members | best member | members |",
             "|---|---|---|---|---|"]
    for r in rows:
        members = ", ".join(f"{m:.2f}" for m in r["members"])
        lines.append(f"| {r['key']} | {r['ensemble']:.2f} | {r['member_mean']:.2f} | "
                     f"{r['member_best']:.2f} | {members} |")
    return "\n".join(lines)


def to_csv(rows, run_dirs):
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(CSV_HEADER.split(",") +
               [f"run{i}" for i in range(len(run_dirs))])
    for r in rows:
        w.writerow([r["key"], f"{r['ensemble']:.4f}", f"{r['member_mean']:.4f}",
                    f"{r['member_best']:.4f}"] + [f"{m:.4f}" for m in r["members"]])
    return buf.getvalue()


def check_outputs(out):
    """--out and the files it will hold, before any score file is read."""
    check_output_path(out, "dir", "--out")
    for name, start in OUTPUTS.items():
        check_output_path(Path(out) / name, "file", "--out", replaces=first_bytes_are(start),
                          what=f"ensemble output ({name})")


@script_main
def main(argv=None):
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run directories (with stats/scores.npz)")
    parser.add_argument("--keys", default="", help="comma-separated score keys (default: all "
                        "keys every run has)")
    parser.add_argument("--out", help="write ensemble.md / .csv / .json into this directory")
    args = parser.parse_args(argv)
    if len(args.runs) < 2:
        raise ConfigError("an ensemble needs at least 2 run directories")
    if args.out is not None:
        check_outputs(args.out)
    runs = [(d, load_scores(d)) for d in args.runs]
    check_same_test_set(runs)
    keys = shared_keys(runs, [k.strip() for k in args.keys.split(",") if k.strip()])
    labels = np.asarray(runs[0][1]["label"])
    if len(np.unique(labels)) != 2:
        raise ConfigError("the test set needs both inliers and outliers for an AUC")
    rows = ensemble(runs, keys)
    text = markdown(rows, len(runs))
    print(text)
    if args.out:
        out = Path(args.out)
        write_text_atomic(out / "ensemble.md", text + "\n")
        write_text_atomic(out / "ensemble.csv", to_csv(rows, args.runs))
        write_json_atomic(out / "ensemble.json", {"runs": [str(d) for d in args.runs],
                                                  "results": rows}, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
