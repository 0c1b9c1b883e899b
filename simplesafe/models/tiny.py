"""Build the embedded base model: a byte-level BPE tokenizer and a small Llama.

    simplesafe models build-tiny                  # ~4M parameters, 5 minutes on 2 cores
    simplesafe models build-tiny max_minutes=1 out=/tmp/tiny

It pretrains, for a bounded time, on a mix of ordinary English (English Wikipedia
leads, long-form QA answers) and Simple English Wikipedia, so that the base writes at
an average reading level like a real base model: a base trained only on simple text
is simple already and would hide every later simplicity gain. The result is an
ordinary Hugging Face model folder (safetensors, tokenizer, chat template in the
report's ``### Human: {question} ### Assistant:`` format) cached under
``~/.cache/simplesafe/models``. Held-out perplexity is printed next to a unigram
model's on the same tokens.

The loop is plain PyTorch (nanoGPT style); bf16 autocast and ``torch.compile`` are
used when they work on this machine, else it falls back to fp32 eager.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import time
from pathlib import Path
from typing import Literal

from pydantic import Field

from simplesafe.config import StageConfig
from simplesafe.paths import bundled_data_dir, cache_dir
from simplesafe.text.prompt import ASSISTANT_TURN, HUMAN_TURN

log = logging.getLogger(__name__)

EOS = "<|endoftext|>"
PAD = "<|pad|>"
# Jinja chat template in the report's format (simplesafe.text.prompt); the assistant turn ends with EOS.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}\n"
    "{% elif message['role'] == 'user' %}" + HUMAN_TURN + " {{ message['content'] }} "
    "{% elif message['role'] == 'assistant' %}" + ASSISTANT_TURN + " {{ message['content'] }}" + EOS + " "
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}" + ASSISTANT_TURN + "{% endif %}"
)


class TinyModelConfig(StageConfig):
    """Size and training budget of the embedded tiny Llama."""

    out: str | None = Field(None, description="output folder; default: the cache")
    corpus: list[str] = Field(default_factory=list, description="text files (one document per line); default: bundled data")
    vocab_size: int = Field(4096, ge=300)
    hidden_size: int = Field(256, ge=16)
    intermediate_size: int = Field(688, ge=16)
    num_layers: int = Field(4, ge=1)
    num_heads: int = Field(4, ge=1)
    max_seq_len: int = Field(512, ge=16, description="context length; QA examples run to a few hundred tokens")
    batch_size: int = Field(8, ge=1)
    lr: float = Field(3e-3, gt=0)
    warmup_steps: int = Field(30, ge=0)
    max_minutes: float = Field(5.0, gt=0, description="wall-clock budget for pretraining")
    max_steps: int | None = Field(None, ge=1, description="stop after this many steps (whichever comes first)")
    eval_fraction: float = Field(0.05, gt=0, lt=0.5)
    max_corpus_chars: int | None = Field(None, ge=1000, description="truncate the corpus (tests)")
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    compile: Literal["auto", "on", "off"] = "auto"
    seed: int = 0
    threads: int | None = None

    def fingerprint(self) -> str:
        data = self.model_dump(exclude={"out", "threads"})
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:10]


def default_corpus() -> list[str]:
    d = bundled_data_dir()
    return [
        str(d / "simplewiki" / "english_articles.txt"),
        str(d / "simplewiki" / "simple_articles.txt"),
        str(d / "eli5" / "lfqa_preferences.tsv"),
    ]


def default_tiny_path() -> Path:
    return cache_dir() / "models" / "tiny-llama"


def read_corpus(paths: list[str], max_chars: int | None = None) -> list[str]:
    """Documents from one-per-line text files, or the answer columns of a QA TSV/JSONL."""
    from simplesafe.io import read_rows
    from simplesafe.text.detok import detokenize

    docs: list[str] = []
    for p in paths:
        if p.endswith((".tsv", ".csv", ".jsonl", ".json", ".parquet")):
            for _, row in read_rows(p):
                for key in ("preferred_response", "rejected_response", "answer", "text", "output"):
                    value = row.get(key)
                    if isinstance(value, str) and value.strip():
                        docs.append(" ".join(value.split()))
        else:
            with open(p, encoding="utf-8") as fh:
                docs.extend(detokenize(line) for line in fh if line.strip())
    if max_chars is not None:
        rng = random.Random(0)
        rng.shuffle(docs)
        out, total = [], 0
        for d in docs:
            if total >= max_chars:
                break
            out.append(d)
            total += len(d)
        docs = out
    return docs


def train_tokenizer(docs: list[str], vocab_size: int):
    """Byte-level BPE (GPT-2 style) trained with the ``tokenizers`` library."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(docs, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOS, eos_token=EOS, pad_token=PAD, unk_token=None,
        model_max_length=100_000,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _token_stream(tokenizer, docs: list[str]) -> list[int]:
    ids: list[int] = []
    eos = tokenizer.eos_token_id
    for batch_start in range(0, len(docs), 512):
        enc = tokenizer(docs[batch_start: batch_start + 512], add_special_tokens=False)["input_ids"]
        for seq in enc:
            ids.extend(seq)
            ids.append(eos)
    return ids


def unigram_perplexity(train_ids: list[int], eval_ids: list[int], vocab_size: int) -> float:
    """Perplexity of an add-one-smoothed unigram model: the floor any LM must beat."""
    import numpy as np

    counts = np.bincount(np.asarray(train_ids), minlength=vocab_size).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    return float(math.exp(-logp[np.asarray(eval_ids)].mean()))


def _pick_precision_and_compile(model, cfg: TinyModelConfig, example):
    """Try bf16 autocast + torch.compile; keep what runs, fall back to fp32 eager."""
    import torch

    want_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and torch.backends.mkldnn.is_available())
    want_compile = cfg.compile == "on" or (cfg.compile == "auto" and hasattr(torch, "compile"))
    step_model = model
    if want_compile:
        try:
            compiled = torch.compile(model)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=want_bf16):
                compiled(input_ids=example, labels=example).loss.backward()
            model.zero_grad(set_to_none=True)
            step_model = compiled
        except Exception as exc:  # compilers fail in many ways; eager always works
            log.warning("torch.compile unavailable here (%s); using eager mode", type(exc).__name__)
            want_compile = False
            model.zero_grad(set_to_none=True)
    if want_bf16 and not want_compile:
        try:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                model(input_ids=example, labels=example).loss.backward()
            model.zero_grad(set_to_none=True)
        except Exception as exc:
            log.warning("bf16 autocast unavailable here (%s); using fp32", type(exc).__name__)
            want_bf16 = False
    return step_model, want_bf16, want_compile


def build_tiny_model(cfg: TinyModelConfig, progress: bool = True) -> dict:
    """Train tokenizer and model; save to ``cfg.out`` (or the cache). Returns the metrics."""
    import numpy as np
    import torch
    from tqdm.auto import tqdm
    from transformers import LlamaConfig, LlamaForCausalLM

    from simplesafe.atomic import write_json
    from simplesafe.models.load import save_pretrained

    out = Path(cfg.out) if cfg.out else default_tiny_path()
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)

    docs = read_corpus(cfg.corpus or default_corpus(), cfg.max_corpus_chars)
    if len(docs) < 20:
        from simplesafe.errors import SimplesafeError

        raise SimplesafeError(f"the pretraining corpus has only {len(docs)} documents; give at least 20")
    rng = random.Random(cfg.seed)
    rng.shuffle(docs)
    n_eval = max(2, int(len(docs) * cfg.eval_fraction))
    eval_docs, train_docs = docs[:n_eval], docs[n_eval:]

    t0 = time.time()
    tokenizer = train_tokenizer(train_docs, cfg.vocab_size)
    train_ids = _token_stream(tokenizer, train_docs)
    eval_ids = _token_stream(tokenizer, eval_docs)
    vocab = len(tokenizer)
    log.info("tokenizer: %d tokens; corpus %d train / %d held-out tokens", vocab, len(train_ids), len(eval_ids))

    mcfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_seq_len,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        rms_norm_eps=1e-5,
    )
    model = LlamaForCausalLM(mcfg)
    n_params = sum(p.numel() for p in model.parameters())
    model.train()

    data = torch.tensor(train_ids, dtype=torch.long)
    T = cfg.max_seq_len
    if len(data) <= T + 1:
        from simplesafe.errors import SimplesafeError

        raise SimplesafeError("the pretraining corpus is shorter than one training sequence")

    def batch():
        idx = torch.randint(0, len(data) - T - 1, (cfg.batch_size,))
        return torch.stack([data[i: i + T] for i in idx])

    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.1)
    step_model, use_bf16, use_compile = _pick_precision_and_compile(model, cfg, batch()[:2])

    budget_s = cfg.max_minutes * 60
    train_start = time.time()
    est_total = cfg.max_steps or 10_000

    def lr_at(step: int, frac_done: float) -> float:
        if step < cfg.warmup_steps:
            return cfg.lr * (step + 1) / cfg.warmup_steps
        return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac_done))))

    step, tokens, losses = 0, 0, []
    bar = tqdm(total=cfg.max_steps or int(budget_s), disable=not progress, desc="pretrain tiny",
               unit="step" if cfg.max_steps else "s")
    while True:
        elapsed = time.time() - train_start
        if elapsed >= budget_s or (cfg.max_steps and step >= cfg.max_steps):
            break
        frac = max(elapsed / budget_s, step / est_total if cfg.max_steps else 0.0)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, frac)
        x = batch()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
            loss = step_model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        tokens += x.numel()
        losses.append(loss.item())
        if cfg.max_steps:
            bar.update(1)
        else:
            bar.n = min(int(time.time() - train_start), int(budget_s))
            bar.refresh()
        if step % 20 == 0:
            bar.set_postfix(loss=f"{sum(losses[-20:]) / 20:.3f}")
    bar.close()
    train_seconds = time.time() - train_start

    model.eval()
    ppl = held_out_perplexity(model, eval_ids, T)
    uni = unigram_perplexity(train_ids, eval_ids, vocab)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    save_pretrained(model, tokenizer, out)
    metrics = {
        "path": str(out),
        "parameters": n_params,
        "steps": step,
        "train_tokens": tokens,
        "train_seconds": round(train_seconds, 1),
        "tokens_per_second": round(tokens / max(train_seconds, 1e-9), 1),
        "bf16_autocast": use_bf16,
        "torch_compile": use_compile,
        "held_out_perplexity": round(ppl, 2),
        "unigram_perplexity": round(uni, 2),
        "held_out_tokens": len(eval_ids),
        "final_train_loss": round(sum(losses[-20:]) / max(1, len(losses[-20:])), 4),
        "total_seconds": round(time.time() - t0, 1),
        "config": cfg.model_dump(mode="json"),
        "fingerprint": cfg.fingerprint(),
    }
    write_json(out / "build_info.json", metrics)
    return metrics


@__import__("torch").no_grad()
def held_out_perplexity(model, ids: list[int], seq_len: int, max_tokens: int = 200_000) -> float:
    """Token-level perplexity over non-overlapping windows of the held-out stream."""
    import torch

    ids = ids[:max_tokens]
    total_nll, total = 0.0, 0
    for start in range(0, len(ids) - 1, seq_len):
        chunk = torch.tensor(ids[start: start + seq_len + 1]).unsqueeze(0)
        if chunk.shape[1] < 2:
            break
        out = model(input_ids=chunk[:, :-1])
        logits = out.logits.float()
        nll = torch.nn.functional.cross_entropy(logits[0], chunk[0, 1:], reduction="sum")
        total_nll += float(nll)
        total += chunk.shape[1] - 1
    return math.exp(total_nll / max(total, 1))


def ensure_tiny_model(cfg: TinyModelConfig | None = None, force: bool = False, progress: bool = True) -> Path:
    """Build the tiny model unless a build with the same fingerprint is cached."""
    cfg = cfg or TinyModelConfig()
    out = Path(cfg.out) if cfg.out else default_tiny_path()
    info = out / "build_info.json"
    if not force and info.exists() and (out / "model.safetensors").exists():
        try:
            if json.loads(info.read_text()).get("fingerprint") == cfg.fingerprint():
                return out
        except (json.JSONDecodeError, OSError):
            pass
    build_tiny_model(cfg, progress=progress)
    return out
