"""The CLI contracts: `data score`, `data leakage` and `data build`, called as users call them."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from simplesafe.cli import app

TEXTS = ["The cat sat on the mat. It was a sunny day and the cat was happy.",
         "You are a fucking idiot.",
         "Photosynthesis converts electromagnetic radiation into chemical potential energy within chloroplasts."]


def invoke(args):
    res = CliRunner().invoke(app, args)
    if res.exception and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res


def write_jsonl(path: Path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("in_ext,out_ext", [("jsonl", "parquet"), ("csv", "tsv"), ("tsv", "jsonl"), ("parquet", "csv")])
def test_score_formats(tmp_path, in_ext, out_ext):
    from simplesafe.io import write_rows, read_rows

    src = tmp_path / f"in.{in_ext}"
    write_rows(src, [{"id": str(i), "answer": t, "extra": "keep me"} for i, t in enumerate(TEXTS)])
    out = tmp_path / f"out.{out_ext}"
    res = invoke(["data", "score", str(src), "--text-field", "answer", "--out", str(out), "--backend", "profanity-check"])
    assert res.exit_code == 0, res.output
    rows = [r for _, r in read_rows(out)]
    assert len(rows) == 3 and rows[0]["extra"] == "keep me" and rows[2]["answer"] == TEXTS[2]
    for col in ("n_words", "fre", "fkg", "toxicity", "profanity"):
        assert col in rows[0]
    vals = [float(r["toxicity"]) for r in rows]
    assert vals[1] > 0.5 > vals[0]
    assert float(rows[0]["fre"]) > float(rows[2]["fre"])  # the simple sentence reads easier
    assert int(rows[0]["n_words"]) == len(TEXTS[0].split())


def test_score_default_backend_adds_one_column_per_label(tmp_path):
    from simplesafe.text.toxicity import get_toxicity_scorer

    labels = set(get_toxicity_scorer().score(["hello"]))  # whatever the default backend returns
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in TEXTS])
    out = tmp_path / "out.parquet"
    res = invoke(["data", "score", str(src), "--text-field", "text", "--out", str(out)])
    assert res.exit_code == 0, res.output
    cols = set(pq.read_table(out).column_names)
    assert {"text", "n_words", "fre", "fkg", "toxicity"} | labels <= cols
    tab = pq.read_table(out).to_pylist()
    for row in tab:
        assert row["toxicity"] == pytest.approx(max(row[k] for k in labels if k != "toxicity"))


def test_score_errors_name_line_and_field(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": "fine"}, {"txt": "oops"}])
    res = CliRunner().invoke(app, ["data", "score", str(src), "--text-field", "text", "--out", str(tmp_path / "o.jsonl"),
                                   "--backend", "profanity-check"])
    assert res.exit_code != 0
    assert "line 2" in str(res.exception) and "'text'" in str(res.exception)
    assert not (tmp_path / "o.jsonl").exists()


def test_leakage_cli_contract_subprocess(tmp_path):
    tr = write_jsonl(tmp_path / "train.jsonl", [{"id": "t1", "question": "Why is the sky blue?"},
                                                {"id": "t2", "question": "How do airplanes stay in the air?"}])
    va = write_jsonl(tmp_path / "val.jsonl", [{"id": "v1", "question": "Why does the sky appear blue?"}])
    te = write_jsonl(tmp_path / "test.jsonl", [{"id": "s1", "question": "What keeps a plane up in the sky when it flies?"}])
    exe = Path(sys.executable).with_name("simplesafe")
    cmd = [str(exe), "data", "leakage", "--split", f"train={tr}", "--split", f"validation={va}", "--split", f"test={te}",
           "--field", "question", "--threshold", "0.6", "--out", str(tmp_path / "out")]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stderr
    out = tmp_path / "out"
    removed = [json.loads(x) for x in (out / "removed.jsonl").read_text().splitlines()]
    assert {(r["id"], r["split"], r["matched_id"], r["matched_split"]) for r in removed} >= {("t1", "train", "v1", "validation")}
    assert all(set(r) == {"id", "split", "matched_id", "matched_split", "cosine"} and r["cosine"] >= 0.6 for r in removed)
    for split in ("train", "validation", "test"):
        assert (out / f"{split}.jsonl").exists()
    assert "t1" not in (out / "train.jsonl").read_text()
    # a bad split name is a usage error (exit 2) with a message, not a traceback
    bad = subprocess.run([str(exe), "data", "leakage", "--split", f"dev={tr}", "--field", "question", "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "dev" in bad.stderr and "Traceback" not in bad.stderr


def test_build_from_recipe_section(tmp_path):
    import datasets

    rows = [{"id": f"q{i}", "question": f"Why do cats {w}?", "answers": [
        {"text": f"Cats {w} because they feel safe and calm at home. A cat does this to tell you it is happy. "
                 f"It is a small and kind sign from your pet number {i}.", "score": 10}]}
            for i, w in enumerate(["purr", "sleep a lot", "like boxes", "chase mice", "knead", "hiss", "climb trees",
                                   "eat grass", "hate water", "bring gifts"])]
    src = write_jsonl(tmp_path / "qa.jsonl", rows)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"name: t\nstages: [data]\ndata:\n  sources:\n    - {{path: {src}, kind: qa}}\n"
                      f"  toxicity_backend: profanity-check\n  validation_fraction: 0.3\n  test_fraction: 0.3\n  leakage: false\n")
    out = tmp_path / "built"
    res = invoke(["data", "build", str(recipe), "seed=3", "plots=false", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "Funnel" in res.output and "sft" in res.output
    files = {s: str(out / "sft" / f"{s}.jsonl") for s in ("train", "validation", "test") if (out / "sft" / f"{s}.jsonl").stat().st_size}
    ds = datasets.load_dataset("json", data_files=files)
    assert sum(len(d) for d in ds.values()) == 10
    res = CliRunner().invoke(app, ["data", "build", str(recipe), "bogus_key=1", "--out", str(out)])
    assert res.exit_code != 0 and "bogus_key" in str(res.exception)


def test_default_out_dir_follows_the_recipe(tmp_path):
    from simplesafe.commands.data import default_out_dir

    r = tmp_path / "r.yaml"
    r.write_text("name: demo\ndata: {seed: 1}\n")
    assert default_out_dir(r) == Path("runs/demo/data")
    r.write_text("run_dir: /x/run\ndata: {seed: 1}\n")
    assert default_out_dir(r) == Path("/x/run/data")
    r.write_text("seed: 1\n")  # a standalone data config
    assert default_out_dir(r) == Path("runs/data") == default_out_dir(None)


@pytest.mark.parametrize("content", ["", "\n\n"])
def test_score_empty_file_exits_2_naming_it_and_writes_nothing(tmp_path, capsys, content):
    from simplesafe.cli import main

    src = tmp_path / "empty.jsonl"
    src.write_text(content)
    out = tmp_path / "o.jsonl"
    with pytest.raises(SystemExit) as exc:
        main(["data", "score", str(src), "--text-field", "text", "--out", str(out), "--backend", "profanity-check"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert str(src) in err and "no rows" in err
    assert not out.exists()
