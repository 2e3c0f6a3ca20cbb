"""The commands of pyproject.toml's [project.scripts] resolve to the functions the scripts
run, callable without arguments as an installed console script calls them."""

import importlib
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]


def console_scripts():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def target(spec):
    module, _, attr = spec.partition(":")
    return importlib.import_module(module), attr


def test_the_main_commands_are_declared():
    assert {"droc-train", "droc-score", "droc-export", "droc-explain", "droc-summarize",
            "droc-benchmark"} <= set(console_scripts())


@pytest.mark.parametrize("name", sorted(console_scripts()))
def test_each_command_is_its_scripts_main_and_reads_sys_argv(name, monkeypatch, capsys):
    """The target is the function the script's own ``__main__`` block runs, and called with
    no arguments it parses sys.argv: an unknown flag (or the positional argument it lacks)
    ends in one error line and status 2."""
    module, attr = target(console_scripts()[name])
    func = getattr(module, attr)
    assert callable(func)
    source = Path(module.__file__).read_text(encoding="utf-8")
    main_block = source.split('if __name__ == "__main__":')[-1]
    if Path(module.__file__).parent.name == "bench":  # python script/benchmark.py runs it
        main_block = (ROOT / "script" / "benchmark.py").read_text(encoding="utf-8")
    assert f"{attr}()" in main_block
    monkeypatch.setattr(sys, "argv", [name, "--no_such_flag_anywhere"])
    try:
        code = func()
    except SystemExit as stop:  # absl's app.run exits
        code = stop.code
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert "no_such_flag_anywhere" in err[0] or "arguments are required" in err[0], err
