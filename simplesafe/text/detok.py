"""Undo PTB-style tokenisation (``"the netherlands ."`` -> ``"the netherlands."``).

D-Wikipedia and TurkCorpus ship lower-cased, space-tokenised text; readability
formulas and language models both prefer ordinary spacing. Written by hand because
sacremoses' detokeniser mishandles the corpus's doubled quote marks (`` '' ``).
"""

from __future__ import annotations

import re

_RULES = [
    (re.compile(r"``\s*''"), ""),
    # parentheses emptied by the corpus's removal of pronunciations: "( ; or ; ; )"
    (re.compile(r"\s*\((?:\s*[;,]|\s*or\b)*\s*\)"), ""),
    (re.compile(r"``\s*"), '"'),
    (re.compile(r"\s*''"), '"'),
    (re.compile(r"\s+([.,;:!?%)\]}])"), r"\1"),
    (re.compile(r"([(\[{$])\s+"), r"\1"),
    (re.compile(r"\s+('s|'re|'ve|'ll|'d|n't|'m)\b"), r"\1"),
    (re.compile(r"\s*-\s*@?\s*-\s*"), "-"),
    (re.compile(r'"\s+([^"]*?)\s+"'), r'"\1"'),
    (re.compile(r"\s{2,}"), " "),
]


def detokenize(text: str) -> str:
    """Return ``text`` with spaces before punctuation and inside quotes removed.

    The rules run until the text stops changing, so the result is a fixed point ("---" -> "-", not "--");
    every rule that matches shortens the text, so this ends.
    """
    while True:
        before = text
        for pattern, repl in _RULES:
            text = pattern.sub(repl, text)
        text = text.strip()
        if text == before:
            return text
