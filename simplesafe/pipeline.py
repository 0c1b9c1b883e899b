"""``simplesafe run RECIPE.yaml``: the stages of a recipe in order, skipping finished ones.

A recipe is one YAML file with a section per stage (``tiny_model``, ``data``, ``synth``,
``sft``, ``rm``, ``dpo``, ``ppo``, ``merge``, ``eval``, ``report``); ``stages`` lists
which to run. Each stage writes into ``RUN/<stage>/`` with a ``DONE`` marker (see
:mod:`simplesafe.runs`), so an interrupted run continues from the last finished stage
and a finished run re-runs in seconds. A timing table is printed at the end.

    simplesafe run recipes/demo.yaml
    simplesafe run recipes/demo.yaml sft.epochs=2 --run-dir runs/try2
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

from pydantic import Field

from simplesafe.atomic import write_json
from simplesafe.config import StageConfig, dump_config, load_config
from simplesafe.errors import ConfigError
from simplesafe.runs import is_done, stage

log = logging.getLogger(__name__)


class RecipeConfig(StageConfig):
    """A whole pipeline. Sections are validated by their stage's own config class."""

    name: str = "run"
    seed: int = 0
    run_dir: str | None = None
    base_model: str = Field("embedded:tiny", description="hub id, local path, or embedded:tiny")
    stages: list[str] = Field(default_factory=lambda: ["tiny_model"])
    tiny_model: dict = Field(default_factory=dict)
    data: dict = Field(default_factory=dict)
    synth: dict = Field(default_factory=dict)
    sft: dict = Field(default_factory=dict)
    rm: dict = Field(default_factory=dict)
    dpo: dict = Field(default_factory=dict)
    ppo: dict = Field(default_factory=dict)
    grpo: dict = Field(default_factory=dict)
    merge: dict = Field(default_factory=dict)
    eval: dict = Field(default_factory=dict)
    report: dict = Field(default_factory=dict)


StageFn = Callable[[RecipeConfig, Path, bool], dict]
STAGES: dict[str, StageFn] = {}


def register(name: str):
    def deco(fn: StageFn) -> StageFn:
        STAGES[name] = fn
        return fn

    return deco


@register("tiny_model")
def _tiny_model(recipe: RecipeConfig, run_dir: Path, force: bool) -> dict:
    from simplesafe.models.tiny import TinyModelConfig, build_tiny_model, default_tiny_path

    cfg = load_config(TinyModelConfig, None, None, defaults=recipe.tiny_model)
    with stage(run_dir, "tiny_model", cfg, seed=cfg.seed, force=force) as st:
        if st.skipped:
            return json.loads((st.dir / "build_info.json").read_text())
        out = Path(cfg.out) if cfg.out else default_tiny_path()
        info_path = out / "build_info.json"
        metrics = None
        if info_path.exists() and not force:
            cached = json.loads(info_path.read_text())
            if cached.get("fingerprint") == cfg.fingerprint():
                metrics = cached
                log.info("reusing cached tiny model at %s", out)
        if metrics is None:
            metrics = build_tiny_model(cfg)
        write_json(st.dir / "build_info.json", metrics)
        return metrics


def resolve_run_dir(recipe: RecipeConfig, recipe_path: Path, run_dir: Path | None) -> Path:
    if run_dir is not None:
        return Path(run_dir)
    if recipe.run_dir:
        return Path(recipe.run_dir)
    return Path("runs") / (recipe.name or recipe_path.stem)


def run_pipeline(recipe_path: Path, overrides: list[str], run_dir: Path | None = None, force: bool = False) -> dict:
    recipe = load_config(RecipeConfig, recipe_path, overrides)
    unknown = [s for s in recipe.stages if s not in STAGES]
    if unknown:
        raise ConfigError(f"{recipe_path}: unknown stage(s) {', '.join(unknown)}; allowed: {', '.join(STAGES)}")
    rdir = resolve_run_dir(recipe, Path(recipe_path), run_dir)
    rdir.mkdir(parents=True, exist_ok=True)
    (rdir / "recipe.yaml").write_text(dump_config(recipe), encoding="utf-8")
    timings, results = [], {}
    t_all = time.time()
    for name in recipe.stages:
        was_done = is_done(rdir, name) and not force
        print(f"[{time.strftime('%H:%M:%S')}] stage {name}" + (" (done, skipping)" if was_done else ""), flush=True)
        t0 = time.time()
        results[name] = STAGES[name](recipe, rdir, force)
        timings.append({"stage": name, "status": "cached" if was_done else "ran", "seconds": round(time.time() - t0, 1)})
    timings.append({"stage": "total", "status": "", "seconds": round(time.time() - t_all, 1)})
    write_json(rdir / "timings.json", timings)
    from simplesafe.commands.common import print_table

    print()
    print_table(timings, title=f"Stage timings for {rdir}")
    summary_fn = STAGES.get("_summary")
    if summary_fn is not None:
        summary_fn(recipe, rdir, False)
    elif "tiny_model" in results:
        m = results["tiny_model"]
        print(f"\ntiny model: held-out perplexity {m['held_out_perplexity']:.1f} vs unigram {m['unigram_perplexity']:.1f}")
    print(f"\nrun directory: {rdir.resolve()}")
    return results
