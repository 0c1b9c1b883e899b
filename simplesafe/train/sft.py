"""Supervised fine-tuning (the report's RLHF step 1) with the loss on the answer only.

Each row ``{prompt, completion}`` becomes ``### Human: {prompt} ### Assistant: {completion}<eos>``
(or the tokenizer's chat template with ``template: chat``). The prompt and the answer
are tokenised separately and concatenated, so the boundary is exact: every prompt
position gets label -100 and only the answer tokens (and the closing EOS) are learnt,
as in InstructGPT (Ouyang et al., 2022) and LIMA (Zhou et al., 2023). Training runs
through TRL's ``SFTTrainer`` on the pre-tokenised rows; ``method`` picks full
fine-tuning, LoRA or QLoRA (NF4 base, Dettmers et al., 2023).

The number of epochs is chosen on validation loss: the model is evaluated after every
epoch, training stops after ``early_stopping_patience`` epochs without improvement, and
the best epoch is kept. On a few hundred rows the last epoch usually memorises.

    simplesafe train sft recipes/gpu/sft.yaml out=runs/x/sft
    simplesafe train sft data=runs/demo/data/sft model=embedded:tiny out=/tmp/sft epochs=3

Output folder: a loadable Hugging Face model (safetensors, tokenizer); for LoRA/QLoRA
also ``adapter/`` (peft adapter, ``adapter_config.json`` naming the base) and the model
in the folder is the merged copy (simple merge for LoRA, careful merge for QLoRA, see
:mod:`simplesafe.train.merge`). ``metrics.json`` holds the losses per epoch.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from pathlib import Path

from pydantic import Field

from simplesafe.atomic import write_json
from simplesafe.config import StageConfig
from simplesafe.errors import DataError
from simplesafe.models.templates import record_folder_templates
from simplesafe.train.common import (
    REPORT_TEMPLATE,
    DataConfigMixin,
    LoraSettings,
    Method,
    Precision,
    load_policy,
    log_history_losses,
    peft_config,
    read_train_validation,
    record_adapter,
    run_training_stage,
    save_model_into,
    training_arguments,
)
from simplesafe.train.merge import merge_adapter
from simplesafe.train.tokenize import tokenize_rows

log = logging.getLogger(__name__)


class SFTStageConfig(DataConfigMixin, StageConfig):
    """Supervised fine-tuning. Defaults follow QLoRA (Dettmers et al., 2023) where the report gives none."""

    model: str = Field("embedded:tiny", description="base model: hub id, local folder or embedded:tiny")
    out: str | None = Field(None, description="output folder (the CLI's default: runs/sft)")
    method: Method = Field("full", description="full fine-tuning, lora, or qlora (NF4 base + LoRA)")
    lora: LoraSettings = Field(default_factory=LoraSettings)
    template: str = Field(REPORT_TEMPLATE, description="prompt with {question}, or 'chat' for the tokenizer's template")
    system: str | None = Field(None, description="template chat: a system message before every question "
                               "(none: the chat template's default)")
    prompt_field: str = Field("prompt", description="row field holding the question")
    completion_field: str = Field("completion", description="row field holding the answer")
    max_length: int = Field(512, ge=8, description="tokens per example (prompt + answer); longer ones are cut")
    lr: float = Field(2e-4, gt=0, description="peak learning rate (linear decay)")
    epochs: float = Field(3, gt=0, description="most epochs; the best epoch by validation loss is kept")
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimiser steps (overrides epochs)")
    batch_size: int = Field(8, ge=1, description="per-device batch size")
    grad_accum: int = Field(2, ge=1, description="gradient accumulation steps")
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    optim: str = Field("adamw_torch", description="transformers optimizer name (adamw_torch, paged_adamw_8bit on GPU, sgd)")
    early_stopping_patience: int | None = Field(1, ge=1, description="epochs without validation improvement before stopping")
    max_train_rows: int | None = Field(None, ge=1, description="use only the first N training rows (demo, tests)")
    max_eval_rows: int | None = Field(256, ge=1, description="cap validation rows (evaluation cost)")
    gradient_checkpointing: bool = Field(False, description="recompute activations in the backward pass (less "
                                         "memory, about 30% more compute)")
    precision: Precision = Field("auto", description="compute precision: auto = bf16 on a GPU with bf16 or a "
                                 "bf16-capable CPU, fp16 (loss scaling) on other GPUs, else fp32")
    merge: bool = Field(True, description="LoRA/QLoRA: also write the merged model into the output folder")
    seed: int = 0


def train_sft(model_name_or_path: str, train_rows: list[dict], eval_rows: list[dict] | None,
              out_dir: str | Path, cfg: SFTStageConfig | None = None, progress: bool = True) -> dict:
    """Fine-tune on ``{prompt, completion}`` rows and save a loadable model in ``out_dir``.

    The library entry point other stages call (e.g. Humpback's backward model:
    prompt = answer, completion = question). ``cfg.model`` is ignored in favour of
    ``model_name_or_path``. Returns the metrics also written to ``out_dir/metrics.json``.
    """
    from transformers import EarlyStoppingCallback
    from transformers.trainer_utils import get_last_checkpoint
    from trl import SFTConfig, SFTTrainer

    from simplesafe.models.load import load_tokenizer, save_pretrained
    from simplesafe.runs import set_seed

    cfg = cfg or SFTStageConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    set_seed(cfg.seed)
    t0 = time.time()
    pf, cf = cfg.prompt_field, cfg.completion_field
    for rows in (train_rows, eval_rows or []):
        for i, r in enumerate(rows):
            for f in (pf, cf):
                if not isinstance(r.get(f), str) or not r[f].strip():
                    raise DataError(r.get("_where", "rows"), None if "_where" in r else i + 1, f,
                                    "missing or empty (SFT needs a question and an answer)")
    if not train_rows:
        raise DataError(out_dir, None, None, "no training rows for SFT")
    tokenizer = load_tokenizer(model_name_or_path, padding_side="right")
    train_ds, dropped = tokenize_rows(tokenizer, train_rows, cfg.template, cfg.max_length, pf, cf, cfg.system)
    eval_ds = None
    if eval_rows:
        eval_ds, _ = tokenize_rows(tokenizer, eval_rows[: cfg.max_eval_rows] if cfg.max_eval_rows else eval_rows,
                                   cfg.template, cfg.max_length, pf, cf, cfg.system)
    has_eval = eval_ds is not None and len(eval_ds) > 0
    model = load_policy(model_name_or_path, cfg.method, precision=cfg.precision,
                        gradient_checkpointing=cfg.gradient_checkpointing)
    ckpt_dir = out_dir / "checkpoints"
    args = SFTConfig(**training_arguments(
        ckpt_dir, lr=cfg.lr, epochs=cfg.epochs, batch_size=cfg.batch_size, grad_accum=cfg.grad_accum,
        seed=cfg.seed, max_steps=cfg.max_steps, eval_each_epoch=has_eval, keep_best=has_eval,
        warmup_ratio=cfg.warmup_ratio, weight_decay=cfg.weight_decay,
        gradient_checkpointing=cfg.gradient_checkpointing, disable_tqdm=not progress, precision=cfg.precision,
        optim=cfg.optim, max_length=None, dataset_kwargs={"skip_prepare_dataset": True}, packing=False,
    ))
    callbacks = []
    if has_eval and cfg.early_stopping_patience and not cfg.max_steps:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds if has_eval else None,
        processing_class=tokenizer, callbacks=callbacks,
        peft_config=peft_config(cfg.lora) if cfg.method in ("lora", "qlora") else None,
    )
    # a run killed mid-way resumes from its last epoch checkpoint
    last = get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.is_dir() else None
    if last:
        log.info("resuming SFT from %s", last)
    result = trainer.train(resume_from_checkpoint=last)
    history = trainer.state.log_history
    train_losses, eval_losses = log_history_losses(history)
    n_tokens = sum(len(x) for x in train_ds["input_ids"])
    n_answer_tokens = sum(sum(1 for t in lab if t != -100) for lab in train_ds["labels"])
    metrics = {
        "method": cfg.method,
        "n_train": len(train_ds),
        "n_eval": len(eval_ds) if has_eval else 0,
        "n_dropped_too_long": dropped,
        "train_tokens": n_tokens,
        "train_answer_tokens": n_answer_tokens,
        "steps": trainer.state.global_step,
        "epochs_run": round(float(trainer.state.epoch or 0), 3),
        "train_loss_first": train_losses[0] if train_losses else None,
        "train_loss_last": train_losses[-1] if train_losses else None,
        "train_loss_mean": result.training_loss,
        "eval_loss_per_epoch": eval_losses,
        "best_eval_loss": trainer.state.best_metric if has_eval else None,
        "best_checkpoint": Path(trainer.state.best_model_checkpoint).name if trainer.state.best_model_checkpoint else None,
    }
    if has_eval:
        metrics["best_eval_perplexity"] = math.exp(min(trainer.state.best_metric, 50))
    metrics["world_size"] = trainer.args.world_size
    trained = trainer.model
    if not trainer.is_world_process_zero():  # under DDP only rank 0 writes the model
        trainer.accelerator.wait_for_everyone()
        return metrics
    if cfg.method in ("lora", "qlora"):
        adapter_dir = out_dir / "adapter"
        save_pretrained(trained, tokenizer, adapter_dir)
        record_adapter(adapter_dir, model, model_name_or_path)
        if cfg.merge:
            merged = merge_adapter(model_name_or_path, adapter_dir, None,
                                   mode="careful" if cfg.method == "qlora" else "simple",
                                   dtype="float32" if cfg.method == "lora" else "bfloat16")
            save_model_into(merged, tokenizer, out_dir)
            metrics["merged"] = "careful" if cfg.method == "qlora" else "simple"
    else:
        save_model_into(trained, tokenizer, out_dir)
    record_folder_templates(out_dir, cfg.template)
    metrics["seconds"] = round(time.time() - t0, 2)
    metrics["precision"] = "bf16" if trainer.args.bf16 else "fp16" if trainer.args.fp16 else "fp32"
    metrics["train_tokens_per_second"] = round(n_tokens * metrics["epochs_run"] / max(result.metrics["train_runtime"], 1e-9), 1)
    write_json(out_dir / "metrics.json", metrics)
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    return metrics


def load_sft_rows(cfg: SFTStageConfig) -> tuple[list[dict], list[dict]]:
    """Training and validation rows named by ``cfg.data`` / ``cfg.validation``."""
    return read_train_validation(cfg, (cfg.prompt_field, cfg.completion_field), "SFT")


def run_sft(cfg: SFTStageConfig, out_dir: str | Path, force: bool = False) -> dict:
    """The ``train sft`` stage: reads ``cfg.data``, trains, writes ``out_dir``; a finished stage is skipped."""
    train, val = load_sft_rows(cfg)
    return run_training_stage(cfg, out_dir, force, lambda: train_sft(cfg.model, train, val, out_dir, cfg))
