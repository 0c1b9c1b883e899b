"""What every RL stage shares: the SFT policy, its tokenizer and the RL prompts, fitted to the context.

PPO (:mod:`simplesafe.train.ppo`), GRPO/RLOO (:mod:`simplesafe.train.grpo`), best-of-n
(:mod:`simplesafe.train.bon`) and expert iteration (:mod:`simplesafe.train.online`) all

- load the SFT model as a plain causal LM (:func:`load_sft_policy`; a LoRA adapter folder is
  merged into its base) and its tokenizer, left-padded for generation (:func:`load_ppo_tokenizer`);
- read ``{id, question}`` rows from the RL dataset's train split (:func:`load_prompts`);
- format each question as a prompt (``### Human: {question} ### Assistant:`` or the chat
  template) cut so that prompt + response fit the model's context (:func:`prompt_token_budget`,
  :func:`fit_prompt`).

Sampling and scoring the completions stay in each stage (they differ); the reward they score with
is :mod:`simplesafe.train.rewards`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from pydantic import Field

from simplesafe.config import StageConfig
from simplesafe.errors import ConfigError, DataError
from simplesafe.train.common import REPORT_TEMPLATE, DataConfigMixin
from simplesafe.train.rewards import RewardSource, default_sources

log = logging.getLogger(__name__)


class RLPromptSettings(DataConfigMixin, StageConfig):
    """What the RL stages (PPO, GRPO/RLOO) share: the prompts, how they are formatted and cut, the reward."""

    template: str = Field(REPORT_TEMPLATE, description="prompt with {question}, or 'chat' for the tokenizer's template")
    prompt_field: str = Field("prompt", description="row field holding the question")
    max_prompts: int | None = Field(None, ge=1, description="use only the first N training prompts (demo, tests)")
    max_prompt_tokens: int = Field(256, ge=4, description="longer questions are cut at the end to fit")
    rewards: list[RewardSource] = Field(default_factory=default_sources, description="composite reward sources")


# ----------------------------------------------------------------------------- the policy

def load_sft_policy(path: str, dtype: str, quantization: str = "none", device: str | None = None):
    """The SFT model as a plain causal LM; a LoRA adapter folder is merged into its base (simple merge).

    ``quantization: nf4`` loads the weights in NF4 on ``device`` (a merged model folder only).
    """
    from simplesafe.models.load import load_causal_lm

    p = Path(path).expanduser()
    if (p / "adapter_config.json").exists():
        if quantization != "none":
            raise ConfigError(f"{p} is a LoRA adapter folder; PPO with method: qlora needs a merged model folder "
                              "(SFT writes one next to its adapter/)")
        from simplesafe.train.merge import merge_adapter

        base = json.loads((p / "adapter_config.json").read_text()).get("base_model_name_or_path")
        if not base:
            raise ConfigError(f"{p}/adapter_config.json has no base_model_name_or_path; pass the merged model instead")
        return merge_adapter(base, p, None, mode="simple", dtype=dtype)
    if quantization != "none":
        return load_causal_lm(path, dtype=dtype, quantization=quantization,
                              device_map={"": str(device)} if device is not None and str(device) != "cpu" else None)
    return load_causal_lm(path, dtype=dtype)


def load_ppo_tokenizer(path: str):
    from simplesafe.models.load import load_tokenizer

    p = Path(path).expanduser()
    if (p / "adapter_config.json").exists() and not (p / "tokenizer_config.json").exists():
        path = json.loads((p / "adapter_config.json").read_text())["base_model_name_or_path"]
    tok = load_tokenizer(path, padding_side="left")
    tok.truncation_side = "left"
    if tok.eos_token_id is None:
        raise ConfigError(f"the tokenizer of '{path}' has no EOS token; PPO needs one to end responses")
    return tok


# ----------------------------------------------------------------------------- prompts

def prompt_token_budget(cfg, model_config) -> int:
    """Prompt tokens kept so that prompt + response fit the model's context (prompts keep their end).

    ``cfg``: an RL stage config (its ``max_prompt_tokens`` and ``max_new_tokens``).
    """
    context = getattr(model_config.get_text_config(), "max_position_embeddings", None)
    if context is None:
        return cfg.max_prompt_tokens
    room = context - cfg.max_new_tokens
    if room < 4:
        raise ConfigError(f"max_new_tokens={cfg.max_new_tokens} leaves no room for a prompt in the model's "
                          f"{context}-token context")
    if room < cfg.max_prompt_tokens:
        log.info("questions cut so each prompt fits %d tokens of the %d-token context", room, context)
    return min(cfg.max_prompt_tokens, room)


def load_prompts(cfg) -> list[dict]:
    """``{id, question}`` rows from the RL dataset's train split (``{id, source, question_id, prompt}``).

    ``cfg``: an RL stage config (its ``data``, ``prompt_field`` and, where it has one, ``max_prompts``).
    """
    from simplesafe.train.common import read_split, split_paths

    if not cfg.data:
        raise ConfigError("PPO needs data: an RL dataset folder (train.jsonl with a 'prompt' field) or prompt files")
    rows = read_split(split_paths(cfg.data, "train"), (cfg.prompt_field,), optional={"id": None})
    if getattr(cfg, "max_prompts", None):
        rows = rows[: cfg.max_prompts]
    if not rows:
        raise DataError(cfg.data[0], None, cfg.prompt_field, "no prompts to train on")
    return [{"id": r["id"] if r["id"] is not None else r["_where"], "question": r[cfg.prompt_field]} for r in rows]


def fit_prompt(question: str, template: str, tokenizer, budget: int) -> str:
    """The formatted prompt, its question cut (keeping the start: the title) so the prompt fits ``budget`` tokens.

    Cutting the formatted prompt instead would drop the template's ``### Human:`` head.
    """
    from simplesafe.train.common import format_prompt

    text = format_prompt(question, template, tokenizer)
    n = len(tokenizer(text, add_special_tokens=template != "chat")["input_ids"])
    if n <= budget:
        return text
    q_ids = tokenizer(question, add_special_tokens=False)["input_ids"]
    keep = max(1, len(q_ids) - (n - budget) - 2)  # 2 tokens of slack: re-tokenising at the cut can merge differently
    return format_prompt(tokenizer.decode(q_ids[:keep]).rstrip(), template, tokenizer)

