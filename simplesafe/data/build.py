"""``simplesafe data build``: raw ELI5 / preference / Simple Wikipedia data -> SFT, RM, RL.

Implements the data pipeline of the project report ("Training LLMs on Simple, Safe
Text", section 2.2) with its thresholds as defaults:

1. load every source (schemas validated; bad rows are errors, or rejects with
   ``on_error: skip``);
2. clean questions (Reddit markdown, quotes, URLs, whitespace) and drop posts that are
   not questions or are meta posts, and exact duplicate questions;
3. give each question a split (the source's own, else a seeded hash of its id) and
   remove cross-split leakage (cosine >= 0.6 of question embeddings; train loses to
   validation/test, test loses to validation);
4. clean and score answers in batches (words, FRE, FKG, toxicity; ``datasets.map``
   with ``num_proc`` workers for large inputs, or Ray Data with ``executor: ray``, see
   :mod:`simplesafe.data.ray_executor`); drop answers under 20 words, not simple
   (FRE < 60 or FKG >= 9) and exact duplicates; flag low-score (< 4), toxic (> 0.1)
   and "Edit:" answers, which may appear only as ``rejected`` in RM data. The toxicity
   model (the slow part) runs only on answers that no other flag already restricts to
   ``rejected``, since only there can it change the outcome; the others have no
   ``toxicity`` value;
5. route each question to exactly one of SFT / RM / RL (:mod:`simplesafe.data.split`);
6. Simple Wikipedia: reject articles with wiki markup or under 50 words, build leads
   (paragraphs until >= 300 words), drop leads over 500 words or not simple, split
   validation/test of 5,000 each (``min(size, fraction * n)`` for small inputs).

Preference-pair sources have no vote scores: the preferred answer ranks above the
rejected one (K = 2), so every such question would go to RM. ``pairs_to_sft_fraction``
sends a seeded share of them to SFT (their preferred answer, if it passes the SFT
filters) and ``pairs_to_rl_fraction`` a share to RL prompts, so the bundled demo data
fills all three datasets. Vote-scored sources follow the report's rules exactly.

Dataset formats (the trainers read these; ``datasets.load_dataset("json", ...)``):

- ``sft/{train,validation,test}.jsonl``: ``{id, source, question_id, prompt, completion,
  answer_id, score, n_words, fre, fkg, toxicity}`` -- prompt is the question text,
  completion the answer; the trainer applies the ``### Human: ... ### Assistant:`` template.
- ``rm/...``: ``{id, source, question_id, prompt, chosen, rejected, weight, chosen_score,
  rejected_score, chosen_id, rejected_id, k}`` with ``weight = 1 / C(k, 2)``.
- ``rl/...``: ``{id, source, question_id, prompt}``, plus ``reference`` (the preferred
  answer, cleaned but not filtered) where the source has one: evaluation references.
- ``pairs/...``: every preference-pair question not routed to SFT, with its raw preferred
  and rejected answers (cleaned, not filtered) ``{id, source, question_id, prompt, chosen,
  rejected, weight, route}``: preference data for a judge that needs no readability bar
  (the demo's held-out helpfulness reward model), split like everything else by question.
- ``wiki/...``: filtered Simple Wikipedia leads ``{id, source, title, text, n_words, fre,
  fkg}`` for question backtranslation (the synth stage turns them into SFT pairs), plus
  ``contrast`` (the aligned ordinary-English text) for sources that have one (Wiki-Auto),
  from which the synth stage also writes simple-vs-ordinary preference pairs.
- ``rejects.jsonl`` (``id, stage, reason, scores``), ``stats.json`` (funnel, counts),
  ``plots/{fre,fkg,toxicity,length}.png``.

    simplesafe data build recipes/demo.yaml            # the recipe's ``data`` section
    simplesafe data build data.yaml out=runs/data pair_strategy=top2
    simplesafe data build recipe.yaml executor=ray ray_address=auto   # on a Ray head node
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections import Counter
from pathlib import Path

import numpy as np

from simplesafe.data.config import SPLITS, DataBuildConfig, resolve_path
from simplesafe.data.qa import build_qa, load_questions
from simplesafe.data.wiki import build_wiki
from simplesafe.runs import stage

log = logging.getLogger(__name__)


def _plot(path: Path, answers: list[dict], leads: list[dict], key: str, title: str, thresholds: list[float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from simplesafe.atomic import atomic_path

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for rows, label in ((answers, "answers"), (leads, "Wikipedia leads")):
        vals = np.array([r[key] for r in rows if r.get(key) is not None], dtype=float)
        vals = vals[np.isfinite(vals)]
        if len(vals):
            lo, hi = np.percentile(vals, [0.5, 99.5])
            ax.hist(np.clip(vals, lo, hi), bins=40, alpha=0.6, label=f"{label} (n={len(vals)})")
    for t in thresholds:
        ax.axvline(t, color="k", linestyle="--", linewidth=1)
    ax.set_title(title)
    ax.set_ylabel("count")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def _write_outputs(sdir: Path, cfg, datasets_out: dict, rejects: list, funnel, answers, leads, seconds: float) -> dict:
    from simplesafe.atomic import write_json
    from simplesafe.io import write_rows

    counts = {}
    for name, splits in datasets_out.items():
        counts[name] = {}
        for s in SPLITS:
            rows = splits.get(s, [])
            write_rows(sdir / name / f"{s}.jsonl", rows)
            counts[name][s] = len(rows)
    write_rows(sdir / "rejects.jsonl", rejects)
    if cfg.plots:
        _plot(sdir / "plots" / "fre.png", answers, leads, "fre", "Flesch reading ease", [cfg.min_fre])
        _plot(sdir / "plots" / "fkg.png", answers, leads, "fkg", "Flesch-Kincaid grade", [cfg.max_fkg])
        _plot(sdir / "plots" / "toxicity.png", answers, leads, "toxicity", "toxicity (max over labels)",
              [cfg.toxicity_threshold(cfg.max_toxicity)])
        _plot(sdir / "plots" / "length.png", answers, leads, "n_words", "length (words)", [cfg.min_answer_words, cfg.lead_max_words])
    reasons = Counter()
    for r in rejects:
        reasons[f"{r['stage']}/{str(r['reason']).split(':')[0]}"] += 1
    n_rm = sum(counts["rm"].values())
    empty = [f"{name}/{s}" for name, c in counts.items() for s, n in c.items() if n == 0]
    if empty:
        # datasets.load_dataset cannot read an empty JSONL file; say so instead of failing later
        log.warning("empty output files (datasets.load_dataset cannot read them): %s", ", ".join(empty))
    stats = {
        "datasets": counts,
        "funnel": funnel.rows(),
        "rejects_by_reason": dict(reasons.most_common()),
        "n_rejects": len(rejects),
        "empty_files": empty,
        "seconds": round(seconds, 2),
        "headline": {
            "sft_rows": sum(counts["sft"].values()),
            "rm_pairs": n_rm,
            "rl_prompts": sum(counts["rl"].values()),
            "wiki_leads": sum(counts["wiki"].values()),
            "rejects": len(rejects),
            "seconds": round(seconds, 2),
        },
        # rows per dataset and source (the report says how many SFT and RM rows each source gave)
        "by_source": {name: dict(Counter(r.get("source", "?") for s in SPLITS for r in splits.get(s, [])))
                      for name, splits in datasets_out.items()},
    }
    write_json(sdir / "stats.json", stats)
    return stats


def print_funnel(stats: dict) -> None:
    from simplesafe.tables import print_table

    print_table(stats["funnel"], title="Funnel (kept / rejected per step and split)")
    rows = [{"dataset": name, **{s: n for s, n in c.items()}, "total": sum(c.values())} for name, c in stats["datasets"].items()]
    print()
    print_table(rows, title="Datasets (rows per split)")


def build_datasets(cfg: DataBuildConfig, out_dir: str | Path, force: bool = False) -> dict:
    """Build everything into ``out_dir`` (a run stage: skipped when already done).

    Returns the headline counts (rows per dataset, rejects, seconds).
    """
    from simplesafe.data.filters import Funnel
    from simplesafe.runs import set_seed

    out_dir = Path(out_dir)
    inputs = [resolve_path(s.path) for s in cfg.sources]
    with stage(out_dir.parent, out_dir.name, cfg, inputs=inputs, seed=cfg.seed, force=force) as st:
        if st.skipped and (st.dir / "stats.json").exists():
            return json.loads((st.dir / "stats.json").read_text())["headline"]
        t0 = time.time()
        set_seed(cfg.seed)
        rng = random.Random(cfg.seed)
        rejects: list[dict] = []
        funnel = Funnel()
        questions = load_questions(cfg, rejects, funnel)
        qa_out, answers = build_qa(cfg, questions, rejects, funnel, rng)
        wiki_out, leads = build_wiki(cfg, rejects, funnel, rng)
        datasets_out = {**qa_out, "wiki": wiki_out}
        stats = _write_outputs(st.dir, cfg, datasets_out, rejects, funnel, answers, leads, time.time() - t0)
        log.info("data build finished in %.1fs: %s", stats["seconds"], stats["headline"])
        return stats["headline"]
