"""Running a recipe: validate every section, check the memory plan, run the stages in order, summarise.

:func:`run_pipeline` is ``simplesafe run RECIPE``; :func:`validate_recipe` loads and checks a recipe
without running anything. Stages whose ``DONE`` marker exists are skipped; ``timings.json`` keeps the
seconds of every stage across interrupted invocations.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

from simplesafe.atomic import write_json
from simplesafe.config import dump_config, load_config
from simplesafe.errors import ConfigError
from simplesafe.recipe.config import ALL_STAGES, STAGES, Context, RecipeConfig
from simplesafe.recipe.evaluation import eval_config
from simplesafe.recipe.harness import harness_config
from simplesafe.recipe.report import report_config
from simplesafe.recipe.stages import (backward_configs, data_config, dpo_config, grpo_config, merge_config,
                                      ppo_config, rm_configs, sft_config, synth_config)
from simplesafe.runs import is_done

log = logging.getLogger(__name__)


VALIDATORS: dict[str, Callable[[Context], Any]] = {
    "tiny_model": lambda c: c.base_model,
    "data": data_config,
    "backward": backward_configs,
    "synth": synth_config,
    "sft": sft_config,
    "rm": rm_configs,
    "dpo": dpo_config,
    "merge": lambda c: merge_config(c),
    "ppo": ppo_config,
    "grpo": grpo_config,
    "eval": eval_config,
    "harness": harness_config,
    "report": report_config,
}


def resolve_run_dir(recipe: RecipeConfig, recipe_path: Path, run_dir: Path | None) -> Path:
    if run_dir is not None:
        return Path(run_dir)
    if recipe.run_dir:
        return Path(recipe.run_dir)
    return Path("runs") / (recipe.name or recipe_path.stem)


def _summary(ctx: Context, results: dict) -> None:
    lines = []
    if "tiny_model" in results:
        m = results["tiny_model"]
        lines.append(f"base model: {m['parameters']:,} parameters, held-out perplexity "
                     f"{m['held_out_perplexity']:.1f} (unigram {m['unigram_perplexity']:.1f})")
    if "data" in results:
        h = results["data"]
        lines.append(f"data: {h.get('sft_rows')} SFT rows, {h.get('rm_pairs')} RM pairs, "
                     f"{h.get('rl_prompts')} RL prompts, {h.get('wiki_leads')} wiki leads, {h.get('rejects')} rejects")
    if "rm" in results:
        accs = ", ".join(f"{k} {v.get('validation_accuracy', float('nan')):.2f}" for k, v in results["rm"].items())
        lines.append(f"reward-model validation accuracy: {accs}")
    if "eval" in results and isinstance(results["eval"], dict):
        from simplesafe.tables import print_table

        def cell(e):
            if not isinstance(e, dict) or e.get("mean") is None:
                return "-"
            ci = e.get("ci") or [None, None]
            return f"{e['mean']:.3g}" + (f" [{ci[0]:.3g}, {ci[1]:.3g}]" if ci and ci[0] is not None else "")

        rows = []
        for name, m in results["eval"].items():
            if not isinstance(m, dict):
                continue
            row = {"model": name}
            for key, label in (("fre", "FRE"), ("fkg", "FKG"), ("dale_chall", "Dale-Chall"), ("n_words", "words"),
                               ("degenerate", "degenerate")):
                row[label] = cell(m.get(key))
            for key, v in m.items():
                if key.startswith("win_rate_vs_sft/") and not key.endswith("/length"):
                    row["vs sft: " + key.split("/", 1)[1]] = cell(v)
            rows.append(row)
        if rows:
            print()
            print_table(rows, title="Held-out evaluation: means [95% CI over prompts, seeds nested]")
    if isinstance(results.get("harness"), dict) and results["harness"].get("rows"):
        from simplesafe.tables import print_table
        from simplesafe.report import findings

        t = results["harness"]
        print()
        print_table([{k: v for k, v in r.items() if k != "what"} for r in findings.table1_rows(t)],
                    title="Table 1: leaderboard tasks, points ± harness standard error")
        if t.get("differences"):
            print_table(findings.table1_difference_rows(t), title="Difference to base, points [95% interval]")
        for why in (t.get("skipped_tasks") or {}).items():
            print(f"{why[0]}: not run, {why[1]}")
        for sentence in findings.capability_verdicts(t):
            print(sentence)
    for line in lines:
        print(line)
    if "report" in results:
        print(f"\nreport: {Path(results['report']['path']).resolve()}")


def validate_recipe(recipe_path: Path, overrides: list[str] = (), run_dir: Path | None = None,
                    force: bool = False) -> Context:
    """Load a recipe and validate every section its stages use, without running anything."""
    recipe = load_config(RecipeConfig, recipe_path, list(overrides))
    unknown = [s for s in recipe.stages if s not in STAGES]
    if unknown:
        raise ConfigError(f"{recipe_path}: unknown stage(s) {', '.join(unknown)}; allowed: {', '.join(ALL_STAGES)}")
    rdir = resolve_run_dir(recipe, Path(recipe_path), run_dir)
    ctx = Context(recipe, rdir, force)
    for name in recipe.stages:  # fail on a bad section before hours of work
        VALIDATORS[name](ctx)
    return ctx


def check_memory(ctx: Context, force: bool, device_memory: str | float | None = None) -> None:
    """The memory plan of the stages still to run; :class:`ConfigError` (exit 2) when one cannot fit."""
    from simplesafe.plan import check_recipe_fits, gib
    from simplesafe.plan.shapes import PlanUnavailable

    pending = [s for s in ctx.recipe.stages if force or not _stage_done(ctx.run_dir, s)]
    try:
        plans = check_recipe_fits(ctx, pending, device_memory)
    except PlanUnavailable as exc:
        log.warning("memory plan skipped: %s", exc)
        return
    if plans:
        worst = max(plans, key=lambda p: p.peak)
        print(f"memory plan: the largest stage is {worst.stage} with {gib(worst.peak)} at its "
              f"{worst.peak_phase.name if worst.peak_phase else '-'} (simplesafe plan {ctx.recipe.name} for the table)")


def run_pipeline(recipe_path: Path, overrides: list[str], run_dir: Path | None = None, force: bool = False,
                 device_memory: str | float | None = None) -> dict:
    ctx = validate_recipe(recipe_path, overrides, run_dir, force)
    recipe, rdir = ctx.recipe, ctx.run_dir
    check_memory(ctx, force, device_memory)
    rdir.mkdir(parents=True, exist_ok=True)
    from simplesafe.atomic import write_text

    write_text(rdir / "recipe.yaml", dump_config(recipe))
    timings_path = rdir / "timings.json"
    timings, results = [], {}
    t_all = time.time()
    for name in recipe.stages:
        was_done = _stage_done(rdir, name) and not force
        print(f"[{time.strftime('%H:%M:%S')}] stage {name}" + (" (done, skipping)" if was_done else ""), flush=True)
        t0 = time.time()
        results[name] = STAGES[name](ctx)
        release_stage_models()
        timings.append({"stage": name, "status": "cached" if was_done else "ran", "seconds": round(time.time() - t0, 1)})
        write_json(timings_path, _merge_timings(timings_path, timings))
    total = {"stage": "total", "status": "", "seconds": round(time.time() - t_all, 1)}
    final = _merge_timings(timings_path, timings + [total])
    write_json(timings_path, final)
    if "report" in recipe.stages:  # re-render so the report shows the final timing table
        results["report"] = STAGES["report"](ctx)
    from simplesafe.tables import print_table

    print()
    print_table(final, title=f"Stage timings (this invocation) for {rdir}")
    _summary(ctx, results)
    print(f"\nrun directory: {rdir.resolve()}")
    return results


def release_stage_models() -> None:
    """Between stages: drop the per-process model caches (sentence encoders, curation's toxicity scorers) and
    return freed GPU memory, so nothing one stage loaded stays resident in the next."""
    from simplesafe.data import scoring
    from simplesafe.models.load import clear_encoder_cache, release_memory

    clear_encoder_cache()
    scoring.clear_scorers()
    release_memory()


def _stage_done(rdir: Path, name: str) -> bool:
    if name == "rm":
        return all(is_done(rdir, d.name) for d in rdir.glob("rm_*")) and any(rdir.glob("rm_*"))
    if name == "report":
        return False
    return is_done(rdir, name)


def _merge_timings(path: Path, new: list[dict]) -> list[dict]:
    """Keep the seconds of stages that ran in an earlier (interrupted) invocation."""
    old = {}
    if path.exists():
        try:
            old = {r["stage"]: r for r in json.loads(path.read_text())}
        except (json.JSONDecodeError, KeyError, TypeError):
            old = {}
    out = []
    for row in new:
        prev = old.get(row["stage"])
        if row["status"] == "cached" and prev and prev.get("status") == "ran":
            row = {**row, "status": "ran earlier", "seconds": prev["seconds"]}
        elif row["status"] == "cached" and prev and prev.get("status") == "ran earlier":
            row = {**row, "status": "ran earlier", "seconds": prev["seconds"]}
        out.append(row)
    return out
