"""Cleaning Reddit answers and Wikipedia articles: small pure functions on strings.

Follows the ELI5 cleaning steps of the project report ("Training LLMs on Simple, Safe
Text", section 2.2.1): strip Reddit markdown (with ``redditcleaner``), drop quoted text,
drop the ``_URL_n_`` placeholders and raw URLs, squeeze whitespace, and detect trailing
"Edit: ..." notes. The edit note is *flagged*, not removed: the SFT filter rejects such
answers, while the reward-model split may keep them as the ``rejected`` answer.
Wikipedia markup (tables, images, templates) is detected so the whole article can be
rejected (section 2.2.2).

Every function accepts any string and never raises on it (tested with Hypothesis).

    from simplesafe.text.clean import clean_answer
    clean_answer("> what?\\n\\nIt is **blue** _URL_0_.\\n\\nEdit: typo").text
    # 'It is blue.\\n\\nEdit: typo'   (edit_note='Edit: typo')

redditcleaner is used with its ``quote``, ``spoiler`` and ``link`` rules off: its quote
rule deletes any "gt" inside words ("length" -> "lenh"), its spoiler rule deletes the
text between any two exclamation marks' punctuation, and its link rule drops the link
text together with the URL. Those three are done here with anchored patterns instead.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

import redditcleaner

_QUOTE_LINE = re.compile(r"^[ \t]*(?:>|&gt;)[^\n]*(?:\n|$)", re.MULTILINE)
_URL_PLACEHOLDER = re.compile(r"\(?\s*_URL_\d+_\s*\)?", re.IGNORECASE)
_RAW_URL = re.compile(r"\(?\s*(?:https?://|ftp://|www\.)[^\s<>\]\)]+\)?", re.IGNORECASE)
_MD_LINK = re.compile(r"\[([^\]\n]*)\]\(([^)\n]*)\)")
_SPOILER = re.compile(r">!(.*?)!<", re.DOTALL)
_SPACES = re.compile(r"[ \t\f\v\u00a0]+")
_SPACE_BEFORE_PUNCT = re.compile(r" +([.,;:!?)])")
_EMPTY_BRACKETS = re.compile(r"\(\s*\)|\[\s*\]")
_MANY_NEWLINES = re.compile(r"\n\s*\n+")

# A trailing note such as "Edit: typo", "EDIT 2: thanks for the gold!", "ETA: source".
# Searched in the last paragraph(s) only: an "edit" in the middle of an answer is prose.
_EDIT_NOTE = re.compile(
    r"(?:^|\n|(?<=[.!?)\]])\s+)\s*(?:\*\*|\*|_)?\s*(?:(?:edit|eta|update|ps|p\.s\.)\s*(?:\d+|#\d+)?\s*[:\-–]|edited\s+(?:to|for)\b)",
    re.IGNORECASE,
)


def remove_quotes(text: str) -> str:
    """Drop quoted lines (Reddit ``>`` / ``&gt;`` block quotes)."""
    return _QUOTE_LINE.sub("", text)


def remove_urls(text: str) -> str:
    """Drop ELI5's ``_URL_n_`` placeholders and raw URLs; markdown links keep their text."""
    text = _MD_LINK.sub(lambda m: m.group(1), text)
    text = _URL_PLACEHOLDER.sub(" ", text)
    # a sentence that ends in a URL keeps its full stop: "see https://x.org." -> "see ."
    text = _RAW_URL.sub(lambda m: " " + m.group(0)[len(m.group(0).rstrip(".,;:!?")):], text)
    return _EMPTY_BRACKETS.sub(" ", text)


def remove_reddit_markdown(text: str) -> str:
    """Bold/italics, bullets, strike-through, code, superscript, tables, headings, spoilers.

    Removing one marker can expose another (``_ _a_(_`` -> ``_ a(_`` -> `` a(``), so the pass
    repeats until the text stops changing: cleaning a cleaned text changes nothing.
    """
    for _ in range(10):
        cleaned = _remove_markdown_once(text)
        if cleaned == text:
            break
        text = cleaned
    return text


def _remove_markdown_once(text: str) -> str:
    text = _SPOILER.sub(lambda m: m.group(1), text)
    paragraphs = text.split("\n")
    cleaned = [
        redditcleaner.clean(p, newline=False, quote=False, spoiler=False, link=False)
        for p in paragraphs
    ]
    text = "\n".join(cleaned)
    # redditcleaner leaves the underscore form of italics/bold and HTML entities
    text = re.sub(r"(?<!\w)_{1,2}([^_\n]+?)_{1,2}(?!\w)", r"\1", text)
    return html.unescape(text).replace("\u200b", "")


def normalize_whitespace(text: str) -> str:
    """One space between words, at most one blank line between paragraphs, no edge spaces."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _SPACES.sub(" ", text)
    text = "\n".join(line.strip() for line in text.split("\n"))
    text = _MANY_NEWLINES.sub("\n\n", text)
    text = re.sub(r"(?<!\n)\n(?!\n)", " ", text)  # single newlines are soft wraps
    text = _SPACES.sub(" ", text)
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
    return text.strip()


def find_edit_note(text: str, tail_chars: int = 400) -> int | None:
    """Start offset of a trailing "Edit: ..." note, or None.

    Only the last ``tail_chars`` characters are searched, and the note must run to the
    end of the text (the report's model learnt to *end* answers with edits).
    """
    if not text:
        return None
    start = max(0, len(text) - tail_chars)
    for m in _EDIT_NOTE.finditer(text, start):
        return m.start() if text[m.start()] != "\n" else m.start() + 1
    return None


def split_edit_note(text: str) -> tuple[str, str | None]:
    """``(body, note)``: the answer without its trailing edit note, and the note."""
    pos = find_edit_note(text)
    if pos is None:
        return text, None
    return text[:pos].rstrip(), text[pos:].strip() or None


def has_edit_note(text: str) -> bool:
    return find_edit_note(text) is not None


@dataclass(frozen=True)
class CleanedText:
    text: str
    edit_note: str | None = None

    @property
    def has_edit(self) -> bool:
        return self.edit_note is not None


def clean_reddit_text(text: str) -> str:
    """The report's ELI5 cleaning: markdown, quotes, URLs, whitespace (edit notes kept)."""
    if not isinstance(text, str):
        return ""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = remove_quotes(text)
    text = remove_urls(text)
    text = remove_reddit_markdown(text)
    return normalize_whitespace(text)


def clean_answer(text: str) -> CleanedText:
    """Clean an answer and flag (not strip) a trailing edit note."""
    cleaned = clean_reddit_text(text)
    _, note = split_edit_note(cleaned)
    return CleanedText(cleaned, note)


def clean_question(title: str, body: str | None = None) -> str:
    """A question is its title plus its body (``selftext``), both cleaned."""
    title = clean_reddit_text(title or "")
    body = clean_reddit_text(body or "")
    if body and body.lower() != title.lower():
        return f"{title}\n\n{body}" if title else body
    return title


# Wikipedia markup that survived text extraction: templates, tables, image/file links,
# category links, section headings, references. In the tokenised D-Wikipedia form
# the braces appear separated by spaces ("{ {"), so spaces inside are allowed.
_WIKI_MARKUP = re.compile(
    r"\{\s?\{|\}\s?\}|\{\s?\||\|\s?\}|\[\s?\[|\]\s?\]|\b(?:thumb|thumbnail)\s?\||"
    r"\b(?:file|image|category)\s?:\s?\S+\.(?:jpe?g|png|svg|gif)\b|"
    r"<\s?/?\s?(?:ref|gallery|table|div|span|br)\b|^\s*={2,}[^=\n]+={2,}\s*$|\|\s?-|"
    r"\bclass\s?=\s?\"?wikitable",
    re.IGNORECASE | re.MULTILINE,
)


def find_wiki_markup(text: str) -> str | None:
    """The first piece of wiki markup in ``text`` (for the reject reason), or None."""
    if not isinstance(text, str):
        return None
    m = _WIKI_MARKUP.search(text)
    return m.group(0) if m else None


def has_wiki_markup(text: str) -> bool:
    return find_wiki_markup(text) is not None


def normalize_for_dedup(text: str) -> str:
    """Lower-cased alphanumerics only: the key for exact-duplicate detection."""
    if not isinstance(text, str):
        return ""
    return " ".join(re.findall(r"[0-9a-z]+", text.lower()))
