"""The one interface every text generator implements: ``generate(prompts, params) -> texts``.

A prompt is either a plain string or a chat message list
(``[{"role": "system", "content": ...}, {"role": "user", "content": ...}]``). Each
backend (:mod:`~simplesafe.llm.hf`, :mod:`~simplesafe.llm.openai_compat`,
:mod:`~simplesafe.llm.vllm_engine`, :mod:`~simplesafe.llm.scripted`) implements
``_generate_uncached``; :class:`Backend.generate` puts a persistent cache
(:mod:`~simplesafe.llm.cache`) in front of it, so an interrupted job resumes without
repeating finished calls and a rerun is free.

A call that still fails after its retries does not crash the job: its result is a
:class:`Generation` (a ``str``) that is empty and carries ``.error`` with the reason,
and the generators turn it into a reject. Failures are not cached, so a rerun tries
them again.

    backend = make_backend(BackendConfig(backend="openai", base_url="http://localhost:8000/v1",
                                         model="my-model"), cache_path="cache.sqlite")
    texts = backend.generate(["Name three colours."], GenParams(max_new_tokens=64))
    for t in texts:
        print(t if t.ok else f"failed: {t.error}")
"""

from __future__ import annotations

import abc
import hashlib
import json
import logging
from pathlib import Path
from typing import Callable, Literal, Sequence, Union

from pydantic import Field

from simplesafe.config import StageConfig

log = logging.getLogger(__name__)

Message = dict  # {"role": str, "content": str}
Prompt = Union[str, list]  # plain text or a list of chat messages


class GenParams(StageConfig):
    """Decoding settings; every call has a token limit and (HTTP) a timeout."""

    max_new_tokens: int = Field(256, ge=1, le=32768, description="hard limit on generated tokens per call")
    temperature: float = Field(0.7, ge=0, le=2, description="0 means greedy decoding")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass")
    stop: list[str] = Field(default_factory=list, description="cut the text at the first of these strings")
    seed: int | None = Field(None, description="sampling seed (part of the cache key)")


class Generation(str):
    """A generated text. ``error`` is set (and the text empty) when the call failed."""

    error: str | None
    cached: bool

    def __new__(cls, text: str = "", error: str | None = None, cached: bool = False):
        obj = super().__new__(cls, text)
        obj.error = error
        obj.cached = cached
        return obj

    @property
    def ok(self) -> bool:
        return self.error is None

    def __reduce__(self):  # keep error/cached through pickling (multiprocessing, deepcopy)
        return (Generation, (str(self), self.error, self.cached))


def normalise_prompt(prompt: Prompt) -> Prompt:
    """Validate a prompt: a string, or a list of {role, content} string dicts."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, (list, tuple)) and prompt:
        out = []
        for m in prompt:
            if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
                raise TypeError(f"a chat prompt must be a list of {{'role': str, 'content': str}} dicts, got {m!r}")
            out.append({"role": m["role"], "content": m["content"]})
        return out
    raise TypeError(f"a prompt must be a string or a non-empty list of chat messages, got {type(prompt).__name__}")


def as_messages(prompt: Prompt) -> list[Message]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def apply_stop(text: str, stop: Sequence[str]) -> str:
    """Cut ``text`` at the earliest stop string (backends without native stop support)."""
    cut = len(text)
    for s in stop:
        if s:
            i = text.find(s)
            if 0 <= i < cut:
                cut = i
    return text[:cut]


def cache_key(backend: str, model: str, prompt: Prompt, params: GenParams) -> str:
    payload = json.dumps(
        {"backend": backend, "model": model, "prompt": prompt, "params": params.model_dump(mode="json")},
        sort_keys=True, ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


OnDone = Callable[[int, Generation], None]


class Backend(abc.ABC):
    """Base class: caching and bookkeeping around a backend's ``_generate_uncached``."""

    name: str = "base"

    def __init__(self, model: str, cache=None):
        self.model = model
        self.cache_model = model  # the model's identity in cache keys (a weights digest for retrained models)
        self.cache = cache  # a simplesafe.llm.cache.GenerationCache or None
        self.calls = 0  # uncached prompts sent to the model (for stats and tests)
        self.cache_hits = 0

    @property
    def generator_id(self) -> str:
        """``backend/model`` for provenance columns."""
        return f"{self.name}/{self.model}"

    def generate(self, prompts: Sequence[Prompt], params: GenParams | None = None, progress: bool = False,
                 desc: str | None = None) -> list[Generation]:
        """One text per prompt, in order; cached results are reused, failures carry ``.error``."""
        params = params or GenParams()
        prompts = [normalise_prompt(p) for p in prompts]
        results: list[Generation | None] = [None] * len(prompts)
        keys = [cache_key(self.name, self.cache_model, p, params) for p in prompts]
        todo: list[int] = []
        if self.cache is not None:
            found = self.cache.get_many(keys)
            for i, k in enumerate(keys):
                if k in found:
                    results[i] = Generation(found[k], cached=True)
                    self.cache_hits += 1
                else:
                    todo.append(i)
        else:
            todo = list(range(len(prompts)))
        # Identical prompts in one call are generated once.
        first_of: dict[str, int] = {}
        unique: list[int] = []
        for i in todo:
            if keys[i] not in first_of:
                first_of[keys[i]] = i
                unique.append(i)
        if unique:
            bar = None
            if progress:
                from tqdm.auto import tqdm

                bar = tqdm(total=len(unique), desc=desc or f"generate ({self.name})", unit="prompt")

            def on_done(j: int, gen: Generation) -> None:
                i = unique[j]
                results[i] = gen
                if gen.ok and self.cache is not None:
                    self.cache.put(keys[i], str(gen), {"backend": self.name, "model": self.model})
                if bar is not None:
                    bar.update(1)

            self.calls += len(unique)
            out = self._generate_uncached([prompts[i] for i in unique], params, on_done)
            for j, gen in enumerate(out):
                if results[unique[j]] is None:
                    on_done(j, gen)
            if bar is not None:
                bar.close()
            for i in todo:
                if results[i] is None:
                    results[i] = results[first_of[keys[i]]]
        return [r if r is not None else Generation("", error="no result") for r in results]

    @abc.abstractmethod
    def _generate_uncached(self, prompts: list[Prompt], params: GenParams, on_done: OnDone) -> list[Generation]:
        """Generate for every prompt; may call ``on_done(j, gen)`` as each finishes (for the cache)."""

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


BackendName = Literal["hf", "openai", "vllm", "scripted"]


class BackendConfig(StageConfig):
    """Which model generates, and how it is reached. The API key itself is never stored here."""

    backend: BackendName = Field("hf", description="hf (local transformers), openai (any OpenAI-compatible server), vllm (offline engine), scripted (tests)")
    model: str = Field("embedded:tiny", description="hf/vllm: hub id or local path; openai: the served model name")
    base_url: str | None = Field(None, description="openai: e.g. http://localhost:8000/v1 (the /chat/completions path is added)")
    api_key_env: str = Field("OPENAI_API_KEY", description="openai: NAME of the environment variable holding the key (may be unset for local servers)")
    max_workers: int = Field(8, ge=1, le=256, description="openai: concurrent requests")
    timeout_s: float = Field(60.0, gt=0, description="openai: per-request timeout")
    max_retries: int = Field(5, ge=0, le=20, description="openai: retries on 429/5xx/network errors (exponential backoff, honours Retry-After)")
    max_backoff_s: float = Field(30.0, gt=0, description="openai: longest single wait between retries")
    batch_size: int = Field(16, ge=1, description="hf: prompts per forward batch")
    dtype: str = Field("auto", description="hf/vllm: weight dtype (auto: bf16 on a GPU with bf16, else fp16; bf16 on a "
                       "bf16-capable CPU, else fp32)")
    device: str = Field("auto", description="hf: auto (cuda when a GPU is visible, else cpu), cpu, cuda, cuda:1, ...")
    max_prompt_tokens: int = Field(1024, ge=8, description="hf: prompts are truncated from the left to this many tokens")
    script: str | None = Field(None, description="scripted: JSON file of [{match: regex, response: text}] rules")


def make_backend(cfg: BackendConfig, cache_path: str | Path | None = None) -> Backend:
    """Build the configured backend with a persistent cache at ``cache_path`` (None: no cache)."""
    from simplesafe.llm.cache import GenerationCache

    cache = GenerationCache(cache_path) if cache_path is not None else None
    if cfg.backend == "openai":
        from simplesafe.llm.openai_compat import OpenAIBackend

        return OpenAIBackend.from_config(cfg, cache)
    if cfg.backend == "hf":
        from simplesafe.llm.hf import HFBackend

        return HFBackend(cfg.model, batch_size=cfg.batch_size, dtype=cfg.dtype,
                         max_prompt_tokens=cfg.max_prompt_tokens, cache=cache, device=cfg.device)
    if cfg.backend == "vllm":
        from simplesafe.llm.vllm_engine import VLLMBackend

        return VLLMBackend(cfg.model, dtype=cfg.dtype, cache=cache)
    from simplesafe.llm.scripted import ScriptedBackend

    return ScriptedBackend.from_file(cfg.script, cache=cache)
