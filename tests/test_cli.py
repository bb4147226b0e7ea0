"""meteor_tf.cli: every console script is a command module's `run`, the old `python -m` names are those modules,
`meteor-tables` runs on a run directory, and bad input is one line and exit status 2 through `_common`."""

import importlib
import sys
import tomllib
from pathlib import Path

import pytest

from meteor_tf.cli import _common

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {"meteor-train": "train", "meteor-tune": "tune", "meteor-export": "export", "meteor-serve": "serve",
            "meteor-predict": "predict", "meteor-evaluate": "evaluate", "meteor-tables": "tables",
            "meteor-dataset": "dataset", "meteor-pretrain": "pretrain"}
SHIMS = {"meteor_tf.main": "train", "meteor_tf.tune": "tune", "meteor_tf.export": "export", "meteor_tf.serve": "serve",
         "meteor_tf.predict": "predict", "meteor_tf.evaluate": "evaluate", "meteor_tf.tables": "tables",
         "meteor_tf.data.cli": "dataset", "meteor_tf.pretrain": "pretrain"}


def test_each_console_script_is_its_command_modules_run():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {name: f"meteor_tf.cli.{command}:run" for name, command in COMMANDS.items()}
    for target in scripts.values():
        module, attr = target.split(":")
        assert callable(getattr(importlib.import_module(module), attr)), target


@pytest.mark.parametrize("old, command", sorted(SHIMS.items()))
def test_the_old_module_names_are_the_command_modules(old, command):
    # `python -m meteor_tf.main` etc. run the same `run` (the subprocess tests use those names); an import gets
    # the command module itself, so its FLAGS and main are the command's
    assert importlib.import_module(old) is importlib.import_module(f"meteor_tf.cli.{command}")


def _run_tables(monkeypatch, *argv):
    from meteor_tf.cli import tables

    monkeypatch.setattr(sys, "argv", ["meteor-tables", *argv])
    try:
        with pytest.raises(SystemExit) as done:
            tables.run()
    finally:
        tables.FLAGS.unparse_flags()
    return done.value.code


def test_meteor_tables_prints_and_writes_a_run_directorys_tables(tmp_path, monkeypatch, capsys):
    from tests.evaluation.test_tables import _finished_run

    runs = tmp_path / "runs"
    runs.mkdir()
    _finished_run(runs, "tiny_run", 0.70, input_rule="resize")
    out = tmp_path / "results.md"
    assert _run_tables(monkeypatch, f"--output_dir={runs}", f"--out={out}") == 0
    printed = capsys.readouterr().out
    assert "| 3 | Fashion-MNIST-18 |" in printed and "`tiny_run`" in printed
    assert out.read_text() in printed


def test_a_bad_flag_is_one_line_naming_it_and_exit_2(monkeypatch, capsys):
    assert _run_tables(monkeypatch, "--output_dirr=runs") == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "output_dirr" in errors[0] and "Traceback" not in err


def test_bad_input_is_one_line_and_exit_status_2(capsys):
    assert _common.bad_input("--data=nowhere: no such folder") == _common.BAD_INPUT == 2
    assert capsys.readouterr().err == "error: --data=nowhere: no such folder\n"
