"""Render a run directory into one self-contained HTML report (inline CSS, base64 PNG plots).

    simplesafe report runs/demo                 # writes runs/demo/report.html
    simplesafe report runs/demo --out /tmp/r.html

What it reads (each part is optional; a missing part shows "not run"):

- ``RUN/eval*/metrics/<model>.json`` and ``<model>.answers.jsonl``: metric tables
  (per eval set x model) and readability distributions (:mod:`simplesafe.eval.run`).
- ``RUN/eval*/pairwise/<a>_vs_<b>/summary.json``: win rates with CIs, LC win rates, biases.
- ``RUN/eval*/rubric/<model>/summary.json``: rubric grades.
- ``RUN/eval*/harness/<model>.json``: Open LLM Leaderboard tasks.
- ``RUN/eval*/generations/<model>.jsonl``: the side-by-side answer browser.
- ``RUN/rm*/metrics.json``: reward-model accuracies; ``RUN/<stage>/metrics.json``: other
  headline numbers.
- ``RUN/<stage>/log.jsonl`` (PPO and other online trainers): reward and KL curves, from
  any numeric keys whose names contain "reward" or "kl".
- ``RUN/timings.json`` (``[{stage, status, seconds}]``), else each stage's ``manifest.json``.

Text from the run (answers, prompts) is HTML-escaped by Jinja2's autoescaping, so a
generated answer cannot inject markup into the report.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

from simplesafe.atomic import write_text
from simplesafe.errors import DataError
from simplesafe.io import read_jsonl_tolerant
from simplesafe.report import plots

log = logging.getLogger(__name__)

METRIC_COLUMNS = [
    ("fre", "FRE"), ("fkg", "FKG"), ("toxicity", "toxicity"), ("simple", "% simple"), ("safe", "% safe"),
    ("n_words", "words"), ("rouge1", "ROUGE-1"), ("rouge2", "ROUGE-2"), ("rougeL", "ROUGE-L"),
    ("rougeLsum", "ROUGE-Lsum"), ("bertscore_p", "BERTScore P"), ("bertscore_r", "BERTScore R"),
    ("bertscore_f1", "BERTScore F1"),
]
SAMPLE_SCORES = ("fre", "fkg", "toxicity", "n_words", "rougeL", "bertscore_f1")


def _load_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        log.warning("report: cannot read %s (%s); that part is left out", path, exc)
        return None


def _fmt(v, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, float)):
        if isinstance(v, float) and math.isnan(v):
            return "–"
        return f"{v:.{digits}g}" if abs(v) >= 1000 or isinstance(v, float) else str(v)
    return str(v)


def _cell(entry: dict | None, percent: bool = False) -> str:
    if not entry or entry.get("mean") is None:
        return "–"
    k = 100.0 if percent else 1.0
    m = entry["mean"] * k
    if entry.get("ci_low") is not None and entry.get("ci_high") is not None and entry.get("n", 0) > 1:
        return f"{m:.3g} [{entry['ci_low'] * k:.3g}, {entry['ci_high'] * k:.3g}]"
    return f"{m:.3g}"


def eval_sets(run_dir: Path) -> list[Path]:
    return sorted(p for p in run_dir.glob("eval*") if p.is_dir())


def collect_metrics(run_dir: Path) -> tuple[list[dict], dict]:
    """Rows of the metrics table and per-model readability values for the histograms."""
    rows, dists = [], {}
    for es in eval_sets(run_dir):
        for mfile in sorted((es / "metrics").glob("*.json")):
            m = _load_json(mfile)
            if not m or "metrics" not in m:
                continue
            model = mfile.stem
            row = {"set": es.name, "model": model, "n": m.get("n")}
            for key, label in METRIC_COLUMNS:
                row[label] = _cell(m["metrics"].get(key), percent=key in ("simple", "safe"))
            # the headline judgements next to the metrics, so one row says everything about a model
            for sfile in sorted((es / "pairwise").glob(f"{model}_vs_*/summary.json")):
                s = _load_json(sfile) or {}
                if s.get("win_rate") is not None:
                    ref = sfile.parent.name[len(model) + len("_vs_"):]
                    row[f"win rate vs {ref}"] = _cell({"mean": s["win_rate"], "ci_low": s.get("ci_low"),
                                                       "ci_high": s.get("ci_high"), "n": s.get("n", 0)})
            rub = _load_json(es / "rubric" / model / "summary.json") if (es / "rubric" / model / "summary.json").exists() else None
            if rub and rub.get("mean") is not None:
                row[f"rubric ({rub.get('rubric')})"] = _fmt(rub["mean"])
            rows.append(row)
            answers = mfile.with_suffix(".answers.jsonl")
            vals = read_jsonl_tolerant(answers)
            if vals:
                label = model if len(eval_sets(run_dir)) == 1 else f"{es.name}/{model}"
                dists[label] = {"fre": [r.get("fre") for r in vals], "fkg": [r.get("fkg") for r in vals]}
    return rows, dists


def collect_pairwise(run_dir: Path) -> list[dict]:
    rows = []
    for es in eval_sets(run_dir):
        for sfile in sorted((es / "pairwise").glob("*/summary.json")):
            s = _load_json(sfile)
            if not s or "win_rate" not in s:
                continue
            rows.append({
                "label": sfile.parent.name if len(eval_sets(run_dir)) == 1 else f"{es.name}: {sfile.parent.name}",
                "set": es.name, "comparison": sfile.parent.name.replace("_vs_", " vs "), "pool": s.get("pool", "?"),
                "n": s.get("n"), "win_rate": s["win_rate"], "ci_low": s.get("ci_low"), "ci_high": s.get("ci_high"),
                "wins / ties / losses": f"{s.get('n_wins', '?')} / {s.get('n_ties', '?')} / {s.get('n_losses', '?')}",
                "LC win rate": _fmt(s.get("lc_win_rate")), "length bias": _fmt(s.get("length_bias")),
                "position bias": _fmt(s.get("position_bias")), "agreement": _fmt(s.get("agreement")),
                "per annotator": ", ".join(f"{k}: {_fmt(v.get('win_rate'))}" for k, v in (s.get("annotators") or {}).items()),
            })
    return rows


def collect_rubric(run_dir: Path) -> list[dict]:
    rows = []
    for es in eval_sets(run_dir):
        for sfile in sorted((es / "rubric").glob("*/summary.json")):
            s = _load_json(sfile)
            if s:
                rows.append({"set": es.name, "model": sfile.parent.name, "rubric": s.get("rubric"),
                             "mean": _cell({"mean": s.get("mean"), "ci_low": s.get("ci_low"),
                                            "ci_high": s.get("ci_high"), "n": s.get("n_parsed", 0)}),
                             "parsed / graded": f"{s.get('n_parsed')} / {s.get('n')}", "judge": s.get("judge")})
    return rows


def collect_harness(run_dir: Path) -> list[dict]:
    rows = []
    for es in eval_sets(run_dir):
        for f in sorted((es / "harness").glob("*.json")):
            s = _load_json(f)
            if s and "tasks" in s:
                row = {"model": f.stem}
                for task, t in s["tasks"].items():
                    row[f"{task} ({t.get('shots')}-shot)"] = _fmt(t.get("score"))
                row["average"] = _fmt(s.get("average"))
                rows.append(row)
    return rows


def _flatten(d: dict, prefix: str = "", depth: int = 0) -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and depth < 2:
            out.update(_flatten(v, key + ".", depth + 1))
        elif isinstance(v, (int, float, str, bool)) or v is None:
            out[key] = v
    return out


def collect_stage_metrics(run_dir: Path) -> tuple[list[dict], list[dict]]:
    """(reward-model rows, other stages' rows) from ``RUN/<stage>/metrics.json``."""
    rm_rows, other = [], []
    for f in sorted(run_dir.glob("*/metrics.json")):
        m = _load_json(f)
        if not isinstance(m, dict):
            continue
        flat = {k: _fmt(v) for k, v in _flatten(m).items() if not isinstance(v, str) or len(v) < 80}
        if f.parent.name.startswith("rm"):
            rm_rows.append({"reward model": f.parent.name, **{k: v for k, v in flat.items() if k != "stage"}})
        else:
            other.append({"stage": f.parent.name, "metrics": "; ".join(f"{k} = {v}" for k, v in list(flat.items())[:14])})
    return rm_rows, other


CURVE_FIRST = ("reward", "kl", "total_reward", "reward/total", "kl_coef")


def _curve_key(name: str) -> bool:
    low = name.lower()
    return "reward" in low or low.split("/")[-1].endswith("kl") or low.split("/")[-1].startswith("kl")


def collect_curves(run_dir: Path, max_panels: int = 6) -> list[tuple[str, str]]:
    """(stage, base64 PNG) of reward/KL curves from ``RUN/<stage>/log.jsonl`` (or one folder deeper).

    Plots ``reward`` and ``kl`` first (the PPO log's names), then the other reward/KL keys
    (per-source rewards, KL coefficient), at most ``max_panels`` per stage.
    """
    out = []
    logs = sorted(set(run_dir.glob("*/log.jsonl")) | set(run_dir.glob("*/*/log.jsonl")))
    for f in logs:
        rows = read_jsonl_tolerant(f)
        series: dict[str, list] = {}
        for i, r in enumerate(rows):
            step = r.get("step", r.get("global_step", i))
            for k, v in r.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and _curve_key(k) and math.isfinite(v):
                    series.setdefault(k, []).append((step, v))
        keys = [k for k in CURVE_FIRST if k in series] + sorted(k for k in series if k not in CURVE_FIRST)
        stage = str(f.parent.relative_to(run_dir))
        png = plots.training_curves({k: series[k] for k in keys[:max_panels]}, f"{stage}: reward and KL per step")
        if png:
            out.append((stage, png))
    return out


def collect_timings(run_dir: Path) -> list[dict]:
    t = run_dir / "timings.json"
    if t.exists():
        data = _load_json(t)
        if isinstance(data, list):
            return [{"stage": r.get("stage"), "status": r.get("status"), "seconds": _fmt(r.get("seconds"))}
                    for r in data if isinstance(r, dict)]
    rows = []
    for mf in sorted(run_dir.glob("*/manifest.json")):
        m = _load_json(mf)
        if isinstance(m, dict):
            rows.append({"stage": mf.parent.name, "status": "done" if (mf.parent / "DONE").exists() else "incomplete",
                         "seconds": _fmt(m.get("seconds"))})
    return rows


def collect_samples(run_dir: Path, max_prompts: int = 40) -> list[dict]:
    """Per prompt: every model's answer (first seed) with its per-answer scores."""
    prompts: dict[str, dict] = {}
    for es in eval_sets(run_dir):
        for gfile in sorted((es / "generations").glob("*.jsonl")):
            if gfile.name.endswith(".progress.jsonl"):
                continue
            model = gfile.stem
            scored = {}
            for r in read_jsonl_tolerant(es / "metrics" / f"{model}.answers.jsonl"):
                scored[(str(r.get("id")), r.get("seed"))] = dict(r)
            for r in read_jsonl_tolerant(es / "rubric" / model / "grades.jsonl"):
                key = (str(r.get("id")), r.get("seed"))
                scored.setdefault(key, {})[f"rubric_{r.get('rubric', '')}"] = r.get("score")
            seen_ids = set()
            for r in read_jsonl_tolerant(gfile):
                key = (es.name, str(r.get("id", r.get("instruction"))))
                if (key, model) in seen_ids:
                    continue  # first seed only
                seen_ids.add((key, model))
                if key not in prompts:
                    if len(prompts) >= max_prompts:
                        continue
                    prompts[key] = {"set": es.name, "instruction": r.get("instruction", ""),
                                    "reference": r.get("reference"), "answers": []}
                s = scored.get((str(r.get("id")), r.get("seed")), {})
                prompts[key]["answers"].append({
                    "model": model, "output": r.get("output", ""),
                    "scores": {k: _fmt(s.get(k)) for k in (*SAMPLE_SCORES, "rubric_mtbench", "rubric_lima") if k in s}})
    return list(prompts.values())


def render_report(run_dir: str | Path, out: str | Path | None = None, max_prompts: int = 40,
                  notes: list[str] | None = None) -> Path:
    """Write the report; returns its path (default ``RUN/report.html``).

    ``notes``: paragraphs shown at the top, e.g. what a recipe's model can and cannot show.
    """
    from jinja2 import Environment, PackageLoader, select_autoescape

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(run_dir, None, None, "run directory not found")
    out = Path(out) if out else run_dir / "report.html"
    from simplesafe.report import findings

    metrics_rows, dists = collect_metrics(run_dir)
    s = findings.summary(run_dir)
    pairwise_rows = collect_pairwise(run_dir)
    rm_rows, stage_rows = collect_stage_metrics(run_dir)
    ctx = {
        "run_dir": str(run_dir.resolve()),
        "notes": list(notes or []),
        "generated": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "verdicts": findings.verdicts(s) if s else [],
        "judge_rows": findings.judge_rows(s) if s else [],
        "model_rows": findings.model_rows(s) if s else [],
        "difference_rows": findings.difference_rows(s) if s else [],
        "winrate_rows": findings.winrate_rows(s) if s else [],
        "redteam_rows": findings.redteam_rows(s) if s else [],
        "eval_info": {"n_prompts": s.get("n_prompts"), "seeds": s.get("seeds"),
                      "statistics": s.get("statistics")} if s else None,
        "probe_png": findings.probe_plot(run_dir),
        "data_rows": findings.data_rows(run_dir),
        "rm_accuracy_rows": findings.reward_model_rows(run_dir, s),
        "metrics_rows": metrics_rows,
        "readability_png": plots.readability_hist(dists) if dists else None,
        "pairwise_rows": [{k: v for k, v in r.items() if k not in ("label", "ci_low", "ci_high", "win_rate")}
                          | {"win rate [95% CI]": f"{r['win_rate']:.3f} [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]"}
                          for r in pairwise_rows],
        "winrate_png": plots.win_rate_bars(pairwise_rows),
        "rubric_rows": collect_rubric(run_dir),
        "harness_rows": collect_harness(run_dir),
        "rm_rows": rm_rows,
        "stage_rows": stage_rows,
        "curves": collect_curves(run_dir),
        "timings": collect_timings(run_dir),
        "samples": collect_samples(run_dir, max_prompts),
    }
    env = Environment(loader=PackageLoader("simplesafe.report", "templates"),
                      autoescape=select_autoescape(["html", "jinja"]), trim_blocks=True, lstrip_blocks=True)
    html = env.get_template("report.html.jinja").render(**ctx)
    write_text(out, html)
    return out
