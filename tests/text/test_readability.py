import math

from simplesafe.text.readability import flesch_kincaid_grade, flesch_reading_ease, is_simple, word_count


def test_simple_text_passes_report_bar():
    text = "The cat sat on the mat. It was a warm day. The cat was happy."
    assert flesch_reading_ease(text) >= 60 and flesch_kincaid_grade(text) < 9 and is_simple(text)


def test_complex_text_fails_report_bar():
    text = ("Notwithstanding the aforementioned considerations, the institutionalization of comprehensive "
            "regulatory frameworks necessitates extraordinary interdisciplinary deliberation.")
    assert not is_simple(text)


def test_formula_matches_hand_computation():
    # 2 sentences, 8 words, 8 syllables (all one-syllable words in CMUdict)
    text = "The dog ran. The cat sat on a mat."
    words, sents, syll = 9, 2, 9
    fre = 206.835 - 1.015 * words / sents - 84.6 * syll / words
    fkg = 0.39 * words / sents + 11.8 * syll / words - 15.59
    assert math.isclose(flesch_reading_ease(text), fre, abs_tol=0.01)
    assert math.isclose(flesch_kincaid_grade(text), fkg, abs_tol=0.01)


def test_empty_is_nan_and_word_count():
    assert math.isnan(flesch_reading_ease("  "))
    assert word_count("one two  three\nfour") == 4


def test_readability_equals_textstat_on_real_answers_and_edge_cases():
    # readability() counts syllables per word with a cache; the numbers must be textstat's own.
    from simplesafe.data.sources.preferences import load_preference_pairs
    from simplesafe.paths import bundled_data_dir
    from simplesafe.text.clean import clean_answer
    from simplesafe.text.readability import readability

    answers = [clean_answer(a.text).text for q in load_preference_pairs(bundled_data_dir() / "eli5" / "lfqa_preferences.tsv")
               for a in q.answers][:300]
    answers += ["", " ", "a", "!!!", "Hello.", "e.g. this is it", "Über naïve café... 12 3.5", "don't won't y'all"]
    for text in answers:
        r = readability(text)
        fre, fkg = flesch_reading_ease(text), flesch_kincaid_grade(text)
        assert (math.isnan(r.fre) and math.isnan(fre)) or r.fre == fre, text
        assert (math.isnan(r.fkg) and math.isnan(fkg)) or r.fkg == fkg, text
        assert r.n_words == word_count(text)
