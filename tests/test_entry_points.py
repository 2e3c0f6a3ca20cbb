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
            "droc-benchmark", "droc-serve"} <= set(console_scripts())


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


@pytest.mark.parametrize("name", sorted(console_scripts()))
@pytest.mark.parametrize("arg", ["--help", "-h"])
def test_help_exits_0_and_lists_the_flags(name, arg, monkeypatch, capsys):
    """Every command's ``--help`` (as its console script runs it) prints the flags on
    stdout, nothing on stderr, and exits 0."""
    module, attr = target(console_scripts()[name])
    monkeypatch.setattr(sys, "argv", [name, arg])
    try:
        code = getattr(module, attr)()
    except SystemExit as stop:
        code = stop.code
    out, err = capsys.readouterr()
    assert code in (0, None) and err == "", (code, err)
    flags = [line for line in out.splitlines() if line.lstrip().startswith("--")]
    assert len(flags) >= (40 if name == "droc-train" else 1), out
    if name == "droc-train":
        assert "--model_dir" in out and "--train_minutes" in out


def test_help_of_the_training_script_as_a_process():
    """``python train_and_eval_loop.py --help``: exit 0, the flags listed."""
    import subprocess

    proc = subprocess.run([sys.executable, str(ROOT / "train_and_eval_loop.py"), "--help"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "--model_dir" in proc.stdout and "--preset" in proc.stdout
