"""Routing questions into the SFT, reward-model (RM) and RL datasets.

The rules of the project report (section 2.2.1), applied per question so that no question
lands in two datasets:

1. Answers that passed the common filters (length, readability, duplicates) are
   *usable*. A usable answer may still carry *flags* -- low Reddit score, toxicity,
   a trailing "Edit:" note (and, with ``rm_readability: rejected_only``, "not simple").
   A flagged answer never goes to SFT and appears in RM data only as ``rejected``.
2. Answers with distinct scores are *ranked* (tied answers are not). With at least two
   ranked answers and at least one valid pair (chosen ranked above rejected, chosen
   unflagged) the question goes to RM. Pairs follow a strategy: ``all`` (every valid
   pair), ``top2`` (the two best), ``best_worst``, or ``random`` (one random pair); at
   most ``max_pairs`` per question. Each question counts once: its kept pairs share a
   total weight of 1, so each of the n kept pairs weighs 1 / n. With every pair of K
   ranked answers kept that is 1 / C(K, 2) (InstructGPT's per-question normalisation,
   report eq. 10); a single-pair strategy gives its pair weight 1; under the
   ``max_pairs`` cap, or when pairs with a flagged chosen answer are left out, each kept
   pair weighs 1 / (number kept).
3. Otherwise, of tied answers one (unflagged, from the best-scored tie group) goes to
   SFT; a question with exactly one usable, unflagged answer goes to SFT.
4. Every other question -- including those whose answers were all filtered out --
   becomes an RL prompt.

Because a question belongs to one dataset only, a tied answer moves to SFT only when its
question is not already used for RM (the report's "move one of the tied answers to SFT"
would otherwise put the question in two datasets).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from itertools import combinations
from typing import Literal

Strategy = Literal["all", "top2", "best_worst", "random"]
STRATEGIES = ("all", "top2", "best_worst", "random")


@dataclass
class ScoredAnswer:
    id: str
    text: str
    score: float | None
    flags: list[str] = field(default_factory=list)  # reasons it may only be "rejected"
    extra: dict = field(default_factory=dict)  # scores for provenance

    @property
    def clean(self) -> bool:
        return not self.flags


@dataclass
class Route:
    dataset: Literal["sft", "rm", "rl"]
    reason: str
    sft_answer: ScoredAnswer | None = None
    pairs: list[tuple[ScoredAnswer, ScoredAnswer]] = field(default_factory=list)
    k: int = 0

    @property
    def weight(self) -> float:
        """Weight of each kept pair: 1 / (number of kept pairs), so the question's pairs sum to 1.

        Equals :func:`pair_weight` (1 / C(K, 2)) when every pair of the K ranked answers is kept.
        """
        return 1.0 / len(self.pairs) if self.pairs else 0.0


def pair_weight(k: int) -> float:
    """1 / C(K, 2): the weight of each pair when all C(K, 2) pairs of K ranked answers are kept."""
    if k < 2:
        raise ValueError(f"need at least 2 ranked answers for a pair, got {k}")
    return 1.0 / math.comb(k, 2)


def rank_answers(answers: list[ScoredAnswer]) -> tuple[list[ScoredAnswer], list[list[ScoredAnswer]]]:
    """``(ranked, tie_groups)``: answers with a unique score, best first; and the tied groups
    (best score first). Answers without a score count as one tie group, ranked last."""
    by_score: dict = {}
    for a in answers:
        by_score.setdefault(a.score, []).append(a)
    keys = sorted((s for s in by_score if s is not None), reverse=True)
    ranked = [by_score[s][0] for s in keys if len(by_score[s]) == 1]
    ties = [by_score[s] for s in keys if len(by_score[s]) > 1]
    if None in by_score:
        none_group = by_score[None]
        if len(none_group) > 1:
            ties.append(none_group)
    return ranked, ties


def valid_pairs(ranked: list[ScoredAnswer]) -> list[tuple[int, int]]:
    """Index pairs (i, j), i ranked above j, whose chosen answer is unflagged."""
    return [(i, j) for i, j in combinations(range(len(ranked)), 2) if ranked[i].clean]


def select_pairs(
    ranked: list[ScoredAnswer], strategy: Strategy, max_pairs: int, rng: random.Random
) -> list[tuple[ScoredAnswer, ScoredAnswer]]:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown pair strategy {strategy!r}; use {', '.join(STRATEGIES)}")
    cand = valid_pairs(ranked)
    if not cand:
        return []
    if strategy == "all":
        if len(cand) > max_pairs:
            cand = sorted(rng.sample(cand, max_pairs))
        chosen = cand
    elif strategy == "top2":
        chosen = [cand[0]]  # the best unflagged answer against the next one below it
    elif strategy == "best_worst":
        best = cand[0][0]
        chosen = [(best, max(j for i, j in cand if i == best))]
    else:
        chosen = [rng.choice(cand)]
    return [(ranked[i], ranked[j]) for i, j in chosen[:max_pairs]]


def route_question(
    answers: list[ScoredAnswer],
    strategy: Strategy = "all",
    max_pairs: int = 10,
    rng: random.Random | None = None,
    prefer: Literal["sft", "rl"] | None = None,
) -> Route:
    """Decide where one question goes; ``answers`` are its usable answers.

    ``prefer`` forces a seeded share of preference-pair questions to RL, or to SFT when
    the best answer is unflagged (see ``pairs_to_sft_fraction``).
    """
    rng = rng or random.Random(0)
    if prefer == "rl":
        return Route("rl", "sampled for RL prompts")
    if not answers:
        return Route("rl", "no usable answer")
    if prefer == "sft":
        best = sorted(answers, key=lambda a: -(a.score if a.score is not None else -math.inf))[0]
        if best.clean:
            return Route("sft", "sampled for SFT", sft_answer=best)
    ranked, ties = rank_answers(answers)
    if len(ranked) >= 2:
        pairs = select_pairs(ranked, strategy, max_pairs, rng)
        if pairs:
            return Route("rm", f"{len(ranked)} ranked answers", pairs=pairs, k=len(ranked))
    for group in ties:
        clean = [a for a in group if a.clean]
        if clean:
            return Route("sft", "one of tied answers", sft_answer=clean[0])
    if len(answers) == 1 and answers[0].clean:
        return Route("sft", "single answer", sft_answer=answers[0])
    if len(answers) == 1:
        return Route("rl", "single answer flagged: " + ", ".join(answers[0].flags))
    return Route("rl", "no valid pair and no unflagged tied or single answer")
