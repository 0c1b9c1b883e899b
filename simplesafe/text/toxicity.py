"""Toxicity scoring: one interface, several backends, batched.

    scorer = get_toxicity_scorer("profanity-check")
    scores = scorer.score(["you are lovely", "you are an idiot"])
    scores["toxicity"]   # the maximum over labels, one float per text in [0, 1]

Every backend returns a dict of label -> numpy array, always including ``toxicity``
(the maximum over the backend's own labels), so filters can apply the report's rule
"<= 0.1 on every label" as ``scores["toxicity"] <= 0.1``.

Backends
- ``profanity-check``: alt-profanity-check's linear SVM (offline; a profanity detector).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class ToxicityScorer(Protocol):
    name: str
    labels: list[str]

    def score(self, texts: list[str]) -> dict[str, np.ndarray]: ...


class ProfanityCheckScorer:
    """alt-profanity-check: calibrated probability that a text is offensive (profane)."""

    name = "profanity-check"
    labels = ["profanity"]

    def __init__(self, batch_size: int = 1024):
        from profanity_check import predict_prob

        self._predict_prob = predict_prob
        self.batch_size = batch_size

    def score(self, texts: list[str]) -> dict[str, np.ndarray]:
        texts = [t if isinstance(t, str) else "" for t in texts]
        out = np.zeros(len(texts), dtype=np.float64)
        for i in range(0, len(texts), self.batch_size):
            chunk = texts[i: i + self.batch_size]
            if chunk:
                out[i: i + len(chunk)] = self._predict_prob(chunk)
        return {"profanity": out, "toxicity": out.copy()}


BACKENDS = {"profanity-check": ProfanityCheckScorer}
DEFAULT_BACKEND = "profanity-check"


def get_toxicity_scorer(backend: str = DEFAULT_BACKEND, **kwargs) -> ToxicityScorer:
    from simplesafe.errors import ConfigError

    if backend not in BACKENDS:
        raise ConfigError(f"unknown toxicity backend '{backend}'; allowed: {', '.join(BACKENDS)}")
    return BACKENDS[backend](**kwargs)
