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


def _qlora_adapter(base_dir, out, precision: str):
    """A QLoRA adapter as the trainers make one: load_policy (NF4 from the compute dtype), peft, record_adapter.

    Returns the dequantised weights the adapter was trained against, by module name.
    """
    import bitsandbytes as bnb
    import bitsandbytes.functional as bnbf
    from peft import LoraConfig, get_peft_model

    from simplesafe.models.load import load_tokenizer
    from simplesafe.train.common import load_policy, record_adapter

    model = load_policy(str(base_dir), "qlora", precision=precision)
    trained_against = {f"{n}.weight": bnbf.dequantize_4bit(m.weight.data, m.weight.quant_state).float()
                       for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)}
    torch.manual_seed(0)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    peft_model.save_pretrained(str(out))
    load_tokenizer(str(base_dir)).save_pretrained(str(out))
    record_adapter(out, model, str(base_dir))
    return trained_against


@pytest.mark.parametrize("precision,quantized_from", [("bf16", "bfloat16"), ("fp32", "float32")])
def test_careful_merge_quantises_from_the_dtype_the_qlora_run_used(tiny_model_dir, tmp_path, precision, quantized_from):
    from transformers import AutoModelForCausalLM

    from simplesafe.train.merge import adapter_record, merge_adapter

    adapter = tmp_path / "adapter"
    trained_against = _qlora_adapter(tiny_model_dir, adapter, precision)  # B = 0: merging adds nothing
    assert adapter_record(adapter)["quantized_from"] == quantized_from
    careful = dict(merge_adapter(str(tiny_model_dir), adapter, None, mode="careful", dtype="float32").named_parameters())
    base = dict(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).named_parameters())
    assert len(trained_against) == 14  # 2 layers x (q, k, v, o, gate, up, down)
    for key, w in base.items():
        w = w.detach()
        if key in trained_against:
            # exactly the NF4 weights the adapter was trained against, and not the fp32 originals
            assert torch.equal(careful[key].detach(), trained_against[key]), key
            assert not torch.equal(careful[key].detach(), w)
        else:  # embeddings and norms are not quantised
            assert torch.equal(careful[key].detach(), w), key
    # quantising from the other dtype gives other weights: the record matters
    other = "float32" if quantized_from == "bfloat16" else "bfloat16"
    wrong = dict(merge_adapter(str(tiny_model_dir), adapter, None, mode="careful", dtype="float32",
                               train_dtype=other).named_parameters())
    assert any(not torch.equal(wrong[k].detach(), trained_against[k]) for k in trained_against)


def test_careful_merge_refuses_a_plain_lora_adapter_and_warns_without_a_record(tiny_model_dir, tmp_path, caplog):
    import bitsandbytes.functional as bnbf
    from transformers import AutoModelForCausalLM

    from simplesafe.errors import ConfigError
    from simplesafe.train.common import record_adapter
    from simplesafe.train.merge import merge_adapter, run_merge

    lora = tmp_path / "lora-adapter"
    _make_adapter(tiny_model_dir, lora, random_b=False)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    model.simplesafe_training = {"method": "lora", "precision": "bf16"}
    record_adapter(lora, model, str(tiny_model_dir))
    with pytest.raises(ConfigError, match="method 'lora', not qlora.*mode: simple"):
        merge_adapter(str(tiny_model_dir), lora, None, mode="careful")
    merge_adapter(str(tiny_model_dir), lora, None, mode="simple")  # the right merge for it works
    # the merge command with the default careful mode stops with the same message; simple skips the comparison
    with pytest.raises(ConfigError, match="not qlora"):
        run_merge(str(tiny_model_dir), lora, tmp_path / "m", mode="careful")
    rep = run_merge(str(tiny_model_dir), lora, tmp_path / "s", mode="simple")
    assert "careful merge" in rep["compare_skipped"]

    unrecorded = tmp_path / "unrecorded"
    _make_adapter(tiny_model_dir, unrecorded, random_b=False)
    with caplog.at_level("WARNING"):
        careful = dict(merge_adapter(str(tiny_model_dir), unrecorded, None, mode="careful", dtype="float32",
                                     train_dtype="float32").named_parameters())
    assert "no simplesafe_adapter.json" in caplog.text and "assuming QLoRA from float32" in caplog.text
    w = dict(model.named_parameters())["model.layers.0.self_attn.q_proj.weight"].detach()
    q, state = bnbf.quantize_4bit(w, blocksize=64, compress_statistics=True, quant_type="nf4")
    assert torch.equal(careful["model.layers.0.self_attn.q_proj.weight"].detach(), bnbf.dequantize_4bit(q, state))


def test_run_merge_writes_loadable_models_and_reports_differences(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from simplesafe.io import write_rows
    from simplesafe.train.merge import run_merge

    adapter = tmp_path / "adapter"
    _qlora_adapter(tiny_model_dir, adapter, "bf16")
    with torch.no_grad():  # a trained adapter: non-zero B
        from safetensors.torch import load_file, save_file

        state = load_file(str(adapter / "adapter_model.safetensors"))
        save_file({k: (torch.randn_like(v) * 0.05 if "lora_B" in k else v) for k, v in state.items()},
                  str(adapter / "adapter_model.safetensors"))
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
    assert rep_c["quantized_from"] == rep_s["quantized_from"] == "bfloat16" and rep_c["device"] == "cpu"


def test_merge_cli(tiny_model_dir, tmp_path):
    adapter = tmp_path / "adapter"
    _make_adapter(tiny_model_dir, adapter, random_b=True)
    cmd = [sys.executable, "-m", "simplesafe.cli", "merge", "--base", str(tiny_model_dir), "--adapter", str(adapter),
           "--out", str(tmp_path / "m")]
    res = subprocess.run(cmd + ["--mode", "careful", "--train-dtype", "float32"], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "no simplesafe_adapter.json" in res.stderr  # an adapter from elsewhere: the assumption is said
    assert "max_abs_weight_diff" in res.stdout and (tmp_path / "m" / "model.safetensors").exists()
    res = subprocess.run(cmd + ["--mode", "sloppy"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "simple or careful" in res.stderr
    res = subprocess.run(cmd[:6] + ["--adapter", str(tmp_path / "nope"), "--out", str(tmp_path / "m2")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "adapter_config.json" in res.stderr
