"""Batched sampling from a causal LM with a KV cache: the decode loop every generator here uses.

    from simplesafe.llm.sampling import SamplingParams, sample
    out = sample(model, enc["input_ids"], enc["attention_mask"], SamplingParams(max_new_tokens=96,
                 temperature=0.7, top_p=0.9, top_k=50), eos_token_ids=[tok.eos_token_id],
                 pad_token_id=tok.pad_token_id, seed=0)
    out.tokens   # (batch, steps) new tokens, pad after each row's first EOS
    out.ended    # (batch,) True where the row produced an EOS

Why not ``model.generate``: on a CPU, transformers' sampling path costs as much as the
model. For a batch of 64 SmolLM2-135M rows (vocabulary 49,152) each step spends about
70 ms in ``torch.multinomial`` over the whole vocabulary, 45 ms sorting it for top-p and
20 ms in the cumulative sum, next to about 120 ms of matrix products (profiled with
``torch.profiler``; ``bench/generate.py`` prints the comparison). The distribution
sampled here is the same (temperature, then top-k, then top-p, as transformers'
warpers apply them; repetition penalty as CTRL, Keskar et al. 2019, and transformers'
``RepetitionPenaltyLogitsProcessor``), computed where it is cheap:

- with ``top_k > 0`` the nucleus is cut from the ``top_k`` largest logits only
  (``torch.topk``), and one token is drawn from those;
- a token is drawn by inverting the cumulative distribution with one uniform number per
  row (``multinomial`` draws one exponential variate per vocabulary entry); the uniform
  numbers of every (row, step) are drawn up front from the seed, so a row's answer does
  not depend on which other rows are still running;
- rows that have finished are dropped from the batch and the KV cache once at most
  half of them are still running, so long answers do not keep short ones computing;
- the loop stops when every row has ended.

Prompts are left-padded; position ids follow the attention mask, so a padded row sees
exactly the positions it would see alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 128
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = the whole vocabulary
    repetition_penalty: float = 1.0
    min_new_tokens: int = 0


@dataclass
class SampleOutput:
    tokens: "torch.Tensor"  # noqa: F821  (batch, steps) new tokens; pad after a row's EOS
    ended: "torch.Tensor"  # noqa: F821  (batch,) bool: the row produced an EOS
    steps: int = 0
    info: dict = field(default_factory=dict)


def filter_top_p(probs_desc, top_p: float):
    """Zero the tail of probabilities sorted in descending order, keeping the smallest head whose mass
    reaches ``top_p`` (a token is kept when the mass strictly above it is below ``top_p``)."""
    if top_p >= 1.0:
        return probs_desc
    above = probs_desc.cumsum(-1) - probs_desc
    return probs_desc.masked_fill(above >= top_p, 0.0)


def apply_repetition_penalty(logits, seen, penalty: float):
    """CTRL's penalty on every token id in ``seen`` (batch, n): positive logits divided, negative multiplied."""
    if penalty == 1.0 or seen.shape[1] == 0:
        return logits
    import torch

    score = torch.gather(logits, 1, seen)
    score = torch.where(score < 0, score * penalty, score / penalty)
    return logits.scatter(1, seen, score)


def _draw(probs, u):
    """Inverse-CDF draw: one index per row from (unnormalised) ``probs`` with uniforms ``u`` (batch,)."""
    import torch

    cdf = probs.cumsum(-1)
    return torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(-1)).clamp(max=probs.shape[-1] - 1).squeeze(-1)


def next_tokens(logits, params: SamplingParams, generator=None, u=None):
    """One token per row from ``logits`` (batch, vocab), float32; ``u`` are the rows' uniform draws."""
    import torch

    if params.temperature == 0:
        return logits.argmax(-1)
    if u is None:
        u = torch.rand(logits.shape[0], generator=generator, device=logits.device)
    if params.top_k and params.top_k < logits.shape[-1]:
        values, index = logits.topk(params.top_k, dim=-1)  # sorted, largest first
        probs = filter_top_p(torch.softmax(values / params.temperature, dim=-1), params.top_p)
        return index.gather(-1, _draw(probs, u).unsqueeze(-1)).squeeze(-1)
    if params.top_p < 1.0:
        values, index = logits.sort(dim=-1, descending=True)
        probs = filter_top_p(torch.softmax(values / params.temperature, dim=-1), params.top_p)
        return index.gather(-1, _draw(probs, u).unsqueeze(-1)).squeeze(-1)
    return _draw(torch.softmax(logits / params.temperature, dim=-1), u)


def sample(model, input_ids, attention_mask, params: SamplingParams, eos_token_ids: Sequence[int],
           pad_token_id: int, seed: int | None = None, compact: bool = True,
           row_seeds: Sequence[int] | None = None) -> SampleOutput:
    """Sample up to ``params.max_new_tokens`` new tokens for each left-padded prompt row.

    ``row_seeds`` (one per row) make each row's draws depend on its own seed only, so the
    same (prompt, seed) gets the same answer whatever batch it is decoded in; otherwise
    all rows draw from one generator seeded with ``seed``.
    """
    import torch
    from transformers import DynamicCache

    device = input_ids.device
    generator = torch.Generator(device=device)
    generator.manual_seed(0 if seed is None else int(seed))
    batch = input_ids.shape[0]
    eos = torch.tensor(sorted(set(int(e) for e in eos_token_ids if e is not None)), device=device)
    out = torch.full((batch, params.max_new_tokens), pad_token_id, dtype=torch.long, device=device)
    ended = torch.zeros(batch, dtype=torch.bool, device=device)
    rows = torch.arange(batch, device=device)  # original row of each running row
    attn = attention_mask.long()
    positions = (attn.cumsum(-1) - 1).clamp(min=0)
    seen = input_ids.masked_fill(attn == 0, pad_token_id) if params.repetition_penalty != 1.0 else input_ids[:, :0]
    cache = DynamicCache()
    compactions = 0
    if row_seeds is not None:
        if len(row_seeds) != batch:
            raise ValueError(f"{len(row_seeds)} row seeds for {batch} rows")
        uniforms = torch.stack([torch.rand(params.max_new_tokens, generator=torch.Generator().manual_seed(int(s)))
                                for s in row_seeds]).to(device)
    else:
        uniforms = torch.rand((batch, params.max_new_tokens), generator=generator, device=device)
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=attn, position_ids=positions, past_key_values=cache,
                       use_cache=True, logits_to_keep=1).logits[:, -1].float()
        last_pos = positions[:, -1:]
        step = 0
        for step in range(params.max_new_tokens):
            logits = apply_repetition_penalty(logits, seen, params.repetition_penalty)
            if step < params.min_new_tokens and len(eos):
                logits[:, eos] = -float("inf")
            tok = next_tokens(logits, params, u=uniforms[rows, step])
            out[rows, step] = tok
            if len(eos):
                ended[rows[torch.isin(tok, eos)]] = True
            finished = ended[rows]
            if bool(finished.all()) or step + 1 == params.max_new_tokens:
                break
            if params.repetition_penalty != 1.0:
                seen = torch.cat([seen, tok[:, None]], 1)
            attn = torch.cat([attn, torch.ones_like(attn[:, :1])], 1)
            last_pos = last_pos + 1
            # a finished row keeps running (its tokens are discarded) until at most half still run
            if compact and int((~finished).sum()) <= len(finished) // 2:
                idx = (~finished).nonzero().squeeze(-1)
                cache.batch_select_indices(idx)
                rows, attn, last_pos, tok = rows[idx], attn[idx], last_pos[idx], tok[idx]
                if params.repetition_penalty != 1.0:
                    seen = seen[idx]
                compactions += 1
            logits = model(input_ids=tok[:, None], attention_mask=attn, position_ids=last_pos, past_key_values=cache,
                           use_cache=True).logits[:, -1].float()
    # pad everything after each row's first EOS
    is_eos = torch.isin(out, eos) if len(eos) else torch.zeros_like(out, dtype=torch.bool)
    after = (is_eos.long().cumsum(1) - is_eos.long()) > 0
    out = out.masked_fill(after, pad_token_id)
    return SampleOutput(tokens=out[:, : step + 1], ended=ended, steps=step + 1, info={"compactions": compactions})
