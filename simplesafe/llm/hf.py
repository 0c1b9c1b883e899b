"""A local transformers model as a backend: batched generation with left padding + KV cache.

Prompts are sorted by length and cut into batches of ``batch_size`` so that little
padding is wasted; padding goes on the left so every row's last position is its last
prompt token and ``generate`` can decode the whole batch at once with the KV cache.
Chat-message prompts go through the tokenizer's chat template (with the generation
prompt); plain strings are used as they are. Prompts longer than ``max_prompt_tokens``
keep their end (left truncation), since the instruction to answer sits at the end.

    backend = HFBackend("embedded:tiny", batch_size=16)
    backend.generate([[{"role": "user", "content": "Why is the sky blue?"}]], GenParams(max_new_tokens=32))

Decoding is :func:`simplesafe.llm.sampling.sample` (top-k 50, then top-p, as transformers'
defaults; several times faster than ``model.generate`` on a CPU). ``device: auto`` puts the
model on the GPU when there is one; ``dtype: auto`` follows the one rule
(:func:`simplesafe.models.load.inference_dtype`: bf16 on a GPU with bf16, else fp16; bf16 on a
bf16-capable CPU, else fp32).

The bench ``python bench/synth.py`` compares batched with one-at-a-time decoding.
"""

from __future__ import annotations

import logging

from simplesafe.llm.base import Backend, GenParams, Generation, OnDone, Prompt, apply_stop

log = logging.getLogger(__name__)


class HFBackend(Backend):
    name = "hf"

    def __init__(self, model: str, batch_size: int = 16, dtype: str = "auto", max_prompt_tokens: int = 1024,
                 cache=None, loaded=None, cache_model: str | None = None, device: str = "auto"):
        super().__init__(model, cache)
        if cache_model:
            self.cache_model = cache_model
        self.batch_size = batch_size
        self.max_prompt_tokens = max_prompt_tokens
        if loaded is not None:
            self.lm, self.tok = loaded
        else:
            from simplesafe.models.load import inference_dtype, load_causal_lm, load_tokenizer, resolve_device

            device = resolve_device(device)
            self.tok = load_tokenizer(model, padding_side="left")
            self.lm = load_causal_lm(model, dtype=inference_dtype(dtype, device)).to(device)
        self.tok.padding_side = "left"
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        self.lm.eval()
        # Prompt + answer must fit the model's positions (the tiny model has 256).
        self.max_positions = getattr(getattr(self.lm, "config", None), "max_position_embeddings", None)

    @classmethod
    def from_model(cls, lm, tokenizer, name: str, batch_size: int = 16, cache=None,
                   cache_model: str | None = None) -> "HFBackend":
        """Wrap an already-loaded model (``cache_model`` is its cache identity, e.g. a weights digest)."""
        return cls(name, batch_size=batch_size, cache=cache, loaded=(lm, tokenizer), cache_model=cache_model)

    def render(self, prompt: Prompt) -> str:
        if isinstance(prompt, str):
            return prompt
        if getattr(self.tok, "chat_template", None):
            return self.tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        # No template: a plain transcript that still ends with the assistant's turn.
        return "\n".join(f"{m['role']}: {m['content']}" for m in prompt) + "\nassistant:"

    def prompt_limit(self, params: GenParams) -> int:
        limit = self.max_prompt_tokens
        if isinstance(self.max_positions, int) and self.max_positions > 0:
            limit = min(limit, self.max_positions - params.max_new_tokens)
        return max(1, limit)

    def _encode(self, prompt: Prompt, limit: int) -> list[int]:
        # Plain strings get the tokenizer's special tokens (BOS for Llama-style models);
        # chat templates write their own, so rendered chats get none.
        ids = self.tok(self.render(prompt), add_special_tokens=isinstance(prompt, str))["input_ids"]
        return ids[-limit:]  # keep the end: the request to answer is there

    def _generate_uncached(self, prompts: list[Prompt], params: GenParams, on_done: OnDone) -> list[Generation]:
        import torch

        from simplesafe.llm.sampling import SamplingParams, sample

        limit = self.prompt_limit(params)
        encoded = [self._encode(p, limit) for p in prompts]
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        results: list[Generation | None] = [None] * len(encoded)
        pad = self.tok.pad_token_id
        for b, start in enumerate(range(0, len(order), self.batch_size)):
            idx = order[start: start + self.batch_size]
            width = max(len(encoded[i]) for i in idx)
            input_ids = torch.full((len(idx), width), pad, dtype=torch.long)
            attention = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):  # left padding
                ids = encoded[i]
                input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
                attention[row, width - len(ids):] = 1
            sp = SamplingParams(max_new_tokens=params.max_new_tokens, temperature=params.temperature,
                                top_p=params.top_p, top_k=50)
            try:
                # seeded per batch so a given (prompts, params) call is reproducible
                out = sample(self.lm, input_ids.to(self.lm.device), attention.to(self.lm.device), sp,
                             eos_token_ids=[self.tok.eos_token_id], pad_token_id=pad,
                             seed=(params.seed or 0) * 100_003 + b)
            except (RuntimeError, ValueError) as exc:  # e.g. out of memory on one batch
                for i in idx:
                    results[i] = Generation("", error=f"generation failed: {type(exc).__name__}: {str(exc)[:200]}")
                    on_done(i, results[i])
                continue
            decoded = self.tok.batch_decode(out.tokens, skip_special_tokens=True)
            for i, text in zip(idx, decoded):
                results[i] = Generation(apply_stop(text, params.stop).strip())
                on_done(i, results[i])
        return [r if r is not None else Generation("", error="no result") for r in results]
