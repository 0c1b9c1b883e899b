"""LIMA-style selection: balanced across groups, best-first within them."""

from __future__ import annotations

import json

from simplesafe.synth.select import SelectConfig, balanced_top, run_select


def test_balanced_top_balances_then_maximises_quality():
    quality = [9, 8, 7, 6, 1, 2, 5]
    groups = ["a", "a", "a", "a", "b", "b", "c"]
    chosen = balanced_top(quality, groups, 5)
    picked = sorted(chosen)
    # one each from a, c, b in round 1 (a's 9, c's 5, b's 2); round 2: a's 8, b's 1 (c is exhausted)
    assert picked == [0, 1, 4, 5, 6]
    # all groups exhausted: everything, no more
    assert sorted(balanced_top(quality, groups, 99)) == list(range(7))


def write_scored(path, rows):
    with path.open("w") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")


def test_select_by_source_reports_the_mix(tmp_path):
    rows = [{"id": f"e{i}", "source": "eli5", "prompt": f"q{i}", "completion": "a", "score": i} for i in range(10)]
    rows += [{"id": f"w{i}", "source": "wiki", "prompt": f"w{i}", "completion": "a", "score": 0.5} for i in range(3)]
    write_scored(tmp_path / "scored.jsonl", rows)
    cfg = SelectConfig(input=str(tmp_path / "scored.jsonl"), n=6, diversity="source")
    mix = run_select(cfg, tmp_path / "sel")
    sel = [json.loads(l) for l in (tmp_path / "sel" / "selected.jsonl").open()]
    assert len(sel) == 6 and mix["by_source"] == {"eli5": 3, "wiki": 3}
    assert sorted(r["score"] for r in sel if r["source"] == "eli5") == [7, 8, 9]
    assert mix["mean_quality_selected"] > 0 and mix["per_group"][0]["selected"] == 3


def test_select_by_embedding_clusters(tmp_path):
    topics = {"cooking": ["How do I bake bread?", "What spices go with chicken?", "How long do I boil an egg?"],
              "space": ["Why is Mars red?", "How far away is the Moon?", "What is a black hole?"]}
    rows = []
    for t, qs in topics.items():
        for i, q in enumerate(qs):
            rows.append({"id": f"{t}{i}", "source": "x", "prompt": q, "completion": "a", "score": 10 - i if t == "cooking" else 1})
    write_scored(tmp_path / "s.jsonl", rows)
    mix = run_select(SelectConfig(input=str(tmp_path / "s.jsonl"), n=4, num_clusters=2), tmp_path / "sel")
    sel = [json.loads(l) for l in (tmp_path / "sel" / "selected.jsonl").open()]
    # quality alone would take 3 cooking rows; the diversity constraint takes 2 + 2
    assert sorted(Counter_(r["id"][:-1] for r in sel).values()) == [2, 2]
    assert mix["groups"] == 2


def Counter_(it):
    from collections import Counter

    return Counter(it)


def test_cli_select(tmp_path, capsys):
    from simplesafe.cli import main

    rows = [{"id": f"r{i}", "source": "ab"[i % 2], "prompt": f"q{i}", "completion": "a", "reward": float(i)} for i in range(8)]
    write_scored(tmp_path / "s.jsonl", rows)
    main(["synth", "select", f"input={tmp_path / 's.jsonl'}", "n=4", "quality_field=reward", "diversity=source",
          "--out", str(tmp_path / "sel")])
    out = capsys.readouterr().out
    assert "selected 4 of 8 (source)" in out
    sel = [json.loads(l) for l in (tmp_path / "sel" / "selected.jsonl").open()]
    assert sorted(r["id"] for r in sel) == ["r4", "r5", "r6", "r7"]


def test_missing_quality_names_file_line_and_field(tmp_path):
    import pytest

    from simplesafe.errors import DataError

    write_scored(tmp_path / "s.jsonl", [{"prompt": "a", "score": 1}, {"prompt": "b", "score": "high"}])
    with pytest.raises(DataError, match="s.jsonl, line 2, field 'score'"):
        run_select(SelectConfig(input=str(tmp_path / "s.jsonl"), n=1, diversity="source"), tmp_path / "o")
