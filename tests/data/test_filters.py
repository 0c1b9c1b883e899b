"""Filters: thresholds at their edges, reasons kept, the funnel, the question/meta rule."""

from __future__ import annotations

import json
import math
from pathlib import Path

from simplesafe.data.filters import (
    EditNoteFilter, ExactDuplicateFilter, Funnel, MaxWordsFilter, MinScoreFilter, MinWordsFilter,
    QuestionPostFilter, ReadabilityFilter, ToxicityFilter, WikiMarkupFilter, question_post_verdict, run_filters,
)

FIXTURE = Path(__file__).parent / "fixtures" / "question_posts.jsonl"


def test_word_limits_at_the_edges():
    assert MinWordsFilter(20)({"n_words": 20}) == (True, None)
    ok, why = MinWordsFilter(20)({"n_words": 19})
    assert not ok and "19 words < 20" in why
    assert MaxWordsFilter(500)({"n_words": 500})[0] and not MaxWordsFilter(500)({"n_words": 501})[0]


def test_readability_thresholds():
    f = ReadabilityFilter(60, 9)
    assert f({"fre": 60.0, "fkg": 8.99})[0]
    assert not f({"fre": 59.9, "fkg": 5})[0]
    assert not f({"fre": 80, "fkg": 9.0})[0]  # FKG must be < 9
    ok, why = f({"fre": None, "fkg": None})
    assert not ok and "undefined" in why
    assert not f({"fre": math.nan, "fkg": 3})[0]


def test_toxicity_score_and_edit_filters():
    assert ToxicityFilter(0.1)({"toxicity": 0.1})[0] and not ToxicityFilter(0.1)({"toxicity": 0.11})[0]
    assert MinScoreFilter(4)({"score": 4})[0] and not MinScoreFilter(4)({"score": 3})[0]
    assert MinScoreFilter(4)({"score": 0, "has_votes": False})[0]  # preference pairs have no votes
    assert MinScoreFilter(4)({"score": None})[0]
    assert not EditNoteFilter()({"has_edit": True, "edit_note": "Edit: typo"})[0]


def test_wiki_markup_and_duplicates():
    assert not WikiMarkupFilter()({"text": "a {{ cite }} b"})[0]
    dup = ExactDuplicateFilter()
    assert dup({"id": 1, "text": "Why is the sky blue?"})[0]
    ok, why = dup({"id": 2, "text": "why is the SKY blue"})
    assert not ok and "duplicate of 1" in why


def test_run_filters_keeps_every_reject_with_reason_and_counts_funnel():
    docs = [{"id": i, "split": "train" if i < 3 else "test", "n_words": n, "toxicity": t}
            for i, (n, t) in enumerate([(30, 0.0), (5, 0.0), (30, 0.9), (40, 0.0)])]
    rejects, funnel = [], Funnel()
    kept = run_filters(docs, [MinWordsFilter(20), ToxicityFilter(0.1)], "answer", funnel, rejects)
    assert [d["id"] for d in kept] == [0, 3]
    assert {(r["id"], r["stage"], r["reason"].split(":")[0]) for r in rejects} == {(1, "answer", "min_words"), (2, "answer", "toxicity")}
    assert all("scores" in r for r in rejects)
    rows = {r["step"]: r for r in funnel.rows()}
    assert rows["answer/min_words"]["train kept"] == 2 and rows["answer/min_words"]["train rejected"] == 1
    assert rows["answer/toxicity"]["train rejected"] == 1 and rows["answer/toxicity"]["test kept"] == 1


def test_question_rule_cases():
    assert question_post_verdict("ELI5: why do cats purr") == (True, None)
    assert question_post_verdict("Black holes", "What happens inside one?")[0]
    ok, why = question_post_verdict("Ask Anything Wednesday - Physics")
    assert not ok and why.startswith("meta post")
    assert not question_post_verdict("[META] new rules?")[0]  # meta wins over '?'
    assert not question_post_verdict("We just hit 1.5 million subscribers!")[0]
    ok, why = question_post_verdict("Black holes")
    assert not ok and why.startswith("not a question")
    assert not QuestionPostFilter()({"title": "Announcement: new mods"})[0]


def question_rule_precision_recall(path: Path = FIXTURE) -> dict:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    tp = fp = fn = tn = 0
    for r in rows:
        pred = question_post_verdict(r["title"])[0]
        tp += pred and r["is_question"]
        fp += pred and not r["is_question"]
        fn += (not pred) and r["is_question"]
        tn += (not pred) and not r["is_question"]
    # the positive class for a *filter* is "reject": precision/recall of rejecting non-questions
    return {"n": len(rows), "question_precision": tp / (tp + fp), "question_recall": tp / (tp + fn),
            "reject_precision": tn / (tn + fn), "reject_recall": tn / (tn + fp)}


def test_question_rule_on_labelled_sample():
    m = question_rule_precision_recall()
    print(m)
    assert m["n"] >= 80
    assert m["question_precision"] >= 0.9 and m["question_recall"] >= 0.9
    assert m["reject_precision"] >= 0.9 and m["reject_recall"] >= 0.9


def test_question_rule_never_raises():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=150, deadline=None)
    @given(st.text(), st.text())
    def check(title, body):
        ok, reason = question_post_verdict(title, body)
        assert ok == (reason is None)

    check()
