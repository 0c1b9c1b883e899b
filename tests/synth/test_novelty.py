"""The indexed novelty filter makes exactly the brute-force ROUGE-L decisions."""

from __future__ import annotations

import json
import random

import pytest
from rouge_score import rouge_scorer

from simplesafe.synth.novelty import NoveltyIndex, brute_force_novel, rouge_l, rouge_tokens


def near_duplicates(seed_texts: list[str], n: int, seed: int) -> list[str]:
    """Instructions built from seed tasks by edits of every size, so many pairs sit near 0.7."""
    rng = random.Random(seed)
    words = [w for t in seed_texts for w in t.split()]
    out = []
    for _ in range(n):
        base = rng.choice(seed_texts + out[-50:] if out else seed_texts).split()
        kind = rng.random()
        toks = list(base)
        for _ in range(rng.randint(0, 4)):
            op = rng.random()
            if op < 0.4 and toks:
                toks[rng.randrange(len(toks))] = rng.choice(words)
            elif op < 0.7:
                toks.insert(rng.randint(0, len(toks)), rng.choice(words))
            elif len(toks) > 1:
                del toks[rng.randrange(len(toks))]
        if kind < 0.15:
            rng.shuffle(toks)  # same multiset, low LCS: the bound must not be mistaken for the score
        if kind > 0.95:
            toks = [rng.choice(["!!", "?", "..."])]  # no ROUGE tokens at all
        out.append(" ".join(toks))
    return out


@pytest.fixture(scope="module")
def seed_texts(bundled_data):
    rows = [json.loads(line) for line in (bundled_data / "self-instruct" / "seed_tasks.jsonl").open()]
    return [r["instruction"] for r in rows]


@pytest.mark.parametrize("threshold", [0.7, 0.5, 0.9])
def test_index_decisions_equal_brute_force(seed_texts, threshold):
    pool = seed_texts[:60]
    candidates = near_duplicates(seed_texts, 400, seed=int(threshold * 10))
    expected = brute_force_novel(candidates, threshold, pool=pool)
    index = NoveltyIndex(threshold, pool)
    got = [index.add_if_novel(c).novel for c in candidates]
    assert got == expected
    # the test is only meaningful when both outcomes occur often
    assert 40 < sum(expected) < len(expected) - 40
    # and the index really skipped most exact computations
    assert index.exact_checks < 0.2 * len(candidates) * len(index)


def test_scores_are_rouge_scores_own():
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    a, b = "Write a poem about the sea, please!", "please write the poem about a blue sea"
    assert rouge_tokens(a) == scorer._tokenizer.tokenize(a)
    assert rouge_l(rouge_tokens(a), rouge_tokens(b)) == scorer.score(a, b)["rougeL"].fmeasure


def test_check_reports_the_closest_match():
    index = NoveltyIndex(0.7, ["Give three tips for staying healthy.", "Translate the sentence into French."])
    res = index.check("Give three tips for staying healthy and happy.")
    assert not res.novel and res.closest == "Give three tips for staying healthy." and res.max_rouge >= 0.7
    assert index.check("Name the capital city of Peru.").novel
    assert index.check("???").novel  # nothing to compare: rouge-score gives 0
