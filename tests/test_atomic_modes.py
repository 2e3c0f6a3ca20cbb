"""Files written atomically (summary.json, hparams.json, scores.npz, plots) get the mode
every other file gets: 0666 minus the process umask, not tempfile's 0600."""

import os
import stat

import numpy as np
import pytest


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_atomic_files_honour_the_umask(tmp_path, umask, mode):
    from util.atomic import atomic_path, write_json_atomic

    old = os.umask(umask)
    try:
        write_json_atomic(tmp_path / "summary.json", {"a": 1})
        with atomic_path(tmp_path / "scores.npz") as tmp:
            np.savez(tmp, x=np.zeros(2))
        write_json_atomic(tmp_path / "summary.json", {"a": 2})  # a replacement too
    finally:
        os.umask(old)
    for name in ("summary.json", "scores.npz"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.npz", "summary.json"]


