"""Benchmarks for the synthetic-data stage; prints figures measured side by side in one run.

1. ``hf`` backend: generations per second, batched (left padding + KV cache) vs one
   prompt at a time, on a tiny Llama (built here with small settings unless --model is
   given), greedy decoding, cache off; also checks both give the same texts.
2. Self-Instruct novelty filter (ROUGE-L >= 0.7 against the pool): the index of
   :mod:`simplesafe.synth.novelty` vs brute force at 10k instructions made by
   recombining the 175 seed tasks. Brute force uses the same pre-tokenised rouge-score
   LCS (a stronger baseline than calling ``RougeScorer.score`` per pair). It is run in
   full on the first ``--brute-n`` instructions (decisions compared one by one); at the
   full size it is timed on ``--sample`` random queries against the exact pool each one
   met, its decisions compared with the index's, and its total time extrapolated
   (printed as such).

    python bench/synth.py                      # all, ~2-4 minutes on 2 free cores
    python bench/synth.py --skip-hf --n 10000 --brute-n 3000
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from simplesafe.synth.novelty import NoveltyIndex, rouge_l, rouge_tokens  # noqa: E402

MICRO = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=2, max_seq_len=128,
             batch_size=8, max_steps=60, max_corpus_chars=200_000, compile="off", precision="fp32", lr=3e-3,
             warmup_steps=10)


def bench_hf(model: str | None, n_prompts: int, max_new_tokens: int, batch_size: int) -> None:
    from simplesafe.llm.base import GenParams
    from simplesafe.llm.hf import HFBackend

    if model is None:
        from simplesafe.models.tiny import TinyModelConfig, build_tiny_model

        model = str(Path(tempfile.mkdtemp()) / "tiny")
        t = time.time()
        build_tiny_model(TinyModelConfig(out=model, **MICRO), progress=False)
        print(f"built micro Llama in {time.time() - t:.1f}s at {model}")
    seeds = [json.loads(l)["instruction"] for l in (REPO / "data/self-instruct/seed_tasks.jsonl").open()]
    prompts = [[{"role": "user", "content": s}] for s in seeds[:n_prompts]]
    params = GenParams(max_new_tokens=max_new_tokens, temperature=0.0)
    backend = HFBackend(model, batch_size=batch_size)  # no cache: every call generates
    backend.generate(prompts[:2], params)  # warm-up
    rows = []
    outs = {}
    for bs in (batch_size, 1):
        backend.batch_size = bs
        t = time.perf_counter()
        outs[bs] = backend.generate(prompts, params)
        dt = time.perf_counter() - t
        rows.append((bs, dt, len(prompts) / dt))
    same = sum(str(a) == str(b) for a, b in zip(outs[batch_size], outs[1]))
    print(f"\n== hf backend: {len(prompts)} chat prompts, max_new_tokens={max_new_tokens}, greedy, model {model}")
    for bs, dt, rate in rows:
        print(f"batch_size={bs:<3d}  {dt:7.2f}s  {rate:7.2f} generations/s")
    print(f"speed-up batched / one-at-a-time: {rows[0][2] / rows[1][2]:.2f}x;  identical texts: {same}/{len(prompts)}")


def make_instructions(n: int, seed: int = 0) -> list[str]:
    """Realistic instruction variants: seed tasks recombined, paraphrased and lightly edited."""
    rng = random.Random(seed)
    seeds = [json.loads(l)["instruction"] for l in (REPO / "data/self-instruct/seed_tasks.jsonl").open()]
    vocab = sorted({w.strip(".,?!:;\"'()").lower() for s in seeds for w in s.split() if len(w) > 3})
    openers = ["", "Please ", "Can you ", "Try to ", "Briefly, ", "In simple words, ", "For a child, "]
    topics = ["the ocean", "a small town", "climate change", "a birthday party", "the stock market", "a new phone",
              "healthy food", "the solar system", "a job interview", "ancient Rome", "a rainy day", "a football match"]
    out = []
    for i in range(n):
        a, b = rng.sample(seeds, 2)
        kind = rng.random()
        if kind < 0.35:  # splice two tasks
            wa, wb = a.split(), b.split()
            text = " ".join(wa[: max(2, len(wa) // 2)] + wb[len(wb) // 2:])
        elif kind < 0.6:  # retarget a task to a new topic
            words = a.split()
            j = rng.randrange(len(words))
            text = " ".join(words[:j] + [rng.choice(topics)] + words[j + 1:])
        elif kind < 0.85:  # small edits (near duplicates of a seed)
            words = a.split()
            for _ in range(rng.randint(1, 3)):
                j = rng.randrange(len(words))
                words[j] = rng.choice(vocab)
            text = " ".join(words)
        else:  # a fresh task from the vocabulary
            text = f"{rng.choice(['Explain', 'Describe', 'List', 'Compare', 'Summarize'])} " + " ".join(
                rng.sample(vocab, rng.randint(4, 12)))
        out.append((rng.choice(openers) + text).strip())
    return out


def bench_novelty(n: int, brute_n: int, sample: int, threshold: float = 0.7) -> None:
    seeds = [json.loads(l)["instruction"] for l in (REPO / "data/self-instruct/seed_tasks.jsonl").open()]
    texts = make_instructions(n)
    # indexed, incremental (as Self-Instruct uses it)
    t = time.perf_counter()
    index = NoveltyIndex(threshold, seeds)
    decisions = [index.add_if_novel(x).novel for x in texts]
    t_index = time.perf_counter() - t
    kept = sum(decisions)
    # brute force in full on the first brute_n
    toks = [rouge_tokens(x) for x in texts]
    seed_toks = [rouge_tokens(x) for x in seeds]

    def brute(limit):
        pool = list(seed_toks)
        out = []
        for q in toks[:limit]:
            novel = all(rouge_l(p, q) < threshold for p in pool)
            out.append(novel)
            if novel:
                pool.append(q)
        return out

    t = time.perf_counter()
    small = brute(brute_n)
    t_brute_small = time.perf_counter() - t
    t = time.perf_counter()
    small_index = NoveltyIndex(threshold, seeds)
    small_dec = [small_index.add_if_novel(x).novel for x in texts[:brute_n]]
    t_index_small = time.perf_counter() - t
    # brute force at full size, on sampled queries against the pool each met
    rng = random.Random(1)
    picks = sorted(rng.sample(range(n), min(sample, n)))
    kept_upto = [0] * (n + 1)
    for i, d in enumerate(decisions):
        kept_upto[i + 1] = kept_upto[i] + d
    kept_toks = [toks[i] for i, d in enumerate(decisions) if d]
    per_query, agree = [], 0
    for i in picks:
        pool = seed_toks + kept_toks[: kept_upto[i]]
        t = time.perf_counter()
        novel = all(rouge_l(p, toks[i]) < threshold for p in pool)
        per_query.append(time.perf_counter() - t)
        agree += novel == decisions[i]
    # the sample is uniform over positions, so its mean per-query cost estimates the mean over all n
    est_brute_full = statistics.mean(per_query) * n
    print(f"\n== novelty filter (ROUGE-L >= {threshold}), {n} generated instructions + {len(seeds)} seed tasks")
    print(f"index, all {n}:                 {t_index:8.2f}s  kept {kept}, exact LCS computed {index.exact_checks:,} "
          f"(brute force would compute ~{sum(len(seeds) + kept_upto[i] for i in range(n)):,})")
    print(f"full comparison, first {brute_n}:   index {t_index_small:.2f}s vs brute force {t_brute_small:.2f}s "
          f"-> {t_brute_small / t_index_small:.1f}x; identical decisions: {small == small_dec} "
          f"({sum(a == b for a, b in zip(small, small_dec))}/{brute_n})")
    print(f"at {n}: brute force timed on {len(picks)} sampled queries (their real pools): "
          f"{sum(per_query):.2f}s, decisions agree {agree}/{len(picks)}; extrapolated brute-force total "
          f"{est_brute_full:.0f}s vs index {t_index:.2f}s measured -> ~{est_brute_full / t_index:.0f}x (extrapolated)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="HF model folder (default: build a micro Llama)")
    ap.add_argument("--hf-prompts", type=int, default=48)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--brute-n", type=int, default=2_000)
    ap.add_argument("--sample", type=int, default=200)
    ap.add_argument("--skip-hf", action="store_true")
    ap.add_argument("--skip-novelty", action="store_true")
    args = ap.parse_args()
    if not args.skip_hf:
        bench_hf(args.model, args.hf_prompts, args.max_new_tokens, args.batch_size)
    if not args.skip_novelty:
        bench_novelty(args.n, args.brute_n, args.sample)


if __name__ == "__main__":
    main()
