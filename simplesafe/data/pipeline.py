"""``simplesafe data build``: raw ELI5 / preference / Simple Wikipedia data -> SFT, RM, RL.

Implements the data pipeline of the project report ("Training LLMs on Simple, Safe
Text", section 2.2) with its thresholds as defaults:

1. load every source (schemas validated; bad rows are errors, or rejects with
   ``on_error: skip``);
2. clean questions (Reddit markdown, quotes, URLs, whitespace) and drop posts that are
   not questions or are meta posts, and exact duplicate questions;
3. give each question a split (the source's own, else a seeded hash of its id) and
   remove cross-split leakage (cosine >= 0.6 of question embeddings; train loses to
   validation/test, test loses to validation);
4. clean and score answers in batches (words, FRE, FKG, toxicity; ``datasets.map``
   with ``num_proc`` workers for large inputs, or Ray Data with ``executor: ray``, see
   :mod:`simplesafe.data.ray_executor`); drop answers under 20 words, not simple
   (FRE < 60 or FKG >= 9) and exact duplicates; flag low-score (< 4), toxic (> 0.1)
   and "Edit:" answers, which may appear only as ``rejected`` in RM data. The toxicity
   model (the slow part) runs only on answers that no other flag already restricts to
   ``rejected``, since only there can it change the outcome; the others have no
   ``toxicity`` value;
5. route each question to exactly one of SFT / RM / RL (:mod:`simplesafe.data.split`);
6. Simple Wikipedia: reject articles with wiki markup or under 50 words, build leads
   (paragraphs until >= 300 words), drop leads over 500 words or not simple, split
   validation/test of 5,000 each (``min(size, fraction * n)`` for small inputs).

Preference-pair sources have no vote scores: the preferred answer ranks above the
rejected one (K = 2), so every such question would go to RM. ``pairs_to_sft_fraction``
sends a seeded share of them to SFT (their preferred answer, if it passes the SFT
filters) and ``pairs_to_rl_fraction`` a share to RL prompts, so the bundled demo data
fills all three datasets. Vote-scored sources follow the report's rules exactly.

Dataset formats (the trainers read these; ``datasets.load_dataset("json", ...)``):

- ``sft/{train,validation,test}.jsonl``: ``{id, source, question_id, prompt, completion,
  answer_id, score, n_words, fre, fkg, toxicity}`` -- prompt is the question text,
  completion the answer; the trainer applies the ``### Human: ... ### Assistant:`` template.
- ``rm/...``: ``{id, source, question_id, prompt, chosen, rejected, weight, chosen_score,
  rejected_score, chosen_id, rejected_id, k}`` with ``weight = 1 / C(k, 2)``.
- ``rl/...``: ``{id, source, question_id, prompt}``, plus ``reference`` (the preferred
  answer, cleaned but not filtered) where the source has one: evaluation references.
- ``pairs/...``: every preference-pair question not routed to SFT, with its raw preferred
  and rejected answers (cleaned, not filtered) ``{id, source, question_id, prompt, chosen,
  rejected, weight, route}``: preference data for a judge that needs no readability bar
  (the demo's held-out helpfulness reward model), split like everything else by question.
- ``wiki/...``: filtered Simple Wikipedia leads ``{id, source, title, text, n_words, fre,
  fkg}`` for question backtranslation (the synth stage turns them into SFT pairs), plus
  ``contrast`` (the aligned ordinary-English text) for sources that have one (Wiki-Auto),
  from which the synth stage also writes simple-vs-ordinary preference pairs.
- ``rejects.jsonl`` (``id, stage, reason, scores``), ``stats.json`` (funnel, counts),
  ``plots/{fre,fkg,toxicity,length}.png``.

    simplesafe data build recipes/demo.yaml            # the recipe's ``data`` section
    simplesafe data build data.yaml out=runs/data pair_strategy=top2
    simplesafe data build recipe.yaml executor=ray ray_address=auto   # on a Ray head node
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections import Counter
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from simplesafe.config import StageConfig
from simplesafe.errors import ConfigError
from simplesafe.runs import stage
from simplesafe.text.toxicity_section import ToxicitySettings

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")


class SourceConfig(StageConfig):
    """One input file."""

    path: str = Field(description="file path; relative paths are tried against the working directory, then the repository root (for the bundled data/)")
    kind: Literal["qa", "pairs", "wiki"] = Field(description="qa: ELI5-style questions with scored answers; pairs: preference pairs; wiki: Simple Wikipedia articles")
    format: str = Field("auto", description="qa: auto|eli5|eli5_category|generic; pairs: auto|pairs|hh-rlhf|haluquestqa; wiki: auto|lines|rows")
    name: str | None = Field(None, description="provenance name written to every row's 'source' (default: the file name)")
    split: Literal["train", "validation", "test"] | None = Field(None, description="put every question of this file in one split")
    limit: int | None = Field(None, ge=1, description="read at most this many records")
    text_field: str = Field("text", description="wiki rows: the field holding the (simple) text")
    contrast_field: str | None = Field(None, description="wiki rows: a field with the aligned ordinary-English "
                                       "text (Wiki-Auto's 'normal'); kept as 'contrast' for simplicity pairs")


def _demo_sources() -> list[SourceConfig]:
    return [
        SourceConfig(path="data/eli5/lfqa_preferences.tsv", kind="pairs", name="lfqa_preferences"),
        SourceConfig(path="data/simplewiki/simple_articles.txt", kind="wiki", name="simplewiki"),
    ]


class DataBuildConfig(ToxicitySettings, StageConfig):
    """The ``data`` section of a recipe. Defaults are the report's thresholds."""

    sources: list[SourceConfig] = Field(default_factory=_demo_sources, description="input files (default: the bundled demo data)")
    out: str | None = Field(None, description="output folder for `simplesafe data build` (the recipe runner uses RUN/data)")
    seed: int = Field(0, description="seed for splits, pair sampling and routing fractions")
    on_error: Literal["raise", "skip"] = Field("raise", description="a malformed row: raise an error naming file/line/field, or skip it as a reject")
    min_answer_words: int = Field(20, ge=0, description="answers under this many words are dropped")
    min_article_words: int = Field(50, ge=0, description="Wikipedia articles under this many words are dropped")
    lead_min_words: int = Field(300, ge=1, description="concatenate paragraphs until the lead has at least this many words")
    lead_max_words: int = Field(500, ge=1, description="leads over this many words are dropped")
    min_fre: float = Field(60.0, description="keep text with Flesch reading ease >= this")
    max_fkg: float = Field(9.0, description="keep text with Flesch-Kincaid grade < this")
    max_toxicity: float = Field(0.1, ge=0, le=1, description="toxicity (max over labels) above this: not in SFT, only 'rejected' in RM "
                                                           "(toxicity.threshold, when set, is used instead)")
    min_score: float = Field(4, description="Reddit score under this: not in SFT, only 'rejected' in RM (sources with votes only)")
    rm_readability: Literal["filter", "rejected_only"] = Field(
        "filter", description="filter: not-simple answers are dropped everywhere (the report); rejected_only: kept in RM as 'rejected' only")
    pair_strategy: Literal["all", "top2", "best_worst", "random"] = Field("all", description="which RM pairs to keep per question")
    max_pairs_per_question: int = Field(10, ge=1, description="at most this many RM pairs per question")
    pairs_to_sft_fraction: float = Field(0.4, ge=0, le=1, description="share of preference-pair questions sent to SFT (their preferred answer)")
    pairs_to_rl_fraction: float = Field(0.15, ge=0, le=1, description="share of preference-pair questions sent to RL prompts")
    validation_fraction: float = Field(0.1, ge=0, lt=1, description="QA questions without a source split: share for validation")
    test_fraction: float = Field(0.1, ge=0, lt=1, description="QA questions without a source split: share for test")
    wiki_validation_size: int = Field(5000, ge=0, description="Simple Wikipedia validation articles")
    wiki_test_size: int = Field(5000, ge=0, description="Simple Wikipedia test articles")
    wiki_small_fraction: float = Field(0.1, ge=0, lt=0.5, description="for small inputs each eval split is at most this share of the kept articles")
    leakage: bool = Field(True, description="remove cross-split leakage between questions")
    leakage_threshold: float = Field(0.6, ge=-1, le=1, description="cosine at or above which two questions leak")
    encoder: str = Field("embedded:minilm", description="sentence encoder for leakage (the report used all-mpnet-base-v2)")
    search: Literal["auto", "exact", "faiss"] = Field("auto", description="nearest-neighbour search for leakage")
    num_proc: int = Field(1, ge=1, description="worker processes for cleaning/scoring large inputs (datasets.map)")
    parallel_min_rows: int = Field(20_000, ge=1, description="use datasets.map with num_proc only from this many answers")
    batch_size: int = Field(256, ge=1, description="texts per scoring batch")
    executor: Literal["local", "ray"] = Field(
        "local", description="local: in-process / datasets.map; ray: clean and score on Ray Data (pip install 'simplesafe[ray]')")
    ray_address: str | None = Field(None, description="executor ray: cluster address ('auto' on a head node, 'ray://HOST:10001'); unset = local mode with num_proc CPUs")
    plots: bool = Field(True, description="write PNG histograms of FRE, FKG, toxicity and length")

    @model_validator(mode="after")
    def _check(self):
        if self.pairs_to_sft_fraction + self.pairs_to_rl_fraction > 1:
            raise ValueError("pairs_to_sft_fraction + pairs_to_rl_fraction must be <= 1")
        if self.validation_fraction + self.test_fraction >= 1:
            raise ValueError("validation_fraction + test_fraction must be < 1")
        if self.lead_max_words < self.min_article_words:
            raise ValueError("lead_max_words must be >= min_article_words")
        return self.check_threshold("max_toxicity")


def resolve_path(path: str) -> Path | str:
    from simplesafe.io import is_hub_path
    from simplesafe.paths import REPO_DIR

    if is_hub_path(path):
        return path  # a hub dataset, read by simplesafe.io.read_rows
    p = Path(path).expanduser()
    if p.exists():
        return p
    if not p.is_absolute() and (REPO_DIR / p).exists():
        return REPO_DIR / p
    raise ConfigError(f"source file {path!r} not found (looked in {Path.cwd()} and {REPO_DIR})")


def unit_hash(*parts) -> float:
    """A stable uniform number in [0, 1) from ``parts`` (independent of row order)."""
    h = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def assign_split(qid: str, seed: int, validation_fraction: float, test_fraction: float) -> str:
    u = unit_hash(seed, "split", qid)
    if u < validation_fraction:
        return "validation"
    if u < validation_fraction + test_fraction:
        return "test"
    return "train"


def build_lead(paragraphs: list[str], min_words: int) -> str:
    """Concatenate paragraphs until the text has at least ``min_words`` words (or the end)."""
    out, n = [], 0
    for p in paragraphs:
        out.append(p)
        n += len(p.split())
        if n >= min_words:
            break
    return "\n\n".join(out)


# --- QA --------------------------------------------------------------------------------


def _load_questions(cfg: DataBuildConfig, rejects: list, funnel) -> list:
    from simplesafe.data.sources.eli5 import load_qa
    from simplesafe.data.sources.preferences import load_preference_pairs

    questions = []
    for src in cfg.sources:
        if src.kind == "wiki":
            continue
        path = resolve_path(src.path)
        load_rejects: list = []
        loader = load_qa if src.kind == "qa" else load_preference_pairs
        qs = list(loader(path, schema=src.format, source=src.name, on_error=cfg.on_error, rejects=load_rejects, limit=src.limit))
        for q in qs:
            if src.split:
                q.split = src.split
        for r in load_rejects:
            rejects.append({"id": f"{src.name or path.stem}:{r['line']}", "stage": "load", "reason": r["reason"],
                            "file": r["file"], "line": r["line"], "field": r.get("field"), "scores": {}})
        funnel.add(f"load/{src.name or path.stem}", "all", len(qs), len(load_rejects))
        questions.extend(qs)
    ids = Counter(q.id for q in questions)
    dupes = [i for i, c in ids.items() if c > 1]
    if dupes:
        # ids must be unique across sources: prefix with the source name
        for q in questions:
            q.id = f"{q.source}:{q.id}" if ids[q.id] > 1 else q.id
        ids = Counter(q.id for q in questions)
        still = [i for i, c in ids.items() if c > 1]
        if still:
            q = next(q for q in questions if q.id == still[0])
            from simplesafe.errors import DataError

            raise DataError(q.file, q.line, "id", f"duplicate question id {still[0]!r} within one source")
    return questions


def _filter_questions(cfg, questions, rejects, funnel) -> list:
    from simplesafe.data.filters import ExactDuplicateFilter, QuestionPostFilter, run_filters
    from simplesafe.text.clean import clean_question

    docs = []
    for q in questions:
        text = clean_question(q.title, q.body)
        if not q.split:
            q.split = assign_split(q.id, cfg.seed, cfg.validation_fraction, cfg.test_fraction)
        docs.append({"id": q.id, "source": q.source, "split": q.split, "title": q.title, "body": q.body,
                     "text": text, "q": q})
    # the first copy of a duplicate is kept: order by split priority so that a question
    # in validation wins over its copy in test, and test over train (as for leakage)
    docs.sort(key=lambda d: ("validation", "test", "train").index(d["split"]))
    filters = [QuestionPostFilter(), ExactDuplicateFilter("text")]
    # preference prompts (hh-rlhf requests, instructions) are prompts by construction,
    # so the Reddit question/meta-post rule applies to vote-scored Reddit posts only
    reddit = [d for d in docs if d["q"].kind == "votes"]
    pairs = [d for d in docs if d["q"].kind != "votes"]
    kept_reddit = run_filters(reddit, filters, "question", funnel, rejects)
    dedup = filters[1]
    kept_pairs = run_filters(pairs, [dedup], "question", funnel, rejects)
    kept = kept_reddit + kept_pairs
    empty = [d for d in kept if not d["text"].strip()]
    for d in empty:
        rejects.append({"id": d["id"], "stage": "question", "reason": "empty after cleaning", "split": d["split"], "scores": {}})
    return [d for d in kept if d["text"].strip()]


def _remove_leakage(cfg, qdocs, rejects, funnel) -> list:
    from simplesafe.data.leakage import remove_cross_split_leakage

    by_split = {s: [d for d in qdocs if d["split"] == s] for s in SPLITS}
    by_split = {s: v for s, v in by_split.items() if v}
    if len(by_split) < 2:
        return qdocs
    keep, removed = remove_cross_split_leakage(
        {s: [d["text"] for d in v] for s, v in by_split.items()},
        {s: [d["id"] for d in v] for s, v in by_split.items()},
        threshold=cfg.leakage_threshold, encoder=cfg.encoder, method=cfg.search, progress=len(qdocs) > 5000,
    )
    for r in removed:
        rejects.append({"id": r["id"], "stage": "leakage", "split": r["split"],
                        "reason": f"cosine {r['cosine']:.3f} >= {cfg.leakage_threshold:g} with {r['matched_split']} {r['matched_id']}",
                        "matched_id": r["matched_id"], "matched_split": r["matched_split"], "scores": {"cosine": r["cosine"]}})
    out = []
    for s, docs in by_split.items():
        n_kept = int(keep[s].sum())
        funnel.add("leakage", s, n_kept, len(docs) - n_kept)
        out.extend(d for d, k in zip(docs, keep[s]) if k)
    return out


def _route_preference(cfg, q) -> str | None:
    if q.kind != "pair":
        return None
    u = unit_hash(cfg.seed, "route", q.id)
    if u < cfg.pairs_to_rl_fraction:
        return "rl"
    if u < cfg.pairs_to_rl_fraction + cfg.pairs_to_sft_fraction:
        return "sft"
    return None


def _score_answers(cfg, qdocs) -> list[dict]:
    from simplesafe.data.scoring import score_texts

    answers = []
    for d in qdocs:
        q = d["q"]
        d["prefer"] = _route_preference(cfg, q)
        if d["prefer"] == "rl":
            continue  # RL needs only the question; its answers are recorded as unused rejects
        top = max((a.score for a in q.answers if a.score is not None), default=None)
        for a in q.answers:
            answers.append({"id": a.id, "question_id": q.id, "source": q.source, "split": q.split,
                            "raw": a.text, "score": a.score, "has_votes": q.kind == "votes",
                            # the loser of a preference pair is never an SFT target or 'chosen'
                            "dispreferred": q.kind == "pair" and a.score != top})
    scores = score_texts([a["raw"] for a in answers], backend=cfg.toxicity, batch_size=cfg.batch_size,
                         num_proc=cfg.num_proc, parallel_min_rows=cfg.parallel_min_rows, progress=len(answers) > 2000,
                         clean=True, toxicity=False, executor=cfg.executor, ray_address=cfg.ray_address)
    for i, a in enumerate(answers):
        for col, values in scores.items():
            a[col] = values[i]
        a["has_edit"] = a["edit_note"] is not None
    return answers


def _score_toxicity(cfg, answers: list[dict]) -> None:
    """Add toxicity columns to ``answers`` (batched; the model is the slow part)."""
    from simplesafe.data.scoring import score_texts

    scores = score_texts([a["text"] for a in answers], backend=cfg.toxicity, batch_size=cfg.batch_size,
                         num_proc=cfg.num_proc, parallel_min_rows=cfg.parallel_min_rows, progress=len(answers) > 2000,
                         executor=cfg.executor, ray_address=cfg.ray_address)
    for i, a in enumerate(answers):
        for col in scores:
            if col not in ("n_words", "fre", "fkg"):
                a[col] = scores[col][i]


def _answer_flags(cfg, a: dict, readable: bool) -> list[str]:
    """Reasons an answer may only be ``rejected`` (empty: it may be an SFT target or ``chosen``)."""
    from simplesafe.data.filters import EditNoteFilter, MinScoreFilter, ToxicityFilter

    flags = []
    checks = [MinScoreFilter(cfg.min_score), EditNoteFilter()]
    if a.get("toxicity") is not None:
        checks.insert(1, ToxicityFilter(cfg.toxicity_threshold(cfg.max_toxicity)))
    for flt in checks:
        ok, reason = flt(a)
        if not ok:
            flags.append(f"{flt.name}: {reason}")
    if not readable:
        flags.append("readability: not simple")
    if a.get("dispreferred"):
        flags.append("dispreferred: the rejected answer of a preference pair")
    return flags


def _build_qa(cfg, questions, rejects, funnel, rng) -> tuple[dict, list[dict]]:
    from simplesafe.data.filters import ExactDuplicateFilter, MinWordsFilter, ReadabilityFilter, run_filters, reject_record
    from simplesafe.data.split import ScoredAnswer, route_question

    qdocs = _filter_questions(cfg, questions, rejects, funnel)
    if cfg.leakage:
        qdocs = _remove_leakage(cfg, qdocs, rejects, funnel)
    answers = _score_answers(cfg, qdocs)
    readab = ReadabilityFilter(cfg.min_fre, cfg.max_fkg)
    hard = [MinWordsFilter(cfg.min_answer_words)]
    if cfg.rm_readability == "filter":
        hard.append(readab)
    hard.append(ExactDuplicateFilter("text"))
    usable = run_filters(answers, hard, "answer", funnel, rejects)
    readable = {a["id"]: readab(a)[0] for a in usable}
    # Toxicity only changes where an answer may go if nothing else already restricts it to
    # 'rejected' (low score, edit note, not simple, loser of a pair): score just those.
    unflagged = [a for a in usable if not _answer_flags(cfg, a, readable[a["id"]])]
    _score_toxicity(cfg, unflagged)
    by_q: dict[str, list] = {}
    for a in usable:
        sa = ScoredAnswer(a["id"], a["text"], a["score"], _answer_flags(cfg, a, readable[a["id"]]), a)
        by_q.setdefault(a["question_id"], []).append(sa)
    from simplesafe.text.clean import clean_reddit_text

    out = {name: {s: [] for s in SPLITS} for name in ("sft", "rm", "rl", "pairs")}
    route_counts = Counter()
    for d in qdocs:
        q = d["q"]
        qa = by_q.get(q.id, [])
        route = route_question(qa, cfg.pair_strategy, cfg.max_pairs_per_question, rng, prefer=d.get("prefer"))
        route_counts[(route.dataset, q.split)] += 1
        used = set()
        base = {"source": q.source, "question_id": q.id}
        if route.dataset == "sft":
            a = route.sft_answer
            used.add(a.id)
            out["sft"][q.split].append({
                "id": f"{q.id}:sft", **base, "prompt": d["text"], "completion": a.text, "answer_id": a.id,
                "score": a.score, "n_words": a.extra["n_words"], "fre": a.extra["fre"], "fkg": a.extra["fkg"],
                "toxicity": a.extra["toxicity"],
            })
        elif route.dataset == "rm":
            w = route.weight
            for n, (c, r) in enumerate(route.pairs):
                used.update((c.id, r.id))
                out["rm"][q.split].append({
                    "id": f"{q.id}:rm{n}", **base, "prompt": d["text"], "chosen": c.text, "rejected": r.text,
                    "weight": w, "chosen_score": c.score, "rejected_score": r.score,
                    "chosen_id": c.id, "rejected_id": r.id, "k": route.k,
                })
        else:
            best = _preferred(q)
            out["rl"][q.split].append({"id": f"{q.id}:rl", **base, "prompt": d["text"],
                                       **({"reference": clean_reddit_text(best.text)} if best is not None else {})})
        if q.kind == "pair" and route.dataset != "sft":
            pair = _raw_pair(q)
            if pair is not None:
                c, r = (clean_reddit_text(a.text) for a in pair)
                if c.strip() and r.strip() and c != r:
                    out["pairs"][q.split].append({"id": f"{q.id}:pair", **base, "prompt": d["text"], "chosen": c,
                                                  "rejected": r, "weight": 1.0, "route": route.dataset})
            if d.get("prefer") == "rl":
                for a in q.answers:
                    rejects.append({"id": a.id, "stage": "route", "question_id": q.id, "split": q.split, "source": q.source,
                                    "reason": "not used: question sampled for RL prompts (pairs_to_rl_fraction)", "scores": {}})
        for a in qa:
            if a.id not in used:
                why = "; ".join(a.flags) if a.flags and route.dataset != "rm" else f"not used: question went to {route.dataset} ({route.reason})"
                rejects.append(reject_record(a.extra, "route", why))
    for name in ("sft", "rm", "rl"):
        for s in SPLITS:
            funnel.add(f"route/{name}", s, route_counts[(name, s)], 0)
    return out, answers


def _preferred(q):
    scored = [a for a in q.answers if a.score is not None]
    return max(scored, key=lambda a: a.score) if scored else None


def _raw_pair(q):
    """(preferred, rejected) answers of a preference-pair question, before any answer filter."""
    scored = sorted((a for a in q.answers if a.score is not None), key=lambda a: -a.score)
    if len(scored) < 2 or scored[0].score == scored[-1].score:
        return None
    return scored[0], scored[-1]


# --- Simple Wikipedia -------------------------------------------------------------------


def _build_wiki(cfg, rejects, funnel, rng) -> tuple[dict, list[dict]]:
    from simplesafe.data.filters import (ExactDuplicateFilter, MaxWordsFilter, MinWordsFilter, ReadabilityFilter,
                                         WikiMarkupFilter, run_filters)
    from simplesafe.data.scoring import score_texts
    from simplesafe.data.sources.simplewiki import load_simplewiki

    docs = []
    for src in cfg.sources:
        if src.kind != "wiki":
            continue
        path = resolve_path(src.path)
        load_rejects: list = []
        arts = list(load_simplewiki(path, schema=src.format, source=src.name, on_error=cfg.on_error, rejects=load_rejects,
                                    limit=src.limit, text_field=src.text_field, contrast_field=src.contrast_field))
        for r in load_rejects:
            rejects.append({"id": f"{src.name or path.stem}:{r['line']}", "stage": "load", "reason": r["reason"],
                            "file": r["file"], "line": r["line"], "field": r.get("field"), "scores": {}})
        funnel.add(f"load/{src.name or path.stem}", "all", len(arts), len(load_rejects))
        for art in arts:
            full = "\n\n".join(art.paragraphs)
            docs.append({"id": art.id, "source": art.source, "title": art.title, "full": full,
                         "article_words": len(full.split()), "text": build_lead(art.paragraphs, cfg.lead_min_words),
                         **({"contrast": art.contrast} if art.contrast is not None else {})})
    if not docs:
        return {s: [] for s in SPLITS}, []
    docs = run_filters(docs, [WikiMarkupFilter("full"), MinWordsFilter(cfg.min_article_words, "article_words")], "wiki", funnel, rejects)
    # no toxicity model on Wikipedia: the report notes encyclopedic text is not toxic
    scores = score_texts([d["text"] for d in docs], batch_size=cfg.batch_size, num_proc=cfg.num_proc,
                         parallel_min_rows=cfg.parallel_min_rows, progress=len(docs) > 2000, toxicity=False,
                         executor=cfg.executor, ray_address=cfg.ray_address)
    for i, d in enumerate(docs):
        for col in ("n_words", "fre", "fkg"):
            d[col] = scores[col][i]
    scored = list(docs)
    docs = run_filters(docs, [MaxWordsFilter(cfg.lead_max_words), ReadabilityFilter(cfg.min_fre, cfg.max_fkg),
                              ExactDuplicateFilter("text")], "wiki", funnel, rejects)
    order = sorted(range(len(docs)), key=lambda i: unit_hash(cfg.seed, "wiki", docs[i]["id"]))
    n = len(docs)
    n_val = min(cfg.wiki_validation_size, int(cfg.wiki_small_fraction * n))
    n_test = min(cfg.wiki_test_size, int(cfg.wiki_small_fraction * n))
    split_of = {}
    for rank, i in enumerate(order):
        split_of[i] = "validation" if rank < n_val else "test" if rank < n_val + n_test else "train"
    out = {s: [] for s in SPLITS}
    for i, d in enumerate(docs):
        out[split_of[i]].append({"id": d["id"], "source": d["source"], "title": d["title"], "text": d["text"],
                                 "n_words": d["n_words"], "fre": d["fre"], "fkg": d["fkg"],
                                 **({"contrast": d["contrast"]} if "contrast" in d else {})})
    for s in SPLITS:
        funnel.add("wiki/split", s, len(out[s]), 0)
    return out, scored


# --- outputs ----------------------------------------------------------------------------


def _plot(path: Path, answers: list[dict], leads: list[dict], key: str, title: str, thresholds: list[float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from simplesafe.atomic import atomic_path

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for rows, label in ((answers, "answers"), (leads, "Wikipedia leads")):
        vals = np.array([r[key] for r in rows if r.get(key) is not None], dtype=float)
        vals = vals[np.isfinite(vals)]
        if len(vals):
            lo, hi = np.percentile(vals, [0.5, 99.5])
            ax.hist(np.clip(vals, lo, hi), bins=40, alpha=0.6, label=f"{label} (n={len(vals)})")
    for t in thresholds:
        ax.axvline(t, color="k", linestyle="--", linewidth=1)
    ax.set_title(title)
    ax.set_ylabel("count")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def _write_outputs(sdir: Path, cfg, datasets_out: dict, rejects: list, funnel, answers, leads, seconds: float) -> dict:
    from simplesafe.atomic import write_json
    from simplesafe.io import write_rows

    counts = {}
    for name, splits in datasets_out.items():
        counts[name] = {}
        for s in SPLITS:
            rows = splits.get(s, [])
            write_rows(sdir / name / f"{s}.jsonl", rows)
            counts[name][s] = len(rows)
    write_rows(sdir / "rejects.jsonl", rejects)
    if cfg.plots:
        _plot(sdir / "plots" / "fre.png", answers, leads, "fre", "Flesch reading ease", [cfg.min_fre])
        _plot(sdir / "plots" / "fkg.png", answers, leads, "fkg", "Flesch-Kincaid grade", [cfg.max_fkg])
        _plot(sdir / "plots" / "toxicity.png", answers, leads, "toxicity", "toxicity (max over labels)",
              [cfg.toxicity_threshold(cfg.max_toxicity)])
        _plot(sdir / "plots" / "length.png", answers, leads, "n_words", "length (words)", [cfg.min_answer_words, cfg.lead_max_words])
    reasons = Counter()
    for r in rejects:
        reasons[f"{r['stage']}/{str(r['reason']).split(':')[0]}"] += 1
    n_rm = sum(counts["rm"].values())
    empty = [f"{name}/{s}" for name, c in counts.items() for s, n in c.items() if n == 0]
    if empty:
        # datasets.load_dataset cannot read an empty JSONL file; say so instead of failing later
        log.warning("empty output files (datasets.load_dataset cannot read them): %s", ", ".join(empty))
    stats = {
        "datasets": counts,
        "funnel": funnel.rows(),
        "rejects_by_reason": dict(reasons.most_common()),
        "n_rejects": len(rejects),
        "empty_files": empty,
        "seconds": round(seconds, 2),
        "headline": {
            "sft_rows": sum(counts["sft"].values()),
            "rm_pairs": n_rm,
            "rl_prompts": sum(counts["rl"].values()),
            "wiki_leads": sum(counts["wiki"].values()),
            "rejects": len(rejects),
            "seconds": round(seconds, 2),
        },
        # rows per dataset and source (the report says how many SFT and RM rows each source gave)
        "by_source": {name: dict(Counter(r.get("source", "?") for s in SPLITS for r in splits.get(s, [])))
                      for name, splits in datasets_out.items()},
    }
    write_json(sdir / "stats.json", stats)
    return stats


def print_funnel(stats: dict) -> None:
    from simplesafe.commands.common import print_table

    print_table(stats["funnel"], title="Funnel (kept / rejected per step and split)")
    rows = [{"dataset": name, **{s: n for s, n in c.items()}, "total": sum(c.values())} for name, c in stats["datasets"].items()]
    print()
    print_table(rows, title="Datasets (rows per split)")


def build_datasets(cfg: DataBuildConfig, out_dir: str | Path, force: bool = False) -> dict:
    """Build everything into ``out_dir`` (a run stage: skipped when already done).

    Returns the headline counts (rows per dataset, rejects, seconds).
    """
    from simplesafe.data.filters import Funnel
    from simplesafe.runs import set_seed

    out_dir = Path(out_dir)
    inputs = [resolve_path(s.path) for s in cfg.sources]
    with stage(out_dir.parent, out_dir.name, cfg, inputs=inputs, seed=cfg.seed, force=force) as st:
        if st.skipped and (st.dir / "stats.json").exists():
            return json.loads((st.dir / "stats.json").read_text())["headline"]
        t0 = time.time()
        set_seed(cfg.seed)
        rng = random.Random(cfg.seed)
        rejects: list[dict] = []
        funnel = Funnel()
        questions = _load_questions(cfg, rejects, funnel)
        qa_out, answers = _build_qa(cfg, questions, rejects, funnel, rng)
        wiki_out, leads = _build_wiki(cfg, rejects, funnel, rng)
        datasets_out = {**qa_out, "wiki": wiki_out}
        stats = _write_outputs(st.dir, cfg, datasets_out, rejects, funnel, answers, leads, time.time() - t0)
        log.info("data build finished in %.1fs: %s", stats["seconds"], stats["headline"])
        return stats["headline"]
