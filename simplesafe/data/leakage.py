"""Cross-split leakage removal by sentence-embedding cosine similarity.

The project report (section 2.2.1) embeds every question and removes cross-split pairs
with cosine >= 0.6: a train item that is that close to a validation or test item is
removed from train (train is much larger), and a test item close to a validation item is
removed from test. Priority is therefore validation > test > train; each split is
compared with the rows *kept* in the higher-priority splits (a test row already removed
no longer needs protecting).

The nearest neighbour search is :func:`simplesafe.text.similarity.max_cosine` (exact
blocked numpy for small sets, FAISS ``IndexFlatIP`` for large ones): cost grows
linearly with the larger split and memory stays at one block of similarities.

    simplesafe data leakage --split train=train.jsonl --split validation=val.jsonl \\
        --split test=test.jsonl --field question --threshold 0.6 --out clean/

writes ``clean/<split>.jsonl`` and ``clean/removed.jsonl``
(``id, split, matched_id, matched_split, cosine``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from simplesafe.errors import ConfigError, DataError

log = logging.getLogger(__name__)

PRIORITY = ("validation", "test", "train")


def remove_cross_split_leakage(
    texts: dict[str, list[str]],
    ids: dict[str, list],
    threshold: float = 0.6,
    encoder: str = "embedded:minilm",
    method: str = "auto",
    embeddings: dict[str, np.ndarray] | None = None,
    batch_size: int = 64,
    progress: bool = False,
) -> tuple[dict[str, np.ndarray], list[dict]]:
    """Return ``(keep mask per split, removed records)``.

    ``texts``/``ids`` map a split name (``train``, ``validation``, ``test``) to its
    rows; ``embeddings`` may supply precomputed L2-normalised vectors per split.
    """
    from simplesafe.text.similarity import embed_texts, max_cosine

    unknown = [s for s in texts if s not in PRIORITY]
    if unknown:
        raise ConfigError(f"unknown split name(s) {', '.join(unknown)}; use {', '.join(PRIORITY)}")
    emb: dict[str, np.ndarray] = {}
    for split in PRIORITY:
        if split not in texts:
            continue
        if embeddings is not None and split in embeddings:
            emb[split] = np.asarray(embeddings[split], dtype=np.float32)
        else:
            t0 = time.time()
            emb[split] = embed_texts(texts[split], encoder=encoder, batch_size=batch_size, show_progress=progress)
            log.info("embedded %d %s rows in %.1fs", len(texts[split]), split, time.time() - t0)
    keep = {s: np.ones(len(texts[s]), dtype=bool) for s in texts}
    removed: list[dict] = []
    for rank, split in enumerate(PRIORITY):
        if split not in texts or len(texts[split]) == 0:
            continue
        higher = [s for s in PRIORITY[:rank] if s in texts]
        if not higher:
            continue
        corpus_parts, owners = [], []
        for h in higher:
            idx = np.flatnonzero(keep[h])
            corpus_parts.append(emb[h][idx])
            owners.extend((h, int(i)) for i in idx)
        if not owners:
            continue
        corpus = np.concatenate(corpus_parts, axis=0)
        best, cos = max_cosine(emb[split], corpus, method=method)
        for i in np.flatnonzero(cos >= threshold):
            h, j = owners[int(best[i])]
            keep[split][i] = False
            removed.append({
                "id": ids[split][i], "split": split,
                "matched_id": ids[h][j], "matched_split": h, "cosine": round(float(cos[i]), 6),
            })
    return keep, removed


def leakage_files(
    split_paths: dict[str, str | Path],
    field: str,
    out_dir: str | Path,
    threshold: float = 0.6,
    encoder: str = "embedded:minilm",
    method: str = "auto",
) -> dict:
    """The ``simplesafe data leakage`` command: read splits, remove leakage, write files."""
    from simplesafe.io import read_rows, write_rows

    unknown = [s for s in split_paths if s not in PRIORITY]
    if unknown:
        raise ConfigError(f"unknown split name(s) {', '.join(unknown)}; use {', '.join(PRIORITY)}")
    rows: dict[str, list[dict]] = {}
    texts: dict[str, list[str]] = {}
    ids: dict[str, list] = {}
    for split, path in split_paths.items():
        rows[split], texts[split], ids[split] = [], [], []
        seen: dict = {}
        for line, row in read_rows(path):
            if "id" not in row or row["id"] is None or (isinstance(row["id"], str) and not row["id"].strip()):
                raise DataError(path, line, "id", "missing required field")
            if field not in row or row[field] is None:
                raise DataError(path, line, field, "missing required field")
            if not isinstance(row[field], str):
                raise DataError(path, line, field, f"expected a string, got {type(row[field]).__name__}")
            key = row["id"] if not isinstance(row["id"], (list, dict)) else str(row["id"])
            if key in seen:
                raise DataError(path, line, "id", f"duplicate id {row['id']!r} (first seen on line {seen[key]})")
            seen[key] = line
            rows[split].append(row)
            texts[split].append(row[field])
            ids[split].append(row["id"])
    t0 = time.time()
    keep, removed = remove_cross_split_leakage(texts, ids, threshold=threshold, encoder=encoder, method=method, progress=True)
    seconds = time.time() - t0
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {"seconds": round(seconds, 2), "threshold": threshold, "encoder": encoder, "splits": {}}
    for split in rows:
        kept_rows = [r for r, k in zip(rows[split], keep[split]) if k]
        write_rows(out_dir / f"{split}.jsonl", kept_rows)
        summary["splits"][split] = {"input": len(rows[split]), "kept": len(kept_rows), "removed": len(rows[split]) - len(kept_rows)}
    write_rows(out_dir / "removed.jsonl", removed)
    return summary
