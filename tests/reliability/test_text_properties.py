"""Property-based checks: text functions never raise on arbitrary text and are idempotent."""

import math

from hypothesis import given, settings, strategies as st

from simplesafe.text.detok import detokenize
from simplesafe.text.readability import flesch_kincaid_grade, flesch_reading_ease, word_count


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_detokenize_total_and_idempotent(text):
    once = detokenize(text)
    assert detokenize(once) == once


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=300))
def test_readability_total(text):
    fre, fkg = flesch_reading_ease(text), flesch_kincaid_grade(text)
    assert isinstance(fre, float) and isinstance(fkg, float)
    assert word_count(text) >= 0
    if text.strip():
        assert not math.isnan(fre)
