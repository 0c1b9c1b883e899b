"""SFT: exact label masking, a short run that learns, keep-best-epoch, LoRA/QLoRA outputs, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from simplesafe.train.sft import SFTStageConfig, train_sft
from simplesafe.train.tokenize import tokenize_example


def _rows(n: int, offset: int = 0) -> list[dict]:
    return [{"id": f"r{i}", "prompt": f"What is {i} plus one?", "completion": f"It is {i + 1}. Numbers go up by one."}
            for i in range(offset, offset + n)]


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from simplesafe.models.load import load_tokenizer

    return load_tokenizer(str(tiny_model_dir))


def test_labels_mask_exactly_the_prompt(tok):
    ex = tokenize_example(tok, "Why is the sky blue?", "Because air scatters blue light.")
    prompt_ids = tok("### Human: Why is the sky blue? ### Assistant:")["input_ids"]
    n = len(prompt_ids)
    assert ex["input_ids"][:n] == prompt_ids
    assert ex["labels"][:n] == [-100] * n
    # every answer position is learnt, including the closing EOS
    assert ex["labels"][n:] == ex["input_ids"][n:]
    assert -100 not in ex["labels"][n:]
    assert ex["labels"][-1] == tok.eos_token_id
    assert tok.decode(ex["labels"][n:]) == " Because air scatters blue light." + tok.eos_token


def test_chat_template_and_custom_template_masks(tok):
    chat = tokenize_example(tok, "Why?", "Because.", template="chat")
    prompt = tok.apply_chat_template([{"role": "user", "content": "Why?"}], tokenize=False, add_generation_prompt=True)
    n = len(tok(prompt, add_special_tokens=False)["input_ids"])
    assert chat["labels"][:n] == [-100] * n and chat["labels"][n] != -100
    assert tok.decode([t for t in chat["labels"] if t != -100]).strip().startswith("Because.")
    custom = tokenize_example(tok, "Why?", "Because.", template="Q: {question}\nA:")
    n = len(tok("Q: Why?\nA:")["input_ids"])
    assert custom["labels"][:n] == [-100] * n
    assert tok.decode(custom["labels"][n:]) == " Because." + tok.eos_token


def test_truncation_keeps_start_and_drops_rows_without_answer(tok):
    n = len(tok("### Human: Why is the sky blue? ### Assistant:")["input_ids"])
    ex = tokenize_example(tok, "Why is the sky blue?", "Because " * 50, max_length=n + 5)
    assert len(ex["input_ids"]) == n + 5 and ex["labels"][-1] != -100 and ex["labels"][n - 1] == -100
    assert tokenize_example(tok, "Why is the sky blue?", "Yes.", max_length=n) is None


def test_sft_loss_goes_down_and_best_epoch_is_kept(tiny_model_dir, tmp_path):
    from simplesafe.models.load import load_causal_lm, load_tokenizer
    from simplesafe.train.merge import answer_log_likelihood

    cfg = SFTStageConfig(epochs=3, batch_size=8, grad_accum=1, lr=3e-3, warmup_ratio=0.0,
                         early_stopping_patience=None)
    metrics = train_sft(str(tiny_model_dir), _rows(32), _rows(8, 100), tmp_path / "sft", cfg, progress=False)
    assert metrics["train_loss_last"] < metrics["train_loss_first"]
    assert len(metrics["eval_loss_per_epoch"]) == 3
    assert metrics["best_eval_loss"] == pytest.approx(min(metrics["eval_loss_per_epoch"]))
    saved = json.loads((tmp_path / "sft" / "metrics.json").read_text())
    assert saved["n_train"] == 32
    # the folder holds the best epoch: its validation loss is the best one recorded
    model = load_causal_lm(str(tmp_path / "sft"))
    tok = load_tokenizer(str(tmp_path / "sft"))
    ll = answer_log_likelihood(model, tok, _rows(8, 100), "### Human: {question} ### Assistant:")
    assert -ll == pytest.approx(metrics["best_eval_loss"], rel=2e-3)
    assert not (tmp_path / "sft" / "checkpoints").exists()


def test_sft_lora_writes_adapter_and_merged_model(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    cfg = SFTStageConfig(method="lora", lora={"r": 4, "alpha": 8, "dropout": 0.0}, epochs=1, batch_size=8,
                         grad_accum=1, lr=1e-2)
    metrics = train_sft(str(tiny_model_dir), _rows(16), [], tmp_path / "lora", cfg, progress=False)
    out = tmp_path / "lora"
    adapter_cfg = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter_cfg["base_model_name_or_path"] == str(tiny_model_dir)
    assert (out / "adapter" / "adapter_model.safetensors").exists()
    merged = AutoModelForCausalLM.from_pretrained(str(out))
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    diffs = [float((a - b).detach().abs().max()) for (_, a), (_, b) in zip(merged.named_parameters(), base.named_parameters())]
    assert max(diffs) > 0, "the merged model must differ from the base"
    assert metrics["merged"] == "simple"


@pytest.mark.slow
def test_sft_qlora_trains_on_nf4_base(tiny_model_dir, tmp_path):
    cfg = SFTStageConfig(method="qlora", lora={"r": 4, "alpha": 8, "dropout": 0.0}, epochs=2, batch_size=8,
                         grad_accum=1, lr=1e-2, warmup_ratio=0.0)
    metrics = train_sft(str(tiny_model_dir), _rows(16), _rows(8, 50), tmp_path / "qlora", cfg, progress=False)
    assert metrics["eval_loss_per_epoch"][-1] < metrics["eval_loss_per_epoch"][0]
    assert metrics["merged"] == "careful"
    assert (tmp_path / "qlora" / "model.safetensors").exists()


def _train_one_config(model_dir, out, batch, accum):
    from transformers import AutoModelForCausalLM

    # plain SGD: the update is proportional to the gradient, so a mis-scaled accumulation would show
    # (Adam's first steps are nearly sign(gradient) and would hide it)
    cfg = SFTStageConfig(epochs=1, max_steps=2, batch_size=batch, grad_accum=accum, lr=0.5, warmup_ratio=0.0,
                         optim="sgd", max_eval_rows=None, seed=3)
    train_sft(str(model_dir), _rows(16), [], out, cfg, progress=False)
    return {k: v.detach().clone() for k, v in AutoModelForCausalLM.from_pretrained(str(out)).named_parameters()}


def test_invariance_batch8_accum1_equals_batch2_accum4(tiny_model_dir, tmp_path):
    """TRL's invariance check: the same 8 examples per step train the same way however they are split."""
    from transformers import AutoModelForCausalLM

    a = _train_one_config(tiny_model_dir, tmp_path / "b8", 8, 1)
    b = _train_one_config(tiny_model_dir, tmp_path / "b2", 2, 4)
    base = dict(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).state_dict())
    moved = max(float((a[k] - base[k]).abs().max()) for k in a)
    gap = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert moved > 1e-3
    assert gap < 1e-3 * moved, f"batch 8x1 vs 2x4 differ by {gap:.2e} (updates are {moved:.2e})"


def test_cli_sft_runs_resumes_and_reports_bad_rows(tiny_model_dir, tmp_path):
    from simplesafe.io import write_rows

    data = tmp_path / "data"
    write_rows(data / "train.jsonl", _rows(16))
    write_rows(data / "validation.jsonl", _rows(4, 40))
    out = tmp_path / "run" / "sft"
    cmd = [sys.executable, "-m", "simplesafe.cli", "train", "sft", f"data={data}", f"model={tiny_model_dir}",
           f"out={out}", "epochs=1", "batch_size=8", "grad_accum=1"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (out / "DONE").exists() and (out / "model.safetensors").exists()
    assert "SFT ->" in res.stdout
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "SFT ->" in again.stdout
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp  # a finished stage is skipped, not retrained
    bad = tmp_path / "bad"
    write_rows(bad / "train.jsonl", [{"prompt": "Q?", "completion": "A."}, {"prompt": "Q2?"}])
    res = subprocess.run(cmd[:5] + [f"data={bad}", f"model={tiny_model_dir}", f"out={tmp_path / 'x'}"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2
    assert "train.jsonl, line 2, field 'completion'" in res.stderr


@pytest.mark.parametrize("name", ["sft", "rm", "dpo"])
def test_gpu_recipes_are_valid_configs(name):
    from pathlib import Path

    from simplesafe.config import load_config
    from simplesafe.train.dpo import DPOStageConfig
    from simplesafe.train.reward import RewardStageConfig

    model = {"sft": SFTStageConfig, "rm": RewardStageConfig, "dpo": DPOStageConfig}[name]
    path = Path(__file__).resolve().parents[2] / "recipes" / "gpu" / f"{name}.yaml"
    cfg = load_config(model, path, section=name)
    assert cfg.data or name == "rm"


def test_qlora_evaluates_with_layer_sizes_not_divisible_by_32(tiny_model_dir, tmp_path):
    """bitsandbytes' CPU inference repacking needs sizes divisible by 32; the trainer keeps it off."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    from simplesafe.models.load import load_tokenizer

    tok = load_tokenizer(str(tiny_model_dir))
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=72, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=128, pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id)
    odd = tmp_path / "odd"
    AutoModelForCausalLM.from_config(config).save_pretrained(str(odd))
    tok.save_pretrained(str(odd))
    cfg = SFTStageConfig(method="qlora", lora={"r": 4, "alpha": 8, "dropout": 0.0}, epochs=2, batch_size=8,
                         grad_accum=1, lr=1e-2, merge=False, early_stopping_patience=None)
    metrics = train_sft(str(odd), _rows(8), _rows(4, 50), tmp_path / "out", cfg, progress=False)
    assert len(metrics["eval_loss_per_epoch"]) == 2
