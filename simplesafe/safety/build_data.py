"""The data of the safety build (:mod:`simplesafe.safety.build`): corpora loaded, embedded (cached), split by group.

The labelled corpora (:mod:`simplesafe.safety.corpora`) are subsampled to ``limits``; every
text is embedded once with the frozen sentence encoder, truncated to ``max_seq_length``
tokens, to find near-duplicates (embeddings cached per corpus in
``$SIMPLESAFE_CACHE/safety/embeddings``, keyed by the texts, the encoder and the truncation);
the group-aware split (:mod:`simplesafe.safety.split`) keeps templates, posts, equal texts and
near-duplicates on one side of train/calibration/test.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from simplesafe.errors import DataError

if TYPE_CHECKING:
    from simplesafe.safety.build import SafetyBuildConfig

log = logging.getLogger(__name__)


def embedding_cache_path(texts: list[str], encoder_name: str, max_seq_length: int, cache: Path) -> Path:
    key = hashlib.sha256(
        json.dumps([encoder_name, max_seq_length]).encode() + b"\0" + "\n".join(texts).encode()
    ).hexdigest()[:24]
    return cache / f"{key}.npy"


def embed_texts(texts: list[str], encoder_name: str, max_seq_length: int, batch_size: int = 64,
                cache: Path | None = None, progress: bool = True) -> np.ndarray:
    """Unit-normalised float32 embeddings; read from / written to ``cache`` keyed by the inputs."""
    path = embedding_cache_path(texts, encoder_name, max_seq_length, cache) if cache else None
    if path is not None and path.exists():
        emb = np.load(path)
        if emb.shape[0] == len(texts):
            return emb
    from simplesafe.models.load import load_sentence_encoder
    from simplesafe.safety.classifier import encode_texts

    emb = encode_texts(load_sentence_encoder(encoder_name), texts, max_seq_length, batch_size, progress)
    if path is not None:
        from simplesafe.atomic import atomic_path

        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, emb)
    return emb


def load_and_split(cfg: SafetyBuildConfig):
    """Load, embed (cached) and split the corpora as ``cfg`` says.

    Returns ``(corpora, rows, emb, components, splits, timings)``; deterministic for a
    given config, so ``bench/safety.py`` rebuilds exactly the held-out split of a build.
    """
    import torch

    from simplesafe.paths import cache_dir, shared_data_dir
    from simplesafe.safety.corpora import load_all
    from simplesafe.safety.split import assign_splits, check_no_leak, group_components

    torch.set_num_threads(cfg.threads)
    root = Path(cfg.data_dir) if cfg.data_dir else shared_data_dir()
    if root is None or not Path(root).is_dir():
        raise DataError(root or "../shared/data", None, None,
                        "labelled corpora folder not found; pass data_dir=PATH (see docs/safety.md)")
    corpora = load_all(Path(root), limits=cfg.limits, seed=cfg.seed, names=list(cfg.limits))
    rows = [r for name in corpora for r in corpora[name]]
    log.info("loaded %d rows from %s", len(rows), ", ".join(f"{k}={len(v)}" for k, v in corpora.items()))

    t0 = time.time()
    emb_cache = cache_dir() / "safety" / "embeddings"
    parts, n_cached = [], 0
    for name, crows in corpora.items():
        n_cached += len(crows) * embedding_cache_path([r.text for r in crows], cfg.encoder, cfg.max_seq_length,
                                                      emb_cache).exists()
        if cfg.progress:
            print(f"embedding {name} ({len(crows)} texts)", flush=True)
        parts.append(embed_texts([r.text for r in crows], cfg.encoder, cfg.max_seq_length, cfg.batch_size,
                                 cache=emb_cache, progress=cfg.progress))
    emb = np.concatenate(parts).astype(np.float32)
    embed_seconds = time.time() - t0

    t0 = time.time()
    comp = group_components(rows, emb, cfg.near_duplicate_threshold)
    splits = assign_splits(rows, comp, {"test": cfg.test_fraction, "calib": cfg.calib_fraction}, seed=cfg.seed)
    check_no_leak(rows, comp, splits)
    timings = {"embed": embed_seconds, "split": time.time() - t0, "embedded_from_cache": n_cached}
    return corpora, rows, emb, comp, splits, timings
