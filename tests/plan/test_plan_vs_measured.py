"""The plan against the bytes tensors actually hold: SFT, reward model, DPO and PPO on SmolLM2-135M on the CPU.

Each case is ``bench/memory_plan.py``'s: two optimiser steps of the real trainer in a fresh process under
:class:`simplesafe.plan.measure.TensorMemoryTracker`; the plan is computed for the same config. Target: within
25% either way (the issue's bar for the estimate).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("memory_plan", REPO / "bench" / "memory_plan.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.parametrize("case", ["sft-lora", "rm-lora", "dpo-lora", "ppo-shared"])
def test_plan_is_within_25_percent_of_the_measured_peak(case, smollm2_dir):
    row = _bench().measure([case])[0]
    assert 0.75 <= row["ratio"] <= 1.25, row
