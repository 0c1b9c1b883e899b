import subprocess
import sys

import pytest

GROUPS = ["data", "synth", "train", "eval", "run", "report", "models"]


def cli(*args):
    return subprocess.run([sys.executable, "-m", "simplesafe.cli", *args], capture_output=True, text=True)


def test_help_lists_every_group():
    res = cli("--help")
    assert res.returncode == 0
    for g in GROUPS:
        assert f" {g} " in res.stdout


@pytest.mark.parametrize("group", [g for g in GROUPS if g != "run"])
def test_group_help(group):
    res = cli(group, "--help")
    assert res.returncode == 0 and "Usage" in res.stdout


def test_bad_override_exit_2_without_traceback(tmp_path):
    res = cli("models", "build-tiny", "hidden_size=big")
    assert res.returncode == 2
    assert "hidden_size" in res.stderr and "Traceback" not in res.stderr


def test_unknown_key_lists_allowed(tmp_path):
    res = cli("models", "build-tiny", "hiden_size=8")
    assert res.returncode == 2 and "unknown key 'hiden_size'" in res.stderr and "hidden_size" in res.stderr


def test_debug_shows_traceback():
    res = cli("--debug", "models", "build-tiny", "hidden_size=big")
    assert res.returncode == 2 and "Traceback" in res.stderr


def test_missing_option_is_usage_error_exit_2():
    res = cli("merge", "--base", "x")
    assert res.returncode == 2 and "Missing option" in res.stderr and "Traceback" not in res.stderr


def test_unknown_command_exit_2():
    res = cli("no-such-command")
    assert res.returncode == 2 and "No such command" in res.stderr
