"""What the safety build trains (:mod:`simplesafe.safety.build`): the encoder, the head on it, the static student.

- :func:`finetune_with_head`: MiniLM's transformer layers fine-tuned with a linear head
  (:mod:`simplesafe.safety.finetune`), the layers stored as float16 and loaded back;
- :func:`encoder_from_layers` (layers of an earlier build, or the shipped ones) and
  :func:`fit_head` (``logreg:C`` or ``mlp:HIDDEN`` on the frozen embeddings), for ``finetune_epochs=0``;
- :func:`fast_embedder`: texts to embeddings through an ONNX export of the encoder;
- :func:`fit_student`: a model2vec static student distilled from the encoder, its head and
  calibration, and the cascade threshold below which a part skips the encoder.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from simplesafe.errors import DataError
from simplesafe.safety.calibration import binary_metrics, calibration_weights, fit_calibrator, recall_shift

if TYPE_CHECKING:
    from simplesafe.safety.build import SafetyBuildConfig


def fit_head(spec: str, x: np.ndarray, y: np.ndarray, w: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Fit ``logreg:C`` or ``mlp:HIDDEN`` and return its weights as float32 arrays."""
    kind, _, arg = spec.partition(":")
    if kind == "logreg":
        from sklearn.linear_model import LogisticRegression

        m = LogisticRegression(C=float(arg or 1.0), max_iter=2000, random_state=seed)
        m.fit(x, y, sample_weight=w)
        return {"w": m.coef_[0].astype(np.float32), "b": m.intercept_.astype(np.float32)}
    if kind == "mlp":
        from sklearn.neural_network import MLPClassifier

        m = MLPClassifier(hidden_layer_sizes=(int(arg or 256),), alpha=1e-3, early_stopping=True,
                          validation_fraction=0.1, n_iter_no_change=20, max_iter=300, random_state=seed)
        m.fit(x, y, sample_weight=w)
        return {"w1": m.coefs_[0].astype(np.float32), "b1": m.intercepts_[0].astype(np.float32),
                "w2": m.coefs_[1].astype(np.float32), "b2": m.intercepts_[1].astype(np.float32)}
    from simplesafe.errors import ConfigError

    raise ConfigError(f"unknown head '{spec}'; use logreg:C or mlp:HIDDEN")


def finetune_with_head(cfg: SafetyBuildConfig, rows, y: np.ndarray, w: np.ndarray, tr: np.ndarray):
    """Fine-tune the encoder on the train split; return the head, the stored layers and the encoder.

    The layer weights are stored as float16 and loaded back into the returned encoder, so that
    calibration describes the shipped classifier.
    """
    import torch

    from simplesafe.safety.finetune import FinetuneSettings, finetune_encoder, fresh_encoder, load_trained_state

    settings = FinetuneSettings(epochs=cfg.finetune_epochs, lr=cfg.finetune_lr, batch_size=cfg.finetune_batch_size,
                                max_seq_length=cfg.max_seq_length, seed=cfg.seed, bf16=cfg.bf16,
                                progress=cfg.progress)
    encoder = fresh_encoder(cfg.encoder)
    tr_idx = np.flatnonzero(tr)
    if cfg.progress:
        print(f"fine-tuning {cfg.encoder} on {len(tr_idx)} texts for {cfg.finetune_epochs} epoch(s)", flush=True)
    state, head = finetune_encoder(encoder, [rows[i].text for i in tr_idx], y[tr_idx], w[tr_idx], settings)
    state = {k: v.to(dtype=torch.float16).contiguous() for k, v in state.items()}
    load_trained_state(encoder, state, "fine-tuned layers")
    return "finetune:linear", head, state, encoder


def encoder_from_layers(cfg: SafetyBuildConfig):
    """A private encoder holding the layers named by ``cfg.encoder_layers`` (a file, or ``shipped``), their state and hash."""
    from safetensors.torch import load_file as load_torch

    from simplesafe.safety.classifier import ENCODER_FILE, shipped_artifact_dir
    from simplesafe.safety.finetune import fresh_encoder, load_trained_state

    path = shipped_artifact_dir() / ENCODER_FILE if cfg.encoder_layers == "shipped" else Path(cfg.encoder_layers)
    if not path.exists():
        raise DataError(path, None, None, "encoder_layers: layer file not found (a float16 encoder.safetensors of an "
                                          "earlier build, or 'shipped')")
    state = load_torch(str(path))
    encoder = fresh_encoder(cfg.encoder)
    load_trained_state(encoder, state, str(path))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return encoder, {k: v.contiguous() for k, v in state.items()}, digest


def fast_embedder(encoder, cfg: SafetyBuildConfig):
    """texts -> embeddings through an ONNX export of ``encoder`` (equal to PyTorch's to ~1e-6, 2-3x faster on CPU)."""
    import tempfile

    from simplesafe.safety.classifier import OnnxEncoder, export_onnx

    path = Path(tempfile.mkdtemp(prefix="safety-onnx-")) / "encoder.onnx"
    try:
        export_onnx(encoder, path)
        runner = OnnxEncoder(encoder, path, threads=cfg.threads)  # the session holds the model in memory
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)

    def embed(texts: list[str]) -> np.ndarray:
        return runner.encode(list(texts), cfg.max_seq_length, cfg.batch_size)

    return embed


def fit_student(cfg: SafetyBuildConfig, encoder, rows, y: np.ndarray, w: np.ndarray, tr: np.ndarray,
                 ca: np.ndarray, src: np.ndarray, calib_parts: tuple):
    """Distil a model2vec student from ``encoder``, fit its head, calibrate it, pick the cascade threshold.

    The student's head is a logistic regression on its (static) sentence embeddings, trained on
    the same train split and weights as the encoder, and calibrated like it (maximum over the
    parts of each calibration text). The cascade threshold is the student score below which
    fewer than ``1 - cascade_keep`` of the calibration parts that the encoder flags at
    ``threshold`` fall: parts the student scores lower skip the encoder at that cost.
    ``calib_parts`` is ``(parts, owner, encoder_part_scores)`` of the calibration texts.
    """
    import tempfile

    from model2vec.distill import distill_from_model

    from simplesafe.safety.classifier import STUDENT_DIR, STUDENT_HEAD_FILE, calibrate, head_logits, max_by_owner

    if cfg.progress:
        print(f"distilling a {cfg.student_dims}-d static student from the fine-tuned encoder", flush=True)
    old = os.environ.get("TQDM_DISABLE")
    if not cfg.progress:
        os.environ["TQDM_DISABLE"] = "1"  # model2vec's progress bar has no switch of its own
    try:
        static = distill_from_model(model=encoder[0].auto_model, tokenizer=encoder.tokenizer,
                                    pca_dims=cfg.student_dims)
    finally:
        if old is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = old
    parts, owner, p_parts = calib_parts
    tr_idx = np.flatnonzero(tr)
    x_tr = np.asarray(static.encode([rows[i].text for i in tr_idx], use_multiprocessing=False), dtype=np.float32)
    head = fit_head("logreg:4", x_tr, y[tr], w[tr], cfg.seed)
    zp = head_logits(head, np.asarray(static.encode(parts, use_multiprocessing=False), dtype=np.float32))
    z_ca = max_by_owner(zp, owner, int(ca.sum()))
    cal = fit_calibrator("platt", z_ca, y[ca], cfg.seed, calibration_weights(src[ca], y[ca], cfg.calibration_weighting))
    if cfg.default_recall is not None:
        # The same scale as the encoder's score: a settled part's score means what the encoder's would.
        cal["shift"] = recall_shift(calibrate(cal, z_ca), y[ca], src[ca], cfg.default_recall, cfg.threshold)
    s_parts = calibrate(cal, zp)
    flag_parts = p_parts > cfg.threshold
    flagged = np.sort(s_parts[flag_parts])
    below = float(flagged[int(np.floor((1 - cfg.cascade_keep) * len(flagged)))]) if len(flagged) else 0.0
    # A settled part is never flagged: the student only settles what it scores below the threshold.
    below = min(below, cfg.threshold)
    settled = s_parts < below
    student_dir = Path(tempfile.mkdtemp(prefix="student-"))
    static.save_pretrained(str(student_dir))
    meta = {
        "student": {"dir": STUDENT_DIR, "head": STUDENT_HEAD_FILE, "dims": int(static.dim), "calibration": cal,
                    "calib_auroc": binary_metrics(y[ca], calibrate(cal, z_ca), cfg.threshold)["auroc"]},
        "cascade": {"student_below": below, "keep": cfg.cascade_keep,
                    "calib_parts_settled": float(settled.mean()),
                    "calib_encoder_flags_kept": float(((~settled) & flag_parts).sum() / max(flag_parts.sum(), 1))},
    }
    return meta, {"dir": student_dir, "head": head}
