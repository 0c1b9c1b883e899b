"""Nearest-neighbour search: exact and FAISS agree, blocks do not change results."""

from __future__ import annotations

import numpy as np
import pytest

from simplesafe.text.similarity import embed_texts, max_cosine, normalize_rows


def _vecs(n, d=16, seed=0):
    return normalize_rows(np.random.default_rng(seed).normal(size=(n, d)))


def test_exact_matches_brute_force_and_block_size_is_irrelevant():
    q, c = _vecs(50, seed=1), _vecs(30, seed=2)
    full = q @ c.T
    for block in (1, 7, 4096):
        idx, cos = max_cosine(q, c, method="exact", block=block)
        np.testing.assert_array_equal(idx, full.argmax(1))
        np.testing.assert_allclose(cos, full.max(1), rtol=1e-5)


def test_faiss_agrees_with_exact():
    q, c = _vecs(200, seed=3), _vecs(120, seed=4)
    i1, c1 = max_cosine(q, c, method="exact")
    i2, c2 = max_cosine(q, c, method="faiss", block=64)
    np.testing.assert_allclose(c1, c2, rtol=1e-5, atol=1e-6)
    assert (i1 == i2).mean() > 0.99  # ties may break differently


def test_empty_inputs():
    idx, cos = max_cosine(_vecs(3), np.zeros((0, 16), dtype=np.float32))
    assert list(idx) == [-1, -1, -1] and np.all(np.isneginf(cos))
    idx, cos = max_cosine(np.zeros((0, 16), dtype=np.float32), _vecs(3))
    assert len(idx) == 0


def test_bad_method_and_dimension():
    with pytest.raises(ValueError):
        max_cosine(_vecs(2), _vecs(2), method="nope")
    with pytest.raises(ValueError):
        max_cosine(_vecs(2, d=8), _vecs(2, d=16))


def test_embedded_minilm_paraphrase_is_closer_than_unrelated():
    e = embed_texts(["Why is the sky blue?", "What makes the sky look blue?", "How do I bake bread?"])
    assert e.shape[0] == 3
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, rtol=1e-4)
    assert e[0] @ e[1] > 0.6 > e[0] @ e[2]
