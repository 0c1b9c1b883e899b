"""Generate answers from a model for a prompt set, in the AlpacaEval format, resumably.

    simplesafe eval generate model=runs/demo/sft/model prompts=prompts.jsonl out=gen/sft.jsonl seeds=[0,1,2]
    simplesafe eval generate model=base/ adapter=runs/demo/dpo/adapter prompts=p.jsonl out=gen/dpo.jsonl

The model is a hub id or a local folder: a full (merged) model, a base model plus a
LoRA ``adapter`` folder, or an adapter folder alone (its ``adapter_config.json`` names
the base). Prompts are JSONL/JSON/CSV rows with ``prompt`` or ``instruction`` (and an
optional ``id``). Each is wrapped in the template the model was trained with (recorded
in its folder by every trainer, :mod:`simplesafe.models.templates`), else the
tokenizer's chat template for an instruct model such as ``embedded:smollm2``, else the
report's format (:mod:`simplesafe.text.prompt`); ``template=`` overrides. ``prefix=`` puts a
fixed instruction before every question inside the user turn (the ``base-prompted``
baseline: "Explain like I'm five: "); the rows keep the original question as
``instruction`` so that pairwise comparisons still match them.

Decoding is :func:`simplesafe.llm.sampling.sample` (temperature, top-k, top-p and
repetition penalty as transformers applies them, several times faster on a CPU), in
``dtype: auto`` (bf16 on a GPU or a CPU with native bf16, else fp32). Each row records
``n_new_tokens`` and ``stop`` (``eos``, or ``length`` when it hit ``max_new_tokens``: a
cut answer).

Resumable: every finished batch is appended to ``OUT.progress.jsonl``; a restarted run
skips the (id, seed) pairs already there, so a killed generation continues where it
stopped. When all are done, ``OUT`` is written atomically with one row per (prompt,
seed): ``instruction``, ``output``, ``generator``, ``id``, ``seed``, plus
``OUT.meta.json`` with the generation parameters. Several seeds (default 0, 1, 2)
because readability means of sampled answers vary from seed to seed. Each answer draws
from its own seed, a hash of (seed, prompt id) (:func:`row_seed`), so batches may mix
seeds and, in fp32, a resumed run gives the answers an uninterrupted one would (in bf16
another batch shape can change a logit in its last bits, and so now and then a token).
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
from simplesafe.text.prompt import HUMAN_TURN, format_prompt

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
    batch_size: int = Field(32, ge=1, description="prompts decoded together")
    max_prompt_tokens: int = Field(512, ge=8, description="prompts are truncated from the left to this many tokens")
    template: str | None = Field(None, description="prompt template with {q} (or {question}), or 'chat' for the "
                                 "tokenizer's chat template; none = the one the model recorded, else its chat "
                                 "template, else the report's")
    prefix: str = Field("", description="text put before every question inside the prompt (e.g. "
                        "\"Explain like I'm five: \" for a prompted baseline)")
    top_k: int = Field(50, ge=0, description="sample from the k most likely tokens (0 = all; 50 is transformers' default)")
    limit: int | None = Field(None, ge=1, description="use only the first N prompts")
    dtype: str = Field("auto", description="model dtype: auto (bf16 on a GPU or a bf16-capable CPU, else fp32), "
                       "float32, bfloat16, float16")
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


def load_generation_model(model: str, adapter: str | None, dtype: str = "auto", quantization: str = "none",
                          device: str = "auto"):
    """(model, tokenizer) for a full model, base + adapter, or an adapter folder alone."""
    from simplesafe.models.load import inference_dtype, load_causal_lm, load_tokenizer, resolve_device

    base, adapter_dir = model, adapter
    cfg_file = Path(model) / "adapter_config.json"
    if adapter is None and cfg_file.exists():
        base = json.loads(cfg_file.read_text())["base_model_name_or_path"]
        adapter_dir = model
    device = resolve_device(device)
    dtype = inference_dtype(dtype, device)
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


def row_seed(seed: int, prompt_id: str) -> int:
    """The sampling seed of one answer: a stable hash of (seed, prompt id), so an answer does not depend on
    which batch it was decoded in (resumed runs and other batch sizes give the same answers)."""
    import hashlib

    return int.from_bytes(hashlib.sha256(f"{seed}\x1f{prompt_id}".encode()).digest()[:7], "big")


def _generate_batch(model, tok, prompts: list[str], cfg: GenerateConfig, seed: int, template: str,
                    row_seeds: list[int] | None = None) -> list[dict]:
    """``{output, n_new_tokens, stop}`` per prompt."""
    from simplesafe.llm.sampling import SamplingParams, sample

    # as in SFT training: the tokenizer's special tokens (BOS) unless a chat template wrote its own
    enc = tok(prompts, return_tensors="pt", padding=True, truncation=True, max_length=cfg.max_prompt_tokens,
              add_special_tokens=template != "chat").to(model.device)
    params = SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                            top_k=cfg.top_k, repetition_penalty=cfg.repetition_penalty)
    out = sample(model, enc["input_ids"], enc["attention_mask"], params, eos_token_ids=[tok.eos_token_id],
                 pad_token_id=tok.pad_token_id, seed=seed, row_seeds=row_seeds)
    texts = tok.batch_decode(out.tokens, skip_special_tokens=True)
    rows = []
    for text, ids, ended in zip(texts, out.tokens, out.ended.tolist()):
        n = int(ids.eq(tok.eos_token_id).long().cumsum(0).eq(0).sum()) + int(ended)  # up to and with EOS
        # the model may start a new turn; the answer ends there
        rows.append({"output": text.split(HUMAN_TURN)[0].strip(), "n_new_tokens": n,
                     "stop": "eos" if ended else "length"})
    return rows


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
    return cfg.model_dump(include={"model", "adapter", "seeds", "max_new_tokens", "temperature", "top_p", "top_k",
                                   "repetition_penalty", "max_prompt_tokens", "template", "prefix", "dtype",
                                   "quantization"})


def generate_answers(cfg: GenerateConfig, progress: bool = True) -> dict:
    """Generate (resumably) and write ``cfg.out``; returns counts."""
    from tqdm import tqdm

    if cfg.template not in (None, "", "auto", "chat") and "{q}" not in cfg.template and "{question}" not in cfg.template:
        raise ConfigError(f"template must contain {{q}} (or {{question}}) or be 'chat', got {cfg.template!r}")
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
    template = None
    if todo:
        if resumed:
            log.info("generate: resuming, %d of %d answers already done", resumed, len(todo) + resumed)
        from simplesafe.models.templates import resolve_template

        model, tok = load_generation_model(cfg.model, cfg.adapter, cfg.dtype, cfg.quantization, cfg.device)
        template = resolve_template(cfg.template, cfg.adapter or cfg.model, tok)
        bar = tqdm(total=len(todo), desc=f"generate {generator}", disable=not progress)
        for start in range(0, len(todo), cfg.batch_size):
            chunk = todo[start: start + cfg.batch_size]  # may mix seeds: every answer has its own row seed
            texts = [format_prompt(cfg.prefix + p["instruction"], template, tok) for _, p in chunk]
            results = _generate_batch(model, tok, texts, cfg, seed=start, template=template,
                                      row_seeds=[row_seed(s, p["id"]) for s, p in chunk])
            for (s, p), res in zip(chunk, results):
                append_jsonl(progress_path, {"id": p["id"], "seed": s, **res, "_params": params})
            bar.update(len(chunk))
        bar.close()
    finished = {(r["id"], r["seed"]): r for r in read_jsonl_tolerant(progress_path) if "id" in r}
    rows = []
    for s in cfg.seeds:
        for p in prompts:
            done_row = finished[(p["id"], s)]
            row = {"instruction": p["instruction"], "output": done_row["output"], "generator": generator,
                   "id": p["id"], "seed": s}
            for key in ("n_new_tokens", "stop"):
                if key in done_row:
                    row[key] = done_row[key]
            if "reference" in p:
                row["reference"] = p["reference"]
            rows.append(row)
    write_rows(out, rows)
    meta = {"generator": generator, "params": params, "n_prompts": len(prompts), "n_rows": len(rows)}
    if template is not None:
        meta["template"] = template
    write_json(out.with_name(out.name + ".meta.json"), meta)
    return {"generator": generator, "n_rows": len(rows), "n_generated": len(todo), "n_resumed": resumed,
            "out": str(out)}
