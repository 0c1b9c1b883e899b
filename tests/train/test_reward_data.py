"""Reward-model pairs: loading for each named source, checks on rows, length-grouped batches."""

from __future__ import annotations

import json

import numpy as np
import pytest

from simplesafe.errors import DataError
from simplesafe.train.reward import RewardStageConfig
from simplesafe.train.reward_data import load_pairs, split_hh_dialogue


def _pairs(n: int, offset: int = 0) -> list[dict]:
    # an easy preference: a polite plain answer beats a rude one
    return [{"id": f"p{i}", "prompt": f"Question number {i}?", "chosen": f"A kind answer about {i}, thanks.",
             "rejected": f"Go away you idiot {i}.", "weight": 1.0 if i % 2 else 0.5} for i in range(offset, offset + n)]


def test_split_hh_dialogue_takes_the_final_assistant_turn():
    text = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: help me\n\nAssistant: Sure, here is how."
    prompt, answer = split_hh_dialogue(text)
    assert prompt == "Human: hi\n\nAssistant: hello\n\nHuman: help me"
    assert answer == "Sure, here is how."
    with pytest.raises(ValueError):
        split_hh_dialogue("\n\nHuman: no reply")


def test_named_sources_load_with_disjoint_splits(bundled_data):
    safety = load_pairs(RewardStageConfig(name="safety"))
    assert sum(len(v) for v in safety.values()) >= 2290  # 2,312 bundled pairs, broken or empty final turns dropped
    assert all(r["prompt"].startswith("Human:") and r["chosen"] and r["rejected"] for r in safety["train"])
    train_prompts = {r["prompt"] for r in safety["train"]}
    assert not train_prompts & {r["prompt"] for r in safety["test"]}
    simple = load_pairs(RewardStageConfig(name="simplicity"))
    assert RewardStageConfig(name="simplicity").prompt_used() is False
    row = simple["train"][0]
    assert row["prompt"] == "" and " ." not in row["chosen"]  # detokenised
    assert len(simple["validation"]) > 50 and len(simple["test"]) > 50


def test_rm_rows_need_fields_and_valid_weights(tmp_path):
    from simplesafe.io import write_rows

    d = tmp_path / "rm"
    write_rows(d / "train.jsonl", _pairs(2) + [{"prompt": "q", "chosen": "a"}])
    with pytest.raises(DataError, match=r"train.jsonl, line 3, field 'rejected'"):
        load_pairs(RewardStageConfig(name="helpfulness", data=str(d)))
    write_rows(d / "train.jsonl", [dict(_pairs(1)[0], weight=-1)])
    with pytest.raises(DataError, match="weight"):
        load_pairs(RewardStageConfig(name="helpfulness", data=str(d)))
    with pytest.raises(Exception, match="pairs"):
        RewardStageConfig(name="brevity").source()


def test_aligned_rows_give_simplicity_pairs(tmp_path):
    from simplesafe.train.reward import RewardStageConfig
    from simplesafe.train.reward_data import load_pairs

    f = tmp_path / "docs.jsonl"
    f.write_text("".join(json.dumps({"id": f"d{i}", "simple": f"A cat sat {i}.", "normal": f"A feline was seated {i}."})
                         + "\n" for i in range(40)) + json.dumps({"id": "same", "simple": "x", "normal": "x"}) + "\n")
    cfg = RewardStageConfig(name="simplicity", simple_file=str(f))
    splits = load_pairs(cfg)
    rows = [r for s in splits.values() for r in s]
    assert len(rows) == 40 and all(r["chosen"].startswith("A cat") and r["prompt"] == "" for r in rows)
    keys = {s: {r["_key"] for r in v} for s, v in splits.items()}
    assert not (keys["train"] & keys["test"]) and not (keys["train"] & keys["validation"])
    with pytest.raises(Exception, match="english_file"):
        load_pairs(RewardStageConfig(name="simplicity", simple_file=str(f), english_file=str(f)))


def test_length_grouped_batches_are_seeded_and_cover_everything():
    from simplesafe.train.reward_data import LengthGroupedBatches

    lengths = list(np.random.default_rng(0).integers(5, 200, 301))
    a, b = LengthGroupedBatches(lengths, 8, seed=3), LengthGroupedBatches(lengths, 8, seed=3)
    ea, eb = list(a), list(b)
    assert ea == eb and sorted(i for batch in ea for i in batch) == list(range(301))
    assert list(a) != ea  # a new order every epoch
    spread = np.mean([max(lengths[i] for i in batch) - min(lengths[i] for i in batch) for batch in ea])
    assert spread < 40  # similar lengths together (random batches: about 140)
