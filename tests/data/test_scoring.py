"""Batched scoring: the datasets.map path gives the same columns and values as in-process."""

from __future__ import annotations

import pytest

from simplesafe.data.scoring import score_texts

TEXTS = ["The cat sat on the mat. It was happy.", "> quoted\n\nYou are a fucking idiot. Edit: sorry", "", "Short."] * 3


def test_in_process_columns_and_clean():
    out = score_texts(TEXTS, backend="profanity-check", batch_size=5, clean=True)
    assert set(out) == {"text", "edit_note", "n_words", "fre", "fkg", "toxicity", "profanity"}
    assert all(len(v) == len(TEXTS) for v in out.values())
    assert out["text"][1] == "You are a fucking idiot. Edit: sorry" and out["edit_note"][1] == "Edit: sorry"
    assert out["fre"][2] is None and out["n_words"][2] == 0
    assert out["toxicity"] == out["profanity"]


def test_readability_only():
    out = score_texts(TEXTS[:2], toxicity=False)
    assert set(out) == {"n_words", "fre", "fkg"}
    assert set(score_texts([], toxicity=False)) == {"n_words", "fre", "fkg"}


@pytest.mark.slow
def test_datasets_map_with_workers_matches_in_process():
    a = score_texts(TEXTS, backend="profanity-check", clean=True)
    b = score_texts(TEXTS, backend="profanity-check", clean=True, num_proc=2, parallel_min_rows=1, batch_size=4)
    assert set(a) == set(b)
    for col in a:
        assert a[col] == pytest.approx(b[col]) if col not in ("text", "edit_note") else a[col] == b[col], col


def test_toxicity_section_reaches_the_scorer(fake_detoxify):
    out = score_texts(["you idiot", "a nice day"], backend=fake_detoxify.section)
    assert fake_detoxify.built[-1]["model_type"] == "unbiased"
    assert {"toxic", "insult", "toxicity"} <= set(out) and out["toxicity"][0] > 0.5 > out["toxicity"][1]
    # one scorer per distinct section: the same section again builds nothing new
    n = len(fake_detoxify.built)
    score_texts(["again"], backend=dict(fake_detoxify.section))
    assert len(fake_detoxify.built) == n
