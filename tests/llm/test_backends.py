"""Cache, scripted, hf and vllm backends behind the one generate() interface."""

from __future__ import annotations

import pickle

import pytest

from simplesafe.errors import ConfigError
from simplesafe.llm.base import BackendConfig, GenParams, Generation, cache_key, make_backend
from simplesafe.llm.cache import GenerationCache
from simplesafe.llm.scripted import ScriptedBackend


def test_cache_key_depends_on_backend_model_prompt_and_params():
    p = GenParams(max_new_tokens=8)
    base = cache_key("hf", "m", "hi", p)
    assert base == cache_key("hf", "m", "hi", GenParams(max_new_tokens=8))
    assert len({base, cache_key("openai", "m", "hi", p), cache_key("hf", "m2", "hi", p),
                cache_key("hf", "m", "hi!", p), cache_key("hf", "m", "hi", GenParams(max_new_tokens=9)),
                cache_key("hf", "m", [{"role": "user", "content": "hi"}], p)}) == 6


def test_scripted_backend_rules_cache_and_failures(tmp_path):
    calls = []

    def count(text, params):
        calls.append(text)
        return f"n={len(calls)}"

    b = ScriptedBackend([(r"^fail", lambda t, p: 1 / 0), (r"^boom", "x"), (r"^count", count)],
                        cache=GenerationCache(tmp_path / "c.sqlite"))
    out = b.generate(["count a", "count b", "count a", "fail", "nothing matches"], GenParams(max_new_tokens=3))
    assert out[:3] == ["n=1", "n=2", "n=1"]  # the duplicate prompt is generated once
    assert "scripted error" in out[3].error and out[3] == ""
    assert out[4].error == "no scripted rule matches the prompt"
    assert b.calls == 4
    again = b.generate(["count a", "count b"], GenParams(max_new_tokens=3))
    assert again == ["n=1", "n=2"] and all(g.cached for g in again)
    assert len(calls) == 2
    # different params are a different cache entry
    assert b.generate(["count a"], GenParams(max_new_tokens=4)) == ["n=3"]


def test_generation_is_a_str_that_keeps_its_error_through_pickle():
    g = Generation("", error="HTTP 500")
    h = pickle.loads(pickle.dumps(g))
    assert h == "" and h.error == "HTTP 500" and not h.ok


def test_bad_prompts_are_type_errors():
    b = ScriptedBackend([(".*", "x")])
    with pytest.raises(TypeError):
        b.generate([[{"role": "user"}]])
    with pytest.raises(TypeError):
        b.generate([42])


def test_scripted_rules_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "rules.json"
    bad.write_text('[{"match": "x"}]')
    with pytest.raises(Exception) as err:
        make_backend(BackendConfig(backend="scripted", script=str(bad)))
    assert "rules.json" in str(err.value) and "response" in str(err.value)
    with pytest.raises(ConfigError):
        make_backend(BackendConfig(backend="scripted"))


def test_openai_backend_needs_a_base_url():
    with pytest.raises(ConfigError, match="base-url"):
        make_backend(BackendConfig(backend="openai", model="m"))


def test_vllm_missing_names_the_extra():
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match=r"simplesafe\[vllm\]"):
            make_backend(BackendConfig(backend="vllm", model="x"))
    else:
        pytest.skip("vllm is installed here; the missing-extra message cannot be checked")


def test_hf_batched_greedy_matches_one_at_a_time(tiny_model_dir, tmp_path):
    from simplesafe.llm.hf import HFBackend

    b = HFBackend(str(tiny_model_dir), batch_size=4)
    prompts = ["The river", "A very long prompt about the history of the old town and its people",
               [{"role": "user", "content": "Why is the sky blue?"}], "Cats"]
    params = GenParams(max_new_tokens=12, temperature=0.0)
    batched = b.generate(prompts, params)
    b.batch_size = 1
    single = b.generate(prompts, params.model_copy(update={"seed": 1}))  # new cache-less call
    assert [str(x) for x in batched] == [str(x) for x in single]
    assert all(g.ok for g in batched)
    # chat prompts go through the chat template
    assert b.render(prompts[2]).endswith("### Assistant:")


def test_hf_backend_uses_the_cache(tiny_model_dir, tmp_path):
    cfg = BackendConfig(backend="hf", model=str(tiny_model_dir), batch_size=2)
    with make_backend(cfg, tmp_path / "c.sqlite") as b:
        first = b.generate(["Once upon a time"] * 2 + ["The end"], GenParams(max_new_tokens=6, temperature=0.0))
        assert b.calls == 2
    with make_backend(cfg, tmp_path / "c.sqlite") as b2:
        second = b2.generate(["Once upon a time", "The end"], GenParams(max_new_tokens=6, temperature=0.0))
        assert b2.calls == 0 and second == [first[0], first[2]]
