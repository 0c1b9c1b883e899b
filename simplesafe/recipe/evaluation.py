"""The ``eval`` stage: the run's models on held-out prompts, judged by scorers that trained none of them.

:func:`model_paths` names each stage's model, :func:`training_signals` lists every scorer that
trained a model of the recipe (the eval stage refuses those as judges), :func:`eval_config` builds
the validated eval settings and the red-team prompts come from the safety reward model's test split.
"""

from __future__ import annotations

from pathlib import Path

from simplesafe.errors import ConfigError
from simplesafe.recipe.config import Context, EvalStageConfig, register, section
from simplesafe.recipe.stages import dpo_pairs, grpo_config, ppo_config, rm_configs
from simplesafe.runs import is_done


def model_paths(ctx: Context) -> dict[str, str]:
    candidates = {
        "base": ctx.base_model,
        "sft": ctx.sft_model(),
        "dpo": str(ctx.path("merge", "model") if is_done(ctx.run_dir, "merge") else ctx.path("dpo")),
        "ppo": str(ctx.path("ppo")),
        "grpo": str(ctx.path("grpo")),
    }
    return candidates


def _eval_models(ctx: Context, cfg) -> dict[str, dict]:
    """``{name: {model, prefix, stage}}`` from ``eval.models`` (stage names or {name, model, prefix} entries)."""
    paths = model_paths(ctx)
    out = {}
    for entry in cfg.models:
        if isinstance(entry, str):
            entry = {"name": entry, "model": entry}
        name, stage_name = entry.get("name"), entry.get("model", entry.get("name"))
        if not name or stage_name not in paths:
            raise ConfigError(f"eval.models: {entry!r}: 'model' must be one of {', '.join(paths)}")
        unknown = set(entry) - {"name", "model", "prefix"}
        if unknown:
            raise ConfigError(f"eval.models: {entry!r}: unknown key(s) {', '.join(sorted(unknown))}")
        out[name] = {"model": paths[stage_name], "prefix": entry.get("prefix") or "", "stage": stage_name}
    return out


def _rm_preference_key(ctx: Context, name: str) -> str | None:
    cfgs = rm_configs(ctx) if "rm" in ctx.recipe.stages or ctx.recipe.rm else {}
    cfg = cfgs.get(name)
    if cfg is None:
        return None
    src = cfg.source()
    if src == "rm_rows":
        return "preferences:rm_rows:" + ",".join(sorted(str(Path(d).resolve()) for d in cfg.data))
    return f"preferences:{src}"


def rm_name_of(ctx: Context, path: str) -> str | None:
    p = Path(str(path)).resolve()
    for name in (ctx.recipe.rm or {"helpfulness": {}, "safety": {}, "simplicity": {}}):
        if p == ctx.path(f"rm_{name}").resolve():
            return name
    return None


def training_signals(ctx: Context) -> list[dict]:
    """Every scorer that trained a model of this recipe: ``{name, axis, kind, keys, used_by}``.

    PPO/GRPO reward terms (a reward model also brings the preference data it learnt from)
    and the preference source of DPO's pairs. The eval stage refuses held-out judges among them.
    """
    from simplesafe.eval.judges import scorer_key

    out = []
    for stage_name, getter in (("ppo", ppo_config), ("grpo", grpo_config)):
        if stage_name not in ctx.recipe.stages:
            continue
        for src in getter(ctx).rewards:
            if src.kind == "simplicity":
                item = {"name": f"{stage_name} reward: simplicity (Flesch FRE/FKG)", "axis": "simplicity",
                        "kind": "fre", "keys": [scorer_key("fre")]}
            elif src.kind == "safety":
                item = {"name": f"{stage_name} reward: safety (1 - toxicity, {src.toxicity.backend})",
                        "axis": "safety", "kind": "toxicity", "keys": [scorer_key("toxicity", src.toxicity.backend)]}
            elif src.kind == "length":
                item = {"name": f"{stage_name} reward: length guard", "axis": "length", "kind": "length",
                        "keys": ["length:"]}
            else:
                keys = [scorer_key("reward", src.path)]
                rm = rm_name_of(ctx, src.path)
                if rm and _rm_preference_key(ctx, rm):
                    keys.append(_rm_preference_key(ctx, rm))
                item = {"name": f"{stage_name} reward: reward model {Path(str(src.path)).name}", "axis": "other",
                        "kind": "reward", "keys": keys}
            out.append({**item, "used_by": f"{stage_name} (reward term '{src.label}')"})
    if "dpo" in ctx.recipe.stages:
        source = dpo_pairs(ctx)
        key = ("preferences:rm_rows:" + str(ctx.path("data", "rm").resolve())) if source == "rm" else \
            "preferences:simple_vs_english"
        label = "curated preference pairs (data/rm)" if source == "rm" else \
            "Simple vs ordinary Wikipedia pairs (synth/pairs)"
        out.append({"name": f"dpo preferences: {label}", "axis": "other", "kind": "preferences", "keys": [key],
                    "used_by": "dpo (its preference pairs)"})
    return out


def _judge_keys(ctx: Context, spec) -> list[str]:
    from simplesafe.eval.judges import scorer_key

    if spec.kind == "reward":
        path = Path(spec.model) if Path(spec.model).is_absolute() else ctx.path(spec.model)
        keys = [scorer_key("reward", str(path))]
        rm = rm_name_of(ctx, str(path))
        if rm and _rm_preference_key(ctx, rm):
            keys.append(_rm_preference_key(ctx, rm))
        return keys
    if spec.kind == "toxicity":
        return [scorer_key("toxicity", spec.backend)]
    return [scorer_key(spec.kind)]


def eval_config(ctx: Context):
    from simplesafe.eval.judges import check_independence
    from simplesafe.eval.run import EvalConfig

    cfg = section(EvalStageConfig, ctx.recipe.eval, "eval")
    settings = section(EvalConfig, cfg.settings, "eval.settings")
    models = _eval_models(ctx, cfg)
    signals = training_signals(ctx)
    check_independence([{"name": j.name, "keys": _judge_keys(ctx, j)} for j in settings.judges if not j.baseline],
                       signals)
    kl = dict(settings.kl_reference) or {m: r for m, r in (("sft", "base"), ("dpo", "sft"), ("ppo", "sft"),
                                                          ("grpo", "sft")) if m in models and r in models}
    update = {"training_signals": [{k: v for k, v in t.items() if k != "keys"} for t in signals],
              "kl_reference": kl}
    if cfg.redteam is not None:
        from simplesafe.eval.run import RedTeamConfig

        rt = section(RedTeamConfig, {**cfg.redteam, "prompts": str(ctx.path("eval_redteam_prompts.jsonl"))},
                     "eval.redteam")
        update["redteam"] = rt
    return cfg, settings.model_copy(update=update), models


def _redteam_prompts(ctx: Context, out: Path, limit: int) -> None:
    """First human turns of the safety reward model's held-out (test) hh-rlhf dialogues: requests no
    model or judge was trained on."""
    from simplesafe.io import write_rows
    from simplesafe.train.reward import RewardStageConfig
    from simplesafe.train.reward_data import load_pairs

    raw = (ctx.recipe.rm or {}).get("safety") or {}
    cfg = section(RewardStageConfig, {k: v for k, v in raw.items() if k != "backbone"}, "rm.safety",
                  {"name": "safety", "seed": ctx.recipe.seed})
    cfg = cfg.model_copy(update={"max_eval_rows": None, "max_train_rows": None})
    rows, seen = [], set()
    for pair in load_pairs(cfg)["test"]:
        first = pair["prompt"].split("\n\nAssistant:")[0].replace("Human:", "", 1).strip()
        if first and first not in seen:
            seen.add(first)
            rows.append({"id": f"redteam-{len(rows)}", "prompt": first, "source": "hh-rlhf-harmless-test"})
        if len(rows) >= limit:
            break
    if not rows:
        raise ConfigError("eval.redteam: the safety reward model's test split has no dialogues")
    write_rows(out, rows)


@register("eval")
def _eval(ctx: Context) -> dict:
    from simplesafe.eval.run import run_eval
    from simplesafe.io import read_rows, write_rows

    cfg, settings, specs = eval_config(ctx)
    models = {}
    for name, spec in specs.items():
        if spec["stage"] == "base" or (Path(spec["model"]) / "config.json").exists():
            models[name] = {"model": spec["model"], "prefix": spec["prefix"]}
        else:
            print(f"  eval: skipping {name} (no model at {spec['model']})")
    # One held-out prompt set: the first N prompts of each file, with their references.
    prompt_file = ctx.path("eval_prompts.jsonl")
    if not prompt_file.exists() or ctx.force:
        rows, seen = [], set()
        for rel in cfg.prompts:
            p = Path(rel) if Path(rel).is_absolute() else ctx.path(rel)
            if not p.exists():
                print(f"  eval: no prompt file {p}; skipped")
                continue
            n = 0
            for i, (_, row) in enumerate(read_rows(p)):
                if n >= cfg.prompts_per_file:
                    break
                if row["prompt"] in seen:
                    continue  # one question asked twice (two files) counts once
                seen.add(row["prompt"])
                n += 1
                ref = row.get("completion") or row.get("reference")  # SFT answer, or the RL row's preferred answer
                rows.append({"id": f"{p.parent.name}/{row.get('id', i)}", "prompt": row["prompt"],
                             **({"reference": ref} if isinstance(ref, str) and ref.strip() else {}),
                             "source": row.get("source", p.parent.name)})
        if not rows:
            raise ConfigError("eval: no held-out prompts found (check eval.prompts)")
        write_rows(prompt_file, rows)
    if settings.redteam is not None and (not Path(settings.redteam.prompts).exists() or ctx.force):
        _redteam_prompts(ctx, Path(settings.redteam.prompts), settings.redteam.limit)
    return run_eval(settings, ctx.run_dir, models, prompt_file, force=ctx.force)

