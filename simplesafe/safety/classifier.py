"""The hate classifier: all-MiniLM-L6-v2 sentence embeddings, a small head, a calibrator.

Scoring needs only the encoder bundled with the package and a small artifact folder:

- ``encoder.safetensors`` (when the build fine-tuned the encoder): the six transformer layers
  of MiniLM in float16 (~21 MB), loaded into a private copy of the bundled encoder; the word
  embeddings stay those of the bundled model. Without it the encoder is used frozen.
- ``head.safetensors``: the head's weights (logistic regression ``w``/``b``, or a one-hidden-layer
  MLP ``w1``/``b1``/``w2``/``b2``), evaluated here in numpy, so no pickles are loaded;
- ``safety.json``: encoder name and max sequence length, the calibrator (Platt's sigmoid
  a, b or an isotonic step function, Zadrozny & Elkan 2002), the held-out metrics and the
  named operating points, plus the build config and data fingerprint.

The artifact is looked up in the cache first (``$SIMPLESAFE_CACHE/safety/hate-minilm``,
written by ``simplesafe models build-safety``), then in the copy shipped inside the
package (``simplesafe/models/safety_artifacts/hate-minilm``).

    clf = HateClassifier()              # cache build if present, else the shipped one
    p = clf.score(["I hate immigrants.", "Immigrants are my neighbours."])   # calibrated P(hateful)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from simplesafe.errors import ModelLoadError
from simplesafe.paths import PACKAGE_DIR, cache_dir

ARTIFACT_NAME = "hate-minilm"
HEAD_FILE = "head.safetensors"
META_FILE = "safety.json"
ENCODER_FILE = "encoder.safetensors"


def shipped_artifact_dir() -> Path:
    return PACKAGE_DIR / "models" / "safety_artifacts" / ARTIFACT_NAME


def cache_artifact_dir() -> Path:
    return cache_dir() / "safety" / ARTIFACT_NAME


def default_artifact_dir() -> Path:
    """The cache build when one exists, else the artifact shipped in the package."""
    cached = cache_artifact_dir()
    if (cached / META_FILE).exists() and (cached / HEAD_FILE).exists():
        return cached
    return shipped_artifact_dir()


# ---------------------------------------------------------------- heads (pure numpy)

def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


def head_logits(weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Raw decision values of a logistic-regression or one-hidden-layer ReLU MLP head."""
    x = np.asarray(x, dtype=np.float32)
    if "w" in weights:
        return x @ weights["w"] + weights["b"]
    h = np.maximum(x @ weights["w1"] + weights["b1"], 0.0)
    return (h @ weights["w2"] + weights["b2"]).reshape(-1)


# ---------------------------------------------------------------- calibration

def calibrate(calibration: dict, logits: np.ndarray) -> np.ndarray:
    """Map head decision values to probabilities with a fitted calibrator.

    ``{"method": "platt", "a": .., "b": ..}``: ``sigmoid(a * z + b)`` (Platt 1999).
    ``{"method": "isotonic", "x": [...], "y": [...]}``: the monotone step function
    fitted by isotonic regression, linearly interpolated and clipped at the ends (as
    scikit-learn's ``IsotonicRegression.predict`` does).
    """
    z = np.asarray(logits, dtype=np.float64)
    method = calibration.get("method")
    if method == "platt":
        return _sigmoid(calibration["a"] * z + calibration["b"])
    if method == "isotonic":
        return np.interp(z, np.asarray(calibration["x"]), np.asarray(calibration["y"]))
    if method == "none":
        return _sigmoid(z)
    raise ModelLoadError(f"unknown calibration method {method!r}; expected platt, isotonic or none")


# ---------------------------------------------------------------- the classifier

def encode_texts(encoder, texts: list[str], max_seq_length: int, batch_size: int = 64,
                 progress: bool = False) -> np.ndarray:
    """Unit-normalised float32 sentence embeddings at the truncation the head was trained on."""
    old = encoder.max_seq_length
    encoder.max_seq_length = max_seq_length
    try:
        return encoder.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                              convert_to_numpy=True, show_progress_bar=progress).astype(np.float32)
    finally:
        encoder.max_seq_length = old


class HateClassifier:
    """Calibrated P(hateful or toxic) for each text, batched."""

    def __init__(self, artifact_dir: str | Path | None = None, encoder: str | None = None,
                 batch_size: int = 64, progress: bool = False):
        self.artifact_dir = Path(artifact_dir) if artifact_dir else default_artifact_dir()
        meta_path = self.artifact_dir / META_FILE
        head_path = self.artifact_dir / HEAD_FILE
        if not meta_path.exists() or not head_path.exists():
            raise ModelLoadError(
                f"no safety classifier at {self.artifact_dir} (need {META_FILE} and {HEAD_FILE}); "
                "build one with `simplesafe models build-safety` or reinstall simplesafe to restore the shipped copy"
            )
        try:
            self.meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ModelLoadError(f"{meta_path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
        from safetensors.numpy import load_file

        self.weights = load_file(str(head_path))
        self.calibration = self.meta["calibration"]
        self.encoder_name = encoder or self.meta.get("encoder", "embedded:minilm")
        self.max_seq_length = int(self.meta.get("max_seq_length", 128))
        self.batch_size = batch_size
        self.progress = progress
        self._encoder = None

    @property
    def encoder(self):
        """The sentence encoder: the shared frozen one, or a private copy with the fine-tuned layers."""
        if self._encoder is None:
            weights = self.meta.get("encoder_weights")
            if weights:
                from safetensors.torch import load_file as load_torch

                from simplesafe.safety.finetune import fresh_encoder, load_trained_state

                path = self.artifact_dir / weights
                if not path.exists():
                    raise ModelLoadError(f"{self.artifact_dir}/{META_FILE} names {weights}, which is missing; "
                                         "rebuild with `simplesafe models build-safety`")
                enc = fresh_encoder(self.encoder_name)
                load_trained_state(enc, load_torch(str(path)), str(path))
                self._encoder = enc
            else:
                from simplesafe.models.load import load_sentence_encoder

                self._encoder = load_sentence_encoder(self.encoder_name)
        return self._encoder

    def embed(self, texts: list[str]) -> np.ndarray:
        return encode_texts(self.encoder, texts, self.max_seq_length, self.batch_size, self.progress)

    def logits_from_embeddings(self, emb: np.ndarray) -> np.ndarray:
        return head_logits(self.weights, emb)

    def score_embeddings(self, emb: np.ndarray) -> np.ndarray:
        return calibrate(self.calibration, self.logits_from_embeddings(emb))

    def score(self, texts: list[str]) -> np.ndarray:
        texts = [t if isinstance(t, str) else "" for t in texts]
        if not texts:
            return np.zeros(0, dtype=np.float64)
        return self.score_embeddings(self.embed(texts))

    def operating_point(self, name: str) -> float:
        points = self.meta.get("operating_points", {})
        if name not in points:
            from simplesafe.errors import ConfigError

            raise ConfigError(f"unknown operating point '{name}'; this artifact has: {', '.join(sorted(points))}")
        return float(points[name])
