"""The settings of ``simplesafe train ppo`` (:mod:`simplesafe.train.ppo`): the stage and its probe."""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import Field, model_validator

from simplesafe.config import StageConfig
from simplesafe.train.common import LoraSettings, Precision
from simplesafe.train.rollout import RLPromptSettings


class ProbeConfig(StageConfig):
    """Held-out judges on fixed prompts during training (:mod:`simplesafe.train.probe`)."""

    prompts: str | None = Field(None, description="prompt file (rows with `prompt`); none = no probe")
    n: int = Field(16, ge=1, description="prompts used")
    every: int = Field(4, ge=1, description="probe every N steps (and before the first and after the last)")
    max_new_tokens: int | None = Field(None, ge=1, description="default: the rollout's max_new_tokens")
    temperature: float = Field(0.7, ge=0)
    judges: list[dict] = Field(default_factory=list, description="simplesafe.eval.judges.JudgeSpec entries")


class PPOStageConfig(RLPromptSettings):
    """PPO on RL prompts. Defaults follow Ziegler et al. (2019) / TRL's former PPOTrainer where the report gives none."""

    policy: str = Field("embedded:tiny", description="SFT model folder (full model, or a LoRA adapter folder "
                        "with adapter_config.json, merged into its base on load); also the KL reference")
    out: str | None = Field(None, description="output folder (the CLI's default: runs/ppo)")
    memory_mode: Literal["shared", "separate"] = Field("shared", description="shared: LoRA policy, adapter-off "
                                                       "reference, value head on the policy; separate: four models")
    method: Literal["lora", "qlora"] = Field("lora", description="shared mode: the frozen SFT weights in the compute "
                                             "dtype (lora) or NF4 (qlora)")
    value_model: Literal["head", "lora"] = Field("head", description="shared mode: a linear head on the policy's last "
                                                 "hidden state, or its own LoRA adapter on the shared trunk + a head")
    lora: LoraSettings = Field(default_factory=lambda: LoraSettings(r=16, alpha=32, dropout=0.0),
                               description="shared mode: the policy's adapters (and the value adapter's)")
    gradient_checkpointing: bool = Field(False, description="recompute the trunk's activations in the backward pass")
    generation_batch_size: int | None = Field(None, ge=1, description="prompts sampled together in a rollout (the KV "
                                              "cache grows with it); default: batch_size")
    forward_batch_size: int | None = Field(None, ge=1, description="responses per no-gradient scoring pass (old "
                                           "log-probs, values, reference); default: mini_batch_size")
    steps: int = Field(20, ge=1, description="PPO iterations (one rollout batch + its updates each)")
    batch_size: int = Field(16, ge=1, description="prompts (= responses) per rollout")
    mini_batch_size: int = Field(8, ge=1, description="responses per gradient step")
    ppo_epochs: int = Field(4, ge=1, description="passes over each rollout batch")
    lr: float = Field(1.41e-5, gt=0, description="AdamW learning rate (constant)")
    max_grad_norm: float = Field(1.0, gt=0)
    max_new_tokens: int = Field(128, ge=1, description="response length cap (tokens)")
    temperature: float = Field(1.0, gt=0, description="sampling temperature (log-probs use the same one)")
    top_p: float = Field(1.0, gt=0, le=1.0)
    init_kl_coef: float = Field(0.05, ge=0, description="beta: weight of the per-token KL penalty")
    adaptive_kl: bool = Field(False, description="adapt beta towards target_kl (Ziegler et al., 2019)")
    target_kl: float = Field(6.0, gt=0, description="adaptive controller: target KL per response (nats)")
    kl_horizon: float = Field(10000, gt=0, description="adaptive controller: horizon (responses)")
    kl_estimator: Literal["k1", "k2", "k3", "abs"] = Field("k1", description="per-token KL estimator in the reward")
    gamma: float = Field(1.0, ge=0, le=1)
    lam: float = Field(0.95, ge=0, le=1, description="GAE lambda")
    cliprange: float = Field(0.2, gt=0, description="policy ratio clip epsilon")
    cliprange_value: float = Field(0.2, gt=0, description="value clip range")
    vf_coef: float = Field(0.1, ge=0, description="weight of the value loss")
    ent_coef: float = Field(0.0, ge=0, description="weight of the entropy bonus")
    whiten_advantages: bool = True
    missing_eos_penalty: float | None = Field(None, ge=0, description="subtract from the score of responses "
                                              "that hit max_new_tokens without EOS")
    save_every: int = Field(5, ge=1, description="checkpoint every N steps (and at the end)")
    keep_checkpoint: bool = Field(False, description="keep checkpoint/ after the run finishes")
    n_samples_logged: int = Field(2, ge=0, description="responses per step written to samples.jsonl")
    precision: Precision = Field("auto", description="compute precision: auto = bf16 on a GPU with bf16 or a "
                                 "bf16-capable CPU, fp16 (loss scaling) on other GPUs, else fp32")
    probe: ProbeConfig = Field(default_factory=ProbeConfig, description="held-out judges on fixed prompts per step")
    seed: int = 0

    @model_validator(mode="after")
    def _modes(self):
        if self.memory_mode == "separate" and (self.method != "lora" or self.value_model != "head"):
            raise ValueError("method and value_model are shared-mode settings; separate mode trains a full policy "
                             "and a full value model (leave method: lora, value_model: head)")
        return self

    def fingerprint(self) -> str:
        """What a checkpoint must match to be resumed (everything that changes the numbers)."""
        data = self.model_dump(mode="json", exclude={"out", "save_every", "keep_checkpoint", "n_samples_logged", "probe"})
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
