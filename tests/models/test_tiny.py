import json

from simplesafe.models.load import load_causal_lm, load_tokenizer


def test_micro_model_loads_with_from_pretrained_and_beats_unigram(tiny_model_dir):
    info = json.loads((tiny_model_dir / "build_info.json").read_text())
    assert (tiny_model_dir / "model.safetensors").exists()
    assert info["held_out_perplexity"] < info["unigram_perplexity"]
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    assert model.config.model_type == "llama"


def test_chat_template_is_report_format(tiny_model_dir):
    tok = load_tokenizer(str(tiny_model_dir))
    text = tok.apply_chat_template([{"role": "user", "content": "Why?"}], tokenize=False, add_generation_prompt=True)
    assert text == "### Human: Why? ### Assistant:"
    full = tok.apply_chat_template(
        [{"role": "user", "content": "Why?"}, {"role": "assistant", "content": "Because."}], tokenize=False)
    assert full.startswith("### Human: Why? ### Assistant: Because.") and tok.eos_token in full


def test_batched_generation_left_padding(tiny_model_dir):
    tok = load_tokenizer(str(tiny_model_dir), padding_side="left")
    model = load_causal_lm(str(tiny_model_dir))
    enc = tok(["### Human: a ### Assistant:", "### Human: a longer question here ### Assistant:"],
              return_tensors="pt", padding=True)
    out = model.generate(**enc, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[0] == 2 and out.shape[1] == enc["input_ids"].shape[1] + 5 or out.shape[1] <= enc["input_ids"].shape[1] + 5
