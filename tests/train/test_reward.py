"""Reward models: a short run that learns, scoring helpers, the CLI (pair loading: test_reward_data.py)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from simplesafe.train.reward import RewardStageConfig, train_reward_model
from simplesafe.train.reward_model import score_pairs, score_texts


def _pairs(n: int, offset: int = 0) -> list[dict]:
    # an easy preference: a polite plain answer beats a rude one
    return [{"id": f"p{i}", "prompt": f"Question number {i}?", "chosen": f"A kind answer about {i}, thanks.",
             "rejected": f"Go away you idiot {i}.", "weight": 1.0 if i % 2 else 0.5} for i in range(offset, offset + n)]


def test_causal_reward_model_learns_and_scores(tiny_model_dir, tmp_path):
    splits = {"train": _pairs(48), "validation": _pairs(16, 100), "test": _pairs(16, 200)}
    cfg = RewardStageConfig(name="helpfulness", backbone=str(tiny_model_dir), lr=3e-3, epochs=3, batch_size=8,
                            max_length=64, early_stopping_patience=None, warmup_ratio=0.0)
    metrics = train_reward_model(cfg, tmp_path / "rm", splits, progress=False)
    assert metrics["kind"] == "causal"
    assert metrics["history"][-1]["train_loss"] < metrics["history"][0]["train_loss"]
    assert metrics["validation_loss"] < 0.69  # below chance (log 2)
    assert metrics["validation_accuracy"] >= 0.8 and metrics["test_accuracy"] >= 0.8
    saved = json.loads((tmp_path / "rm" / "metrics.json").read_text())
    assert saved["test_n"] == 16
    # the scoring helper reproduces the reported accuracy
    val = splits["validation"]
    c, r = score_pairs(tmp_path / "rm", [x["prompt"] for x in val], [x["chosen"] for x in val], [x["rejected"] for x in val])
    assert float(np.mean(c > r)) == pytest.approx(metrics["validation_accuracy"], abs=1e-6)
    s = score_texts(tmp_path / "rm", ["Question number 1?"] * 2, ["A kind answer about 1, thanks.", "Go away you idiot 1."])
    assert s.shape == (2,) and s[0] > s[1]
    # an ordinary sequence-classification folder
    from simplesafe.models.load import load_sequence_classifier

    assert load_sequence_classifier(str(tmp_path / "rm")).config.num_labels == 1


@pytest.mark.slow
def test_minilm_encoder_reward_model_on_simplicity_pairs(tmp_path):
    cfg = RewardStageConfig(name="simplicity", max_train_rows=128, max_eval_rows=32, max_length=64, epochs=1,
                            batch_size=16, lr=3e-4, train_layers=1)
    metrics = train_reward_model(cfg, tmp_path / "rm", progress=False)
    assert metrics["kind"] == "encoder" and metrics["use_prompt"] is False
    # single batches are noisy (length-grouped); held-out loss below chance says it learned
    assert metrics["validation_loss"] < math.log(2)
    assert 0.0 <= metrics["validation_accuracy"] <= 1.0 and metrics["test_n"] == 32
    # prompts are ignored by a model trained without them
    a = score_texts(tmp_path / "rm", ["anything"], ["The cat sat."])
    b = score_texts(tmp_path / "rm", ["something else entirely"], ["The cat sat."])
    assert a[0] == pytest.approx(b[0])


def test_cli_rm_safety(tiny_model_dir, tmp_path):
    out = tmp_path / "rm-safety"
    cmd = [sys.executable, "-m", "simplesafe.cli", "train", "rm", "name=safety", f"backbone={tiny_model_dir}",
           f"out={out}", "max_train_rows=32", "max_eval_rows=16", "max_length=64", "epochs=1"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["source"] == "hh_rlhf" and m["n_train"] == 32 and "validation_accuracy" in m and "test_accuracy" in m
    assert (out / "DONE").exists() and (out / "reward_config.json").exists()
    assert "validation_accuracy" in res.stdout
    bad = subprocess.run(cmd[:5] + ["name=safety", "lr=-1"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "lr" in bad.stderr


def test_separating_threshold_balances_the_two_errors():
    from simplesafe.train.reward import separating_threshold

    t = separating_threshold(np.array([2.0, 3.0, 4.0]), np.array([-1.0, 0.0, 1.0, 2.5]))
    assert 1.0 < t < 2.0  # all chosen above, 3 of 4 rejected below
    assert separating_threshold(np.array([1.0]), np.array([1.0])) == 1.0


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_causal_reward_model_with_adapters_trains_its_head_and_merges(tiny_model_dir, tmp_path, method):
    """LoRA/QLoRA on the trunk, the score head trained in full, checkpointing on: the folder holds the merged
    classifier (a careful merge for QLoRA) and scores like the model that was evaluated."""
    import torch
    from safetensors.torch import load_file

    from simplesafe.models.load import load_sequence_classifier
    from simplesafe.train.merge import adapter_record

    splits = {"train": _pairs(32), "validation": _pairs(16, 100), "test": _pairs(8, 200)}
    cfg = RewardStageConfig(name="helpfulness", backbone=str(tiny_model_dir), method=method, lr=3e-3, epochs=2,
                            batch_size=8, max_length=64, early_stopping_patience=None, warmup_ratio=0.0,
                            gradient_checkpointing=True, lora={"r": 8, "alpha": 16, "dropout": 0.0}, precision="bf16")
    metrics = train_reward_model(cfg, tmp_path / "rm", splits, progress=False)
    assert metrics["method"] == method and metrics["kind"] == "causal"
    assert metrics["train_loss_last"] < metrics["train_loss_first"]
    adapter = tmp_path / "rm" / "adapter"
    state = load_file(str(adapter / "adapter_model.safetensors"))
    assert any("lora_A" in k for k in state) and any("score" in k for k in state)  # trunk adapters + the head
    assert adapter_record(adapter)["method"] == method
    if method == "qlora":
        assert adapter_record(adapter)["quantized_from"] == "bfloat16"
    # the score head moved away from its random start
    base = load_sequence_classifier(str(tiny_model_dir), num_labels=1)
    merged = load_sequence_classifier(str(tmp_path / "rm"))
    assert not torch.equal(merged.score.weight.float(), base.score.weight.float())
    # the merged folder reproduces the validation accuracy the trainer reported (up to bf16 ties)
    val = splits["validation"]
    c, r = score_pairs(tmp_path / "rm", [x["prompt"] for x in val], [x["chosen"] for x in val],
                       [x["rejected"] for x in val])
    assert abs(float(np.mean(c > r)) - metrics["validation_accuracy"]) <= 2 / len(val)


def test_reward_model_scoring_holds_no_model_after_use(tiny_model_dir, tmp_path):
    """score_texts loads, scores and releases: no module-level cache keeps a reward model resident."""
    import gc
    import weakref

    import simplesafe.models.load as load_mod
    from simplesafe.train.reward_model import RewardModel

    cfg = RewardStageConfig(name="helpfulness", backbone=str(tiny_model_dir), epochs=1, batch_size=8, max_length=32,
                            early_stopping_patience=None)
    train_reward_model(cfg, tmp_path / "rm", {"train": _pairs(8), "validation": _pairs(4, 50)}, progress=False)
    refs = []
    real = load_mod.load_sequence_classifier

    def tracked(*a, **kw):
        m = real(*a, **kw)
        refs.append(weakref.ref(m))
        return m

    load_mod.load_sequence_classifier = tracked
    try:
        score_texts(tmp_path / "rm", ["q"], ["a"])
        rm = RewardModel(tmp_path / "rm")
        rm.score(["q"], ["a"])
        rm.close()
    finally:
        load_mod.load_sequence_classifier = real
    gc.collect()
    assert len(refs) == 2 and all(r() is None for r in refs)
    assert not hasattr(__import__("simplesafe.train.reward_model", fromlist=["_CACHE"]), "_CACHE")


def test_length_baseline_accuracy_counts_ties_half():
    from simplesafe.train.reward import length_baseline_accuracy

    rows = [{"chosen": "a b c", "rejected": "a"}, {"chosen": "a", "rejected": "a b"}, {"chosen": "a b", "rejected": "c d"}]
    assert length_baseline_accuracy(rows) == 0.5
