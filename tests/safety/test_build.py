"""Calibration, metrics and operating points of the safety build, on hand-made numbers."""

import numpy as np
import pytest

from simplesafe.safety.build import (binary_metrics, calibration_weights, fit_calibrator, fit_head,
                                     threshold_for_fpr, threshold_for_recall)
from simplesafe.safety.classifier import calibrate, head_logits


def test_platt_calibration_recovers_a_known_sigmoid():
    rng = np.random.default_rng(0)
    z = rng.normal(scale=3, size=20000)
    y = (rng.random(20000) < 1 / (1 + np.exp(-(0.5 * z - 1.0)))).astype(int)
    cal = fit_calibrator("platt", z, y)
    assert cal["method"] == "platt"
    assert cal["a"] == pytest.approx(0.5, abs=0.05) and cal["b"] == pytest.approx(-1.0, abs=0.08)
    assert calibrate(cal, np.array([2.0]))[0] == pytest.approx(0.5, abs=0.03)


def test_isotonic_calibration_is_monotone_and_matches_frequencies():
    # Scores 0..3; the true hateful rate per score is 0, 0.25, 0.5, 1.
    z = np.repeat([0.0, 1.0, 2.0, 3.0], 4)
    y = np.array([0, 0, 0, 0, 1, 0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 1])
    cal = fit_calibrator("isotonic", z, y)
    p = calibrate(cal, np.array([-5.0, 0.0, 1.0, 2.0, 3.0, 9.0, 1.5]))
    np.testing.assert_allclose(p, [0.0, 0.0, 0.25, 0.5, 1.0, 1.0, 0.375])


def test_auto_calibration_reports_both_losses():
    rng = np.random.default_rng(1)
    z = rng.normal(size=2000)
    y = (rng.random(2000) < 1 / (1 + np.exp(-2 * z))).astype(int)
    cal = fit_calibrator("auto", z, y)
    assert cal["method"] in ("platt", "isotonic") and set(cal["cv_logloss"]) == {"platt", "isotonic"}
    assert cal["method"] == min(cal["cv_logloss"], key=cal["cv_logloss"].get)


def test_balanced_calibration_weights_give_each_corpus_and_each_class_the_same_weight():
    src = np.array(["a"] * 6 + ["b"] * 2)
    y = np.array([1, 0, 0, 0, 0, 0, 1, 0])
    w = calibration_weights(src, y, "balanced")
    assert w.sum() == pytest.approx(len(y))
    assert w[y == 1].sum() == pytest.approx(w[y == 0].sum())
    # per corpus before class balancing: a row of "a" weighs 1/6, of "b" 1/2
    assert w[0] / w[6] == pytest.approx((1 / 6) / (1 / 2))
    assert calibration_weights(src, y, "mixture") is None


def test_weighted_platt_moves_with_the_prior():
    # The same scores calibrated with hateful rows weighted 4x give higher probabilities.
    rng = np.random.default_rng(3)
    z = np.concatenate([rng.normal(1, 1, 500), rng.normal(-1, 1, 4500)])
    y = np.array([1] * 500 + [0] * 4500)
    plain = fit_calibrator("platt", z, y)
    heavy = fit_calibrator("platt", z, y, sample_weight=np.where(y == 1, 4.0, 1.0))
    p0, p1 = calibrate(plain, np.array([0.0])), calibrate(heavy, np.array([0.0]))
    odds = (p1 / (1 - p1)) / (p0 / (1 - p0))
    assert odds[0] == pytest.approx(4.0, rel=0.05)     # a prior change shifts the log-odds by log(4)


def test_calibrate_rejects_unknown_method():
    from simplesafe.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="unknown calibration"):
        calibrate({"method": "magic"}, np.zeros(2))


def test_binary_metrics_by_hand():
    y = np.array([1, 1, 1, 0, 0, 0, 0, 0])
    p = np.array([0.9, 0.2, 0.05, 0.3, 0.05, 0.0, 0.01, 0.02])
    m = binary_metrics(y, p, 0.1)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["fpr"] == pytest.approx(1 / 5)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["auroc"] == pytest.approx(12.5 / 15)  # 12 of 15 pairs ordered right, one tie
    assert binary_metrics(np.zeros(3), np.ones(3), 0.1)["auroc"] is None


def test_operating_point_thresholds():
    y = np.array([1] * 10 + [0] * 100)
    p = np.concatenate([np.linspace(0.5, 0.95, 10), np.linspace(0.0, 0.6, 100)])
    t = threshold_for_recall(y, p, 0.9)
    assert ((p[y == 1] > t).mean()) >= 0.9
    t = threshold_for_fpr(y, p, 0.05)
    assert ((p[y == 0] > t).mean()) <= 0.05


@pytest.mark.parametrize("spec", ["logreg:1", "mlp:16"])
def test_heads_learn_a_separable_problem_and_numpy_forward_matches(spec):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 8)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
    weights = fit_head(spec, x, y, np.ones(2000), seed=0)
    z = head_logits(weights, x)
    assert z.shape == (2000,)
    assert ((z > 0) == y).mean() > 0.9


def test_unknown_head_is_a_config_error():
    from simplesafe.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown head"):
        fit_head("forest:3", np.zeros((4, 2)), np.array([0, 1, 0, 1]), np.ones(4), 0)


# ---------------------------------------------------------------- a small real build (encoder + shared data)

SMALL = {"toxigen_annotated": 60, "implicit_hate": 60, "templates": 48, "stormfront": 40}


@pytest.mark.slow
def test_small_build_is_reproducible_leak_free_and_loadable(shared_data, tmp_path):
    from safetensors.numpy import load_file

    from simplesafe.safety.build import SafetyBuildConfig, build_safety_classifier
    from simplesafe.safety.classifier import HateClassifier

    cfg = dict(data_dir=str(shared_data), limits=SMALL, finetune_epochs=0, heads=["logreg:1"], progress=False,
               corpus_weights={}, student=False,
               encoder_layers=None)
    a = build_safety_classifier(SafetyBuildConfig(out=str(tmp_path / "a"), **cfg))
    b = build_safety_classifier(SafetyBuildConfig(out=str(tmp_path / "b"), **cfg))
    wa, wb = load_file(str(tmp_path / "a" / "head.safetensors")), load_file(str(tmp_path / "b" / "head.safetensors"))
    np.testing.assert_array_equal(wa["w"], wb["w"])
    assert a["split_counts"] == b["split_counts"] and a["fingerprint"] == b["fingerprint"]
    for name, counts in a["split_counts"].items():
        assert counts["test"]["rows"] > 0 and counts["train"]["rows"] > 0, name
    assert set(a["operating_points"]) >= {"report", "recall_90", "fpr_05"}
    clf = HateClassifier(tmp_path / "a")
    p = clf.score(["I hate lesbian", "I am lesbian"])
    assert p.shape == (2,) and np.all((p >= 0) & (p <= 1))


@pytest.mark.slow
def test_small_fine_tuned_build_stores_the_layers_and_scores_with_them(shared_data, tmp_path):
    from simplesafe.safety.build import SafetyBuildConfig, build_safety_classifier
    from simplesafe.safety.classifier import ENCODER_FILE, HateClassifier

    cfg = dict(data_dir=str(shared_data), limits={**SMALL, "functional": 200}, finetune_epochs=1,
               finetune_batch_size=16, bf16=False, progress=False, student_dims=32, encoder_layers=None)
    meta = build_safety_classifier(SafetyBuildConfig(out=str(tmp_path / "ft"), **cfg))
    assert meta["head"] == "finetune:linear" and meta["encoder_weights"] == ENCODER_FILE
    assert (tmp_path / "ft" / ENCODER_FILE).exists()
    # the student and the cascade threshold are stored; the functional report covers every functionality
    assert (tmp_path / "ft" / "student" / "model.safetensors").exists() and meta["student"]["dims"] == 32
    assert 0 <= meta["cascade"]["student_below"] <= meta["threshold"]   # a settled part is never flagged
    from simplesafe.safety.functional import FUNCTIONALITY_LABELS

    assert set(meta["functional_test"]["functionalities"]) == set(FUNCTIONALITY_LABELS)
    assert meta["calibration"]["weighting"] == "balanced"
    assert not list(tmp_path.glob(".ft.*"))   # no staging folder left behind
    clf = HateClassifier(tmp_path / "ft")
    texts = ["I hate lesbian", "I am lesbian"]
    p = clf.score(texts)
    assert p.shape == (2,) and np.all((p >= 0) & (p <= 1))
    # The scorer's encoder is the fine-tuned one, not the shared frozen encoder.
    from simplesafe.models.load import load_sentence_encoder
    from simplesafe.safety.classifier import encode_texts

    frozen = encode_texts(load_sentence_encoder("embedded:minilm"), texts, 128)
    assert not np.allclose(clf.embed(texts), frozen, atol=1e-4)
    # Test metrics were computed with the stored (float16) layers: rescoring the test texts reproduces them.
    again = build_safety_classifier(SafetyBuildConfig(out=str(tmp_path / "ft2"), **cfg))
    assert again["test_metrics"] == meta["test_metrics"]
    for name in (ENCODER_FILE, "head.safetensors", "student/model.safetensors", "student_head.safetensors"):
        assert (tmp_path / "ft" / name).read_bytes() == (tmp_path / "ft2" / name).read_bytes(), name


@pytest.mark.slow
def test_default_build_keeps_the_shipped_layers_and_fits_a_new_head(shared_data, tmp_path):
    from simplesafe.safety.build import SafetyBuildConfig, build_safety_classifier
    from simplesafe.safety.classifier import ENCODER_FILE, HateClassifier, shipped_artifact_dir

    cfg = SafetyBuildConfig(out=str(tmp_path / "d"), data_dir=str(shared_data), limits={**SMALL, "functional": 120},
                            heads=["logreg:4"], progress=False, student_dims=32)
    assert cfg.finetune_epochs == 0 and cfg.encoder_layers == "shipped"
    meta = build_safety_classifier(cfg)
    assert (tmp_path / "d" / ENCODER_FILE).read_bytes() == (shipped_artifact_dir() / ENCODER_FILE).read_bytes()
    assert meta["encoder_weights"] == ENCODER_FILE and meta["head"] == "logreg:4"
    p = HateClassifier(tmp_path / "d").score(["Muslims are filthy rats.", "I am proud to be a Muslim."])
    assert p[0] > p[1]


def test_encoder_layers_cannot_be_fine_tuned_further(shared_data, tmp_path):
    from simplesafe.errors import ConfigError
    from simplesafe.safety.build import SafetyBuildConfig, build_safety_classifier

    cfg = SafetyBuildConfig(out=str(tmp_path / "x"), data_dir=str(shared_data), limits={"templates": 40},
                            finetune_epochs=1, progress=False)
    with pytest.raises(ConfigError, match="encoder_layers"):
        build_safety_classifier(cfg)


def test_corpus_weights_must_name_loaded_corpora(shared_data, tmp_path):
    from simplesafe.errors import ConfigError
    from simplesafe.safety.build import SafetyBuildConfig, build_safety_classifier

    cfg = SafetyBuildConfig(out=str(tmp_path / "x"), data_dir=str(shared_data), limits={"templates": 40},
                            corpus_weights={"implicit_hat": 2.0}, progress=False)
    with pytest.raises(ConfigError, match="implicit_hat"):
        build_safety_classifier(cfg)


@pytest.mark.slow
def test_build_safety_cli_writes_to_out_and_reuses_a_cached_build(shared_data, tmp_path):
    import subprocess
    import sys

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "simplesafe.cli", *args], capture_output=True, text=True)

    out = tmp_path / "cli"
    args = ["models", "build-safety", "--out", str(out), f"data_dir={shared_data}",
            "limits={toxigen_annotated: 60, templates: 60}", "heads=[logreg:1]", "finetune_epochs=0",
            "corpus_weights={}", "progress=false", "student=false", "encoder_layers=null"]
    res = cli(*args)
    assert res.returncode == 0, res.stderr
    assert "AUROC" in res.stdout and (out / "safety.json").exists()
    again = cli(*args)
    assert again.returncode == 0 and "cached build" in again.stdout
    bad = cli("models", "build-safety", "--out", str(out), "data_dir=/nonexistent/x")
    assert bad.returncode == 2 and "not found" in bad.stderr and "Traceback" not in bad.stderr


def test_recall_shift_places_the_threshold_at_the_balanced_recall():
    from simplesafe.safety.build import recall_shift

    rng = np.random.default_rng(5)
    # corpus a: 900 easy hateful texts, corpus b: 100 hard ones; each counts half.
    p = np.concatenate([rng.uniform(0.5, 1.0, 900), rng.uniform(0.0, 0.5, 100), rng.uniform(0, 0.3, 500)])
    y = np.array([1] * 1000 + [0] * 500)
    src = np.array(["a"] * 900 + ["b"] * 100 + ["a"] * 500)
    shift = recall_shift(p, y, src, 0.9, 0.1)
    q = calibrate({"method": "none"}, np.log(p / (1 - p)) + shift)
    rec_a, rec_b = (q[:900] > 0.1).mean(), (q[900:1000] > 0.1).mean()
    assert 0.5 * rec_a + 0.5 * rec_b == pytest.approx(0.9, abs=0.01)
    np.testing.assert_allclose(calibrate({"method": "none", "shift": shift}, np.log(p / (1 - p))), q)
