"""Toxicity backends: the ensemble rule, label mapping of HF classifiers, Detoxify errors, thresholds."""

from pathlib import Path

import numpy as np
import pytest

from simplesafe.errors import ConfigError, ModelLoadError
from simplesafe.text.toxicity import EnsembleScorer, get_toxicity_scorer, resolve_threshold
from simplesafe.text.toxicity_section import ToxicityConfig, scorer_from_config


class _Fixed:
    """A stand-in detector returning hand-set scores."""

    def __init__(self, label, values):
        self.label, self.values = label, values

    def score(self, texts):
        v = np.array([self.values[t] for t in texts], dtype=float)
        return {self.label: v, "toxicity": v.copy()}


def test_ensemble_rule_is_the_maximum_of_profanity_and_hate():
    texts = ["clean", "profane only", "hateful only", "both"]
    ens = EnsembleScorer.__new__(EnsembleScorer)
    ens.profanity = _Fixed("profanity", {"clean": 0.01, "profane only": 0.93, "hateful only": 0.04, "both": 0.7})
    ens.hate = _Fixed("hate", {"clean": 0.02, "profane only": 0.05, "hateful only": 0.88, "both": 0.9})
    s = ens.score(texts)
    assert set(s) == {"profanity", "hate", "toxicity"}
    np.testing.assert_allclose(s["toxicity"], [0.02, 0.93, 0.88, 0.9])
    flagged = s["toxicity"] > 0.1
    assert flagged.tolist() == [False, True, True, True]


def test_default_backend_is_the_ensemble_and_scores_hand_made_examples():
    scorer = get_toxicity_scorer()
    assert scorer.name == "ensemble" and scorer.labels == ["profanity", "hate"]
    texts = ["Thank you for the lovely flowers.", "Immigrants are vermin and should be thrown out.",
             "shut the fuck up you worthless piece of shit", "I am Muslim.", ""]
    s = scorer.score(texts)
    for key in ("profanity", "hate", "toxicity"):
        assert s[key].shape == (5,) and np.all((s[key] >= 0) & (s[key] <= 1))
    np.testing.assert_allclose(s["toxicity"], np.maximum(s["profanity"], s["hate"]))
    assert s["toxicity"][0] <= 0.1                       # kind text passes the report's filter
    assert s["hate"][1] > 0.5 and s["profanity"][1] < 0.5  # hate without swear words is caught by the classifier
    assert s["profanity"][2] > 0.5 and s["toxicity"][2] > 0.5
    assert s["hate"][3] < s["hate"][1]
    assert scorer.score([])["toxicity"].shape == (0,)


def test_batching_does_not_change_scores():
    texts = ["short", "a much longer sentence about people and places and things " * 3, "women are inferior"] * 3
    a = get_toxicity_scorer("ensemble", batch_size=2).score(texts)
    b = get_toxicity_scorer("ensemble", batch_size=64).score(texts)
    np.testing.assert_allclose(a["toxicity"], b["toxicity"], atol=1e-5)


def test_profanity_backend_keeps_its_interface():
    s = get_toxicity_scorer("profanity-check").score(["hello friend", "fuck you", None])
    assert set(s) == {"profanity", "toxicity"}
    assert s["profanity"][1] > 0.5 > s["profanity"][0]


def test_unknown_backend_and_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="allowed: ensemble"):
        get_toxicity_scorer("perspective")
    with pytest.raises(ConfigError, match="bad options"):
        get_toxicity_scorer("profanity-check", model_path="x")


def test_detoxify_missing_package_error_says_how_to_install_and_get_weights(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_detoxify(name, *a, **kw):
        if name == "detoxify":
            raise ImportError("No module named 'detoxify'")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_detoxify)
    with pytest.raises(ModelLoadError) as err:
        get_toxicity_scorer("detoxify", checkpoint="/nowhere/toxic_original.ckpt", config_path="/nowhere")
    msg = str(err.value)
    assert "pip install 'simplesafe[detoxify]'" in msg
    assert "checkpoint" in msg and "config_path" in msg


def test_thresholds_numbers_names_and_errors():
    assert resolve_threshold() == 0.1
    assert resolve_threshold("0.25") == 0.25
    r90 = resolve_threshold("recall_90")
    assert 0.0 < r90 < 1.0
    assert resolve_threshold("report") == pytest.approx(0.1)
    with pytest.raises(ConfigError, match="unknown operating point"):
        resolve_threshold("paranoid")
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        resolve_threshold(3)


def test_config_selects_backends():
    assert scorer_from_config(ToxicityConfig(backend="profanity-check")).name == "profanity-check"
    with pytest.raises(ConfigError, match="model_path"):
        scorer_from_config(ToxicityConfig(backend="hf"))
    with pytest.raises(Exception, match="unknown key"):
        from simplesafe.config import validate

        validate(ToxicityConfig, {"backend": "ensemble", "treshold": 0.2})


# ---------------------------------------------------------------- hf backend with a tiny random classifier

def _tiny_classifier(path: Path, minilm_path: str, id2label: dict, problem_type=None) -> Path:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64, num_labels=len(id2label),
                     id2label=id2label, label2id={v: k for k, v in id2label.items()}, problem_type=problem_type)
    model = BertForSequenceClassification(cfg).eval()
    model.save_pretrained(path, safe_serialization=True)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(path)
    return path


def test_hf_backend_maps_labels_from_id2label(tmp_path, minilm_path):
    path = _tiny_classifier(tmp_path / "clf", minilm_path, {0: "Neutral", 1: "toxic", 2: "Identity Attack"})
    scorer = get_toxicity_scorer("hf", model_path=str(path), batch_size=2)
    assert scorer.label_names == ["neutral", "toxic", "identity_attack"]
    assert scorer.labels == ["toxic", "identity_attack"]
    texts = ["hello there", "a longer text that needs padding in its batch", "x", "another one"]
    s = scorer.score(texts)
    assert set(s) == {"neutral", "toxic", "identity_attack", "toxicity"}
    np.testing.assert_allclose(s["neutral"] + s["toxic"] + s["identity_attack"], 1.0, atol=1e-5)
    np.testing.assert_allclose(s["toxicity"], np.maximum(s["toxic"], s["identity_attack"]))
    one_by_one = np.concatenate([scorer.score([t])["toxicity"] for t in texts])
    np.testing.assert_allclose(one_by_one, s["toxicity"], atol=1e-5)


def test_hf_backend_multilabel_uses_sigmoid(tmp_path, minilm_path):
    path = _tiny_classifier(tmp_path / "ml", minilm_path, {0: "toxic", 1: "obscene"}, "multi_label_classification")
    s = get_toxicity_scorer("hf", model_path=str(path)).score(["a", "b c"])
    assert not np.allclose(s["toxic"] + s["obscene"], 1.0)
    np.testing.assert_allclose(s["toxicity"], np.maximum(s["toxic"], s["obscene"]))


def test_hf_backend_generic_labels_need_benign_labels(tmp_path, minilm_path):
    path = _tiny_classifier(tmp_path / "gen", minilm_path, {0: "LABEL_0", 1: "LABEL_1"})
    with pytest.raises(ConfigError, match="benign_labels"):
        get_toxicity_scorer("hf", model_path=str(path))
    scorer = get_toxicity_scorer("hf", model_path=str(path), benign_labels=["LABEL_0"])
    assert scorer.labels == ["label_1"]
    with pytest.raises(ConfigError, match="not labels of"):
        get_toxicity_scorer("hf", model_path=str(path), benign_labels=["safe"])


def test_hf_backend_missing_path_is_a_model_load_error(tmp_path):
    with pytest.raises(ModelLoadError):
        get_toxicity_scorer("hf", model_path=str(tmp_path / "nope"))

