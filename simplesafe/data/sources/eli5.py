"""Reddit QA loaders: Hugging Face ``eli5``, ``eli5_category`` and generic QA rows.

Schemas (``schema="auto"`` picks one from the first row's columns):

- ``eli5``: ``q_id, title, selftext, subreddit, answers{a_id, text, score}, *_urls``
  (``answers`` is a dict of parallel lists, as in the HF ``eli5`` dataset);
- ``eli5_category``: the same plus ``category``; ``answers`` also carries ``text_urls``;
- ``generic``: ``question`` (or ``title`` + optional ``selftext``/``body``), and either
  ``answers: [{text, score}]`` or a single ``answer`` string (no score), optional ``id``.

A question is title + body. An optional ``split`` column (``train``, ``validation``,
``test`` or HF names like ``validation_eli5``) fixes the question's split.

    for q in load_qa("eli5_train.parquet"): print(q.id, len(q.answers))
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from simplesafe.data.sources import Answer, Question, normalize_split, parse_rows, row_id
from simplesafe.errors import DataError
from simplesafe.io import read_rows

SCHEMAS = ("auto", "eli5", "eli5_category", "generic")


def detect_schema(row: dict, path, line) -> str:
    answers = row.get("answers")
    if "q_id" in row and isinstance(answers, dict):
        return "eli5_category" if "category" in row else "eli5"
    if "question" in row or "title" in row:
        return "generic"
    raise DataError(path, line, None, "cannot tell the QA schema: expected 'q_id'+'answers' (eli5) or 'question'+'answers' columns "
                    f"(found {', '.join(sorted(row)) or 'none'})")


def _num(value, path, line, field):
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise DataError(path, line, field, "expected a number, got bool")
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DataError(path, line, field, f"expected a number, got {value!r}") from None


def _text(row: dict, field: str, path, line, required: bool = True) -> str:
    value = row.get(field)
    if value is None:
        if required:
            raise DataError(path, line, field, "missing required field")
        return ""
    if not isinstance(value, str):
        raise DataError(path, line, field, f"expected a string, got {type(value).__name__}")
    return value


def _answers_from_hf(row: dict, qid: str, path, line) -> list[Answer]:
    answers = row.get("answers")
    if not isinstance(answers, dict):
        raise DataError(path, line, "answers", "expected an object of lists {a_id, text, score}")
    texts = answers.get("text")
    if not isinstance(texts, list):
        raise DataError(path, line, "answers.text", "expected a list of strings")
    scores = answers.get("score")
    ids = answers.get("a_id") or [f"{qid}:a{i}" for i in range(len(texts))]
    if not isinstance(scores, list) or len(scores) != len(texts):
        raise DataError(path, line, "answers.score", f"expected a list of {len(texts)} numbers (one per answer)")
    if not isinstance(ids, list) or len(ids) != len(texts):
        raise DataError(path, line, "answers.a_id", f"expected a list of {len(texts)} ids (one per answer)")
    out = []
    for i, (aid, text, score) in enumerate(zip(ids, texts, scores)):
        if not isinstance(text, str):
            raise DataError(path, line, f"answers.text[{i}]", f"expected a string, got {type(text).__name__}")
        out.append(Answer(str(aid), text, _num(score, path, line, f"answers.score[{i}]")))
    return out


def _answers_from_generic(row: dict, qid: str, path, line) -> list[Answer]:
    if "answers" in row and row["answers"] is not None:
        answers = row["answers"]
        if isinstance(answers, str):  # CSV cells hold JSON
            import json

            try:
                answers = json.loads(answers)
            except json.JSONDecodeError as exc:
                raise DataError(path, line, "answers", f"invalid JSON in cell: {exc.msg}") from None
        if isinstance(answers, dict):
            return _answers_from_hf({"answers": answers}, qid, path, line)
        if not isinstance(answers, list):
            raise DataError(path, line, "answers", f"expected a list of {{text, score}} objects, got {type(answers).__name__}")
        out = []
        for i, a in enumerate(answers):
            if isinstance(a, str):
                out.append(Answer(f"{qid}:a{i}", a, None))
                continue
            if not isinstance(a, dict):
                raise DataError(path, line, f"answers[{i}]", f"expected an object, got {type(a).__name__}")
            text = a.get("text")
            if not isinstance(text, str):
                raise DataError(path, line, f"answers[{i}].text", "missing or not a string")
            aid = a.get("id", a.get("a_id", f"{qid}:a{i}"))
            out.append(Answer(str(aid), text, _num(a.get("score"), path, line, f"answers[{i}].score")))
        return out
    if "answer" in row:
        return [Answer(f"{qid}:a0", _text(row, "answer", path, line), _num(row.get("score"), path, line, "score"))]
    raise DataError(path, line, "answers", "missing required field (or a single 'answer')")


def parse_qa_row(row: dict, schema: str, path, line: int, source: str) -> Question:
    if schema == "auto":
        schema = detect_schema(row, path, line)
    if schema in ("eli5", "eli5_category"):
        qid = row_id(row, ("q_id", "id"), f"{source}:{line}")
        title = _text(row, "title", path, line)
        body = _text(row, "selftext", path, line, required=False)
        answers = _answers_from_hf(row, qid, path, line)
    elif schema == "generic":
        qid = row_id(row, ("id", "q_id", "question_id"), f"{source}:{line}")
        if "question" in row:
            title = _text(row, "question", path, line)
        else:
            title = _text(row, "title", path, line)
        body = _text(row, "selftext", path, line, required=False) or _text(row, "body", path, line, required=False)
        answers = _answers_from_generic(row, qid, path, line)
    else:
        raise DataError(path, line, None, f"unknown QA schema {schema!r}; use one of {', '.join(SCHEMAS)}")
    if not title.strip() and not body.strip():
        raise DataError(path, line, "title" if schema != "generic" else "question", "is empty")
    return Question(
        id=qid, source=source, title=title, body=body, answers=answers, kind="votes",
        split=normalize_split(row.get("split"), path, line),
        subreddit=row.get("subreddit") if isinstance(row.get("subreddit"), str) else None,
        file=str(path), line=line,
    )


def load_qa(
    path: str | Path,
    schema: str = "auto",
    source: str | None = None,
    on_error: str = "raise",
    rejects: list | None = None,
    limit: int | None = None,
) -> Iterator[Question]:
    """Yield :class:`Question` records from an ELI5-style QA file."""
    path = Path(path)
    yield from parse_rows(path, read_rows(path, on_error=on_error, rejects=rejects), schema, detect_schema,
                          parse_qa_row, source or path.stem, on_error, rejects, limit)
