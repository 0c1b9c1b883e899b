"""Sampling speed: transformers' ``generate`` vs simplesafe's decode loop, side by side, same model and prompts.

    .venv/bin/python bench/generate.py                       # embedded:smollm2, batches 16 and 64
    .venv/bin/python bench/generate.py --model PATH --batch 32 --new-tokens 128 --dtype float32

Both sample at temperature 0.7 with top-k 50 and top-p 0.9 (the evaluation's settings) and
are forced to write exactly ``--new-tokens`` tokens (EOS suppressed), so they do the same
amount of model work; the figure is new tokens per second. Prints the machine's load
average: on a shared machine the absolute numbers move, the ratio much less.
"""

from __future__ import annotations

import argparse
import os
import time

QUESTIONS = ["Why is the sky blue?", "How do airplanes stay in the air?", "Why do we need to sleep?",
             "What is inflation and why does it happen?", "How does a fridge keep food cold?",
             "Why do cats purr?", "What makes a rainbow?", "How do vaccines work?"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="embedded:smollm2")
    ap.add_argument("--batch", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--new-tokens", type=int, default=96)
    ap.add_argument("--dtype", default="auto")
    args = ap.parse_args()

    import torch

    from simplesafe.llm.sampling import SamplingParams, sample
    from simplesafe.models.load import inference_dtype, load_causal_lm, load_tokenizer

    dtype = inference_dtype(args.dtype, "cpu")
    tok = load_tokenizer(args.model, padding_side="left")
    model = load_causal_lm(args.model, dtype=dtype).eval()
    print(f"model {args.model}  dtype {dtype}  threads {torch.get_num_threads()}  new tokens {args.new_tokens}")
    print(f"{'batch':>5}  {'generate tok/s':>14}  {'simplesafe tok/s':>16}  {'ratio':>5}  load average")
    for bs in args.batch:
        prompts = [tok.apply_chat_template([{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}], tokenize=False,
                                           add_generation_prompt=True) for i in range(bs)]
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        n = bs * args.new_tokens
        with torch.no_grad():
            torch.manual_seed(0)
            t0 = time.time()
            model.generate(**enc, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=True,
                           temperature=0.7, top_k=50, top_p=0.9, pad_token_id=tok.pad_token_id)
            hf = n / (time.time() - t0)
            t0 = time.time()
            sample(model, enc["input_ids"], enc["attention_mask"],
                   SamplingParams(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, temperature=0.7,
                                  top_k=50, top_p=0.9), [tok.eos_token_id], tok.pad_token_id, seed=0)
            ours = n / (time.time() - t0)
        print(f"{bs:>5}  {hf:>14.1f}  {ours:>16.1f}  {ours / hf:>5.2f}  {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
