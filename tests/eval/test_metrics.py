"""Metric values against hand-computed cases."""

import json

import pytest

from simplesafe.eval.metrics import MetricsConfig, aggregate, bertscore_scores, compute_metrics, rouge_scores


def test_rouge_hand_computed():
    # candidate "the cat sat" vs reference "the cat sat on the mat":
    # ROUGE-1 P = 3/3, R = 3/6 -> F = 2/3; ROUGE-2 P = 2/2, R = 2/5 -> F = 4/7; LCS = 3 -> ROUGE-L = 2/3
    s = rouge_scores(["the cat sat"], ["the cat sat on the mat"])
    assert s["rouge1"][0] == pytest.approx(2 / 3)
    assert s["rouge2"][0] == pytest.approx(4 / 7)
    assert s["rougeL"][0] == pytest.approx(2 / 3)
    assert s["rougeLsum"][0] == pytest.approx(2 / 3)
    assert rouge_scores(["dogs bark"], ["the cat sat"])["rouge1"][0] == 0.0


def test_bertscore_local_encoder(minilm_path):
    s = bertscore_scores(["the cat sat on the mat", "the cat", ""], ["the cat sat on the mat"] * 3,
                         model=minilm_path, num_layers=6)
    assert s["bertscore_f1"][2] == 0.0  # an empty answer
    assert s["bertscore_f1"][0] == pytest.approx(1.0, abs=1e-4)
    # a candidate contained in its reference: every candidate token matches well (high P), not every reference token (lower R)
    assert s["bertscore_p"][1] > s["bertscore_r"][1]


def test_aggregate_per_seed_and_ci():
    rows = [{"seed": s, "fre": v} for s, vals in ((0, [10, 20]), (1, [30, 40]), (2, [50, 60])) for v in vals]
    agg = aggregate(rows, n_boot=200, seed=0)
    m = agg["metrics"]["fre"]
    assert m["mean"] == pytest.approx(35.0)
    assert m["per_seed"] == {"0": 15.0, "1": 35.0, "2": 55.0}
    assert m["seed_std"] == pytest.approx(20.0)  # sample std of 15, 35, 55
    assert m["ci_low"] < 35 < m["ci_high"]
    const = aggregate([{"fre": 5.0}] * 10, n_boot=50)["metrics"]["fre"]
    assert (const["ci_low"], const["ci_high"]) == (5.0, 5.0)


def test_compute_metrics_end_to_end(tmp_path):
    gen = tmp_path / "gen.jsonl"
    rows = [{"id": "1", "instruction": "q1", "output": "The cat sat on the mat.", "generator": "m", "seed": 0},
            {"id": "2", "instruction": "q2", "output": "You stupid idiot, shut up.", "generator": "m", "seed": 0}]
    gen.write_text("".join(json.dumps(r) + "\n" for r in rows))
    refs = tmp_path / "refs.jsonl"
    refs.write_text(json.dumps({"id": "1", "reference": "The cat sat on the mat."}) + "\n")
    cfg = MetricsConfig(references=str(refs), bertscore=False, toxicity_backend="profanity-check", n_boot=50)
    s = compute_metrics(gen, cfg, tmp_path / "m.json")
    per = [json.loads(x) for x in (tmp_path / "m.answers.jsonl").read_text().splitlines()]
    # FRE = 206.835 - 1.015 * 6/1 - 84.6 * 6/6 = 116.145; FKG = 0.39 * 6 + 11.8 * 1 - 15.59 = -1.45
    assert per[0]["fre"] == pytest.approx(116.145, abs=1e-6)
    assert per[0]["fkg"] == pytest.approx(-1.45, abs=1e-6)
    assert per[0]["n_words"] == 6 and per[0]["rouge1"] == pytest.approx(1.0)
    assert "rouge1" not in per[1]
    assert per[1]["toxicity"] > 0.5 > per[0]["toxicity"]
    assert per[0]["safe"] and not per[1]["safe"] and per[0]["simple"]
    assert s["n_with_reference"] == 1
    assert s["metrics"]["rouge1"]["n"] == 1 and s["metrics"]["n_words"]["mean"] == pytest.approx(5.5)
    assert json.loads((tmp_path / "m.json").read_text())["metrics"]["fre"]["n"] == 2


def test_toxicity_section_selects_scorer_and_safe_threshold(fake_detoxify):
    from simplesafe.config import validate
    from simplesafe.eval.metrics import score_answers

    rows = [{"instruction": "q", "output": "you idiot"}, {"instruction": "q", "output": "a kind answer"}]
    cfg = validate(MetricsConfig, {"bertscore": False, "toxicity": fake_detoxify.section})
    scored = score_answers(rows, cfg)
    assert fake_detoxify.built[-1]["model_type"] == "unbiased"
    assert [r["safe"] for r in scored] == [False, True] and "tox_insult" in scored[0]
    lenient = validate(MetricsConfig, {"bertscore": False, "toxicity": {**fake_detoxify.section, "threshold": 0.95}})
    assert [r["safe"] for r in score_answers(rows, lenient)] == [True, True]
