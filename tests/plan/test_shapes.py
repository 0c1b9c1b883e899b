"""The plan's model shapes, built on the meta device, count what the real models hold."""

from __future__ import annotations

import pytest

from simplesafe.plan.shapes import model_shape


def test_shape_counts_match_the_loaded_model_peft_and_bitsandbytes(tiny_model_dir):
    import bitsandbytes as bnb
    from peft import LoraConfig, get_peft_model

    from simplesafe.models.load import load_causal_lm

    shape = model_shape(str(tiny_model_dir))
    model = load_causal_lm(str(tiny_model_dir))
    assert shape.params == sum(p.numel() for p in model.parameters())
    cfg = model.config
    assert (shape.hidden, shape.layers, shape.vocab, shape.heads) == (cfg.hidden_size, cfg.num_hidden_layers,
                                                                      cfg.vocab_size, cfg.num_attention_heads)
    # LoRA parameters: what peft makes trainable
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))
    assert shape.lora_params(8, "all-linear") == sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    # quantisable parameters: what bitsandbytes turns into 4-bit layers
    q = load_causal_lm(str(tiny_model_dir), quantization="nf4")
    n4 = sum(m.in_features * m.out_features for m in q.modules() if isinstance(m, bnb.nn.Linear4bit))
    assert shape.quantizable == n4 > 0


def test_classifier_shape_keeps_the_score_head_trainable_and_unquantised(tiny_model_dir):
    from peft import LoraConfig, get_peft_model

    from simplesafe.models.load import load_sequence_classifier

    shape = model_shape(str(tiny_model_dir), "classifier")
    model = load_sequence_classifier(str(tiny_model_dir), num_labels=1)
    assert shape.params == sum(p.numel() for p in model.parameters())
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="SEQ_CLS"))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert shape.lora_params(4, "all-linear") == trainable
    assert trainable > model.score.weight.numel()  # adapters plus the score head


def test_hub_models_of_the_shipped_recipes_plan_offline():
    llama = model_shape("NousResearch/Llama-2-7b-hf")
    assert llama.params == 6_738_415_616  # Llama-2-7b
    assert (llama.hidden, llama.intermediate, llama.layers, llama.kv_heads) == (4096, 11008, 32, 32)
    qwen = model_shape("Qwen/Qwen2.5-0.5B")
    assert qwen.params == 494_032_768 and qwen.kv_heads == 2  # tied embeddings counted once
    assert model_shape("embedded:smollm2").params == 134_515_008


def test_an_unknown_hub_model_is_a_clear_error():
    from simplesafe.plan.shapes import PlanUnavailable

    with pytest.raises(PlanUnavailable, match="no config for model 'nobody/no-such-model'"):
        model_shape("nobody/no-such-model")
