"""Sentence embeddings and nearest-neighbour search by cosine similarity.

The project report (section 2.2.1) embeds every question with a Sentence Transformers
model (all-mpnet-base-v2) and treats two questions with cosine >= 0.6 as leaked. Here
the encoder is configurable; the default is the embedded MiniLM
(``load_sentence_encoder('embedded:minilm')``), which works offline.

Vectors are L2-normalised, so cosine = inner product. :func:`max_cosine` finds, for
every query, its most similar corpus vector without ever holding the full
``N x M`` similarity matrix:

- ``exact``: numpy matrix products over blocks of queries (``block`` rows at a time);
- ``faiss``: ``faiss.IndexFlatIP`` over the corpus, searched in blocks (exact inner
  product search with BLAS kernels and its own threading, faster for large inputs).

Both cost ``O(N * M * d)`` time and ``O(block * M)`` memory, i.e. linear in the larger
split when the other is fixed (20k train questions against 2k validation + 2k test).

    from simplesafe.text.similarity import embed_texts, max_cosine
    q = embed_texts(["why is the sky blue?"]); c = embed_texts(["why is the sky blue"])
    idx, cos = max_cosine(q, c)
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Method = Literal["auto", "exact", "faiss"]
# Above this many query x corpus products, "auto" hands the search to FAISS.
FAISS_MIN_PRODUCTS = 5_000_000


def normalize_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D array of vectors, got shape {x.shape}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return x / norms


def embed_texts(
    texts: list[str],
    encoder: str = "embedded:minilm",
    batch_size: int = 64,
    show_progress: bool = False,
) -> np.ndarray:
    """L2-normalised float32 embeddings, one row per text (empty input -> shape (0, d))."""
    from simplesafe.models.load import load_sentence_encoder

    model = load_sentence_encoder(encoder)
    if not texts:
        dim = model.get_sentence_embedding_dimension() or 0
        return np.zeros((0, dim), dtype=np.float32)
    vecs = model.encode(
        [t if isinstance(t, str) else "" for t in texts],
        batch_size=batch_size,
        convert_to_numpy=True,
        normalize_embeddings=True,
        show_progress_bar=show_progress,
    )
    return np.ascontiguousarray(vecs, dtype=np.float32)


def _max_cosine_exact(queries: np.ndarray, corpus: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    n = queries.shape[0]
    best_idx = np.full(n, -1, dtype=np.int64)
    best_sim = np.full(n, -np.inf, dtype=np.float32)
    for start in range(0, n, block):
        sims = queries[start: start + block] @ corpus.T  # (block, M) at most
        arg = sims.argmax(axis=1)
        best_idx[start: start + block] = arg
        best_sim[start: start + block] = sims[np.arange(len(arg)), arg]
    return best_idx, best_sim


def _max_cosine_faiss(queries: np.ndarray, corpus: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    index = faiss.IndexFlatIP(corpus.shape[1])
    index.add(np.ascontiguousarray(corpus, dtype=np.float32))
    n = queries.shape[0]
    best_idx = np.empty(n, dtype=np.int64)
    best_sim = np.empty(n, dtype=np.float32)
    for start in range(0, n, block):
        sims, idx = index.search(np.ascontiguousarray(queries[start: start + block]), 1)
        best_idx[start: start + block] = idx[:, 0]
        best_sim[start: start + block] = sims[:, 0]
    return best_idx, best_sim


def max_cosine(
    queries: np.ndarray,
    corpus: np.ndarray,
    method: Method = "auto",
    block: int = 4096,
) -> tuple[np.ndarray, np.ndarray]:
    """For each query row: ``(index of the most similar corpus row, its cosine)``.

    Inputs must be L2-normalised. An empty corpus gives index -1 and cosine -inf.
    """
    queries = np.asarray(queries, dtype=np.float32)
    corpus = np.asarray(corpus, dtype=np.float32)
    n = queries.shape[0]
    if n == 0 or corpus.shape[0] == 0:
        return np.full(n, -1, dtype=np.int64), np.full(n, -np.inf, dtype=np.float32)
    if queries.shape[1] != corpus.shape[1]:
        raise ValueError(f"dimension mismatch: queries {queries.shape[1]}, corpus {corpus.shape[1]}")
    if method == "auto":
        method = "faiss" if n * corpus.shape[0] >= FAISS_MIN_PRODUCTS else "exact"
    if method == "exact":
        return _max_cosine_exact(queries, corpus, block)
    if method == "faiss":
        return _max_cosine_faiss(queries, corpus, block)
    raise ValueError(f"unknown search method {method!r}; use auto, exact or faiss")
