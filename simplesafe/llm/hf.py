"""A local transformers model as a backend: batched generation with left padding + KV cache.

Prompts are sorted by length and cut into batches of ``batch_size`` so that little
padding is wasted; padding goes on the left so every row's last position is its last
prompt token and ``generate`` can decode the whole batch at once with the KV cache.
Chat-message prompts go through the tokenizer's chat template (with the generation
prompt); plain strings are used as they are. Prompts longer than ``max_prompt_tokens``
keep their end (left truncation), since the instruction to answer sits at the end.

    backend = HFBackend("embedded:tiny", batch_size=16)
    backend.generate([[{"role": "user", "content": "Why is the sky blue?"}]], GenParams(max_new_tokens=32))

The bench ``python bench/synth.py`` compares batched with one-at-a-time decoding.
"""

from __future__ import annotations

import logging

from simplesafe.llm.base import Backend, GenParams, Generation, OnDone, Prompt, apply_stop

log = logging.getLogger(__name__)


class HFBackend(Backend):
    name = "hf"

    def __init__(self, model: str, batch_size: int = 16, dtype: str = "float32", max_prompt_tokens: int = 1024,
                 cache=None, loaded=None):
        super().__init__(model, cache)
        self.batch_size = batch_size
        self.max_prompt_tokens = max_prompt_tokens
        if loaded is not None:
            self.lm, self.tok = loaded
        else:
            from simplesafe.models.load import load_causal_lm, load_tokenizer

            self.tok = load_tokenizer(model, padding_side="left")
            self.lm = load_causal_lm(model, dtype=dtype)
        self.tok.padding_side = "left"
        self.tok.truncation_side = "left"
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        self.lm.eval()

    @classmethod
    def from_model(cls, lm, tokenizer, name: str, batch_size: int = 16, cache=None) -> "HFBackend":
        """Wrap an already-loaded model (``name`` is its cache identity: use a path or digest)."""
        return cls(name, batch_size=batch_size, cache=cache, loaded=(lm, tokenizer))

    def render(self, prompt: Prompt) -> str:
        if isinstance(prompt, str):
            return prompt
        if getattr(self.tok, "chat_template", None):
            return self.tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        # No template: a plain transcript that still ends with the assistant's turn.
        return "\n".join(f"{m['role']}: {m['content']}" for m in prompt) + "\nassistant:"

    def _generate_uncached(self, prompts: list[Prompt], params: GenParams, on_done: OnDone) -> list[Generation]:
        import torch

        texts = [self.render(p) for p in prompts]
        lengths = [len(self.tok(t, add_special_tokens=False)["input_ids"]) for t in texts]
        order = sorted(range(len(texts)), key=lambda i: -lengths[i])
        results: list[Generation | None] = [None] * len(texts)
        do_sample = params.temperature > 0
        for b, start in enumerate(range(0, len(order), self.batch_size)):
            idx = order[start: start + self.batch_size]
            enc = self.tok([texts[i] for i in idx], return_tensors="pt", padding=True, truncation=True,
                           max_length=self.max_prompt_tokens, add_special_tokens=False)
            enc = {k: v.to(self.lm.device) for k, v in enc.items()}
            kwargs = dict(max_new_tokens=params.max_new_tokens, do_sample=do_sample, use_cache=True,
                          pad_token_id=self.tok.pad_token_id, eos_token_id=self.tok.eos_token_id)
            if do_sample:
                kwargs.update(temperature=params.temperature, top_p=params.top_p)
                # Seeded per batch so a given (prompts, params) call is reproducible.
                torch.manual_seed((params.seed or 0) * 100_003 + b)
            try:
                with torch.no_grad():
                    out = self.lm.generate(**enc, **kwargs)
            except (RuntimeError, ValueError) as exc:  # e.g. out of memory on one batch
                for i in idx:
                    results[i] = Generation("", error=f"generation failed: {type(exc).__name__}: {str(exc)[:200]}")
                    on_done(i, results[i])
                continue
            new = out[:, enc["input_ids"].shape[1]:]
            decoded = self.tok.batch_decode(new, skip_special_tokens=True)
            for i, text in zip(idx, decoded):
                results[i] = Generation(apply_stop(text, params.stop).strip())
                on_done(i, results[i])
        return [r if r is not None else Generation("", error="no result") for r in results]
