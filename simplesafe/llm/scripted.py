"""A deterministic backend for tests and dry runs: answers come from rules, not a model.

Rules are ``(regex, response)`` pairs tried in order against the prompt text (chat
messages joined by newlines); the first match answers. A response may be a string or a
function ``(prompt_text, params) -> str``. A prompt no rule matches gets a failed
:class:`~simplesafe.llm.base.Generation` ("no scripted rule matches"), which the
generators record as a reject, just like an HTTP error after retries.

    backend = ScriptedBackend([(r"Is it classification\\?", "No"), (r".*", "Task 9: Name a fruit.")])

From the CLI: ``--backend scripted --script rules.json`` with
``[{"match": "regex", "response": "text"}, ...]``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable, Sequence, Union

from simplesafe.errors import ConfigError, DataError
from simplesafe.llm.base import Backend, GenParams, Generation, OnDone, Prompt, apply_stop

Response = Union[str, Callable[[str, GenParams], str]]


def prompt_text(prompt: Prompt) -> str:
    return prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)


class ScriptedBackend(Backend):
    name = "scripted"

    def __init__(self, rules: Sequence[tuple[str, Response]] | Callable[[str, GenParams], str], model: str = "rules",
                 cache=None):
        super().__init__(model, cache)
        if callable(rules):
            self.rules = [(re.compile(r".*", re.S), rules)]
        else:
            self.rules = [(re.compile(pat, re.S), resp) for pat, resp in rules]
        self.seen: list[str] = []  # prompt texts in call order (tests inspect them)

    @classmethod
    def from_file(cls, path: str | None, cache=None) -> "ScriptedBackend":
        if not path:
            raise ConfigError("the scripted backend needs a rules file: --script rules.json (or backend.script=...)")
        p = Path(path)
        if not p.exists():
            raise DataError(p, None, None, "file not found")
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataError(p, exc.lineno, None, f"invalid JSON: {exc.msg}") from None
        if not isinstance(data, list):
            raise DataError(p, None, None, "expected a JSON list of {match, response} objects")
        rules = []
        for i, r in enumerate(data, start=1):
            if not isinstance(r, dict) or not isinstance(r.get("response"), str):
                raise DataError(p, i, "response", "each rule needs a string 'response' (and an optional regex 'match')")
            rules.append((r.get("match", ".*"), r["response"]))
        return cls(rules, model=p.name, cache=cache)

    def _generate_uncached(self, prompts: list[Prompt], params: GenParams, on_done: OnDone) -> list[Generation]:
        out = []
        for j, prompt in enumerate(prompts):
            text = prompt_text(prompt)
            self.seen.append(text)
            gen = Generation("", error="no scripted rule matches the prompt")
            for pattern, resp in self.rules:
                if pattern.search(text):
                    try:
                        value = resp(text, params) if callable(resp) else resp
                        gen = Generation(apply_stop(value, params.stop))
                    except Exception as exc:  # a scripted failure stands for a failed API call
                        gen = Generation("", error=f"scripted error: {exc}")
                    break
            on_done(j, gen)
            out.append(gen)
        return out
