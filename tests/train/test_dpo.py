"""DPO through TRL: starts at log 2 (policy = reference), learns, reports the margin; LoRA reference and precomputed log-probs."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from simplesafe.train.dpo import DPOStageConfig, preference_dataset, train_dpo


def _pairs(n: int, offset: int = 0) -> list[dict]:
    return [{"prompt": f"What is {i} plus one?", "chosen": f"It is {i + 1}.", "rejected": f"Go away {i}, I will not say."}
            for i in range(offset, offset + n)]


def test_preference_rows_use_the_sft_prompt_format(tiny_model_dir):
    from simplesafe.models.load import load_tokenizer

    ds = preference_dataset(_pairs(1), "### Human: {question} ### Assistant:", load_tokenizer(str(tiny_model_dir)))
    assert ds[0] == {"prompt": "### Human: What is 0 plus one? ### Assistant:", "chosen": " It is 1.",
                     "rejected": " Go away 0, I will not say."}


def test_dpo_full_learns_and_reports_margin(tiny_model_dir, tmp_path):
    # fp32: the exact log-2 checks below need policy and reference to round alike (bf16 autocast does not)
    cfg = DPOStageConfig(model=str(tiny_model_dir), lr=1e-3, epochs=2, batch_size=8, grad_accum=1, warmup_ratio=0.0,
                         precision="fp32")
    m = train_dpo(cfg, _pairs(32), _pairs(8, 100), tmp_path / "dpo", progress=False)
    # policy == reference at the start: every pair's loss is log 2 and the margin is 0. The policy trains in fp32 with
    # autocast and the frozen reference is stored in the compute dtype (bf16 on a bf16 CPU): their residual streams
    # round differently, so the start is log 2 up to that rounding
    tol = 5e-3 if m["precision"] == "bf16" else 1e-5
    assert m["eval_before_loss"] == pytest.approx(math.log(2), abs=tol)
    assert m["eval_before_rewards_margins"] == pytest.approx(0.0, abs=20 * tol)
    assert m["train_loss_first"] == pytest.approx(math.log(2), abs=tol)
    assert m["train_loss_last"] < m["train_loss_first"]
    assert m["eval_loss"] < math.log(2) and m["eval_rewards_margins"] > 0
    saved = json.loads((tmp_path / "dpo" / "metrics.json").read_text())
    assert saved["eval_rewards_margins"] == pytest.approx(m["eval_rewards_margins"])
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(str(tmp_path / "dpo"))


def test_dpo_lora_with_precomputed_reference(tiny_model_dir, tmp_path):
    cfg = DPOStageConfig(model=str(tiny_model_dir), method="lora", lora={"r": 8, "alpha": 16, "dropout": 0.0},
                         lr=5e-3, epochs=2, batch_size=8, grad_accum=1, warmup_ratio=0.0, precompute_ref_log_probs=True)
    m = train_dpo(cfg, _pairs(32), _pairs(8, 100), tmp_path / "dpo", progress=False)
    assert m["eval_before_loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert m["eval_rewards_margins"] > 0
    assert (tmp_path / "dpo" / "adapter" / "adapter_config.json").exists()
    assert (tmp_path / "dpo" / "model.safetensors").exists()


def test_cli_dpo_needs_data_and_runs(tiny_model_dir, tmp_path):
    from simplesafe.io import write_rows

    d = tmp_path / "rm"
    write_rows(d / "train.jsonl", [dict(p, weight=1.0) for p in _pairs(16)])
    write_rows(d / "validation.jsonl", _pairs(4, 50))
    base = [sys.executable, "-m", "simplesafe.cli", "train", "dpo", f"model={tiny_model_dir}"]
    res = subprocess.run(base + [f"out={tmp_path / 'x'}"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "needs data" in res.stderr
    res = subprocess.run(base + [f"data={d}", f"out={tmp_path / 'dpo'}", "epochs=1", "batch_size=8", "grad_accum=1",
                                 "beta=0.2", "loss_type=ipo"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    m = json.loads((tmp_path / "dpo" / "metrics.json").read_text())
    assert m["beta"] == 0.2 and m["loss_type"] == ["ipo"] and "eval_rewards_margins" in m
