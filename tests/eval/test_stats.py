"""Intervals over prompts, answers nested: the numbers behind every evaluation table."""

import numpy as np

from simplesafe.eval.pairwise import bootstrap_ci
from simplesafe.eval.stats import nested_bootstrap_ci, paired_difference_ci


def _data(seed=0, n_prompts=40, seeds=3, prompt_sd=1.0, answer_sd=0.3, shift=0.0):
    rng = np.random.default_rng(seed)
    mu = rng.normal(0, prompt_sd, n_prompts)
    values = [m + shift + rng.normal(0, answer_sd) for m in mu for _ in range(seeds)]
    clusters = [p for p in range(n_prompts) for _ in range(seeds)]
    return values, clusters


def test_mean_is_the_mean_of_prompt_means():
    values = [1.0, 3.0, 10.0]  # prompt a: two answers, prompt b: one
    mean, lo, hi = nested_bootstrap_ci(values, ["a", "a", "b"], n_boot=200)
    assert mean == 6.0 and lo <= mean <= hi


def test_wider_than_resampling_answers_when_prompts_differ():
    values, clusters = _data()
    _, lo, hi = nested_bootstrap_ci(values, clusters, n_boot=2000)
    naive_lo, naive_hi = bootstrap_ci(values, n_boot=2000)
    assert (hi - lo) > 1.4 * (naive_hi - naive_lo)


def test_coverage_of_the_true_mean():
    hits = 0
    for s in range(40):
        values, clusters = _data(seed=s, n_prompts=30)
        _, lo, hi = nested_bootstrap_ci(values, clusters, n_boot=400, seed=s)
        hits += lo <= 0.0 <= hi
    assert hits >= 33  # nominal 95%: 38 of 40 expected


def test_missing_values_and_empty_input():
    mean, lo, hi = nested_bootstrap_ci([None, float("nan"), 2.0], [0, 1, 1], n_boot=50)
    assert mean == 2.0
    assert nested_bootstrap_ci([None], [0]) == (None, None, None)


def test_paired_difference_finds_a_shift_and_not_noise():
    a, ca = _data(seed=1, shift=0.5)
    b, cb = _data(seed=1)
    mean, lo, hi = paired_difference_ci(a, ca, b, cb, n_boot=1000)
    assert 0.3 < mean < 0.7 and lo > 0
    c, cc = _data(seed=1, shift=0.0)
    rng = np.random.default_rng(9)
    c = [x + rng.normal(0, 0.3) for x in c]
    mean, lo, hi = paired_difference_ci(c, cc, b, cb, n_boot=1000)
    assert lo < 0 < hi


def test_paired_difference_uses_shared_prompts_only():
    mean, _, _ = paired_difference_ci([5.0, 1.0], ["x", "y"], [2.0], ["x"], n_boot=50)
    assert mean == 3.0
