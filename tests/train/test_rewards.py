"""Composite reward: weights, each source scored and reported on its own, TRL reward functions."""

from __future__ import annotations

import numpy as np
import pytest

from simplesafe.errors import ConfigError
from simplesafe.train.rewards import CompositeReward, RewardSource, length_penalty, simplicity_score

SIMPLE = "The sun is hot. It gives us light."
HARD = ("Notwithstanding considerable methodological heterogeneity, contemporary epidemiological investigations "
        "consistently demonstrate statistically significant associations between socioeconomic deprivation and morbidity.")


def test_simplicity_is_a_smooth_step_around_the_target_grade():
    assert simplicity_score(SIMPLE) > 0.9
    assert simplicity_score(HARD) < 0.05
    assert simplicity_score("") == 0.0
    # moving the target grade above the hard text's grade makes it score higher
    assert simplicity_score(HARD, max_grade=40, min_fre=-60) > simplicity_score(HARD)


def test_length_penalty_by_hand():
    assert length_penalty("a b c", min_words=2, max_words=4) == 0.0
    assert length_penalty("a", min_words=3, max_words=4) == pytest.approx(-2 / 4)
    assert length_penalty("a b c d e f", min_words=None, max_words=4) == pytest.approx(-2 / 4)
    assert length_penalty(" ".join("w" * 1 for _ in range(50)), None, 4) == -1.0


def test_total_is_the_weighted_sum_and_each_source_is_reported():
    reward = CompositeReward(
        [RewardSource(kind="simplicity", weight=2.0),
         RewardSource(kind="safety", weight=0.5, toxicity_backend="profanity-check"),
         RewardSource(kind="length", name="brevity", max_words=5, weight=1.0)],
        custom={"constant": (lambda qs, ans: [1.0] * len(ans), -3.0)},
    )
    answers = [SIMPLE, HARD, "shut the fuck up you idiot"]
    s = reward.score(["q"] * 3, answers)
    assert set(s.parts) == {"simplicity", "safety", "brevity", "constant"}
    expected = 2.0 * s.parts["simplicity"] + 0.5 * s.parts["safety"] + s.parts["brevity"] - 3.0
    np.testing.assert_allclose(s.total, expected)
    assert s.parts["safety"][2] < 0.5 < s.parts["safety"][0]  # the insult is the unsafe one
    assert s.parts["brevity"][0] == pytest.approx(-3 / 5)  # 8 words, 3 over the limit of 5
    means = s.means()
    assert means["reward/total"] == pytest.approx(float(np.mean(s.total)))
    assert means["reward/brevity"] == pytest.approx(float(np.mean(s.parts["brevity"])))


def test_trl_reward_functions_are_named_per_source_and_unweighted():
    reward = CompositeReward([RewardSource(kind="simplicity", weight=5.0),
                              RewardSource(kind="length", max_words=3, weight=2.0)])
    funcs = reward.trl_reward_funcs()
    assert [f.__name__ for f in funcs] == ["simplicity", "length"]
    assert reward.weights == [5.0, 2.0]
    out = funcs[1](prompts=["p", "p"], completions=["a b", [{"role": "assistant", "content": "a b c d e"}]],
                   question=["q", "q"])
    assert out == [0.0, pytest.approx(-2 / 3)]
    assert funcs[0](["p"], [SIMPLE]) == [pytest.approx(simplicity_score(SIMPLE))]


def test_learned_reward_model_source(tiny_model_dir, tmp_path):
    """An ``rm`` source scores (question, answer) with a sequence classifier folder."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    rm = AutoModelForSequenceClassification.from_pretrained(str(tiny_model_dir), num_labels=1)
    rm.config.pad_token_id = AutoTokenizer.from_pretrained(str(tiny_model_dir)).pad_token_id
    rm.save_pretrained(tmp_path / "rm")
    AutoTokenizer.from_pretrained(str(tiny_model_dir)).save_pretrained(tmp_path / "rm")
    reward = CompositeReward([RewardSource(kind="rm", path=str(tmp_path / "rm"), weight=2.0)])
    s = reward.score(["Why?", "Why?"], ["Because.", "Because it is so."])
    assert list(s.parts) == ["rm_rm"]
    np.testing.assert_allclose(s.total, 2.0 * s.parts["rm_rm"])
    # the score is the classifier's logit on the report's prompt format, in the dtype of the one rule
    from simplesafe.models.load import inference_dtype, torch_dtype

    tok = AutoTokenizer.from_pretrained(str(tmp_path / "rm"))
    rm = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "rm"),
                                                            dtype=torch_dtype(inference_dtype("auto", "cpu")))
    assert next(reward._scorer(reward.sources[0]).model.parameters()).dtype == rm.dtype
    with torch.no_grad():
        logit = rm(**tok("### Human: Why? ### Assistant: Because.", return_tensors="pt")).logits[0, 0].item()
    assert s.parts["rm_rm"][0] == pytest.approx(logit, rel=1e-4, abs=1e-5)


def test_bad_reward_configs_are_refused():
    with pytest.raises(ValueError, match="path"):
        RewardSource(kind="rm")
    with pytest.raises(ValueError, match="min_words"):
        RewardSource(kind="length")
    with pytest.raises(ConfigError, match="distinct names"):
        CompositeReward([RewardSource(kind="simplicity"), RewardSource(kind="simplicity")])
    with pytest.raises(ConfigError, match="no sources"):
        CompositeReward([])


def test_a_train_rm_folder_is_scored_by_the_rm_trainers_own_helper(tiny_model_dir, tmp_path):
    """Folders written by ``train rm`` carry reward_config.json; their scores match ``score_texts``."""
    import json

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from simplesafe.train.reward_model import REWARD_CONFIG, score_texts

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    rm = AutoModelForSequenceClassification.from_pretrained(str(tiny_model_dir), num_labels=1)
    rm.config.pad_token_id = tok.pad_token_id
    rm.save_pretrained(tmp_path / "rm-safety")
    tok.save_pretrained(tmp_path / "rm-safety")
    (tmp_path / "rm-safety" / REWARD_CONFIG).write_text(json.dumps(
        {"kind": "causal", "use_prompt": True, "template": "### Human: {question} ### Assistant:", "max_length": 64}))
    reward = CompositeReward([RewardSource(kind="rm", name="safety_rm", path=str(tmp_path / "rm-safety"))])
    qs, ans = ["Why?", "How?"], ["Because.", "Like this, slowly."]
    np.testing.assert_allclose(reward.score(qs, ans).parts["safety_rm"], score_texts(tmp_path / "rm-safety", qs, ans),
                               rtol=1e-5)


def test_safety_source_takes_the_toxicity_section(fake_detoxify):
    from simplesafe.config import validate
    from simplesafe.train.ppo_config import PPOStageConfig

    cfg = validate(PPOStageConfig, {"rewards": [{"kind": "safety", "toxicity": fake_detoxify.section}]})
    reward = CompositeReward(cfg.rewards)
    s = reward.score(["q", "q"], ["you idiot", "a kind answer"])
    assert fake_detoxify.built[-1]["model_type"] == "unbiased"
    assert s.parts["safety"][0] == pytest.approx(0.1) and s.parts["safety"][1] == pytest.approx(0.98)
