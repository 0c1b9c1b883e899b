"""Merge a LoRA/QLoRA adapter into its base model: ``simple`` or ``careful`` (the report, section 3.1).

- ``simple``: the base weights cast to bf16, plus the adapter (peft ``merge_and_unload``).
- ``careful``: the base loaded exactly as QLoRA trained against it (NF4 with double
  quantisation through bitsandbytes), every quantised weight dequantised with
  ``bitsandbytes.functional.dequantize_4bit`` to bf16, then the adapter merged. The
  adapter learnt its update against these dequantised weights, so this is the model
  that was trained; the simple merge adds the same update to slightly different weights
  (Dettmers et al., 2023 for NF4; the report for why the difference matters at scale).

The ``merge`` command writes one of them and, with ``compare`` on, builds the other in
memory to report the max and mean absolute weight difference and the mean per-token
log-likelihood difference on validation answers.

    simplesafe merge --base embedded:tiny --adapter runs/demo/sft/adapter --out runs/demo/merged --mode careful \
        --validation runs/demo/data/sft/validation.jsonl
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

MergeMode = Literal["simple", "careful"]


def dequantized_nf4_state(base: str, train_dtype: str = "float32", out_dtype: str = "bfloat16") -> dict:
    """``{module_name.weight: tensor}`` of every weight bitsandbytes quantises, after NF4 round trip.

    The base is loaded with :func:`~simplesafe.models.load.load_causal_lm` and
    ``quantization="nf4"``, the same call QLoRA training uses, so the quantisation
    (block size, double quantisation of the scales) is the one training saw.
    """
    import bitsandbytes as bnb
    import bitsandbytes.functional as bnbf

    from simplesafe.models.load import load_causal_lm, torch_dtype

    q = load_causal_lm(base, dtype=train_dtype, quantization="nf4")
    out = {}
    for name, module in q.named_modules():
        if isinstance(module, bnb.nn.Linear4bit):
            w = module.weight
            deq = bnbf.dequantize_4bit(w.data, w.quant_state)
            out[f"{name}.weight"] = deq.to(torch_dtype(out_dtype))
    if not out:
        raise RuntimeError(f"no layer of {base} was quantised to NF4; nothing to merge carefully")
    del q
    return out


def load_base_for_merge(base: str, mode: MergeMode, dtype: str = "bfloat16", train_dtype: str = "float32"):
    """The base model in ``dtype``; for ``careful`` its quantised weights replaced by their NF4 round trip."""
    import torch

    from simplesafe.models.load import load_causal_lm

    model = load_causal_lm(base, dtype=dtype)
    if mode == "careful":
        deq = dequantized_nf4_state(base, train_dtype=train_dtype, out_dtype=dtype)
        params = dict(model.named_parameters())
        with torch.no_grad():
            for key, value in deq.items():
                if key not in params:
                    raise RuntimeError(f"dequantised weight {key} has no counterpart in the base model")
                if params[key].shape != value.shape:
                    raise RuntimeError(f"{key}: shape {tuple(value.shape)} after dequantising, "
                                       f"{tuple(params[key].shape)} in the base")
                params[key].copy_(value)
    elif mode != "simple":
        from simplesafe.errors import ConfigError

        raise ConfigError(f"merge mode must be 'simple' or 'careful', got {mode!r}")
    return model


def merge_adapter(base: str, adapter_dir: str | Path, out_dir: str | Path | None, mode: MergeMode = "careful",
                  dtype: str = "bfloat16", train_dtype: str = "float32"):
    """Merge ``adapter_dir`` into ``base`` and return the plain model (saved to ``out_dir`` when given)."""
    from peft import PeftModel

    from simplesafe.errors import ModelLoadError
    from simplesafe.models.load import load_tokenizer, save_pretrained

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").exists():
        raise ModelLoadError(f"{adapter_dir}: not a peft adapter folder (no adapter_config.json)")
    model = load_base_for_merge(base, mode, dtype=dtype, train_dtype=train_dtype)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    if out_dir is not None:
        tok_src = adapter_dir if (adapter_dir / "tokenizer_config.json").exists() else base
        save_pretrained(merged, load_tokenizer(str(tok_src)), out_dir)
    return merged


def weight_difference(a, b) -> dict:
    """Max and mean absolute difference over all parameters the two models share."""
    import torch

    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    max_diff, total, count, per_layer = 0.0, 0.0, 0, {}
    with torch.no_grad():
        for key, va in pa.items():
            if key not in pb:
                continue
            d = (va.float() - pb[key].float()).abs()
            m = float(d.max()) if d.numel() else 0.0
            max_diff = max(max_diff, m)
            total += float(d.sum())
            count += d.numel()
            if m > 0:
                per_layer[key] = m
    worst = sorted(per_layer.items(), key=lambda kv: -kv[1])[:5]
    return {"max_abs_weight_diff": max_diff, "mean_abs_weight_diff": total / max(count, 1),
            "n_params_compared": count, "n_tensors_differing": len(per_layer),
            "largest_diffs": {k: v for k, v in worst}}


def answer_log_likelihood(model, tokenizer, rows: list[dict], template: str, max_length: int = 512,
                          batch_size: int = 8) -> float:
    """Mean per-token log-likelihood of the answers (prompt positions masked, as in SFT)."""
    import torch

    from simplesafe.train.tokenize import tokenize_example

    examples = [e for e in (tokenize_example(tokenizer, r["prompt"], r["completion"], template, max_length)
                            for r in rows) if e is not None]
    if not examples:
        return float("nan")
    total, n = 0.0, 0
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    model.eval()
    with torch.no_grad():
        for i in range(0, len(examples), batch_size):
            chunk = examples[i: i + batch_size]
            width = max(len(e["input_ids"]) for e in chunk)
            ids = torch.full((len(chunk), width), pad)
            labels = torch.full((len(chunk), width), -100)
            att = torch.zeros((len(chunk), width), dtype=torch.long)
            for j, e in enumerate(chunk):
                L = len(e["input_ids"])
                ids[j, :L] = torch.tensor(e["input_ids"])
                labels[j, :L] = torch.tensor(e["labels"])
                att[j, :L] = 1
            logits = model(input_ids=ids, attention_mask=att).logits.float()
            logp = torch.log_softmax(logits[:, :-1], dim=-1)
            tgt = labels[:, 1:]
            mask = tgt != -100
            picked = logp.gather(-1, tgt.clamp(min=0).unsqueeze(-1)).squeeze(-1)
            total += float((picked * mask).sum())
            n += int(mask.sum())
    return total / max(n, 1)


def run_merge(base: str, adapter: str | Path, out: str | Path, mode: MergeMode = "careful",
              validation: str | Path | None = None, compare: bool = True, dtype: str = "bfloat16",
              train_dtype: str = "float32", template: str | None = None, max_rows: int = 200) -> dict:
    """The ``merge`` command: write the ``mode`` merge to ``out``; compare with the other mode.

    Returns (and writes to ``out/merge_report.json``) the weight and log-likelihood
    differences between the careful and the simple merge.
    """
    from simplesafe.atomic import write_json
    from simplesafe.models.load import load_tokenizer
    from simplesafe.train.common import REPORT_TEMPLATE, read_split

    from simplesafe.models.templates import record_template, recorded_template

    t0 = time.time()
    out = Path(out)
    template = template or recorded_template(adapter) or REPORT_TEMPLATE
    merged = merge_adapter(base, adapter, out, mode=mode, dtype=dtype, train_dtype=train_dtype)
    record_template(out, template)
    report: dict = {"base": base, "adapter": str(adapter), "mode": mode, "dtype": dtype, "out": str(out)}
    if compare:
        other_mode = "simple" if mode == "careful" else "careful"
        other = merge_adapter(base, adapter, None, mode=other_mode, dtype=dtype, train_dtype=train_dtype)
        careful, simple = (merged, other) if mode == "careful" else (other, merged)
        report.update(weight_difference(careful, simple))
        if validation is not None:
            rows = read_split([Path(validation)], ("prompt", "completion"))[:max_rows]
            tok = load_tokenizer(str(out))
            tmpl = template
            ll_c = answer_log_likelihood(careful, tok, rows, tmpl)
            ll_s = answer_log_likelihood(simple, tok, rows, tmpl)
            report.update({
                "validation": str(validation), "n_validation_rows": len(rows),
                "loglik_per_token_careful": ll_c, "loglik_per_token_simple": ll_s,
                "loglik_diff_careful_minus_simple": ll_c - ll_s,
                "perplexity_careful": math.exp(-ll_c), "perplexity_simple": math.exp(-ll_s),
            })
    report["seconds"] = round(time.time() - t0, 2)
    write_json(out / "merge_report.json", report)
    return report
