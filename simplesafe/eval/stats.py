"""Intervals over prompts: the two-level (nested) bootstrap every evaluation table uses.

An evaluation draws several answers (seeds) per prompt. Answers to one prompt are not
independent: they share its difficulty and topic. An interval from resampling answers
would be too narrow, so every interval here resamples *prompts* with replacement and,
inside each drawn prompt, its answers with replacement (a two-stage cluster bootstrap,
Davison & Hinkley 1997, sec. 3.8; Field & Welsh 2007). With one answer per prompt this
is the ordinary bootstrap over prompts.

- :func:`nested_bootstrap_ci`: mean of a per-answer value with a percentile interval.
- :func:`paired_difference_ci`: mean over prompts of (mean of A's answers - mean of B's
  answers) to the same prompt, e.g. FRE of SFT minus FRE of the base model.
- Win rates are means of per-item scores (1 win, 0.5 tie, 0 loss) clustered by prompt, so
  they use :func:`nested_bootstrap_ci` as well.

    mean, lo, hi = nested_bootstrap_ci(values, prompt_ids, n_boot=1000, seed=0)
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def _clusters(values: Sequence[float], clusters: Sequence) -> np.ndarray:
    """A (n_clusters, max_size) array, NaN-padded, of the finite values of each cluster (first-seen order)."""
    groups: dict = {}
    for v, c in zip(values, clusters):
        if v is None:
            continue
        v = float(v)
        if math.isfinite(v):
            groups.setdefault(c, []).append(v)
    if not groups:
        return np.empty((0, 0))
    width = max(len(g) for g in groups.values())
    out = np.full((len(groups), width), np.nan)
    for i, g in enumerate(groups.values()):
        out[i, : len(g)] = g
    return out


def _within_means(table: np.ndarray, pick: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For drawn clusters ``pick`` (draws, n), each one's mean over its members resampled with replacement."""
    sizes = np.sum(~np.isnan(table), axis=1)[pick]  # (draws, n)
    m = table.shape[1]
    inner = np.floor(rng.random(pick.shape + (m,)) * sizes[..., None]).astype(int)  # member indices < size
    vals = table[pick[..., None], inner]
    valid = np.arange(m)[None, None, :] < sizes[..., None]  # a cluster of size k contributes k draws
    return np.where(valid, vals, 0.0).sum(-1) / sizes


def _draws(tables: list[np.ndarray], n_boot: int, rng: np.random.Generator, combine) -> np.ndarray:
    """Bootstrap statistics: clusters drawn once per draw (shared by all tables), members inside each."""
    n_c = tables[0].shape[0]
    out = np.empty(n_boot)
    for start in range(0, n_boot, 200):  # chunks keep memory bounded
        b = min(200, n_boot - start)
        pick = rng.integers(0, n_c, size=(b, n_c))
        out[start: start + b] = combine(*[_within_means(t, pick, rng).mean(-1) for t in tables])
    return out


def nested_bootstrap_ci(values: Sequence[float], clusters: Sequence, n_boot: int = 1000, seed: int = 0,
                        level: float = 0.95) -> tuple[float | None, float | None, float | None]:
    """(mean, low, high): the mean over clusters of each cluster's mean, with a two-level bootstrap interval.

    Every cluster (prompt) weighs the same whatever its number of answers. NaN and None
    values are left out; a cluster with none left is dropped. ``(None, None, None)`` when
    nothing remains.
    """
    table = _clusters(values, clusters)
    if table.size == 0:
        return None, None, None
    mean = float(np.nanmean(table, axis=1).mean())
    if table.shape[0] == 1 and np.sum(~np.isnan(table)) == 1:
        return mean, mean, mean
    draws = _draws([table], n_boot, np.random.default_rng(seed), lambda x: x)
    lo, hi = np.quantile(draws, [(1 - level) / 2, 1 - (1 - level) / 2])
    return mean, float(lo), float(hi)


def paired_difference_ci(a_values: Sequence[float], a_clusters: Sequence, b_values: Sequence[float],
                         b_clusters: Sequence, n_boot: int = 1000, seed: int = 0,
                         level: float = 0.95) -> tuple[float | None, float | None, float | None]:
    """(mean, low, high) of mean_prompt[mean(A answers) - mean(B answers)] over prompts both have.

    Prompts are resampled together (the pairing); inside a drawn prompt A's and B's
    answers are resampled separately, since they come from different models.
    """
    ta, tb = _clusters(a_values, a_clusters), _clusters(b_values, b_clusters)
    if ta.size == 0 or tb.size == 0:
        return None, None, None
    keys_a = list(dict.fromkeys(c for v, c in zip(a_values, a_clusters) if v is not None and math.isfinite(float(v))))
    keys_b = list(dict.fromkeys(c for v, c in zip(b_values, b_clusters) if v is not None and math.isfinite(float(v))))
    common = [k for k in keys_a if k in set(keys_b)]
    if not common:
        return None, None, None
    ia = [keys_a.index(k) for k in common]
    ib = [keys_b.index(k) for k in common]
    ta, tb = ta[ia], tb[ib]
    mean = float((np.nanmean(ta, axis=1) - np.nanmean(tb, axis=1)).mean())
    draws = _draws([ta, tb], n_boot, np.random.default_rng(seed), lambda x, y: x - y)
    lo, hi = np.quantile(draws, [(1 - level) / 2, 1 - (1 - level) / 2])
    return mean, float(lo), float(hi)
