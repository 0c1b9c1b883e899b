"""Backtranslation: the report's messages, question validation, SFT rows, resume, HTTP backend."""

from __future__ import annotations

import json

import pytest

from simplesafe.errors import DataError
from simplesafe.llm.local_server import LocalChatServer, chat_reply
from simplesafe.synth.backtranslate import BacktranslateConfig, run_backtranslation, validate_question
from simplesafe.synth.prompts import backtranslate_messages

LEAD = ("The Nile is a long river in Africa. It flows north into the Mediterranean Sea. "
        "Many people live near the river because the land there is good for farming.")


def test_report_messages_verbatim():
    msgs = backtranslate_messages("ANSWER")
    assert msgs == [
        {"role": "system", "content": "You are a helpful assistant that generates questions from text."},
        {"role": "user", "content": "Question: X\n\nAnswer: ANSWER\n\nWhat kind of question, X, could this be an answer to?\n\nX:"},
    ]


@pytest.mark.parametrize("raw,question,reason", [
    ("What is the Nile?", "What is the Nile?", None),
    (" X: \"Where does the Nile flow?\"\nAnswer: north", "Where does the Nile flow?", None),
    ("Question: Why do people farm near the Nile? Because it is good.", "Why do people farm near the Nile?", None),
    ("", "", "empty"),
    ("The Nile is a river", "The Nile is a river", "not_a_question"),
    ("What is the Nile? Where is Africa?", None, "multiple_questions"),
    ("Why?", "Why?", "too_short"),
    ("What " + "very " * 50 + "long?", None, "too_long"),
    ("the the the the the the the the?", None, "repetitive"),
    ("It flows north into the Mediterranean Sea?", None, "copied_from_text"),
    # small models wrap the question in a sentence, or echo the request and its placeholder
    ('This answer is an answer to the question "What is the longest river in Africa?"',
     "What is the longest river in Africa?", None),
    ("What kind of question, X, could this be an answer to?", None, "echoes_prompt"),
    ("When did the movie X come out?", None, "echoes_prompt"),
    ("What kind of question could this be?", None, "echoes_prompt"),
])
def test_validate_question(raw, question, reason):
    q, why = validate_question(raw, LEAD)
    assert why == reason
    if question is not None:
        assert q == question


def write_leads(folder, n_train=6, n_val=2):
    folder.mkdir(parents=True, exist_ok=True)
    k = 0
    for split, n in (("train", n_train), ("validation", n_val)):
        with (folder / f"{split}.jsonl").open("w") as fh:
            for i in range(n):
                fh.write(json.dumps({"id": f"{split}{i}", "source": "simplewiki", "text": f"Lead {k}. {LEAD}"}) + "\n")
                k += 1
    return folder


def test_run_backtranslation_over_http_writes_sft_rows_and_resumes(tmp_path):
    leads = write_leads(tmp_path / "wiki")

    def reply(body, hit):
        msgs = body["messages"]
        assert msgs[0]["content"] == "You are a helpful assistant that generates questions from text."
        lead = msgs[1]["content"].split("Answer: ", 1)[1]
        if lead.startswith("Lead 1."):
            return 200, chat_reply("Not a question at all"), {}
        if lead.startswith("Lead 2."):
            return 500, {"error": "down"}, {}
        return 200, chat_reply(f"X: What is special about lead {lead.split('.')[0][5:]} and the Nile?"), {}

    cfg = BacktranslateConfig(input=str(leads), backend={"backend": "openai", "base_url": "", "model": "m",
                                                         "max_retries": 0, "max_workers": 2})
    with LocalChatServer(reply) as server:
        cfg.backend.base_url = server.base_url
        stats = run_backtranslation(cfg, tmp_path / "bt", progress=False)
        train = [json.loads(l) for l in (tmp_path / "bt" / "train.jsonl").open()]
        rejected = [json.loads(l) for l in (tmp_path / "bt" / "rejected.jsonl").open()]
        assert stats["leads"] == 8 and stats["kept"] == 6 and len(rejected) == 2
        assert {r["reason"] for r in rejected} == {"not_a_question", "generation_failed"}
        row = train[0]
        assert row["prompt"] == "What is special about lead 0 and the Nile?"
        assert row["completion"].startswith("Lead 0.")
        for key in ("id", "source", "question_id", "generator", "prompt_id", "round"):
            assert row[key] not in (None, "")
        assert row["generator"] == "openai/m"
        # the output is SFT-ready
        from simplesafe.train.common import read_split
        assert len(read_split([tmp_path / "bt" / "train.jsonl"], ("prompt", "completion"))) == len(train)
        hits = server.hits
        # done: a second call is a no-op; --force reruns from the cache, asking only the failure again
        assert run_backtranslation(cfg, tmp_path / "bt", progress=False) == stats and server.hits == hits
        run_backtranslation(cfg, tmp_path / "bt", force=True, progress=False)
        assert server.hits == hits + 1


def test_bad_input_names_file_line_and_field(tmp_path):
    (tmp_path / "leads.jsonl").write_text('{"id": "a", "text": "ok text"}\n{"id": "b"}\n')
    cfg = BacktranslateConfig(input=str(tmp_path / "leads.jsonl"), backend={"backend": "scripted", "script": "x"})
    rules = tmp_path / "rules.json"
    rules.write_text('[{"response": "What?"}]')
    cfg.backend.script = str(rules)
    with pytest.raises(DataError) as err:
        run_backtranslation(cfg, tmp_path / "out", progress=False)
    assert "leads.jsonl, line 2, field 'text'" in str(err.value)


def test_cli_backtranslate_with_scripted_backend(tmp_path, capsys):
    from simplesafe.cli import main

    leads = write_leads(tmp_path / "wiki", n_train=3, n_val=1)
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps([{"match": "Lead 0\\.", "response": "copy"},
                                 {"response": "Which river flows north into the sea?"}]))
    main(["synth", "backtranslate", "--input", str(leads), "--backend", "scripted", f"backend.script={rules}",
          "--out", str(tmp_path / "bt")])
    printed = capsys.readouterr().out
    assert "kept 3 of 4 leads" in printed and "not_a_question" in printed
    rows = [json.loads(l) for l in (tmp_path / "bt" / "train.jsonl").open()]
    assert [r["prompt"] for r in rows] == ["Which river flows north into the sea?"] * 2
    assert (tmp_path / "bt" / "DONE").exists()


def test_cli_missing_input_is_a_clear_error(tmp_path, capsys):
    from simplesafe.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["synth", "backtranslate", "--out", str(tmp_path / "bt")])
    assert exit_info.value.code == 2
    assert "input=PATH" in capsys.readouterr().err


def test_preference_pairs_from_leads_with_a_contrast():
    from simplesafe.synth.backtranslate import preference_pairs

    base = {"source": "wikiauto-backtranslation", "question_id": "bt-1", "prompt": "Where is Paris?",
            "lead_id": "1", "generator": "g", "prompt_id": "p"}
    rows = [{**base, "id": "bt-1", "completion": "Paris is in France.", "contrast": "Paris is the capital of France."},
            {**base, "id": "bt-2", "completion": "Same text.", "contrast": "Same text."},
            {**base, "id": "bt-3", "completion": "No contrast here."}]
    pairs = preference_pairs(rows)
    assert [(p["id"], p["chosen"], p["rejected"]) for p in pairs] == [
        ("bt-1:pair", "Paris is in France.", "Paris is the capital of France.")]
    assert pairs[0]["prompt"] == "Where is Paris?" and pairs[0]["weight"] == 1.0
