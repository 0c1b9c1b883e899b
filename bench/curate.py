"""Curation throughput: batched pipeline vs a naive row-by-row loop, on real text, in one run.

Prints
1. QA pairs per second through clean + readability + toxicity
   (:func:`simplesafe.data.scoring.score_texts`, batched) and through a naive loop that
   cleans, scores readability and calls the toxicity scorer one answer at a time -- same
   answers (the HaluQuestQA/LFQA answers), same scorer.
2. Leakage removal (:func:`simplesafe.data.leakage.remove_cross_split_leakage`, embedding
   included): questions per second for ``--n-train`` train rows against ``--n-eval``
   validation + ``--n-eval`` test rows, and a naive loop (embed one row at a time, then
   one similarity row per train question) over the same first ``--naive-rows`` rows.
3. The nearest-neighbour search alone at the target size (20k x (2k + 2k), 384-d,
   exact numpy blocks and FAISS), timed on the real embeddings tiled to that size: the
   search costs the same for any vectors of that shape.
4. The projected time for the target "20k train vs 2k + 2k, embedding included", from the
   measured embedding rate and the measured search time (stated as a projection), and
   the precision/recall of the question/meta-post rule on its labelled sample.

Text: sentences of Simple/English Wikipedia leads (D-Wikipedia) and the LFQA questions.

    python bench/curate.py                    # ~2-4 minutes on 2 busy cores
    python bench/curate.py --n-train 20000 --n-eval 2000 --threads 2   # the full target
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def wiki_sentences(limit: int) -> list[str]:
    from simplesafe.paths import bundled_data_dir, shared_data_dir
    from simplesafe.text.detok import detokenize

    files = []
    shared = shared_data_dir()
    if shared is not None:
        files += sorted((shared / "d-wikipedia-simple-articles").glob("*"))
    files += [bundled_data_dir() / "simplewiki" / n for n in ("simple_articles.txt", "english_articles.txt")]
    seen, out = set(), []
    for f in files:
        if f.suffix == ".md" or not f.exists():
            continue
        for line in f.read_text(encoding="utf-8").splitlines():
            for sent in re.split(r"(?<=[.!?])\s+", detokenize(line)):
                if len(sent.split()) >= 5 and sent not in seen:
                    seen.add(sent)
                    out.append(sent)
                    if len(out) >= limit:
                        return out
    return out


def lfqa_rows():
    from simplesafe.data.sources.preferences import load_preference_pairs
    from simplesafe.paths import bundled_data_dir

    return list(load_preference_pairs(bundled_data_dir() / "eli5" / "lfqa_preferences.tsv"))


def bench_scoring(answers: list[str], backend: str | None, naive_rows: int, options: dict | None = None) -> dict:
    from simplesafe.data.scoring import _scorer, score_texts
    from simplesafe.text.clean import clean_answer
    from simplesafe.text.readability import readability

    scorer = _scorer(backend, options)
    scorer.score(["warm up"])
    readability("Warm up the syllable dictionary.")
    t0 = time.perf_counter()
    score_texts(answers, backend=backend, clean=True, toxicity_options=options)
    batched = time.perf_counter() - t0
    rows = answers[:naive_rows]
    t0 = time.perf_counter()
    for text in rows:
        c = clean_answer(text)
        readability(c.text)
        scorer.score([c.text])
    naive = time.perf_counter() - t0
    t0 = time.perf_counter()
    score_texts(rows, backend=backend, clean=True, toxicity_options=options)
    batched_same = time.perf_counter() - t0
    return {"backend": getattr(scorer, "name", backend), "rows": len(answers), "batched_per_s": len(answers) / batched,
            "naive_rows": len(rows), "naive_per_s": len(rows) / naive, "batched_same_rows_per_s": len(rows) / batched_same,
            "speedup": naive / batched_same}


def bench_stages(answers: list[str], scorers: dict) -> dict:
    """Seconds per 1,000 answers of each stage alone, one process: where curation time goes."""
    from simplesafe.text.clean import clean_answer
    from simplesafe.text.readability import readability

    out = {}
    t0 = time.perf_counter()
    cleaned = [clean_answer(a).text for a in answers]
    out["clean"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for c in cleaned:
        readability(c)
    out["readability"] = time.perf_counter() - t0
    for name, scorer in scorers.items():
        t0 = time.perf_counter()
        scorer.score(cleaned)
        out[name] = time.perf_counter() - t0
    return {k: 1000 * v / len(answers) for k, v in out.items()}


def bench_parallel(answers: list[str], n: int, num_proc: int, options: dict | None = None,
                   backend: str | None = None) -> dict:
    """clean + readability + toxicity with ``num_proc`` worker processes on ``n`` answers (the real ones, cycled).

    textstat caches only its last 128 texts, so cycling 1,396 answers gives no cache hit a
    real corpus would not give. Worker start-up (each loads its scorer) is included.
    """
    from simplesafe.data.scoring import score_texts

    texts = (answers * (n // len(answers) + 1))[:n]
    t0 = time.perf_counter()
    out = score_texts(texts, backend=backend, clean=True, num_proc=num_proc, parallel_min_rows=1, batch_size=512,
                      toxicity_options=options)
    dt = time.perf_counter() - t0
    return {"rows": n, "num_proc": num_proc, "seconds": dt, "per_s": n / dt, "flagged": float(np.mean(np.asarray(out["toxicity"]) > 0.1))}


def bench_leakage(train: list[str], val: list[str], test: list[str], encoder: str, naive_rows: int) -> dict:
    from simplesafe.data.leakage import remove_cross_split_leakage
    from simplesafe.models.load import load_sentence_encoder
    from simplesafe.text.similarity import embed_texts

    model = load_sentence_encoder(encoder)
    model.encode(["warm up"])
    ids = {"train": list(range(len(train))), "validation": list(range(len(val))), "test": list(range(len(test)))}
    t0, c0 = time.perf_counter(), time.process_time()
    keep, removed = remove_cross_split_leakage({"train": train, "validation": val, "test": test}, ids, encoder=encoder)
    full, cpu = time.perf_counter() - t0, time.process_time() - c0
    n_all = len(train) + len(val) + len(test)

    # naive: one row at a time, on the first naive_rows train rows against the same eval rows
    sub_train = train[:naive_rows]
    t0 = time.perf_counter()
    eval_vecs = [embed_texts([t], encoder=encoder)[0] for t in val + test]
    n_removed_naive = 0
    for t in sub_train:
        v = embed_texts([t], encoder=encoder)[0]
        best = max(float(v @ e) for e in eval_vecs)
        n_removed_naive += best >= 0.6
    naive = time.perf_counter() - t0
    t0 = time.perf_counter()
    remove_cross_split_leakage({"train": sub_train, "validation": val, "test": test},
                               {"train": list(range(len(sub_train))), "validation": ids["validation"], "test": ids["test"]},
                               encoder=encoder)
    batched_same = time.perf_counter() - t0
    n_same = len(sub_train) + len(val) + len(test)
    return {"n_train": len(train), "n_eval": len(val) + len(test), "seconds": full, "questions_per_s": n_all / full,
            "cpu_seconds": cpu, "questions_per_cpu_s": n_all / cpu,
            "removed": len(removed), "naive_rows": n_same, "naive_per_s": n_same / naive,
            "batched_same_rows_per_s": n_same / batched_same, "speedup": naive / batched_same}


def bench_search(vecs: np.ndarray, n_train: int, n_eval: int) -> dict:
    from simplesafe.text.similarity import max_cosine, normalize_rows

    rng = np.random.default_rng(0)
    reps = int(np.ceil((n_train + n_eval) / len(vecs)))
    big = np.tile(vecs, (reps, 1))[: n_train + n_eval] + rng.normal(scale=0.01, size=(n_train + n_eval, vecs.shape[1])).astype(np.float32)
    big = normalize_rows(big)
    q, c = big[:n_train], big[n_train:]
    out = {}
    for method in ("exact", "faiss"):
        t0 = time.perf_counter()
        max_cosine(q, c, method=method)
        out[method] = time.perf_counter() - t0
    # linear growth: half the queries should take about half the time
    t0 = time.perf_counter()
    max_cosine(q[: n_train // 2], c, method="faiss")
    out["faiss_half"] = time.perf_counter() - t0
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--n-eval", type=int, default=200, help="rows in validation and in test each")
    ap.add_argument("--naive-rows", type=int, default=200)
    ap.add_argument("--qa-rows", type=int, default=1396, help="LFQA answers to score (698 questions x 2)")
    ap.add_argument("--backend", default=None, help="toxicity backend (default: the library default)")
    ap.add_argument("--encoder", default="embedded:minilm")
    ap.add_argument("--threads", type=int, default=2, help="torch/BLAS threads")
    ap.add_argument("--target-train", type=int, default=20000)
    ap.add_argument("--target-eval", type=int, default=2000)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    ap.add_argument("--artifact", default=None, help="hate-classifier folder of the new scorer (default: cache, else shipped)")
    ap.add_argument("--old-artifact", default=None, help="version-1 artifact folder (default: from git history)")
    ap.add_argument("--parallel-rows", type=int, default=20000, help="answers (cycled) for the 2-process figure")
    ap.add_argument("--num-proc", type=int, default=2, help="worker processes for the parallel figure")
    ap.add_argument("--scoring-only", action="store_true", help="only section [1] (curation scoring)")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    try:
        import faiss

        faiss.omp_set_num_threads(args.threads)
    except ImportError:
        pass
    print(f"cpu cores visible: {os.cpu_count()}, threads used: {args.threads}, load average: {os.getloadavg()}")

    results = {}
    qs = lfqa_rows()
    answers = [a.text for q in qs for a in q.answers][: args.qa_rows]
    from v1_scorer import V1_OPTIONS, v1_artifact

    from simplesafe.text.readability import flesch_kincaid_grade, flesch_reading_ease
    from simplesafe.text.toxicity import DEFAULT_BACKEND, get_toxicity_scorer

    backend = args.backend or DEFAULT_BACKEND
    model_backend = backend in ("ensemble", "hate-classifier")
    new_opts = {"artifact": args.artifact} if model_backend and args.artifact else {}
    old_opts = {"artifact": str(v1_artifact(args.old_artifact)), **V1_OPTIONS} if model_backend else {}
    print(f"\n[1] clean + readability + toxicity ({backend}) on {len(answers)} LFQA answers "
          f"(mean {np.mean([len(a.split()) for a in answers]):.0f} words); old = version 1 "
          f"(first 128 tokens, PyTorch, no cascade), new = the default scorer")
    scorers = {"profanity-check": get_toxicity_scorer("profanity-check")}
    if model_backend:
        scorers["hate old"] = get_toxicity_scorer("hate-classifier", **old_opts)
        scorers["hate new"] = get_toxicity_scorer("hate-classifier", **new_opts)
    for sc in scorers.values():
        sc.score(["warm up", "a second warm-up text"])
    stages = bench_stages(answers, scorers)
    from simplesafe.text.clean import clean_answer

    cleaned = [clean_answer(a).text for a in answers]
    t0 = time.perf_counter()
    for c in cleaned:
        if c.strip():
            flesch_reading_ease(c), flesch_kincaid_grade(c)
    stages["readability via textstat calls (before)"] = 1000 * (time.perf_counter() - t0) / len(answers)
    results["stages_ms_per_1000"] = stages
    print(f"    seconds per 1,000 answers, each stage alone, one process (load average {os.getloadavg()[0]:.1f}):")
    for k, v in stages.items():
        print(f"      {k:<42} {v:8.2f} s   ({1000 / v:9.1f} answers/s)")
    if model_backend:
        st = scorers["hate new"].classifier.last_stats
        print(f"      new scorer: {st['parts']} parts for {st['texts']} answers, {st['by_encoder']} "
              f"({st['by_encoder'] / max(st['parts'], 1):.1%}) went through the encoder")

    r_old = bench_scoring(answers, backend, args.naive_rows, old_opts)
    r = bench_scoring(answers, backend, args.naive_rows, new_opts)
    results["scoring"], results["scoring_old"] = r, r_old
    print(f"    one process: old {r_old['batched_per_s']:.1f} QA pairs/s, new {r['batched_per_s']:.1f} QA pairs/s "
          f"-> {r['batched_per_s'] / r_old['batched_per_s']:.1f}x")
    print(f"    naive row-by-row on the first {r['naive_rows']} (new scorer): {r['naive_per_s']:.1f}/s vs batched "
          f"{r['batched_same_rows_per_s']:.1f}/s on the same rows -> {r['speedup']:.2f}x")
    if args.num_proc > 1:
        p_old = bench_parallel(answers, len(answers), args.num_proc, old_opts, backend)
        p_same = bench_parallel(answers, len(answers), args.num_proc, new_opts, backend)
        p_new = bench_parallel(answers, args.parallel_rows, args.num_proc, new_opts, backend)
        results["parallel"] = {"old": p_old, "new_same_rows": p_same, "new": p_new}
        print(f"    {args.num_proc} processes, worker start-up included (load average {os.getloadavg()[0]:.1f}):")
        print(f"      old on {p_old['rows']} answers: {p_old['per_s']:.1f} QA pairs/s; new on the same: "
              f"{p_same['per_s']:.1f}/s -> {p_same['per_s'] / p_old['per_s']:.1f}x")
        print(f"      new on {p_new['rows']} answers (the {len(answers)} cycled): {p_new['per_s']:.1f} QA pairs/s "
              f"({p_new['seconds']:.1f} s; {p_new['flagged']:.1%} flagged at 0.1)")
    if args.scoring_only:
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
        return

    sents = wiki_sentences(args.n_train + 2 * args.n_eval)
    questions = [q.title for q in qs]
    # eval splits: LFQA questions and wiki sentences; train: wiki sentences (some near-duplicates across files)
    pool = questions + sents
    val, test = pool[: args.n_eval], pool[args.n_eval: 2 * args.n_eval]
    train = pool[2 * args.n_eval: 2 * args.n_eval + args.n_train]
    r = bench_leakage(train, val, test, args.encoder, args.naive_rows)
    results["leakage"] = r
    print(f"\n[2] leakage removal, embedding included: {r['n_train']} train vs {r['n_eval']} validation+test")
    print(f"    {r['seconds']:.1f}s = {r['questions_per_s']:.1f} questions/s ({r['removed']} removed at cosine >= 0.6); "
          f"{r['cpu_seconds']:.1f} CPU-s = {r['questions_per_cpu_s']:.1f} questions per CPU-second")
    print(f"    naive row-by-row on {r['naive_rows']} rows: {r['naive_per_s']:.1f}/s vs batched {r['batched_same_rows_per_s']:.1f}/s"
          f" on the same rows -> {r['speedup']:.2f}x")

    from simplesafe.text.similarity import embed_texts

    vecs = embed_texts(pool[: min(len(pool), 1000)], encoder=args.encoder)
    s = bench_search(vecs, args.target_train, 2 * args.target_eval)
    results["search"] = s
    print(f"\n[3] search only, {args.target_train} x {2 * args.target_eval} x {vecs.shape[1]}-d: exact numpy {s['exact']:.2f}s, "
          f"FAISS {s['faiss']:.2f}s (half the queries: {s['faiss_half']:.2f}s)")

    embed_rate = r["questions_per_s"]  # embedding dominates the measured leakage time
    n_target = args.target_train + 2 * args.target_eval
    projected = n_target / embed_rate + min(s["exact"], s["faiss"])
    results["projected_target_s"] = projected
    idle = n_target / (r["questions_per_cpu_s"] * args.threads) + min(s["exact"], s["faiss"])
    results["projected_idle_target_s"] = idle
    print(f"\n[4] target {args.target_train} vs {args.target_eval}+{args.target_eval} (target < 120 s):"
          f"\n    at the measured wall rate: {projected:.0f}s ({n_target} texts at {embed_rate:.1f}/s + search; load average"
          f" {os.getloadavg()[0]:.1f})"
          f"\n    if {args.threads} cores were idle (measured CPU-seconds per question / {args.threads} + search): {idle:.0f}s"
          f" -- a projection, not a measurement")

    sys.path.insert(0, str(REPO / "tests" / "data"))
    from test_filters import question_rule_precision_recall

    m = question_rule_precision_recall()
    results["question_rule"] = m
    print(f"\n[5] question/meta-post rule on {m['n']} labelled titles: question precision {m['question_precision']:.3f}, "
          f"recall {m['question_recall']:.3f}; reject precision {m['reject_precision']:.3f}, recall {m['reject_recall']:.3f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
