"""Same seed, same numbers: tiny-model generations and their evaluation metrics.

Sampling with temperature > 0 on the tiny Llama twice with the same seeds gives the same
answers, and scoring the same generations twice (readability, toxicity, ROUGE,
BERTScore with the embedded MiniLM, bootstrap CIs) gives the same summary, on one machine.
A different seed gives different answers, so the check is not vacuous.
"""

from __future__ import annotations

import json

import pytest

from simplesafe.eval.generate import GenerateConfig, generate_answers
from simplesafe.eval.metrics import MetricsConfig, compute_metrics


@pytest.fixture
def prompts(tmp_path):
    p = tmp_path / "prompts.jsonl"
    qs = ["Why is the sky blue?", "How do birds fly?", "What is a volcano?", "Why do we sleep?"]
    p.write_text("".join(json.dumps({"id": f"p{i}", "prompt": q, "reference": "It is simple."}) + "\n"
                         for i, q in enumerate(qs)))
    return p


def _generate(tiny_model_dir, prompts, out, seeds):
    cfg = GenerateConfig(model=str(tiny_model_dir), prompts=str(prompts), out=str(out), seeds=seeds,
                         max_new_tokens=12, temperature=1.0, top_p=1.0, batch_size=2, generator="tiny")
    generate_answers(cfg, progress=False)
    return json.loads(out.read_text()) if out.suffix == ".json" else [json.loads(x) for x in out.read_text().splitlines()]


def test_same_seed_same_generations_and_metrics(tiny_model_dir, prompts, tmp_path):
    a = _generate(tiny_model_dir, prompts, tmp_path / "a.jsonl", [0, 1])
    b = _generate(tiny_model_dir, prompts, tmp_path / "b.jsonl", [0, 1])
    c = _generate(tiny_model_dir, prompts, tmp_path / "c.jsonl", [7, 8])
    assert [r["output"] for r in a] == [r["output"] for r in b]
    assert [r["output"] for r in a] != [r["output"] for r in c]

    refs = tmp_path / "refs.jsonl"
    refs.write_text("".join(json.dumps({"id": f"p{i}", "reference": "It is a simple thing to see."}) + "\n"
                            for i in range(4)))
    cfg = MetricsConfig(references=str(refs), bertscore=True, toxicity_backend="profanity-check", n_boot=200, seed=3)
    s1 = compute_metrics(tmp_path / "a.jsonl", cfg, tmp_path / "m1.json")
    s2 = compute_metrics(tmp_path / "b.jsonl", cfg, tmp_path / "m2.json")
    assert s1["metrics"] == s2["metrics"]
    assert s1["n_with_reference"] == len(a) and "bertscore_f1" in s1["metrics"]
