"""Best-of-n keeps the argmax of the reward; expert iteration fine-tunes on those answers."""

from __future__ import annotations

import json

import pytest

from simplesafe.train.bon import BestOfNStageConfig, pick_best, run_bon
from simplesafe.train.rewards import CompositeReward


def by_length(qs, answers):
    return [float(len(a)) for a in answers]


def test_pick_best_is_the_argmax_with_all_scores_kept():
    reward = CompositeReward([], custom={"len": (by_length, 1.0)})
    rows = pick_best(["q1", "q2"], [["aa", "aaaa", "a"], ["bbb", "b", "bbb"]], reward)
    assert [r["response"] for r in rows] == ["aaaa", "bbb"]  # ties: the first one
    assert rows[0]["candidate_rewards"] == [2.0, 4.0, 1.0]
    assert rows[0]["reward"] == 4.0 and rows[0]["reward/len"] == 4.0
    assert rows[1]["mean_sample_reward"] == pytest.approx(7 / 3)


@pytest.fixture(scope="module")
def rl_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("rl")
    qs = ["Why is the sky blue?", "How do birds fly?", "What is a volcano?", "Why do we sleep?", "What is rain?"]
    for split in ("train", "test"):
        (d / f"{split}.jsonl").write_text("".join(json.dumps({"id": f"{split}{i}", "prompt": q}) + "\n"
                                                  for i, q in enumerate(qs)))
    return d


def test_best_of_n_on_the_micro_model_resumes_and_beats_the_average_sample(tiny_model_dir, rl_dir, tmp_path):
    cfg = BestOfNStageConfig(policy=str(tiny_model_dir), data=[str(rl_dir)], split="test", n=4, max_new_tokens=10,
                             batch_size=2, rewards=[{"kind": "simplicity"}, {"kind": "length", "min_words": 3}])
    out = tmp_path / "bon"
    # an interrupted run left two prompts done: they are not redone
    (out).mkdir()
    done = {"id": "test0", "question": "Why is the sky blue?", "response": "kept from before", "reward": 9.0,
            "mean_sample_reward": 1.0, "reward/simplicity": 1.0, "reward/length": 0.0,
            "mean_sample_reward/simplicity": 1.0, "mean_sample_reward/length": 0.0, "candidate_rewards": [9.0], "n": 4}
    (out / "outputs.jsonl").write_text(json.dumps(done) + "\n")
    metrics = run_bon(cfg, out, progress=False)
    rows = [json.loads(line) for line in (out / "outputs.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["test0", "test1", "test2", "test3", "test4"]
    assert rows[0]["response"] == "kept from before"
    for r in rows[1:]:
        assert len(r["candidate_rewards"]) == 4 and r["reward"] == max(r["candidate_rewards"])
        assert r["reward"] == pytest.approx(r["reward/simplicity"] + r["reward/length"])
    assert metrics["best_reward"] >= metrics["mean_sample_reward"]
    assert metrics["prompts"] == 5


@pytest.mark.slow
def test_expert_iteration_runs_rounds_of_best_of_n_then_sft(tiny_model_dir, rl_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from simplesafe.train.online import ExpertIterationStageConfig, run_expert_iteration

    cfg = ExpertIterationStageConfig(policy=str(tiny_model_dir), data=[str(rl_dir)], rounds=2, prompts_per_round=3,
                                     n=2, max_new_tokens=8, rewards=[{"kind": "simplicity"}],
                                     sft={"epochs": 1, "batch_size": 4, "grad_accum": 1, "lr": 1e-3,
                                          "early_stopping_patience": None})
    out = tmp_path / "expiter"
    metrics = run_expert_iteration(cfg, out, progress=False)
    assert metrics["rounds"] == 2 and len(metrics["best_reward_per_round"]) == 2
    rounds = [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]
    assert rounds[1]["policy_in"] == str(out / "round_0")  # round 2 samples from round 1's model
    sft_rows = [json.loads(line) for line in (out / "round_0" / "sft_rows.jsonl").read_text().splitlines()]
    chosen = [json.loads(line) for line in (out / "round_0" / "bon" / "outputs.jsonl").read_text().splitlines()]
    assert [r["completion"] for r in sft_rows] == [r["response"] for r in chosen if r["response"].strip()]
    a = AutoModelForCausalLM.from_pretrained(str(out))
    b = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    assert any((pa - pb).abs().max() > 0 for pa, pb in zip(a.parameters(), b.parameters()))
