"""Filters in the style of datatrove: small classes, each keeps its rejects with a reason.

A filter has a ``name`` and ``filter(doc) -> bool | (bool, reason)``; docs are dicts
whose model-based scores (readability, toxicity) were computed beforehand in batches
(:mod:`simplesafe.data.scoring`). :func:`run_filters` applies a chain, counts kept and
rejected docs per step and split (the funnel), and appends every rejected doc to a
reject list with its stage, reason and scores. Nothing is dropped silently.

The thresholds are the project report's (section 2.2): answers under 20 words, articles
under 50 words, FRE < 60 or FKG >= 9, toxicity > 0.1 on any label, Reddit score < 4
(SFT only), trailing "Edit:" notes (SFT only), posts that are not questions or are meta
posts, and exact duplicates.

The question/meta-post rule (:func:`question_post_verdict`) is measured on a hand
labelled sample, ``tests/data/fixtures/question_posts.jsonl``; ``python bench/curate.py``
and ``tests/data/test_filters.py`` print and check its precision and recall.
"""

from __future__ import annotations

import abc
import math
import re
from collections import Counter
from typing import Iterable

from simplesafe.text.clean import find_wiki_markup, normalize_for_dedup

SCORE_FIELDS = ("n_words", "fre", "fkg", "toxicity", "score")


class Filter(abc.ABC):
    """Base class: subclasses set ``name`` and implement :meth:`filter`."""

    name = "filter"

    @abc.abstractmethod
    def filter(self, doc: dict):
        """Return True to keep ``doc``, or ``(False, reason)`` to reject it."""

    def __call__(self, doc: dict) -> tuple[bool, str | None]:
        out = self.filter(doc)
        if isinstance(out, tuple):
            keep, reason = out
            return bool(keep), (None if keep else reason)
        return bool(out), (None if out else self.name)


class MinWordsFilter(Filter):
    name = "min_words"

    def __init__(self, min_words: int, field: str = "n_words"):
        self.min_words, self.field = min_words, field

    def filter(self, doc):
        n = doc[self.field]
        return n >= self.min_words, f"{n} words < {self.min_words}"


class MaxWordsFilter(Filter):
    name = "max_words"

    def __init__(self, max_words: int, field: str = "n_words"):
        self.max_words, self.field = max_words, field

    def filter(self, doc):
        n = doc[self.field]
        return n <= self.max_words, f"{n} words > {self.max_words}"


class ReadabilityFilter(Filter):
    """The report's simplicity bar: keep FRE >= min_fre and FKG < max_fkg."""

    name = "readability"

    def __init__(self, min_fre: float = 60.0, max_fkg: float = 9.0):
        self.min_fre, self.max_fkg = min_fre, max_fkg

    def filter(self, doc):
        fre, fkg = doc["fre"], doc["fkg"]
        if fre is None or fkg is None or math.isnan(fre) or math.isnan(fkg):
            return False, "readability undefined (no words)"
        if fre < self.min_fre:
            return False, f"FRE {fre:.1f} < {self.min_fre:g}"
        if fkg >= self.max_fkg:
            return False, f"FKG {fkg:.1f} >= {self.max_fkg:g}"
        return True


class ToxicityFilter(Filter):
    """Keep text whose toxicity (the maximum over the backend's labels) is <= max_toxicity."""

    name = "toxicity"

    def __init__(self, max_toxicity: float = 0.1):
        self.max_toxicity = max_toxicity

    def filter(self, doc):
        t = doc["toxicity"]
        return t <= self.max_toxicity, f"toxicity {t:.3f} > {self.max_toxicity:g}"


class MinScoreFilter(Filter):
    """Reddit vote score >= min_score (answers without a vote score pass)."""

    name = "min_score"

    def __init__(self, min_score: float = 4):
        self.min_score = min_score

    def filter(self, doc):
        s = doc.get("score")
        if s is None or not doc.get("has_votes", True):
            return True
        return s >= self.min_score, f"score {s:g} < {self.min_score:g}"


class EditNoteFilter(Filter):
    name = "edit_note"

    def filter(self, doc):
        return not doc.get("has_edit", False), f"ends with an edit note: {str(doc.get('edit_note'))[:60]!r}"


class WikiMarkupFilter(Filter):
    name = "wiki_markup"

    def __init__(self, field: str = "text"):
        self.field = field

    def filter(self, doc):
        found = find_wiki_markup(doc[self.field])
        return found is None, f"wiki markup {found!r}"


class ExactDuplicateFilter(Filter):
    """Stateful: the first doc with a given normalised text is kept, later ones rejected."""

    name = "duplicate"

    def __init__(self, field: str = "text", id_field: str = "id"):
        self.field, self.id_field = field, id_field
        self.seen: dict[str, str] = {}

    def filter(self, doc):
        key = normalize_for_dedup(doc[self.field])
        if key in self.seen:
            return False, f"exact duplicate of {self.seen[key]}"
        self.seen[key] = str(doc.get(self.id_field))
        return True


# --- questions and meta posts -------------------------------------------------------

META_PATTERNS = [
    r"\[\s*meta\s*\]", r"^\s*meta\s*[:\-]", r"ask\s*anything\s*wednesday", r"\bsubscribers\b",
    r"\bmegathread\b", r"\[\s*mod(?:\s*post)?\s*\]", r"^\s*mod\s*post\b", r"\bannouncement\b",
    r"\b(?:weekly|monthly|daily)\s+(?:thread|discussion|feature|roundup|q&a)\b",
    r"\bfeedback\s+thread\b", r"\bstate\s+of\s+the\s+sub(?:reddit)?\b", r"\bnew\s+rules?\b",
    r"\brule\s+change", r"\bama\b", r"\bwe(?:'ve| have)?\s+(?:just\s+)?(?:hit|reached)\b",
    r"\bpanelist\s+(?:applications?|recruitment)\b", r"\bflair\s+(?:applications?|requests?)\b",
    r"\bthank\s+you\s+(?:all|everyone|r/)",
]
_META = re.compile("|".join(META_PATTERNS), re.IGNORECASE)
_PREFIX = re.compile(r"^\s*(?:\[[^\]]{0,20}\]\s*)?(?:eli5|explainlikeimfive|eli\s*5)\s*[:\-,.]*\s*", re.IGNORECASE)
_QUESTION_START = re.compile(
    r"^(?:what|what's|whats|why|how|how's|hows|when|where|who|whom|whose|which|is|are|was|were|am|"
    r"do|does|did|can|could|would|will|should|shall|may|might|must|has|have|had|isn't|aren't|"
    r"doesn't|don't|didn't|can't|couldn't|wouldn't|won't|shouldn't|wasn't|weren't|if|"
    r"explain|eli5|describe|tell\s+me|help\s+me\s+understand)\b",
    re.IGNORECASE,
)
_QUESTION_WORD = re.compile(r"\b(?:why|how|what|when|where|which|who|whose)\b", re.IGNORECASE)


def question_post_verdict(title: str, body: str = "") -> tuple[bool, str | None]:
    """``(True, None)`` if the post asks a question; else ``(False, reason)``.

    Rules: a meta keyword (``[META]``, "Ask Anything Wednesday", "subscribers", mod
    posts, weekly threads, ...) in the title rejects the post; otherwise the title must
    contain a question mark, start with a question word or auxiliary verb (after an
    "ELI5:" prefix), or contain a wh-word ("ELI5 the reason why ..."); a body with a
    question mark rescues a title that is a bare topic ("Black holes").
    """
    title = title if isinstance(title, str) else ""
    body = body if isinstance(body, str) else ""
    m = _META.search(title)
    if m:
        return False, f"meta post ({m.group(0).strip()!r})"
    if "?" in title:
        return True, None
    stripped = _PREFIX.sub("", title).strip()
    if _QUESTION_START.match(stripped):
        return True, None
    if _QUESTION_WORD.search(stripped):
        return True, None
    if "?" in body[:1000]:
        return True, None
    return False, "not a question (no '?', no question word)"


class QuestionPostFilter(Filter):
    name = "not_question"

    def filter(self, doc):
        return question_post_verdict(doc.get("title", ""), doc.get("body", ""))


# --- running a chain ----------------------------------------------------------------


class Funnel:
    """Kept/rejected counts per step and split: the stats table of a build."""

    def __init__(self):
        self.counts: Counter = Counter()
        self.order: list[str] = []

    def add(self, step: str, split: str, kept: int, rejected: int) -> None:
        if step not in self.order:
            self.order.append(step)
        self.counts[(step, split, "kept")] += kept
        self.counts[(step, split, "rejected")] += rejected

    def rows(self) -> list[dict]:
        splits = sorted({s for (_, s, _) in self.counts}, key=lambda s: ("train", "validation", "test", "all").index(s) if s in ("train", "validation", "test", "all") else 9)
        out = []
        for step in self.order:
            row = {"step": step}
            for split in splits:
                if (step, split, "kept") in self.counts or (step, split, "rejected") in self.counts:
                    row[f"{split} kept"] = self.counts[(step, split, "kept")]
                    row[f"{split} rejected"] = self.counts[(step, split, "rejected")]
            out.append(row)
        return out


def reject_record(doc: dict, stage: str, reason: str) -> dict:
    rec = {"id": doc.get("id"), "stage": stage, "reason": reason}
    for key in ("question_id", "split", "source"):
        if doc.get(key) is not None:
            rec[key] = doc[key]
    rec["scores"] = {k: doc[k] for k in SCORE_FIELDS if doc.get(k) is not None}
    return rec


def run_filters(
    docs: Iterable[dict],
    filters: list[Filter],
    stage: str,
    funnel: Funnel | None = None,
    rejects: list | None = None,
    split_key: str = "split",
) -> list[dict]:
    """Apply ``filters`` in order; return kept docs, count the funnel, keep rejects."""
    kept = list(docs)
    for flt in filters:
        survivors, n_rej = [], Counter()
        n_kept = Counter()
        for doc in kept:
            ok, reason = flt(doc)
            split = doc.get(split_key) or "all"
            if ok:
                survivors.append(doc)
                n_kept[split] += 1
            else:
                n_rej[split] += 1
                if rejects is not None:
                    rejects.append(reject_record(doc, stage, f"{flt.name}: {reason}"))
        if funnel is not None:
            for split in set(n_kept) | set(n_rej):  # nothing to count when no docs reached this step
                funnel.add(f"{stage}/{flt.name}", split, n_kept[split], n_rej[split])
        kept = survivors
    return kept
