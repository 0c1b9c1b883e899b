"""Comparing models on the same prompts: win rates per judge, paired differences, KL to a reference.

All three pair answers by prompt (and seed) and take their intervals from the nested
bootstrap of :mod:`simplesafe.eval.stats`:

- :func:`win_rates`: A's answers against B's to the same (prompt, seed), per judge: 1 win,
  0.5 tie, 0 loss; with AlpacaEval's length-controlled win rate and the share of decided
  comparisons won by the longer answer.
- :func:`differences`: mean over prompts of (A's mean - B's mean) per metric.
- :func:`kl_estimate`: mean over A's answers of the summed log-ratio ``log p_A - log p_ref``.
"""

from __future__ import annotations

import logging
import math

import numpy as np

log = logging.getLogger(__name__)


def _by_item(rows: list[dict]) -> dict[tuple[str, int], dict]:
    return {(str(r.get("id", r["instruction"])), r.get("seed", 0)): r for r in rows}


def win_rates(rows_a: list[dict], rows_b: list[dict], judges: dict, n_boot: int) -> dict:
    """Per judge: A's win rate against B on answers to the same (prompt, seed), nested CI over prompts."""
    from simplesafe.eval.annotators import compare_scores
    from simplesafe.eval.pairwise import length_controlled_win_rate
    from simplesafe.eval.stats import nested_bootstrap_ci

    a, b = _by_item(rows_a), _by_item(rows_b)
    items = [k for k in a if k in b]
    out = {}
    for name, judge in judges.items():
        scores, prefs, clusters, len_a, len_b = [], [], [], [], []
        for k in items:
            va, vb = a[k].get(f"judge/{name}"), b[k].get(f"judge/{name}")
            sa = judge.scores(np.array([math.nan if va is None else va]))[0]
            sb = judge.scores(np.array([math.nan if vb is None else vb]))[0]
            v = compare_scores(sa, sb, judge.spec.margin)
            prefs.append(v)
            scores.append({1.0: 1.0, 2.0: 0.0}.get(v, 0.5))
            clusters.append(k[0])
            len_a.append(len(a[k]["output"].strip()))
            len_b.append(len(b[k]["output"].strip()))
        if not scores:
            continue
        mean, lo, hi = nested_bootstrap_ci(scores, clusters, n_boot=n_boot, seed=1)
        try:
            lc = length_controlled_win_rate(prefs, len_a, len_b)
        except Exception as exc:  # a degenerate fit (all ties) must not sink the whole table
            log.warning("length-controlled win rate for %s failed: %s", name, exc)
            lc = None
        out[name] = {"win_rate": mean, "ci": [lo, hi], "n": len(scores), "n_prompts": len(set(clusters)),
                     "wins": int(sum(p == 1.0 for p in prefs)), "ties": int(sum(p == 1.5 for p in prefs)),
                     "losses": int(sum(p == 2.0 for p in prefs)), "lc_win_rate": lc,
                     "longer_wins": _longer_wins(prefs, len_a, len_b)}
    return out


def _longer_wins(prefs, len_a, len_b) -> float | None:
    decided = [(p, la, lb) for p, la, lb in zip(prefs, len_a, len_b) if p in (1.0, 2.0) and la != lb]
    if not decided:
        return None
    return float(np.mean([(p == 1.0) == (la > lb) for p, la, lb in decided]))


def differences(rows_a: list[dict], rows_b: list[dict], keys: tuple[str, ...], n_boot: int) -> dict:
    """Per metric: mean over shared prompts of (A's mean - B's mean), paired nested CI."""
    from simplesafe.eval.stats import paired_difference_ci

    out = {}
    for k in keys:
        if not any(k in r for r in rows_a):
            continue
        va = [float(r[k]) if r.get(k) is not None else None for r in rows_a]
        vb = [float(r[k]) if r.get(k) is not None else None for r in rows_b]
        ca = [str(r.get("id", r["instruction"])) for r in rows_a]
        cb = [str(r.get("id", r["instruction"])) for r in rows_b]
        mean, lo, hi = paired_difference_ci(va, ca, vb, cb, n_boot=n_boot, seed=2)
        out[k] = {"mean": mean, "ci": [lo, hi] if mean is not None else None}
    return out


def kl_estimate(model_spec: dict, ref_spec: dict, rows: list[dict], template: str | None, batch_size: int = 16) -> dict:
    """Mean over answers of sum_t [log p_model(y_t) - log p_ref(y_t)] on the model's own answers."""
    import torch

    from simplesafe.eval.generate import format_prompt, load_generation_model
    from simplesafe.models.templates import resolve_template
    from simplesafe.train.common import answer_logprobs

    sums = {}
    for key, spec in (("model", model_spec), ("ref", ref_spec)):
        lm, tok = load_generation_model(spec["model"], None, dtype="auto")
        tmpl = resolve_template(template, spec["model"], tok)
        prompts = [format_prompt(spec["prefix"] + r["instruction"], tmpl, tok) for r in rows]
        sums[key] = answer_logprobs(lm, tok, prompts, [r["output"] for r in rows], add_special_tokens=tmpl != "chat",
                                    batch_size=batch_size)
        del lm
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
    diff = np.asarray(sums["model"]) - np.asarray(sums["ref"])
    from simplesafe.eval.stats import nested_bootstrap_ci

    mean, lo, hi = nested_bootstrap_ci(diff.tolist(), [str(r.get("id")) for r in rows], n_boot=500, seed=3)
    return {"mean": mean, "ci": [lo, hi], "n": len(rows),
            "definition": "mean over answers of the summed log-ratio of the answer tokens (nats)"}
