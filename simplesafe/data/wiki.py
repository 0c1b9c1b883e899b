"""Simple Wikipedia leads: articles -> filtered leads split into train/validation/test (report step 6).

Leads are paragraphs joined until they reach ``lead_min_words``; articles with wiki
markup or too few words, and leads that are too long or not simple (FRE/FKG), are
rejected with their reason. A source with aligned ordinary-English texts (Wiki-Auto)
keeps them as ``contrast``, from which the synth stage builds simplicity preference pairs.
"""

from __future__ import annotations

from simplesafe.data.config import SPLITS, resolve_path, unit_hash


def build_lead(paragraphs: list[str], min_words: int) -> str:
    """Concatenate paragraphs until the text has at least ``min_words`` words (or the end)."""
    out, n = [], 0
    for p in paragraphs:
        out.append(p)
        n += len(p.split())
        if n >= min_words:
            break
    return "\n\n".join(out)


def build_wiki(cfg, rejects, funnel, rng) -> tuple[dict, list[dict]]:
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
