"""GRPO and RLOO through TRL on the micro Llama with the composite reward."""

from __future__ import annotations

import json
import math

import pytest

from simplesafe.errors import ConfigError
from simplesafe.train.grpo import GRPOStageConfig, run_grpo, train_grpo


@pytest.fixture(scope="module")
def rl_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("rl")
    qs = ["Why is the sky blue?", "How do birds fly?", "What is a volcano?", "Why do we sleep?"]
    (d / "train.jsonl").write_text("".join(json.dumps({"id": f"t{i}", "prompt": q}) + "\n" for i, q in enumerate(qs)))
    return d


def cfg_for(model_dir, rl_dir, algorithm: str, **kw) -> GRPOStageConfig:
    base = dict(algorithm=algorithm, policy=str(model_dir), data=[str(rl_dir)], steps=2, batch_size=4,
                num_generations=2, max_new_tokens=8, lr=1e-3, logging_steps=1,
                rewards=[{"kind": "simplicity"}, {"kind": "length", "max_words": 3, "weight": 0.5}])
    base.update(kw)
    return GRPOStageConfig(**base)


def _check_run(out, metrics, algorithm):
    from transformers import AutoModelForCausalLM

    assert metrics["algorithm"] == algorithm and metrics["steps"] == 2
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    logged = [r for r in rows if "reward" in r]
    assert len(logged) == 2
    for r in logged:
        # every source is logged on its own, and the total is their weighted sum
        assert math.isfinite(r["rewards/simplicity/mean"]) and math.isfinite(r["rewards/length/mean"])
        assert r["reward"] == pytest.approx(r["rewards/simplicity/mean"] + 0.5 * r["rewards/length/mean"], abs=1e-4)
    assert (out / "curves.png").exists() and (out / "adapter" / "adapter_config.json").exists()
    AutoModelForCausalLM.from_pretrained(str(out))
    assert not (out / "checkpoints").exists()


def test_grpo_runs_through_trl(tiny_model_dir, rl_dir, tmp_path):
    out = tmp_path / "grpo"
    metrics = run_grpo(cfg_for(tiny_model_dir, rl_dir, "grpo"), out, progress=False)
    _check_run(out, metrics, "grpo")
    assert (out / "DONE").exists()


@pytest.mark.slow
def test_rloo_runs_through_trl(tiny_model_dir, rl_dir, tmp_path):
    out = tmp_path / "rloo"
    _check_run(out, train_grpo(cfg_for(tiny_model_dir, rl_dir, "rloo"), out, progress=False), "rloo")


def test_batch_must_hold_whole_groups(tiny_model_dir, rl_dir, tmp_path):
    with pytest.raises(ConfigError, match="multiple of num_generations"):
        train_grpo(cfg_for(tiny_model_dir, rl_dir, "grpo", batch_size=6, num_generations=4), tmp_path, progress=False)


def test_grpo_qlora_with_checkpointing_merges_carefully(tiny_model_dir, rl_dir, tmp_path):
    """QLoRA GRPO (NF4 base, checkpointing, bf16): the adapter records its quantisation and the folder holds the
    careful merge."""
    from simplesafe.train.merge import adapter_record

    out = tmp_path / "grpo-qlora"
    cfg = cfg_for(tiny_model_dir, rl_dir, "grpo", method="qlora", gradient_checkpointing=True, precision="bf16",
                  lora={"r": 4, "alpha": 8, "dropout": 0.0})
    metrics = train_grpo(cfg, out, progress=False)
    _check_run(out, metrics, "grpo")
    rec = adapter_record(out / "adapter")
    assert rec["method"] == "qlora" and rec["quantized_from"] == "bfloat16"
