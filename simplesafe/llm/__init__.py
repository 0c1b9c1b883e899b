"""LLM backends behind one interface, ``backend.generate(prompts, params) -> texts``.

- ``hf``: a local transformers model, batched with left padding and the KV cache.
- ``openai``: any OpenAI-compatible ``/v1/chat/completions`` server (bounded concurrency,
  timeouts, retries honouring 429/5xx and Retry-After; the key never leaves the header).
- ``vllm``: vLLM's offline engine (optional extra ``simplesafe[vllm]``).
- ``scripted``: deterministic rules, for tests.

Every call goes through a persistent SQLite cache keyed on (backend, model, prompt,
params), so interrupted jobs resume and reruns are free. See :mod:`simplesafe.llm.base`.
"""

from simplesafe.llm.base import Backend, BackendConfig, GenParams, Generation, make_backend

__all__ = ["Backend", "BackendConfig", "GenParams", "Generation", "make_backend"]
