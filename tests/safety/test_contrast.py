"""The generated contrast corpus: minimal pairs, split by predicate, independent of the functional tests."""

import json
from collections import Counter
from pathlib import Path

from simplesafe.safety.contrast import BENIGN_FRAMES, GROUPS, HATEFUL_FRAMES, OTHER_TARGETS, PREDICATES, contrast_rows

FIX = Path(__file__).parent / "fixtures"


def test_every_predicate_and_group_has_both_labels():
    rows = contrast_rows()
    assert len(rows) == len(PREDICATES) * (len(GROUPS) * (len(HATEFUL_FRAMES) + len(BENIGN_FRAMES))
                                           + len(OTHER_TARGETS) * len(HATEFUL_FRAMES))
    assert len({r.text for r in rows}) == len(rows) and len({r.id for r in rows}) == len(rows)
    per = Counter((r.group, r.label) for r in rows)
    for k in range(len(PREDICATES)):
        assert per[(f"contrast:{k}", 1)] == len(GROUPS) * len(HATEFUL_FRAMES)
        assert per[(f"contrast:{k}", 0)] == len(GROUPS) * len(BENIGN_FRAMES) + len(OTHER_TARGETS) * len(HATEFUL_FRAMES)
    negated = [r.text for r in rows if r.label == 0 and r.text.startswith("It is false that")]
    assert "It is false that Muslims are subhuman." in negated
    assert next(r for r in rows if r.text == "Mosquitoes are subhuman.").label == 0


def test_no_sentence_or_frame_of_the_functional_tests_is_trained_on():
    fixture = [json.loads(l)["text"] for l in (FIX / "hate_functional.jsonl").read_text().splitlines() if l.strip()]
    texts = {r.text.lower() for r in contrast_rows()}
    assert not texts & {t.lower() for t in fixture}
    for t in fixture:  # no functional-test predicate reappears either
        tail = t.split(" are ", 1)[-1].rstrip(".").lower()
        if " are " in t and len(tail.split()) > 1:
            assert not any(p.endswith(tail) or p == f"are {tail}" for p in PREDICATES), t


def test_load_all_includes_the_generated_corpus_without_a_folder(tmp_path):
    from simplesafe.safety.corpora import load_all

    out = load_all(tmp_path, names=["contrast"], limits={"contrast": 100}, seed=0)
    assert len(out["contrast"]) == 100 and {r.label for r in out["contrast"]} == {0, 1}
