"""Routing rules: single answers, ties, pair strategies, the 10-pair cap, flagged answers."""

from __future__ import annotations

import math
import random

import pytest

from simplesafe.data.split import ScoredAnswer, pair_weight, rank_answers, route_question, select_pairs


def A(i, score, *flags):
    return ScoredAnswer(f"a{i}", f"answer {i}", score, list(flags))


def test_single_clean_answer_goes_to_sft():
    r = route_question([A(1, 10)])
    assert r.dataset == "sft" and r.sft_answer.id == "a1"


def test_single_flagged_answer_goes_to_rl():
    r = route_question([A(1, 10, "toxicity: 0.9")])
    assert r.dataset == "rl" and r.sft_answer is None


def test_no_answers_means_rl_prompt():
    assert route_question([]).dataset == "rl"


def test_tied_answers_one_moves_to_sft():
    r = route_question([A(1, 5), A(2, 5)])
    assert r.dataset == "sft" and r.sft_answer.id == "a1"


def test_tied_answers_are_not_ranked():
    ranked, ties = rank_answers([A(1, 10), A(2, 5), A(3, 5), A(4, 1)])
    assert [a.id for a in ranked] == ["a1", "a4"]
    assert [[a.id for a in g] for g in ties] == [["a2", "a3"]]


def test_question_with_ranked_and_tied_answers_goes_to_rm_only():
    r = route_question([A(1, 10), A(2, 5), A(3, 5), A(4, 1)])
    assert r.dataset == "rm" and r.sft_answer is None
    assert [(c.id, rj.id) for c, rj in r.pairs] == [("a1", "a4")]
    assert r.k == 2 and r.weight == 1.0


def test_all_pairs_weight_is_inverse_binomial():
    answers = [A(i, 10 - i) for i in range(4)]
    r = route_question(answers, "all")
    assert r.dataset == "rm" and len(r.pairs) == 6 and r.k == 4
    assert r.weight == pytest.approx(1 / 6)
    assert all(c.score > rj.score for c, rj in r.pairs)


def test_more_than_ten_pairs_are_capped():
    answers = [A(i, 100 - i) for i in range(7)]  # C(7, 2) = 21 pairs
    r = route_question(answers, "all", max_pairs=10, rng=random.Random(1))
    assert len(r.pairs) == 10
    assert len({(c.id, rj.id) for c, rj in r.pairs}) == 10
    assert r.k == 7
    assert r.weight * len(r.pairs) == pytest.approx(1.0)  # 1/10 each, not 1/C(7,2) = 1/21


def kept_weight_total(route):
    return route.weight * len(route.pairs)


@pytest.mark.parametrize("strategy", ["all", "top2", "best_worst", "random"])
@pytest.mark.parametrize("k", [2, 3, 5, 10])
def test_each_questions_kept_pairs_sum_to_one(strategy, k):
    answers = [A(i, 100 - i) for i in range(k)]
    r = route_question(answers, strategy, max_pairs=10, rng=random.Random(k))
    assert r.dataset == "rm" and r.k == k
    assert kept_weight_total(r) == pytest.approx(1.0)
    if strategy == "all" and math.comb(k, 2) <= 10:
        assert len(r.pairs) == math.comb(k, 2) and r.weight == pytest.approx(pair_weight(k))  # report eq. 10
    if strategy != "all":
        assert len(r.pairs) == 1 and r.weight == 1.0


def test_single_pair_strategies_weigh_their_pair_one_at_k_10():
    answers = [A(i, 100 - i) for i in range(10)]
    for strategy in ("top2", "best_worst", "random"):
        r = route_question(answers, strategy, rng=random.Random(0))
        assert len(r.pairs) == 1 and r.weight == 1.0, strategy
    r = route_question(answers, "all", max_pairs=10, rng=random.Random(0))
    assert len(r.pairs) == 10 and r.weight == pytest.approx(0.1)  # 10 kept pairs of C(10,2) = 45


def test_pairs_left_out_for_flagged_chosen_share_the_weight():
    answers = [A(0, 40, "toxicity: 0.8"), A(1, 30), A(2, 20), A(3, 10)]
    r = route_question(answers, "all")
    assert len(r.pairs) == 3 and r.k == 4  # (a1,a2) (a1,a3) (a2,a3); a0 never chosen
    assert r.weight == pytest.approx(1 / 3)


def test_strategies_pick_the_right_pair():
    answers = [A(0, 40), A(1, 30), A(2, 20), A(3, 10)]
    ranked, _ = rank_answers(answers)
    rng = random.Random(0)
    assert [(c.id, r.id) for c, r in select_pairs(ranked, "top2", 10, rng)] == [("a0", "a1")]
    assert [(c.id, r.id) for c, r in select_pairs(ranked, "best_worst", 10, rng)] == [("a0", "a3")]
    rand = select_pairs(ranked, "random", 10, rng)
    assert len(rand) == 1 and rand[0][0].score > rand[0][1].score
    with pytest.raises(ValueError):
        select_pairs(ranked, "bogus", 10, rng)


def test_flagged_answers_only_appear_as_rejected():
    answers = [A(0, 40, "toxicity: 0.8"), A(1, 30), A(2, 20, "edit_note: x"), A(3, 10, "min_score: 1 < 4")]
    for strategy in ("all", "top2", "best_worst", "random"):
        r = route_question(answers, strategy, rng=random.Random(3))
        assert r.dataset == "rm"
        for chosen, rejected in r.pairs:
            assert chosen.clean, strategy
    r = route_question(answers, "all")
    assert {(c.id, rj.id) for c, rj in r.pairs} == {("a1", "a2"), ("a1", "a3")}
    assert r.k == 4  # K counts all ranked answers
    r = route_question(answers, "top2")
    assert [(c.id, rj.id) for c, rj in r.pairs] == [("a1", "a2")]


def test_all_ranked_answers_flagged_gives_rl():
    r = route_question([A(0, 40, "toxicity: 0.5"), A(1, 30, "toxicity: 0.9")])
    assert r.dataset == "rl"


def test_prefer_sft_uses_best_clean_answer_and_prefer_rl():
    r = route_question([A(0, 1), A(1, 0, "dispreferred")], prefer="sft")
    assert r.dataset == "sft" and r.sft_answer.id == "a0"
    r = route_question([A(0, 1, "readability: not simple"), A(1, 0, "dispreferred")], prefer="sft")
    assert r.dataset == "rl"  # best answer flagged; the pair has no valid chosen answer
    assert route_question([A(0, 1), A(1, 0)], prefer="rl").dataset == "rl"


def test_pair_weight():
    assert pair_weight(2) == 1.0 and pair_weight(5) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        pair_weight(1)
