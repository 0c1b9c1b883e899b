"""Generate answers from a model for a prompt set, in the AlpacaEval format, resumably.

    simplesafe eval generate model=runs/demo/sft/model prompts=prompts.jsonl out=gen/sft.jsonl seeds=[0,1,2]
    simplesafe eval generate model=base/ adapter=runs/demo/dpo/adapter prompts=p.jsonl out=gen/dpo.jsonl

The model is a hub id or a local folder: a full (merged) model, a base model plus a
LoRA ``adapter`` folder, or an adapter folder alone (its ``adapter_config.json`` names
the base). Prompts are JSONL/JSON/CSV rows with ``prompt`` or ``instruction`` (and an
optional ``id``); each is wrapped in the report's template
``### Human: {question} ### Assistant:`` (:mod:`simplesafe.text.prompt`).

Resumable: every finished batch is appended to ``OUT.progress.jsonl``; a restarted run
skips the (id, seed) pairs already there, so a killed generation continues where it
stopped. When all are done, ``OUT`` is written atomically with one row per (prompt,
seed): ``instruction``, ``output``, ``generator``, ``id``, ``seed``, plus
``OUT.meta.json`` with the generation parameters. Several seeds (default 0, 1, 2)
because readability means of sampled answers vary from seed to seed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from pydantic import Field

from simplesafe.atomic import write_json
from simplesafe.config import StageConfig
from simplesafe.errors import ConfigError, DataError
from simplesafe.io import append_jsonl, read_jsonl_tolerant, read_rows, write_rows
from simplesafe.text.prompt import HUMAN_TURN, REPORT_TEMPLATE, format_prompt

log = logging.getLogger(__name__)



class GenerateConfig(StageConfig):
    model: str = Field(description="hub id or local folder of a causal LM (merged model, base model or LoRA adapter folder)")
    adapter: str | None = Field(None, description="LoRA adapter folder applied on top of `model`")
    prompts: str = Field(description="prompt file (JSONL/JSON/CSV/TSV/Parquet) with `prompt` or `instruction`")
    out: str = Field(description="output file (.jsonl or .json), AlpacaEval format")
    generator: str | None = Field(None, description="name written into `generator`; defaults to the model folder name")
    seeds: list[int] = Field([0, 1, 2], min_length=1, description="one sampled answer per prompt per seed")
    max_new_tokens: int = Field(128, ge=1, description="new tokens per answer")
    temperature: float = Field(0.7, ge=0.0, description="sampling temperature; 0 = greedy")
    top_p: float = Field(0.9, gt=0.0, le=1.0, description="nucleus sampling mass")
    repetition_penalty: float = Field(1.1, gt=0.0, description="HF repetition penalty")
    batch_size: int = Field(8, ge=1, description="prompts per generate() call")
    max_prompt_tokens: int = Field(512, ge=8, description="prompts are truncated from the left to this many tokens")
    template: str = Field(REPORT_TEMPLATE, description="prompt template with {question} (or {q}), or 'chat' for the "
                          "tokenizer's chat template")
    limit: int | None = Field(None, ge=1, description="use only the first N prompts")
    dtype: str = Field("float32", description="model dtype (float32 on CPU)")
    quantization: str = Field("none", description="none | nf4 | int8")
    device: str = Field("auto", description="auto (cuda when available, else cpu), cpu, cuda, cuda:1, ...")


def read_prompts(path: str | Path, limit: int | None = None) -> list[dict]:
    """Rows ``{id, instruction, reference?}`` from a prompt file; ids must be unique."""
    out, seen = [], {}
    for line, row in read_rows(path):
        q = row.get("prompt", row.get("instruction"))
        if not isinstance(q, str) or not q.strip():
            raise DataError(path, line, "prompt", "missing or empty: each row needs a `prompt` or `instruction` string")
        if row.get("input"):  # Alpaca/Self-Instruct rows carry an optional input
            q = f"{q}\n\n{row['input']}"
        pid = str(row.get("id", f"line{line}"))
        if pid in seen:
            raise DataError(path, line, "id", f"duplicate id {pid!r} (first on line {seen[pid]})")
        seen[pid] = line
        ref = row.get("reference", row.get("output", row.get("completion")))
        out.append({"id": pid, "instruction": q, **({"reference": ref} if isinstance(ref, str) else {})})
        if limit and len(out) >= limit:
            break
    if not out:
        raise DataError(path, None, None, "no prompts")
    return out


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_generation_model(model: str, adapter: str | None, dtype: str = "float32", quantization: str = "none",
                          device: str = "auto"):
    """(model, tokenizer) for a full model, base + adapter, or an adapter folder alone."""
    from simplesafe.models.load import load_causal_lm, load_tokenizer

    base, adapter_dir = model, adapter
    cfg_file = Path(model) / "adapter_config.json"
    if adapter is None and cfg_file.exists():
        base = json.loads(cfg_file.read_text())["base_model_name_or_path"]
        adapter_dir = model
    device = resolve_device(device)
    # quantized weights are placed by bitsandbytes at load time; full-precision ones are moved after
    lm = load_causal_lm(base, dtype=dtype, quantization=quantization,
                        device_map={"": device} if quantization != "none" else None)
    tok_src = adapter_dir if adapter_dir and (Path(adapter_dir) / "tokenizer_config.json").exists() else base
    tok = load_tokenizer(tok_src, padding_side="left")
    if adapter_dir:
        from peft import PeftModel

        lm = PeftModel.from_pretrained(lm, adapter_dir)
    if quantization == "none":
        lm = lm.to(device)
    lm.eval()
    return lm, tok


def _generate_batch(model, tok, prompts: list[str], cfg: GenerateConfig, seed: int) -> list[str]:
    import torch

    torch.manual_seed(seed)
    # as in SFT training: the tokenizer's special tokens (BOS) unless a chat template wrote its own
    enc = tok(prompts, return_tensors="pt", padding=True, truncation=True, max_length=cfg.max_prompt_tokens,
              add_special_tokens=cfg.template != "chat").to(model.device)
    sample = cfg.temperature > 0
    kwargs = dict(max_new_tokens=cfg.max_new_tokens, do_sample=sample, pad_token_id=tok.pad_token_id,
                  eos_token_id=tok.eos_token_id, repetition_penalty=cfg.repetition_penalty)
    if sample:
        kwargs.update(temperature=cfg.temperature, top_p=cfg.top_p)
    with torch.no_grad():
        out = model.generate(**enc, **kwargs)
    new = out[:, enc["input_ids"].shape[1]:]
    texts = tok.batch_decode(new, skip_special_tokens=True)
    # the model may start a new turn; the answer ends there
    return [t.split(HUMAN_TURN)[0].strip() for t in texts]


def _drop_torn_tail(path: Path, good_rows: list[dict]) -> None:
    """A kill during a write leaves a partial last line; rewrite the log without it so appends stay readable."""
    if not path.exists():
        return
    n_lines = sum(1 for _ in open(path, "rb"))
    if n_lines != len(good_rows):
        log.warning("generate: dropping %d torn line(s) at the end of %s", n_lines - len(good_rows), path)
        write_rows(path, good_rows)


def _older_template_spelling(params: dict | None) -> dict | None:
    """Progress logs written when the default template said ``{q}`` resume under ``{question}``."""
    if not params or not isinstance(params.get("template"), str):
        return params
    return {**params, "template": params["template"].replace("{q}", "{question}")}


def generation_params(cfg: GenerateConfig) -> dict:
    return cfg.model_dump(include={"model", "adapter", "seeds", "max_new_tokens", "temperature", "top_p",
                                   "repetition_penalty", "max_prompt_tokens", "template", "dtype", "quantization"})


def generate_answers(cfg: GenerateConfig, progress: bool = True) -> dict:
    """Generate (resumably) and write ``cfg.out``; returns counts."""
    from tqdm import tqdm

    if cfg.template != "chat" and "{q}" not in cfg.template and "{question}" not in cfg.template:
        raise ConfigError(f"template must contain {{question}} (or {{q}}) or be 'chat', got {cfg.template!r}")
    out = Path(cfg.out)
    progress_path = out.with_name(out.name + ".progress.jsonl")
    prompts = read_prompts(cfg.prompts, cfg.limit)
    generator = cfg.generator or Path(cfg.adapter or cfg.model).name
    from simplesafe.runs import file_sha256

    # a progress log only resumes the same model, decoding settings and prompt file
    params = {**generation_params(cfg), "prompts_sha256": file_sha256(cfg.prompts)}
    done_rows = read_jsonl_tolerant(progress_path)
    _drop_torn_tail(progress_path, done_rows)
    if done_rows and _older_template_spelling(done_rows[0].get("_params")) not in (None, params):
        raise ConfigError(f"{progress_path} was written with other generation parameters; delete it or use another `out`")
    done = {(r["id"], r["seed"]) for r in done_rows if "id" in r}
    todo = [(s, p) for s in cfg.seeds for p in prompts if (p["id"], s) not in done]
    resumed = len(done)
    if todo:
        if resumed:
            log.info("generate: resuming, %d of %d answers already done", resumed, len(todo) + resumed)
        model, tok = load_generation_model(cfg.model, cfg.adapter, cfg.dtype, cfg.quantization, cfg.device)
        bar = tqdm(total=len(todo), desc=f"generate {generator}", disable=not progress)
        for start in range(0, len(todo), cfg.batch_size):
            chunk = todo[start: start + cfg.batch_size]
            seed = chunk[0][0]
            same_seed = [c for c in chunk if c[0] == seed]  # a batch never mixes seeds
            texts = _generate_batch(model, tok, [format_prompt(p["instruction"], cfg.template, tok) for _, p in same_seed], cfg,
                                    seed=seed * 1_000_003 + start)
            for (s, p), text in zip(same_seed, texts):
                append_jsonl(progress_path, {"id": p["id"], "seed": s, "output": text, "_params": params})
            rest = chunk[len(same_seed):]
            if rest:
                texts = _generate_batch(model, tok, [format_prompt(p["instruction"], cfg.template, tok) for _, p in rest], cfg,
                                        seed=rest[0][0] * 1_000_003 + start)
                for (s, p), text in zip(rest, texts):
                    append_jsonl(progress_path, {"id": p["id"], "seed": s, "output": text, "_params": params})
            bar.update(len(chunk))
        bar.close()
    finished = {(r["id"], r["seed"]): r["output"] for r in read_jsonl_tolerant(progress_path) if "id" in r}
    rows = []
    for s in cfg.seeds:
        for p in prompts:
            row = {"instruction": p["instruction"], "output": finished[(p["id"], s)], "generator": generator,
                   "id": p["id"], "seed": s}
            if "reference" in p:
                row["reference"] = p["reference"]
            rows.append(row)
    write_rows(out, rows)
    write_json(out.with_name(out.name + ".meta.json"), {"generator": generator, "params": params,
                                                         "n_prompts": len(prompts), "n_rows": len(rows)})
    return {"generator": generator, "n_rows": len(rows), "n_generated": len(todo), "n_resumed": resumed,
            "out": str(out)}
