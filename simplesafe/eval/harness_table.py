"""The report's Table 1 from harness results: does fine-tuning for simple answers cost capability?

One row per model, one column per leaderboard task: the harness's score and standard error,
and the difference to the base model with a 95% interval. The same arithmetic compares the
careful and the simple merge of a QLoRA adapter (the report, section 3.1).

How a difference and its interval are computed (difference of two independent proportions,
Wald):

    d  = s_model - s_base
    SE = sqrt(SE_model^2 + SE_base^2)
    95% interval: d +- 1.96 * SE

``SE`` of each score is the one the harness reports: the sample standard deviation of the
per-item scores over sqrt(n), i.e. sqrt(p(1-p)/(n-1)) for acc and acc_norm (proportions) and
the standard error of the mean for TruthfulQA's mc2 (a mean of per-item probabilities), so the
same formula is the difference of two means there. Both models answer the *same* items, whose
scores are positively correlated, so the independent-samples interval is conservative: wider
than a paired one. A difference counts as real only when its interval excludes 0.

The average column is the mean over the tasks a row has, with SE = sqrt(sum SE_t^2) / k
(tasks scored on different items, treated as independent).

    from simplesafe.eval.harness_table import table1
    t = table1({"base": base_results, "sft": sft_results}, base="base")
"""

from __future__ import annotations

import math

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def difference(a: dict | None, b: dict | None) -> dict | None:
    """``a - b`` for two ``{score, stderr}`` entries: ``{diff, se, ci, verdict}``, or None when either is missing."""
    if not a or not b or a.get("score") is None or b.get("score") is None:
        return None
    if a.get("stderr") is None or b.get("stderr") is None:
        return {"diff": a["score"] - b["score"], "se": None, "ci": None, "verdict": "no interval (standard error missing)"}
    d = a["score"] - b["score"]
    se = math.sqrt(a["stderr"] ** 2 + b["stderr"] ** 2)
    lo, hi = d - Z95 * se, d + Z95 * se
    verdict = "higher" if lo > 0 else "lower" if hi < 0 else "no clear difference"
    return {"diff": d, "se": se, "ci": [lo, hi], "verdict": verdict}


def average(tasks: dict, names: list[str]) -> dict | None:
    """Mean score over ``names`` with SE sqrt(sum SE^2)/k; None unless every task has a score and SE."""
    entries = [tasks.get(t) for t in names]
    if not names or any(not e or e.get("score") is None or e.get("stderr") is None for e in entries):
        return None
    k = len(entries)
    return {"score": sum(e["score"] for e in entries) / k,
            "stderr": math.sqrt(sum(e["stderr"] ** 2 for e in entries)) / k}


def _task_entry(t: dict) -> dict:
    return {k: t.get(k) for k in ("score", "stderr", "n", "shots", "metric")}


def table1(results: dict[str, dict], base: str = "base", merge_pair: tuple[str, str] | None = None,
           about: dict[str, str] | None = None, not_run: dict[str, str] | None = None) -> dict:
    """Rows, differences to ``base`` and (``merge_pair`` = (careful, simple)) the merge comparison.

    ``results``: model name -> :func:`simplesafe.eval.harness.evaluate_model` output, in row order.
    ``about``: what each row is (shown next to its name); ``not_run``: model -> why it has no row.
    """
    tasks: list[str] = []
    for res in results.values():
        for t in res.get("tasks", {}):
            if t not in tasks:
                tasks.append(t)
    skipped: dict[str, str] = {}
    for res in results.values():
        for t, why in (res.get("skipped") or {}).items():
            skipped.setdefault(t, why)
    first = next(iter(results.values()), {})
    settings = {"preset": first.get("preset"), "preset_about": first.get("preset_about"), "limit": first.get("limit"),
                "data_dir": first.get("data_dir"), "lm_eval_version": first.get("lm_eval_version"),
                "apply_chat_template": (first.get("settings") or {}).get("apply_chat_template"),
                "tasks": {t: {k: v for k, v in (first.get("tasks", {}).get(t) or {}).items()
                              if k in ("shots", "limit", "metric", "n", "n_available", "scored_split", "fewshot_from")}
                          for t in tasks}}
    rows = []
    for name, res in results.items():
        row_tasks = {t: _task_entry(res["tasks"][t]) for t in tasks if t in res.get("tasks", {})}
        rows.append({"model": name, "about": (about or {}).get(name, ""), "tasks": row_tasks,
                     "average": average(row_tasks, tasks)})
    by_name = {r["model"]: r for r in rows}
    differences = {}
    if base in by_name:
        b = by_name[base]
        for r in rows:
            if r["model"] == base:
                continue
            d = {t: difference(r["tasks"].get(t), b["tasks"].get(t)) for t in tasks}
            d["average"] = difference(r["average"], b["average"])
            differences[r["model"]] = d
    merge = None
    if merge_pair and all(m in by_name for m in merge_pair):
        careful, simple = (by_name[m] for m in merge_pair)
        merge = {"careful": merge_pair[0], "simple": merge_pair[1],
                 "differences": {**{t: difference(careful["tasks"].get(t), simple["tasks"].get(t)) for t in tasks},
                                 "average": difference(careful["average"], simple["average"])}}
    return {"base": base if base in by_name else None, "tasks": tasks, "settings": settings, "rows": rows,
            "differences": differences, "merge": merge, "skipped_tasks": skipped, "not_run": dict(not_run or {}),
            "method": "difference of two independent proportions (Wald): d = s_model - s_base, "
                      "SE = sqrt(SE_model^2 + SE_base^2), 95% interval d +- 1.96 SE; conservative, since both "
                      "models answer the same items"}
