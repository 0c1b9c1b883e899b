"""The ``harness`` stage: Open LLM Leaderboard tasks for every model of a run (the report's Table 1).

Scores this run's models or those of ``harness.from_run``; where the run merged an adapter, also
builds the other merge (simple vs careful) for the comparison and deletes it afterwards.
"""

from __future__ import annotations

import json
from pathlib import Path

from simplesafe.atomic import write_json
from simplesafe.config import load_config
from simplesafe.errors import ConfigError
from simplesafe.recipe.config import Context, HarnessStageConfig, RecipeConfig, register, section
from simplesafe.recipe.evaluation import model_paths
from simplesafe.runs import is_done


def harness_config(ctx: Context):
    from simplesafe.eval.harness import plan

    cfg = section(HarnessStageConfig, ctx.recipe.harness, "harness")
    plan(cfg)  # unknown tasks fail here, before any stage runs
    for entry in cfg.models:
        if isinstance(entry, dict):
            unknown = set(entry) - {"name", "model", "adapter"}
            if unknown or not entry.get("name") or not entry.get("model"):
                raise ConfigError(f"recipe: harness.models: {entry!r}: give name and model (a stage name or a model "
                                  "folder), optionally adapter" + (f"; unknown key(s) {', '.join(sorted(unknown))}"
                                                                    if unknown else ""))
        elif not isinstance(entry, str) or not entry:
            raise ConfigError(f"recipe: harness.models: {entry!r} is not a stage name or a {{name, model}} mapping")
    return cfg


def _source_context(ctx: Context, cfg) -> Context:
    """The run whose models are scored: this one, or ``harness.from_run`` (read from its recipe.yaml)."""
    if not cfg.from_run:
        return ctx
    src = Path(cfg.from_run)
    recipe_file = src / "recipe.yaml"
    if not recipe_file.is_file():
        raise ConfigError(f"recipe: harness.from_run: {src} is not a run directory (no recipe.yaml); run that recipe "
                          "first (e.g. `simplesafe run recipes/demo.yaml` for runs/demo)")
    return Context(load_config(RecipeConfig, recipe_file), src, False)


def _harness_models(src: Context, cfg) -> tuple[dict[str, dict], dict[str, str]]:
    """``({name: {model, adapter, about}}, {name: why it is not scored})`` in the order of ``harness.models``."""
    paths = model_paths(src)
    merged_dpo = is_done(src.run_dir, "merge")
    about = {"base": "the base model", "sft": "SFT", "ppo": "PPO from SFT", "grpo": "GRPO from SFT",
             "dpo": "DPO from SFT" + (", its adapter merged by the merge stage (merge/model)" if merged_dpo else "")}
    models, not_run = {}, {}
    for entry in cfg.models:
        if isinstance(entry, str):
            entry = {"name": entry, "model": entry}
        name, target = entry["name"], entry["model"]
        if target in paths:
            path, text = paths[target], about.get(target, target)
        else:
            path, text = str(target), str(target)
        if target in paths and target != "base" and not is_done(src.run_dir, target):
            # a stage still running (or killed) may have written part of its model
            not_run[name] = (f"no model at {path}" if not Path(path).exists() else
                             f"stage {target} of {src.run_dir} has not finished")
            continue
        if target != "base" and not (Path(path) / "config.json").is_file():
            not_run[name] = f"no model at {path}"
            continue
        models[name] = {"model": path, "adapter": entry.get("adapter"), "about": text}
    return models, not_run


def _merge_pair(src: Context, cfg, models: dict) -> dict | None:
    """Where the run merged an adapter: which row is its merge, and how to build the other one."""
    report_file = src.path("merge", "model", "merge_report.json")
    if not cfg.compare_merges or not is_done(src.run_dir, "merge") or not report_file.is_file():
        return None
    rep = json.loads(report_file.read_text())
    mode = rep.get("mode", "careful")
    other = "simple" if mode == "careful" else "careful"
    merged_row = next((n for n, m in models.items() if Path(m["model"]).resolve() ==
                       src.path("merge", "model").resolve()), None)
    if merged_row is None:
        return None
    adapter = src.path("dpo", "adapter")
    return {"row": merged_row, "mode": mode, "other_row": f"{merged_row}-{other}-merge", "other_mode": other,
            "base": src.sft_model(), "adapter": str(adapter), "dtype": rep.get("dtype", "bfloat16")}


@register("harness")
def _harness(ctx: Context) -> dict:
    from simplesafe.eval.harness import evaluate_model, plan
    from simplesafe.eval.harness_table import table1
    from simplesafe.runs import stage

    cfg = harness_config(ctx)
    src = _source_context(ctx, cfg)
    with stage(ctx.run_dir, "harness", cfg, seed=ctx.recipe.seed, force=ctx.force) as st:
        if st.skipped:
            return json.loads((st.dir / "table1.json").read_text())
        models, not_run = _harness_models(src, cfg)
        for name, why in not_run.items():
            print(f"  harness: skipping {name} ({why})")
        pair = _merge_pair(src, cfg, models)
        rows = dict(models)
        if pair:  # the other merge of the same adapter goes right after the run's own merge
            rows = {}
            for name, m in models.items():
                rows[name] = m
                if name == pair["row"]:
                    m["about"] += f": {pair['mode']} merge"
                    rows[pair["other_row"]] = {"model": None, "adapter": None, "build": pair,
                                               "about": f"the same adapter, {pair['other_mode']} merge (built for "
                                                        "this comparison, not kept)"}
        key = {"plan": plan(cfg), "batch_size": cfg.batch_size, "dtype": cfg.dtype,
               "apply_chat_template": cfg.apply_chat_template}
        results = {}
        for name, m in rows.items():
            f = st.dir / "results" / f"{name}.json"
            source = m["model"] or f"{pair['other_mode']} merge of {pair['adapter']} into {pair['base']}"
            prev = json.loads(f.read_text()) if f.exists() else None
            if prev and prev.get("resume_key") == {**key, "source": source}:  # an interrupted stage keeps its models
                print(f"  harness: {name} (scored earlier)")
                results[name] = prev
                continue
            print(f"  harness: {name} ({source})", flush=True)
            if m.get("build"):
                results[name] = _score_other_merge(cfg, m["build"])
            else:
                results[name] = evaluate_model(cfg, m["model"], m["adapter"])
            results[name].update(model=source, resume_key={**key, "source": source})
            write_json(f, results[name])
        careful_simple = None
        if pair:
            careful_simple = (pair["row"], pair["other_row"]) if pair["mode"] == "careful" else \
                (pair["other_row"], pair["row"])
        table = table1(results, base="base", merge_pair=careful_simple,
                       about={n: m["about"] for n, m in rows.items()}, not_run=not_run)
        table["source_run"] = str(src.run_dir)
        if table["merge"]:
            table["merge"]["built_row"] = pair["other_row"]
            rep = json.loads(src.path("merge", "model", "merge_report.json").read_text())
            table["merge"]["merge_report"] = {
                k: rep.get(k) for k in ("mode", "dtype", "max_abs_weight_diff", "mean_abs_weight_diff",
                                        "n_tensors_differing", "loglik_diff_careful_minus_simple",
                                        "perplexity_careful", "perplexity_simple", "n_validation_rows")}
        write_json(st.dir / "table1.json", table)
        return table


def _score_other_merge(cfg, pair: dict) -> dict:
    """Build the merge the run did not keep into a temporary folder, score it, delete it."""
    import shutil
    import tempfile

    from simplesafe.eval.harness import evaluate_model
    from simplesafe.train.merge import merge_adapter

    tmp = Path(tempfile.mkdtemp(prefix="simplesafe-merge-"))
    try:
        merge_adapter(pair["base"], pair["adapter"], tmp / "model", mode=pair["other_mode"], dtype=pair["dtype"])
        return evaluate_model(cfg, str(tmp / "model"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

