"""Shared pieces of the supervised trainers (SFT, reward models, DPO).

- :class:`LoraSettings` and :func:`peft_config`: LoRA (Hu et al., 2021) and QLoRA
  (Dettmers et al., 2023: NF4 base + bf16 adapters on every linear layer) through peft.
- :func:`load_policy`: a causal LM ready for ``full``, ``lora`` or ``qlora`` training.
- :func:`format_prompt` and ``REPORT_TEMPLATE`` (from :mod:`simplesafe.text.prompt`): the
  report's ``### Human: {question} ### Assistant:`` prompt, any other ``{question}``
  template, or the tokenizer's own chat template (``template: chat``).
- :func:`read_split`: rows of a dataset directory (``train/validation/test.jsonl``) or of
  explicit files, with the required fields checked (errors name file, line and field).
- :func:`training_arguments`: the transformers/TRL arguments every trainer shares, set for
  CPU (fp32, no gradient checkpointing, ``use_cpu``) when no GPU is visible.

Nothing here trains; the trainers import it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from simplesafe.config import StageConfig
from simplesafe.errors import ConfigError, DataError
from simplesafe.io import read_rows, require
from simplesafe.text.prompt import REPORT_TEMPLATE, chat_messages, format_prompt

__all__ = ["REPORT_TEMPLATE", "format_prompt"]  # re-exported: the trainers import them from here

log = logging.getLogger(__name__)

SPLIT_FILES = ("train", "validation", "test")
DATA_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".parquet", ".csv", ".tsv")

Method = Literal["full", "lora", "qlora"]


class LoraSettings(StageConfig):
    """LoRA adapter shape (defaults: the QLoRA paper's r=64, alpha=16, dropout 0.1, all linear layers)."""

    r: int = Field(64, ge=1, description="adapter rank")
    alpha: int = Field(16, ge=1, description="scaling numerator (lora_alpha); the update is scaled by alpha/r")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout on the adapter input")
    target_modules: list[str] | str = Field(
        "all-linear", description="module names to adapt, or 'all-linear' (QLoRA: every linear layer but the head)"
    )


def as_list(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (str, Path)):
        return [str(value)]
    return [str(v) for v in value]


class DataConfigMixin(StageConfig):
    """Where the rows come from: dataset folders and/or files."""

    data: list[str] = Field(
        default_factory=list,
        description="dataset folders (their train/validation/test .jsonl are used) or row files (training rows)",
    )
    validation: list[str] = Field(
        default_factory=list, description="extra validation row files (added to the folders' validation split)"
    )
    test: list[str] = Field(default_factory=list, description="extra test row files")

    @field_validator("data", "validation", "test", mode="before")
    @classmethod
    def _one_or_many(cls, v):
        return as_list(v)


def split_file(folder: Path, split: str) -> Path | None:
    for suffix in DATA_SUFFIXES:
        p = folder / f"{split}{suffix}"
        if p.exists():
            return p
    return None


def split_paths(sources: list[str], split: str, extra: list[str] = ()) -> list[Path]:
    """Files for ``split``: ``<folder>/<split>.jsonl`` per folder, plus plain files for ``train``."""
    out: list[Path] = []
    for src in sources:
        p = Path(src).expanduser()
        if p.is_dir():
            f = split_file(p, split)
            if f is None and split == "train":
                raise DataError(p, None, None, f"dataset folder has no {split}.jsonl (expected one of "
                                f"{', '.join(split + s for s in DATA_SUFFIXES)})")
            if f is not None:
                out.append(f)
        elif p.exists():
            if split == "train":
                out.append(p)
        else:
            raise DataError(p, None, None, "dataset folder or file not found")
    out.extend(Path(e).expanduser() for e in extra)
    return out


def read_split(paths: list[Path], fields: tuple[str, ...], optional: dict | None = None,
               allow_empty: tuple[str, ...] = ()) -> list[dict]:
    """Rows of ``paths`` with ``fields`` checked as non-empty strings; ``optional`` fills defaults."""
    rows: list[dict] = []
    for path in paths:
        for line, row in read_rows(path):
            out = {f: require(row, f, path, line, allow_empty=f in allow_empty) for f in fields}
            for key, default in (optional or {}).items():
                value = row.get(key, default)
                if value is None:
                    value = default
                out[key] = value
            out["_where"] = f"{path}:{line}"
            rows.append(out)
    return rows


def format_completion(question: str, answer: str, template: str, tokenizer, *, system: str | None = None) -> str:
    """The answer text that follows :func:`format_prompt` (without the EOS token).

    With ``template: chat`` it is whatever the chat template renders after the prompt
    (minus a trailing EOS, which the caller appends as a token); otherwise `` {answer}``.
    """
    if template != "chat":
        return " " + answer.strip()
    prompt = format_prompt(question, template, tokenizer, system=system)
    full = tokenizer.apply_chat_template(chat_messages(question, system) + [{"role": "assistant", "content": answer}],
                                         tokenize=False)
    if not full.startswith(prompt):
        raise ConfigError("the tokenizer's chat template renders the prompt differently with and without the "
                          "answer; use a '{question}' template instead of 'chat'")
    completion = full[len(prompt):].rstrip()
    eos = tokenizer.eos_token or ""
    if eos and completion.endswith(eos):
        completion = completion[: -len(eos)]
    return completion


def has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def use_bf16(precision: str = "auto") -> bool:
    """bf16 autocast for training: on a GPU, or on a CPU with native bf16 instructions (``auto``)."""
    if precision == "fp32":
        return False
    if precision == "bf16":
        return True
    from simplesafe.models.load import cpu_has_native_bf16

    return has_gpu() or cpu_has_native_bf16()


def peft_config(lora: LoraSettings, task_type: str = "CAUSAL_LM"):
    from peft import LoraConfig

    return LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
        target_modules=lora.target_modules, task_type=task_type, bias="none",
    )


def load_policy(model: str, method: Method, dtype: str | None = None, gradient_checkpointing: bool = False):
    """A causal LM for training: fp32 on CPU, bf16 on a GPU; ``qlora`` loads the base in NF4.

    For ``qlora`` the base is prepared with peft's ``prepare_model_for_kbit_training``
    (layer norms in fp32, input grads enabled) as in the QLoRA paper.
    """
    from simplesafe.models.load import load_causal_lm

    if dtype is None:
        dtype = "bfloat16" if has_gpu() else "float32"
    if method == "qlora":
        from peft import prepare_model_for_kbit_training

        import os

        # under DDP each process holds its own copy on its own GPU
        device_map = {"": int(os.environ.get("LOCAL_RANK", 0))} if has_gpu() else None
        m = load_causal_lm(model, dtype=dtype, quantization="nf4", device_map=device_map)
        if not has_gpu():
            disable_bnb_cpu_packing(m)
        return prepare_model_for_kbit_training(m, use_gradient_checkpointing=gradient_checkpointing)
    return load_causal_lm(model, dtype=dtype)


def disable_bnb_cpu_packing(model) -> None:
    """Keep bitsandbytes' NF4 weights in their training layout on CPU.

    In eval mode without gradients (our per-epoch validation), bitsandbytes 0.50 repacks
    each 4-bit weight in place for its AVX512-bf16 CPU kernel; that kernel needs every
    output size divisible by 32 and fails otherwise (the tiny model's 688-wide MLP), and
    the repacked weight is then what training continues with. Evaluation is cheap enough
    on the ordinary dequantise-and-matmul path.
    """
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


def training_arguments(out_dir: str | Path, *, lr: float, epochs: float, batch_size: int, grad_accum: int,
                       seed: int, max_steps: int | None = None, eval_each_epoch: bool = True,
                       keep_best: bool = True, logging_steps: int = 5, warmup_ratio: float = 0.0,
                       weight_decay: float = 0.0, gradient_checkpointing: bool = False,
                       precision: str = "auto", **extra) -> dict:
    """Keyword arguments shared by TRL's configs (SFTConfig, RewardConfig, DPOConfig).

    On CPU: ``use_cpu``, no gradient checkpointing, and bf16 autocast when ``precision`` is
    ``auto`` and the CPU has native bf16 (AVX512-BF16/AMX: LoRA on SmolLM2-135M trains about
    1.3x faster than fp32; weights and optimizer state stay fp32). Evaluation and saving happen
    once per epoch (or every ``max_steps`` when training by steps) so the best epoch by
    validation loss can be kept (``load_best_model_at_end``): with a small SFT set the
    last epoch is often already memorising.
    """
    gpu = has_gpu()
    strategy = "epoch" if eval_each_epoch else "no"
    bf16 = use_bf16(precision)
    kwargs = dict(
        output_dir=str(out_dir),
        learning_rate=lr,
        num_train_epochs=epochs,
        max_steps=max_steps if max_steps else -1,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=max(batch_size, 8),
        gradient_accumulation_steps=grad_accum,
        seed=seed,
        data_seed=seed,
        logging_steps=logging_steps,
        logging_first_step=True,
        warmup_steps=warmup_ratio,  # transformers 5: a float < 1 is a fraction of all steps
        weight_decay=weight_decay,
        lr_scheduler_type="linear",
        eval_strategy=strategy,
        save_strategy=strategy if keep_best else "no",
        save_total_limit=2 if keep_best else None,
        load_best_model_at_end=bool(keep_best and eval_each_epoch),
        metric_for_best_model="eval_loss" if keep_best and eval_each_epoch else None,
        greater_is_better=False if keep_best and eval_each_epoch else None,
        save_only_model=False,  # keep optimizer state so a killed run resumes exactly
        report_to=[],
        disable_tqdm=False,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        bf16=bf16,
        use_cpu=not gpu,
        gradient_checkpointing=gradient_checkpointing and gpu,
    )
    if max_steps and eval_each_epoch:
        # training by steps: "epoch" would evaluate never or once; evaluate at the end instead
        kwargs.update(eval_strategy="steps", eval_steps=max_steps, save_strategy="steps" if keep_best else "no",
                      save_steps=max_steps)
    kwargs.update(extra)
    return kwargs


def log_history_losses(history: list[dict]) -> tuple[list[float], list[float]]:
    """(training losses, evaluation losses) from a Trainer's ``state.log_history``."""
    train = [h["loss"] for h in history if "loss" in h and "eval_loss" not in h]
    evals = [h["eval_loss"] for h in history if "eval_loss" in h]
    return train, evals


def save_model_into(model, tokenizer, out_dir: str | Path) -> None:
    """Save model + tokenizer files into an existing stage folder (which also holds logs and configs).

    Written to a temp folder first, then moved file by file, so a crash never leaves a
    half-written weights file under its final name.
    """
    from simplesafe.models.load import save_pretrained

    out_dir = Path(out_dir)
    tmp = out_dir / ".model-tmp"
    save_pretrained(model, tokenizer, tmp)
    for f in tmp.iterdir():
        f.replace(out_dir / f.name)
    tmp.rmdir()


def read_train_validation(cfg: DataConfigMixin, fields: tuple[str, ...], what: str) -> tuple[list[dict], list[dict]]:
    """Training and validation rows named by ``cfg.data`` / ``cfg.validation`` (``max_train_rows`` applied)."""
    if not cfg.data:
        raise ConfigError(f"{what} needs data: a dataset folder (train/validation .jsonl) or row files")
    train = read_split(split_paths(cfg.data, "train"), fields)
    val = read_split(split_paths(cfg.data, "validation", cfg.validation), fields)
    limit = getattr(cfg, "max_train_rows", None)
    return (train[:limit] if limit else train), val


def run_training_stage(cfg, out_dir: str | Path, force: bool, train_fn) -> dict:
    """Run ``train_fn()`` as the stage ``out_dir``; a finished stage is skipped and its metrics returned.

    Shared by the SFT and DPO stages: inputs are hashed into the manifest, and ``--force``
    deletes old checkpoints so that a forced run starts over instead of resuming.
    """
    import json
    import shutil

    from simplesafe.runs import stage

    out_dir = Path(out_dir)
    inputs = split_paths(cfg.data, "train") + split_paths(cfg.data, "validation", cfg.validation)
    if force:
        shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
    with stage(out_dir.parent, out_dir.name, cfg, inputs=inputs, seed=cfg.seed, force=force) as st:
        if st.skipped:
            return json.loads((out_dir / "metrics.json").read_text())
        return train_fn()



def answer_logprobs(model, tokenizer, prompts: list[str], answers: list[str], add_special_tokens: bool = True,
                    batch_size: int = 16) -> list[float]:
    """Summed log-probability of each answer's tokens after its (already formatted) prompt.

    Prompt and answer are tokenised separately and concatenated, as in SFT, so the
    boundary is exact; batches are right-padded. Used for KL estimates between models.
    """
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    examples = []
    for p, a in zip(prompts, answers):
        p_ids = tokenizer(p, add_special_tokens=add_special_tokens)["input_ids"]
        a_ids = tokenizer(a, add_special_tokens=False)["input_ids"]
        examples.append((p_ids, a_ids))
    device = next(model.parameters()).device
    out: list[float] = []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(examples), batch_size):
            chunk = examples[i: i + batch_size]
            width = max(len(p) + len(a) for p, a in chunk)
            ids = torch.full((len(chunk), width), pad)
            att = torch.zeros((len(chunk), width), dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.bool)
            for j, (p, a) in enumerate(chunk):
                ids[j, : len(p) + len(a)] = torch.tensor(p + a)
                att[j, : len(p) + len(a)] = 1
                mask[j, len(p): len(p) + len(a)] = True
            logits = model(input_ids=ids.to(device), attention_mask=att.to(device)).logits.float()
            logp = torch.log_softmax(logits[:, :-1], dim=-1)
            picked = logp.gather(-1, ids[:, 1:].to(device).unsqueeze(-1)).squeeze(-1)
            m = mask[:, 1:].to(device)
            out.extend(float(x) for x in (picked * m).sum(-1).cpu())
    return out
