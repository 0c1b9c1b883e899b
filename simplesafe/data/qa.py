"""Question-answer curation: load, clean, de-leak, score and route every question to SFT, RM or RL.

The report's section 2.2 for ELI5-style data (steps 1-5 of :mod:`simplesafe.data.build`):
questions are cleaned and filtered, cross-split leakage is removed, answers are cleaned
and scored (the toxicity model only where it can change the outcome), and
:func:`simplesafe.data.split.route_question` sends each question to exactly one dataset.
Preference-pair questions also give ``pairs/`` rows (raw preferred vs rejected answers).
"""

from __future__ import annotations

from collections import Counter

from simplesafe.data.config import SPLITS, DataBuildConfig, assign_split, resolve_path, unit_hash


def load_questions(cfg: DataBuildConfig, rejects: list, funnel) -> list:
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


def build_qa(cfg, questions, rejects, funnel, rng) -> tuple[dict, list[dict]]:
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
