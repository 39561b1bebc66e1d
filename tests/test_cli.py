"""Every subcommand has help and is documented in the README; the CLI stays thin and fast."""
import os
import subprocess
import sys

import pytest

from medtfod.cli import build_parser, main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def subcommands():
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    names = []
    for name, sub in action.choices.items():
        nested = [a for a in sub._actions if getattr(a, "choices", None) and a.dest == "source"]
        names += [f"{name} {s}" for s in nested[0].choices] if nested else [name]
    return names


def test_contract_commands_exist():
    assert set(subcommands()) >= {"convert nih", "config", "train", "eval", "export", "detect", "demo", "doctor"}


@pytest.mark.parametrize("command", subcommands())
def test_help_and_readme(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(command.split() + ["--help"])
    assert exit_info.value.code == 0
    assert "usage: medtfod " + command in capsys.readouterr().out
    readme = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    assert f"medtfod {command}" in readme


def test_help_does_not_import_tensorflow():
    code = "import sys; from medtfod.cli import build_parser; build_parser(); print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "False"


def test_user_error_has_no_traceback(tmp_path, capsys):
    assert main(["convert", "nih", "--bbox-csv", str(tmp_path / "missing.csv"), "--images", str(tmp_path),
                 "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("medtfod: error: file not found") and "Traceback" not in err


def test_readme_test_command_is_ci():
    ci = open(os.path.join(REPO, ".ci", "run"), encoding="utf-8").read()
    readme = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    command = "python3 scripts/bootstrap.py test"
    assert command in readme and ci.strip().splitlines()[-1] == command


def test_tensorboard_missing_folder(tmp_path, capsys):
    assert main(["tensorboard", "--model-dir", str(tmp_path / "nope")]) == 1
    assert "model folder not found" in capsys.readouterr().err
