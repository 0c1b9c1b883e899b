"""GRPO and RLOO through TRL, with the same composite reward as PPO.

    simplesafe train grpo policy=runs/demo/sft data=runs/demo/data/rl out=runs/demo/grpo steps=10
    simplesafe train rloo policy=runs/demo/sft data=runs/demo/data/rl out=runs/demo/rloo steps=10
    simplesafe train grpo recipes/eli5-wiki-llama2-7b-qlora.yaml policy=runs/7b/sft data=runs/7b/data/rl out=runs/7b/grpo

Both drop PPO's value model and get a baseline from several answers to the same prompt:

- GRPO (Shao et al., 2024, DeepSeekMath): ``num_generations`` answers per prompt; the
  advantage of answer i is ``(R_i - mean(R)) / std(R)`` within its group; a clipped ratio
  objective and an optional KL penalty (``beta``) against the reference model.
- RLOO (Ahmadian et al., 2024, "Back to Basics"; Kool et al., 2019): the baseline of answer i
  is the mean reward of the *other* answers, ``R_i - mean_{j != i} R_j``; REINFORCE with
  the KL folded into the reward.

TRL 1.16's ``GRPOTrainer`` and ``RLOOTrainer`` do the work; this module maps our config on
theirs and hands them :meth:`~simplesafe.train.rewards.CompositeReward.trl_reward_funcs`
(one function per reward source, with the weights as ``reward_weights``), so TRL logs
every source as ``rewards/<name>/mean``. Prompts come from the RL dataset (``rl/``
train split, ``prompt`` field) in the report's ``### Human: {question} ### Assistant:``
format. With ``method: lora`` (a frozen base in the compute dtype) or ``qlora`` (an NF4 base,
Dettmers et al., 2023) the reference is the policy with its adapter disabled; with ``full``
it is a frozen copy in the compute dtype. Precision follows
:func:`simplesafe.models.load.resolve_precision`; ``gradient_checkpointing`` recomputes
activations in the backward pass. Memory grows with ``batch_size`` completions of
``max_prompt_tokens + max_new_tokens`` tokens (generation KV cache, then activations):
``simplesafe plan`` estimates it.

Outputs in ``out``: ``log.jsonl`` (TRL's log history: reward, every source, KL, entropy,
clip ratios, completion length), ``curves.png``, ``metrics.json`` and the trained policy
as a Hugging Face model folder (LoRA merged; the adapter alone in ``adapter/``). An
interrupted run resumes from TRL's last checkpoint in ``checkpoints/``.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Literal

from pydantic import Field

from simplesafe.atomic import write_json
from simplesafe.errors import ConfigError
from simplesafe.train.common import LoraSettings, Precision
from simplesafe.train.rollout import RLPromptSettings

log = logging.getLogger(__name__)


class GRPOStageConfig(RLPromptSettings):
    """GRPO / RLOO through TRL. Defaults follow TRL and DeepSeekMath where the report gives none."""

    algorithm: Literal["grpo", "rloo"] = Field("grpo", description="grpo (group-normalised advantages) or rloo "
                                               "(leave-one-out baseline)")
    policy: str = Field("embedded:tiny", description="SFT model folder (full model or LoRA adapter folder)")
    out: str | None = Field(None, description="output folder (the CLI's default: runs/grpo or runs/rloo)")
    method: Literal["full", "lora", "qlora"] = Field("lora", description="train all weights, LoRA adapters on a "
                                                     "frozen base, or LoRA on an NF4 base")
    lora: LoraSettings = Field(default_factory=lambda: LoraSettings(r=16, alpha=32, dropout=0.0))
    steps: int = Field(20, ge=1, description="optimiser steps")
    batch_size: int = Field(8, ge=2, description="completions per optimiser step (prompts x num_generations)")
    num_generations: int = Field(4, ge=2, description="answers sampled per prompt (the group)")
    max_new_tokens: int = Field(128, ge=1, description="completion length cap (tokens)")
    temperature: float = Field(1.0, gt=0)
    lr: float = Field(1e-5, gt=0, description="learning rate (linear decay)")
    beta: float = Field(0.04, ge=0, description="KL coefficient against the reference (0 = no reference model)")
    epsilon: float = Field(0.2, gt=0, description="ratio clip range")
    num_iterations: int = Field(1, ge=1, description="updates per generated batch (mu)")
    save_steps: int = Field(10, ge=1, description="checkpoint every N steps (for resuming)")
    logging_steps: int = Field(1, ge=1)
    gradient_checkpointing: bool = Field(False, description="recompute activations in the backward pass")
    precision: Precision = Field("auto", description="compute precision: auto = bf16 on a GPU with bf16 or a "
                                 "bf16-capable CPU, fp16 (loss scaling) on other GPUs, else fp32")
    seed: int = 0


def _question_dataset(cfg: GRPOStageConfig, tokenizer, model_config):
    """Prompts cut (question end first) so prompt + completion fit the model's context: TRL 1.16 no longer cuts them."""
    from datasets import Dataset

    from simplesafe.train.rollout import fit_prompt, load_prompts, prompt_token_budget

    budget = prompt_token_budget(cfg, model_config)
    rows = load_prompts(cfg)  # same reader and checks as PPO
    return Dataset.from_list([{"prompt": fit_prompt(r["question"], cfg.template, tokenizer, budget),
                               "question": r["question"], "id": str(r["id"])} for r in rows])


def train_grpo(cfg: GRPOStageConfig, out_dir: str | Path, progress: bool = True, reward=None) -> dict:
    """Train with TRL's GRPO or RLOO trainer into ``out_dir``; returns the headline metrics."""
    from transformers.trainer_utils import get_last_checkpoint

    from simplesafe.runs import set_seed
    from simplesafe.models.load import precision_dtype
    from simplesafe.train.common import has_gpu, load_policy, peft_config, training_precision, weight_dtype
    from simplesafe.train.curves import plot_curves
    from simplesafe.train.rewards import CompositeReward
    from simplesafe.train.rollout import load_ppo_tokenizer, load_sft_policy

    if cfg.batch_size % cfg.num_generations:
        raise ConfigError(f"batch_size ({cfg.batch_size}) must be a multiple of num_generations ({cfg.num_generations})")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    set_seed(cfg.seed)
    t0 = time.time()
    gpu = has_gpu()
    precision = training_precision(cfg.precision)
    compute = precision_dtype(precision)
    tokenizer = load_ppo_tokenizer(cfg.policy)
    own_reward = reward is None
    reward = reward or CompositeReward(cfg.rewards)
    if cfg.method == "qlora":
        if (Path(cfg.policy) / "adapter_config.json").exists():
            raise ConfigError(f"{cfg.policy} is a LoRA adapter folder; GRPO with method: qlora needs a merged model "
                              "folder (SFT writes one next to its adapter/)")
        model = load_policy(cfg.policy, "qlora", precision=cfg.precision,
                            gradient_checkpointing=cfg.gradient_checkpointing)
    else:
        # full: trainable fp32 weights (autocast computes in `precision`); lora: a frozen base in the compute dtype
        model = load_sft_policy(cfg.policy, weight_dtype(cfg.method, precision))
        model.requires_grad_(cfg.method == "full")
    dataset = _question_dataset(cfg, tokenizer, model.config)

    common = dict(
        output_dir=str(out_dir / "checkpoints"), learning_rate=cfg.lr, max_steps=cfg.steps,
        per_device_train_batch_size=cfg.batch_size, gradient_accumulation_steps=1,
        num_generations=cfg.num_generations, max_completion_length=cfg.max_new_tokens,
        temperature=cfg.temperature, beta=cfg.beta, epsilon=cfg.epsilon, num_iterations=cfg.num_iterations,
        reward_weights=reward.weights, logging_steps=cfg.logging_steps, save_steps=cfg.save_steps,
        save_strategy="steps", save_total_limit=1, seed=cfg.seed, data_seed=cfg.seed, report_to=[],
        bf16=precision == "bf16", fp16=precision == "fp16", use_cpu=not gpu,
        gradient_checkpointing=cfg.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if cfg.gradient_checkpointing else None,
        disable_tqdm=not progress, dataloader_num_workers=0, top_k=0,
        # a full-fine-tuning reference is built by TRL: frozen, in the compute dtype
        model_init_kwargs={"dtype": compute},
    )
    if cfg.algorithm == "grpo":
        from trl import GRPOConfig as TRLConfig, GRPOTrainer as Trainer
    else:
        from trl import RLOOConfig as TRLConfig, RLOOTrainer as Trainer
    args = TRLConfig(**common)
    trainer = Trainer(
        model=model, reward_funcs=reward.trl_reward_funcs(), args=args, train_dataset=dataset,
        processing_class=tokenizer, peft_config=peft_config(cfg.lora) if cfg.method != "full" else None,
    )
    ckpt_dir = out_dir / "checkpoints"
    last = get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.is_dir() else None
    if last:
        log.info("resuming %s from %s", cfg.algorithm, last)
    trainer.train(resume_from_checkpoint=last)

    history = [dict(h, step=h.get("step", 0)) for h in trainer.state.log_history if "loss" in h or "reward" in h]
    from simplesafe.io import write_rows

    write_rows(out_dir / "log.jsonl", history)
    plot_curves([_ppo_names(h) for h in history if "reward" in h], out_dir / "curves.png")
    if own_reward:
        reward.close()
    _save_trained(trainer.model, tokenizer, cfg, out_dir, model, precision)
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    rewards_logged = [h for h in history if "reward" in h]
    k = max(1, len(rewards_logged) // 4)
    metrics = {"algorithm": cfg.algorithm, "steps": trainer.state.global_step, "seconds": round(time.time() - t0, 1),
               "averaged_over_logs": k}
    for key in ["reward", "kl", "entropy", "completions/mean_length"] + [f"rewards/{n}/mean" for n in reward.names]:
        vals = [h[key] for h in rewards_logged if key in h and h[key] is not None and not math.isnan(h[key])]
        if vals:
            metrics[f"{key}_first"] = sum(vals[:k]) / len(vals[:k])
            metrics[f"{key}_last"] = sum(vals[-k:]) / len(vals[-k:])
    write_json(out_dir / "metrics.json", metrics)
    return metrics


def _ppo_names(h: dict) -> dict:
    """TRL's log keys renamed to the ones :func:`~simplesafe.train.curves.plot_curves` draws."""
    row = {"step": h.get("step", 0), "reward": h["reward"], "kl": h.get("kl", 0.0) or 0.0}
    for key, value in h.items():
        if key.startswith("rewards/") and key.endswith("/mean"):
            row["reward/" + key[len("rewards/"):-len("/mean")]] = value
    return row


def _save_trained(model, tokenizer, cfg: GRPOStageConfig, out_dir: Path, base=None, precision: str = "fp32") -> None:
    """The policy as an HF folder; LoRA/QLoRA also keep ``adapter/`` (QLoRA: careful merge, from the record)."""
    from simplesafe.models.load import precision_dtype, release_memory, save_pretrained
    from simplesafe.train.common import record_adapter

    if cfg.method != "full":
        model.peft_config["default"].base_model_name_or_path = str(cfg.policy)
        save_pretrained(model, tokenizer, out_dir / "adapter")
        if base is not None and not getattr(base, "simplesafe_training", None):
            base.simplesafe_training = {"method": cfg.method, "precision": precision,
                                        "weight_dtype": precision_dtype(precision)}
        record_adapter(out_dir / "adapter", base if base is not None else model, cfg.policy)
        if cfg.method == "qlora":
            from simplesafe.train.merge import merge_adapter

            model = None
            release_memory()
            model = merge_adapter(cfg.policy, out_dir / "adapter", None, mode="careful",
                                  dtype=precision_dtype(precision))
        else:
            model = model.merge_and_unload()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    from simplesafe.train.common import save_model_into

    save_model_into(model, tokenizer, out_dir)


def run_grpo(cfg: GRPOStageConfig, out_dir: str | Path, force: bool = False, progress: bool = True) -> dict:
    """The ``train grpo`` / ``train rloo`` stage: skipped when done, resumed from TRL's checkpoint when interrupted."""
    from simplesafe.runs import stage
    from simplesafe.train.common import split_paths

    out_dir = Path(out_dir)
    if force:
        shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
    inputs = split_paths(cfg.data, "train") if cfg.data else []
    with stage(out_dir.parent, out_dir.name, cfg, inputs=inputs, seed=cfg.seed, force=force) as st:
        if st.skipped:
            return json.loads((out_dir / "metrics.json").read_text())
        return train_grpo(cfg, out_dir, progress=progress)
