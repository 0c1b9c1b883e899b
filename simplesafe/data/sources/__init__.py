"""Source loaders: every raw data set becomes :class:`Question` or :class:`Article` records.

- :mod:`.eli5` -- Reddit QA: the Hugging Face ``eli5`` schema, ``eli5_category`` and
  generic ``question`` + ``answers: [{text, score}]`` rows (JSONL, JSON, CSV, Parquet).
- :mod:`.preferences` -- preference pairs: ``prompt/chosen/rejected``, the hh-rlhf
  dialogue form and the HaluQuestQA ``question_text/preferred_response/rejected_response`` TSV.
  A pair becomes a question with two answers, the preferred one ranked above the other
  (scores 1 and 0, ``has_votes=False`` so the vote-score filter does not apply).
- :mod:`.simplewiki` -- Simple English Wikipedia articles (title + paragraphs), including
  D-Wikipedia's one-article-per-line, lower-cased, tokenised text.

Loaders validate their schema: a bad row raises :class:`~simplesafe.errors.DataError`
naming file, line and field, or with ``on_error="skip"`` is appended to ``rejects``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SPLIT_ALIASES = {
    "train": "train", "training": "train", "train_eli5": "train", "train_asks": "train", "train_askh": "train",
    "validation": "validation", "valid": "validation", "val": "validation", "dev": "validation",
    "validation_eli5": "validation", "validation_asks": "validation", "validation_askh": "validation",
    "test": "test", "test_eli5": "test", "test_asks": "test", "test_askh": "test",
}


def normalize_split(value, path, line) -> str | None:
    from simplesafe.errors import DataError

    if value is None or value == "":
        return None
    key = str(value).strip().lower()
    if key not in SPLIT_ALIASES:
        raise DataError(path, line, "split", f"unknown split {value!r}; use train, validation or test")
    return SPLIT_ALIASES[key]


@dataclass
class Answer:
    id: str
    text: str
    score: float | None = None


@dataclass
class Question:
    """A question (title + body) with its answers, as read from a source file."""

    id: str
    source: str
    title: str
    body: str = ""
    answers: list[Answer] = field(default_factory=list)
    kind: str = "votes"  # "votes": ranked by Reddit score; "pair": a preference pair
    split: str | None = None  # a split fixed by the source, else assigned later
    subreddit: str | None = None
    file: str = ""
    line: int | None = None


@dataclass
class Article:
    id: str
    source: str
    title: str | None
    paragraphs: list[str]
    file: str = ""
    line: int | None = None
    contrast: str | None = None  # the aligned ordinary-English text, where the source has one


def row_id(row: dict, keys: tuple[str, ...], fallback: str) -> str:
    for key in keys:
        value = row.get(key)
        if value is not None and str(value).strip() != "":
            return str(value)
    return fallback


def parse_rows(path, rows, schema: str, detect, parse, source: str, on_error: str,
               rejects: list | None, limit: int | None):
    """Turn ``(line, row)`` pairs into records with ``parse(row, schema, path, line, source)``.

    The schema is detected from the first row when ``schema == "auto"``. A bad row raises
    its :class:`DataError`, or with ``on_error="skip"`` is appended to ``rejects`` with its
    file, line, field and reason. At most ``limit`` records are yielded.
    """
    from simplesafe.errors import DataError

    detected = None if schema == "auto" else schema
    n = 0
    for line, row in rows:
        if limit is not None and n >= limit:
            break
        try:
            if detected is None:
                detected = detect(row, path, line)
            record = parse(row, detected, path, line, source)
        except DataError as exc:
            if on_error != "skip":
                raise
            if rejects is not None:
                rejects.append({"file": str(path), "line": line, "field": exc.field, "reason": exc.problem})
            continue
        n += 1
        yield record

