"""executor: ray (Ray Data in local mode) gives the same build as the local executor."""

from __future__ import annotations

import json
import sys

import pytest

from simplesafe.data.build import build_datasets
from simplesafe.data.config import DataBuildConfig, SourceConfig
from simplesafe.data.scoring import score_texts
from simplesafe.errors import ConfigError

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
]
HARD = ("Photosynthetic organisms utilize electromagnetic radiation, predominantly within the visible spectrum, "
        "to catalyze endergonic biochemical transformations that synthesize carbohydrates from atmospheric "
        "carbon dioxide and water, concomitantly liberating molecular oxygen as a metabolic byproduct.")
TOXIC = ("You are a fucking idiot and this is shit. Shut the fuck up you stupid moron. Nobody cares about your dumb "
         "question, go away you bitch.")


def eli5_row(qid, title, answers, split=None):
    row = {"q_id": qid, "title": title, "selftext": "", "subreddit": "explainlikeimfive",
           "answers": {"a_id": [f"{qid}_{i}" for i in range(len(answers))], "text": [a for a, _ in answers],
                       "score": [s for _, s in answers]}}
    if split:
        row["split"] = split
    return row


def make_sources(tmp_path):
    qa_rows = [
        eli5_row("single", "Why do cats purr?", [(SIMPLE[1], 10)]),
        eli5_row("ranked", "How do bees make honey?", [(SIMPLE[2], 30), (SIMPLE[3], 20), (SIMPLE[4], 10)]),
        eli5_row("hard", "How do plants make food?", [(HARD, 25), (SIMPLE[5] + " Plants drink it too.", 5)]),
        eli5_row("short", "How does a fridge work?", [("It pumps heat out.", 50), ("", 5)]),
        eli5_row("toxic", "Why does it rain?", [(SIMPLE[5], 40), (TOXIC, 20)]),
        eli5_row("edit", "Why is the sky blue?", [(SIMPLE[0], 12), (SIMPLE[0] + " Yes.\n\nEdit: thanks for the gold!", 8)]),
        eli5_row("lowscore", "How does a fridge keep food cold?", [(SIMPLE[4] + " Cold food lasts longer.", 2)]),
    ]
    qa = tmp_path / "eli5.jsonl"
    qa.write_text("".join(json.dumps(r) + "\n" for r in qa_rows))
    pair_rows = [{"id": f"p{i}", "prompt": f"Question number {i}: why do things fall down?",
                  "chosen": SIMPLE[i % len(SIMPLE)] + f" Fact {i}.", "rejected": HARD + f" Note {i}."} for i in range(12)]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in pair_rows))
    para = "Paris is the capital city of France. It is on the river Seine. Many people visit it every year."
    wiki_rows = [{"id": "w_short", "title": "Tiny", "text": "A small town."}] + [
        {"id": f"w{i}", "title": f"T{i}", "text": "\n\n".join([para.replace("Paris", f"Town {i}")] * 4)} for i in range(12)]
    wiki = tmp_path / "wiki.jsonl"
    wiki.write_text("".join(json.dumps(r) + "\n" for r in wiki_rows))
    return [SourceConfig(path=str(qa), kind="qa", name="eli5"), SourceConfig(path=str(pairs), kind="pairs", name="pairs"),
            SourceConfig(path=str(wiki), kind="wiki", name="wiki")]


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'simplesafe[ray]'")
    pytest.importorskip("ray.data", reason="Ray Data is an optional extra: pip install 'simplesafe[ray]'")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()


def read_outputs(out):
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.jsonl"))
    stats = json.loads((out / "stats.json").read_text())
    stats.pop("seconds")
    stats["headline"].pop("seconds")
    return {f: (out / f).read_text() for f in files}, stats


@pytest.mark.slow  # Ray start-up and its worker processes take ~15 s on 2 cores
def test_score_texts_on_ray_equals_local(ray_local, monkeypatch):
    import simplesafe.data.ray_executor as rx

    calls = []
    real = rx.score_texts_ray
    monkeypatch.setattr(rx, "score_texts_ray", lambda *a, **k: calls.append(k) or real(*a, **k))
    # "" and "..." have no readability scores (None); batch_size=2 spreads them over
    # several Ray batches, one of them all-None, so the column types must be merged
    texts = ["", "...", SIMPLE[0], TOXIC, SIMPLE[1] + "\n\nEdit: typo", HARD, "Short one.", SIMPLE[2]]
    for kwargs in ({"clean": True, "toxicity": False}, {"clean": False, "toxicity": True}):
        local = score_texts(texts, backend="profanity-check", batch_size=2, **kwargs)
        on_ray = score_texts(texts, backend="profanity-check", batch_size=2, executor="ray", **kwargs)
        assert on_ray == local
        assert list(on_ray) == list(local)  # same columns in the same order
    assert len(calls) == 2
    assert local["toxicity"][3] > 0.5 and local["n_words"][2] > 20  # non-trivial values were compared


@pytest.mark.slow  # Ray start-up and its worker processes take ~15 s on 2 cores
def test_build_with_ray_executor_matches_local(ray_local, tmp_path, monkeypatch):
    import simplesafe.data.ray_executor as rx

    sources = make_sources(tmp_path)
    common = dict(sources=sources, validation_fraction=0.0, test_fraction=0.0, toxicity_backend="profanity-check",
                  wiki_small_fraction=0.2, plots=False, batch_size=3)
    calls = []
    real = rx.score_texts_ray
    monkeypatch.setattr(rx, "score_texts_ray", lambda *a, **k: calls.append(k) or real(*a, **k))

    local_out = tmp_path / "local" / "data"
    ray_out = tmp_path / "ray" / "data"
    local_head = build_datasets(DataBuildConfig(**common), local_out)
    assert calls == []
    ray_head = build_datasets(DataBuildConfig(**common, executor="ray"), ray_out)
    # answers (clean + readability), toxicity of the survivors, and Wikipedia leads
    assert len(calls) == 3

    local_files, local_stats = read_outputs(local_out)
    ray_files, ray_stats = read_outputs(ray_out)
    assert sorted(ray_files) == sorted(local_files)
    for name, text in local_files.items():
        assert ray_files[name] == text, f"{name} differs between executor=local and executor=ray"
    assert ray_stats == local_stats
    local_head.pop("seconds"), ray_head.pop("seconds")
    assert ray_head == local_head
    # the comparison covers every dataset with rows in it, not empty files
    assert all(local_head[k] > 0 for k in ("sft_rows", "rm_pairs", "rl_prompts", "wiki_leads", "rejects"))


def test_ray_config_fields_from_overrides():
    cfg = DataBuildConfig.model_validate({"executor": "ray", "ray_address": "auto"})
    assert cfg.executor == "ray" and cfg.ray_address == "auto"
    with pytest.raises(ValueError, match="executor"):
        DataBuildConfig.model_validate({"executor": "spark"})


def test_missing_ray_names_the_extra(monkeypatch):
    # a None entry in sys.modules makes "import ray" raise ImportError, as when it is not installed
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match=r"pip install 'simplesafe\[ray\]'"):
        score_texts(["Some text here."], executor="ray")
    with pytest.raises(ConfigError, match=r"simplesafe\[ray\]"):
        score_texts([], executor="ray")


def test_unreachable_ray_address_is_a_config_error():
    import socket

    from simplesafe.data.ray_executor import _check_reachable

    with socket.socket() as s:  # a port that was free a moment ago: nobody listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConfigError, match="no Ray cluster answers"):
        _check_reachable(f"127.0.0.1:{port}")  # ensure_ray calls it before ray.init
    with pytest.raises(ConfigError, match="no Ray cluster answers"):
        _check_reachable(f"ray://127.0.0.1:{port}")
    _check_reachable("auto")  # left to Ray
