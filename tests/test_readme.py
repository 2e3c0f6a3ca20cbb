"""The README's commands still run as written: every script or module a fenced bash
command names exists, and every flag it passes is one that command defines (the entry
point's engine/flags.py FLAG_SPECS, or the script's own argparse parser)."""

import argparse
import importlib
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# shell scripts whose flags are another program's: reproduce_all.sh hands them to
# script/reproduce.py, the release's run scripts to the entry point
SHELL_FLAGS_OF = {"script/reproduce_all.sh": "script.reproduce"}
ENTRY_POINT = "train_and_eval_loop.py"


def bash_commands(markdown):
    """Every command of the ```bash blocks: continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", markdown, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            while words and re.match(r"^[A-Z_]+=", words[0]):  # VAR=value before a command
                words = words[1:]
            if words:
                commands.append(words)
    return commands


def entry_point_flags():
    from engine.flags import FLAG_SPECS

    names = {name for name, *_ in FLAG_SPECS} | {"help", "helpfull", "flagfile"}
    return names | {f"no{name}" for name, kind, *_ in FLAG_SPECS if kind == "bool"}


class _Parsed(Exception):
    def __init__(self, parser):
        super().__init__()
        self.parser = parser


def script_flags(module_name, monkeypatch):
    """The long options of the parser the script's main builds (caught at parse_args)."""
    def caught(self, args=None, namespace=None):
        raise _Parsed(self)

    with monkeypatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", caught)
        try:
            importlib.import_module(module_name).main([])
        except _Parsed as parsed:
            return {opt[2:] for opt in parsed.parser._option_string_actions
                    if opt.startswith("--")}
    raise AssertionError(f"{module_name}.main never parsed its arguments")


def problems(commands, monkeypatch):
    """What is wrong with ``commands``: missing files or modules, unknown flags."""
    found = []
    known = {}
    for words in commands:
        if words[0] == "bash":
            words = words[1:]
        program, args = words[0], words[1:]
        if program == "pip":
            found += [f"{a} is missing" for a in args if a.endswith(".txt")
                      and not (ROOT / a).is_file()]
            continue
        if program == "python":
            if args[:2] == ["-m", "pytest"]:
                found += [f"{a} is missing" for a in args[2:3] if not (ROOT / a).exists()]
                continue
            if args[0] == "-m":
                path, args = args[1].replace(".", "/"), args[2:]
                script = path + ".py" if (ROOT / f"{path}.py").is_file() else path
            else:
                script, args = args[0], args[1:]
        else:
            script = program
        if not (ROOT / script).exists():
            found.append(f"{script} is missing")
            continue
        if script == ENTRY_POINT or script.startswith("script/run_"):
            module = ENTRY_POINT
        else:
            module = SHELL_FLAGS_OF.get(script, script.removesuffix(".py").replace("/", "."))
        if module not in known:
            known[module] = (entry_point_flags() if module == ENTRY_POINT
                             else script_flags(module, monkeypatch))
        for arg in args:
            name = arg[2:].split("=")[0]
            if arg.startswith("--") and name not in known[module]:
                found.append(f"{script} has no --{name}")
    return found


def test_every_readme_command_names_existing_scripts_and_flags(monkeypatch):
    commands = bash_commands(README.read_text(encoding="utf-8"))
    programs = {words[0] for words in commands}
    assert {"pip", "python"} <= programs and len(commands) >= 10, commands
    assert problems(commands, monkeypatch) == []


def test_the_check_finds_a_missing_script_and_unknown_flags(monkeypatch):
    text = ("```bash\npython train_and_eval_loop.py --dataset=folder --no_such_flag=1 \\\n"
            "    --noexport   # a comment --not_a_flag\n"
            "python script/export.py RUN --export_detector=gde --out_dir=x\n"
            "python script/gone.py --x\nMVTEC_ROOT=D script/run_mvtec.sh cutpaste all\n```\n")
    assert problems(bash_commands(text), monkeypatch) == [
        "train_and_eval_loop.py has no --no_such_flag", "script/export.py has no --out_dir",
        "script/gone.py is missing"]


@pytest.mark.parametrize("limit", [250])
def test_the_readme_is_a_landing_page(limit):
    """What the project is and the few commands fit on a landing page; measurements and
    details live in docs/."""
    assert len(README.read_text(encoding="utf-8").splitlines()) <= limit


def test_docs_flags_lists_every_flag_of_the_entry_point():
    """docs/flags.md (python -m engine.flags > docs/flags.md) has one row per flag."""
    from engine.flags import FLAG_SPECS

    rows = re.findall(r"^\| `--(\w+)` \|", (ROOT / "docs" / "flags.md").read_text(), flags=re.M)
    assert rows == [name for name, *_ in FLAG_SPECS]
