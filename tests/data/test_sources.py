"""Source loaders: every schema, and bad rows named by file, line and field."""

from __future__ import annotations

import gzip
import json

import pytest

from simplesafe.data.sources.eli5 import load_qa
from simplesafe.data.sources.preferences import load_preference_pairs
from simplesafe.data.sources.simplewiki import load_simplewiki
from simplesafe.errors import DataError


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


HF_ROW = {"q_id": "q1", "title": "Why is the sky blue?", "selftext": "Seriously", "document": "", "subreddit": "explainlikeimfive",
          "answers": {"a_id": ["x", "y"], "text": ["Because of air.", "Light scatters."], "score": [5, 3]},
          "title_urls": {"url": []}, "selftext_urls": {"url": []}, "answers_urls": {"url": []}}


def test_eli5_hf_schema(tmp_path):
    (q,) = load_qa(write_jsonl(tmp_path / "e.jsonl", [HF_ROW]))
    assert q.id == "q1" and q.body == "Seriously" and q.subreddit == "explainlikeimfive"
    assert [(a.id, a.score) for a in q.answers] == [("x", 5.0), ("y", 3.0)]


def test_eli5_category_schema_and_split_column(tmp_path):
    row = dict(HF_ROW, category="Physics", split="validation1")
    row["answers"] = dict(row["answers"], text_urls=[[], []])
    with pytest.raises(DataError, match="line 1, field 'split'"):
        list(load_qa(write_jsonl(tmp_path / "c.jsonl", [row])))
    row["split"] = "validation_eli5"
    (q,) = load_qa(write_jsonl(tmp_path / "c.jsonl", [row]))
    assert q.split == "validation"


def test_generic_qa_jsonl_parquet_and_single_answer(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"id": "g1", "question": "How do bees make honey?", "answers": [{"text": "They use nectar.", "score": 3}]}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "g.parquet")
    (q,) = load_qa(tmp_path / "g.parquet")
    assert q.title == "How do bees make honey?" and q.answers[0].score == 3.0
    (q,) = load_qa(write_jsonl(tmp_path / "one.jsonl", [{"id": 1, "question": "Q?", "answer": "A."}]))
    assert q.answers[0].score is None and q.id == "1"


def test_eli5_public_examples_bundled(bundled_data):
    qs = list(load_qa(bundled_data / "eli5" / "eli5_public_examples.json"))
    assert len(qs) == 10 and all(len(q.answers) == 1 for q in qs)


def test_bad_rows_name_file_line_field(tmp_path):
    bad = dict(HF_ROW)
    bad["answers"] = {"a_id": ["x"], "text": ["t"], "score": ["many"]}
    path = write_jsonl(tmp_path / "bad.jsonl", [HF_ROW, bad])
    with pytest.raises(DataError) as err:
        list(load_qa(path))
    assert "bad.jsonl, line 2, field 'answers.score[0]'" in str(err.value)
    missing = write_jsonl(tmp_path / "m.jsonl", [{"question": "Q?", "answers": [{"score": 1}]}])
    with pytest.raises(DataError, match="line 1, field 'answers\\[0\\].text'"):
        list(load_qa(missing))


def test_on_error_skip_records_rejects(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text(json.dumps(HF_ROW) + "\n{not json\n" + json.dumps({"q_id": "q2", "title": "T?", "answers": {"text": [1], "score": [1]}}) + "\n")
    rejects = []
    qs = list(load_qa(path, on_error="skip", rejects=rejects))
    assert [q.id for q in qs] == ["q1"]
    assert [(r["line"], r.get("field")) for r in rejects] == [(2, None), (3, "answers.text[0]")]


def test_pairs_schema(tmp_path):
    (q,) = load_preference_pairs(write_jsonl(tmp_path / "p.jsonl", [{"id": "p1", "prompt": "Q?", "chosen": "good", "rejected": "bad"}]))
    assert q.kind == "pair" and [(a.text, a.score) for a in q.answers] == [("good", 1.0), ("bad", 0.0)]
    with pytest.raises(DataError, match="line 1, field 'rejected'"):
        list(load_preference_pairs(write_jsonl(tmp_path / "b.jsonl", [{"prompt": "Q?", "chosen": "good", "rejected": " "}])))


def test_hh_rlhf_dialogues(tmp_path):
    row = {"chosen": "\n\nHuman: How do I bake bread?\n\nAssistant: Mix flour and water.",
           "rejected": "\n\nHuman: How do I bake bread?\n\nAssistant: No idea."}
    multi = {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a joke\n\nAssistant: Why did the cow...",
             "rejected": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a joke\n\nAssistant: No."}
    path = tmp_path / "hh.jsonl.gz"
    with gzip.open(path, "wt") as fh:
        for r in (row, multi):
            fh.write(json.dumps(r) + "\n")
    q1, q2 = load_preference_pairs(path)
    assert q1.title == "How do I bake bread?" and q1.answers[0].text == "Mix flour and water."
    assert q2.title.startswith("Human: Hi") and q2.title.endswith("Tell me a joke")
    bad = {"chosen": "\n\nHuman: A\n\nAssistant: x", "rejected": "\n\nHuman: B\n\nAssistant: y"}
    with pytest.raises(DataError, match="field 'rejected'"):
        list(load_preference_pairs(write_jsonl(tmp_path / "bad.jsonl", [bad])))


def test_haluquestqa_bundled_tsv(bundled_data):
    qs = list(load_preference_pairs(bundled_data / "eli5" / "lfqa_preferences.tsv"))
    assert len(qs) == 698 and len({q.id for q in qs}) == 698
    assert all(q.answers[0].score == 1.0 and q.answers[1].score == 0.0 for q in qs)


def test_simplewiki_lines_are_detokenised(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("the netherlands is a country . it has 17 million people .\n\nparis is big .\n")
    arts = list(load_simplewiki(path))
    assert [a.paragraphs for a in arts] == [["the netherlands is a country. it has 17 million people."], ["paris is big."]]
    assert arts[1].id.endswith(":3")


def test_simplewiki_rows_with_paragraphs(tmp_path):
    path = write_jsonl(tmp_path / "w.jsonl", [{"id": "w1", "title": "Cat", "text": "Para one.\n\nPara two."},
                                              {"title": "Dog", "paragraphs": ["A", "B"]}])
    a, b = load_simplewiki(path)
    assert a.paragraphs == ["Para one.", "Para two."] and b.paragraphs == ["A", "B"] and b.id == "w:2"
    with pytest.raises(DataError, match="line 1, field 'text'"):
        list(load_simplewiki(write_jsonl(tmp_path / "x.jsonl", [{"title": "T"}])))
