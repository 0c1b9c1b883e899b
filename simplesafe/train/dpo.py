"""Direct Preference Optimization on preference pairs through TRL's DPOTrainer (Rafailov et al., 2023).

DPO is the report's section 1.2: the SFT model learns the preferences directly,
without a reward model or RL, by minimising
``-log sigma(beta * [log pi/pi_ref (chosen) - log pi/pi_ref (rejected)])``
(:func:`simplesafe.train.losses.dpo.dpo_loss` is the same equation in a dozen lines).
The reference ``pi_ref`` is a frozen copy of the starting model; with ``method: lora`` or
``qlora`` it is the same model with the adapter switched off (TRL does this when no
reference model is passed), so only one copy of the weights is in memory. With
``precompute_ref_log_probs`` the reference log-probabilities are computed once before
training and the reference is not kept at all.

Rows are the reward-model pairs ``{prompt, chosen, rejected}`` written by ``data build``;
the prompt is formatted with the SFT template so DPO trains the answer format SFT taught.
Pair weights: curation gives each question's kept pairs a total weight of 1 (``weight``
column, 1/C(K,2) per pair when all pairs are kept). TRL's DPOTrainer has no per-example
weights (its ``use_weighting`` is WPO's policy-probability weighting, not this), and
:func:`preference_dataset` keeps only ``prompt/chosen/rejected``, so here every pair counts
1 and a question with n kept pairs counts n times. For one vote per question in DPO, build
the data with ``pair_strategy: top2`` (or ``best_worst``/``random``). The reward models do
use the weights (:mod:`simplesafe.train.reward`).

    simplesafe train dpo data=runs/demo/data/rm model=runs/demo/sft out=runs/demo/dpo beta=0.1
    simplesafe train dpo recipes/gpu/dpo.yaml model=runs/gpu/sft out=runs/gpu/dpo

Output: a loadable model folder (LoRA: ``adapter/`` plus the merged model) and
``metrics.json`` with the validation reward margin (``eval_rewards_margins``: mean of
``beta * (log-ratio chosen - log-ratio rejected)``) and reward accuracy.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from simplesafe.atomic import write_json
from simplesafe.config import StageConfig
from simplesafe.errors import ConfigError, DataError
from simplesafe.train.common import (
    REPORT_TEMPLATE,
    DataConfigMixin,
    LoraSettings,
    Method,
    Precision,
    format_prompt,
    load_policy,
    log_history_losses,
    peft_config,
    read_train_validation,
    record_adapter,
    run_training_stage,
    save_model_into,
    training_arguments,
)

log = logging.getLogger(__name__)

LossType = Literal["sigmoid", "ipo", "hinge", "robust", "bco_pair", "sppo_hard", "nca_pair", "apo_zero", "apo_down",
                   "aot", "aot_pair", "discopop", "exo_pair", "sft"]


class DPOStageConfig(DataConfigMixin, StageConfig):
    """DPO. Defaults: the DPO paper's beta=0.1, sigmoid loss, learning rate 1e-6 (full fine-tuning)."""

    model: str = Field("embedded:tiny", description="starting policy (normally the SFT output folder)")
    ref_model: str | None = Field(None, description="reference model; default: a frozen copy of `model` "
                                  "(with LoRA: the adapter switched off)")
    out: str | None = Field(None, description="output folder (CLI default: runs/dpo)")
    method: Method = Field("full", description="full, lora or qlora")
    lora: LoraSettings = Field(default_factory=LoraSettings)
    beta: float = Field(0.1, gt=0, description="strength of the implicit KL constraint to the reference")
    loss_type: list[LossType] = Field(["sigmoid"], description="TRL loss type(s): sigmoid (the paper), ipo, hinge, ...")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="conservative DPO: assumed share of flipped labels")
    precompute_ref_log_probs: bool = Field(False, description="compute reference log-probs once, before training")
    template: str = Field(REPORT_TEMPLATE, description="prompt format (as in SFT) or 'chat'")
    max_length: int = Field(512, ge=8, description="tokens of prompt + answer")
    lr: float = Field(1e-6, gt=0)
    epochs: float = Field(1, gt=0)
    max_steps: int | None = Field(None, ge=1)
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(2, ge=1)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    max_train_rows: int | None = Field(None, ge=1)
    max_eval_rows: int | None = Field(256, ge=1)
    gradient_checkpointing: bool = Field(False, description="recompute activations in the backward pass")
    precision: Precision = Field("auto", description="compute precision: auto = bf16 on a GPU with bf16 or a "
                                 "bf16-capable CPU, fp16 (loss scaling) on other GPUs, else fp32")
    merge: bool = Field(True, description="LoRA/QLoRA: also write the merged model into the output folder")
    seed: int = 0

    @field_validator("loss_type", mode="before")
    @classmethod
    def _loss_type_list(cls, v):
        return [v] if isinstance(v, str) else v


def preference_dataset(rows: list[dict], template: str, tokenizer):
    """TRL's preference format: prompt formatted like SFT, answers with a leading space (EOS added by TRL)."""
    from datasets import Dataset

    if template == "chat":
        data = [{"prompt": [{"role": "user", "content": r["prompt"]}],
                 "chosen": [{"role": "assistant", "content": r["chosen"]}],
                 "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r in rows]
    else:
        data = [{"prompt": format_prompt(r["prompt"], template, tokenizer), "chosen": " " + r["chosen"].strip(),
                 "rejected": " " + r["rejected"].strip()} for r in rows]
    return Dataset.from_list(data)


def train_dpo(cfg: DPOStageConfig, train_rows: list[dict], eval_rows: list[dict], out_dir: str | Path,
              progress: bool = True) -> dict:
    """Run DPO and save the policy into ``out_dir``; returns the metrics written to ``metrics.json``."""
    from transformers.trainer_utils import get_last_checkpoint
    from trl import DPOConfig, DPOTrainer

    from simplesafe.models.load import load_causal_lm, load_tokenizer
    from simplesafe.runs import set_seed

    t0 = time.time()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    set_seed(cfg.seed)
    if not train_rows:
        raise DataError(out_dir, None, None, "no training pairs for DPO")
    tokenizer = load_tokenizer(cfg.model, padding_side="right")
    train_ds = preference_dataset(train_rows, cfg.template, tokenizer)
    eval_rows = eval_rows[: cfg.max_eval_rows] if cfg.max_eval_rows else eval_rows
    eval_ds = preference_dataset(eval_rows, cfg.template, tokenizer) if eval_rows else None
    model = load_policy(cfg.model, cfg.method, precision=cfg.precision,
                        gradient_checkpointing=cfg.gradient_checkpointing)
    ref = None
    if cfg.ref_model is not None:
        if cfg.method != "full":
            raise ConfigError("ref_model is only used with method: full; with LoRA the reference is the "
                              "model with its adapter switched off")
    if cfg.method == "full" and not cfg.precompute_ref_log_probs:
        # the frozen reference in the compute dtype (TRL would copy the fp32 trainable policy)
        from simplesafe.models.load import precision_dtype
        from simplesafe.train.common import training_precision

        ref = load_causal_lm(cfg.ref_model or cfg.model, dtype=precision_dtype(training_precision(cfg.precision)))
        ref.requires_grad_(False).eval()
    ckpt_dir = out_dir / "checkpoints"
    has_eval = eval_ds is not None
    args = DPOConfig(**training_arguments(
        ckpt_dir, lr=cfg.lr, epochs=cfg.epochs, batch_size=cfg.batch_size, grad_accum=cfg.grad_accum,
        seed=cfg.seed, max_steps=cfg.max_steps, eval_each_epoch=has_eval, keep_best=False,
        warmup_ratio=cfg.warmup_ratio, gradient_checkpointing=cfg.gradient_checkpointing,
        disable_tqdm=not progress, remove_unused_columns=True, precision=cfg.precision,
        beta=cfg.beta, loss_type=list(cfg.loss_type), label_smoothing=cfg.label_smoothing,
        precompute_ref_log_probs=cfg.precompute_ref_log_probs, max_length=cfg.max_length,
        save_strategy="epoch", save_total_limit=1,  # one checkpoint to resume from
    ))
    trainer = DPOTrainer(
        model=model, ref_model=ref, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
        processing_class=tokenizer, peft_config=peft_config(cfg.lora) if cfg.method != "full" else None,
    )
    before = trainer.evaluate() if has_eval else {}
    last = get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.is_dir() else None
    result = trainer.train(resume_from_checkpoint=last)
    after = trainer.evaluate() if has_eval else {}
    train_losses, _ = log_history_losses(trainer.state.log_history)
    metrics = {
        "method": cfg.method, "beta": cfg.beta, "loss_type": list(cfg.loss_type),
        "precompute_ref_log_probs": cfg.precompute_ref_log_probs,
        "n_train": len(train_ds), "n_eval": len(eval_ds) if has_eval else 0,
        "steps": trainer.state.global_step,
        "train_loss_first": train_losses[0] if train_losses else None,
        "train_loss_last": train_losses[-1] if train_losses else None,
        "train_loss_mean": result.training_loss,
    }
    for key in ("loss", "rewards/margins", "rewards/accuracies", "rewards/chosen", "rewards/rejected"):
        if f"eval_{key}" in after:
            metrics["eval_" + key.replace("/", "_")] = after[f"eval_{key}"]
        if f"eval_{key}" in before:
            metrics["eval_before_" + key.replace("/", "_")] = before[f"eval_{key}"]
    metrics["world_size"] = trainer.args.world_size
    trained = trainer.model
    if not trainer.is_world_process_zero():  # under DDP only rank 0 writes the model
        trainer.accelerator.wait_for_everyone()
        return metrics
    if cfg.method in ("lora", "qlora"):
        from simplesafe.models.load import save_pretrained

        adapter_dir = out_dir / "adapter"
        save_pretrained(trained, tokenizer, adapter_dir)
        record_adapter(adapter_dir, model, cfg.model)
        if cfg.merge:
            from simplesafe.train.merge import merge_adapter

            # the adapter sits on the starting model: merge it there
            merged = merge_adapter(cfg.model, adapter_dir, None,
                                   mode="careful" if cfg.method == "qlora" else "simple",
                                   dtype="float32" if cfg.method == "lora" else "bfloat16")
            save_model_into(merged, tokenizer, out_dir)
    else:
        save_model_into(trained, tokenizer, out_dir)
    from simplesafe.models.templates import record_folder_templates

    record_folder_templates(out_dir, cfg.template)
    metrics["seconds"] = round(time.time() - t0, 2)
    metrics["precision"] = "bf16" if trainer.args.bf16 else "fp16" if trainer.args.fp16 else "fp32"
    metrics["train_runtime"] = result.metrics.get("train_runtime")
    write_json(out_dir / "metrics.json", metrics)
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    return metrics


def load_dpo_rows(cfg: DPOStageConfig) -> tuple[list[dict], list[dict]]:
    return read_train_validation(cfg, ("prompt", "chosen", "rejected"), "DPO")


def run_dpo(cfg: DPOStageConfig, out_dir: str | Path, force: bool = False) -> dict:
    """The ``train dpo`` stage; a finished stage is skipped and its metrics returned."""
    train, val = load_dpo_rows(cfg)
    return run_training_stage(cfg, out_dir, force, lambda: train_dpo(cfg, train, val, Path(out_dir)))
