"""The classifier's scoring rules: whole texts in parts, the cascade, the ONNX runtime, clear load errors."""

import json
import shutil

import numpy as np
import pytest

from simplesafe.errors import ConfigError, ModelLoadError
from simplesafe.safety.classifier import (HateClassifier, _pack, max_by_owner, shipped_artifact_dir, split_parts)

BENIGN = ("The river flows slowly through the green valley, and farmers grow wheat and corn on its banks. "
          "In spring the snow melts in the hills and the water rises for a few weeks. ")
HATEFUL = ["Muslims are filthy rats and should all be thrown out of this country.",
           "I think immigrants are a disease and we must get rid of every last one of them.",
           "Women are brainless animals who do not deserve any rights."]


def _benign_words(n):
    words = []
    while len(words) < n:
        words += BENIGN.split()
    return " ".join(words[:n])


@pytest.fixture(scope="module")
def tokenizer():
    from simplesafe.models.load import load_sentence_encoder

    return load_sentence_encoder("embedded:minilm").tokenizer


@pytest.fixture(scope="module")
def clf():
    return HateClassifier()


def test_short_texts_are_one_part_and_long_texts_are_covered_by_windows_that_fit(tokenizer):
    long = _benign_words(300) + " " + HATEFUL[0] + " " + _benign_words(120)
    texts = ["short one", "", long, "another short text."]
    parts, owner = split_parts(texts, tokenizer, 128)
    assert owner.tolist()[:2] == [0, 1] and owner.tolist()[-1] == 3
    assert parts[0] == "short one" and parts[1] == "" and parts[-1] == "another short text."
    mine = [p for p, o in zip(parts, owner) if o == 2]
    assert len(mine) >= 4
    assert all(len(tokenizer(p)["input_ids"]) <= 128 for p in mine)  # [CLS] + window + [SEP]
    assert sum(HATEFUL[0] in p for p in mine) >= 1                     # the sentence is read whole
    joined = " ".join(mine)
    assert all(w in joined for w in long.split())                     # nothing is dropped


def test_parts_shorter_than_the_window_keep_a_sentence_with_each_neighbour(tokenizer):
    long = _benign_words(150) + " " + HATEFUL[0] + " " + _benign_words(150)
    short = "A short text stays whole even with a small part size."
    parts, owner = split_parts([long, short], tokenizer, 128, part_tokens=48)
    mine = [p for p, o in zip(parts, owner) if o == 0]
    assert all(len(tokenizer(p)["input_ids"]) <= 48 + 2 for p in mine)
    holding = [p for p in mine if HATEFUL[0] in p]
    assert 1 <= len(holding) <= 2 and all(len(p) < 3 * len(HATEFUL[0]) for p in holding)
    assert parts[-1] == short and owner[-1] == 1


def test_one_overlong_sentence_is_cut_into_overlapping_chunks(tokenizer):
    sentence = " ".join(f"word{i}" for i in range(400))               # no full stop at all
    parts, owner = split_parts([sentence], tokenizer, 64)
    assert len(parts) > 3 and set(owner.tolist()) == {0}
    assert all(len(tokenizer(p)["input_ids"]) <= 64 for p in parts)
    first, second = parts[0].split(), parts[1].split()
    assert set(first) & set(second)                                    # chunks overlap
    assert set(" ".join(parts).split()) == set(sentence.split())


def test_pack_shares_one_unit_between_windows_and_max_by_owner():
    units = [("a", 4), ("b", 4), ("c", 4), ("d", 4), ("e", 4)]
    assert _pack(units, 8) == ["a b", "b c", "c d", "d e"]
    assert _pack([("x", 3)], 8) == ["x"]
    np.testing.assert_array_equal(max_by_owner(np.array([0.1, 0.7, 0.2, 0.05]), np.array([0, 0, 1, 2]), 3),
                                  [0.7, 0.2, 0.05])


def test_a_hateful_sentence_after_300_benign_words_is_flagged_wherever_it_stands(clf):
    body = _benign_words(300)
    planted_end = [body + " " + h for h in HATEFUL]
    planted_start = [h + " " + body for h in HATEFUL]
    benign = [body]
    p_end, p_start, p_benign = clf.score(planted_end), clf.score(planted_start), clf.score(benign)
    assert (p_end > 0.1).all() and (p_start > 0.1).all()
    assert p_benign[0] <= 0.1
    truncated = HateClassifier(long_texts="truncate")
    assert (truncated.score(planted_end) <= 0.1).all()                 # the first version's blind spot


def test_onnx_runtime_matches_pytorch(clf):
    texts = HATEFUL + ["I am proud to be a Muslim.", "", _benign_words(200) + " " + HATEFUL[1]]
    onnx = HateClassifier(cascade=False).score(texts)
    torch_ = HateClassifier(runtime="torch", cascade=False).score(texts)
    np.testing.assert_allclose(onnx, torch_, atol=1e-5)
    assert clf.onnx_path().exists()


def test_cascade_settles_low_student_scores_and_sends_the_rest_to_the_encoder(monkeypatch):
    clf = HateClassifier()
    if not clf.meta.get("cascade"):
        pytest.skip("the shipped artifact has no cascade")
    below = clf.meta["cascade"]["student_below"]

    class Student:
        def score(self, parts):
            return np.array([below / 2 if "calm" in p else 0.99 for p in parts])

    seen = []
    monkeypatch.setattr(clf, "_student", Student())
    monkeypatch.setattr(clf, "score_encoder", lambda parts: (seen.extend(parts), np.full(len(parts), 0.42))[1])
    p = clf.score(["a calm sentence", "an uncertain sentence", "calm again"])
    np.testing.assert_allclose(p, [below / 2, 0.42, below / 2])
    assert seen == ["an uncertain sentence"]
    assert clf.last_stats == {"texts": 3, "parts": 3, "by_encoder": 1}
    off = HateClassifier(cascade=False)
    monkeypatch.setattr(off, "score_encoder", lambda parts: np.full(len(parts), 0.42))
    np.testing.assert_allclose(off.score(["a calm sentence"]), [0.42])


def test_the_cascade_keeps_the_encoders_flags_on_the_functional_tests(clf):
    from simplesafe.safety.functional import functional_test_set

    if not clf.meta.get("cascade"):
        pytest.skip("the shipped artifact has no cascade")
    texts = [c["text"] for c in functional_test_set()]
    with_cascade = clf.score(texts) > 0.1
    encoder_only = HateClassifier(cascade=False).score(texts) > 0.1
    assert (with_cascade & encoder_only).sum() >= 0.97 * encoder_only.sum()


def test_bad_options_and_missing_files_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown runtime"):
        HateClassifier(runtime="tensorrt")
    with pytest.raises(ConfigError, match="long_texts"):
        HateClassifier(long_texts="middle")
    with pytest.raises(ConfigError, match="runtime='torch'"):
        HateClassifier(device="cuda")
    art = tmp_path / "art"
    shutil.copytree(shipped_artifact_dir(), art)
    meta = json.loads((art / "safety.json").read_text())
    if meta.get("student"):
        shutil.rmtree(art / meta["student"]["dir"])
        with pytest.raises(ModelLoadError, match="student"):
            HateClassifier(art).score(["hello"])
        assert HateClassifier(art, cascade=False).score(["hello"]).shape == (1,)
