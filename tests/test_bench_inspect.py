"""bench/inspect.py: the inspector's benchmark section on a tiny MVTec-layout folder, its
figures read from the runs it made, and its table.

The section runs through bench.runner.main (what script/benchmark.py calls) in the test
process; the runs it makes start fresh processes of their own, as for a user."""

import json

import pytest

from bench.inspect import GOAL, markdown, summarise
from bench.runner import main
from tests.mvtec_fixture import make_category


def _row(cat, seed, image, pixel, pro):
    return {"category": cat, "seed": seed, "train_min": 1.0, "fit_min": 0.5,
            "image_auroc": image, "pixel_auroc": pixel, "pro": pro, "good_fpr": 0.1,
            "target_fpr": 0.05, "images_per_s": 12.0}


def test_means_over_categories_and_the_spread_over_seeds():
    rows = [_row("a", 0, 90.0, 80.0, 70.0), _row("a", 1, 93.0, 81.0, 70.5),
            _row("b", 0, 70.0, 60.0, 50.0), _row("b", 1, 71.0, 66.0, 49.0)]
    s = summarise(rows, {"a": {"image_auroc": 50.0, "pixel_auroc": 60.0, "pro": 10.0}})
    assert s["means"][0]["image_auroc"] == 80.0 and s["means"][1]["pixel_auroc"] == 73.5
    assert s["seed_spread"] == {"a": {"image_auroc": 3.0, "pixel_auroc": 1.0, "pro": 0.5},
                                "b": {"image_auroc": 1.0, "pixel_auroc": 6.0, "pro": 1.0}}
    assert s["raw_pixels_mean"]["pro"] == 10.0
    text = markdown({"rows": rows, "raw_pixels": {}, "summary": s, "lighting": []})
    assert "| a | 1 | 1.0 | 0.5 | 93.0 | 81.0 | 70.5 |" in text
    assert f">= {GOAL['pro']:g}" in text and "| b | 1.0 | 6.0 | 1.0 |" in text


@pytest.mark.slow
def test_the_section_runs_the_inspector_and_reports_what_its_runs_wrote(tmp_path, capsys):
    """One tiny category: the table's figures are the run's summary.json figures, the
    export scored the test images (and a darkened copy), the raw-pixel baseline ran."""
    root = tmp_path / "cats"
    make_category(root / "tiny", n_train=8, n_good=3, n_defect=2, size=64)
    out = tmp_path / "bench"
    flags = "--train_minutes=0.05 --mvtec_image_size=96 --net_width=0.125 --batch_size=4"
    code = main(["--sections=inspect", f"--root={root}", f"--inspect_flags={flags}",
                 "--inspect_lighting=0.5", f"--out={out}"])
    done = capsys.readouterr()
    assert code == 0, done.out[-3000:] + done.err[-3000:]
    result = json.loads((out / "inspect.json").read_text())
    (row,) = result["rows"]
    summary = json.loads((out / "inspect_runs" / "tiny" / "s0" / "stats" /
                          "summary.json").read_text())
    key = summary["export"]["score_key"]
    assert key == row["score_key"] == "map.membank"
    assert row["image_auroc"] == summary[key]
    assert row["pro"] == summary[f"{key}.pro"]
    assert row["train_min"] == round(summary["meta"]["train_seconds"] / 60.0, 2)
    assert summary["meta"]["budget"]["train_minutes"] == 0.05
    assert row["images_per_s"] > 0
    scored = (out / "inspect_runs" / "tiny" / "s0_score" / "scores.csv").read_text()
    assert len(scored.strip().splitlines()) == 1 + 3 + 2 * 2  # header, goods, defects
    (light,) = result["lighting"]
    assert light["factor"] == 0.5 and light["image_auroc_x1"] == row["image_auroc"]
    raw = json.loads((out / "inspect_runs" / "tiny" / "raw_pixels" / "stats" /
                      "summary.json").read_text())
    assert result["raw_pixels"]["tiny"]["image_auroc"] == raw["map.membank"]
    assert "| tiny | 0 |" in (out / "inspect.md").read_text()


def test_a_failed_run_is_an_error_after_the_others_are_written(tmp_path, capsys):
    """A run the entry point refuses for its data (its flags were checked before the first
    run): exit 1 with one error line naming it, the table written with what did run."""
    root = tmp_path / "cats"
    make_category(root / "tiny", n_train=4, n_good=1, n_defect=1, size=32)
    for image in (root / "tiny" / "train" / "good").iterdir():
        image.unlink()  # no training images: known only once the run lists its data
    out = tmp_path / "bench"
    code = main(["--sections=inspect", f"--root={root}", "--inspect_flags=--mvtec_image_size=96",
                 "--noinspect_raw_pixels", f"--out={out}"])
    assert code == 1
    assert [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")] == [
        "error: inspect: these runs failed (their log lines above): tiny s0"]
    assert json.loads((out / "inspect.json").read_text())["failed"] == ["tiny s0"]
