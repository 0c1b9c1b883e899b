"""Group-aware splitting: templates, posts, equal texts and near-duplicates never straddle splits."""

import numpy as np

from simplesafe.safety.corpora import LabelledText
from simplesafe.safety.split import (assign_splits, check_no_leak, group_components, near_duplicate_pairs,
                                     normalise_text)


def _row(text, label=0, source="a", group=None, i=[0]):
    i[0] += 1
    return LabelledText(text, label, source, f"id{i[0]}", group or f"g{i[0]}")


def test_normalise_text_ignores_case_and_punctuation():
    assert normalise_text("  I HATE   them!!! ") == normalise_text("i hate them")
    assert normalise_text("a-b") == "a b"


def test_components_merge_group_text_and_near_duplicates():
    rows = [_row("one", group="T1"), _row("two", group="T1"),       # same template
            _row("Hello there."), _row("hello THERE"),               # same normalised text
            _row("near a"), _row("near b"),                          # near-duplicate embeddings
            _row("alone")]
    emb = np.eye(7, dtype=np.float32)
    emb[5] = emb[4] * 0.99 + emb[6] * 0.01
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    comp = group_components(rows, emb, threshold=0.95)
    assert comp[0] == comp[1]
    assert comp[2] == comp[3]
    assert comp[4] == comp[5]
    assert len({comp[0], comp[2], comp[4], comp[6]}) == 4
    assert group_components(rows, emb, threshold=1.0)[4] != group_components(rows, emb, threshold=1.0)[5]


def test_near_duplicate_pairs_matches_brute_force():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(50, 8)).astype(np.float32)
    emb[10] = emb[3] + 0.01
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    sims = emb @ emb.T
    expect = {(i, j) for i in range(50) for j in range(i + 1, 50) if sims[i, j] >= 0.9}
    assert set(near_duplicate_pairs(emb, 0.9, block=7)) == expect
    assert (3, 10) in expect


def test_assign_splits_keeps_groups_whole_and_hits_fractions():
    rows = []
    for t in range(6):  # six templates of 40 rows, like the ConversationAI file
        rows += [_row(f"template {t} sentence {k}", k % 2, "templates", f"template:{t}") for k in range(40)]
    rows += [_row(f"post number {k}", k % 3 == 0, "posts") for k in range(400)]
    comp = group_components(rows)
    split = assign_splits(rows, comp, {"test": 0.15, "calib": 0.15}, seed=3)
    check_no_leak(rows, comp, split)
    tpl_splits = {rows[i].group: split[i] for i in range(240)}
    assert sorted(tpl_splits.values()).count("test") == 1      # one whole template held out
    posts = np.array([s for r, s in zip(rows, split) if r.source == "posts"])
    assert 55 <= (posts == "test").sum() <= 65 and 55 <= (posts == "calib").sum() <= 65
    again = assign_splits(rows, comp, {"test": 0.15, "calib": 0.15}, seed=3)
    assert (again == split).all()
    assert not (assign_splits(rows, comp, {"test": 0.15, "calib": 0.15}, seed=4) == split).all()


def test_check_no_leak_catches_a_straddling_text():
    rows = [_row("same text"), _row("Same text!")]
    comp = np.array([0, 1])  # pretend the grouping missed them
    import pytest

    with pytest.raises(AssertionError):
        check_no_leak(rows, comp, np.array(["train", "test"], dtype=object))
