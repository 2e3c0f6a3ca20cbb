"""The deploy tools on a real tiny run: export.py never replaces what is not an export,
score.py answers a damaged export with one line and survives hostile image folders."""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.test_cli_errors import assert_one_error_line, snapshot

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="0", PYTHONUNBUFFERED="1")


def script(name, *args, cwd):
    return subprocess.run([sys.executable, str(ROOT / "script" / name), *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, env=ENV, timeout=900)


@pytest.mark.slow
def test_export_out_replaces_only_a_previous_export(tiny_run, tmp_path):
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"not really")
    (tmp_path / "notes.txt").write_text("mine\n")
    for out in (tiny_run, foreign, tiny_run / "stats", tmp_path / "notes.txt"):
        before = snapshot(tiny_run.parent), snapshot(tmp_path)
        proc = script("export.py", tiny_run, f"--out={out}", cwd=tmp_path)
        assert_one_error_line(proc.returncode, proc.stderr, "--out=")
        assert (snapshot(tiny_run.parent), snapshot(tmp_path)) == before
    previous = tmp_path / "previous"
    shutil.copytree(tiny_run / "export", previous)
    (previous / "assets" / "droc_export.json").write_text(json.dumps(
        dict(json.loads((previous / "assets" / "droc_export.json").read_text()), version=0)))
    proc = script("export.py", tiny_run, "--export_detector=kde", f"--out={previous}",
                  cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((previous / "assets" / "droc_export.json").read_text())
    assert meta["version"] == 1 and meta["score_key"] == "pool.kde"


def damaged_copy(export, dest, how):
    shutil.copytree(export, dest)
    if how == "truncated shard":
        shard = next((dest / "variables").glob("variables.data-*"))
        shard.write_bytes(shard.read_bytes()[:100])
    elif how == "truncated index":
        index = dest / "variables" / "variables.index"
        index.write_bytes(index.read_bytes()[:50])
    elif how == "garbage saved_model.pb":
        (dest / "saved_model.pb").write_bytes(b"garbage" * 10)
    return dest


@pytest.mark.slow
@pytest.mark.parametrize("how", ["truncated shard", "truncated index", "garbage saved_model.pb"])
def test_damaged_export_is_one_error_line_naming_it(tiny_run, tmp_path, how):
    from PIL import Image

    export = damaged_copy(tiny_run / "export", tmp_path / "export", how)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "x.png")
    before = snapshot(tmp_path)
    proc = script("score.py", f"--export_dir={export}", tmp_path / "x.png", cwd=tmp_path)
    assert_one_error_line(proc.returncode, proc.stderr, f"export {export} is damaged")
    assert snapshot(tmp_path) == before


@pytest.mark.slow
def test_score_skips_bombs_and_loops_and_escapes_undecodable_names(tiny_run, tmp_path):
    """Images above the size limit are skipped from their headers, whichever decoder
    would read them (Pillow, TensorFlow's 16-bit PNG, tifffile), and counted."""
    from PIL import Image

    from tests.image_headers import bmp_header, png_header, tiff_header

    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(folder / "good.png")
    odd = Path(os.fsdecode(bytes(folder) + b"/caf\xe9.png"))  # Latin-1 name, invalid UTF-8
    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(odd)
    png_header(folder / "bomb.png", 20_000, 20_000)
    png_header(folder / "bomb16.png", 14_000, 14_000, bits=16)
    tiff_header(folder / "bomb.tif", 14_000, 14_000)
    bmp_header(folder / "big.bmp", 12_000, 12_000)  # between one and two of PIL's limits
    os.symlink("loop.png", folder / "loop.png")
    out_csv = tmp_path / "scores.csv"
    proc = script("score.py", f"--export_dir={tiny_run / 'export'}", folder, f"--out={out_csv}",
                  cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    warned = [line for line in proc.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warned) == 5 and sum("above the limit of 89478485" in w for w in warned) == 4
    assert "skipped 5" in proc.stdout and "scored 2" in proc.stdout
    rows = list(csv.DictReader(out_csv.open(encoding="utf-8")))
    assert sorted(Path(r["path"]).name for r in rows) == ["caf\\xe9.png", "good.png"]
