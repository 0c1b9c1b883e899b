"""Toxicity scoring: one interface, several backends, batched, offline by default.

    scorer = get_toxicity_scorer()                 # the default "ensemble" backend
    scores = scorer.score(["you are lovely", "immigrants are vermin", "shut the fuck up"])
    scores["profanity"]   # alt-profanity-check, P(offensive/profane)
    scores["hate"]        # the MiniLM hate classifier, P(hateful), calibrated on held-out data
    scores["toxicity"]    # max over the labels: the report's rule "<= 0.1 on every label"
    keep = scores["toxicity"] <= resolve_threshold(0.1)

Every backend returns a dict of label -> float array in [0, 1], always including
``toxicity`` = the maximum over the backend's labels, so curation filters, the ``safety``
reward of PPO/GRPO and the evaluation metrics all apply one rule. The report (following
Detoxify) treats a text as safe when every label is <= 0.1.

Backends
- ``ensemble`` (default): ``profanity`` + ``hate``; ``toxicity = max(profanity, hate)``.
  A text is flagged when either model flags it, so the ensemble catches profanity exactly as
  well as profanity-check alone and adds hate that uses no swear words.
- ``hate-classifier``: the hate classifier alone (:mod:`simplesafe.safety.classifier`).
- ``profanity-check``: alt-profanity-check's linear SVM alone (a profanity detector: it
  ranks hate without swear words no better than chance).
- ``detoxify``: Detoxify (Hanu & Unitary team 2020) from a LOCAL checkpoint; optional extra.
- ``hf``: any Hugging Face sequence classifier given by local path; label names from
  ``config.id2label``.

What 0.1 means. Both ensemble members are calibrated probabilities: alt-profanity-check
ships a classifier calibrated by cross-validation on its own ~200k labelled texts, and the
hate classifier is calibrated (Platt or isotonic, chosen by cross-validated log-loss) on a
held-out, group-disjoint calibration split of the training corpora. So ``hate > 0.1``
reads "at least ~10% of held-out texts with this score were labelled hateful" in that
mixture (35% hateful, most benign texts mentioning the targeted groups). In practice 0.1 is
a high-recall, low-precision filter. Measured on the group-disjoint test splits of the
shipped build (``python bench/safety.py``; ``safety.json`` -> ``test_metrics``):

    held-out corpus          hate classifier @0.1              ensemble @0.1
                             AUROC  precision recall  FPR      AUROC  recall  FPR
    toxigen_annotated        0.949  0.60      0.98    0.30     0.939  0.99    0.44
    toxigen_demonstrations   0.949  0.70      0.99    0.41     0.946  0.99    0.57
    implicit_hate            0.855  0.48      0.96    0.64     0.807  0.97    0.72
    stormfront               0.908  0.52      0.96    0.35     0.891  0.99    0.45
    templates (unseen ones)  1.000  0.95      1.00    0.05     0.999  1.00    0.27
    wiki_talk                0.956  0.59      0.95    0.16     0.992  0.98    0.19
    contrast (unseen preds)  0.991  0.80      0.96    0.11     0.953  0.99    0.65
    simple_wikipedia (benign)  -     -         -      0.01       -      -     0.04

The ensemble's AUROC on the hate corpora is below the classifier's because profanity-check
scores many benign tweets above 0.1; use ``backend: hate-classifier`` to rank hate alone.

Other operating points are stored by name (``recall_90``, ``recall_95``, ``fpr_05``,
``fpr_01``, fitted on the calibration split); a recipe picks one with
``threshold: recall_90`` or a number (:func:`resolve_threshold`).
See docs/safety.md for how to get Detoxify weights and how the classifier was built.

In a recipe, every stage that scores text takes the same ``toxicity:`` section
(:mod:`simplesafe.text.toxicity_section`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Protocol

import numpy as np

DEFAULT_THRESHOLD = 0.1


class ToxicityScorer(Protocol):
    name: str
    labels: list[str]

    def score(self, texts: list[str]) -> dict[str, np.ndarray]: ...


def _as_texts(texts) -> list[str]:
    return [t if isinstance(t, str) else "" for t in texts]


def _with_max(scores: dict[str, np.ndarray], labels: list[str]) -> dict[str, np.ndarray]:
    """Add ``toxicity`` = element-wise maximum over ``labels``."""
    scores["toxicity"] = np.max(np.stack([scores[k] for k in labels]), axis=0) if labels else np.zeros(0)
    return scores


class ProfanityCheckScorer:
    """alt-profanity-check: calibrated probability that a text is offensive (profane)."""

    name = "profanity-check"
    labels = ["profanity"]

    def __init__(self, batch_size: int = 1024):
        from profanity_check import predict_prob

        self._predict_prob = predict_prob
        self.batch_size = batch_size

    def score(self, texts: list[str]) -> dict[str, np.ndarray]:
        texts = _as_texts(texts)
        out = np.zeros(len(texts), dtype=np.float64)
        for i in range(0, len(texts), self.batch_size):
            chunk = texts[i: i + self.batch_size]
            if chunk:
                out[i: i + len(chunk)] = self._predict_prob(chunk)
        return {"profanity": out, "toxicity": out.copy()}


class HateClassifierScorer:
    """The MiniLM hate classifier alone (calibrated P(hateful), maximum over the parts of long texts).

    ``runtime`` (``onnx`` or ``torch``), ``long_texts`` (``windows`` or ``truncate``), ``cascade``
    and ``device`` go to :class:`simplesafe.safety.classifier.HateClassifier`.
    """

    name = "hate-classifier"
    labels = ["hate"]

    def __init__(self, artifact: str | None = None, batch_size: int = 64, progress: bool = False,
                 runtime: str = "onnx", long_texts: str = "windows", cascade: bool = True, device: str = "cpu"):
        from simplesafe.safety.classifier import HateClassifier

        self.classifier = HateClassifier(artifact, batch_size=batch_size, progress=progress, runtime=runtime,
                                         long_texts=long_texts, cascade=cascade, device=device)

    def score(self, texts: list[str]) -> dict[str, np.ndarray]:
        hate = self.classifier.score(_as_texts(texts)).astype(np.float64)
        return {"hate": hate, "toxicity": hate.copy()}


class EnsembleScorer:
    """profanity-check + the hate classifier; ``toxicity`` = max of the two calibrated scores.

    The profanity score is alt-profanity-check's, shifted in log-odds by the artifact's
    ``profanity_calibration`` (version 2: down, so that 0.1 flags 5% of benign held-out texts
    as the hate label's 0.1 is placed at a stated recall); ``calibrate_profanity=False`` keeps
    the raw score. A shift is monotone: profanity-check's own ranking is unchanged.

    The maximum is the rule of the report ("every label <= 0.1") applied to two detectors
    of different harms: a text is unsafe if it is profane OR hateful.
    """

    name = "ensemble"
    labels = ["profanity", "hate"]

    def __init__(self, artifact: str | None = None, batch_size: int = 64, progress: bool = False,
                 runtime: str = "onnx", long_texts: str = "windows", cascade: bool = True, device: str = "cpu",
                 calibrate_profanity: bool = True):
        self.profanity = ProfanityCheckScorer()
        self.hate = HateClassifierScorer(artifact, batch_size=batch_size, progress=progress, runtime=runtime,
                                         long_texts=long_texts, cascade=cascade, device=device)
        cal = self.hate.classifier.meta.get("profanity_calibration") if calibrate_profanity else None
        self.profanity_shift = float(cal["shift"]) if cal else 0.0

    @property
    def classifier(self):
        return self.hate.classifier

    def score(self, texts: list[str]) -> dict[str, np.ndarray]:
        texts = _as_texts(texts)
        prof = self.profanity.score(texts)["profanity"]
        shift = getattr(self, "profanity_shift", 0.0)
        if shift:
            from simplesafe.safety.classifier import calibrate

            z = np.log(np.clip(prof, 1e-12, 1 - 1e-12) / np.clip(1 - prof, 1e-12, 1))
            prof = calibrate({"method": "none", "shift": shift}, z)
        scores = {"profanity": prof, "hate": self.hate.score(texts)["hate"]}
        return _with_max(scores, self.labels)


# ---------------------------------------------------------------- optional / external backends

DETOXIFY_HELP = (
    "Detoxify is an optional extra: install it with `pip install 'simplesafe[detoxify]'`. It cannot download "
    "weights here, so give it local files: the checkpoint (e.g. toxic_debiased-c7548aa0.ckpt for "
    "model_type 'unbiased', the default; toxic_original-c1212f89.ckpt for 'original'; from "
    "https://github.com/unitaryai/detoxify/releases, downloaded where the internet is reachable) as "
    "`checkpoint=PATH`, and a local copy of its base model's Hugging Face folder (config + tokenizer; "
    "`bert-base-uncased` for 'original', `roberta-base` for 'unbiased', `xlm-roberta-base` for 'multilingual') "
    "as `config_path=DIR`. See docs/safety.md."
)


class DetoxifyScorer:
    """Detoxify from a local checkpoint; its ``toxicity`` label is renamed ``toxic``."""

    name = "detoxify"

    def __init__(self, checkpoint: str | None = None, config_path: str | None = None,
                 model_type: str = "unbiased", batch_size: int = 32, device: str = "auto"):
        from simplesafe.errors import ModelLoadError

        try:
            from detoxify import Detoxify
        except ImportError:
            raise ModelLoadError(f"the 'detoxify' backend needs the detoxify package. {DETOXIFY_HELP}") from None
        if not checkpoint or not Path(checkpoint).is_file():
            raise ModelLoadError(f"detoxify checkpoint not found: {checkpoint!r}. {DETOXIFY_HELP}")
        if not config_path or not Path(config_path).is_dir():
            raise ModelLoadError(f"detoxify config_path folder not found: {config_path!r}. {DETOXIFY_HELP}")
        from simplesafe.models.load import resolve_device

        self.model = Detoxify(model_type, checkpoint=str(checkpoint), device=resolve_device(device),
                              huggingface_config_path=str(config_path))
        self.batch_size = batch_size
        self.labels: list[str] = []

    def score(self, texts: list[str]) -> dict[str, np.ndarray]:
        texts = _as_texts(texts)
        parts: dict[str, list] = {}
        for i in range(0, len(texts), self.batch_size):
            for k, v in self.model.predict(texts[i: i + self.batch_size]).items():
                parts.setdefault("toxic" if k == "toxicity" else k, []).extend(np.atleast_1d(v).tolist())
        scores = {k: np.asarray(v, dtype=np.float64) for k, v in parts.items()}
        self.labels = sorted(scores)
        if not texts:
            return {"toxicity": np.zeros(0)}
        return _with_max(scores, self.labels)


BENIGN_LABEL = re.compile(r"^(non[-_ ]?toxic|not[-_ ]?(toxic|hate|hateful|offensive)|no[-_ ]?hate|neutral|normal|"
                          r"benign|safe|clean|ok|none|acceptable)$", re.IGNORECASE)


def _label_key(name: str) -> str:
    key = re.sub(r"[^0-9a-z]+", "_", str(name).lower()).strip("_") or "label"
    return "toxic" if key == "toxicity" else key


class HFClassifierScorer:
    """Any Hugging Face sequence classifier by local path, batched.

    Probabilities are a softmax over labels (single-label models) or a sigmoid per label
    (``problem_type == "multi_label_classification"`` or one output). ``toxicity`` is the
    maximum over the non-benign labels: names like ``neutral``, ``non-toxic``, ``not_hate``
    are benign, or pass ``benign_labels=[...]``. Models with generic names (``LABEL_0``)
    and a softmax need ``benign_labels`` so the max does not count the benign class.
    """

    name = "hf"

    def __init__(self, model_path: str | None = None, batch_size: int = 32, max_length: int = 256,
                 benign_labels: list[str] | None = None, device: str = "auto", trust_remote_code: bool = False):
        from simplesafe.errors import ConfigError
        from simplesafe.models.load import load_sequence_classifier, load_tokenizer, resolve_device

        device = resolve_device(device)  # auto: the GPU when there is one (fp32: a small calibrated classifier)
        if not model_path:
            raise ConfigError("the 'hf' toxicity backend needs model_path=LOCAL_DIR (a sequence classifier folder)")
        self.model = load_sequence_classifier(model_path, trust_remote_code=trust_remote_code).to(device).eval()
        self.tokenizer = load_tokenizer(model_path, trust_remote_code=trust_remote_code)
        self.device, self.batch_size, self.max_length = device, batch_size, max_length
        cfg = self.model.config
        n = int(cfg.num_labels)
        names = [str(cfg.id2label.get(i, f"LABEL_{i}")) for i in range(n)]
        self.label_names = [_label_key(x) for x in names]
        if len(set(self.label_names)) != n:
            raise ConfigError(f"{model_path}: label names {names} collide after normalisation")
        self.sigmoid = cfg.problem_type == "multi_label_classification" or n == 1
        if benign_labels is not None:
            benign = {_label_key(b) for b in benign_labels}
            unknown = benign - set(self.label_names)
            if unknown:
                raise ConfigError(f"benign_labels {sorted(unknown)} are not labels of {model_path}; "
                                  f"its labels: {self.label_names}")
        else:
            benign = {k for k, raw in zip(self.label_names, names) if BENIGN_LABEL.match(raw.strip())}
            generic = all(re.fullmatch(r"label_\d+", k) for k in self.label_names)
            if not self.sigmoid and not benign and generic:
                raise ConfigError(
                    f"{model_path}: labels {self.label_names} do not say which class is benign; "
                    "pass benign_labels=[...] (e.g. benign_labels=[LABEL_0])")
        self.labels = [k for k in self.label_names if k not in benign]
        if not self.labels:
            raise ConfigError(f"{model_path}: every label {self.label_names} is benign; nothing to score")

    def score(self, texts: list[str]) -> dict[str, np.ndarray]:
        import torch

        texts = _as_texts(texts)
        probs = np.zeros((len(texts), len(self.label_names)), dtype=np.float64)
        with torch.inference_mode():
            for i in range(0, len(texts), self.batch_size):
                chunk = texts[i: i + self.batch_size]
                enc = self.tokenizer(chunk, padding=True, truncation=True, max_length=self.max_length,
                                     return_tensors="pt").to(self.device)
                logits = self.model(**enc).logits.float()
                p = torch.sigmoid(logits) if self.sigmoid else torch.softmax(logits, dim=-1)
                probs[i: i + len(chunk)] = p.cpu().numpy()
        scores = {k: probs[:, j] for j, k in enumerate(self.label_names)}
        return _with_max(scores, self.labels)


BACKENDS = {
    "ensemble": EnsembleScorer,
    "hate-classifier": HateClassifierScorer,
    "profanity-check": ProfanityCheckScorer,
    "detoxify": DetoxifyScorer,
    "hf": HFClassifierScorer,
}
DEFAULT_BACKEND = "ensemble"


def get_toxicity_scorer(backend: str = DEFAULT_BACKEND, **kwargs) -> ToxicityScorer:
    """Build a scorer; ``kwargs`` go to the backend (e.g. ``model_path=`` for ``hf``)."""
    from simplesafe.errors import ConfigError

    if backend not in BACKENDS:
        raise ConfigError(f"unknown toxicity backend '{backend}'; allowed: {', '.join(BACKENDS)}")
    try:
        return BACKENDS[backend](**kwargs)
    except TypeError as exc:
        raise ConfigError(f"bad options for toxicity backend '{backend}': {exc}") from None


def resolve_threshold(threshold: float | str = DEFAULT_THRESHOLD, artifact: str | None = None) -> float:
    """A number in (0, 1), or the name of an operating point stored with the hate classifier.

    Names: ``report`` (0.1), ``recall_90`` / ``recall_95`` (threshold reaching that recall on
    the held-out calibration split), ``fpr_05`` / ``fpr_01`` (that false-positive rate).
    """
    from simplesafe.errors import ConfigError

    if isinstance(threshold, (int, float)) and not isinstance(threshold, bool):
        if not 0.0 <= float(threshold) <= 1.0:
            raise ConfigError(f"toxicity threshold must be in [0, 1], got {threshold}")
        return float(threshold)
    try:
        return resolve_threshold(float(threshold))
    except ValueError:
        pass
    from simplesafe.safety.classifier import HateClassifier

    return HateClassifier(artifact).operating_point(str(threshold))


def __getattr__(name: str):
    """``ToxicityConfig`` and ``scorer_from_config`` lived here before the section had its own module."""
    if name in ("ToxicityConfig", "ToxicitySettings", "scorer_from_config", "toxicity_config"):
        from simplesafe.text import toxicity_section

        return getattr(toxicity_section, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
