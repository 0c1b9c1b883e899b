"""Peak memory of PPO: ``memory_mode=shared`` vs ``separate`` on the same model, in one run.

    python bench/ppo_memory.py                       # ~27M-parameter random Llama, 2 PPO steps per mode
    python bench/ppo_memory.py --hidden 768 --layers 12 --steps 2

Both modes run the real loop (:func:`simplesafe.train.ppo.train_ppo`) in their own fresh
subprocess, one after the other, on the same randomly initialised Llama (built from a
``LlamaConfig`` so that weights dominate the memory) and with the same composite reward,
which includes a learned reward model (a sequence classifier of the same size): so
``separate`` holds the textbook four models (policy, reference, value model, reward
model) and ``shared`` holds one frozen base with LoRA adapters and a value head, plus the
same reward model.

What is measured, per mode:

- ``peak_rss``: the child process's peak resident set size (``ru_maxrss``), which
  includes the Python interpreter, torch and transformers themselves;
- ``peak_rss_over_baseline``: that peak minus the child's peak after importing the
  libraries and before loading any model: the memory the PPO run added;
- ``state_bytes``: counted, not measured: bytes of all parameters held, plus gradients
  and AdamW's two moments of the trainable ones;
- on a GPU, ``cuda_peak``: ``torch.cuda.max_memory_allocated``.

The headline is the ratio shared / separate of each (target: <= 0.5).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def build_model(folder: Path, hidden: int, layers: int, vocab: int) -> int:
    """A random Llama (+ a BPE tokenizer on the bundled text) and a same-size reward model; returns parameters."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    from simplesafe.models.tiny import default_corpus, read_corpus, train_tokenizer

    torch.manual_seed(0)
    tok = train_tokenizer(read_corpus(default_corpus(), max_chars=300_000), vocab)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=int(hidden * 2.6875),
                      num_hidden_layers=layers, num_attention_heads=max(1, hidden // 64),
                      num_key_value_heads=max(1, hidden // 64), max_position_embeddings=512, tie_word_embeddings=True,
                      bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(folder / "policy")
    tok.save_pretrained(folder / "policy")
    rm_cfg = LlamaConfig(**cfg.to_dict())
    rm_cfg.num_labels = 1  # the setter also resets id2label
    rm = LlamaForSequenceClassification(rm_cfg)
    rm.save_pretrained(folder / "rm")
    tok.save_pretrained(folder / "rm")
    rl = folder / "rl"
    rl.mkdir()
    qs = ["Why is the sky blue?", "How do birds fly?", "What is a volcano?", "Why do we sleep?"]
    (rl / "train.jsonl").write_text("".join(json.dumps({"id": str(i), "prompt": q}) + "\n" for i, q in enumerate(qs)))
    return sum(p.numel() for p in model.parameters())


def child(mode: str, folder: Path, steps: int, out: Path) -> None:
    """One PPO run in this (fresh) process; prints peak memory as JSON."""
    import torch  # noqa: F401  (imported before the baseline is taken)
    import transformers  # noqa: F401

    from simplesafe.train.ppo import train_ppo
    from simplesafe.train.ppo_config import PPOStageConfig
    from simplesafe.train.ppo_models import PPOModels

    baseline_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cfg = PPOStageConfig(policy=str(folder / "policy"), data=[str(folder / "rl")], memory_mode=mode, steps=steps,
                         batch_size=4, mini_batch_size=2, ppo_epochs=1, max_new_tokens=16, lr=1e-5,
                         rewards=[{"kind": "rm", "path": str(folder / "rm"), "name": "rm"}],
                         lora={"r": 16, "alpha": 32, "dropout": 0.0})
    t0 = time.time()
    train_ppo(cfg, out, progress=False)
    seconds = time.time() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = {"mode": mode, "peak_rss": peak_kb * 1024, "baseline_rss": baseline_kb * 1024,
              "peak_rss_over_baseline": (peak_kb - baseline_kb) * 1024, "seconds": round(seconds, 1),
              "state_bytes": state_bytes(PPOModels, cfg)}
    if torch.cuda.is_available():
        result["cuda_peak"] = torch.cuda.max_memory_allocated()
    print("RESULT " + json.dumps(result))


def state_bytes(models_cls, cfg) -> int:
    """Parameters held (all models, reward model included) + grads and 2 AdamW moments of trainable ones."""
    import torch

    from simplesafe.models.load import load_sequence_classifier

    models = models_cls(cfg, "float32", torch.device("cpu"))
    held = [models.trainable]
    if models.reference is not None:
        held.append(models.reference)
    total = sum(p.numel() * p.element_size() for m in held for p in m.parameters())
    trainable = sum(p.numel() * p.element_size() for p in models.parameters())
    rm = load_sequence_classifier(cfg.rewards[0].path)
    return total + 3 * trainable + sum(p.numel() * p.element_size() for p in rm.parameters())


def mib(x: float) -> str:
    return f"{x / 2**20:,.0f} MiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--child", choices=["shared", "separate"], help=argparse.SUPPRESS)
    ap.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.folder, args.steps, args.folder / f"out-{args.child}")
        return
    with tempfile.TemporaryDirectory(prefix="ppo-mem-") as tmp:
        folder = Path(tmp)
        n = build_model(folder, args.hidden, args.layers, args.vocab)
        print(f"model: random Llama, {n / 1e6:.1f}M parameters ({mib(n * 4)} in fp32), hidden {args.hidden}, "
              f"{args.layers} layers; {args.steps} PPO steps per mode, batch 4, 16 new tokens; reward = a same-size RM")
        results = {}
        for mode in ("shared", "separate"):
            env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
            proc = subprocess.run([sys.executable, __file__, "--child", mode, "--folder", str(folder),
                                   "--steps", str(args.steps)], capture_output=True, text=True, env=env)
            line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode != 0 or not line:
                sys.exit(f"{mode} run failed:\n{proc.stderr[-3000:]}")
            results[mode] = json.loads(line[0][len("RESULT "):])
    keys = ["peak_rss", "peak_rss_over_baseline", "state_bytes"] + (["cuda_peak"] if "cuda_peak" in results["shared"] else [])
    print(f"{'measure':<24}{'shared':>14}{'separate':>14}{'shared/separate':>18}")
    for key in keys:
        a, b = results["shared"][key], results["separate"][key]
        print(f"{key:<24}{mib(a):>14}{mib(b):>14}{a / b:>18.2f}")
    print(f"{'seconds':<24}{results['shared']['seconds']:>14}{results['separate']['seconds']:>14}")
    ratio = results["shared"]["peak_rss_over_baseline"] / results["separate"]["peak_rss_over_baseline"]
    print(f"target shared <= 0.5 x separate (memory the run added): {'met' if ratio <= 0.5 else 'NOT met'} ({ratio:.2f})")


if __name__ == "__main__":
    main()
