"""lm-evaluation-harness is an optional extra: without it the command says so and exits 2."""

import importlib.util
import subprocess
import sys

import pytest

from simplesafe.errors import ConfigError
from simplesafe.eval.harness import HarnessConfig, HarnessUnavailable, run_harness


@pytest.mark.skipif(importlib.util.find_spec("lm_eval") is not None, reason="lm_eval is installed here")
def test_missing_harness_is_a_clear_error(tmp_path):
    with pytest.raises(HarnessUnavailable, match=r"simplesafe\[harness\]"):
        run_harness(HarnessConfig(model="x", out=str(tmp_path / "h.json")))
    res = subprocess.run([sys.executable, "-m", "simplesafe.cli", "eval", "harness", "model=x", f"out={tmp_path}/h.json"],
                         capture_output=True, text=True)
    assert res.returncode == 2
    assert "lm-evaluation-harness is not installed" in res.stderr
    assert "Traceback" not in res.stderr


def test_unknown_task(tmp_path):
    with pytest.raises(ConfigError, match="unknown harness task"):
        run_harness(HarnessConfig(model="x", out=str(tmp_path / "h.json"), tasks=["gsm8k"]))
