"""Simple English Wikipedia loaders.

Two forms:

- ``lines``: one article per line (D-Wikipedia ``*.tgt``: lead sections, lower-cased and
  PTB-tokenised). The text is detokenised with :func:`simplesafe.text.detok.detokenize`;
  the article has no title and one paragraph. ``.txt`` files use this form.
- ``rows``: JSONL/JSON/CSV/Parquet rows with ``text`` (paragraphs separated by blank
  lines; ``text_field`` names another field) or ``paragraphs`` (a list of strings),
  optional ``title`` and ``id``. ``contrast_field`` names a field holding the aligned
  ordinary-English version (Wiki-Auto's ``normal``), kept as ``Article.contrast``.

    for art in load_simplewiki("data/simplewiki/simple_articles.txt"): ...
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

from simplesafe.data.sources import Article, parse_rows, row_id
from simplesafe.errors import DataError
from simplesafe.io import read_lines, read_rows
from simplesafe.text.detok import detokenize

_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


def _article_from_row(row: dict, path, line: int, source: str, text_field: str = "text",
                      contrast_field: str | None = None) -> Article:
    if text_field == "text" and "paragraphs" in row and row["paragraphs"] is not None:
        paras = row["paragraphs"]
        if not isinstance(paras, list) or not all(isinstance(p, str) for p in paras):
            raise DataError(path, line, "paragraphs", "expected a list of strings")
    elif text_field in row:
        text = row[text_field]
        if not isinstance(text, str):
            raise DataError(path, line, text_field, f"expected a string, got {type(text).__name__}")
        paras = _PARAGRAPH_BREAK.split(text)
    else:
        raise DataError(path, line, text_field,
                        "missing required field" + (" (or 'paragraphs')" if text_field == "text" else ""))
    paras = [p.strip() for p in paras if p and p.strip()]
    if not paras:
        raise DataError(path, line, text_field, "is empty")
    contrast = None
    if contrast_field:
        contrast = row.get(contrast_field)
        if not isinstance(contrast, str) or not contrast.strip():
            raise DataError(path, line, contrast_field, "missing or empty (the aligned ordinary-English text)")
        contrast = contrast.strip()
    title = row.get("title")
    if title is not None and not isinstance(title, str):
        raise DataError(path, line, "title", f"expected a string, got {type(title).__name__}")
    return Article(row_id(row, ("id",), f"{source}:{line}"), source, title, paras, str(path), line, contrast)


def load_simplewiki(
    path: str | Path,
    schema: str = "auto",
    source: str | None = None,
    on_error: str = "raise",
    rejects: list | None = None,
    limit: int | None = None,
    detok: bool | None = None,
    text_field: str = "text",
    contrast_field: str | None = None,
) -> Iterator[Article]:
    """Yield :class:`Article` records. ``detok`` defaults to True for the ``lines`` form."""
    path = Path(path)
    source = source or path.stem
    if schema == "auto":
        schema = "lines" if path.suffix.lower() in (".txt", ".tgt", ".src") else "rows"
    if schema not in ("lines", "rows"):
        raise DataError(path, None, None, f"unknown Wikipedia schema {schema!r}; use auto, lines or rows")
    if schema == "lines":
        detok = True if detok is None else detok
        n = 0
        for line, text in read_lines(path):
            if limit is not None and n >= limit:
                break
            if not text.strip():
                continue
            text = detokenize(text) if detok else text.strip()
            n += 1
            yield Article(f"{source}:{line}", source, None, [text], str(path), line)
        return

    def parse(row, _schema, file, line, src):
        art = _article_from_row(row, file, line, src, text_field, contrast_field)
        if detok:
            art.paragraphs = [detokenize(p) for p in art.paragraphs]
        return art

    yield from parse_rows(path, read_rows(path, on_error=on_error, rejects=rejects), "rows", None, parse, source,
                          on_error, rejects, limit)
