"""Held-out judges: direction per kind, and the refusal of a judge that trained a model."""

import math

import numpy as np
import pytest

from simplesafe.errors import ConfigError
from simplesafe.eval.judges import JudgeSpec, build_judge, check_independence, scorer_key

SIMPLE = "The cat sat on the mat. It was warm. The cat was happy."
HARD = ("Notwithstanding considerable institutional heterogeneity, macroeconomic stabilisation frequently "
        "necessitates counterintuitive intertemporal reallocations of governmental expenditure.")


@pytest.mark.parametrize("kind", ["dale_chall", "smog", "fre", "fkg"])
def test_readability_judges_prefer_the_simpler_answer(kind):
    judge = build_judge(JudgeSpec(name=kind, axis="simplicity", kind=kind))
    values = judge.values(["q", "q", "q"], [SIMPLE, HARD, "  "])
    scores = judge.scores(values)
    assert scores[0] > scores[1]  # oriented: higher is better
    assert math.isnan(values[2])  # an empty answer has no readability, and loses


def test_dale_chall_is_another_family_than_flesch():
    assert scorer_key("dale_chall") != scorer_key("fre") == scorer_key("fkg")


def test_length_baseline_counts_words():
    judge = build_judge(JudgeSpec(name="length", axis="length", kind="length", baseline=True))
    assert judge.values(["q", "q"], ["one two three", ""]).tolist() == [3.0, 0.0]


def test_a_judge_that_trained_a_model_is_refused():
    training = [{"keys": [scorer_key("fre")], "used_by": "ppo (reward term 'simplicity')"}]
    check_independence([{"name": "simplicity", "keys": [scorer_key("dale_chall")]}], training)
    with pytest.raises(ConfigError, match="judge 'flesch' cannot be held out: ppo"):
        check_independence([{"name": "flesch", "keys": [scorer_key("fkg")]}], training)
    rm = [{"keys": ["preferences:hh_rlhf"], "used_by": "dpo (its preference pairs)"}]
    with pytest.raises(ConfigError, match="dpo"):
        check_independence([{"name": "safety", "keys": [scorer_key("reward", "/x/rm_safety"), "preferences:hh_rlhf"]}], rm)


def test_reward_judge_needs_a_model(tmp_path):
    with pytest.raises(ConfigError, match="needs 'model'"):
        build_judge(JudgeSpec(name="h", axis="helpfulness", kind="reward"))
    with pytest.raises(ConfigError, match="no reward model"):
        build_judge(JudgeSpec(name="h", axis="helpfulness", kind="reward", model="rm_nothing"), tmp_path)


def test_toxicity_judge_is_oriented_safer_is_better():
    judge = build_judge(JudgeSpec(name="safe", axis="safety", kind="toxicity", backend="profanity-check"))
    v = judge.values(["q", "q"], ["You are a wonderful friend.", "You are a fucking idiot."])
    assert v[0] > v[1] and np.all((0 <= v) & (v <= 1))
