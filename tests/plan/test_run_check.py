"""``simplesafe run`` plans memory first and stops (exit 2) before any stage when one cannot fit."""

from __future__ import annotations

import subprocess
import sys

import yaml


def _recipe(tmp_path, base) -> str:
    recipe = {"name": "micro", "base_model": str(base), "stages": ["sft", "dpo"],
              "sft": {"batch_size": 8, "max_length": 128}, "dpo": {"method": "lora", "batch_size": 4, "max_length": 128}}
    p = tmp_path / "micro.yaml"
    p.write_text(yaml.safe_dump(recipe))
    return str(p)


def test_run_stops_before_the_first_stage_when_a_stage_cannot_fit(tiny_model_dir, tmp_path):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "simplesafe.cli", "run", _recipe(tmp_path, tiny_model_dir), "--run-dir", str(run_dir)]
    res = subprocess.run(cmd + ["--device-memory", "4MiB"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "memory plan: 2 stage(s) cannot fit the 4 MiB of --device-memory" in res.stderr
    assert "sft: needs" in res.stderr and "largest item" in res.stderr and "gradient_checkpointing" in res.stderr
    assert not run_dir.exists()  # nothing ran


def test_plan_of_a_recipe_on_the_cpu_names_each_phase(tiny_model_dir, tmp_path):
    from simplesafe.plan import format_table, plan_recipe

    plans = plan_recipe(_recipe(tmp_path, tiny_model_dir), device="cpu", dtype="bf16")
    assert [p.stage for p in plans] == ["sft", "dpo"]
    text = format_table(plans, 1e12, detail=True)
    assert "training step" in text and "optimizer step" in text and "LoRA adapters" in text and "yes" in text


def test_models_are_released_between_stages():
    from simplesafe.data import scoring
    from simplesafe.models import load
    from simplesafe.recipe.runner import release_stage_models

    load._ENCODERS[("x", "cpu")] = object()
    scoring._SCORERS["x"] = object()
    release_stage_models()
    assert not load._ENCODERS and not scoring._SCORERS
