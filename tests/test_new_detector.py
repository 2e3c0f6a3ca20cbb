"""Adding a detector is one file plus one registry line: the example detector of
tests/example_detector.py, registered here and nowhere else, fits, calibrates, reports in
summary.json, exports and scores new images through script/score.py."""

import csv
import json

import numpy as np
import pytest

from detect.detectors import DETECTORS, parse_detectors
from tests.entry_point import TINY_RUN, run_in_process
from tests.example_detector import MeanKNearest


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(DETECTORS, MeanKNearest.name, MeanKNearest)  # the one registry line
    return MeanKNearest


def test_the_example_scores_as_its_graph(registered):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    train = rng.standard_normal((40, 6)).astype(np.float32)
    test = rng.standard_normal((9, 6)).astype(np.float32)
    det = registered().fit(train)
    normal = train / np.linalg.norm(train, axis=1, keepdims=True)
    probe = test / np.linalg.norm(test, axis=1, keepdims=True)
    dist = np.linalg.norm(probe[:, None] - normal[None], axis=-1)
    np.testing.assert_allclose(det.score(test), np.sort(dist, axis=1)[:, :3].mean(1),
                               rtol=1e-5, atol=1e-5)
    graph = registered.graph_score({k: tf.constant(v) for k, v in det.export_params().items()},
                                   tf.constant(test)).numpy()
    np.testing.assert_allclose(graph, det.score(test), rtol=1e-4, atol=1e-5)
    assert parse_detectors("kde,knn3") == (DETECTORS["kde"], registered)


@pytest.mark.slow
def test_a_registered_detector_runs_end_to_end(registered, tmp_path):
    from PIL import Image

    from data.registry import load_one_class_data
    from detect.scores_file import read_scores
    from script import score

    run = tmp_path / "run"
    out = run_in_process([f"--model_dir={run}", *TINY_RUN, "--detectors=kde,knn3",
                          "--export_detector=knn3"])
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((run / "stats" / "summary.json").read_text())
    for key in ("pool.knn3", "embed.knn3"):
        assert summary[key] == summary["metrics"][key]["image_AUROC"]
        assert summary["calibration"][key]["threshold"] > 0  # distances of held-out images
    assert summary["export"] == {"dir": str(run / "export"), "score_key": "pool.knn3",
                                 "detector": "knn3", "kind": "image"}
    meta = json.loads((run / "export" / "assets" / "droc_export.json").read_text())
    assert meta["detector"] == "knn3" and meta["score_key"] == "pool.knn3"

    # score.py reads only the export: its raw scores are the pipeline's scores.npz
    data = load_one_class_data("digitsood", "3", input_shape=(32, 32, 3), seed=0)
    folder = tmp_path / "parts"
    folder.mkdir()
    for i in range(6):
        Image.fromarray(data.test_images[i]).save(folder / f"{i:02d}.png")
    assert score.main([f"--export_dir={run / 'export'}", str(folder),
                       f"--out={tmp_path / 'scores.csv'}"]) == 0
    rows = list(csv.DictReader((tmp_path / "scores.csv").open()))
    got = np.array([float(r["raw_score"]) for r in sorted(rows, key=lambda r: r["path"])])
    want = read_scores(run / "stats" / "scores.npz")["test"]["pool.knn3"][:6]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
