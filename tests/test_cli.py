"""The real `tune-norm` CLI: every command has help with an example; user errors are one line and exit 2."""

import json
import subprocess
import sys

import pytest
import typer.main
from typer.testing import CliRunner

from conftest import ROOT, run_cli
from tune_norm.cli import app

COMMANDS = sorted(typer.main.get_command(app).commands)


def test_the_commands_exist():
    assert {"train", "search"} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_and_an_example(command):
    result = CliRunner().invoke(app, [command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "Example: tune-norm " + command in result.output


def test_console_script_help():
    res = run_cli("--help")
    assert res.returncode == 0 and all(c in res.stdout for c in COMMANDS)


@pytest.mark.parametrize("args, message", [
    (["--norm", "group", "--groups", "3"], "groups=3 does not divide 16 channels"),
    (["--lr", "-1"], "lr must be greater than 0"),
    (["--batch-size", "0"], "batch_size must be between 1"),
    (["--l1", "-0.1"], "l1 must not be negative"),
    (["--data", "/nonexistent/mnist"], "data directory /nonexistent/mnist does not exist"),
    (["--device", "cuda"], "torch sees no CUDA GPU"),
])
def test_train_errors_are_one_line_and_exit_2(tmp_path, args, message):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["train", "--subset", "500", "--epochs", "1", "--out", str(out), *args])
    if "cuda" in args and result.exit_code == 0:
        pytest.skip("this machine has a CUDA GPU")
    assert result.exit_code == 2, result.output
    assert message in result.output and result.output.count("\n") == 1


def test_unknown_norm_choice_lists_the_registry():
    result = CliRunner().invoke(app, ["train", "--norm", "bogus"])
    assert result.exit_code == 2
    assert all(k in result.output for k in ("batch", "layer", "group", "instance", "none"))


@pytest.mark.slow
def test_train_from_yaml_with_option_override(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("norm: layer\nepochs: 1\nsubset: 2000\nval_size: 1000\nlr: 0.05\n")
    res = run_cli("train", "--config", cfg, "--norm", "group", "--out", tmp_path / "run")
    assert res.returncode == 0, res.stderr
    assert "test_acc" in res.stdout and "finished" in res.stdout
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["norm"] == "group" and saved["epochs"] == 1
    rows = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert rows[0]["epoch"] == 1 and 0 <= rows[0]["test_acc"] <= 100
    bad = tmp_path / "bad.yaml"
    bad.write_text("norm: layer\nwobble: 3\n")
    res = run_cli("train", "--config", bad, "--out", tmp_path / "never")
    assert res.returncode == 2 and "unknown config key 'wobble'" in res.stderr
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("args", [["search", "nope.yaml"], ["train", "--norm", "instance"], ["--help"],
                                  ["search", "search_spaces/full.yaml", "--metric", "test_acc"]])
def test_bad_input_and_help_are_answered_without_importing_torch_or_ray(args):
    """torch alone took 1.3 s to import before any refusal; the checks need neither it nor Ray."""
    code = ("import sys\nfrom tune_norm import cli\nsys.argv = ['tune-norm', *sys.argv[1:]]\n"
            "try:\n    cli.main()\nexcept SystemExit as e:\n    code = e.code\n"
            "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'ray', 'torchvision'})\n"
            "print('heavy:', heavy, 'exit:', code)")
    res = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.stdout.strip().splitlines()[-1] == f"heavy: [] exit: {0 if args == ['--help'] else 2}", (
        res.stdout[-2000:], res.stderr[-2000:])
