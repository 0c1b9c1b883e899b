"""The pipeline's eval stage: generate with every model, score, compare with the reference.

    from simplesafe.eval.run import EvalConfig, run_eval
    run_eval(EvalConfig(), "runs/demo", {"base": "embedded:tiny", "sft": "runs/demo/sft/model"},
             "runs/demo/data/sft/test.jsonl")

Layout written under ``RUN/eval/`` (the report reads it):

    generations/<model>.jsonl              AlpacaEval rows (instruction, output, generator, id, seed, reference)
    metrics/<model>.json                   aggregated metrics with bootstrap CIs and per-seed means
    metrics/<model>.answers.jsonl          per-answer metrics
    pairwise/<model>_vs_<ref>/summary.json win rate vs the reference model (pool `offline` by default)
    pairwise/<model>_vs_<ref>/annotations.jsonl
    rubric/<model>/summary.json            only when a judge backend is configured
    summary.json                           one headline row per model

Every step skips work already on disk, so an interrupted stage resumes (generation
resumes mid-file); ``force=True`` starts the stage over.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from pydantic import Field

from simplesafe.atomic import write_json
from simplesafe.config import StageConfig
from simplesafe.errors import ConfigError
from simplesafe.llm import BackendConfig
from simplesafe.runs import stage
from simplesafe.text.toxicity_section import ToxicitySettings

log = logging.getLogger(__name__)


class EvalConfig(ToxicitySettings, StageConfig):
    """The eval stage. ``toxicity:`` is the scorer of the metrics and of the pool's safety/composite annotators."""

    seeds: list[int] = Field([0, 1, 2], min_length=1, description="sampled answers per prompt (>= 3 for readability means)")
    limit: int | None = Field(None, ge=1, description="evaluate on the first N prompts only")
    max_new_tokens: int = Field(128, ge=1, description="answer length in new tokens")
    temperature: float = Field(0.7, ge=0.0, description="sampling temperature")
    top_p: float = Field(0.9, gt=0.0, le=1.0, description="nucleus sampling mass")
    batch_size: int = Field(8, ge=1, description="prompts per generate() call")
    reference_model: str = Field("sft", description="models are compared pairwise against this one (skipped if absent)")
    pool: str = Field("offline", description="annotator pool for the pairwise comparison (name or YAML path)")
    reward_models: list[str] = Field(default_factory=list, description="reward-model folders added to the pool as annotators")
    bertscore: bool = Field(True, description="compute BERTScore against references (local MiniLM)")
    n_boot: int = Field(1000, ge=10, description="bootstrap resamples")
    rubric_backend: BackendConfig | None = Field(None, description="judge for MT-bench grades; none = skip rubric")
    rubric: str = Field("mtbench", description="mtbench or lima")


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def run_eval(cfg: EvalConfig, run_dir: str | Path, models: dict[str, str], prompts_path: str | Path,
             force: bool = False) -> dict:
    """Generate, score and compare every model; returns ``{model: headline metrics}``."""
    from simplesafe.eval.generate import GenerateConfig, generate_answers
    from simplesafe.eval.metrics import MetricsConfig, compute_metrics
    from simplesafe.eval.pairwise import run_pairwise

    if not models:
        raise ConfigError("run_eval needs at least one model")
    run_dir = Path(run_dir)
    edir = run_dir / "eval"
    if force and edir.exists():
        for sub in ("generations", "metrics", "pairwise", "rubric"):
            shutil.rmtree(edir / sub, ignore_errors=True)
    with stage(run_dir, "eval", cfg, inputs=[prompts_path], seed=cfg.seeds[0], force=force) as st:
        if st.skipped:
            return json.loads((edir / "summary.json").read_text())["models"]
        gens: dict[str, Path] = {}
        for name, path in models.items():
            out = edir / "generations" / f"{_slug(name)}.jsonl"
            if not out.exists():
                generate_answers(GenerateConfig(model=str(path), prompts=str(prompts_path), out=str(out), generator=name,
                                                seeds=cfg.seeds, max_new_tokens=cfg.max_new_tokens,
                                                temperature=cfg.temperature, top_p=cfg.top_p,
                                                batch_size=cfg.batch_size, limit=cfg.limit))
            gens[name] = out
        mcfg = MetricsConfig(bertscore=cfg.bertscore, toxicity=cfg.toxicity, n_boot=cfg.n_boot)
        headline: dict[str, dict] = {}
        for name, g in gens.items():
            mout = edir / "metrics" / f"{_slug(name)}.json"
            if mout.exists():
                    m = json.loads(mout.read_text())
            else:
                m = compute_metrics(g, mcfg, mout)
            headline[name] = {k: (m["metrics"].get(k) or {}).get("mean") for k in
                              ("fre", "fkg", "toxicity", "simple", "safe", "n_words", "rougeL", "bertscore_f1")}
        ref = cfg.reference_model
        if ref in gens:
            for name, g in gens.items():
                if name == ref:
                    continue
                pdir = edir / "pairwise" / f"{_slug(name)}_vs_{_slug(ref)}"
                if (pdir / "summary.json").exists():
                            s = json.loads((pdir / "summary.json").read_text())
                else:
                    s = run_pairwise(g, gens[ref], cfg.pool, pdir, n_boot=cfg.n_boot,
                                     reward_models=cfg.reward_models or None, toxicity=cfg.toxicity)
                headline[name].update(win_rate_vs_ref=s["win_rate"], win_ci=[s["ci_low"], s["ci_high"]],
                                      lc_win_rate_vs_ref=s["lc_win_rate"])
        else:
            log.warning("eval: reference model '%s' not among %s; pairwise comparison skipped", ref, list(gens))
        if cfg.rubric_backend is not None:
            from simplesafe.eval.rubric import RubricConfig, run_rubric

            for name, g in gens.items():
                rdir = edir / "rubric" / _slug(name)
                s = run_rubric(RubricConfig(answers=str(g), out=str(rdir), rubric=cfg.rubric, backend=cfg.rubric_backend))
                headline[name]["rubric_mean"] = s["mean"]
        write_json(edir / "summary.json", {"reference_model": ref, "pool": cfg.pool, "models": headline})
        return headline
