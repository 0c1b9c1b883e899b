"""Calibrating and measuring the safety classifier (:mod:`simplesafe.safety.build`).

Platt or isotonic calibration (:func:`fit_calibrator`, weighted by :func:`calibration_weights`),
the log-odds shifts that place the default threshold at a stated recall (:func:`recall_shift`)
or give alt-profanity-check a stated false-positive rate (:func:`profanity_shift`), metrics and
operating points (:func:`binary_metrics`, :func:`threshold_for_recall`,
:func:`threshold_for_fpr`), and the functional test report (:func:`functional_report`).
"""

from __future__ import annotations

import numpy as np


# ---------------------------------------------------------------- calibration

def fit_calibrator(method: str, z: np.ndarray, y: np.ndarray, seed: int = 0,
                   sample_weight: np.ndarray | None = None) -> dict:
    """Fit Platt or isotonic calibration; ``auto`` picks by 2-fold cross-validated (weighted) log-loss."""
    if method == "auto":
        losses = {m: _cv_logloss(m, z, y, seed, sample_weight) for m in ("platt", "isotonic")}
        best = min(losses, key=losses.get)
        cal = fit_calibrator(best, z, y, seed, sample_weight)
        cal["cv_logloss"] = {k: round(v, 5) for k, v in losses.items()}
        return cal
    if method == "platt":
        from sklearn.linear_model import LogisticRegression

        m = LogisticRegression(C=1e6, max_iter=1000).fit(z.reshape(-1, 1), y, sample_weight=sample_weight)
        return {"method": "platt", "a": float(m.coef_[0, 0]), "b": float(m.intercept_[0])}
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        m = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(z, y, sample_weight=sample_weight)
        return {"method": "isotonic", "x": [float(v) for v in m.X_thresholds_],
                "y": [float(v) for v in m.y_thresholds_]}
    from simplesafe.errors import ConfigError

    raise ConfigError(f"unknown calibration '{method}'; use auto, platt or isotonic")


def _cv_logloss(method: str, z: np.ndarray, y: np.ndarray, seed: int, sample_weight: np.ndarray | None = None) -> float:
    from simplesafe.safety.classifier import calibrate

    w = np.ones(len(z)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    rng = np.random.default_rng(seed)
    fold = rng.permutation(len(z)) % 2
    total = 0.0
    for k in (0, 1):
        tr = fold != k
        cal = fit_calibrator(method, z[tr], y[tr], sample_weight=w[tr])
        p = np.clip(calibrate(cal, z[~tr]), 1e-6, 1 - 1e-6)
        yk = y[~tr]
        total += float((-(yk * np.log(p) + (1 - yk) * np.log(1 - p)) * w[~tr]).sum())
    return total / w.sum()


def profanity_shift(rows, idx: np.ndarray, y: np.ndarray, src: np.ndarray, fpr: float, threshold: float) -> dict:
    """Log-odds shift (<= 0) for alt-profanity-check so that ``threshold`` flags ``fpr`` of the benign texts.

    alt-profanity-check's own calibration puts 0.1 very low on identity-mentioning text: it
    scores 0.1 or more on about a third of the benign tweets of the hate corpora. The shift
    is fitted on the benign calibration texts, each corpus weighted alike, and is never
    positive, so the label never becomes more sensitive than its authors made it. A
    monotone shift leaves profanity-check's own ranking (AUROC) unchanged.
    """
    from simplesafe.text.toxicity import ProfanityCheckScorer

    texts = [rows[i].text for i in idx]
    p = ProfanityCheckScorer().score(texts)["profanity"]
    neg = y == 0
    scores, names = p[neg], src[neg]
    w = np.zeros(len(scores))
    for n in np.unique(names):
        w[names == n] = 1.0 / (names == n).sum()
    order = np.argsort(-scores, kind="stable")
    cum = np.cumsum(w[order]) / w.sum()
    t = float(np.clip(scores[order][min(int(np.searchsorted(cum, fpr)), len(order) - 1)], 1e-9, 1 - 1e-9))
    shift = min(0.0, float(np.log(threshold / (1 - threshold)) - np.log(t / (1 - t))))
    from simplesafe.safety.classifier import calibrate

    q = calibrate({"method": "none", "shift": shift}, np.log(np.clip(p, 1e-12, 1 - 1e-12) / np.clip(1 - p, 1e-12, 1)))
    out = {"shift": shift, "target_fpr": fpr}
    for name, vals in (("before", p), ("after", q)):
        out[name] = {n: {"fpr": float((vals[neg & (src == n)] > threshold).mean()) if (neg & (src == n)).any() else None,
                         "recall": float((vals[(~neg) & (src == n)] > threshold).mean()) if ((~neg) & (src == n)).any()
                         else None} for n in np.unique(src)}
    return out


def recall_shift(p: np.ndarray, y: np.ndarray, src: np.ndarray, recall: float, threshold: float) -> float:
    """Log-odds shift that puts ``threshold`` where corpus-balanced recall of the hateful texts is ``recall``.

    Each corpus's hateful texts weigh the same in total, so the largest corpus does not set the
    point alone. Returns ``logit(threshold) - logit(t*)`` with ``t*`` the largest score whose
    weighted share of hateful texts scoring above it is at least ``recall``.
    """
    pos = y == 1
    scores, names = np.asarray(p)[pos], np.asarray(src)[pos]
    w = np.zeros(len(scores))
    for n in np.unique(names):
        w[names == n] = 1.0 / (names == n).sum()
    order = np.argsort(-scores, kind="stable")
    cum = np.cumsum(w[order]) / w.sum()
    k = int(np.searchsorted(cum, recall))
    t = float(np.clip(scores[order][min(k, len(order) - 1)], 1e-9, 1 - 1e-9))
    t = float(np.nextafter(t, 0.0))  # flagging is "> threshold": the k-th text must stay above it
    return float(np.log(threshold / (1 - threshold)) - np.log(t / (1 - t)))


def calibration_weights(src: np.ndarray, y: np.ndarray, weighting: str) -> np.ndarray | None:
    """Sample weights for the calibrator: ``mixture`` = none; ``balanced`` = equal weight per corpus, then per class.

    With ``balanced`` the calibrated score is P(hateful) under a 50% prior with every corpus
    counted alike, so the number does not depend on how the calibration split happens to mix
    corpora and classes; 0.1 then reads "likelihood ratio 1:9 for hateful".
    """
    if weighting == "mixture":
        return None
    w = np.zeros(len(y), dtype=np.float64)
    names = np.unique(src)
    for n in names:
        m = src == n
        w[m] = 1.0 / m.sum()
    pos = y == 1
    if pos.any() and (~pos).any():
        w[pos] *= 0.5 / w[pos].sum()
        w[~pos] *= 0.5 / w[~pos].sum()
    return w * len(y) / w.sum()


# ---------------------------------------------------------------- metrics

def binary_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict:
    """AUROC (when both classes occur) and precision / recall / FPR / flag rate at ``threshold``."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y).astype(int)
    flag = np.asarray(p) > threshold
    pos, neg = y == 1, y == 0
    out = {"n": int(len(y)), "positives": int(pos.sum())}
    out["auroc"] = float(roc_auc_score(y, p)) if pos.any() and neg.any() else None
    out["recall"] = float(flag[pos].mean()) if pos.any() else None
    out["fpr"] = float(flag[neg].mean()) if neg.any() else None
    out["precision"] = float(y[flag].mean()) if flag.any() else None
    out["flag_rate"] = float(flag.mean()) if len(y) else None
    return out


def threshold_for_recall(y: np.ndarray, p: np.ndarray, recall: float) -> float:
    """Largest threshold t with recall(score > t) >= ``recall``."""
    pos = np.sort(np.asarray(p)[np.asarray(y) == 1])[::-1]
    k = max(int(np.ceil(recall * len(pos))) - 1, 0)
    return float(np.nextafter(pos[k], -np.inf))


def threshold_for_fpr(y: np.ndarray, p: np.ndarray, fpr: float) -> float:
    """Smallest threshold t with FPR(score > t) <= ``fpr``."""
    neg = np.sort(np.asarray(p)[np.asarray(y) == 0])[::-1]
    k = int(np.floor(fpr * len(neg)))
    return float(neg[min(k, len(neg) - 1)])


def functional_report(clf, threshold: float) -> dict:
    """``hate`` on the out-of-template functional test set: AUROC, flag share per functionality and per label."""
    from simplesafe.safety.functional import functional_test_set

    cases = functional_test_set()
    p = clf.score([c["text"] for c in cases])
    y = np.array([c["label"] for c in cases])
    funcs: dict[str, dict] = {}
    for c, v in zip(cases, p):
        f = funcs.setdefault(c["functionality"], {"label": c["label"], "n": 0, "flagged": 0})
        f["n"] += 1
        f["flagged"] += int(v > threshold)
    for f in funcs.values():
        f["share_flagged"] = round(f["flagged"] / f["n"], 4)
    m = binary_metrics(y, p, threshold)
    return {"n": len(cases), "auroc": m["auroc"], "hateful_flagged": m["recall"], "non_hateful_flagged": m["fpr"],
            "functionalities": dict(sorted(funcs.items(), key=lambda kv: _func_order(kv[0])))}


def _func_order(name: str) -> int:
    head = name.split("_", 1)[0]
    return int(head[1:]) if head[1:].isdigit() else 99
