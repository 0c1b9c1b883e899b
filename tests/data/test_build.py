"""The whole build on hand-made ELI5 + Wikipedia data: routing, rejects, outputs, resume."""

from __future__ import annotations

import json

import pytest

from simplesafe.data.build import build_datasets
from simplesafe.data.config import DataBuildConfig, SourceConfig
from simplesafe.data.wiki import build_lead
from simplesafe.errors import ConfigError, DataError

SIMPLE = [
    "The sky looks blue because air scatters blue light more than red light. The sun sends out every color. "
    "Blue light bounces around the most. So we see blue when we look up.",
    "Cats purr when they feel safe and calm. A cat makes the sound with small muscles in its throat. "
    "Some cats also purr when they are hurt. It may help them feel better.",
    "Bees drink sweet juice from flowers. They carry it home in a special belly. Then they spit it into wax cells. "
    "They fan it with their wings until it gets thick. That is honey.",
    "Ice is lighter than water. When water freezes, the small bits inside spread out. So a block of ice takes more room. "
    "That makes it float on top of the lake.",
    "A fridge moves heat from the inside to the outside. A liquid in the pipes boils and takes heat away. "
    "A pump pushes it to the back. There it gives the heat to the room.",
    "Rain falls from clouds. Clouds are made of tiny drops of water. When the drops join, they get heavy. "
    "Then they fall down to the ground as rain. The sun warms the water and it goes up again.",
    "Your phone battery is a box of tiny parts that move charge. In the cold they move slowly. So the phone thinks "
    "the battery is low. When it warms up, it works again.",
]
TOXIC = ("You are a fucking idiot and this is shit. Shut the fuck up you stupid moron. Nobody cares about your dumb "
         "question, go away you bitch.")


def eli5_row(qid, title, answers, split=None, selftext=""):
    row = {"q_id": qid, "title": title, "selftext": selftext, "subreddit": "explainlikeimfive",
           "answers": {"a_id": [f"{qid}_{i}" for i in range(len(answers))], "text": [a for a, _ in answers],
                       "score": [s for _, s in answers]}}
    if split:
        row["split"] = split
    return row


def make_sources(tmp_path):
    # answer texts are unique: exact duplicate answers are rejected across questions
    rows = [
        eli5_row("single", "Why do cats purr?", [(SIMPLE[1], 10)]),
        eli5_row("ranked", "How do bees make honey?", [(SIMPLE[2], 30), (SIMPLE[3], 20), (SIMPLE[4], 10)]),
        eli5_row("tied", "Why does ice float?", [(SIMPLE[3] + " Ice is fun to skate on.", 7), (SIMPLE[5] + " Water is wet.", 7)]),
        eli5_row("short", "How does a fridge work?", [("It pumps heat out.", 50), ("Magic, really.", 5)]),
        eli5_row("meta", "[META] New rules for the subreddit", [(SIMPLE[0], 100)]),
        eli5_row("toxic", "Why does it rain?", [(SIMPLE[5], 40), (TOXIC, 20)]),
        eli5_row("edit", "Why does my phone die in the cold?", [(SIMPLE[6], 12), (SIMPLE[6] + "\n\nEdit: thanks for the gold!", 8)]),
        eli5_row("lowscore", "How does a fridge keep food cold?", [(SIMPLE[4] + " Cold food lasts longer.", 2)]),
        eli5_row("sky_val", "Why is the sky blue?", [(SIMPLE[0], 9)], split="validation"),
        eli5_row("sky_train", "Why is the sky blue in colour?", [(SIMPLE[0] + " It is simple.", 9)], split="train"),
        eli5_row("dup", "Why do cats purr?", [(SIMPLE[1], 3)]),
    ]
    qa = tmp_path / "eli5.jsonl"
    qa.write_text("".join(json.dumps(r) + "\n" for r in rows))
    short_para = "Paris is the capital city of France. It is on the river Seine. Many people visit it every year."
    wiki_rows = [
        {"id": "w_ok", "title": "Paris", "text": "\n\n".join([short_para] * 4)},
        {"id": "w_short", "title": "Tiny", "text": "A small town."},
        {"id": "w_markup", "title": "Table", "text": short_para + " {{ infobox city }} " + short_para},
        {"id": "w_long", "title": "Long", "text": " ".join([short_para] * 40)},
    ] + [{"id": f"w{i}", "title": f"T{i}", "text": "\n\n".join([short_para.replace("Paris", f"Town {i}")] * 4)} for i in range(20)]
    wiki = tmp_path / "wiki.jsonl"
    wiki.write_text("".join(json.dumps(r) + "\n" for r in wiki_rows))
    return qa, wiki


def load_out(out, name, split):
    path = out / name / f"{split}.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("build")
    qa, wiki = make_sources(tmp)
    cfg = DataBuildConfig(
        sources=[SourceConfig(path=str(qa), kind="qa", name="eli5"), SourceConfig(path=str(wiki), kind="wiki", name="wiki")],
        validation_fraction=0.0, test_fraction=0.0, toxicity_backend="profanity-check", wiki_small_fraction=0.1,
    )
    out = tmp / "run" / "data"
    headline = build_datasets(cfg, out)
    return cfg, out, headline


def all_rows(out, name):
    return [r for s in ("train", "validation", "test") for r in load_out(out, name, s)]


def test_routing_rules_on_handmade_questions(built):
    _, out, _ = built
    sft = {r["question_id"]: r for r in all_rows(out, "sft")}
    rm = all_rows(out, "rm")
    rl = {r["question_id"] for r in all_rows(out, "rl")}
    rm_q = {r["question_id"] for r in rm}
    assert set(sft) & rm_q == set() and set(sft) & rl == set() and rm_q & rl == set()
    assert "single" in sft and sft["single"]["prompt"] == "Why do cats purr?"
    assert "tied" in sft
    assert "short" in rl and "lowscore" in rl  # all answers filtered / flagged -> RL prompt
    ranked = [r for r in rm if r["question_id"] == "ranked"]
    assert len(ranked) == 3 and all(r["weight"] == pytest.approx(1 / 3) and r["k"] == 3 for r in ranked)
    assert all(r["chosen_score"] > r["rejected_score"] for r in rm)
    toxic = [r for r in rm if r["question_id"] == "toxic"]
    assert len(toxic) == 1 and "idiot" in toxic[0]["rejected"] and "idiot" not in toxic[0]["chosen"]
    edit = [r for r in rm if r["question_id"] == "edit"]
    assert len(edit) == 1 and "Edit:" in edit[0]["rejected"] and "Edit:" not in edit[0]["chosen"]
    for r in all_rows(out, "sft"):
        assert r["toxicity"] <= 0.1 and "Edit:" not in r["completion"] and r["n_words"] >= 20


def test_rejects_carry_stage_reason_and_scores(built):
    _, out, _ = built
    rejects = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    by_id = {}
    for r in rejects:
        assert {"id", "stage", "reason", "scores"} <= set(r)
        by_id.setdefault(r["id"], []).append(r)
    assert by_id["meta"][0]["stage"] == "question" and "meta post" in by_id["meta"][0]["reason"]
    assert "duplicate" in by_id["dup"][0]["reason"]
    assert by_id["sky_train"][0]["stage"] == "leakage" and by_id["sky_train"][0]["matched_id"] == "sky_val"
    assert by_id["short_0"][0]["reason"].startswith("min_words") and by_id["short_0"][0]["scores"]["n_words"] == 4
    assert by_id["w_markup"][0]["reason"].startswith("wiki_markup")
    assert by_id["w_short"][0]["reason"].startswith("min_words")
    assert by_id["w_long"][0]["reason"].startswith("max_words")
    assert "min_score" in by_id["lowscore_0"][0]["reason"]


def test_wiki_leads_and_splits(built):
    _, out, _ = built
    wiki = {s: load_out(out, "wiki", s) for s in ("train", "validation", "test")}
    assert len(wiki["validation"]) == 2 and len(wiki["test"]) == 2 and len(wiki["train"]) == 17
    lead = next(r for s in wiki.values() for r in s if r["id"] == "w_ok")
    assert lead["text"].count("Paris is the capital") == 4 and lead["title"] == "Paris"


def test_stats_plots_and_load_dataset(built):
    import datasets

    _, out, headline = built
    stats = json.loads((out / "stats.json").read_text())
    assert sum(stats["datasets"]["sft"].values()) == headline["sft_rows"] == 3
    assert stats["datasets"]["sft"]["validation"] == 1  # sky_val kept its source split
    steps = [r["step"] for r in stats["funnel"]]
    assert "leakage" in steps and "answer/min_words" in steps and "route/rm" in steps
    for name in ("fre", "fkg", "toxicity", "length"):
        assert (out / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    ds = datasets.load_dataset("json", data_files={"train": str(out / "rm" / "train.jsonl")})
    assert set(ds["train"].column_names) >= {"id", "source", "question_id", "prompt", "chosen", "rejected", "weight",
                                              "chosen_score", "rejected_score"}
    ds = datasets.load_dataset("json", data_files={"train": str(out / "sft" / "train.jsonl")})
    assert {"id", "source", "prompt", "completion", "question_id"} <= set(ds["train"].column_names)


def test_rerun_is_skipped(built, monkeypatch):
    cfg, out, headline = built
    import simplesafe.data.build as pl

    monkeypatch.setattr(pl, "build_qa", lambda *a, **k: (_ for _ in ()).throw(AssertionError("re-ran")))
    assert build_datasets(cfg, out) == headline


def test_bad_input_errors_and_skip(tmp_path):
    qa = tmp_path / "bad.jsonl"
    qa.write_text(json.dumps(eli5_row("a", "Why do cats purr?", [(SIMPLE[1], 10)])) + "\n" + '{"q_id": "b", "title": 3, "answers": {}}\n')
    cfg = DataBuildConfig(sources=[SourceConfig(path=str(qa), kind="qa")], leakage=False, plots=False, toxicity_backend="profanity-check")
    with pytest.raises(DataError, match="bad.jsonl, line 2, field 'title'"):
        build_datasets(cfg, tmp_path / "o1")
    assert not (tmp_path / "o1" / "DONE").exists() and not (tmp_path / "o1" / "sft").exists()
    cfg = cfg.model_copy(update={"on_error": "skip"})
    build_datasets(cfg, tmp_path / "o2")
    rejects = [json.loads(x) for x in (tmp_path / "o2" / "rejects.jsonl").read_text().splitlines()]
    assert any(r["stage"] == "load" and r["line"] == 2 and r["field"] == "title" for r in rejects)


def test_config_validation_and_missing_source(tmp_path):
    with pytest.raises(Exception):
        DataBuildConfig(pairs_to_sft_fraction=0.8, pairs_to_rl_fraction=0.5)
    cfg = DataBuildConfig(sources=[SourceConfig(path=str(tmp_path / "nope.jsonl"), kind="qa")])
    with pytest.raises(ConfigError, match="not found"):
        build_datasets(cfg, tmp_path / "o")


def test_build_lead():
    paras = ["one two three", "four five", "six"]
    assert build_lead(paras, 4) == "one two three\n\nfour five"
    assert build_lead(paras, 100) == "one two three\n\nfour five\n\nsix"
    assert build_lead(paras, 1) == "one two three"


def test_preference_pairs_fractions(tmp_path):
    rows = [{"id": f"p{i}", "prompt": f"Question number {i} about cats?", "chosen": SIMPLE[1], "rejected": SIMPLE[2]} for i in range(40)]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = DataBuildConfig(sources=[SourceConfig(path=str(path), kind="pairs")], leakage=False, plots=False,
                          pairs_to_sft_fraction=0.4, pairs_to_rl_fraction=0.2, toxicity_backend="profanity-check",
                          validation_fraction=0.0, test_fraction=0.0)
    # answers are exact duplicates across questions: keep them by making them unique
    rows = [dict(r, chosen=r["chosen"] + f" Cat {i}.", rejected=r["rejected"] + f" Bee {i}.") for i, r in enumerate(rows)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "o"
    h = build_datasets(cfg, out)
    assert h["sft_rows"] + h["rm_pairs"] + h["rl_prompts"] == 40
    assert 8 <= h["sft_rows"] <= 24 and 3 <= h["rl_prompts"] <= 14
    for r in all_rows(out, "sft"):
        assert r["completion"].startswith(SIMPLE[1][:20])  # the preferred answer, never the rejected one
    for r in all_rows(out, "rm"):
        assert r["chosen"].startswith(SIMPLE[1][:20]) and r["weight"] == 1.0


def test_duplicate_question_keeps_the_evaluation_copy(tmp_path):
    rows = [eli5_row("t", "Why do cats purr?", [(SIMPLE[1], 10)], split="train"),
            eli5_row("v", "why do cats purr", [(SIMPLE[2], 10)], split="validation")]
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = DataBuildConfig(sources=[SourceConfig(path=str(qa), kind="qa")], leakage=False, plots=False,
                          toxicity_backend="profanity-check")
    build_datasets(cfg, tmp_path / "o")
    rejects = [json.loads(x) for x in (tmp_path / "o" / "rejects.jsonl").read_text().splitlines()]
    assert [(r["id"], r["reason"]) for r in rejects] == [("t", "duplicate: exact duplicate of v")]
    assert [r["question_id"] for r in load_out(tmp_path / "o", "sft", "validation")] == ["v"]


def test_interrupted_build_leaves_no_done_marker_and_reruns(tmp_path, monkeypatch):
    import simplesafe.data.build as pl

    rows = [eli5_row("a", "Why do cats purr?", [(SIMPLE[1], 10)])]
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = DataBuildConfig(sources=[SourceConfig(path=str(qa), kind="qa")], leakage=False, plots=False,
                          toxicity_backend="profanity-check")
    real = pl._write_outputs

    def crash(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(pl, "_write_outputs", crash)
    with pytest.raises(KeyboardInterrupt):
        build_datasets(cfg, tmp_path / "o")
    assert not (tmp_path / "o" / "DONE").exists() and not (tmp_path / "o" / "stats.json").exists()
    monkeypatch.setattr(pl, "_write_outputs", real)
    h = build_datasets(cfg, tmp_path / "o")
    assert h["sft_rows"] == 1 and (tmp_path / "o" / "DONE").exists()
    assert not list((tmp_path / "o").rglob("*.tmp"))


def test_aligned_wiki_rows_keep_their_contrast_and_pairs_are_kept_raw(tmp_path):
    wiki = tmp_path / "wikiauto.jsonl"
    paras = [SIMPLE[0], SIMPLE[1], SIMPLE[2], SIMPLE[3]]
    wiki.write_text("".join(json.dumps({"id": f"d{i}", "title": f"T{i}", "simple": p,
                                        "normal": p.replace(".", ", which is notable.")}) + "\n"
                            for i, p in enumerate(paras)))
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"Question number {i} about cats?",
                                         "chosen": SIMPLE[5] + f" Cat {i}.", "rejected": TOXIC + f" {i}"}) + "\n"
                             for i in range(12)))
    cfg = DataBuildConfig(sources=[SourceConfig(path=str(wiki), kind="wiki", text_field="simple",
                                                contrast_field="normal"),
                                   SourceConfig(path=str(pairs), kind="pairs")],
                          leakage=False, plots=False, min_article_words=10, lead_min_words=10,
                          toxicity_backend="profanity-check", validation_fraction=0.0, test_fraction=0.0,
                          pairs_to_sft_fraction=0.3, pairs_to_rl_fraction=0.3)
    out = tmp_path / "o"
    build_datasets(cfg, out)
    leads = all_rows(out, "wiki")
    assert leads and all(r["contrast"].endswith("which is notable.") for r in leads)
    raw = all_rows(out, "pairs")
    sft_questions = {r["question_id"] for r in all_rows(out, "sft")}
    assert raw and not sft_questions & {r["question_id"] for r in raw}  # SFT questions never in the pairs
    assert all(r["rejected"].startswith(TOXIC[:20]) for r in raw)  # unfiltered: the toxic answer stays
    assert all(r.get("reference", "").startswith(SIMPLE[5][:20]) for r in all_rows(out, "rl"))
    stats = json.loads((out / "stats.json").read_text())
    assert stats["by_source"]["wiki"] == {"wikiauto": len(leads)}


def test_wiki_rows_missing_contrast_field_names_it(tmp_path):
    wiki = tmp_path / "w.jsonl"
    wiki.write_text(json.dumps({"id": "d", "simple": SIMPLE[0]}) + "\n")
    cfg = DataBuildConfig(sources=[SourceConfig(path=str(wiki), kind="wiki", text_field="simple",
                                                contrast_field="normal")], leakage=False, plots=False)
    with pytest.raises(DataError, match=r"w.jsonl.*line 1.*normal"):
        build_datasets(cfg, tmp_path / "o")


@pytest.mark.parametrize("threshold, toxic_to_sft", [(None, False), (0.95, True)])
def test_toxicity_section_picks_backend_and_threshold(tmp_path, fake_detoxify, threshold, toxic_to_sft):
    """`toxicity:` with detoxify (a local checkpoint) reaches the build; its threshold replaces max_toxicity."""
    from simplesafe.config import validate

    rows = [eli5_row("clean", "Why do cats purr?", [(SIMPLE[1], 10)]),
            eli5_row("rude", "Why does it rain?", [(SIMPLE[5] + " Only an idiot asks.", 10)])]
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps(r) + "\n" for r in rows))
    section = dict(fake_detoxify.section, **({"threshold": threshold} if threshold is not None else {}))
    cfg = validate(DataBuildConfig, {"sources": [{"path": str(qa), "kind": "qa"}], "leakage": False, "plots": False,
                                     "validation_fraction": 0.0, "test_fraction": 0.0, "toxicity": section})
    build_datasets(cfg, tmp_path / "o")
    assert fake_detoxify.built and fake_detoxify.built[0]["model_type"] == "unbiased"
    sft = {r["question_id"]: r for r in load_out(tmp_path / "o", "sft", "train")}
    assert "clean" in sft and sft["clean"]["toxicity"] < 0.1
    assert ("rude" in sft) is toxic_to_sft
