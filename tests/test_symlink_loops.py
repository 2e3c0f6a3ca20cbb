"""Symlink loops inside image folders (score.py's walk, the folder and MVTec listings)
are skipped with a warning, never an OSError traceback."""

import os
from pathlib import Path

import numpy as np


def make_loops(folder):
    os.symlink("self.png", folder / "self.png")           # a link to itself
    os.symlink("b.png", folder / "a.png")                 # two links to each other
    os.symlink("a.png", folder / "b.png")
    os.symlink(".", folder / "again")                     # a directory link to itself


def test_symlink_loops_in_image_folders_are_skipped_with_a_warning(tmp_path, capsys):
    from PIL import Image

    from data.folder import list_images, scan_folder
    from data.mvtec import scan_category

    good = tmp_path / "parts" / "bottle" / "train" / "good"
    good.mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(good / "ok.png")
    for kind in ("good", "crack"):
        (good.parent.parent / "test" / kind).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(good.parent.parent / "test" / kind /
                                                             "t.png")
    make_loops(good)
    os.symlink("loop", good.parent / "loop")              # a class folder that loops
    assert [Path(p).name for p, _, _ in list_images(str(good))] == ["ok.png"]
    assert [Path(p).name for p in scan_category(str(good.parent.parent))[0]] == ["ok.png"]
    classes = scan_folder(str(good.parent.parent))[1]
    assert "loop" not in classes and "good" in classes
    warned = capsys.readouterr().err.splitlines()
    for name in ("self.png", "a.png", "b.png", "loop"):  # once each, though listed twice
        assert len([w for w in warned if w.startswith("warning: skipping")
                    and w.endswith(f"/{name}: symlink loop")]) == 1, warned


def test_score_walk_skips_loops_and_lists_every_image_once(tmp_path):
    from script.score import collect_files

    (tmp_path / "sub").mkdir()
    for name in ("x.png", "sub/y.jpg", "sub/z.txt"):
        (tmp_path / name).write_bytes(b"0")
    make_loops(tmp_path / "sub")
    os.symlink("..", tmp_path / "sub" / "up")             # a link to the directory above
    os.symlink("gone.png", tmp_path / "sub" / "moved.png")  # a link whose target is gone
    os.symlink("gone.txt", tmp_path / "sub" / "moved.txt")  # not an image's name: not read
    warnings = []
    files = collect_files([str(tmp_path)], warnings.append)
    assert [p.relative_to(tmp_path).as_posix() for p in files] == ["sub/y.jpg", "x.png"]
    assert sorted(w.split("/")[-1] for w in warnings) == sorted(
        ["self.png: symlink loop", "a.png: symlink loop", "b.png: symlink loop",
         "again: symlink loop", "up: symlink loop",
         "moved.png: broken symlink (its target gone.png does not exist)"])
