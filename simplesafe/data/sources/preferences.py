"""Preference-pair loaders: ``prompt/chosen/rejected``, hh-rlhf dialogues, HaluQuestQA TSV.

Schemas (``schema="auto"`` picks one from the first row's columns):

- ``pairs``: ``prompt`` (or ``question``), ``chosen``, ``rejected``, optional ``id``;
- ``hh-rlhf``: ``chosen`` and ``rejected`` full dialogues
  (``"\\n\\nHuman: ...\\n\\nAssistant: ..."``). The prompt is the dialogue before the last
  ``Assistant:`` turn (for a single turn: the human's message); the answers are the
  two last assistant turns;
- ``haluquestqa``: ``question_text``, ``preferred_response``, ``rejected_response``
  (TAB-separated; the id is ``source_file`` or the unnamed index column).

Every pair becomes a :class:`~simplesafe.data.sources.Question` of ``kind="pair"``
with the preferred answer scored 1 and the other 0 (K = 2 ranked answers).

    for q in load_preference_pairs("data/eli5/lfqa_preferences.tsv"): ...
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from simplesafe.data.sources import Answer, Question, normalize_split, parse_rows, row_id
from simplesafe.errors import DataError
from simplesafe.io import read_rows, require

SCHEMAS = ("auto", "pairs", "hh-rlhf", "haluquestqa")
HUMAN, ASSISTANT = "\n\nHuman:", "\n\nAssistant:"


def detect_schema(row: dict, path, line) -> str:
    if "question_text" in row and "preferred_response" in row:
        return "haluquestqa"
    if "chosen" in row and "rejected" in row:
        if "prompt" in row or "question" in row:
            return "pairs"
        return "hh-rlhf"
    raise DataError(path, line, None, "cannot tell the preference schema: expected prompt/chosen/rejected, "
                    f"chosen/rejected dialogues, or question_text/preferred_response/rejected_response (found {', '.join(sorted(row))})")


def split_dialogue(text: str, path, line, field: str) -> tuple[str, str]:
    """hh-rlhf: ``(prompt dialogue, final assistant answer)``."""
    pos = text.rfind(ASSISTANT)
    if pos < 0:
        raise DataError(path, line, field, "no '\\n\\nAssistant:' turn in the dialogue")
    prompt, answer = text[:pos], text[pos + len(ASSISTANT):]
    return prompt, answer.strip()


def prompt_text(dialogue_prefix: str) -> str:
    """A single human turn becomes the bare question; longer dialogues stay transcripts."""
    turns = dialogue_prefix.strip()
    if turns.startswith("Human:"):
        turns = turns[len("Human:"):]
    if HUMAN.strip() not in turns and ASSISTANT.strip() not in turns:
        return turns.strip()
    return "Human: " + turns.strip()


def parse_pair_row(row: dict, schema: str, path, line: int, source: str) -> Question:
    if schema == "auto":
        schema = detect_schema(row, path, line)
    if schema == "pairs":
        field = "prompt" if "prompt" in row else "question"
        prompt = require(row, field, path, line)
        chosen = require(row, "chosen", path, line)
        rejected = require(row, "rejected", path, line)
        qid = row_id(row, ("id", "prompt_id", "question_id"), f"{source}:{line}")
    elif schema == "hh-rlhf":
        c_full = require(row, "chosen", path, line)
        r_full = require(row, "rejected", path, line)
        c_prompt, chosen = split_dialogue(c_full, path, line, "chosen")
        r_prompt, rejected = split_dialogue(r_full, path, line, "rejected")
        if c_prompt.strip() != r_prompt.strip():
            raise DataError(path, line, "rejected", "the dialogue before the last assistant turn differs from 'chosen'")
        prompt = prompt_text(c_prompt)
        qid = row_id(row, ("id",), f"{source}:{line}")
    elif schema == "haluquestqa":
        prompt = require(row, "question_text", path, line)
        chosen = require(row, "preferred_response", path, line)
        rejected = require(row, "rejected_response", path, line)
        qid = row_id(row, ("id", "source_file", "_index"), f"{source}:{line}")
        qid = qid[:-4] if qid.endswith(".txt") else qid
    else:
        raise DataError(path, line, None, f"unknown preference schema {schema!r}; use one of {', '.join(SCHEMAS)}")
    if not chosen.strip():
        raise DataError(path, line, "chosen", "is empty")
    if not rejected.strip():
        raise DataError(path, line, "rejected", "is empty")
    return Question(
        id=qid, source=source, title=prompt, body="",
        answers=[Answer(f"{qid}:chosen", chosen, 1.0), Answer(f"{qid}:rejected", rejected, 0.0)],
        kind="pair", split=normalize_split(row.get("split"), path, line), file=str(path), line=line,
    )


def load_preference_pairs(
    path: str | Path,
    schema: str = "auto",
    source: str | None = None,
    on_error: str = "raise",
    rejects: list | None = None,
    limit: int | None = None,
) -> Iterator[Question]:
    path = Path(path)
    yield from parse_rows(path, read_rows(path, on_error=on_error, rejects=rejects), schema, detect_schema,
                          parse_pair_row, source or path.stem.replace(".jsonl", ""), on_error, rejects, limit)
