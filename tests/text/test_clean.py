"""Cleaners: each rule on hand-made cases, and no exception on arbitrary text."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from simplesafe.text.clean import (
    clean_answer, clean_question, clean_reddit_text, find_wiki_markup, has_edit_note, normalize_for_dedup,
    normalize_whitespace, remove_quotes, remove_reddit_markdown, remove_urls, split_edit_note,
)


def test_remove_quotes_drops_quoted_lines_only():
    text = "> why is the sky blue?\nBecause of scattering.\n&gt; another quote\nEnd > not a quote"
    assert remove_quotes(text) == "Because of scattering.\nEnd > not a quote"


def test_remove_urls_placeholders_raw_and_markdown_links():
    assert "_URL_" not in remove_urls("see _URL_0_ and (_URL_12_)")
    out = remove_urls("read https://example.com/a?b=1 or www.foo.org now")
    assert "http" not in out and "www" not in out and out.split() == ["read", "or", "now"]
    assert remove_urls("see [this page](http://x.com/a) too").split() == ["see", "this", "page", "too"]
    assert normalize_whitespace(remove_urls("It is here: https://x.org/a. Next one.")) == "It is here:. Next one."


def test_reddit_markdown_keeps_words_with_gt_and_exclamations():
    # redditcleaner's own quote/spoiler rules would mangle these; ours must not
    assert remove_reddit_markdown("The length is **great**!") == "The length is great!"
    assert remove_reddit_markdown("Wow! That is *big*!") == "Wow! That is big!"
    assert remove_reddit_markdown(">!spoiler!< here") == "spoiler here"
    assert remove_reddit_markdown("~~old~~ and `code` and ^(tiny)") == "old and code and tiny"
    assert remove_reddit_markdown("a &amp; b") == "a & b"


def test_normalize_whitespace():
    assert normalize_whitespace("  a   b \t c \n\n\n\n d\ne  ") == "a b c\n\nd e"
    assert normalize_whitespace("word , and .") == "word, and."


def test_edit_note_detected_at_the_end_only():
    body, note = split_edit_note("It works like this. Edit: fixed a typo")
    assert body == "It works like this." and note == "Edit: fixed a typo"
    assert split_edit_note("Main text.\n\nEDIT 2: thanks for the gold!")[1] == "EDIT 2: thanks for the gold!"
    assert has_edit_note("Text here. ETA: a source")
    assert not has_edit_note("I will edit: the file later")  # not after a sentence end
    assert not has_edit_note("Editors edit text. Editing is fun.")
    long_text = "Edit: early note. " + "word " * 200
    assert not has_edit_note(long_text)  # only a trailing note counts


def test_clean_answer_flags_but_keeps_edit_note():
    out = clean_answer("> what?\n\nIt is **blue** _URL_0_.\n\nEdit: typo")
    assert out.text == "It is blue.\n\nEdit: typo"
    assert out.has_edit and out.edit_note == "Edit: typo"
    assert not clean_answer("Plain answer.").has_edit


def test_clean_question_is_title_plus_body():
    assert clean_question("Why is the sky blue?", "I mean *really* _URL_0_") == "Why is the sky blue?\n\nI mean really"
    assert clean_question("Why?", "") == "Why?"
    assert clean_question("Why?", "why?") == "Why?"


def test_wiki_markup_detection():
    assert find_wiki_markup("the city { { infobox } } is big") is not None
    assert find_wiki_markup("[[File:Map.png|thumb|A map]] text") is not None
    assert find_wiki_markup("{| class=\"wikitable\"\n|-\n| a\n|}") is not None
    assert find_wiki_markup("== History ==\nText") is not None
    assert find_wiki_markup("a normal sentence, with (brackets) and a | pipe.") is None


def test_normalize_for_dedup():
    assert normalize_for_dedup("Why is the SKY blue?") == normalize_for_dedup("why is the sky   blue")


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_cleaners_never_raise(text):
    assert isinstance(clean_reddit_text(text), str)
    assert isinstance(clean_answer(text).text, str)
    assert isinstance(clean_question(text, text), str)
    find_wiki_markup(text)
    split_edit_note(text)


def test_non_string_input_is_empty():
    assert clean_reddit_text(None) == ""  # type: ignore[arg-type]
