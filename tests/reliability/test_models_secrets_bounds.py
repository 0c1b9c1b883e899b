"""Models, secrets and bounds.

- Weights load only from safetensors: a folder holding only ``pytorch_model.bin`` is
  refused with a clear ModelLoadError; no ``torch.load`` in the package without
  ``weights_only=True``; custom model code in a folder does not run unless asked.
- API keys come only from environment variables: a planted key is sent to the server
  (Authorization header) but appears nowhere in the output folder, cache, manifests, logs
  or the captured stdout/stderr of a `--debug` Self-Instruct run, even when the server
  echoes it back in errors and completions.
- Bounds: every HTTP call has a timeout and a token limit; a call to a server that sleeps
  past the timeout is retried, then becomes a reject with its reason, and the batch job
  still finishes.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simplesafe.errors import ModelLoadError
from simplesafe.llm.base import GenParams
from simplesafe.llm.local_server import LocalChatServer, chat_reply
from simplesafe.llm.openai_compat import OpenAIBackend

PACKAGE = Path(__file__).resolve().parents[2] / "simplesafe"
KEY = "sk-test-PLANTED-123"


# --- models ---------------------------------------------------------------------------------


def _bin_only_copy(src: Path, dst: Path) -> Path:
    import torch
    from safetensors.torch import load_file

    shutil.copytree(src, dst)
    state = load_file(str(dst / "model.safetensors"))
    (dst / "model.safetensors").unlink()
    torch.save(state, dst / "pytorch_model.bin")
    return dst


def test_pickle_weights_are_refused(tiny_model_dir, tmp_path):
    from simplesafe.models.load import load_causal_lm, load_sequence_classifier

    folder = _bin_only_copy(Path(tiny_model_dir), tmp_path / "bin_only")
    with pytest.raises(ModelLoadError, match="safetensors"):
        load_causal_lm(str(folder))
    with pytest.raises(ModelLoadError, match="safetensors"):
        load_sequence_classifier(str(folder), num_labels=1)
    # the same folder with safetensors weights loads
    assert load_causal_lm(str(tiny_model_dir)) is not None


def test_custom_model_code_does_not_run_unless_asked(tiny_model_dir, tmp_path, caplog):
    from simplesafe.models.load import load_causal_lm

    folder = tmp_path / "remote_code"
    shutil.copytree(tiny_model_dir, folder)
    marker = tmp_path / "code_ran"
    (folder / "modeling_evil.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "from transformers import LlamaForCausalLM\nclass EvilModel(LlamaForCausalLM):\n    pass\n")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(cfg))
    caplog.set_level(logging.WARNING, logger="simplesafe")
    try:
        load_causal_lm(str(folder))  # trust_remote_code defaults to False
    except Exception:
        pass  # refusing is fine too; running the code is not
    assert not marker.exists()
    assert not [r for r in caplog.records if "trust_remote_code" in r.getMessage()]


def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def test_package_never_unpickles_or_trusts_code_by_default():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for call in _calls(tree):
            name = ast.unparse(call.func)
            kw = {k.arg: k.value for k in call.keywords if k.arg}
            if name == "torch.load":
                wo = kw.get("weights_only")
                if not (isinstance(wo, ast.Constant) and wo.value is True):
                    offenders.append(f"{path.name}:{call.lineno} torch.load without weights_only=True")
            if name.endswith("pickle.load") or name.endswith("pickle.loads"):
                offenders.append(f"{path.name}:{call.lineno} {name}")
            trc = kw.get("trust_remote_code")
            if isinstance(trc, ast.Constant) and trc.value is True:
                offenders.append(f"{path.name}:{call.lineno} trust_remote_code=True hard-coded")
    assert offenders == []


# --- secrets ----------------------------------------------------------------------------------


def _seeds(path: Path) -> Path:
    topics = ["volcanoes", "the moon", "honey", "glaciers", "kites", "clocks", "bridges", "soap"]
    path.write_text("".join(json.dumps({"id": f"s{i}", "instruction": f"Explain how {t} work in simple words.",
                                        "instances": [{"input": "", "output": "..."}], "is_classification": False}) + "\n"
                            for i, t in enumerate(topics)))
    return path


WORDS = ("apple river stone cloud engine garden lantern pepper violin harbor candle meadow rocket pillow "
         "thunder marble feather copper island basket ladder mirror tunnel saddle puzzle").split()


def _words(k: int, n: int = 5) -> str:
    import random

    return " ".join(random.Random(k).sample(WORDS, n))


def _leaky_reply(body, hit, headers):
    """A server that checks the key and then misbehaves in ways that could leak it."""
    auth = headers.get("Authorization") or headers.get("authorization") or ""
    text = body["messages"][-1]["content"]
    if hit % 5 == 2:  # an error that quotes the key back, as some servers do
        return 500, {"error": {"message": f"upstream failure for key {auth}"}}, {}
    if hit % 7 == 4:
        return 401, {"error": {"message": f"Incorrect API key provided: {KEY}"}}, {}
    if text.endswith("Is it classification?"):
        return 200, chat_reply("No"), {}
    if text.endswith("Task 9:"):
        return 200, chat_reply(f"Write a note on {_words(len(text) * 7 + hit)}."), {}
    return 200, chat_reply(f"Output: A short note ({auth})."), {}  # a completion that echoes the key


def test_planted_api_key_never_reaches_disk_or_logs(tmp_path):
    seen_auth: list[str] = []

    def reply(body, hit):
        return 200, {}, {}  # replaced below once the server exists

    with LocalChatServer(reply) as server:
        def reply_with_headers(body, hit):
            headers = server.headers[hit]
            seen_auth.append(headers.get("Authorization", ""))
            return _leaky_reply(body, hit, headers)

        server.reply = reply_with_headers
        out = tmp_path / "si"
        env = {**os.environ, "SIMPLESAFE_TEST_KEY": KEY}
        env.pop("OPENAI_API_KEY", None)
        cmd = [sys.executable, "-m", "simplesafe.cli", "--debug", "synth", "self-instruct", "--seed-tasks",
               str(_seeds(tmp_path / "seeds.jsonl")), "--backend", "openai", "--base-url", server.base_url,
               "--model", "test-model", "--num-instructions", "3", "--out", str(out), "--api-key-env",
               "SIMPLESAFE_TEST_KEY", "--max-workers", "2", "--max-retries", "1", "max_prompts=30",
               "backend.max_backoff_s=0.05"]
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert seen_auth and all(a == f"Bearer {KEY}" for a in seen_auth)  # the key was used ...
    assert KEY not in res.stdout and KEY not in res.stderr  # ... but never printed or logged
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "seeds.jsonl"]
    assert any(p.name == "cache.sqlite" for p in files) and any(p.suffix == ".jsonl" for p in files)
    leaked = [str(p) for p in files if KEY.encode() in p.read_bytes()]
    assert leaked == []
    rejected = (out / "rejected.jsonl").read_text()
    assert "Incorrect API key provided: <redacted>" in rejected  # the failure was recorded, scrubbed
    assert "<redacted>" in (out / "sft.jsonl").read_text()  # so was the echo inside completions


def test_key_is_read_from_the_named_env_var_only(monkeypatch):
    monkeypatch.setenv("SIMPLESAFE_OTHER_KEY", KEY)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    got = []
    with LocalChatServer(lambda body, hit: (200, chat_reply("ok"), {})) as server:
        backend = OpenAIBackend(server.base_url, "m", api_key_env="OPENAI_API_KEY", max_retries=0)
        backend.generate(["hi"], GenParams(max_new_tokens=4))
        got.append(server.headers[0].get("Authorization"))
        assert KEY not in repr(backend) and KEY not in str(vars(backend).get("api_key_env"))
    assert got == [None]


# --- bounds -----------------------------------------------------------------------------------


def test_slow_call_times_out_is_retried_and_becomes_a_reject():
    def reply(body, hit):
        if "SLOW" in body["messages"][-1]["content"]:
            time.sleep(1.0)
        return 200, chat_reply("fine"), {}

    with LocalChatServer(reply) as server:
        backend = OpenAIBackend(server.base_url, "m", api_key_env=None, timeout_s=0.2, max_retries=1,
                                initial_backoff_s=0.01, max_backoff_s=0.01, max_workers=2)
        prompts = ["one", "SLOW two", "three", "four"]
        t0 = time.time()
        out = backend.generate(prompts, GenParams(max_new_tokens=7))
        took = time.time() - t0
        slow_hits = sum("SLOW" in b["messages"][-1]["content"] for b in server.bodies)
        assert all(b["max_tokens"] == 7 for b in server.bodies)  # the token limit is sent with every call
    assert [o.ok for o in out] == [True, False, True, True]
    assert [str(o) for i, o in enumerate(out) if i != 1] == ["fine"] * 3
    assert "timed out after 0.2s" in out[1].error and "2 attempts" in out[1].error
    assert slow_hits == 2  # first try + one retry
    assert took < 5  # bounded by the timeout, not by the server's sleep of 2 x 1 s + queueing


def test_one_bad_prompt_does_not_stop_a_batch_job(tmp_path):
    """Self-Instruct over HTTP: instance calls for one instruction hang; the job still finishes."""
    from simplesafe.cli import main

    def reply(body, hit):
        text = body["messages"][-1]["content"]
        if text.endswith("Is it classification?"):
            return 200, chat_reply("No"), {}
        if text.endswith("Task 9:"):
            marker = " zebra" if hit % 2 else ""  # every other instruction's instance call will hang
            return 200, chat_reply(f"Write a note on {_words(hit)}{marker}."), {}
        if "zebra" in text.rsplit("Task:", 1)[-1]:
            time.sleep(1.0)
        return 200, chat_reply("Output: A short note."), {}

    out = tmp_path / "si"
    with LocalChatServer(reply) as server:
        main(["synth", "self-instruct", "--seed-tasks", str(_seeds(tmp_path / "seeds.jsonl")), "--backend", "openai",
              "--base-url", server.base_url, "--model", "m", "--num-instructions", "4", "--out", str(out),
              "--api-key-env", "SIMPLESAFE_UNSET_KEY", "--max-workers", "2", "--timeout", "0.3", "--max-retries", "1",
              "max_prompts=40", "backend.max_backoff_s=0.05"])
        bodies = list(server.bodies)
    assert all("max_tokens" in b for b in bodies)
    kept = [json.loads(x) for x in (out / "instructions.jsonl").read_text().splitlines()]
    rejected = [json.loads(x) for x in (out / "rejected.jsonl").read_text().splitlines()]
    assert len(kept) == 4
    slow = [r for r in rejected if "timed out" in json.dumps(r)]
    assert slow, rejected
    assert all(r.get("reason") for r in slow)
