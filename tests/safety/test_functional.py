"""The generated functional test set: HateCheck's functionalities, own templates, held out by template."""

import json
from collections import Counter, defaultdict
from pathlib import Path

from simplesafe.safety.functional import (FUNCTIONALITY_LABELS, GROUP_FUNCTIONALITIES, OTHER_FUNCTIONALITIES, SPELLING,
                                          functional_cases, functional_rows, functional_test_set, spelling_variant,
                                          template_splits)

FIX = Path(__file__).parent / "fixtures"


def test_every_functionality_has_a_test_template_and_both_labels_are_present():
    test = functional_test_set()
    funcs = Counter(c["functionality"] for c in test)
    assert set(funcs) == set(FUNCTIONALITY_LABELS)
    assert all(c["label"] == FUNCTIONALITY_LABELS[c["functionality"]] for c in test)
    assert {c["label"] for c in test} == {0, 1}
    for name, (_, temps) in GROUP_FUNCTIONALITIES.items():
        sp = template_splits(len(temps), name)
        assert sp.count("test") >= 1 and sp.count("train") >= 1, name


def test_test_templates_never_reach_the_training_corpus():
    test = functional_test_set()
    rows = functional_rows()
    test_templates = {c["template"] for c in test}
    assert not {r.group.removeprefix("func:") for r in rows} & test_templates
    assert not {r.text for r in rows} & {c["text"] for c in test}
    splits_per_template = defaultdict(set)
    for c in functional_cases():
        splits_per_template[c["template"]].add(c["split"])
    assert all(len(s) == 1 for s in splits_per_template.values())  # a template lives in one split only
    assert len({r.id for r in rows}) == len(rows)


def test_generation_is_deterministic_and_spelling_variants_change_the_text():
    assert functional_cases() == functional_cases()
    text = "Every single one of them is a liar."
    for kind in SPELLING:
        v = spelling_variant(text, kind)
        assert v != text and v == spelling_variant(text, kind), kind
    assert spelling_variant("Disabled people are filthy rats.", "F28_spell_added_spaces") == \
        "D i s a b l e d people are filthy rats."
    spelled = [c for c in functional_test_set() if c["functionality"] in SPELLING]
    assert spelled and all(c["label"] == 1 for c in spelled)


def test_non_hateful_contrasts_cover_the_papers_groups():
    test = functional_test_set()
    kinds = {c["functionality"] for c in test if c["label"] == 0}
    assert {"F15_negated_hate", "F18_neutral_identity", "F19_positive_identity", "F20_counter_quote",
            "F21_counter_reference", "F22_abuse_objects", "F23_abuse_individuals", "F24_abuse_nonprotected",
            "F11_profanity_nonhateful", "F9_reclaimed"} <= kinds
    assert set(OTHER_FUNCTIONALITIES) <= {c["functionality"] for c in test}


def test_independent_of_the_hand_written_fixture():
    fixture = {json.loads(l)["text"].lower() for l in (FIX / "hate_functional.jsonl").read_text().splitlines() if l.strip()}
    assert not fixture & {c["text"].lower() for c in functional_cases()}
