"""util/plots.py: the score histogram has one panel per score key, and no empty slot."""

import struct

import numpy as np
import pytest

from util import plots


def png_size(path):
    """(width, height) in pixels from the PNG's IHDR chunk."""
    return struct.unpack(">II", path.read_bytes()[16:24])


@pytest.mark.parametrize("keys, size", [
    (["pool.gde", "pool.kde"], (640, 260)),  # two detectors: one row of two, not of four
    (["kde"], (320, 260)),
    ([f"pool.d{i}" for i in range(5)], (1280, 520)),  # 4 + 1, the three spare slots removed
])
def test_score_hist_draws_one_panel_per_score_key(tmp_path, monkeypatch, keys, size):
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(30), np.ones(10)]
    scores = {k: rng.normal(size=40) + labels for k in keys}
    panels = []
    save = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path: (panels.append(
        [ax.get_title() for ax in fig.axes]), save(fig, path)))
    path = tmp_path / "score_hist.png"
    plots.plot_histograms(path, labels, scores, {k: 0.5 for k in keys})
    assert panels == [sorted(keys)]
    assert png_size(path) == size
