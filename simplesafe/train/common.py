"""Shared pieces of the supervised trainers (SFT, reward models, DPO).

- :class:`LoraSettings` and :func:`peft_config`: LoRA (Hu et al., 2021) and QLoRA
  (Dettmers et al., 2023: NF4 base + bf16 adapters on every linear layer) through peft.
- :func:`training_precision`, :func:`weight_dtype`: the one dtype rule
  (:func:`simplesafe.models.load.resolve_precision`) as the trainers apply it.
- :func:`load_policy`: a causal LM (or a reward model's classifier) ready for ``full``, ``lora`` or
  ``qlora`` training, gradient checkpointing on when asked; :func:`record_adapter` notes how an
  adapter was trained (the careful merge reads it).
- :func:`format_prompt` and ``REPORT_TEMPLATE`` (from :mod:`simplesafe.text.prompt`): the
  report's ``### Human: {question} ### Assistant:`` prompt, any other ``{question}``
  template, or the tokenizer's own chat template (``template: chat``).
- :func:`read_split`: rows of a dataset directory (``train/validation/test.jsonl``) or of
  explicit files, with the required fields checked (errors name file, line and field).
- :func:`training_arguments`: the transformers/TRL arguments every trainer shares (``use_cpu``
  when no GPU is visible; precision from the same rule).

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
Precision = Literal["auto", "fp32", "bf16", "fp16"]


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


def training_device() -> str:
    return "cuda" if has_gpu() else "cpu"


def training_precision(precision: str = "auto") -> str:
    """``bf16``, ``fp16`` or ``fp32`` for training on this machine: :func:`simplesafe.models.load.resolve_precision`."""
    from simplesafe.models.load import resolve_precision

    return resolve_precision(precision, training_device())


def use_bf16(precision: str = "auto") -> bool:
    """bf16 autocast for training: on a GPU with bf16, or on a CPU with native bf16 instructions (``auto``)."""
    return training_precision(precision) == "bf16"


def peft_config(lora: LoraSettings, task_type: str = "CAUSAL_LM"):
    from peft import LoraConfig

    return LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
        target_modules=lora.target_modules, task_type=task_type, bias="none",
    )


ADAPTER_RECORD = "simplesafe_adapter.json"


def weight_dtype(method: str, precision: str) -> str:
    """The dtype a model is loaded in for training with ``method`` at ``precision`` (bf16/fp16/fp32).

    Trainable weights (``full``) stay fp32 (autocast computes in ``precision``; fp16 loss scaling
    needs fp32 weights); a frozen base (``lora``) is stored in the compute dtype; a ``qlora`` base
    is quantised to NF4 from the compute dtype, as on a GPU (fp32 when training in fp32).
    """
    from simplesafe.models.load import precision_dtype

    return "float32" if method == "full" else precision_dtype(precision)


def load_policy(model: str, method: Method, precision: str = "auto", gradient_checkpointing: bool = False,
                kind: Literal["causal", "classifier"] = "causal", num_labels: int | None = None):
    """A model for training with ``method`` (see :func:`weight_dtype`); ``kind: classifier`` for reward models.

    For ``qlora`` the base is prepared with peft's ``prepare_model_for_kbit_training`` (layer norms,
    embeddings and the head in fp32, input grads enabled) as in the QLoRA paper. The model carries
    ``simplesafe_training`` (method, precision, and for QLoRA the dtype it was quantised from), which
    :func:`record_adapter` writes next to the adapter so a careful merge can quantise the same way.
    Gradient checkpointing (non-reentrant) is switched on here for every method, on any device.
    """
    import os

    from simplesafe.models.load import load_causal_lm, load_sequence_classifier

    p = training_precision(precision)
    dtype = weight_dtype(method, p)
    kwargs = {} if kind == "causal" else {"num_labels": num_labels}
    loader = load_causal_lm if kind == "causal" else load_sequence_classifier
    if method == "qlora":
        from peft import prepare_model_for_kbit_training

        # under DDP each process holds its own copy on its own GPU
        device_map = {"": int(os.environ.get("LOCAL_RANK", 0))} if has_gpu() else None
        m = loader(model, dtype=dtype, quantization="nf4", device_map=device_map, **kwargs)
        if not has_gpu():
            disable_bnb_cpu_packing(m)
        m = prepare_model_for_kbit_training(m, use_gradient_checkpointing=gradient_checkpointing,
                                            gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        m = loader(model, dtype=dtype, **kwargs)
        if method == "lora":
            m.requires_grad_(False)
        if gradient_checkpointing:
            m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    m.simplesafe_training = {"method": method, "precision": p, "weight_dtype": dtype,
                             **({"quantization": "nf4", "quantized_from": dtype} if method == "qlora" else {})}
    return m


def record_adapter(adapter_dir: str | Path, model, base: str) -> None:
    """Write how the adapter in ``adapter_dir`` was trained (``simplesafe_adapter.json``): method, precision,
    and for QLoRA the dtype the base was quantised from. :mod:`simplesafe.train.merge` reads it."""
    from simplesafe.atomic import write_json

    info = dict(getattr(model, "simplesafe_training", None) or {})
    if not info:
        base_model = getattr(model, "get_base_model", lambda: model)()
        info = dict(getattr(base_model, "simplesafe_training", None) or {})
    write_json(Path(adapter_dir) / ADAPTER_RECORD, {**info, "base": str(base)})


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

    Precision follows :func:`training_precision` (bf16 autocast on a GPU with bf16 or a CPU with
    native bf16: LoRA on SmolLM2-135M trains about 1.3x faster than fp32 there; fp16 autocast with
    loss scaling on a GPU without bf16; trainable weights and optimizer state stay fp32).
    Gradient checkpointing is non-reentrant and honoured on any device. Evaluation and saving happen
    once per epoch (or every ``max_steps`` when training by steps) so the best epoch by
    validation loss can be kept (``load_best_model_at_end``): with a small SFT set the
    last epoch is often already memorising.
    """
    gpu = has_gpu()
    strategy = "epoch" if eval_each_epoch else "no"
    p = training_precision(precision)
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
        bf16=p == "bf16",
        fp16=p == "fp16",
        use_cpu=not gpu,
        gradient_checkpointing=gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if gradient_checkpointing else None,
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



def span_logprobs(model, ids, attention, spans: list[tuple[int, int]]):
    """Log-probability of the tokens ``ids[j, a:b]`` for each row's span ``(a, b)``, one fp32 tensor per row.

    The LM head runs on the trunk's last hidden state at the span's positions only, so no
    (batch x length x vocabulary) logits tensor is ever built: with a 150k vocabulary (Qwen) the
    full fp32 logits of 16 answers of 768 tokens would take 7 GiB, these take one row at a time.
    Models whose head is not a plain projection of the last hidden state (logit soft-capping,
    logit scaling) fall back to the full forward, one row at a time.
    """
    import torch

    hf = model.get_base_model() if hasattr(model, "get_base_model") else model
    cfg = hf.config.get_text_config()
    plain_head = not any(getattr(cfg, k, None) not in (None, 1.0) for k in ("final_logit_softcapping", "logit_scale"))
    out = []
    if plain_head and hasattr(hf, "base_model") and hf.get_output_embeddings() is not None:
        hidden = hf.base_model(input_ids=ids, attention_mask=attention).last_hidden_state
        head = hf.get_output_embeddings()
        for j, (a, b) in enumerate(spans):
            logits = head(hidden[j, a - 1: b - 1]).float()
            out.append(logits.gather(-1, ids[j, a:b].unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1))
        return out
    for j, (a, b) in enumerate(spans):
        logits = model(input_ids=ids[j: j + 1], attention_mask=attention[j: j + 1]).logits[0, a - 1: b - 1].float()
        out.append(logits.gather(-1, ids[j, a:b].unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1))
    return out


def answer_logprobs(model, tokenizer, prompts: list[str], answers: list[str], add_special_tokens: bool = True,
                    batch_size: int = 16) -> list[float]:
    """Summed log-probability of each answer's tokens after its (already formatted) prompt.

    Prompt and answer are tokenised separately and concatenated, as in SFT, so the
    boundary is exact; batches are right-padded. Used for KL estimates between models.
    Logits are computed for answer positions only (:func:`span_logprobs`).
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
            for j, (p, a) in enumerate(chunk):
                ids[j, : len(p) + len(a)] = torch.tensor(p + a)
                att[j, : len(p) + len(a)] = 1
            spans = [(max(len(p), 1), len(p) + len(a)) for p, a in chunk]
            logps = span_logprobs(model, ids.to(device), att.to(device), spans)
            out.extend(float(lp.sum()) if lp.numel() else 0.0 for lp in logps)
    return out
