"""SIGKILL at seeded random points, determinism, and invariants of a data build.

- `simplesafe data build` (a subprocess) is killed after seeded random delays, then rerun:
  every output file equals that of an uninterrupted run with the same seed, and no file
  a reader can see is half-written. Two uninterrupted runs give identical files
  (determinism).
- The built datasets hold the invariants the recipe promises: no question in two splits
  or two datasets, no cross-split question pair at or above the leakage threshold (the
  questions are re-embedded here), and no SFT completion or RM ``chosen`` answer above
  the toxicity threshold or below the readability bar.
- A generation job (`simplesafe synth backtranslate` against the local OpenAI-compatible
  server) killed once a seeded number of calls has been answered resumes from its SQLite
  cache: its outputs equal an uninterrupted run's and no finished call is asked again
  (counted on the server).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

CLI = [sys.executable, "-m", "simplesafe.cli"]
SEED = 20261124

ANIMALS = ["cats", "dogs", "bees", "owls", "frogs", "goats", "ducks", "bats", "crabs", "seals", "moles", "ants",
           "wolves", "snails", "foxes", "geese", "mice", "bears", "whales", "sheep", "hens", "eels", "deer", "yaks"]
VERBS = ["sleep so much", "make noise at night", "live in groups", "move so fast", "eat grass", "like the sun",
         "hide in winter", "swim well"]
TOXIC = ("You are a fucking idiot and this is shit. Shut the fuck up you stupid moron. Nobody cares about your dumb "
         "question, go away you bitch, you are a fucking loser.")
HARD = ("Notwithstanding considerable interdisciplinary investigation, physiological characterisation of "
        "thermoregulatory adaptations necessitates comprehensive experimental methodologies, incorporating "
        "multidimensional biochemical instrumentation and sophisticated computational representations.")


def simple_answer(i: int, animal: str) -> str:
    return (f"The {animal} do this to stay safe and well. It helps them find food and rest. "
            f"Young {animal} learn it from their mothers. You can see it on a farm or in a park near home number {i}. "
            f"It is a small and kind thing that they do every day.")


QUESTIONS = [
    "Why do cats purr?", "How do airplanes stay in the air?", "Why is the ocean salty?", "How do vaccines work?",
    "What makes a rainbow appear?", "Why do we need to sleep?", "How does a compass find north?",
    "Why do onions make you cry?", "How do bees make honey?", "What causes earthquakes?", "Why do leaves change color?",
    "How does soap clean dirty hands?", "Why do stars twinkle at night?", "How do fish breathe under water?",
    "What is inflation in money terms?", "Why does bread go stale?", "How do credit cards work?",
    "Why do we get goosebumps?", "How does a microwave heat food?", "Why do cars need oil changes?",
    "How do plants drink water?", "Why do dogs wag their tails?", "What makes thunder so loud?",
    "How does the heart pump blood?", "Why is gold so expensive?", "How do elections count votes?",
    "Why do we yawn?", "How do glasses help people see?", "Why does ice float on water?",
    "How does a fridge keep food cold?", "Why do babies cry so much?", "How are mountains formed?",
    "Why do people snore?", "How does wifi send data?", "Why do cheeses smell strong?", "How do volcanoes erupt?",
]


def make_sources(root: Path) -> list[dict]:
    rows = []
    for i, question in enumerate(QUESTIONS):
        animal = ANIMALS[i % len(ANIMALS)]
        answers = [{"text": simple_answer(i, animal), "score": 10 + i % 5}]
        if i % 4 == 0:
            answers.append({"text": TOXIC + f" ({i})", "score": 50})  # toxic, best voted
        if i % 5 == 1:
            answers.append({"text": HARD + f" Case {i}.", "score": 40})  # not simple, best voted
        if i % 3 == 2:
            answers.append({"text": simple_answer(i, animal).replace("safe", "warm") + " They like it.", "score": 6})
        rows.append({"id": f"q{i}", "question": question, "answers": answers})
    # near-duplicate questions across fixed splits: the train copy must go
    rows.append({"id": "sky_val", "question": "Why is the sky blue?", "split": "validation",
                 "answers": [{"text": simple_answer(900, "birds"), "score": 9}]})
    rows.append({"id": "sky_train", "question": "Why is the sky blue in colour?", "split": "train",
                 "answers": [{"text": simple_answer(901, "birds"), "score": 9}]})
    rows.append({"id": "sky_test", "question": "Why is the sky so blue?", "split": "test",
                 "answers": [{"text": simple_answer(902, "birds"), "score": 9}]})
    qa = root / "qa.jsonl"
    qa.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs = root / "pairs.jsonl"
    prompts = ["How can I stop a nosebleed?", "What should I pack for a hike?", "How do I boil an egg?",
               "Can you help me write a birthday card?", "How do I fix a flat bike tire?", "What is a good way to save money?",
               "How do I plant tomatoes?", "How can I calm down before a test?", "What games can kids play indoors?",
               "How do I clean a cast iron pan?", "How can I learn to whistle?", "What should I feed a pet rabbit?"]
    pairs.write_text("".join(json.dumps({"id": f"p{i}", "prompt": q,
                                         "chosen": simple_answer(500 + i, ANIMALS[i]), "rejected": TOXIC + f" [{i}]"}) + "\n"
                             for i, q in enumerate(prompts)))
    para = ("the town of {n} is a small place near a big river . many people live there . they grow corn and beans . "
            "the town has a school , a shop and a park . children play in the park after school .")
    wiki = root / "articles.txt"
    wiki.write_text("".join(" ".join([para.format(n=f"t{i}")] * 3) + "\n" for i in range(30)))
    return [{"path": str(qa), "kind": "qa", "name": "eli5"}, {"path": str(pairs), "kind": "pairs", "name": "pairs"},
            {"path": str(wiki), "kind": "wiki", "name": "simplewiki"}]


DATA_SETTINGS = {"toxicity_backend": "profanity-check", "validation_fraction": 0.2, "test_fraction": 0.2,
                 "plots": False, "leakage": True, "leakage_threshold": 0.6, "min_answer_words": 20,
                 "pairs_to_sft_fraction": 0.4, "pairs_to_rl_fraction": 0.2, "seed": 5}


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("src")
    cfg = {"name": "rel", "data": {"sources": make_sources(root), **DATA_SETTINGS}}
    path = root / "recipe.yaml"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path


def run_build(recipe: Path, out: Path, kill_after: float | None = None) -> tuple[int, float]:
    """Run the build; return (exit code, seconds the stage itself ran: config.yaml seen -> DONE seen).

    With ``kill_after``, SIGKILL the process that many seconds after the stage started
    (its config.yaml appeared), i.e. at a point inside the build, not during imports.
    """
    proc = subprocess.Popen([*CLI, "data", "build", str(recipe), "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    started = done = None
    deadline = time.time() + 600
    while proc.poll() is None and time.time() < deadline:
        now = time.time()
        if started is None and (out / "config.yaml").exists():
            started = now
        if started is not None and done is None and (out / "DONE").exists():
            done = now
        if kill_after is not None and started is not None and now - started >= kill_after:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    stdout, stderr = proc.communicate(timeout=600)
    if kill_after is None:
        assert proc.returncode == 0, stderr[-3000:]
    end = done or time.time()
    return proc.returncode, end - (started or end)


VOLATILE = {"manifest.json", "log.txt", "DONE", "stats.json", "config.yaml"}


def output_files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name not in VOLATILE and not p.name.startswith(".")}


def stats_without_time(out: Path) -> dict:
    stats = json.loads((out / "stats.json").read_text())
    stats.pop("seconds", None)
    stats["headline"].pop("seconds", None)
    return stats


def rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def assert_complete(out: Path) -> None:
    """Every file a reader can see parses completely (atomic writes: nothing half-written)."""
    for p in out.rglob("*"):
        if not p.is_file() or p.name.startswith("."):
            continue
        if p.suffix == ".jsonl":
            rows(p)
        elif p.suffix == ".json":
            json.loads(p.read_text())
    assert not [p for p in out.rglob("*.tmp") if not p.name.startswith(".")]


@pytest.fixture(scope="module")
def reference(recipe, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "data"
    _, seconds = run_build(recipe, out)
    return out, seconds


@pytest.mark.slow
def test_same_seed_twice_gives_identical_files(recipe, reference, tmp_path):
    ref, _ = reference
    out = tmp_path / "data"
    run_build(recipe, out)
    a, b = output_files(ref), output_files(out)
    assert set(a) >= {"sft/train.jsonl", "rm/train.jsonl", "rl/train.jsonl", "wiki/train.jsonl", "rejects.jsonl"}
    assert a == b
    assert stats_without_time(ref) == stats_without_time(out)
    assert not list(ref.rglob("*.tmp")) and not list(out.rglob("*.tmp"))


@pytest.mark.slow
def test_sigkill_at_random_points_then_rerun_equals_uninterrupted(recipe, reference, tmp_path):
    ref, seconds = reference
    rng = random.Random(SEED)
    out = tmp_path / "data"
    assert seconds > 0
    kills = 0
    for _ in range(3):
        rc, _ = run_build(recipe, out, kill_after=rng.uniform(0.0, 0.9) * seconds)
        assert_complete(out)
        if rc == 0 or (out / "DONE").exists():  # killed only after the stage finished
            break
        assert rc == -signal.SIGKILL
        kills += 1
    assert kills >= 1  # at least one kill landed inside the build
    run_build(recipe, out)
    assert (out / "DONE").exists()
    assert output_files(out) == output_files(ref)
    assert stats_without_time(out) == stats_without_time(ref)
    assert_complete(out)


QA = ("sft", "rm", "rl")
SPLITS = ("train", "validation", "test")


@pytest.mark.slow
def test_invariants_of_the_built_datasets(reference):
    from simplesafe.models.load import load_sentence_encoder
    from simplesafe.text.readability import readability
    from simplesafe.text.toxicity import get_toxicity_scorer

    out, _ = reference
    data = {(d, s): rows(out / d / f"{s}.jsonl") for d in QA for s in SPLITS}
    assert all(data[(d, "train")] for d in QA)
    # no question in two splits or two datasets (by id and by prompt text)
    owner_id: dict[str, tuple] = {}
    owner_text: dict[str, tuple] = {}
    for key, rs in data.items():
        for r in rs:
            assert owner_id.setdefault(r["question_id"], key) == key, r["question_id"]
            assert owner_text.setdefault(r["prompt"].strip().lower(), key) == key, r["prompt"]
    wiki_ids = [r["id"] for s in SPLITS for r in rows(out / "wiki" / f"{s}.jsonl")]
    assert len(wiki_ids) == len(set(wiki_ids)) > 0
    # no cross-split pair at or above the leakage threshold
    by_split = {s: sorted({r["prompt"] for d in QA for r in data[(d, s)]}) for s in SPLITS}
    enc = load_sentence_encoder("embedded:minilm")
    emb = {s: enc.encode(v, normalize_embeddings=True) for s, v in by_split.items() if v}
    assert len(emb) == 3
    for i, s in enumerate(SPLITS):
        for t in SPLITS[i + 1:]:
            cos = float(np.max(emb[s] @ emb[t].T))
            assert cos < DATA_SETTINGS["leakage_threshold"], (s, t, cos)
    rejects = rows(out / "rejects.jsonl")
    assert any(r["stage"] == "leakage" and r["id"] in ("sky_train", "sky_test") for r in rejects)
    # SFT completions and RM 'chosen' answers pass the toxicity and readability filters
    targets = [r["completion"] for s in SPLITS for r in data[("sft", s)]] + \
              [r["chosen"] for s in SPLITS for r in data[("rm", s)]]
    assert targets and any(r["rejected"].startswith("You are") for s in SPLITS for r in data[("rm", s)])
    tox = get_toxicity_scorer("profanity-check").score(targets)["toxicity"]
    assert float(np.max(tox)) <= DATA_SETTINGS.get("max_toxicity", 0.1)
    for text in targets:
        rd = readability(text)
        assert rd.fre >= 60 and rd.fkg < 9 and rd.n_words >= DATA_SETTINGS["min_answer_words"], text
    for s in SPLITS:
        for r in rows(out / "wiki" / f"{s}.jsonl"):
            rd = readability(r["text"])
            assert rd.fre >= 60 and rd.fkg < 9


# --- a generation job -------------------------------------------------------------------------


def _leads(path: Path) -> Path:
    path.mkdir()
    subjects = ["river", "mountain", "forest", "castle", "bridge", "market", "island", "valley", "harbor", "temple"]
    for s, n in (("train", 24), ("validation", 4), ("test", 4)):
        with (path / f"{s}.jsonl").open("w") as fh:
            for i in range(n):
                subj = subjects[i % len(subjects)]
                text = (f"The {subj} number {i} of the {s} set is a well known place. Many people go there in summer. "
                        f"It is old and pretty. Children like to visit it with their families.")
                fh.write(json.dumps({"id": f"{s}-{i}", "source": "simplewiki", "text": text}) + "\n")
    return path


class Server:
    """The local server answering backtranslation prompts from their content, slowly."""

    def __init__(self):
        from simplesafe.llm.local_server import LocalChatServer, chat_reply

        self.answered: list[str] = []  # prompt text of every fully sent reply
        self.lock = threading.Lock()

        def reply(body, hit):
            text = body["messages"][-1]["content"]
            time.sleep(0.05)
            words = [w.strip(".,") for w in text.split() if len(w) > 3]
            k = sum(map(ord, text)) % 7
            question = f"What is special about the {words[(k + 5) % len(words)].lower()} in this {k} story?"
            with self.lock:
                self.answered.append(text)
            return 200, chat_reply(question), {}

        self.server = LocalChatServer(reply)

    def __enter__(self):
        self.server.__enter__()
        return self

    def __exit__(self, *exc):
        self.server.__exit__(*exc)


def backtranslate_cmd(leads: Path, out: Path, url: str) -> list[str]:
    return [*CLI, "synth", "backtranslate", "--out", str(out), "--input", str(leads), "--backend", "openai",
            "--base-url", url, "--model", "m", "--api-key-env", "SIMPLESAFE_UNSET_KEY", "--max-workers", "1",
            "params.max_new_tokens=24"]


def gen_outputs(out: Path) -> dict[str, list]:
    return {name: rows(out / name) for name in ("train.jsonl", "validation.jsonl", "test.jsonl", "rejected.jsonl")}


@pytest.mark.slow
def test_killed_generation_job_resumes_without_repeating_finished_calls(tmp_path):
    leads = _leads(tmp_path / "leads")
    with Server() as srv:
        ref = tmp_path / "ref"
        res = subprocess.run(backtranslate_cmd(leads, ref, srv.server.base_url), capture_output=True, text=True,
                             timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
        n_ref = len(srv.answered)
        assert n_ref == 32 and len(set(srv.answered)) == 32

        srv.answered.clear()
        out = tmp_path / "killed"
        stop_at = random.Random(SEED).randint(5, 25)  # a seeded random point inside the job
        proc = subprocess.Popen(backtranslate_cmd(leads, out, srv.server.base_url), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.time() + 300
        while len(srv.answered) < stop_at and proc.poll() is None and time.time() < deadline:
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        assert proc.returncode == -signal.SIGKILL
        first = list(srv.answered)
        assert stop_at <= len(first) < n_ref and not (out / "DONE").exists()

        srv.answered.clear()
        res = subprocess.run(backtranslate_cmd(leads, out, srv.server.base_url), capture_output=True, text=True,
                             timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
        second = list(srv.answered)
    # a call answered just before the kill may not have reached the cache (max_workers=1: at most one)
    repeated = set(first) & set(second)
    assert len(repeated) <= 1, len(repeated)
    assert len(first) + len(second) - len(repeated) == n_ref
    assert gen_outputs(out) == gen_outputs(ref)
    assert sum(len(v) for k, v in gen_outputs(out).items() if k != "rejected.jsonl") > 0
    assert not [p for p in out.rglob("*") if p.suffix == ".tmp" and not p.name.startswith(".")]
