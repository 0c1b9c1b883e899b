"""The OpenAI-compatible backend against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import sqlite3

import pytest

from simplesafe.llm.base import GenParams
from simplesafe.llm.cache import GenerationCache
from simplesafe.llm.local_server import LocalChatServer, chat_reply
from simplesafe.llm.openai_compat import OpenAIBackend

SECRET = "sk-test-SECRET-0123456789"


def echo(body, hit):
    return 200, chat_reply("echo: " + body["messages"][-1]["content"]), {}


def backend(server, cache=None, **kw):
    kw.setdefault("initial_backoff_s", 0.001)
    kw.setdefault("max_retries", 3)
    return OpenAIBackend(server.base_url, "test-model", api_key_env="SIMPLESAFE_TEST_KEY", cache=cache, **kw)


def test_round_trip_sends_messages_limits_and_key_header(monkeypatch):
    monkeypatch.setenv("SIMPLESAFE_TEST_KEY", SECRET)
    with LocalChatServer(echo) as server:
        b = backend(server, max_workers=4)
        prompts = ["hello", [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]]
        out = b.generate(prompts, GenParams(max_new_tokens=7, temperature=0.0, stop=["###"]))
        assert [str(t) for t in out] == ["echo: hello", "echo: hi"]
        assert all(t.ok for t in out)
        assert server.hits == 2
        bodies = sorted(server.bodies, key=lambda b: len(b["messages"]))
        assert bodies[0]["messages"] == [{"role": "user", "content": "hello"}]
        assert bodies[1]["messages"][0] == {"role": "system", "content": "be brief"}
        assert all(b["max_tokens"] == 7 and b["model"] == "test-model" and b["stop"] == ["###"] for b in bodies)
        assert all(h.get("Authorization") == f"Bearer {SECRET}" for h in server.headers)
        assert SECRET not in repr(b)


def test_missing_key_is_allowed_for_local_servers(monkeypatch):
    monkeypatch.delenv("SIMPLESAFE_TEST_KEY", raising=False)
    with LocalChatServer(echo) as server:
        out = backend(server).generate(["x"], GenParams(max_new_tokens=4))
        assert out[0] == "echo: x"
        assert "Authorization" not in server.headers[0]


def test_retries_429_with_retry_after_then_500_then_success():
    def flaky(body, hit):
        if hit == 0:
            return 429, {"error": {"message": "slow down"}}, {"Retry-After": "0"}
        if hit == 1:
            return 500, {"error": {"message": "boom"}}, {}
        return 200, chat_reply("fine"), {}

    with LocalChatServer(flaky) as server:
        b = backend(server, max_workers=1)
        out = b.generate(["q"], GenParams(max_new_tokens=4))
        assert out[0] == "fine" and out[0].ok
        assert server.hits == 3


def test_retry_after_header_is_honoured(monkeypatch):
    waits = []
    monkeypatch.setattr("tenacity.nap.time.sleep", lambda s: waits.append(s))

    def limited(body, hit):
        return (429, {"error": "rate"}, {"Retry-After": "2"}) if hit == 0 else (200, chat_reply("ok"), {})

    with LocalChatServer(limited) as server:
        out = backend(server, max_backoff_s=30).generate(["q"], GenParams(max_new_tokens=4))
    assert out[0] == "ok"
    assert waits == [2.0]


def test_persistent_failure_becomes_a_reject_without_leaking_the_key(monkeypatch):
    monkeypatch.setenv("SIMPLESAFE_TEST_KEY", SECRET)

    def broken(body, hit):
        return 503, {"error": {"message": f"upstream down; your key {SECRET} is fine"}}, {}

    with LocalChatServer(broken) as server:
        out = backend(server, max_retries=2).generate(["a", "b"], GenParams(max_new_tokens=4))
        assert server.hits == 6  # 3 attempts per prompt
    for t in out:
        assert not t.ok and t == ""
        assert "HTTP 503" in t.error and "failed after 3 attempts" in t.error
        assert SECRET not in t.error and "<redacted>" in t.error


def test_client_errors_are_not_retried():
    with LocalChatServer(lambda body, hit: (400, {"error": {"message": "bad request"}}, {})) as server:
        out = backend(server).generate(["a"], GenParams(max_new_tokens=4))
        assert server.hits == 1
    assert "HTTP 400" in out[0].error


@pytest.mark.parametrize("payload", [
    {"choices": []},
    {"choices": [{"message": {"role": "assistant", "content": None}}]},
    {"nothing": 1},
    b"this is not json",
    [1, 2, 3],
])
def test_malformed_completions_become_rejects(payload):
    with LocalChatServer(lambda body, hit: (200, payload, {})) as server:
        out = backend(server).generate(["a"], GenParams(max_new_tokens=4))
        assert server.hits == 1
    assert not out[0].ok and "malformed" in out[0].error


def test_interrupted_run_resumes_without_repeating_calls(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMPLESAFE_TEST_KEY", SECRET)
    prompts = [f"prompt {i}" for i in range(12)]
    params = GenParams(max_new_tokens=8, temperature=0.0)
    cache_path = tmp_path / "cache.sqlite"
    with LocalChatServer(echo) as server:
        cache = GenerationCache(cache_path)
        real_put = cache.put
        puts = []

        def put_then_crash(*a, **k):
            if len(puts) == 5:
                raise KeyboardInterrupt  # the job is killed after 5 finished calls
            puts.append(1)
            real_put(*a, **k)

        cache.put = put_then_crash
        b1 = backend(server, cache=cache, max_workers=1)
        with pytest.raises(KeyboardInterrupt):
            b1.generate(prompts, params)
        b1.close()
        first_hits = server.hits

        b2 = backend(server, cache=GenerationCache(cache_path), max_workers=3)
        out = b2.generate(prompts, params)
        assert [str(t) for t in out] == [f"echo: {p}" for p in prompts]
        assert server.hits - first_hits == len(prompts) - 5  # only the unfinished ones
        assert b2.cache_hits == 5
        b2.close()

        hits = server.hits
        b3 = backend(server, cache=GenerationCache(cache_path))
        again = b3.generate(prompts, params)
        assert server.hits == hits  # a rerun is free
        assert all(t.cached for t in again) and again == out
        b3.close()
    # The key is in no cached row.
    with sqlite3.connect(cache_path) as conn:
        dump = json.dumps(conn.execute("select * from gen").fetchall())
    assert SECRET not in dump


def test_failures_are_not_cached_so_a_rerun_retries_them(tmp_path):
    def half_broken(body, hit):
        text = body["messages"][-1]["content"]
        return (500, {"error": "x"}, {}) if text.endswith("odd") and hit < 4 else (200, chat_reply("ok " + text), {})

    prompts = ["a even", "b odd", "c even", "d odd"]
    with LocalChatServer(half_broken) as server:
        b = backend(server, cache=GenerationCache(tmp_path / "c.sqlite"), max_retries=0)
        first = b.generate(prompts, GenParams(max_new_tokens=4))
        assert [t.ok for t in first] == [True, False, True, False]
        server_hits = server.hits
        second = b.generate(prompts, GenParams(max_new_tokens=4))
        assert all(t.ok for t in second)
        assert server.hits - server_hits == 2  # only the two failures were sent again


def test_timeouts_are_retried_then_reported():
    import time

    def slow(body, hit):
        time.sleep(0.5)
        return 200, chat_reply("late"), {}

    with LocalChatServer(slow) as server:
        out = backend(server, timeout_s=0.1, max_retries=1).generate(["a"], GenParams(max_new_tokens=4))
        assert server.hits == 2
    assert not out[0].ok and "timed out" in out[0].error


def test_base_url_forms():
    with LocalChatServer(echo) as server:
        root = server.base_url[: -len("/v1")]
        for url in (server.base_url, server.base_url + "/", root, root + "/", server.base_url + "/chat/completions"):
            b = OpenAIBackend(url, "m", api_key_env=None)
            assert b.url == server.base_url + "/chat/completions"
            assert b.generate(["hi"], GenParams(max_new_tokens=2))[0] == "echo: hi"
    with pytest.raises(Exception, match="http"):
        OpenAIBackend("localhost:8000", "m")


def test_content_parts_and_legacy_text_are_read():
    replies = [{"choices": [{"message": {"role": "assistant", "content": [{"type": "text", "text": "a"},
                                                                          {"type": "text", "text": "b"}]}}]},
               {"choices": [{"text": "legacy"}]}]
    with LocalChatServer(lambda body, hit: (200, replies[hit], {})) as server:
        b = backend(server, max_workers=1)
        assert b.generate(["one"], GenParams(max_new_tokens=2)) == ["ab"]
        assert b.generate(["two"], GenParams(max_new_tokens=2)) == ["legacy"]
