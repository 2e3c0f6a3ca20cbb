"""How --aug_list / --aug_list_for_test / --clip_pixels resolve per model type and distaug type."""

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from data.aug_spec import DEFAULT_AUG, ROTATION_SUFFIX
from engine.config import resolve_config
from engine.flags import FLAG_DEFAULTS

ROOT = Path(__file__).resolve().parents[1]


def test_parity_flags_and_defaults_per_model_type():
    assert FLAG_DEFAULTS["clip_pixels"] is False
    assert FLAG_DEFAULTS["aug_list"] is None and FLAG_DEFAULTS["aug_list_for_test"] is None
    rot = resolve_config(dict(model_type="rotation"))
    assert rot["aug_list"] == DEFAULT_AUG + ",+rotate90,+rotate180,+rotate270"
    assert rot["aug_list_for_test"] == "x,+rotate90,+rotate180,+rotate270"
    for model_type in ("contrastive", "contrastive_da"):
        cfg = resolve_config(dict(model_type=model_type))
        assert cfg["aug_list"] == DEFAULT_AUG and cfg["aug_list_for_test"] == "x"


def test_rotation_with_one_view_gets_the_rotation_views_and_one_log_line(caplog):
    with caplog.at_level(logging.WARNING):
        cfg = resolve_config(dict(model_type="rotation", aug_list="cnr+hflip"), {"aug_list"})
    assert cfg["aug_list"] == "cnr+hflip" + ROTATION_SUFFIX
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "appending" in lines[0] and "\n" not in lines[0]
    # a multi-view list is the user's transformation task: kept as given
    cfg = resolve_config(dict(model_type="rotation", aug_list="x,+hflip",
                              aug_list_for_test="x,+hflip"), {"aug_list"})
    assert cfg["aug_list"] == "x,+hflip"


@pytest.mark.parametrize("distaug, dropped", [
    ("rot", False), ("none", False), ("vflip", False), ("1", False),
    ("hflip", True), ("2", True), ("4", True), ("6", True), ("8", True)])
def test_distaug_with_hflip_drops_hflip_from_the_default(distaug, dropped, caplog):
    with caplog.at_level(logging.WARNING):
        cfg = resolve_config(dict(model_type="contrastive_da", distaug_type=distaug))
    assert ("hflip" not in cfg["aug_list"]) == dropped
    assert not caplog.records


def test_given_aug_list_with_hflip_and_flipping_distaug_warns_once(caplog):
    spec = "cnr0.5+hflip,+"
    with caplog.at_level(logging.WARNING):
        cfg = resolve_config(dict(model_type="contrastive_da", distaug_type="hflip",
                                  aug_list=spec), {"aug_list"})
    assert cfg["aug_list"] == spec  # the user's choice is kept ...
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "hflip" in lines[0] and "\n" not in lines[0]  # ... with a warning


def test_view_counts_are_checked_when_flags_resolve():
    from util.errors import ConfigError

    with pytest.raises(ConfigError, match="aug_list_for_test"):
        resolve_config(dict(model_type="rotation", aug_list="x,+hflip,+vflip"), {"aug_list"})
    resolve_config(dict(model_type="rotation", aug_list="x,+hflip,+vflip",
                        aug_list_for_test="x,+hflip,+vflip"))
    with pytest.raises(ConfigError, match="3 views"):
        resolve_config(dict(model_type="contrastive", aug_list="x,x,x"))


def test_config_and_grammar_import_without_tensorflow():
    code = ("import sys; import engine.config, data.aug_spec; "
            "data.aug_spec.parse_aug_list(data.aug_spec.DEFAULT_AUG); "
            "print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"


def test_run_scripts_drop_hflip_for_flipping_distaug(tmp_path):
    """script/run_contrastive_da.sh passes the release's aug_list, without hflip for DISTAUG=4."""
    fake = tmp_path / "python"
    fake.write_text("#!/usr/bin/env bash\nprintf '%s\\n' \"$@\"\n")
    fake.chmod(0o755)
    args = {}
    for distaug in ("rot", "4"):
        out = subprocess.run(["bash", str(ROOT / "script" / "run_contrastive_da.sh"), "cifar10ood",
                              "0", "0"], capture_output=True, text=True,
                             env={"PATH": "/usr/bin:/bin", "PYTHON": str(fake),
                                  "DISTAUG": distaug})
        assert out.returncode == 0, out.stderr
        args[distaug] = [a for a in out.stdout.splitlines() if a.startswith("--aug_list=")]
    assert args["rot"] == ["--aug_list=" + DEFAULT_AUG + ",+"]
    assert args["4"] == ["--aug_list=" + DEFAULT_AUG.replace("+hflip", "") + ",+"]
    out = subprocess.run(["bash", str(ROOT / "script" / "run_rotation.sh")], capture_output=True,
                         text=True, env={"PATH": "/usr/bin:/bin", "PYTHON": str(fake)})
    assert "--aug_list=" + DEFAULT_AUG + ROTATION_SUFFIX in out.stdout.splitlines()
