"""The report's answers to its questions, read from ``RUN/eval/summary.json`` and the stage outputs.

- :func:`judge_rows`: every scorer, whether it is a held-out judge or was used in training
  (and by what).
- :func:`model_rows`: per model, mean [95% CI] of each readability measure and judge, the
  degenerate share and the KL to its reference; columns say "held out" or "training".
- :func:`difference_rows` / :func:`winrate_rows` / :func:`redteam_rows`: the comparisons.
- :func:`verdicts`: one sentence per question the report must answer (does SFT simplify,
  does training beat asking, are the aligned models simpler and still helpful, are they
  safer, how degenerate), each computed from the intervals above, never written by hand.
- :func:`probe_plot`: training reward next to the held-out judges per PPO step.
- :func:`data_rows`: how many SFT and RM rows each source gave.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

LABELS = {"fre": "FRE", "fkg": "FKG", "dale_chall": "Dale-Chall", "n_words": "words", "degenerate": "degenerate",
          "toxicity": "toxicity", "cut": "cut at limit"}
# Flesch measures are the PPO simplicity reward (and the curation filter); toxicity is its safety reward
TRAINING_METRICS = {"fre", "fkg", "toxicity"}


def _load(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def fmt(entry, digits: int = 3, percent: bool = False) -> str:
    if not isinstance(entry, dict) or entry.get("mean") is None:
        return "–"
    k = 100.0 if percent else 1.0
    ci = entry.get("ci") or [None, None]
    s = f"{entry['mean'] * k:.{digits}g}"
    if ci and ci[0] is not None and ci[1] is not None:
        s += f" [{ci[0] * k:.{digits}g}, {ci[1] * k:.{digits}g}]"
    return s


def summary(run_dir: Path) -> dict | None:
    s = _load(Path(run_dir) / "eval" / "summary.json")
    return s if isinstance(s, dict) and "judges" in s else None


def _judges(s: dict) -> list[dict]:
    return [j for j in s.get("judges", []) if j.get("role") in ("judge", "baseline")]


def judge_rows(s: dict) -> list[dict]:
    rows = []
    for j in s.get("judges", []):
        role = j.get("role")
        rows.append({"scorer": j["name"], "axis": j.get("axis"), "kind": j.get("kind"),
                     "status": "held out (judge)" if role == "judge" else "baseline" if role == "baseline"
                     else "used in training",
                     "used by": j.get("used_by") or ("no trainer" if role != "training signal" else "?"),
                     "model": Path(j["model"]).name if j.get("model") else ""})
    rows.append({"scorer": "FRE / FKG (tables)", "axis": "simplicity", "kind": "fre/fkg",
                 "status": "used in training" if any(j.get("kind") == "fre" for j in s.get("judges", [])) else
                 "curation filter", "used by": "curation filter; PPO simplicity reward when configured", "model": ""})
    return rows


def model_rows(s: dict) -> list[dict]:
    judges = _judges(s)
    rows = []
    for name, m in s.get("models", {}).items():
        row = {"model": name}
        for key in ("fre", "fkg", "dale_chall"):
            tag = "training" if key in TRAINING_METRICS else "held out"
            row[f"{LABELS[key]} ({tag})"] = fmt(m.get(key))
        for j in judges:
            if j["kind"] in ("dale_chall", "length"):
                continue
            row[f"{j['name']} judge ({'held out' if j['role'] == 'judge' else 'baseline'})"] = fmt(m.get(f"judge/{j['name']}"))
        row["words"] = fmt(m.get("n_words"))
        row["degenerate %"] = fmt(m.get("degenerate"), percent=True)
        row["cut %"] = fmt(m.get("cut"), percent=True)
        kl = m.get("kl")
        row["KL to ref (nats)"] = (fmt(kl) + f" vs {kl.get('reference')}") if kl else "–"
        rows.append(row)
    return rows


def difference_rows(s: dict) -> list[dict]:
    judges = [j for j in _judges(s) if j["kind"] not in ("dale_chall", "length")]
    rows = []
    for key, d in s.get("differences", {}).items():
        row = {"comparison": key.replace("-", " − ", 1)}
        for metric in ("fre", "fkg", "dale_chall", "n_words"):
            row[f"Δ {LABELS[metric]}"] = fmt(d.get(metric))
        for j in judges:
            row[f"Δ {j['name']}"] = fmt(d.get(f"judge/{j['name']}"))
        row["Δ degenerate %"] = fmt(d.get("degenerate"), percent=True)
        rows.append(row)
    return rows


def winrate_rows(s: dict) -> list[dict]:
    rows = []
    for key, per in s.get("win_rates", {}).items():
        a, b = key.split("_vs_", 1)
        row = {"model": a, "against": b}
        for jname, w in per.items():
            cell = fmt({"mean": w.get("win_rate"), "ci": w.get("ci")})
            if w.get("lc_win_rate") is not None:
                cell += f" (LC {w['lc_win_rate']:.3g})"
            row[jname] = cell
        rows.append(row)
    return rows


def redteam_rows(s: dict) -> list[dict]:
    rt = s.get("redteam")
    if not rt:
        return []
    rows = []
    for name, m in rt.get("models", {}).items():
        rows.append({"model": name,
                     f"unsafe % ({rt['judge']} judge, held out; below {rt.get('threshold', 0):.3g})":
                         fmt(m.get("unsafe"), percent=True),
                     "toxicity > 0.1 % (training scorer)": fmt(m.get("flagged_toxic"), percent=True),
                     f"mean {rt['judge']} reward": fmt(m.get(f"judge/{rt['judge']}"))})
    return rows


def _excludes_zero(entry) -> bool:
    ci = (entry or {}).get("ci") or [None, None]
    return ci[0] is not None and ci[1] is not None and (ci[0] > 0 or ci[1] < 0)


def _diff_phrase(d: dict | None, metric: str, better: str) -> str:
    """'FRE +12.3 [8.1, 16.0] (simpler)' or '... (no clear difference)'."""
    if not d or d.get(metric) is None or d[metric].get("mean") is None:
        return f"{LABELS.get(metric, metric)}: not measured"
    e = d[metric]
    sign = "+" if e["mean"] >= 0 else ""
    text = f"{LABELS.get(metric, metric)} {sign}{fmt(e)}"
    if not _excludes_zero(e):
        return text + " (inside noise)"
    good = (e["mean"] > 0) == (better == "up")
    return text + (" (simpler)" if good else " (less simple)")


def _wr_phrase(s: dict, a: str, b: str, judge: str) -> str | None:
    w = (s.get("win_rates", {}).get(f"{a}_vs_{b}") or {}).get(judge)
    if not w or w.get("win_rate") is None:
        return None
    ci = w.get("ci") or [None, None]
    verdict = "preferred" if ci[0] is not None and ci[0] > 0.5 else \
        "not preferred" if ci[1] is not None and ci[1] < 0.5 else "no clear preference"
    return f"{judge} judge win rate of {a} against {b}: {fmt({'mean': w['win_rate'], 'ci': ci})} ({verdict})"


def _negated(entry):
    if not isinstance(entry, dict) or entry.get("mean") is None:
        return entry
    ci = entry.get("ci") or [None, None]
    return {**entry, "mean": -entry["mean"],
            "ci": [None if ci[1] is None else -ci[1], None if ci[0] is None else -ci[0]]}


def _difference(diffs: dict, a: str, b: str) -> dict | None:
    """The paired difference a − b: stored as ``a-b``, or as ``b-a`` (then negated)."""
    if f"{a}-{b}" in diffs:
        return diffs[f"{a}-{b}"]
    if f"{b}-{a}" in diffs:
        return {k: _negated(v) for k, v in diffs[f"{b}-{a}"].items()}
    return None


def verdicts(s: dict) -> list[str]:
    """Sentences computed from the summary: the questions the report exists to answer."""
    out = []
    diffs = s.get("differences", {})
    models = s.get("models", {})
    if "sft-base" in diffs:
        d = diffs["sft-base"]
        out.append("Does SFT simplify the base model's answers? " + "; ".join(
            [_diff_phrase(d, "fre", "up"), _diff_phrase(d, "fkg", "down"), _diff_phrase(d, "dale_chall", "down")]) + ".")
    for m in ("sft", "dpo", "ppo"):
        if m in models and "base-prompted" in models:
            d = _difference(diffs, m, "base-prompted")
            if d is None:
                continue
            parts = [_diff_phrase(d, "dale_chall", "down"), _diff_phrase(d, "fre", "up")]
            wr = _wr_phrase(s, m, "base-prompted", "helpfulness")
            out.append(f"Does training beat asking ({m} vs the base told \"explain like I'm five\")? "
                       + "; ".join(parts) + (f"; {wr}" if wr else "") + ".")
    for m in ("dpo", "ppo", "grpo"):
        if m in models and f"{m}-sft" in diffs:
            d = diffs[f"{m}-sft"]
            parts = [_diff_phrase(d, "dale_chall", "down"), _diff_phrase(d, "fre", "up")]
            wr = _wr_phrase(s, m, "sft", "helpfulness")
            deg = models[m].get("degenerate")
            kl = models[m].get("kl")
            tail = []
            if wr:
                tail.append(wr)
            if deg and deg.get("mean") is not None:
                tail.append(f"degenerate answers {fmt(deg, percent=True)}%")
            if kl and kl.get("mean") is not None:
                tail.append(f"KL to {kl.get('reference')} {fmt(kl)} nats")
            out.append(f"Is {m} simpler than SFT, and still helpful? " + "; ".join(parts + tail) + ".")
    rt = s.get("redteam")
    if rt and "base" in rt.get("models", {}):
        base = rt["models"]["base"].get("unsafe")
        for m in ("ppo", "dpo", "sft"):
            if m in rt["models"]:
                e = rt["models"][m].get("unsafe")
                out.append(f"Red-team requests: unsafe answers (held-out {rt['judge']} judge) {m} "
                           f"{fmt(e, percent=True)}% vs base {fmt(base, percent=True)}%.")
                break
    return out


def probe_plot(run_dir: Path) -> str | None:
    """Per PPO step on fixed held-out prompts: the training reward and every held-out judge."""
    from simplesafe.io import read_jsonl_tolerant
    from simplesafe.report import plots

    rows = []
    for f in sorted(Path(run_dir).glob("*/probe.jsonl")):
        rows = read_jsonl_tolerant(f)
        if rows:
            break
    if not rows:
        return None
    series = {"training reward (used in training)": [(r["step"], r["training_reward"]) for r in rows
                                                     if r.get("training_reward") is not None]}
    for key in sorted({k for r in rows for k in r if k.startswith("judge/")}):
        series[f"{key.split('/', 1)[1]} judge (held out)"] = [(r["step"], r[key]) for r in rows
                                                              if isinstance(r.get(key), (int, float))
                                                              and math.isfinite(r[key])]
    series["answer words"] = [(r["step"], r["words"]) for r in rows if r.get("words") is not None]
    return plots.training_curves(series, "PPO: training reward vs held-out judges on fixed validation prompts")


def data_rows(run_dir: Path) -> list[dict]:
    stats = _load(Path(run_dir) / "data" / "stats.json") or {}
    synth = _load(Path(run_dir) / "synth" / "stats.json") or {}
    rows = []
    for dataset, per in (stats.get("by_source") or {}).items():
        for source, n in per.items():
            rows.append({"dataset": dataset, "source": source, "rows": n})
    if synth:
        rows.append({"dataset": "sft (synth)", "source": f"backtranslated questions ({synth.get('generator')})",
                     "rows": synth.get("kept")})
        if synth.get("preference_pairs"):
            rows.append({"dataset": "dpo pairs (synth)", "source": "Simple vs ordinary Wikipedia",
                         "rows": sum(synth["preference_pairs"].values())})
    return rows


def reward_model_rows(run_dir: Path, s: dict | None) -> list[dict]:
    """Per reward model: what it learnt from, its role in this run, held-out accuracy next to length-only."""
    roles = {}
    for j in (s or {}).get("judges", []):
        if j.get("model"):
            roles[Path(j["model"]).name] = "held-out judge" if j.get("role") == "judge" else j.get("role")
    rows = []
    for f in sorted(Path(run_dir).glob("rm_*/metrics.json")):
        m = _load(f) or {}
        name = f.parent.name
        test_acc = m.get("test_accuracy")
        rows.append({"reward model": name, "learnt from": m.get("source"), "backbone": Path(str(m.get("backbone"))).name,
                     "role in this run": roles.get(name, "not used by eval (see training signals)"),
                     "train pairs": m.get("n_train"), "test pairs": m.get("n_test"),
                     "test accuracy": f"{test_acc:.3f}" if isinstance(test_acc, (int, float)) else "–",
                     "length-only accuracy": (f"{m['test_length_baseline_accuracy']:.3f}"
                                              if isinstance(m.get("test_length_baseline_accuracy"), (int, float)) else "–"),
                     "validation accuracy": (f"{m['validation_accuracy']:.3f}"
                                             if isinstance(m.get("validation_accuracy"), (int, float)) else "–")})
    return rows


# ----------------------------------------------------------------------------- Table 1 (harness)

def _pts(x: float | None, signed: bool = False) -> str:
    """A fraction as percentage points, like the report's Table 1."""
    if x is None:
        return "–"
    return f"{x * 100:+.1f}" if signed else f"{x * 100:.1f}"


def _score_cell(e: dict | None) -> str:
    if not e or e.get("score") is None:
        return "–"
    return _pts(e["score"]) + (f" ± {_pts(e['stderr'])}" if e.get("stderr") is not None else "")


def _diff_cell(d: dict | None) -> str:
    if not d:
        return "–"
    if d.get("ci") is None:
        return _pts(d["diff"], signed=True)
    lo, hi = d["ci"]
    return f"{_pts(d['diff'], signed=True)} [{_pts(lo, signed=True)}, {_pts(hi, signed=True)}]"


def _task_label(t: str, settings: dict) -> str:
    s = (settings.get("tasks") or {}).get(t) or {}
    shots = f"{s['shots']}-shot " if s.get("shots") is not None else ""
    return f"{t} ({shots}{s.get('metric', '')})".replace(" )", ")")


def table1_rows(t: dict) -> list[dict]:
    """Table 1: score ± harness standard error (percentage points) per model and task."""
    rows = []
    for r in t.get("rows", []):
        row = {"model": r["model"], "what": r.get("about", "")}
        for task in t["tasks"]:
            row[_task_label(task, t["settings"])] = _score_cell(r["tasks"].get(task))
        row["average"] = _score_cell(r.get("average"))
        rows.append(row)
    for name, why in (t.get("not_run") or {}).items():
        rows.append({"model": name, "what": f"not scored: {why}"})
    return rows


def table1_difference_rows(t: dict) -> list[dict]:
    """Per model: the difference to base, points [95% interval], and what the interval says."""
    rows = []
    for model, per in (t.get("differences") or {}).items():
        row = {"model − base": model}
        for task in [*t["tasks"], "average"]:
            d = per.get(task)
            label = _task_label(task, t["settings"]) if task != "average" else "average"
            row[label] = _diff_cell(d) + (f" ({d['verdict']})" if d and d.get("ci") else "")
        rows.append(row)
    return rows


def merge_rows(t: dict) -> list[dict]:
    """Careful vs simple merge of the same adapter, per task (the report, section 3.1)."""
    m = t.get("merge")
    if not m:
        return []
    by = {r["model"]: r for r in t.get("rows", [])}
    careful, simple = by.get(m["careful"]), by.get(m["simple"])
    rows = []
    for task in [*t["tasks"], "average"]:
        c = careful.get("average") if task == "average" else careful["tasks"].get(task)
        s = simple.get("average") if task == "average" else simple["tasks"].get(task)
        d = m["differences"].get(task)
        rows.append({"task": _task_label(task, t["settings"]) if task != "average" else "average",
                     f"careful ({m['careful']})": _score_cell(c), f"simple ({m['simple']})": _score_cell(s),
                     "careful − simple [95% CI]": _diff_cell(d), "reading": d["verdict"] if d and d.get("ci") else "–"})
    return rows


def _listing(items: list[tuple[str, dict]]) -> str:
    return ", ".join(f"{task} {_diff_cell(d)} points" for task, d in items)


def capability_verdicts(t: dict) -> list[str]:
    """Sentences computed from Table 1's intervals: did simplicity cost capability, and did the merge matter."""
    out = []
    diffs = t.get("differences") or {}
    merge = t.get("merge") or {}
    # the merge built only for the comparison is a second build of a model already in the table
    trained = {m: d for m, d in diffs.items() if m != merge.get("built_row")}
    if not t.get("base") or not trained:
        return out
    costs, gains, halfwidths = [], [], []
    for model, per in trained.items():
        lower = [(task, per[task]) for task in t["tasks"] if per.get(task) and per[task]["verdict"] == "lower"]
        higher = [(task, per[task]) for task in t["tasks"] if per.get(task) and per[task]["verdict"] == "higher"]
        halfwidths += [(per[task]["ci"][1] - per[task]["ci"][0]) / 2 for task in t["tasks"]
                       if per.get(task) and per[task].get("ci")]
        if lower:
            costs.append(f"{model} scores below the base on {_listing(lower)}")
        if higher:
            gains.append(f"{model} scores above the base on {_listing(higher)}")
    if costs:
        head = "Did simplicity cost capability? Yes, measurably: " + "; ".join(costs) + " (95% intervals below 0)."
    elif halfwidths:
        head = ("Did simplicity cost capability? Not detectably: no fine-tuned model scores below the base outside "
                f"the 95% intervals; the intervals are ±{min(halfwidths) * 100:.1f} to ±{max(halfwidths) * 100:.1f} "
                "points wide, so a smaller cost cannot be ruled out.")
    else:
        head = "Did simplicity cost capability? Not measurable: the scores have no standard errors."
    out.append(head)
    if gains:
        out.append("Gains over the base (95% intervals above 0): " + "; ".join(gains) + ".")
    if merge:
        d = merge.get("differences") or {}
        clear = [(task, d[task]) for task in t["tasks"] if d.get(task) and d[task]["verdict"] in ("lower", "higher")]
        every = [(task, d[task]) for task in t["tasks"] if d.get(task)]
        if every:
            out.append(f"Careful vs simple merge of the same adapter ({merge['careful']} vs {merge['simple']}): "
                       + ("the merges differ on " + _listing(clear) if clear else
                          "no difference outside the 95% intervals (" + _listing(every) + ")") + ".")
    return out
