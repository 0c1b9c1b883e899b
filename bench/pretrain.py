"""Tokens/s of tiny-model pretraining: fp32 eager vs bf16 autocast vs bf16 + torch.compile.

    .venv/bin/python bench/pretrain.py [--steps 30] [--threads 2]

Same model (the default build-tiny size), same batches, measured one after another in
one run; prints tokens/s and the ratio against fp32 eager. Compile time is reported
separately and excluded from tokens/s.
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from simplesafe.models.tiny import TinyModelConfig


def make_model(cfg: TinyModelConfig) -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_seq_len, tie_word_embeddings=True))


def measure(mode: str, cfg: TinyModelConfig, steps: int) -> dict:
    model = make_model(cfg)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, cfg.vocab_size, (cfg.batch_size, cfg.max_seq_len), generator=g) for _ in range(steps + 2)]
    step_model = torch.compile(model) if mode == "bf16+compile" else model
    use_bf16 = mode != "fp32"

    def step(x):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
            loss = step_model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    t0 = time.perf_counter()
    step(batches[0])  # warm-up (includes compilation)
    step(batches[1])
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    for x in batches[2:]:
        step(x)
    dt = time.perf_counter() - t0
    return {"mode": mode, "tokens_per_s": steps * cfg.batch_size * cfg.max_seq_len / dt, "warmup_s": warm}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = TinyModelConfig()
    rows = []
    for mode in ("fp32", "bf16", "bf16+compile"):
        try:
            rows.append(measure(mode, cfg, args.steps))
        except Exception as exc:  # report, don't hide, a mode this machine cannot run
            rows.append({"mode": mode, "tokens_per_s": float("nan"), "warmup_s": float("nan"), "error": type(exc).__name__})
    base = rows[0]["tokens_per_s"]
    print(f"tiny Llama {cfg.hidden_size}d x {cfg.num_layers} layers, batch {cfg.batch_size} x {cfg.max_seq_len} tokens, "
          f"{torch.get_num_threads()} threads, {args.steps} timed steps")
    print(f"{'mode':<14}{'tokens/s':>12}{'vs fp32':>10}{'warm-up s':>11}")
    for r in rows:
        print(f"{r['mode']:<14}{r['tokens_per_s']:>12,.0f}{r['tokens_per_s'] / base:>9.2f}x{r['warmup_s']:>11.1f}"
              + (f"  ({r['error']})" if "error" in r else ""))


if __name__ == "__main__":
    main()
