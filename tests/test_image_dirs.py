"""--dataset=image_dirs: normal / abnormal / mask folders anywhere, as anomalib's Folder."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from data.image_dirs import DirLayout, image_dirs, split_dirs
from data.registry import load_one_class_data
from tests.mvtec_fixture import texture
from util.errors import ConfigError

SIZE = 32


def _save(path, arr, mode=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(arr, mode).save(path)


def make_dirs(root, n_normal=10, n_test_normal=0, masks=True, seed=0):
    """normal/, abnormal/{crack,hole}/ and masks/: crack's masks in masks/crack/<stem>_mask.png,
    hole's flat in masks/<stem>.bmp; returns {name: path} and {abnormal stem: mask array}."""
    rng = np.random.default_rng(seed)
    paths = {k: os.path.join(root, k) for k in ("normal", "normal_test", "crack", "hole",
                                                "masks")}
    for i in range(n_normal):
        _save(os.path.join(paths["normal"], f"n{i:02d}.png"), texture(rng, SIZE))
    for i in range(n_test_normal):
        _save(os.path.join(paths["normal_test"], f"t{i:02d}.png"), texture(rng, SIZE))
    drawn = {}
    for defect, stems, value in (("crack", ("c0", "c1"), 255), ("hole", ("h0",), 1)):
        for j, stem in enumerate(stems):
            img = texture(rng, SIZE)
            mask = np.zeros((SIZE, SIZE), np.uint8)
            mask[4 + 6 * j:12 + 6 * j, 8:20] = value
            img[mask > 0] = 0
            _save(os.path.join(paths[defect], f"{stem}.png"), img)
            drawn[stem] = (mask > 0).astype(np.uint8)
            if masks and defect == "crack":
                _save(os.path.join(paths["masks"], "crack", f"{stem}_mask.png"), mask, "L")
            elif masks:
                _save(os.path.join(paths["masks"], f"{stem}.bmp"), mask * 255, "L")
    return paths, drawn


def test_split_dirs_takes_repeats_and_comma_lists():
    assert split_dirs(None) == () and split_dirs([]) == ()
    assert split_dirs(["a,b", " c "]) == ("a", "b", "c")
    assert split_dirs("a") == ("a",)


def test_labels_defects_masks_and_held_out_good_images(tmp_path):
    paths, drawn = make_dirs(str(tmp_path))
    layout = DirLayout(normal=(paths["normal"],), abnormal=(paths["crack"], paths["hole"]),
                       masks=(paths["masks"],), normal_test_fraction=0.2)
    data = load_one_class_data("image_dirs", "0", input_shape=(SIZE, SIZE, 3), dirs=layout)
    # 20% of the 10 normal images are held out as good test images, the rest train
    assert data.train_images.shape == (8, SIZE, SIZE, 3)
    assert data.test_defects == ["good", "good", "crack", "crack", "hole"]
    assert data.test_labels.tolist() == [0, 0, 1, 1, 1]
    assert data.class_names == ["good", "crack", "hole"] and data.category == "normal"
    held = set(data.test_names[:2])
    assert len(held) == 2 and held <= {f"n{i:02d}" for i in range(10)}
    for i, stem in enumerate(data.test_names):
        expected = drawn[stem] if stem in drawn else np.zeros((SIZE, SIZE), np.uint8)
        np.testing.assert_array_equal(data.test_masks[i], expected, err_msg=stem)
    # the held-out images are not trained on
    normal = np.stack([np.asarray(Image.open(os.path.join(paths["normal"], f"{s}.png")))
                       for s in sorted(held)])
    for x in normal:
        assert not (data.train_images == x).all(axis=(1, 2, 3)).any()


def test_normal_test_dir_is_used_whole_and_nothing_is_held_out(tmp_path):
    paths, _ = make_dirs(str(tmp_path), n_test_normal=3, masks=False)
    layout = DirLayout(normal=(paths["normal"],), abnormal=(paths["hole"],),
                       normal_test=(paths["normal_test"],))
    data = image_dirs(dirs=layout, input_shape=(SIZE, SIZE, 3))
    assert len(data.train_images) == 10 and data.test_masks is None
    assert data.test_names == ["t00", "t01", "t02", "h0"]
    assert data.test_labels.tolist() == [0, 0, 0, 1]
    # normal images only: all of them train, the test set is empty (no AUC)
    data = image_dirs(dirs=DirLayout(normal=(paths["normal"],)), input_shape=(SIZE, SIZE, 3))
    assert len(data.train_images) == 10 and len(data.test_labels) == 0


def test_abnormal_folders_with_one_name_get_two_defect_types(tmp_path):
    paths, _ = make_dirs(str(tmp_path / "a"), masks=False)
    other, _ = make_dirs(str(tmp_path / "b"), masks=False, seed=1)
    layout = DirLayout(normal=(paths["normal"],), abnormal=(paths["hole"], other["hole"]))
    data = image_dirs(dirs=layout, input_shape=(SIZE, SIZE, 3))
    assert data.test_defects[-2:] == ["hole", "hole_2"]


def test_mask_errors_name_the_image(tmp_path):
    paths, _ = make_dirs(str(tmp_path))
    os.remove(os.path.join(paths["masks"], "h0.bmp"))
    layout = DirLayout(normal=(paths["normal"],), abnormal=(paths["hole"],),
                       masks=(paths["masks"],))
    with pytest.raises(ConfigError, match=r"no mask for abnormal image .*h0\.png"):
        image_dirs(dirs=layout, input_shape=(SIZE, SIZE, 3))
    _save(os.path.join(paths["masks"], "h0.png"), np.zeros((SIZE, SIZE), np.uint8), "L")
    _save(os.path.join(paths["masks"], "h0_mask.png"), np.zeros((SIZE, SIZE), np.uint8), "L")
    with pytest.raises(ConfigError, match="matches 2 masks"):
        image_dirs(dirs=layout, input_shape=(SIZE, SIZE, 3))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="--abnormal_dir=.*empty has no"):
        image_dirs(dirs=DirLayout(normal=(paths["normal"],), abnormal=(str(empty),)),
                   input_shape=(SIZE, SIZE, 3))


def _check(args, capsys):
    import train_and_eval_loop

    code = train_and_eval_loop.cli(["train_and_eval_loop.py", *args])
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


def test_bad_folder_flags_give_one_error_line(tmp_path, capsys):
    paths, _ = make_dirs(str(tmp_path))
    run = tmp_path / "run"
    base = ["--dataset=image_dirs", f"--model_dir={run}"]
    cases = [
        (base, "needs --normal_dir"),
        (["--dataset=mvtec_folder", f"--root={tmp_path}", f"--normal_dir={paths['normal']}"],
         "--normal_dir applies to --dataset=image_dirs only"),
        ([*base, f"--normal_dir={tmp_path / 'nope'}"], "is not a directory"),
        ([*base, f"--normal_dir={paths['normal']}", f"--mask_dir={paths['masks']}"],
         "--mask_dir needs --abnormal_dir"),
        ([*base, f"--normal_dir={paths['normal']}", f"--abnormal_dir={paths['crack']}",
          f"--abnormal_dir={paths['normal']}"], "is also given as --normal_dir"),
        ([*base, f"--normal_dir={paths['normal']}", f"--root={tmp_path}"], "--root="),
        ([*base, f"--normal_dir={paths['normal']}", "--normal_test_fraction=1"],
         "--normal_test_fraction=1.0 must be in"),
    ]
    for args, message in cases:
        code, err = _check(args, capsys)
        assert code == 2 and len(err) == 1, (args, err)
        assert err[0].startswith("error: ") and message in err[0], (args, err)
    assert not run.exists()
    code, err = _check([*base, f"--normal_dir={paths['normal']}",
                        f"--abnormal_dir={paths['crack']},{paths['hole']}",
                        f"--mask_dir={paths['masks']}"], capsys)
    assert code == 0, err


@pytest.mark.slow
def test_patch_run_on_folders_reports_image_and_pixel_metrics(tmp_path):
    from tests.entry_point import run_in_process

    paths, _ = make_dirs(str(tmp_path))
    run = tmp_path / "run"
    out = run_in_process([
        "--dataset=image_dirs", f"--normal_dir={paths['normal']}",
        f"--abnormal_dir={paths['crack']}", f"--abnormal_dir={paths['hole']}",
        f"--mask_dir={paths['masks']}", "--model_type=cutpaste", "--mvtec_image_size=32",
        "--patch_size=16", "--patch_stride=4", "--patches_per_image=2", f"--model_dir={run}",
        "--net_type=ResNet10", "--net_width=0.125", "--head_dims=16", "--num_epoch=1",
        "--num_batch=2", "--batch_size=8", "--eval_batch_size=64", "--eval_epoch=0",
        "--detectors=kde", "--max_detector_train=200", "--aug_list=x", "--nomvtec_heatmaps"])
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((run / "stats" / "summary.json").read_text())
    assert summary["meta"]["n_test"] == 5 and summary["meta"]["n_test_outliers"] == 3
    assert isinstance(summary["image_AUROC"], float)
    assert isinstance(summary["pixel_AUROC"], float)
    assert set(summary["metrics"]) == {"pool.kde"}
