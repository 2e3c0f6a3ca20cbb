"""script/ensemble.py on generated stats/scores.npz files (the shared per-image format)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LABELS = np.array([0, 0, 1, 1], np.int64)


def write_run(path, test, calib, ids=("0", "1", "2", "3"), labels=LABELS, key="pool.kde"):
    stats = Path(path) / "stats"
    stats.mkdir(parents=True)
    np.savez(stats / "scores.npz", label=labels, id=np.array(ids),
             **{f"test/{key}": np.asarray(test, np.float64),
                f"calib/{key}": np.asarray(calib, np.float64)})
    return str(path)


def run(*args):
    return subprocess.run([sys.executable, str(ROOT / "script" / "ensemble.py"), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_standardised_average_hand_case(tmp_path):
    # run a: calib mean 0, std 1 -> z = [-1, 0, 1, 2] (AUC 100)
    a = write_run(tmp_path / "a", [-1, 0, 1, 2], [-1, 1])
    # run b: calib mean 0, std 1000 -> z = [0, 1, -1, 0.5] (AUC 25). The raw average
    # would follow b (AUC 25); the standardised one is [-0.5, 0.5, 0, 1.25] -> AUC 75.
    b = write_run(tmp_path / "b", [0, 1000, -1000, 500], [-1000, 1000])
    out_dir = tmp_path / "ens"
    out = run(a, b, "--out", str(out_dir))
    assert out.returncode == 0, out.stderr
    assert "| pool.kde | 75.00 | 62.50 | 100.00 | 100.00, 25.00 |" in out.stdout
    result = json.loads((out_dir / "ensemble.json").read_text())["results"][0]
    assert result["ensemble"] == 75.0 and result["members"] == [100.0, 25.0]
    assert (out_dir / "ensemble.csv").read_text().splitlines()[1].startswith("pool.kde,75.0000")


def test_run_without_scores_is_an_error(tmp_path):
    a = write_run(tmp_path / "a", [0, 1, 2, 3], [0, 1])
    (tmp_path / "b").mkdir()
    out = run(a, str(tmp_path / "b"), "--out", str(tmp_path / "ens"))
    assert out.returncode == 2
    assert out.stderr.strip().startswith("error: ") and "has no stats/scores.npz" in out.stderr
    assert not (tmp_path / "ens").exists()


def test_different_test_sets_are_an_error(tmp_path):
    a = write_run(tmp_path / "a", [0, 1, 2, 3], [0, 1])
    b = write_run(tmp_path / "b", [0, 1, 2, 3], [0, 1], ids=("0", "1", "2", "9"))
    out = run(a, b)
    assert out.returncode == 2 and "different test sets" in out.stderr


def test_no_shared_key_is_an_error(tmp_path):
    a = write_run(tmp_path / "a", [0, 1, 2, 3], [0, 1], key="pool.kde")
    b = write_run(tmp_path / "b", [0, 1, 2, 3], [0, 1], key="embed.gde")
    out = run(a, b)
    assert out.returncode == 2 and "share no score key" in out.stderr
