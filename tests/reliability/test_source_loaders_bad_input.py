"""Bad input for the curation source loaders (ELI5 hf / generic, pairs, hh-rlhf, Wikipedia).

Every malformed row stops with a DataError naming file, line and field; with
``on_error="skip"`` it becomes a reject carrying the same reason; `simplesafe data build`
exits 2 without a traceback and, with ``on_error: skip``, lists the row in rejects.jsonl.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from simplesafe.data.sources.eli5 import load_qa
from simplesafe.data.sources.preferences import load_preference_pairs
from simplesafe.data.sources.simplewiki import load_simplewiki
from simplesafe.errors import DataError

GOOD_HF = {"q_id": "q1", "title": "Why do cats purr?", "selftext": "",
           "answers": {"a_id": ["a1"], "text": ["Cats purr when they are calm."], "score": [3]}}
GOOD_GENERIC = {"id": "g1", "question": "Why is the sky blue?", "answers": [{"text": "Air scatters blue light.", "score": 2}]}
GOOD_PAIR = {"prompt": "Why is ice cold?", "chosen": "It has little heat.", "rejected": "Because."}
GOOD_HH = {"chosen": "\n\nHuman: Hi?\n\nAssistant: Hello, how can I help?",
           "rejected": "\n\nHuman: Hi?\n\nAssistant: Go away."}

# (loader, schema, good row, bad row, field named in the error)
CASES = [
    ("qa", "eli5", GOOD_HF, {**GOOD_HF, "title": 7}, "title"),
    ("qa", "eli5", GOOD_HF, {**GOOD_HF, "answers": ["not", "a", "dict"]}, "answers"),
    ("qa", "eli5", GOOD_HF, {**GOOD_HF, "answers": {"a_id": ["a"], "text": "one string", "score": [1]}}, "answers.text"),
    ("qa", "eli5", GOOD_HF, {**GOOD_HF, "answers": {"a_id": ["a", "b"], "text": ["x", "y"], "score": [1]}}, "answers.score"),
    ("qa", "eli5", GOOD_HF, {**GOOD_HF, "answers": {"a_id": ["a"], "text": ["x"], "score": ["lots"]}}, "answers.score[0]"),
    ("qa", "eli5", GOOD_HF, {**GOOD_HF, "answers": {"a_id": ["a"], "text": [None], "score": [1]}}, "answers.text[0]"),
    ("qa", "eli5", GOOD_HF, {k: v for k, v in GOOD_HF.items() if k != "title"}, "title"),
    ("qa", "eli5", GOOD_HF, {**GOOD_HF, "title": " ", "selftext": ""}, "title"),
    ("qa", "eli5", GOOD_HF, {**GOOD_HF, "split": "holdout"}, "split"),
    ("qa", "generic", GOOD_GENERIC, {**GOOD_GENERIC, "question": ["a", "list"]}, "question"),
    ("qa", "generic", GOOD_GENERIC, {**GOOD_GENERIC, "answers": 12}, "answers"),
    ("qa", "generic", GOOD_GENERIC, {**GOOD_GENERIC, "answers": [{"score": 1}]}, "answers[0].text"),
    ("qa", "generic", GOOD_GENERIC, {**GOOD_GENERIC, "answers": [{"text": "t", "score": True}]}, "answers[0].score"),
    ("qa", "generic", GOOD_GENERIC, {**GOOD_GENERIC, "answers": [7]}, "answers[0]"),
    ("qa", "generic", GOOD_GENERIC, {"id": "g2", "question": "Why?"}, "answers"),
    ("pairs", "pairs", GOOD_PAIR, {**GOOD_PAIR, "chosen": None}, "chosen"),
    ("pairs", "pairs", GOOD_PAIR, {**GOOD_PAIR, "rejected": 3}, "rejected"),
    ("pairs", "pairs", GOOD_PAIR, {**GOOD_PAIR, "prompt": ""}, "prompt"),
    ("pairs", "pairs", GOOD_PAIR, {k: v for k, v in GOOD_PAIR.items() if k != "rejected"}, "rejected"),
    ("pairs", "hh-rlhf", GOOD_HH, {**GOOD_HH, "chosen": "no assistant turn at all"}, "chosen"),
    ("pairs", "hh-rlhf", GOOD_HH, {**GOOD_HH, "rejected": "\n\nHuman: Other?\n\nAssistant: No."}, "rejected"),
    ("pairs", "hh-rlhf", GOOD_HH, {**GOOD_HH, "chosen": {"text": "x"}}, "chosen"),
    ("wiki", "rows", {"id": "w", "text": "A page."}, {"id": "w2", "text": 5}, "text"),
    ("wiki", "rows", {"id": "w", "text": "A page."}, {"id": "w2", "paragraphs": ["ok", 3]}, "paragraphs"),
    ("wiki", "rows", {"id": "w", "text": "A page."}, {"id": "w2", "title": 9, "text": "x"}, "title"),
    ("wiki", "rows", {"id": "w", "text": "A page."}, {"id": "w2"}, "text"),
    ("wiki", "rows", {"id": "w", "text": "A page."}, {"id": "w2", "text": "  \n\n "}, "text"),
]

LOADERS = {"qa": load_qa, "pairs": load_preference_pairs, "wiki": load_simplewiki}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("kind,schema,good,bad,field", CASES, ids=[f"{c[1]}-{c[4]}-{i}" for i, c in enumerate(CASES)])
def test_bad_row_names_file_line_field_or_becomes_a_reject(tmp_path, kind, schema, good, bad, field):
    path = write_jsonl(tmp_path / "src.jsonl", [good, good | {"id": "other", "q_id": "other"} if kind == "qa" else good, bad])
    load = LOADERS[kind]
    with pytest.raises(DataError) as info:
        list(load(path, schema=schema))
    err = info.value
    assert (err.path, err.line, err.field) == (str(path), 3, field)
    assert str(path) in str(err) and "line 3" in str(err) and f"field '{field}'" in str(err)
    rejects: list = []
    kept = list(load(path, schema=schema, on_error="skip", rejects=rejects))
    assert len(kept) == 2
    assert rejects == [{"file": str(path), "line": 3, "field": field, "reason": err.problem}]


@pytest.mark.parametrize("kind", ["qa", "pairs"])
def test_unrecognised_schema_is_named(tmp_path, kind):
    path = write_jsonl(tmp_path / "odd.jsonl", [{"foo": 1, "bar": 2}])
    with pytest.raises(DataError, match=r"odd.jsonl, line 1: cannot tell the .* schema.*bar, foo"):
        list(LOADERS[kind](path))


@pytest.mark.parametrize("kind,ext", [("qa", "jsonl"), ("pairs", "csv"), ("wiki", "txt"), ("wiki", "jsonl")])
def test_empty_source_files_give_no_records(tmp_path, kind, ext):
    path = tmp_path / f"empty.{ext}"
    path.write_bytes(b"")
    assert list(LOADERS[kind](path)) == []


def test_one_article_per_line_skips_blank_lines_and_names_bad_bytes(tmp_path):
    path = tmp_path / "articles.txt"
    path.write_bytes(b"the cat sat on the mat .\n\n   \nsecond article here .\n\xff\xfe broken\n")
    with pytest.raises(DataError, match=r"articles.txt, line 5"):
        list(load_simplewiki(path))
    path.write_bytes(b"the cat sat on the mat .\n\n   \nsecond article here .\n")
    arts = list(load_simplewiki(path))
    assert [a.line for a in arts] == [1, 4] and arts[0].paragraphs == ["the cat sat on the mat."]


def test_csv_cell_with_bad_json_answers(tmp_path):
    path = tmp_path / "qa.csv"
    path.write_text('id,question,answers\nq1,Why?,"[{""text"": ""Because."", ""score"": 1}]"\nq2,How?,"[{not json"\n')
    with pytest.raises(DataError, match=r"qa.csv, line 3, field 'answers': invalid JSON"):
        list(load_qa(path))


def _recipe(tmp_path, src, on_error):
    recipe = tmp_path / f"recipe_{on_error}.yaml"
    recipe.write_text(f"name: t\ndata:\n  sources:\n    - {{path: {src}, kind: qa, name: eli5}}\n"
                      f"  on_error: {on_error}\n  toxicity_backend: profanity-check\n  leakage: false\n  plots: false\n")
    return recipe


def test_cli_data_build_exit_2_without_traceback_then_skip_lists_rejects(tmp_path):
    answer = ("Cats purr when they feel safe and calm at home. A cat makes the sound with small muscles in its throat. "
              "It is a kind sign from your pet.")
    rows = [{"id": "q1", "question": "Why do cats purr?", "answers": [{"text": answer, "score": 10}]},
            {"id": "q2", "question": "Why do dogs bark?", "answers": [{"text": answer.replace("Cats", "Dogs"), "score": "many"}]},
            {"id": "q3", "question": 42, "answers": []}]
    src = write_jsonl(tmp_path / "qa.jsonl", rows)
    cmd = [sys.executable, "-m", "simplesafe.cli", "data", "build"]
    res = subprocess.run([*cmd, str(_recipe(tmp_path, src, "raise")), "--out", str(tmp_path / "o1")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    assert "qa.jsonl, line 2, field 'answers[0].score'" in res.stderr
    assert not (tmp_path / "o1" / "DONE").exists()

    res = subprocess.run([*cmd, str(_recipe(tmp_path, src, "skip")), "--out", str(tmp_path / "o2")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    rejects = [json.loads(x) for x in (tmp_path / "o2" / "rejects.jsonl").read_text().splitlines()]
    load = {(r["line"], r["field"]): r for r in rejects if r["stage"] == "load"}
    assert set(load) == {(2, "answers[0].score"), (3, "question")}
    assert "expected a number" in load[(2, "answers[0].score")]["reason"]
    assert load[(3, "question")]["file"] == str(src)
