"""A backend for any server that implements OpenAI's ``POST /v1/chat/completions``.

Works with OpenAI, a vLLM or llama.cpp server, TGI's Messages API and others: give the
``base_url`` (``http://host:8000/v1``; a bare ``http://host:8000`` gets ``/v1``), the served ``model`` name and the NAME of the
environment variable that holds the API key (``api_key_env``; unset is fine for local
servers that need none). Requests run on a bounded thread pool (``max_workers``) over one
``httpx`` connection pool, each with a timeout and a token limit (``max_tokens``).

Retries (tenacity): HTTP 429, 5xx and network errors/timeouts are retried with
exponential backoff and jitter; a ``Retry-After`` header (seconds) is honoured, capped
at ``max_backoff_s``. Other 4xx errors are not retried. A prompt that still fails, or
whose reply is malformed (no ``choices[0].message.content`` string), becomes a failed
:class:`~simplesafe.llm.base.Generation` with the reason, never a crashed job.

The key lives only in the request header: it is not part of ``repr``, of cache keys, of
error messages (any echo of it in a server reply is replaced by ``<redacted>``) or logs.

    backend = OpenAIBackend("http://127.0.0.1:8000/v1", "Qwen2.5-7B-Instruct", api_key_env="VLLM_KEY")
"""

from __future__ import annotations

import json
import logging
import os
import random
from concurrent.futures import ThreadPoolExecutor, as_completed

import httpx
from tenacity import RetryError, Retrying, retry_if_exception, stop_after_attempt

from simplesafe.errors import ConfigError
from simplesafe.llm.base import Backend, BackendConfig, GenParams, Generation, OnDone, Prompt, apply_stop, as_messages

log = logging.getLogger(__name__)


class RetryableError(Exception):
    """429, 5xx or a network problem: worth another try."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class FatalError(Exception):
    """A reply that another try will not fix (400, 401, 404, malformed JSON...)."""


def _retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:  # an HTTP date
        import email.utils
        import time

        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class OpenAIBackend(Backend):
    name = "openai"

    def __init__(self, base_url: str, model: str, api_key_env: str | None = "OPENAI_API_KEY", max_workers: int = 8,
                 timeout_s: float = 60.0, max_retries: int = 5, initial_backoff_s: float = 1.0,
                 max_backoff_s: float = 30.0, cache=None):
        super().__init__(model, cache)
        if not base_url or not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"base_url must start with http:// or https:// (got {base_url!r})")
        self.base_url = base_url.rstrip("/")
        if not httpx.URL(self.base_url).path.strip("/"):
            # Bare host:port: OpenAI-compatible servers (vLLM, llama.cpp, TGI) serve under /v1.
            self.base_url += "/v1"
            log.info("base_url has no path; using %s", self.base_url)
        self.url = self.base_url + "/chat/completions"
        if self.base_url.endswith("/chat/completions"):
            self.url = self.base_url
        self.api_key_env = api_key_env
        self.max_workers = max_workers
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        key = os.environ.get(api_key_env) if api_key_env else None
        self._secret = key or None
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        else:
            log.info("no API key in $%s; sending requests without Authorization (fine for local servers)", api_key_env)
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)),
            limits=httpx.Limits(max_connections=max_workers, max_keepalive_connections=max_workers),
        )
        self.http_attempts = 0  # requests actually sent, retries included

    @classmethod
    def from_config(cls, cfg: BackendConfig, cache=None) -> "OpenAIBackend":
        if not cfg.base_url:
            raise ConfigError("the openai backend needs --base-url (e.g. http://localhost:8000/v1)")
        if cfg.model.startswith("embedded:"):
            raise ConfigError("the openai backend needs --model: the model name the server serves")
        return cls(cfg.base_url, cfg.model, api_key_env=cfg.api_key_env, max_workers=cfg.max_workers,
                   timeout_s=cfg.timeout_s, max_retries=cfg.max_retries, max_backoff_s=cfg.max_backoff_s, cache=cache)

    def __repr__(self) -> str:
        return f"OpenAIBackend(url={self.url!r}, model={self.model!r}, api_key_env={self.api_key_env!r})"

    def _scrub(self, text: str) -> str:
        if self._secret:
            text = text.replace(self._secret, "<redacted>")
        return text

    def _payload(self, prompt: Prompt, params: GenParams) -> dict:
        body = {
            "model": self.model,
            "messages": as_messages(prompt),
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "n": 1,
        }
        if params.stop:
            body["stop"] = params.stop[:4]  # the OpenAI API accepts at most 4
        if params.seed is not None:
            body["seed"] = params.seed
        return body

    def _post_once(self, body: dict) -> str:
        self.http_attempts += 1
        try:
            resp = self._client.post(self.url, json=body)
        except httpx.TimeoutException as exc:
            raise RetryableError(f"timed out after {self.timeout_s:g}s ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise RetryableError(f"network error: {type(exc).__name__}: {self._scrub(str(exc))[:200]}") from None
        status = resp.status_code
        if status == 429 or status >= 500:
            raise RetryableError(f"HTTP {status}: {self._scrub(resp.text)[:200]}",
                                 retry_after=_retry_after_seconds(resp.headers.get("retry-after")))
        if status >= 400:
            raise FatalError(f"HTTP {status}: {self._scrub(resp.text)[:300]}")
        try:
            data = resp.json()
        except (json.JSONDecodeError, ValueError):
            raise FatalError(f"malformed completion: reply is not JSON ({self._scrub(resp.text)[:120]!r})") from None
        return _content(data)

    def _wait(self, retry_state) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, RetryableError) and exc.retry_after is not None:
            return min(exc.retry_after, self.max_backoff_s)
        n = retry_state.attempt_number
        base = min(self.max_backoff_s, self.initial_backoff_s * (2 ** (n - 1)))
        return base * (0.5 + random.random() / 2)  # jitter spreads out workers that failed together

    def _one(self, prompt: Prompt, params: GenParams) -> Generation:
        body = self._payload(prompt, params)
        retrying = Retrying(
            stop=stop_after_attempt(self.max_retries + 1),
            wait=self._wait,
            retry=retry_if_exception(lambda e: isinstance(e, RetryableError)),
            reraise=True,
        )
        try:
            text = retrying(self._post_once, body)
        except RetryableError as exc:
            return Generation("", error=f"failed after {self.max_retries + 1} attempts: {exc}")
        except (FatalError, RetryError) as exc:
            return Generation("", error=str(exc))
        except Exception as exc:  # one odd reply must not kill a long job
            return Generation("", error=f"{type(exc).__name__}: {self._scrub(str(exc))[:200]}")
        # a server that echoes the key back in a completion must not get it into outputs or the cache
        return Generation(apply_stop(self._scrub(text), params.stop))

    def _generate_uncached(self, prompts: list[Prompt], params: GenParams, on_done: OnDone) -> list[Generation]:
        results: list[Generation | None] = [None] * len(prompts)
        pool = ThreadPoolExecutor(max_workers=self.max_workers, thread_name_prefix="llm-http")
        try:
            futures = {pool.submit(self._one, p, params): j for j, p in enumerate(prompts)}
            for fut in as_completed(futures):
                j = futures[fut]
                results[j] = fut.result()
                on_done(j, results[j])  # cached at once: a crash later keeps this call
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return [r if r is not None else Generation("", error="no result") for r in results]

    def close(self) -> None:
        self._client.close()
        super().close()


def _content(data) -> str:
    """``choices[0].message.content`` (or legacy ``choices[0].text``), else a FatalError."""
    if not isinstance(data, dict):
        raise FatalError(f"malformed completion: expected a JSON object, got {type(data).__name__}")
    if "error" in data and not data.get("choices"):
        err = data["error"]
        msg = err.get("message") if isinstance(err, dict) else err
        raise FatalError(f"server error: {str(msg)[:200]}")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise FatalError("malformed completion: no choices")
    first = choices[0]
    message = first.get("message")
    if isinstance(message, dict) and isinstance(message.get("content"), str):
        return message["content"]
    if isinstance(message, dict) and isinstance(message.get("content"), list):
        # content parts ([{"type": "text", "text": ...}]), as some servers return
        texts = [p.get("text") for p in message["content"] if isinstance(p, dict) and isinstance(p.get("text"), str)]
        if texts:
            return "".join(texts)
    if isinstance(first.get("text"), str):
        return first["text"]
    raise FatalError("malformed completion: choices[0].message.content is missing or not a string")
