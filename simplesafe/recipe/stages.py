"""The training and data stages of a recipe, each with the builder of its validated config.

tiny_model, data, backward, synth, sft, rm, dpo, merge, ppo and grpo. A ``*_config`` builder
reads the stage's recipe section with its defaults (the run's paths, the base model, the seed); the
runner calls it to validate the recipe before anything runs and the memory planner
(:mod:`simplesafe.plan`) to plan the stage.
"""

from __future__ import annotations

import json
from pathlib import Path

from simplesafe.atomic import write_json
from simplesafe.errors import ConfigError
from simplesafe.recipe.config import (BackwardStageConfig, Context, EvalStageConfig, MergeStageConfig,
                                      register, section)


@register("tiny_model")
def _tiny_model(ctx: Context) -> dict:
    from simplesafe.models.tiny import TinyModelConfig, build_tiny_model, default_tiny_path
    from simplesafe.runs import stage

    cfg = section(TinyModelConfig, ctx.recipe.tiny_model, "tiny_model")
    with stage(ctx.run_dir, "tiny_model", cfg, seed=cfg.seed, force=ctx.force) as st:
        if st.skipped:
            return json.loads((st.dir / "build_info.json").read_text())
        out = Path(cfg.out) if cfg.out else default_tiny_path()
        info_path = out / "build_info.json"
        metrics = None
        if info_path.exists() and not ctx.force:
            cached = json.loads(info_path.read_text())
            if cached.get("fingerprint") == cfg.fingerprint() and (out / "model.safetensors").exists():
                metrics = cached
                print(f"  reusing the cached tiny model at {out}")
        if metrics is None:
            metrics = build_tiny_model(cfg)
        write_json(st.dir / "build_info.json", metrics)
        return metrics


def data_config(ctx: Context):
    from simplesafe.data.config import DataBuildConfig

    return section(DataBuildConfig, ctx.recipe.data, "data", {"seed": ctx.recipe.seed})


@register("data")
def _data(ctx: Context) -> dict:
    from simplesafe.data.build import build_datasets, print_funnel

    headline = build_datasets(data_config(ctx), ctx.path("data"), force=ctx.force)
    stats_path = ctx.path("data", "stats.json")
    if stats_path.exists():
        print_funnel(json.loads(stats_path.read_text()))
    return headline


def backward_configs(ctx: Context):
    from simplesafe.synth.prompts import BACKTRANSLATE_SYSTEM
    from simplesafe.text.prompt import REPORT_TEMPLATE
    from simplesafe.train.sft import SFTStageConfig

    cfg = section(BackwardStageConfig, ctx.recipe.backward, "backward")
    if ctx.recipe.template == "chat":
        # the backtranslation backend renders [system, user] through the model's chat template
        defaults = {"template": "chat", "system": BACKTRANSLATE_SYSTEM}
    else:
        # ... which for the report's format is "<system>\n### Human: <prompt with the answer> ### Assistant:"
        defaults = {"template": BACKTRANSLATE_SYSTEM + "\n" + REPORT_TEMPLATE}
    sft = section(SFTStageConfig, cfg.sft, "backward.sft",
                  {"model": ctx.base_model, "seed": ctx.recipe.seed, **defaults})
    return cfg, sft


@register("backward")
def _backward(ctx: Context) -> dict:
    """Humpback's backward model: fine-tune the base on (answer -> question) train pairs."""
    import random

    from simplesafe.data.filters import Funnel
    from simplesafe.data.config import assign_split
    from simplesafe.data.qa import load_questions
    from simplesafe.runs import stage
    from simplesafe.synth.prompts import BACKTRANSLATE_PROMPT
    from simplesafe.text.clean import clean_question, clean_reddit_text
    from simplesafe.train.sft import train_sft

    cfg, sft = backward_configs(ctx)
    dcfg = data_config(ctx)
    with stage(ctx.run_dir, "backward", {"backward": cfg.model_dump(), "sft": sft.model_dump()},
               seed=ctx.recipe.seed, force=ctx.force) as st:
        if st.skipped:
            return json.loads((st.dir / "metrics.json").read_text())
        pairs = []
        for q in load_questions(dcfg, [], Funnel()):
            split = q.split or assign_split(q.id, dcfg.seed, dcfg.validation_fraction, dcfg.test_fraction)
            if split != "train" or not q.answers:
                continue  # validation/test questions never reach any model
            best = max(q.answers, key=lambda a: (a.score is not None, a.score or 0))
            question = clean_question(q.title, q.body)
            answer = " ".join(clean_reddit_text(best.text).split()[: cfg.answer_words])
            if question and answer:
                pairs.append({"prompt": BACKTRANSLATE_PROMPT.format(answer=answer), "completion": question})
        random.Random(ctx.recipe.seed).shuffle(pairs)
        pairs = pairs[: cfg.max_pairs]
        n_val = max(1, int(len(pairs) * cfg.validation_fraction))
        if len(pairs) < 10:
            raise ConfigError(f"backward: only {len(pairs)} train QA pairs to learn from; need at least 10")
        return train_sft(ctx.base_model, pairs[n_val:], pairs[:n_val], st.dir, sft)


def synth_config(ctx: Context):
    from simplesafe.synth.backtranslate import BacktranslateConfig

    generator = str(ctx.path("backward")) if "backward" in ctx.recipe.stages else ctx.base_model
    defaults = {"input": str(ctx.path("data", "wiki")), "seed": ctx.recipe.seed,
                "backend": {"backend": "hf", "model": generator}}
    return section(BacktranslateConfig, ctx.recipe.synth, "synth", defaults)


@register("synth")
def _synth(ctx: Context) -> dict:
    from simplesafe.synth.backtranslate import run_backtranslation

    return run_backtranslation(synth_config(ctx), ctx.path("synth"), force=ctx.force)


def sft_config(ctx: Context):
    from simplesafe.train.sft import SFTStageConfig

    data = [str(ctx.path("data", "sft"))]
    if "synth" in ctx.recipe.stages:
        data.append(str(ctx.path("synth")))
    defaults = ctx.with_template({"model": ctx.base_model, "data": data, "seed": ctx.recipe.seed})
    return section(SFTStageConfig, ctx.recipe.sft, "sft", defaults)


@register("sft")
def _sft(ctx: Context) -> dict:
    from simplesafe.train.sft import run_sft

    return run_sft(sft_config(ctx), ctx.path("sft"), force=ctx.force)


def rm_configs(ctx: Context) -> dict:
    from simplesafe.train.reward import RewardStageConfig

    sections = ctx.recipe.rm or {"helpfulness": {}, "safety": {}, "simplicity": {}}
    out = {}
    for name, raw in sections.items():
        defaults = {"name": name, "seed": ctx.recipe.seed}
        raw = dict(raw or {})
        # data/rm: the curated RM dataset (the report); data/pairs: every preference pair not routed to SFT
        dataset = raw.pop("dataset", "rm")
        if dataset not in ("rm", "pairs"):
            raise ConfigError(f"recipe: rm.{name}.dataset must be rm or pairs, got {dataset!r}")
        if (raw or {}).get("backbone") == "sft":  # the report: the RM is the SFT model with a new head
            raw = {**raw, "backbone": ctx.sft_model()}
            defaults = ctx.with_template(defaults)
        if name == "helpfulness" or "dataset" in (ctx.recipe.rm or {}).get(name, {}):
            defaults["data"] = [str(ctx.path("data", dataset))]
        out[name] = section(RewardStageConfig, raw or {}, f"rm.{name}", defaults)
    return out


@register("rm")
def _rm(ctx: Context) -> dict:
    from simplesafe.train.reward import run_reward

    results = {}
    for name, cfg in rm_configs(ctx).items():
        print(f"  reward model: {name}")
        results[name] = run_reward(cfg, ctx.path(f"rm_{name}"), force=ctx.force)
    return results


DPO_PAIRS = {"rm": ("data", "rm"), "simplicity": ("synth", "pairs")}


def dpo_pairs(ctx: Context) -> str:
    """Which preference pairs DPO learns from: ``rm`` (curated preference pairs, the report) or
    ``simplicity`` (Simple vs ordinary Wikipedia answers to the backtranslated questions)."""
    source = (ctx.recipe.dpo or {}).get("pairs", "rm")
    if source not in DPO_PAIRS:
        raise ConfigError(f"recipe: dpo.pairs must be one of {', '.join(DPO_PAIRS)}, got {source!r}")
    if source == "simplicity" and "synth" not in ctx.recipe.stages:
        raise ConfigError("recipe: dpo.pairs: simplicity needs the synth stage (it writes synth/pairs)")
    return source


def dpo_config(ctx: Context):
    from simplesafe.train.dpo import DPOStageConfig

    raw = {k: v for k, v in (ctx.recipe.dpo or {}).items() if k != "pairs"}
    defaults = ctx.with_template({"model": ctx.sft_model(), "data": [str(ctx.path(*DPO_PAIRS[dpo_pairs(ctx)]))],
                                  "seed": ctx.recipe.seed})
    return section(DPOStageConfig, raw, "dpo", defaults)


@register("dpo")
def _dpo(ctx: Context) -> dict:
    from simplesafe.train.dpo import run_dpo

    return run_dpo(dpo_config(ctx), ctx.path("dpo"), force=ctx.force)


def merge_config(ctx: Context):
    """The merge section, refused when it asks for a careful merge of an adapter that is not QLoRA."""
    cfg = section(MergeStageConfig, ctx.recipe.merge, "merge")
    if cfg.mode == "careful" and "dpo" in ctx.recipe.stages and dpo_config(ctx).method != "qlora":
        raise ConfigError(f"recipe: merge.mode is careful, but dpo.method is {dpo_config(ctx).method}: the careful "
                          "merge rebuilds the NF4 base a QLoRA adapter was trained against; a plain LoRA adapter "
                          "saw the unquantised base. Set merge.mode: simple, or dpo.method: qlora")
    return cfg


@register("merge")
def _merge(ctx: Context) -> dict:
    from simplesafe.runs import stage
    from simplesafe.train.merge import run_merge

    cfg = merge_config(ctx)
    adapter = ctx.path("dpo", "adapter")
    with stage(ctx.run_dir, "merge", cfg, seed=ctx.recipe.seed, force=ctx.force) as st:
        if st.skipped:
            return json.loads((st.dir / "model" / "merge_report.json").read_text())
        if not (adapter / "adapter_config.json").exists():
            raise ConfigError(f"merge: no LoRA adapter at {adapter}; run DPO with method lora or qlora")
        validation = ctx.path("data", "sft", "validation.jsonl")
        return run_merge(ctx.sft_model(), adapter, st.dir / "model", mode=cfg.mode, compare=cfg.compare,
                         template=ctx.recipe.template,
                         validation=validation if validation.exists() else None, max_rows=cfg.max_rows)


def _probe_judges(ctx: Context) -> list[dict]:
    """The eval stage's judges (reward-model paths made absolute) for PPO's over-optimisation probe."""
    from simplesafe.eval.run import EvalConfig

    settings = section(EvalConfig, section(EvalStageConfig, ctx.recipe.eval, "eval").settings, "eval.settings")
    out = []
    for j in settings.judges:
        if j.baseline:
            continue
        d = j.model_dump()
        if j.kind == "reward" and j.model and not Path(j.model).is_absolute():
            d["model"] = str(ctx.path(j.model))
        out.append(d)
    return out


def ppo_config(ctx: Context):
    from simplesafe.train.ppo_config import PPOStageConfig

    defaults = ctx.with_template({"policy": ctx.sft_model(), "data": [str(ctx.path("data", "rl"))],
                                  "seed": ctx.recipe.seed})
    if "rewards" not in ctx.recipe.ppo:
        # The report's composite goal: simple and safe, plus the learned helpfulness RM when trained.
        rewards = [{"kind": "simplicity", "weight": 1.0}, {"kind": "safety", "weight": 1.0}]
        if "rm" in ctx.recipe.stages and "helpfulness" in (ctx.recipe.rm or {"helpfulness": {}}):
            rewards.append({"kind": "rm", "name": "helpfulness", "path": str(ctx.path("rm_helpfulness")),
                            "weight": 0.5})
        defaults["rewards"] = rewards
    if "eval" in ctx.recipe.stages and "probe" not in ctx.recipe.ppo:
        # held-out judges on fixed validation questions during training (over-optimisation plot)
        defaults["probe"] = {"prompts": str(ctx.path("ppo_probe_prompts.jsonl")), "judges": _probe_judges(ctx)}
    return section(PPOStageConfig, ctx.recipe.ppo, "ppo", defaults)


@register("ppo")
def _ppo(ctx: Context) -> dict:
    from simplesafe.io import read_rows, write_rows
    from simplesafe.train.ppo import run_ppo

    cfg = ppo_config(ctx)
    probe = Path(cfg.probe.prompts) if cfg.probe.prompts else None
    if probe is not None and probe.name == "ppo_probe_prompts.jsonl" and not probe.exists():
        # validation questions: never trained on (the eval stage uses them with the test questions)
        rows = []
        for name in ("rl", "rm", "sft"):
            f = ctx.path("data", name, "validation.jsonl")
            if f.exists():
                rows += [{"id": r.get("id"), "prompt": r["prompt"]} for _, r in read_rows(f)]
        if not rows:
            raise ConfigError("ppo probe: no validation questions in data/{rl,rm,sft}/validation.jsonl")
        write_rows(probe, rows[: cfg.probe.n])
    return run_ppo(cfg, ctx.path("ppo"), force=ctx.force)


def grpo_config(ctx: Context):
    from simplesafe.train.grpo import GRPOStageConfig

    defaults = ctx.with_template({"policy": ctx.sft_model(), "data": [str(ctx.path("data", "rl"))],
                                  "seed": ctx.recipe.seed})
    return section(GRPOStageConfig, ctx.recipe.grpo, "grpo", defaults)


@register("grpo")
def _grpo(ctx: Context) -> dict:
    from simplesafe.train.grpo import run_grpo

    return run_grpo(grpo_config(ctx), ctx.path("grpo"), force=ctx.force)

