"""Evaluation benchmark: pairwise annotation throughput, bootstrap cost, report rendering,
and the eval stage's wall time on a tiny model at demo size.

Prints figures measured side by side in one run on this machine; asserts nothing.

    python bench/eval.py                       # pools, bootstrap, report (about a minute on 2 cores)
    python bench/eval.py --model DIR           # also run_eval with DIR as base and sft (demo-sized)
    python bench/eval.py --model build-micro   # build a micro Llama first (as the tests do)
    python bench/eval.py --toxicity-backend profanity-check   # the light scorer instead of the package default

Texts are real: answer A is a Simple Wikipedia lead, answer B the aligned English
Wikipedia lead (data/simplewiki), so the offline pool should prefer A on most items.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def aligned_pairs(n: int) -> tuple[list[dict], list[dict]]:
    from simplesafe.text.detok import detokenize  # PTB-tokenised lines read better detokenised

    simple = (REPO / "data/simplewiki/simple_aligned.txt").read_text(encoding="utf-8").splitlines()[:n]
    english = (REPO / "data/simplewiki/english_articles.txt").read_text(encoding="utf-8").splitlines()[:n]
    a, b = [], []
    for i, (s, e) in enumerate(zip(simple, english)):
        q = f"Tell me about topic {i}."
        a.append({"instruction": q, "output": detokenize(" ".join(s.split()[:120])), "generator": "simple_wiki"})
        b.append({"instruction": q, "output": detokenize(" ".join(e.split()[:120])), "generator": "english_wiki"})
    return a, b


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--model", default=None, help="causal LM folder for the run_eval timing, or 'build-micro'")
    ap.add_argument("--prompts", type=int, default=20)
    ap.add_argument("--toxicity-backend", default=None,
                    help="make this the package default toxicity backend for the run (e.g. profanity-check)")
    args = ap.parse_args()
    if args.toxicity_backend:
        import simplesafe.text.toxicity as toxicity

        toxicity.DEFAULT_BACKEND = args.toxicity_backend
        print(f"toxicity backend: {args.toxicity_backend} (set by --toxicity-backend)")

    from simplesafe.eval.pairwise import bootstrap_ci, run_pairwise
    from simplesafe.report.html import render_report

    tmp = Path(tempfile.mkdtemp(prefix="bench-eval-"))
    a, b = aligned_pairs(args.items)
    (tmp / "a.json").write_text(json.dumps(a))
    (tmp / "b.json").write_text(json.dumps(b))
    print(f"pairwise on {len(a)} Simple-vs-English Wikipedia leads")
    print(f"{'pool':<10} {'seconds':>8} {'items/s':>8} {'win_rate(simple)':>17} {'ci':>16} {'length_bias':>12}")
    for pool in ("length", "offline"):
        s, sec = timed(lambda: run_pairwise(tmp / "a.json", tmp / "b.json", pool, tmp / pool, n_boot=2000))
        print(f"{pool:<10} {sec:8.2f} {len(a) / sec:8.1f} {s['win_rate']:17.3f} "
              f"{'[%.3f, %.3f]' % (s['ci_low'], s['ci_high']):>16} {s['length_bias']!s:>12}")
    import numpy as np

    for n in (805, 5000):
        x = (np.random.default_rng(0).random(n) < 0.6).astype(float)
        _, sec = timed(lambda: bootstrap_ci(x, n_boot=2000))
        print(f"bootstrap 2000 resamples of n={n}: {sec * 1000:.0f} ms")

    run = tmp / "run"
    (run / "eval" / "pairwise").mkdir(parents=True)
    for pool in ("length", "offline"):
        (tmp / pool).rename(run / "eval" / "pairwise" / f"simple_vs_english_{pool}")
    out, sec = timed(lambda: render_report(run))
    print(f"report render (2 pairwise summaries): {sec:.2f} s, {out.stat().st_size / 1024:.0f} KiB")

    if args.model:
        from simplesafe.eval.run import EvalConfig, run_eval

        model = args.model
        if model == "build-micro":
            from simplesafe.models.tiny import TinyModelConfig, build_tiny_model

            model = str(tmp / "micro")
            _, sec = timed(lambda: build_tiny_model(TinyModelConfig(
                out=model, vocab_size=512, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=2,
                max_seq_len=128, batch_size=8, max_steps=120, max_corpus_chars=400_000, compile="off",
                precision="fp32", lr=3e-3, warmup_steps=10), progress=False))
            print(f"micro model built in {sec:.1f} s")
        prompts = tmp / "prompts.jsonl"
        with open(prompts, "w") as fh:
            for i, row in enumerate(a[: args.prompts]):
                fh.write(json.dumps({"id": f"q{i}", "prompt": f"What is {row['output'].split(' ')[0]}?",
                                     "reference": row["output"]}) + "\n")
        cfg = EvalConfig(max_new_tokens=48, batch_size=8, n_boot=1000)
        _, sec = timed(lambda: run_eval(cfg, tmp / "run2", {"base": model, "sft": model}, prompts))
        print(f"run_eval: 2 models x {args.prompts} prompts x 3 seeds, 48 new tokens, offline pool: {sec:.1f} s")
    print(f"outputs kept under {tmp}")


if __name__ == "__main__":
    main()
