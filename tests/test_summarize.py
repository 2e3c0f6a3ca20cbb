"""script/summarize.py on a generated tree of small summary files."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def write_summary(root, row, dataset, cat, seed, metrics, model_type="x"):
    d = Path(root) / row / dataset / str(cat) / f"s{seed}" / "stats"
    d.mkdir(parents=True)
    meta = dict(model_type=model_type, dataset=dataset, category=str(cat), seed=seed,
                protocol="test")
    (d / "summary.json").write_text(json.dumps(dict(metrics, meta=meta)))


def run(*args):
    return subprocess.run([sys.executable, str(ROOT / "script" / "summarize.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "runs"
    # contrastive_da on cifar10ood: 2 seeds x 2 classes. seed 0 classes (92, 94) -> 93;
    # seed 1 (90, 92) -> 91; mean 92.0, std 1.0; paper 92.5 -> diff -0.5 (match at tol 1)
    for seed, vals in ((0, (92.0, 94.0)), (1, (90.0, 92.0))):
        for cat, v in enumerate(vals):
            write_summary(root, "contrastive_da", "cifar10ood", cat, seed,
                          {"pool.kocsvm": v, "pool.gde": v - 10, "uniformity.mmd2": 0.1})
    # contrastive: one seed, 2 classes (80, 84) -> 82.0 +- 0.0; paper 89.0 -> -7.0, no match
    for cat, v in enumerate((80.0, 84.0)):
        write_summary(root, "contrastive", "cifar10ood", cat, 0, {"pool.kocsvm": v})
    # rotnet: KDE 70 < classifier 75 (the paper's ordering does not hold here)
    write_summary(root, "rotnet", "cifar10ood", 0, 0, {"pool.kde": 70.0, "logit.auc": 75.0})
    # figure rows: unsupervised curve of contrastive_da at 2% and 10%
    write_summary(root, "unsup--contrastive_da--0.02", "cifar10ood", 0, 0, {"pool.kocsvm": 88.0})
    write_summary(root, "unsup--contrastive_da--0.1", "cifar10ood", 0, 0, {"pool.kocsvm": 80.0})
    return root


def test_tables_numbers_and_marks(tree, tmp_path):
    out_dir = tmp_path / "out"
    out = run(tree, "--out", out_dir)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    da = next(l for l in lines if l.startswith("| Contrastive (DA, rot) / OC-SVM"))
    assert "| 92.0 ± 1.0 | 92.5 | -0.5 ✓ |" in da
    con = next(l for l in lines if l.startswith("| Contrastive / OC-SVM"))
    assert "| 82.0 ± 0.0 | 89.0 | -7.0 ✗ |" in con
    gde = next(l for l in lines if l.startswith("| Contrastive (DA, rot) / GDE"))
    assert "| 82.0 ± 1.0 | 92.0 | -10.0 ✗ |" in gde
    assert "distribution-augmented contrastive above vanilla contrastive (OC-SVM), cifar10ood: " \
           "92.0 vs 82.0 -> holds" in out.stdout
    assert "KDE on RotNet features above RotNet's rotation classifier, cifar10ood: 70.0 vs 75.0 " \
           "-> does NOT hold" in out.stdout

    rows = list(csv.DictReader((out_dir / "tables.csv").open()))
    cell = next(r for r in rows if r["table"] == "2" and r["row"] == "contrastive_da"
                and r["key"] == "pool.kocsvm")
    assert (float(cell["mean"]), float(cell["std"]), cell["seeds"], cell["categories"]) == \
        (92.0, 1.0, "2", "2")
    assert float(cell["diff"]) == -0.5 and cell["match"] == "True"
    md = (out_dir / "summary.md").read_text()
    per_class = md.split("### cifar10ood")[1].split("##")[0]
    # columns: rotnet logit, rotnet kde, contrastive, contrastive_da kocsvm, contrastive_da gde
    assert "| 1 | — | — | 84.0 ± 0.0 | 93.0 ± 1.0 | 83.0 ± 1.0 |" in per_class
    assert "| contrastive_da | cifar10ood | uniformity.mmd2 | 0.10 ± 0.00 |" in md
    pts = list(csv.DictReader((out_dir / "figures.csv").open()))
    assert [(p["x"], p["mean"]) for p in pts] == [("2.0000", "88.0000"), ("10.0000", "80.0000")]
    assert (out_dir / "fig_unsup_cifar10ood.png").read_bytes()[:4] == b"\x89PNG"
    assert len((out_dir / "runs.csv").read_text().splitlines()) == 1 + 4 * 3 + 2 + 2 + 2


def test_compare_as_and_tolerance(tree, tmp_path):
    for cat, v in enumerate((60.0, 70.0)):
        write_summary(tree, "contrastive", "folder", cat, 0, {"pool.kocsvm": v})
    out = run(tree, "--out", tmp_path / "o", "--compare_as=folder=cifar10ood", "--tol=8")
    assert out.returncode == 0, out.stderr
    con = next(l for l in out.stdout.splitlines() if l.startswith("| Contrastive / OC-SVM"))
    assert "| 82.0 ± 0.0 | 89.0 | -7.0 ✓ | 65.0 ± 0.0 | 89.0 | -24.0 ✗ |" in con


@pytest.mark.parametrize("args, msg", [
    (["{missing}"], "does not exist"),
    (["{empty}"], "no stats/summary.json under"),
    (["{tree}", "--tol=-1"], "--tol=-1.0 must be"),
    (["{tree}", "--compare_as=folder"], "expected ours=paper pairs"),
    (["{tree}", "--compare_as=folder=mnist"], "expected ours=paper pairs"),
])
def test_bad_arguments_exit_2_before_output(tree, tmp_path, args, msg):
    (tmp_path / "empty").mkdir()
    fill = dict(missing=tmp_path / "nope", empty=tmp_path / "empty", tree=tree)
    out_dir = tmp_path / "out"
    out = run(*[a.format(**fill) for a in args], "--out", out_dir)
    assert out.returncode == 2
    err = out.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and msg in err[0], out.stderr
    assert not out_dir.exists() and not (tree / "summary").exists()


def test_mvtec_table_means_over_categories_next_to_the_paper(tmp_path):
    root = tmp_path / "runs"
    # rotnet KDE: bottle (80 image, 90 pixel), cable (84, 94) -> 82.0 / 92.0; paper 83.5 / 92.6
    for cat, (img, pix) in (("bottle", (80.0, 90.0)), ("cable", (84.0, 94.0))):
        write_summary(root, "rotnet", "mvtec", cat, 0,
                      {"pool.kde": img, "pool.kde.pixel_auroc": pix, "pool.kde.pro": img - 30})
    write_summary(root, "cutpaste", "mvtec", "bottle", 0, {"pool.gde": 97.0})
    write_summary(root, "contrastive", "cifar10ood", 0, 0, {"pool.kocsvm": 80.0})
    out = run(root, "--out", tmp_path / "out", "--no_plots")
    assert out.returncode == 0, out.stderr
    text = out.stdout.split("## MVTec AD")[1]
    lines = text.splitlines()
    image = next(l for l in lines if l.startswith("| RotNet / KDE: image AUROC"))
    assert "| 82.0 ± 0.0 | 83.5 | -1.5 ✗ |" in image
    pixel = next(l for l in lines if l.startswith("| RotNet / KDE: pixel AUROC"))
    assert "| 92.0 ± 0.0 | 92.6 | -0.6 ✓ |" in pixel
    assert next(l for l in lines if l.startswith("| RotNet / KDE: PRO")).count("52.0") == 1
    assert "| 97.0 ± 0.0 |" in next(l for l in lines if l.startswith("| CutPaste 3-way"))
    # the CIFAR table has no MVTec column and the MVTec table no CIFAR column
    t2 = out.stdout.split("## Table 2")[1].split("##")[0]
    assert "mvtec" not in t2 and "cifar10ood" not in text
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "| bottle | 80.0 ± 0.0 | 90.0 ± 0.0 | 50.0 ± 0.0 |" in md.split("### mvtec")[1]


def test_runs_outside_the_papers_tables_print_the_long_table(tmp_path):
    """A user's own experiment names on digits match no cell of the paper's tables: the
    printed summary is the long table (row, dataset, metric, mean +- std over seeds)."""
    root = tmp_path / "mine"
    for seed, v in ((0, 90.0), (1, 94.0)):
        write_summary(root, "my_contrastive", "digitsood", 3, seed, {"pool.kde": v})
    out = run(root, "--out", tmp_path / "out", "--no_plots")
    assert out.returncode == 0, out.stderr
    assert "| my_contrastive | digitsood | pool.kde | 92.00 ± 2.00 | 2 | 1 |" in out.stdout

