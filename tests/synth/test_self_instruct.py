"""Self-Instruct: parsing, filters, classification, instances, rejects, and the CLI over HTTP."""

from __future__ import annotations

import json
import re

import pytest

from simplesafe.cli import main
from simplesafe.llm.local_server import LocalChatServer, chat_reply
from simplesafe.llm.scripted import ScriptedBackend
from simplesafe.synth.self_instruct import (
    SelfInstructConfig, cheap_filter, generate_self_instruct, parse_instances, parse_instructions, parse_yes_no,
)


def test_parse_instructions_continuation_and_labels():
    text = " Describe a rainy day in three sentences.\nTask 10: List five fruits that are red.\n\nTask 11:Name a planet."
    assert parse_instructions(text) == ["Describe a rainy day in three sentences.", "List five fruits that are red.",
                                        "Name a planet."]
    chat = "Sure, here are more tasks:\n\nTask 9: Suggest a name for a cat.\nTask 10: Explain rain to a child."
    assert parse_instructions(chat) == ["Suggest a name for a cat.", "Explain rain to a child."]
    assert parse_instructions("1. First thing to do here\n2. Second thing to do") == [
        "First thing to do here", "Second thing to do"]
    assert parse_instructions("") == [] and parse_instructions("   \n") == []


@pytest.mark.parametrize("text,reason", [
    ("Hi there", "too_short"),
    (" ".join(["word"] * 151), "too_long"),
    ("Describe the picture below in detail.", "unsupported_modality"),
    ("Draw a graph of the data.", "unsupported_modality"),
    ("Write a program that sorts numbers.", "asks_for_a_program"),
    ("¿Qué hora es ahora mismo?", "not_english"),
    ("- List three birds please.", "starts_with_punctuation"),
    ("Say yes yes yes yes yes yes yes yes now", "repetitive"),
    ("Tell me a joke about a cat and a dog and a cat and a dog and a cat and a dog", "repetitive"),
    ("Suggest a good name for a bakery.", None),
])
def test_cheap_filters(text, reason):
    assert cheap_filter(text, 3, 150) == reason


def test_parse_instances_input_first_and_output_first():
    reply = "Example 1\nSentence: I love it.\nOutput: positive\nExample 2\nSentence: Meh.\nOutput: neutral\n\nTask: next"
    assert parse_instances(reply, False) == [{"input": "Sentence: I love it.", "output": "positive"},
                                             {"input": "Sentence: Meh.", "output": "neutral"}]
    assert parse_instances("Just an answer.", False) == [{"input": "", "output": "Just an answer."}]
    clf = "Class label: Spam\nEmail: Win money now\nClass label: Not spam\nEmail: Lunch at noon?"
    assert parse_instances(clf, True) == [{"input": "Email: Win money now", "output": "Spam"},
                                          {"input": "Email: Lunch at noon?", "output": "Not spam"}]
    assert parse_yes_no(" Yes.") is True and parse_yes_no("no") is False and parse_yes_no("maybe") is None


def write_seeds(path, n=12):
    topics = ["bread", "rivers", "planets", "music", "trees", "trains", "rain", "cats", "chess", "tea", "bees", "maps"]
    with open(path, "w") as fh:
        for i in range(n):
            fh.write(json.dumps({"id": f"s{i}", "instruction": f"Explain how {topics[i]} work in simple words.",
                                 "instances": [{"input": "", "output": "..."}], "is_classification": False}) + "\n")
    return path


VOCAB = ("apple river stone cloud engine garden lantern pepper violin harbor candle meadow rocket pillow "
         "thunder marble feather copper island basket ladder mirror tunnel saddle puzzle").split()


def words(k: int, n: int = 4) -> str:
    import random

    return " ".join(random.Random(k).sample(VOCAB, n))


TOPICS = ["volcanoes", "the moon", "honey", "glaciers", "kites", "clocks", "bridges", "soap", "ink", "salt",
          "sails", "bells", "lamps", "wheels", "mirrors", "magnets", "ropes", "coins", "stamps", "maps"]


def scripted_rules():
    counter = {"n": 0}

    def new_tasks(text, params):
        counter["n"] += 1
        k = counter["n"]
        return (f" Tell me surprising facts linking {words(k)}.\n"
                f"Task 10: Describe the image of a {TOPICS[(k + 1) % len(TOPICS)]}.\n"
                f"Task 11: Is this sentence about {words(1000 + k)} true or false?\n"
                f"Task 12: Hi")

    def classify(text, params):
        task = text.rsplit("Task:", 1)[1]
        return "Yes" if "true or false" in task else "No"

    def instances(text, params):
        task = text.rsplit("Task:", 1)[1]
        if "true or false" in task:
            return "Class label: True\nSentence: Fact.\nClass label: False\nSentence: Fiction."
        return "Output: Here are three facts."

    return [(r"Is it classification\?$", classify), (r"Class label:.*Task: [^\n]*\n$", instances),
            (r"Output:.*Task: [^\n]*\n$", instances), (r"Task \d+:$", new_tasks)]


def test_generate_with_scripted_backend(tmp_path):
    seeds = write_seeds(tmp_path / "seeds.jsonl")
    cfg = SelfInstructConfig(seed_tasks=str(seeds), num_instructions=6, prompts_per_round=2)
    backend = ScriptedBackend(scripted_rules())
    stats = generate_self_instruct(cfg, backend, tmp_path / "out", progress=False)
    rows = [json.loads(l) for l in (tmp_path / "out" / "instructions.jsonl").open()]
    rejected = [json.loads(l) for l in (tmp_path / "out" / "rejected.jsonl").open()]
    assert len(rows) == 6 == stats["kept"]
    assert {r["is_classification"] for r in rows} == {True, False}
    for r in rows:
        assert r["instances"] and all(set(i) == {"input", "output"} for i in r["instances"])
        assert r["generator"] == "scripted/rules" and r["prompt_id"].startswith("si-generate:") and r["round"] >= 1
        if r["is_classification"]:
            assert {i["output"] for i in r["instances"]} == {"True", "False"}
    reasons = {r["reason"] for r in rejected}
    assert {"unsupported_modality", "too_short"} <= reasons
    # 8 in-context instructions: 6 human + 2 machine once there are machine ones
    gen_prompts = [t for t in backend.seen if t.endswith("Task 9:")]
    assert all(len(re.findall(r"^Task \d+:", p, re.M)) == 9 for p in gen_prompts)
    late = gen_prompts[-1]
    assert sum("surprising facts linking" in line or "true or false" in line for line in late.splitlines()) == 2
    sft = [json.loads(l) for l in (tmp_path / "out" / "sft.jsonl").open()]
    assert len(sft) == sum(len(r["instances"]) for r in rows)
    assert all(s["prompt"] and s["completion"] for s in sft)


def test_junk_server_stops_with_rejects_not_a_crash(tmp_path):
    seeds = write_seeds(tmp_path / "seeds.jsonl")
    cfg = SelfInstructConfig(seed_tasks=str(seeds), num_instructions=3, prompts_per_round=2, patience=2)
    backend = ScriptedBackend([(r"Task 9:$", "ok"), (".*", lambda t, p: 1 / 0)])
    stats = generate_self_instruct(cfg, backend, tmp_path / "out", progress=False)
    assert stats["kept"] == 0 and stats["stopped_because"] == "no_progress"
    rejected = [json.loads(l) for l in (tmp_path / "out" / "rejected.jsonl").open()]
    assert rejected and all(r["reason"] == "too_short" for r in rejected)


ODD_REPLIES: list[int] = []
ASKED: list[tuple[int, str]] = []


def http_reply(body, hit):
    text = body["messages"][-1]["content"]
    ASKED.append((hit, text))
    if hit % 7 == 3:
        return 500, {"error": "transient"}, {}
    if hit % 11 == 5:
        return 429, {"error": "rate"}, {"Retry-After": "0"}
    if text.endswith("Is it classification?"):
        return 200, chat_reply("No"), {}
    if text.endswith("Task 9:"):
        k = len(text) * 7 + hit
        return 200, chat_reply(f"Write a note on {words(k, 5)}."), {}
    if hit % 13 == 0:
        ODD_REPLIES.append(hit)
        return 200, chat_reply(None), {}  # odd reply: rejected, never a crash
    return 200, chat_reply("Output: A short note."), {}


def test_cli_contract_over_http_and_free_rerun(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SI_TEST_KEY", "sk-never-logged")
    ODD_REPLIES.clear()
    ASKED.clear()
    seeds = write_seeds(tmp_path / "seeds.jsonl")
    out = tmp_path / "si"
    with LocalChatServer(http_reply) as server:
        argv = ["synth", "self-instruct", "--seed-tasks", str(seeds), "--backend", "openai", "--base-url",
                server.base_url, "--model", "test-model", "--num-instructions", "4", "--out", str(out),
                "--api-key-env", "SI_TEST_KEY", "--max-workers", "2", "--seed", "3", "max_prompts=60"]
        main(argv)  # returns normally on success (exit code 0)
        rows = [json.loads(l) for l in (out / "instructions.jsonl").open()]
        rejected = [json.loads(l) for l in (out / "rejected.jsonl").open()]
        assert len(rows) == 4
        for r in rows:
            assert isinstance(r["instruction"], str) and isinstance(r["is_classification"], bool)
            assert r["instances"] and all(isinstance(i["input"], str) and i["output"] for i in r["instances"])
        assert all("reason" in r for r in rejected)
        first_hits = server.hits
        main(argv)
        rerun_rows = [json.loads(l) for l in (out / "instructions.jsonl").open()]
        # everything that succeeded before is cached; only the prompts that got a malformed
        # reply (never cached) are asked again. Count prompts, not hits: a re-asked prompt can
        # meet a scripted 500/429 and be retried, and which hit numbers it meets depends on
        # how the two workers interleave.
        odd_prompts = {text for hit, text in ASKED if hit < first_hits and hit in ODD_REPLIES}
        asked_again = {text for hit, text in ASKED if hit >= first_hits}
        assert asked_again <= odd_prompts
        assert rerun_rows == rows
    assert (out / "cache.sqlite").exists()
    assert "sk-never-logged" not in (out / "cache.sqlite").read_bytes().decode("latin-1")


@pytest.mark.parametrize("extra,message", [
    (["--model", "m"], "--base-url"),
    (["--base-url", "http://127.0.0.1:9/v1"], "--model"),
])
def test_cli_config_errors_exit_2(tmp_path, capsys, extra, message):
    seeds = write_seeds(tmp_path / "seeds.jsonl")
    with pytest.raises(SystemExit) as exit_info:
        main(["synth", "self-instruct", "--seed-tasks", str(seeds), "--backend", "openai", "--num-instructions", "2",
              "--out", str(tmp_path / "o"), *extra])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_bad_seed_file_names_line_and_field(tmp_path, capsys):
    bad = tmp_path / "seeds.jsonl"
    bad.write_text('{"instruction": "Name a fruit."}\n{"instruction": ""}\n')
    with pytest.raises(SystemExit) as exit_info:
        main(["synth", "self-instruct", "--seed-tasks", str(bad), "--backend", "openai", "--base-url",
              "http://127.0.0.1:9/v1", "--model", "m", "--out", str(tmp_path / "o")])
    assert exit_info.value.code == 2
    assert "seeds.jsonl, line 2, field 'instruction'" in capsys.readouterr().err


def test_cache_option_and_unreachable_server_become_rejects(tmp_path):
    seeds = write_seeds(tmp_path / "seeds.jsonl")
    main(["synth", "self-instruct", "--seed-tasks", str(seeds), "--backend", "openai", "--base-url",
          "http://127.0.0.1:9/v1", "--model", "m", "--num-instructions", "2", "--out", str(tmp_path / "o"),
          "--cache", str(tmp_path / "elsewhere.sqlite"), "--max-retries", "0", "--timeout", "2", "patience=1"])
    rejected = [json.loads(l) for l in (tmp_path / "o" / "rejected.jsonl").open()]
    assert rejected and all(r["reason"] == "generation_failed" for r in rejected)
    assert (tmp_path / "elsewhere.sqlite").exists() and not (tmp_path / "o" / "cache.sqlite").exists()
    assert (tmp_path / "o" / "instructions.jsonl").read_text() == ""
