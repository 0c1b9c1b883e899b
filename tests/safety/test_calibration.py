"""Calibration, metrics and operating points of the safety build, on hand-made numbers."""

import numpy as np
import pytest

from simplesafe.safety.calibration import (binary_metrics, calibration_weights, fit_calibrator, threshold_for_fpr,
                                           threshold_for_recall)
from simplesafe.safety.classifier import calibrate


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


def test_recall_shift_places_the_threshold_at_the_balanced_recall():
    from simplesafe.safety.calibration import recall_shift

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
