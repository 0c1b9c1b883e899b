"""The hate classifier: fine-tuned all-MiniLM-L6-v2, a linear head, a calibrator; whole texts; a cascade.

Scoring needs only the encoder bundled with the package and a small artifact folder:

- ``encoder.safetensors`` (when the build fine-tuned the encoder): the six transformer layers
  of MiniLM in float16 (~21 MB), loaded into a private copy of the bundled encoder; the word
  embeddings stay those of the bundled model. Without it the encoder is used frozen.
- ``head.safetensors``: the head's weights (logistic regression ``w``/``b``, or a one-hidden-layer
  MLP ``w1``/``b1``/``w2``/``b2``), evaluated here in numpy, so no pickles are loaded;
- ``student/`` and ``student_head.safetensors`` (version 2): a static-embedding student
  (model2vec, Tulkens & van Dongen 2024) distilled from the fine-tuned encoder, with its own
  logistic head and calibrator; the cheap first stage of the cascade below;
- ``safety.json``: encoder name and max sequence length, the calibrator (Platt's sigmoid
  a, b or an isotonic step function, Zadrozny & Elkan 2002), the cascade threshold, the
  held-out metrics and the named operating points, plus the build config and data fingerprint.

How a text is scored (:meth:`HateClassifier.score`):

1. **Whole texts.** A text longer than the encoder window (``max_seq_length`` tokens) is cut
   into parts: its sentences, packed into windows that fit, consecutive windows sharing one
   sentence (a sentence longer than the window is cut into overlapping word chunks). The
   text's ``hate`` score is the maximum over its parts, so a hateful sentence counts the same
   wherever it stands. ``long_texts="truncate"`` restores the first version's behaviour (only
   the first window is read).
2. **Cascade.** Each part is first scored by the student (a static embedding lookup and a dot
   product: tens of thousands of parts per second). Parts the student puts below the stored
   ``cascade.student_below`` threshold are settled with the student's calibrated score;
   only the rest go through the fine-tuned encoder. The threshold is chosen by the build on
   held-out calibration data so that the cascade keeps >= 99% of the parts that the encoder
   alone flags at the default threshold (``cascade=False`` scores every part with the encoder).
3. **Runtime.** The encoder runs in ONNX Runtime (``runtime="onnx"``, default): the fine-tuned
   PyTorch model is exported once into the cache (``$SIMPLESAFE_CACHE/safety/onnx/<hash>``),
   float32, so its embeddings equal PyTorch's to ~1e-6 and the stored calibration holds.
   ``runtime="torch"`` uses sentence-transformers directly (any ``device``).

The artifact is looked up in the cache first (``$SIMPLESAFE_CACHE/safety/hate-minilm``,
written by ``simplesafe models build-safety``), then in the copy shipped inside the
package (``simplesafe/models/safety_artifacts/hate-minilm``).

    clf = HateClassifier()              # cache build if present, else the shipped one
    p = clf.score(["I hate immigrants.", "Immigrants are my neighbours."])   # calibrated P(hateful)
"""

from __future__ import annotations

import hashlib
import json
import re
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
    An optional ``"shift"`` adds a constant to the log-odds afterwards (the build uses it to
    place the default threshold at a stated recall; see ``simplesafe.safety.calibration``).
    """
    z = np.asarray(logits, dtype=np.float64)
    method = calibration.get("method")
    if method == "platt":
        p = _sigmoid(calibration["a"] * z + calibration["b"])
    elif method == "isotonic":
        p = np.interp(z, np.asarray(calibration["x"]), np.asarray(calibration["y"]))
    elif method == "none":
        p = _sigmoid(z)
    else:
        raise ModelLoadError(f"unknown calibration method {method!r}; expected platt, isotonic or none")
    shift = calibration.get("shift")
    if shift:
        p = np.clip(p, 1e-12, 1 - 1e-12)
        p = _sigmoid(np.log(p / (1 - p)) + float(shift))
    return p


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



# ---------------------------------------------------------------- whole texts: parts

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\s*\n+\s*")


def _window_limit(max_seq_length: int) -> int:
    return max(int(max_seq_length) - 2, 8)  # [CLS] and [SEP]


def split_parts(texts: list[str], tokenizer, max_seq_length: int,
                part_tokens: int | None = None) -> tuple[list[str], np.ndarray]:
    """Cut each text that does not fit the encoder window into overlapping parts.

    Returns ``(parts, owner)``: ``owner[k]`` is the index of the text part ``k`` comes from;
    every text has at least one part (a text that fits the window, ``max_seq_length - 2``
    tokens, is its own single part). Long texts are split into sentences, packed greedily
    into parts of at most ``part_tokens`` tokens (default: the window); consecutive parts
    share their boundary sentence, so a sentence is also read with each neighbour. Parts
    shorter than the window keep one hateful sentence from being averaged away among a
    hundred benign tokens. A sentence longer than a part is cut into word chunks that
    overlap by a quarter.
    """
    window = _window_limit(max_seq_length)
    limit = min(window, int(part_tokens)) if part_tokens else window
    n_tok = _token_counts(tokenizer, texts)
    parts: list[str] = []
    owner: list[int] = []
    long_idx = [i for i, n in enumerate(n_tok) if n > window]
    for i, n in enumerate(n_tok):
        if n <= window:
            parts.append(texts[i])
            owner.append(i)
    if not long_idx:
        return parts, np.asarray(owner, dtype=np.int64)
    sentences = [[s for s in _SENTENCE_END.split(texts[i].strip()) if s] for i in long_idx]
    flat = [s for sents in sentences for s in sents]
    counts = iter(_token_counts(tokenizer, flat))
    for i, sents in zip(long_idx, sentences):
        units: list[tuple[str, int]] = []
        for s in sents:
            c = next(counts)
            if c <= limit:
                units.append((s, c))
            else:
                units.extend(_word_chunks(s, c, limit))
        for w in _pack(units, limit):
            parts.append(w)
            owner.append(i)
    order = np.argsort(np.asarray(owner), kind="stable")
    return [parts[k] for k in order], np.asarray(owner, dtype=np.int64)[order]


def _token_counts(tokenizer, texts: list[str]) -> list[int]:
    if not texts:
        return []
    enc = tokenizer(list(texts), add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
    return [len(x) for x in enc]


def _word_chunks(sentence: str, n_tokens: int, limit: int) -> list[tuple[str, int]]:
    words = sentence.split()
    per = max(1, int(len(words) * limit / max(n_tokens, 1) * 0.9))
    step = max(1, per - per // 4)
    out = []
    for s in range(0, len(words), step):
        chunk = words[s: s + per]
        out.append((" ".join(chunk), int(np.ceil(n_tokens * len(chunk) / max(len(words), 1)))))
        if s + per >= len(words):
            break
    return out


def _pack(units: list[tuple[str, int]], limit: int) -> list[str]:
    """Greedy windows of whole units within ``limit`` tokens; consecutive windows share one unit."""
    out, i = [], 0
    while i < len(units):
        j, total = i, 0
        while j < len(units) and (j == i or total + units[j][1] <= limit):
            total += units[j][1]
            j += 1
        out.append(" ".join(u for u, _ in units[i:j]))
        if j >= len(units):
            break
        i = j - 1 if j - 1 > i else j
    return out


def max_by_owner(values: np.ndarray, owner: np.ndarray, n: int) -> np.ndarray:
    """Per text, the maximum over its parts (every text has at least one part)."""
    out = np.full(n, -np.inf)
    np.maximum.at(out, owner, values)
    return out


# ---------------------------------------------------------------- encoder runtimes

RUNTIMES = ("onnx", "torch")
DEFAULT_RUNTIME = "onnx"
ONNX_EXPORT_VERSION = 1


class _MeanPooled:
    """MiniLM + mean pooling + unit length, as one module to export (sentence-transformers' pipeline)."""

    @staticmethod
    def build(auto_model):
        import torch

        class Pooled(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, input_ids, attention_mask):
                h = self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
                mask = attention_mask.unsqueeze(-1).to(h.dtype)
                pooled = (h * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                return torch.nn.functional.normalize(pooled, dim=-1)

        return Pooled(auto_model).eval()


def export_onnx(encoder, path: Path) -> Path:
    """Export the encoder (transformer + mean pooling + normalisation) to ONNX, atomically."""
    import warnings

    import torch

    from simplesafe.atomic import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    module = _MeanPooled.build(encoder[0].auto_model)
    dummy = encoder.tokenizer(["a short text", "and another one here"], padding=True, return_tensors="pt")
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The TorchScript exporter: the dynamo exporter needs onnxscript, one more dependency.
        torch.onnx.export(module, (dummy["input_ids"], dummy["attention_mask"]), str(tmp),
                          input_names=["input_ids", "attention_mask"], output_names=["embedding"],
                          dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                                        "embedding": {0: "batch"}},
                          opset_version=17, dynamo=False)
    return path


class OnnxEncoder:
    """ONNX Runtime session for the exported encoder; batches are sorted by length."""

    def __init__(self, st_encoder, onnx_path: Path, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise ModelLoadError("runtime='onnx' needs the onnxruntime package (a dependency of simplesafe: "
                                 "`pip install onnxruntime`), or pass runtime='torch'") from None
        import torch

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads or torch.get_num_threads())
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        self.tokenizer = st_encoder.tokenizer
        self.dim = st_encoder.get_embedding_dimension()

    def encode(self, texts: list[str], max_seq_length: int, batch_size: int = 64) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        ids = self.tokenizer(list(texts), truncation=True, max_length=max_seq_length)["input_ids"]
        order = np.argsort([len(x) for x in ids], kind="stable")
        pad = self.tokenizer.pad_token_id or 0
        for s in range(0, len(order), batch_size):
            idx = order[s: s + batch_size]
            width = max(len(ids[i]) for i in idx)
            inp = np.full((len(idx), width), pad, dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            for r, i in enumerate(idx):
                inp[r, : len(ids[i])] = ids[i]
                mask[r, : len(ids[i])] = 1
            out[idx] = self.session.run(None, {"input_ids": inp, "attention_mask": mask})[0]
        return out


# ---------------------------------------------------------------- the student (first stage of the cascade)

STUDENT_DIR = "student"
STUDENT_HEAD_FILE = "student_head.safetensors"


class StudentScorer:
    """model2vec static embeddings + a logistic head + its calibrator."""

    def __init__(self, artifact_dir: Path, meta: dict):
        from safetensors.numpy import load_file

        try:
            from model2vec import StaticModel
        except ImportError:
            raise ModelLoadError("the artifact's cascade needs the model2vec package (a dependency of simplesafe: "
                                 "`pip install model2vec`), or pass cascade=False") from None
        d = artifact_dir / meta.get("dir", STUDENT_DIR)
        head = artifact_dir / meta.get("head", STUDENT_HEAD_FILE)
        if not d.is_dir() or not head.exists():
            raise ModelLoadError(f"{artifact_dir}/{META_FILE} names a student at {d.name}/ and {head.name}, "
                                 "which are missing; rebuild with `simplesafe models build-safety`")
        self.model = StaticModel.from_pretrained(str(d), force_download=False)
        self.weights = load_file(str(head))
        self.calibration = meta["calibration"]

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.model.encode(list(texts), use_multiprocessing=False), dtype=np.float32)

    def score(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0)
        return calibrate(self.calibration, head_logits(self.weights, self.embed(texts)))


# ---------------------------------------------------------------- the classifier

class HateClassifier:
    """Calibrated P(hateful or toxic) for each text, batched, over whole texts.

    ``runtime``: ``onnx`` (default) or ``torch``; ``long_texts``: ``windows`` (default, max over
    parts) or ``truncate`` (first window only, the first version's rule); ``cascade``: use the
    artifact's student first when it has one (default) or score every part with the encoder.
    """

    def __init__(self, artifact_dir: str | Path | None = None, encoder: str | None = None,
                 batch_size: int = 64, progress: bool = False, runtime: str = DEFAULT_RUNTIME,
                 long_texts: str = "windows", cascade: bool = True, device: str = "cpu"):
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
        from simplesafe.errors import ConfigError

        if runtime not in RUNTIMES:
            raise ConfigError(f"unknown runtime '{runtime}'; allowed: {', '.join(RUNTIMES)}")
        if long_texts not in ("windows", "truncate"):
            raise ConfigError(f"long_texts must be 'windows' or 'truncate', got '{long_texts}'")
        if runtime == "onnx" and device != "cpu":
            raise ConfigError("runtime='onnx' runs on the CPU; use runtime='torch' with device='cuda'")
        from safetensors.numpy import load_file

        self.weights = load_file(str(head_path))
        self.calibration = self.meta["calibration"]
        self.encoder_name = encoder or self.meta.get("encoder", "embedded:minilm")
        self.max_seq_length = int(self.meta.get("max_seq_length", 128))
        self.batch_size = batch_size
        self.progress = progress
        self.runtime = runtime
        self.long_texts = long_texts
        self.device = device
        self.use_cascade = bool(cascade and self.meta.get("cascade"))
        self._encoder = None
        self._onnx = None
        self._student = None
        self.last_stats: dict = {}

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
            if self.device != "cpu":
                self._encoder = self._encoder.to(self.device)
        return self._encoder

    @property
    def student(self) -> StudentScorer | None:
        if self._student is None and self.meta.get("student"):
            self._student = StudentScorer(self.artifact_dir, self.meta["student"])
        return self._student

    def onnx_path(self) -> Path:
        """Where this artifact's encoder export lives in the cache (keyed by the weights it holds)."""
        h = hashlib.sha256(f"{self.encoder_name}|{self.max_seq_length}|v{ONNX_EXPORT_VERSION}".encode())
        weights = self.meta.get("encoder_weights")
        if weights and (self.artifact_dir / weights).exists():
            with open(self.artifact_dir / weights, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
        return cache_dir() / "safety" / "onnx" / h.hexdigest()[:20] / "encoder.onnx"

    def _onnx_encoder(self) -> OnnxEncoder:
        if self._onnx is None:
            path = self.onnx_path()
            if not path.exists():
                export_onnx(self.encoder, path)
            self._onnx = OnnxEncoder(self.encoder, path)
        return self._onnx

    def embed(self, texts: list[str]) -> np.ndarray:
        """Encoder embeddings of ``texts`` as given (each truncated to the window; no parts, no cascade)."""
        texts = list(texts)
        if self.runtime == "onnx":
            return self._onnx_encoder().encode(texts, self.max_seq_length, self.batch_size)
        return encode_texts(self.encoder, texts, self.max_seq_length, self.batch_size, self.progress)

    def logits_from_embeddings(self, emb: np.ndarray) -> np.ndarray:
        return head_logits(self.weights, emb)

    def score_embeddings(self, emb: np.ndarray) -> np.ndarray:
        return calibrate(self.calibration, self.logits_from_embeddings(emb))

    def score_encoder(self, texts: list[str]) -> np.ndarray:
        """The encoder's calibrated score of each text as given (truncated to the window)."""
        if not texts:
            return np.zeros(0, dtype=np.float64)
        return self.score_embeddings(self.embed(texts))

    def parts(self, texts: list[str]) -> tuple[list[str], np.ndarray]:
        if self.long_texts == "truncate":
            return list(texts), np.arange(len(texts))
        return split_parts(list(texts), self.encoder.tokenizer, self.max_seq_length, self.meta.get("part_tokens"))

    def score_parts(self, parts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Scores of parts through the cascade; returns ``(scores, by_encoder)`` (a boolean mask)."""
        scores = np.zeros(len(parts), dtype=np.float64)
        by_encoder = np.ones(len(parts), dtype=bool)
        if self.use_cascade and parts:
            s = self.student.score(parts)
            settled = s < float(self.meta["cascade"]["student_below"])
            scores[settled] = s[settled]
            by_encoder = ~settled
        idx = np.flatnonzero(by_encoder)
        if len(idx):
            scores[idx] = self.score_encoder([parts[i] for i in idx])
        return scores, by_encoder

    def score(self, texts: list[str]) -> np.ndarray:
        texts = [t if isinstance(t, str) else "" for t in texts]
        if not texts:
            self.last_stats = {"texts": 0, "parts": 0, "by_encoder": 0}
            return np.zeros(0, dtype=np.float64)
        parts, owner = self.parts(texts)
        p, by_encoder = self.score_parts(parts)
        self.last_stats = {"texts": len(texts), "parts": len(parts), "by_encoder": int(by_encoder.sum())}
        return max_by_owner(p, owner, len(texts))

    def operating_point(self, name: str) -> float:
        points = self.meta.get("operating_points", {})
        if name not in points:
            from simplesafe.errors import ConfigError

            raise ConfigError(f"unknown operating point '{name}'; this artifact has: {', '.join(sorted(points))}")
        return float(points[name])
