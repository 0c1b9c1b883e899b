"""The shipped hate classifier: loads offline, is small, and passes the functional checks.

The fixtures are hand-written (tests/safety/fixtures, never used for training): HateCheck-style
hate without profanity with neutral counterparts about the same groups, and profane
offensive tweets against ordinary tweets.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from simplesafe.safety.classifier import HEAD_FILE, META_FILE, HateClassifier, default_artifact_dir, shipped_artifact_dir
from simplesafe.text.toxicity import get_toxicity_scorer

FIX = Path(__file__).parent / "fixtures"


def _jsonl(name):
    return [json.loads(line) for line in (FIX / name).read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def ensemble():
    return get_toxicity_scorer("ensemble")


def test_shipped_artifact_is_small_complete_and_used_without_a_cache_build():
    d = shipped_artifact_dir()
    assert (d / HEAD_FILE).exists() and (d / META_FILE).exists()
    size = sum(p.stat().st_size for p in d.rglob("*") if p.is_file())
    assert size < 45_000_000  # six float16 MiniLM layers (~21 MB) + the 256-d static student (~15 MB)
    assert default_artifact_dir() == d  # the test cache is empty, so the shipped copy is used
    meta = json.loads((d / META_FILE).read_text())
    assert meta["version"] == 2 and meta["calibration"]["method"] in ("platt", "isotonic")
    assert (d / meta["encoder_weights"]).exists() and (d / meta["student"]["dir"] / "model.safetensors").exists()
    assert meta["cascade"]["student_below"] <= meta["threshold"]       # the student never flags on its own
    assert meta["cascade_test"]["encoder_flags_kept"] >= 0.95
    for name, m in meta["test_metrics"].items():
        if m["auroc"] is not None and name not in ("all", "functional"):
            assert m["auroc"] >= 0.85, name   # the target, on each corpus's group-disjoint test split
    # the generated functional corpus's own test split (unseen train-pool templates): negation and
    # counter-speech are what the frozen layers separate least well; see docs/safety.md
    assert meta["test_metrics"]["functional"]["auroc"] >= 0.75


def test_out_of_template_functional_tests(ensemble):
    from simplesafe.safety.functional import functional_test_set

    cases = functional_test_set()
    s = ensemble.score([c["text"] for c in cases])
    y = np.array([c["label"] for c in cases])
    assert roc_auc_score(y, s["hate"]) >= 0.85
    assert (s["hate"][y == 1] > 0.1).mean() >= 0.85          # the bar for hateful cases at the default
    assert (s["hate"][y == 0] > 0.1).mean() < (s["hate"][y == 1] > 0.1).mean()


def test_cache_build_takes_precedence(tmp_path, monkeypatch):
    import shutil

    monkeypatch.setenv("SIMPLESAFE_CACHE", str(tmp_path))
    target = tmp_path / "safety" / "hate-minilm"
    shutil.copytree(shipped_artifact_dir(), target)
    assert default_artifact_dir() == target
    assert HateClassifier().artifact_dir == target


def test_missing_artifact_is_a_clear_error(tmp_path):
    from simplesafe.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="build-safety"):
        HateClassifier(tmp_path)


def test_functional_hate_without_profanity_is_ranked_above_neutral_mentions(ensemble):
    rows = [r for r in _jsonl("hate_functional.jsonl") if r["subset"] == "core"]
    s = ensemble.score([r["text"] for r in rows])
    y = [r["label"] for r in rows]
    assert roc_auc_score(y, s["profanity"]) < 0.75          # the old default cannot see this hate
    assert roc_auc_score(y, s["toxicity"]) >= 0.85            # the outside suite expects >= 0.80
    hateful = s["toxicity"][np.array(y) == 1]
    assert (hateful > 0.1).mean() >= 0.8


def test_negated_hate_and_counter_speech_rank_below_hate(ensemble):
    # HateCheck's hardest functionalities: the frozen-encoder build scored these 0.51, the
    # fine-tuned one without the contrast pairs 0.63; the fixture's frames are not trained on.
    rows = [r for r in _jsonl("hate_functional.jsonl") if r["subset"] == "hard" or r["label"] == 1]
    s = ensemble.score([r["text"] for r in rows])
    assert roc_auc_score([r["label"] for r in rows], s["toxicity"]) >= 0.80


def test_profane_tweets_ensemble_is_no_worse_than_profanity_alone(ensemble):
    rows = _jsonl("profane_tweets.jsonl")
    s = ensemble.score([r["text"] for r in rows])
    y = [r["label"] for r in rows]
    prof, ens = roc_auc_score(y, s["profanity"]), roc_auc_score(y, s["toxicity"])
    assert ens >= 0.95
    assert ens >= prof - 0.01
    assert (s["toxicity"] >= s["profanity"]).all()            # max never lowers a profane score
