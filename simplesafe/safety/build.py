"""Build the hate classifier: split by group, fine-tune MiniLM, calibrate, evaluate.

Recipe (all seeded; ``simplesafe models build-safety`` runs it, ~8 minutes on 2 idle CPU cores):

1. Load the corpora in ``../shared/data`` (:mod:`simplesafe.safety.corpora`), subsampled to
   ``limits`` (all 21k Latent Hatred posts: implicit hate is the hardest corpus), plus the
   generated ``contrast`` minimal pairs (:mod:`simplesafe.safety.contrast`: hateful claims vs
   the same claims negated or refuted, which no labelled corpus teaches).
2. Embed every text once with frozen all-MiniLM-L6-v2 (Reimers & Gurevych 2019), truncated to
   ``max_seq_length`` tokens, to find near-duplicates. Embeddings are cached per corpus in
   ``$SIMPLESAFE_CACHE/safety/embeddings`` keyed by the texts, the encoder and the truncation.
3. Group-aware split (:mod:`simplesafe.safety.split`): templates, posts, equal texts and
   near-duplicates (cosine >= ``near_duplicate_threshold``) never straddle train/calibration/test.
4. Fine-tune MiniLM's six transformer layers with a linear head on the train split
   (:mod:`simplesafe.safety.finetune`; 2 epochs, bf16 autocast; each corpus weighs the same,
   implicit hate 3x). ``finetune_epochs=0`` keeps the encoder frozen and instead picks the best
   of the ``heads`` candidates (logistic regression or a small MLP) on the calibration split.
   Measured (implicit-hate test AUROC, seed 0): frozen + MLP 0.79 and the top 2 layers
   fine-tuned 0.80 (both with 8k posts); with all posts, LoRA r=16 0.82 and all 6 layers 0.853;
   with the contrast pairs 0.855 (on the split that adding them makes), and negated hate /
   counter-speech on the functional tests goes from 0.67 to 0.90.
5. Calibrate on the calibration split (Platt's sigmoid or isotonic regression, picked by
   2-fold cross-validated log-loss) so that a score of 0.1 means "about 10% of texts scored
   like this were labelled hateful in the held-out mixture".
6. Report per-corpus test AUROC, and precision / recall / false-positive rate at the 0.1
   threshold, computed with the stored (float16) weights through the scorer's own ``encode``
   call; store named operating points; write the artifact atomically.

Steps 1-3 are :mod:`simplesafe.safety.build_data`, step 4 (and the static student of the
cascade) :mod:`simplesafe.safety.heads`, steps 5-6 :mod:`simplesafe.safety.calibration`; this
module holds the settings and runs the steps in order.

    from simplesafe.safety.build import SafetyBuildConfig, build_safety_classifier
    metrics = build_safety_classifier(SafetyBuildConfig(out="/tmp/hate-minilm"))
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from pydantic import Field

from simplesafe.config import StageConfig
from simplesafe.errors import DataError
from simplesafe.safety.build_data import embedding_cache_path, load_and_split
from simplesafe.safety.calibration import (
    binary_metrics,
    calibration_weights,
    fit_calibrator,
    functional_report,
    profanity_shift,
    recall_shift,
    threshold_for_fpr,
    threshold_for_recall,
)
from simplesafe.safety.heads import encoder_from_layers, fast_embedder, finetune_with_head, fit_head, fit_student

log = logging.getLogger(__name__)

DEFAULT_LIMITS = {
    "toxigen_annotated": 7009,
    "toxigen_demonstrations": 1000,
    "implicit_hate": None,
    "stormfront": 4000,
    "templates": 2400,
    "wiki_talk": 1492,
    "simple_wikipedia": 1500,
    "contrast": None,
    "functional": None,
}


class SafetyBuildConfig(StageConfig):
    """Settings of ``simplesafe models build-safety``."""

    data_dir: str | None = Field(None, description="Folder holding the labelled corpora (default: ../shared/data).")
    out: str | None = Field(None, description="Artifact folder (default: $SIMPLESAFE_CACHE/safety/hate-minilm).")
    seed: int = Field(0, description="Seed for subsampling, splitting and the head.")
    encoder: str = Field("embedded:minilm", description="Sentence encoder (fine-tuned, or frozen with finetune_epochs=0).")
    max_seq_length: int = Field(128, ge=16, le=512, description="Encoder truncation in tokens.")
    part_tokens: int = Field(48, ge=8, le=510, description="A text longer than the encoder window is scored in parts "
                                                          "of at most this many tokens (whole sentences, neighbours "
                                                          "overlapping); the text's score is the maximum.")
    batch_size: int = Field(64, ge=1, description="Encoder batch size.")
    threads: int = Field(2, ge=1, description="torch CPU threads for embedding.")
    limits: dict[str, int | None] = Field(default_factory=lambda: dict(DEFAULT_LIMITS),
                                          description="Rows per corpus (label-stratified subsample); null = all. "
                                                      "Corpora not named are not used.")
    near_duplicate_threshold: float = Field(0.95, gt=0, le=1.0,
                                            description="Cosine similarity at which two texts count as near-duplicates "
                                                        "(1.0 = exact normalised duplicates only).")
    test_fraction: float = Field(0.15, gt=0, lt=0.5, description="Share of each corpus held out for test.")
    calib_fraction: float = Field(0.15, gt=0, lt=0.5, description="Share of each corpus held out for calibration.")
    finetune_epochs: int = Field(0, ge=0, description="Epochs of fine-tuning the encoder's transformer layers with a "
                                                      "linear head; 0 = keep the encoder frozen and fit `heads`.")
    finetune_lr: float = Field(2e-4, gt=0, lt=1, description="AdamW learning rate of the encoder layers (the head uses 1e-3).")
    finetune_batch_size: int = Field(64, ge=1, description="Fine-tuning batch size.")
    bf16: bool = Field(True, description="bfloat16 autocast while fine-tuning, where the CPU supports it.")
    heads: list[str] = Field(default_factory=lambda: ["logreg:4"],
                             description="Head candidates for a frozen encoder (finetune_epochs=0): logreg:C or "
                                         "mlp:HIDDEN; the best on calibration wins.")
    balance_corpora: bool = Field(True, description="Weight training rows so each corpus counts the same.")
    corpus_weights: dict[str, float] = Field(default_factory=lambda: {"implicit_hate": 3.0},
                                             description="Extra weight per corpus, on top of balancing (the implicit "
                                                         "hate corpus is the hardest; 3.0 measured best).")
    calibration: str = Field("auto", pattern="^(auto|platt|isotonic)$", description="Calibrator: auto, platt or isotonic.")
    calibration_weighting: str = Field("balanced", pattern="^(mixture|balanced)$",
                                       description="mixture: calibrate on the calibration split as it is (~35% hateful, "
                                                   "the largest corpus dominates); balanced: every corpus weighs the "
                                                   "same and hateful and benign texts weigh the same (a 50% prior).")
    encoder_layers: str | None = Field("shipped", description="With finetune_epochs=0: keep the encoder at these fine-tuned "
                                                          "layers (an encoder.safetensors of an earlier build, or "
                                                          "'shipped') and fit the head on their embeddings.")
    default_recall: float | None = Field(0.9, gt=0, lt=1,
                                         description="Shift the calibrated log-odds so that the default threshold "
                                                     "(`threshold`) recalls this share of hateful calibration texts, "
                                                     "every corpus weighted alike; null = no shift.")
    profanity_fpr: float | None = Field(0.05, gt=0, lt=1,
                                        description="The ensemble's profanity label: shift alt-profanity-check's "
                                                    "log-odds down (never up) so that at `threshold` it flags this "
                                                    "share of benign calibration texts, every corpus weighted alike; "
                                                    "null = its own calibration.")
    student: bool = Field(True, description="Distil a static-embedding student (model2vec) from the fine-tuned encoder "
                                            "for the cascade.")
    student_dims: int = Field(256, ge=16, le=384, description="Student embedding size (PCA of the token vectors).")
    cascade_keep: float = Field(0.99, gt=0.5, le=1.0,
                                description="Share of the encoder's flags (at `threshold`, calibration split) that the "
                                            "cascade must keep: parts the student scores below the matching threshold "
                                            "skip the encoder.")
    threshold: float = Field(0.1, gt=0, lt=1, description="Operating point reported as the default (the report's 0.1).")
    progress: bool = Field(True, description="Show progress bars.")

    def fingerprint(self) -> str:
        d = self.model_dump(mode="json")
        for k in ("out", "progress", "threads", "batch_size", "data_dir"):
            d.pop(k, None)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------- the build

def build_safety_classifier(cfg: SafetyBuildConfig) -> dict:
    """Run the whole build; write the artifact to ``cfg.out`` (or the cache) and return its metadata."""
    from simplesafe.runs import set_seed
    from simplesafe.safety.classifier import (
        ARTIFACT_NAME,
        ENCODER_FILE,
        HEAD_FILE,
        META_FILE,
        cache_artifact_dir,
        calibrate,
        head_logits,
    )

    if cfg.finetune_epochs > 0 and cfg.encoder_layers:
        from simplesafe.errors import ConfigError

        raise ConfigError("encoder_layers starts from stored layers and keeps them (finetune_epochs=0); "
                          "fine-tuning always starts from the bundled encoder: pass encoder_layers=null")
    t_start = time.time()
    set_seed(cfg.seed)
    out_dir = Path(cfg.out) if cfg.out else cache_artifact_dir()
    corpora, rows, emb, comp, splits, timings = load_and_split(cfg)
    embed_seconds, split_seconds = timings["embed"], timings["split"]
    unknown = sorted(set(cfg.corpus_weights) - set(corpora))
    if unknown:
        from simplesafe.errors import ConfigError

        raise ConfigError(f"corpus_weights names corpora that are not loaded: {', '.join(unknown)}; "
                          f"loaded: {', '.join(corpora)}")

    y = np.array([r.label for r in rows], dtype=np.int64)
    src = np.array([r.source for r in rows])
    tr, ca, te = splits == "train", splits == "calib", splits == "test"
    for name, mask in (("train", tr), ("calibration", ca)):
        if len(np.unique(y[mask])) < 2:
            raise DataError(cfg.data_dir or "../shared/data", None, None,
                            f"the {name} split has {int(mask.sum())} rows of one class only; "
                            "raise `limits` or add a corpus with both hateful and benign rows")
    w = np.ones(len(rows), dtype=np.float64)
    if cfg.balance_corpora:
        names_tr, counts = np.unique(src[tr], return_counts=True)
        per = {n: tr.sum() / (len(names_tr) * c) for n, c in zip(names_tr, counts)}
        w = np.array([per.get(s, 1.0) for s in src])
    w = w * np.array([cfg.corpus_weights.get(s, 1.0) for s in src])

    t0 = time.time()
    candidates: dict = {}
    encoder_state = None
    encoder = None
    embed = None
    if cfg.finetune_epochs > 0:
        best, weights, encoder_state, encoder = finetune_with_head(cfg, rows, y, w, tr)
    else:
        features = emb
        if cfg.encoder_layers:
            encoder, encoder_state, layers_hash = encoder_from_layers(cfg)
            embed = fast_embedder(encoder, cfg)
            idx = np.flatnonzero(tr | ca)
            texts = [rows[i].text for i in idx]
            from simplesafe.paths import cache_dir

            path = embedding_cache_path(texts, f"{cfg.encoder}+layers:{layers_hash}", cfg.max_seq_length,
                                        cache_dir() / "safety" / "embeddings")
            features = np.zeros_like(emb)
            if path.exists() and np.load(path).shape[0] == len(idx):
                features[idx] = np.load(path)
            else:
                if cfg.progress:
                    print(f"embedding {len(idx)} train + calibration texts with the stored layers", flush=True)
                features[idx] = embed(texts)
                from simplesafe.atomic import atomic_path

                path.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(path) as tmp_npy:
                    with open(tmp_npy, "wb") as fh:
                        np.save(fh, features[idx])
        for spec in cfg.heads:
            head_weights = fit_head(spec, features[tr], y[tr], w[tr], cfg.seed)
            z = head_logits(head_weights, features[ca])
            src_ca, y_ca = src[ca], y[ca]
            aurocs = [binary_metrics(y_ca[src_ca == n], z[src_ca == n], 0.0)["auroc"] for n in corpora]
            aurocs = [a for a in aurocs if a is not None]
            candidates[spec] = (float(np.mean(aurocs)), head_weights)
            log.info("head %s: mean calibration-split AUROC %.4f", spec, candidates[spec][0])
            if cfg.progress:
                print(f"head {spec}: mean calibration-split AUROC {candidates[spec][0]:.4f}", flush=True)
        best = max(candidates, key=lambda k: candidates[k][0])
        weights = candidates[best][1]
        if encoder is None:
            from simplesafe.models.load import load_sentence_encoder

            encoder = load_sentence_encoder(cfg.encoder)
    train_seconds = time.time() - t0

    # Calibrate on what the scorer computes: the maximum logit over each text's parts.
    from simplesafe.safety.classifier import max_by_owner, split_parts

    if embed is None:
        embed = fast_embedder(encoder, cfg)
    ca_idx = np.flatnonzero(ca)
    parts, owner = split_parts([rows[i].text for i in ca_idx], encoder.tokenizer, cfg.max_seq_length, cfg.part_tokens)
    z_parts = head_logits(weights, embed(parts))
    z_ca = max_by_owner(z_parts, owner, len(ca_idx))
    cal_w = calibration_weights(src[ca], y[ca], cfg.calibration_weighting)
    calibration = fit_calibrator(cfg.calibration, z_ca, y[ca], cfg.seed, cal_w)
    calibration["weighting"] = cfg.calibration_weighting
    if cfg.default_recall is not None:
        calibration["shift"] = recall_shift(calibrate(calibration, z_ca), y[ca], src[ca], cfg.default_recall,
                                            cfg.threshold)
        calibration["default_recall"] = cfg.default_recall
    p_ca = calibrate(calibration, z_ca)

    profanity_calibration = (profanity_shift(rows, ca_idx, y[ca], src[ca], cfg.profanity_fpr, cfg.threshold)
                             if cfg.profanity_fpr is not None else None)

    t0 = time.time()
    student_meta, student_files = None, None
    if cfg.student:
        student_meta, student_files = fit_student(cfg, encoder, rows, y, w, tr, ca, src,
                                                   (parts, owner, calibrate(calibration, z_parts)))
    student_seconds = time.time() - t0

    operating_points = {
        "report": cfg.threshold,
        "recall_90": threshold_for_recall(y[ca], p_ca, 0.90),
        "recall_95": threshold_for_recall(y[ca], p_ca, 0.95),
        "fpr_05": threshold_for_fpr(y[ca], p_ca, 0.05),
        "fpr_01": threshold_for_fpr(y[ca], p_ca, 0.01),
    }
    counts = {n: {s: {"rows": int(((src == n) & (splits == s)).sum()),
                      "positives": int(((src == n) & (splits == s) & (y == 1)).sum())}
                  for s in ("train", "calib", "test")} for n in corpora}
    meta = {
        "name": ARTIFACT_NAME,
        "version": 2,
        "encoder": cfg.encoder,
        "max_seq_length": cfg.max_seq_length,
        "part_tokens": cfg.part_tokens,
        "head": best,
        "encoder_weights": ENCODER_FILE if encoder_state is not None else None,
        "head_candidates_calib_auroc": {k: round(v[0], 5) for k, v in candidates.items()},
        "calibration": calibration,
        "profanity_calibration": profanity_calibration,
        "student": student_meta["student"] if student_meta else None,
        "cascade": student_meta["cascade"] if student_meta else None,
        "threshold": cfg.threshold,
        "operating_points": operating_points,
        "split_counts": counts,
        "groups": int(len(np.unique(comp))),
        "fingerprint": cfg.fingerprint(),
        "config": cfg.model_dump(mode="json", exclude={"out", "data_dir", "progress"}),
    }
    tmp = _stage_artifact(out_dir, weights, meta, HEAD_FILE, META_FILE, encoder_state, student_files)
    try:
        # Test metrics of the scorer exactly as shipped: stored float16 layers, whole-text parts,
        # the cascade, the ONNX runtime -- loaded back from the staged files.
        t0 = time.time()
        from simplesafe.safety.classifier import HateClassifier

        te_idx = np.flatnonzero(te)
        te_texts = [rows[i].text for i in te_idx]
        clf = HateClassifier(tmp, batch_size=cfg.batch_size)
        p_te = clf.score(te_texts)
        cascade_stats = dict(clf.last_stats)
        enc_only = HateClassifier(tmp, batch_size=cfg.batch_size, cascade=False)
        p_te_enc = enc_only.score(te_texts)
        p_all = np.full(len(rows), np.nan)
        p_all[te_idx] = p_te
        p_enc = np.full(len(rows), np.nan)
        p_enc[te_idx] = p_te_enc
        test_metrics = {n: binary_metrics(y[te & (src == n)], p_all[te & (src == n)], cfg.threshold) for n in corpora}
        test_metrics["all"] = binary_metrics(y[te], p_all[te], cfg.threshold)
        meta["test_metrics"] = test_metrics
        meta["test_metrics_encoder_only"] = {
            n: binary_metrics(y[te & (src == n)], p_enc[te & (src == n)], cfg.threshold) for n in corpora}
        meta["test_metrics_encoder_only"]["all"] = binary_metrics(y[te], p_enc[te], cfg.threshold)
        flags_enc = p_te_enc > cfg.threshold
        meta["cascade_test"] = {
            "parts": cascade_stats["parts"], "by_encoder": cascade_stats["by_encoder"],
            "encoder_flags_kept": float(((p_te > cfg.threshold) & flags_enc).sum() / max(flags_enc.sum(), 1)),
            "max_abs_difference": float(np.abs(p_te - p_te_enc).max()) if len(p_te) else 0.0,
        }
        meta["functional_test"] = functional_report(clf, cfg.threshold)
        eval_seconds = time.time() - t0
        meta["seconds"] = {"embed": round(embed_seconds, 1), "split": round(split_seconds, 1),
                           "train": round(train_seconds, 1), "student": round(student_seconds, 1),
                           "evaluate": round(eval_seconds, 1), "total": round(time.time() - t_start, 1)}
        meta["texts_per_second_embedding"] = (
            round((len(rows) - timings["embedded_from_cache"]) / max(embed_seconds, 1e-9), 1)
            if timings["embedded_from_cache"] < len(rows) else None)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1, sort_keys=False) + "\n", encoding="utf-8")
        _swap_in(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    meta["path"] = str(out_dir)
    return meta


# ---------------------------------------------------------------- the artifact

def _stage_artifact(out_dir: Path, weights: dict, meta: dict, head_file: str, meta_file: str,
                    encoder_state: dict | None = None, student: dict | None = None) -> Path:
    """Write head (+ fine-tuned layers, + student) + metadata into a temp folder beside ``out_dir``."""
    from safetensors.numpy import save_file

    from simplesafe.safety.classifier import ENCODER_FILE, STUDENT_DIR, STUDENT_HEAD_FILE

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        save_file({k: np.ascontiguousarray(v) for k, v in weights.items()}, str(tmp / head_file))
        if encoder_state is not None:
            from safetensors.torch import save_file as save_torch

            save_torch(encoder_state, str(tmp / ENCODER_FILE))
        if student is not None:
            save_file({k: np.ascontiguousarray(v) for k, v in student["head"].items()}, str(tmp / STUDENT_HEAD_FILE))
            shutil.move(str(student["dir"]), str(tmp / STUDENT_DIR))
            (tmp / STUDENT_DIR / "README.md").unlink(missing_ok=True)  # model2vec's hub card: not ours to ship
        (tmp / meta_file).write_text(json.dumps(meta, indent=1, sort_keys=False) + "\n", encoding="utf-8")
        # mkdtemp makes a private folder; an artifact is meant to be read by everyone.
        for p in [tmp, *tmp.rglob("*")]:
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def _swap_in(tmp: Path, out_dir: Path) -> None:
    """Replace ``out_dir`` by the staged folder ``tmp`` (two renames)."""
    if out_dir.exists():
        old = out_dir.with_name(out_dir.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)
