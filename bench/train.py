"""Training throughput: tokens per second of SFT and DPO (full fine-tuning and LoRA) in one run.

    python bench/train.py                          # the embedded tiny model (simplesafe models build-tiny)
    python bench/train.py --model /path/to/model --steps 20 --batch-size 8

Rows are the bundled ELI5 preference data (questions with a preferred and a rejected
answer): SFT trains on (question, preferred answer), DPO on the pairs. Each
configuration trains ``--steps`` optimiser steps after one warm-up step, and throughput is
the number of tokens passed through the model (padding excluded; both answers of a DPO
pair count) divided by the trainer's own ``train_runtime``. Figures are printed side by
side with their ratio to full fine-tuning; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def _rows(n: int) -> list[dict]:
    from simplesafe.io import read_rows
    from simplesafe.paths import bundled_data_dir

    out = []
    for _, r in read_rows(bundled_data_dir() / "eli5" / "lfqa_preferences.tsv"):
        out.append({"prompt": r["question_text"], "completion": r["preferred_response"],
                    "chosen": r["preferred_response"], "rejected": r["rejected_response"]})
        if len(out) >= n:
            break
    return out


def bench_sft(model: str, rows: list[dict], method: str, steps: int, batch: int, max_length: int, tmp: Path) -> dict:
    from simplesafe.train.sft import SFTStageConfig, train_sft

    cfg = SFTStageConfig(method=method, max_steps=steps, batch_size=batch, grad_accum=1, lr=1e-4,
                         max_length=max_length, lora={"r": 16, "alpha": 32, "dropout": 0.0}, merge=False)
    n_rows = steps * batch
    t0 = time.time()
    m = train_sft(model, rows[:n_rows], [], tmp / f"sft-{method}", cfg, progress=False)
    wall = time.time() - t0
    # every row is seen once in `steps` steps: the whole tokenised set is the work done
    return {"stage": "sft", "method": method, "steps": m["steps"], "tokens": m["train_tokens"],
            "train_s": m["train_tokens"] / m["train_tokens_per_second"], "wall_s": wall}


def bench_dpo(model: str, rows: list[dict], method: str, steps: int, batch: int, max_length: int, tmp: Path) -> dict:
    from simplesafe.models.load import load_tokenizer
    from simplesafe.train.common import format_prompt
    from simplesafe.train.dpo import DPOStageConfig, train_dpo

    cfg = DPOStageConfig(model=model, method=method, max_steps=steps, batch_size=batch, grad_accum=1, lr=1e-5,
                         max_length=max_length, lora={"r": 16, "alpha": 32, "dropout": 0.0}, merge=False,
                         warmup_ratio=0.0)
    pairs = rows[: steps * batch]
    tok = load_tokenizer(model)
    tokens = 0
    for r in pairs:
        p = len(tok(format_prompt(r["prompt"], cfg.template, tok))["input_ids"])
        for a in (r["chosen"], r["rejected"]):
            tokens += min(p + len(tok(" " + a)["input_ids"]) + 1, max_length)
    t0 = time.time()
    m = train_dpo(cfg, pairs, [], tmp / f"dpo-{method}", progress=False)
    wall = time.time() - t0
    return {"stage": "dpo", "method": method, "steps": m["steps"], "tokens": tokens, "train_s": m["train_runtime"],
            "wall_s": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded:tiny")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--methods", default="full,lora")
    args = ap.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import logging

    import torch

    logging.disable(logging.WARNING)
    from simplesafe.models.embedded import resolve

    model = resolve(args.model)
    rows = _rows(args.steps * args.batch_size)
    results = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for method in args.methods.split(","):
            for fn in (bench_sft, bench_dpo):
                r = fn(model, rows, method, args.steps, args.batch_size, args.max_length, tmp)
                r["tokens_per_s"] = r["tokens"] / r["train_s"]
                results.append(r)
    print(f"\nmodel {model}  threads {torch.get_num_threads()}  steps {args.steps}  batch {args.batch_size}  "
          f"max_length {args.max_length}")
    print(f"{'stage':6} {'method':6} {'steps':>5} {'tokens':>8} {'train_s':>8} {'tokens/s':>9} {'vs full':>8}")
    full = {r["stage"]: r["tokens_per_s"] for r in results if r["method"] == "full"}
    for r in results:
        ratio = r["tokens_per_s"] / full[r["stage"]] if r["stage"] in full else float("nan")
        print(f"{r['stage']:6} {r['method']:6} {r['steps']:5d} {r['tokens']:8d} {r['train_s']:8.2f} "
              f"{r['tokens_per_s']:9.0f} {ratio:8.2f}")
    sft_full, dpo_full = full.get("sft"), full.get("dpo")
    if sft_full and dpo_full:
        print(f"DPO / SFT tokens/s (full): {dpo_full / sft_full:.2f}  (DPO also runs the reference model)")


if __name__ == "__main__":
    main()
