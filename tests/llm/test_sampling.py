"""The batched decode loop samples what transformers would, only faster."""

from __future__ import annotations

import pytest
import torch

from simplesafe.llm.sampling import SamplingParams, apply_repetition_penalty, filter_top_p, next_tokens, sample


@pytest.fixture(scope="module")
def micro(tiny_model_dir):
    from simplesafe.models.load import load_causal_lm, load_tokenizer

    tok = load_tokenizer(str(tiny_model_dir), padding_side="left")
    model = load_causal_lm(str(tiny_model_dir), dtype="float32").eval()
    prompts = ["### Human: Why is the sky blue? ### Assistant:", "### Human: Hi ### Assistant:",
               "### Human: What do plants need to grow and why do they need it? ### Assistant:"]
    enc = tok(prompts, return_tensors="pt", padding=True)
    return model, tok, enc


@pytest.mark.parametrize("penalty", [1.0, 1.3])
def test_greedy_matches_generate_with_left_padding(micro, penalty):
    model, tok, enc = micro
    ref = model.generate(**enc, max_new_tokens=20, do_sample=False, repetition_penalty=penalty,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)[:, enc["input_ids"].shape[1]:]
    out = sample(model, enc["input_ids"], enc["attention_mask"],
                 SamplingParams(max_new_tokens=20, temperature=0, repetition_penalty=penalty),
                 [tok.eos_token_id], tok.pad_token_id)
    for a, b, ended in zip(ref, out.tokens, out.ended):
        a, b = a.tolist(), b.tolist()
        n = a.index(tok.eos_token_id) + 1 if tok.eos_token_id in a else len(a)
        assert b[:n] == a[:n]
        assert all(t == tok.pad_token_id for t in b[n:])  # padded after the first EOS
        assert bool(ended) == (tok.eos_token_id in a)


def test_top_k_one_is_greedy_and_seeds_reproduce(micro):
    model, tok, enc = micro
    greedy = sample(model, enc["input_ids"], enc["attention_mask"], SamplingParams(max_new_tokens=12, temperature=0),
                    [tok.eos_token_id], tok.pad_token_id).tokens
    k1 = sample(model, enc["input_ids"], enc["attention_mask"],
                SamplingParams(max_new_tokens=12, temperature=0.9, top_k=1), [tok.eos_token_id], tok.pad_token_id,
                seed=5).tokens
    assert torch.equal(greedy, k1)
    params = SamplingParams(max_new_tokens=12, temperature=1.0, top_p=0.9, top_k=40)
    a = sample(model, enc["input_ids"], enc["attention_mask"], params, [tok.eos_token_id], tok.pad_token_id, seed=3)
    b = sample(model, enc["input_ids"], enc["attention_mask"], params, [tok.eos_token_id], tok.pad_token_id, seed=3)
    assert torch.equal(a.tokens, b.tokens)


def test_compaction_does_not_change_answers(micro):
    model, tok, enc = micro
    rows = torch.tensor([0, 1, 2, 0, 1, 2])
    ids, att = enc["input_ids"][rows], enc["attention_mask"][rows]
    params = SamplingParams(max_new_tokens=16, temperature=1.5, top_k=0)
    full = sample(model, ids, att, params, [], tok.pad_token_id, seed=7, compact=False).tokens.tolist()
    # a stop token that ends at least half of the rows (but not all) before the last step
    first = {}
    for r, toks in enumerate(full):
        for t, x in enumerate(toks[:-1]):
            first.setdefault(x, {}).setdefault(r, t)
    stop = next(x for x, ends in first.items() if len(rows) // 2 <= len(ends) < len(rows))
    a = sample(model, ids, att, params, [stop], tok.pad_token_id, seed=7, compact=True)
    b = sample(model, ids, att, params, [stop], tok.pad_token_id, seed=7, compact=False)
    assert a.info["compactions"] >= 1 and b.info["compactions"] == 0
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.ended, b.ended)


def test_top_p_keeps_the_smallest_head_reaching_p():
    from transformers.generation.logits_process import TopPLogitsWarper

    torch.manual_seed(0)
    logits = torch.randn(4, 30)
    probs = torch.softmax(logits, -1)
    desc, idx = probs.sort(-1, descending=True)
    ours = filter_top_p(desc, 0.8) > 0
    theirs = torch.isfinite(TopPLogitsWarper(0.8)(None, logits.clone()))
    assert torch.equal(ours, theirs.gather(-1, idx))


def test_repetition_penalty_as_transformers():
    from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

    torch.manual_seed(1)
    logits = torch.randn(2, 12)
    seen = torch.tensor([[1, 3, 3], [0, 11, 5]])
    assert torch.allclose(apply_repetition_penalty(logits, seen, 1.3),
                          RepetitionPenaltyLogitsProcessor(1.3)(seen, logits.clone()))


def test_full_vocabulary_sampling_follows_the_distribution():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log().repeat(20000, 1)
    gen = torch.Generator().manual_seed(0)
    draws = next_tokens(logits, SamplingParams(temperature=1.0, top_k=0, top_p=1.0), gen)
    freq = torch.bincount(draws, minlength=4).float() / len(draws)
    assert torch.allclose(freq, probs, atol=0.01)
    nucleus = next_tokens(logits, SamplingParams(temperature=1.0, top_k=0, top_p=0.75), gen)
    assert set(nucleus.tolist()) == {0, 1}  # 0.5 + 0.3 reaches 0.75: the tail is cut
