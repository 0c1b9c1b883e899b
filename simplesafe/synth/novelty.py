"""Self-Instruct's novelty filter without the O(N^2) ROUGE-L sweep, same decisions.

Self-Instruct (Wang et al., 2023, Sec. 2.4) keeps a new instruction only when its
ROUGE-L F-measure with every instruction already in the pool is below 0.7. Done
naively that is one LCS per (new, pooled) pair. This index computes the exact score
only for pooled instructions that *could* reach the threshold, using a bound that never
drops a true match:

    ROUGE-L F = 2 * LCS(a, b) / (|a| + |b|)          (rouge-score's F1 on tokens)
    LCS(a, b) <= overlap(a, b) = sum_t min(count_a(t), count_b(t))

So a pooled ``b`` matters only if ``2 * overlap / (|a| + |b|) >= threshold``. Two
cheap steps find those ``b`` without touching the rest of the pool:

1. Length filter: ``overlap <= min(|a|, |b|)`` implies ``|b|`` lies in
   ``[|a| * t / (2 - t), |a| * (2 - t) / t]``; so the smallest admissible ``|b|`` gives
   a minimum overlap ``m`` any match needs.
2. Prefix filter (as in PPJoin, Xiao et al., 2008): sort the query's token multiset
   from rarest to commonest; a ``b`` sharing at least ``m`` of its ``|a|`` elements
   must share one of the first ``|a| - m + 1``. Only the postings of those tokens are
   read (rare tokens have short postings), and only there is the overlap counted.

The survivors get the exact ROUGE-L from rouge-score itself (its tokenizer and its LCS),
so ``is_novel`` agrees with the brute-force loop on every input; the tests check this
against ``RougeScorer.score`` on hundreds of instructions, and ``python bench/synth.py``
measures the speed-up at 10k instructions.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass

from rouge_score import rouge_scorer, tokenizers

_TOKENIZER = tokenizers.DefaultTokenizer(use_stemmer=False)  # RougeScorer(["rougeL"])'s own default


def rouge_tokens(text: str) -> list[str]:
    """Tokens exactly as ``RougeScorer(["rougeL"])`` sees them."""
    return _TOKENIZER.tokenize(text)


def rouge_l(tokens_a: list[str], tokens_b: list[str]) -> float:
    """rouge-score's ROUGE-L F-measure on pre-tokenised text (symmetric in a, b)."""
    if not tokens_a or not tokens_b:
        return 0.0
    return rouge_scorer._score_lcs(tokens_a, tokens_b).fmeasure


@dataclass
class NoveltyResult:
    novel: bool
    max_rouge: float  # highest exact ROUGE-L among checked candidates (0.0 if none)
    closest: str | None  # the pooled instruction with that score
    exact_checks: int  # how many exact LCS computations this query needed


class NoveltyIndex:
    """An instruction pool answering "is this new text < threshold ROUGE-L to all of them?"."""

    def __init__(self, threshold: float = 0.7, texts: list[str] = ()):
        if not 0 < threshold <= 1:
            raise ValueError("threshold must be in (0, 1]")
        self.threshold = threshold
        self.texts: list[str] = []
        self.tokens: list[list[str]] = []
        self.counts: list[Counter] = []
        self.postings: dict[str, list[int]] = defaultdict(list)  # token -> ids of texts containing it
        self.exact_checks = 0
        for t in texts:
            self.add(t)

    def __len__(self) -> int:
        return len(self.texts)

    def add(self, text: str) -> None:
        toks = rouge_tokens(text)
        doc = len(self.texts)
        self.texts.append(text)
        self.tokens.append(toks)
        c = Counter(toks)
        self.counts.append(c)
        for t in c:
            self.postings[t].append(doc)

    def check(self, text: str) -> NoveltyResult:
        """Exact decision of ``max ROUGE-L(text, pool) < threshold``, scoring few candidates."""
        q = rouge_tokens(text)
        la = len(q)
        if la == 0 or not self.texts:
            # rouge-score gives F=0 against an empty token list: anything is novel then.
            return NoveltyResult(True, 0.0, None, 0)
        t = self.threshold
        lb_min = la * t / (2 - t)
        lb_max = la * (2 - t) / t
        # Smallest overlap any admissible b needs; a tiny epsilon keeps float rounding
        # from ever raising the bound above the true requirement.
        m = max(1, math.ceil(t * (la + lb_min) / 2 - 1e-9))
        qc = Counter(q)
        # Query multiset, rarest tokens first (ties by token so the order is deterministic).
        elems = sorted(q, key=lambda tok: (len(self.postings.get(tok, ())), tok))
        prefix = set(elems[: max(0, la - m + 1)])
        candidates: set[int] = set()
        for tok in prefix:
            candidates.update(self.postings.get(tok, ()))
        best, best_id, checks = 0.0, None, 0
        for d in sorted(candidates):
            lb = len(self.tokens[d])
            if lb < lb_min - 1e-9 or lb > lb_max + 1e-9:
                continue
            dc = self.counts[d]
            overlap = sum(min(n, dc[tok]) for tok, n in qc.items() if tok in dc)
            if 2 * overlap < t * (la + lb) - 1e-9:
                continue
            checks += 1
            score = rouge_l(self.tokens[d], q)
            if score > best:
                best, best_id = score, d
            if score >= t:
                break  # one match decides: not novel
        self.exact_checks += checks
        return NoveltyResult(best < t, best, self.texts[best_id] if best_id is not None else None, checks)

    def add_if_novel(self, text: str) -> NoveltyResult:
        res = self.check(text)
        if res.novel:
            self.add(text)
        return res


def brute_force_novel(texts: list[str], threshold: float = 0.7, pool: list[str] = ()) -> list[bool]:
    """The reference: each text vs every kept one with ``RougeScorer.score`` (O(N^2))."""
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    kept = list(pool)
    out = []
    for text in texts:
        novel = all(scorer.score(k, text)["rougeL"].fmeasure < threshold for k in kept)
        out.append(novel)
        if novel:
            kept.append(text)
    return out
