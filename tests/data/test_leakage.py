"""Leakage direction: train loses to validation/test, test loses to validation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from simplesafe.data.leakage import leakage_files, remove_cross_split_leakage
from simplesafe.errors import ConfigError, DataError


def _unit(*xs):
    v = np.array(xs, dtype=np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_direction_with_given_embeddings():
    # t0 ~ v0 (train loses), s0 ~ v0 (test loses), t1 ~ s1 (train loses), t2 unique
    emb = {
        "validation": _unit([1, 0, 0, 0]),
        "test": _unit([0.95, 0.05, 0, 0], [0, 1, 0, 0]),
        "train": _unit([0.9, 0.1, 0, 0], [0, 0.97, 0.03, 0], [0, 0, 0, 1]),
    }
    emb = {k: v.reshape(-1, 4) for k, v in emb.items()}
    texts = {s: [""] * len(v) for s, v in emb.items()}
    ids = {"validation": ["v0"], "test": ["s0", "s1"], "train": ["t0", "t1", "t2"]}
    for method in ("exact", "faiss"):
        keep, removed = remove_cross_split_leakage(texts, ids, threshold=0.6, embeddings=emb, method=method)
        assert keep["validation"].tolist() == [True]
        assert keep["test"].tolist() == [False, True]
        assert keep["train"].tolist() == [False, False, True]
        got = {(r["id"], r["split"], r["matched_id"], r["matched_split"]) for r in removed}
        assert got == {("s0", "test", "v0", "validation"), ("t0", "train", "v0", "validation"), ("t1", "train", "s1", "test")}


def test_removed_test_row_no_longer_protects():
    emb = {"validation": _unit([1, 0]).reshape(1, 2), "test": _unit([1, 0.01]).reshape(1, 2),
           "train": _unit([1, 0.02]).reshape(1, 2)}
    keep, removed = remove_cross_split_leakage({s: [""] for s in emb}, {"validation": ["v"], "test": ["s"], "train": ["t"]},
                                               embeddings=emb)
    assert [r["matched_id"] for r in removed if r["split"] == "train"] == ["v"]


def test_threshold_is_inclusive():
    emb = {"validation": _unit([1, 0]).reshape(1, 2), "train": _unit([0.6, 0.8]).reshape(1, 2)}  # cosine 0.6
    keep, _ = remove_cross_split_leakage({s: [""] for s in emb}, {"validation": ["v"], "train": ["t"]}, threshold=0.6, embeddings=emb)
    assert not keep["train"][0]
    keep, _ = remove_cross_split_leakage({s: [""] for s in emb}, {"validation": ["v"], "train": ["t"]}, threshold=0.61, embeddings=emb)
    assert keep["train"][0]


def test_unknown_split_name():
    with pytest.raises(ConfigError, match="dev"):
        remove_cross_split_leakage({"dev": ["x"]}, {"dev": [1]})


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_leakage_files_with_minilm(tmp_path):
    tr = _write(tmp_path / "tr.jsonl", [{"id": 1, "q": "Why is the sky blue?"}, {"id": 2, "q": "How do I bake sourdough bread?"},
                                        {"id": 3, "q": "What causes earthquakes?"}])
    va = _write(tmp_path / "va.jsonl", [{"id": "v1", "q": "Why does the sky look blue?"}])
    te = _write(tmp_path / "te.jsonl", [{"id": "s1", "q": "What makes the ground shake in an earthquake?"},
                                        {"id": "s2", "q": "Why is the sky blue during the day?"}])
    summary = leakage_files({"train": tr, "validation": va, "test": te}, "q", tmp_path / "out", threshold=0.6)
    removed = [json.loads(x) for x in (tmp_path / "out" / "removed.jsonl").read_text().splitlines()]
    by_id = {r["id"]: r for r in removed}
    assert by_id[1]["matched_split"] == "validation" and by_id[1]["cosine"] >= 0.6
    assert by_id["s2"]["split"] == "test" and by_id["s2"]["matched_id"] == "v1"
    assert 2 not in by_id
    assert set(removed[0]) == {"id", "split", "matched_id", "matched_split", "cosine"}
    kept_train = [json.loads(x)["id"] for x in (tmp_path / "out" / "train.jsonl").read_text().splitlines()]
    assert 2 in kept_train and 1 not in kept_train
    assert summary["splits"]["validation"] == {"input": 1, "kept": 1, "removed": 0}


def test_leakage_files_bad_rows(tmp_path):
    tr = _write(tmp_path / "tr.jsonl", [{"id": 1, "q": "a"}, {"q": "b"}])
    with pytest.raises(DataError, match="tr.jsonl, line 2, field 'id'"):
        leakage_files({"train": tr}, "q", tmp_path / "o")
    tr = _write(tmp_path / "tr.jsonl", [{"id": 1, "q": "a"}, {"id": 1, "q": "b"}])
    with pytest.raises(DataError, match="line 2, field 'id'"):
        leakage_files({"train": tr}, "q", tmp_path / "o")
    tr = _write(tmp_path / "tr.jsonl", [{"id": 1, "text": "a"}])
    with pytest.raises(DataError, match="line 1, field 'q'"):
        leakage_files({"train": tr}, "q", tmp_path / "o")
