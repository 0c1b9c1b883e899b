"""Adapter merge: the careful merge equals the NF4 round trip of the base, both modes load, the CLI reports differences."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch


def _make_adapter(base_dir, out, random_b: bool) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from simplesafe.models.load import load_tokenizer

    model = AutoModelForCausalLM.from_pretrained(str(base_dir))
    torch.manual_seed(0)
    # init_lora_weights=False gives non-zero B: a stand-in for a trained adapter
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                  init_lora_weights=not random_b))
    peft_model.save_pretrained(str(out))
    load_tokenizer(str(base_dir)).save_pretrained(str(out))


def test_careful_merge_is_the_nf4_round_trip_of_the_base(tiny_model_dir, tmp_path):
    import bitsandbytes.functional as bnbf
    from transformers import AutoModelForCausalLM

    from simplesafe.train.merge import merge_adapter

    adapter = tmp_path / "zero-adapter"
    _make_adapter(tiny_model_dir, adapter, random_b=False)  # B = 0: merging adds nothing
    careful = dict(merge_adapter(str(tiny_model_dir), adapter, None, mode="careful", dtype="float32").named_parameters())
    simple = dict(merge_adapter(str(tiny_model_dir), adapter, None, mode="simple", dtype="float32").named_parameters())
    base = dict(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).named_parameters())
    n_quantised = 0
    for key, w in base.items():
        w = w.detach()
        assert torch.equal(simple[key], w), key
        if key.endswith("proj.weight"):
            # bitsandbytes NF4 with double quantisation, block 64: what QLoRA trains against
            q, state = bnbf.quantize_4bit(w, blocksize=64, compress_statistics=True, quant_type="nf4")
            expected = bnbf.dequantize_4bit(q, state)
            assert torch.equal(careful[key].detach(), expected), key
            assert not torch.equal(careful[key].detach(), w)
            n_quantised += 1
        else:  # embeddings and norms are not quantised
            assert torch.equal(careful[key].detach(), w), key
    assert n_quantised == 14  # 2 layers x (q, k, v, o, gate, up, down)


def test_run_merge_writes_loadable_models_and_reports_differences(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from simplesafe.io import write_rows
    from simplesafe.train.merge import run_merge

    adapter = tmp_path / "adapter"
    _make_adapter(tiny_model_dir, adapter, random_b=True)
    val = tmp_path / "validation.jsonl"
    write_rows(val, [{"prompt": f"What is {i}?", "completion": f"It is {i}."} for i in range(6)])
    rep_c = run_merge(str(tiny_model_dir), adapter, tmp_path / "careful", mode="careful", validation=val)
    rep_s = run_merge(str(tiny_model_dir), adapter, tmp_path / "simple", mode="simple", validation=val)
    for out in ("careful", "simple"):
        model = AutoModelForCausalLM.from_pretrained(str(tmp_path / out))
        assert model.dtype == torch.bfloat16
        assert json.loads((tmp_path / out / "merge_report.json").read_text())["mode"] == out
    assert rep_c["max_abs_weight_diff"] > 0 and rep_c["mean_abs_weight_diff"] > 0
    assert rep_c["max_abs_weight_diff"] == pytest.approx(rep_s["max_abs_weight_diff"])
    assert math.isfinite(rep_c["loglik_diff_careful_minus_simple"])
    assert rep_c["loglik_diff_careful_minus_simple"] == pytest.approx(-(rep_s["loglik_per_token_simple"]
                                                                       - rep_s["loglik_per_token_careful"]))
    assert rep_c["n_validation_rows"] == 6


def test_merge_cli(tiny_model_dir, tmp_path):
    adapter = tmp_path / "adapter"
    _make_adapter(tiny_model_dir, adapter, random_b=True)
    cmd = [sys.executable, "-m", "simplesafe.cli", "merge", "--base", str(tiny_model_dir), "--adapter", str(adapter),
           "--out", str(tmp_path / "m")]
    res = subprocess.run(cmd + ["--mode", "careful"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "max_abs_weight_diff" in res.stdout and (tmp_path / "m" / "model.safetensors").exists()
    res = subprocess.run(cmd + ["--mode", "sloppy"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "simple or careful" in res.stderr
    res = subprocess.run(cmd[:6] + ["--adapter", str(tmp_path / "nope"), "--out", str(tmp_path / "m2")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "adapter_config.json" in res.stderr
