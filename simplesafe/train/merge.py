"""Merge a LoRA/QLoRA adapter into its base model: ``simple`` or ``careful`` (the report, section 3.1).

- ``simple``: the base weights in ``dtype`` (bf16 by default), plus the adapter (peft ``merge_and_unload``).
- ``careful``: the base loaded exactly as QLoRA trained against it: NF4 with double quantisation
  through bitsandbytes, quantised *from the dtype the QLoRA run loaded the base in* (a GPU run
  quantises from bf16, a fp32 CPU run from fp32, and the two give different NF4 codes), on the
  device the run used; every quantised weight is dequantised with
  ``bitsandbytes.functional.dequantize_4bit`` into ``dtype``, then the adapter is merged. The
  adapter learnt its update against these dequantised weights, so this is the model that was
  trained; the simple merge adds the same update to slightly different weights (Dettmers et al.,
  2023 for NF4; the report for why the difference matters at scale).

Every trainer writes ``simplesafe_adapter.json`` next to its adapter (method, precision, and for
QLoRA ``quantized_from``; :func:`simplesafe.train.common.record_adapter`). The careful merge reads
it: a plain-LoRA adapter is refused (it never saw NF4 weights, so the careful merge would add
quantisation error the training never had; use ``simple``), and an adapter without the file
(trained elsewhere) is merged from ``train_dtype`` (default bf16, QLoRA's GPU setting) with a
warning that says so.

Memory: the quantised copy lives on the training device (about 0.5 bytes per weight) and each
weight is dequantised and copied into the base (on the CPU) one at a time, so the accelerator
never holds a second full copy. The ``merge`` command writes one merge and, with ``compare`` on,
builds the other to report the max and mean absolute weight difference and the mean per-token
log-likelihood difference on validation answers (computed on ``device``: ``auto`` is the GPU when
there is one, one model at a time).

    simplesafe merge --base embedded:tiny --adapter runs/demo/sft/adapter --out runs/demo/merged --mode careful \
        --validation runs/demo/data/sft/validation.jsonl
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

MergeMode = Literal["simple", "careful"]
ModelKind = Literal["causal", "classifier"]


def adapter_record(adapter_dir: str | Path) -> dict | None:
    """``simplesafe_adapter.json`` of an adapter folder (how it was trained), or None."""
    from simplesafe.train.common import ADAPTER_RECORD

    f = Path(adapter_dir) / ADAPTER_RECORD
    return json.loads(f.read_text()) if f.exists() else None


def careful_quantized_from(adapter_dir: str | Path, train_dtype: str | None = None) -> str:
    """The dtype to quantise the base from for a careful merge of ``adapter_dir``.

    Raises :class:`ConfigError` for an adapter recorded as plain LoRA (or full); warns when the
    adapter has no record and ``train_dtype`` (default bf16) is assumed.
    """
    from simplesafe.errors import ConfigError
    from simplesafe.train.common import ADAPTER_RECORD

    rec = adapter_record(adapter_dir)
    if rec is None:
        assumed = train_dtype or "bfloat16"
        log.warning("careful merge: %s has no %s, so nothing says it was trained with QLoRA or from which dtype its "
                    "base was quantised; assuming QLoRA from %s (pass --train-dtype to change it). If it is a "
                    "plain LoRA adapter, use --mode simple.", adapter_dir, ADAPTER_RECORD, assumed)
        return assumed
    if rec.get("method") != "qlora":
        raise ConfigError(f"careful merge of {adapter_dir}: its {ADAPTER_RECORD} says it was trained with method "
                          f"'{rec.get('method')}', not qlora. The careful merge reproduces the NF4 base a QLoRA "
                          "adapter was trained against; this adapter saw the unquantised base, so merge it with "
                          "mode: simple")
    recorded = rec.get("quantized_from")
    if train_dtype and recorded and train_dtype != recorded:
        log.warning("careful merge: --train-dtype %s overrides the recorded %s of %s", train_dtype, recorded, adapter_dir)
        return train_dtype
    return recorded or train_dtype or "bfloat16"


def _load(base: str, kind: ModelKind, **kwargs):
    from simplesafe.models.load import load_causal_lm, load_sequence_classifier

    if kind == "classifier":
        return load_sequence_classifier(base, num_labels=1, **kwargs)
    return load_causal_lm(base, **kwargs)


def load_base_for_merge(base: str, mode: MergeMode, dtype: str = "bfloat16", train_dtype: str = "bfloat16",
                        kind: ModelKind = "causal", device: str = "auto"):
    """The base model in ``dtype`` (on the CPU); for ``careful`` its quantised weights replaced by their NF4
    round trip from ``train_dtype``, quantised on ``device`` as the QLoRA run did."""
    import torch

    from simplesafe.errors import ConfigError

    if mode not in ("simple", "careful"):
        raise ConfigError(f"merge mode must be 'simple' or 'careful', got {mode!r}")
    model = _load(base, kind, dtype=dtype)
    if mode == "careful":
        import bitsandbytes as bnb
        import bitsandbytes.functional as bnbf

        from simplesafe.models.load import resolve_device, torch_dtype

        device = resolve_device(device)
        q = _load(base, kind, dtype=train_dtype, quantization="nf4",
                  device_map={"": device} if device != "cpu" else None)
        params = dict(model.named_parameters())
        n = 0
        with torch.no_grad():
            for name, module in q.named_modules():
                if not isinstance(module, bnb.nn.Linear4bit):
                    continue
                key = f"{name}.weight"
                if key not in params:
                    raise RuntimeError(f"dequantised weight {key} has no counterpart in the base model")
                w = module.weight
                deq = bnbf.dequantize_4bit(w.data, w.quant_state).to(torch_dtype(dtype))
                if params[key].shape != deq.shape:
                    raise RuntimeError(f"{key}: shape {tuple(deq.shape)} after dequantising, "
                                       f"{tuple(params[key].shape)} in the base")
                params[key].copy_(deq.to(params[key].device))
                n += 1
                del deq
        del q
        if not n:
            raise RuntimeError(f"no layer of {base} was quantised to NF4; nothing to merge carefully")
        from simplesafe.models.load import release_memory

        release_memory()
    return model


def merge_adapter(base: str, adapter_dir: str | Path, out_dir: str | Path | None, mode: MergeMode = "careful",
                  dtype: str = "bfloat16", train_dtype: str | None = None, kind: ModelKind = "causal",
                  device: str = "auto"):
    """Merge ``adapter_dir`` into ``base`` and return the plain model (saved to ``out_dir`` when given).

    ``careful`` quantises from the dtype recorded with the adapter (:func:`careful_quantized_from`);
    ``kind: classifier`` merges a reward model's adapter (trunk LoRA + its score head) into a
    sequence classifier.
    """
    from peft import PeftModel

    from simplesafe.errors import ModelLoadError
    from simplesafe.models.load import load_tokenizer, save_pretrained

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").exists():
        raise ModelLoadError(f"{adapter_dir}: not a peft adapter folder (no adapter_config.json)")
    quantized_from = careful_quantized_from(adapter_dir, train_dtype) if mode == "careful" else None
    model = load_base_for_merge(base, mode, dtype=dtype, train_dtype=quantized_from or "bfloat16", kind=kind,
                                device=device)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    merged.simplesafe_merge = {"mode": mode, "quantized_from": quantized_from}
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
    from simplesafe.train.common import span_logprobs

    total, n = 0.0, 0
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    model.eval()
    dev = next(model.parameters()).device
    with torch.no_grad():
        for i in range(0, len(examples), batch_size):
            chunk = examples[i: i + batch_size]
            width = max(len(e["input_ids"]) for e in chunk)
            ids = torch.full((len(chunk), width), pad)
            att = torch.zeros((len(chunk), width), dtype=torch.long)
            spans = []
            for j, e in enumerate(chunk):
                L = len(e["input_ids"])
                ids[j, :L] = torch.tensor(e["input_ids"])
                att[j, :L] = 1
                first = next(k for k, t in enumerate(e["labels"]) if t != -100)  # labels: the answer, to the end
                spans.append((max(first, 1), L))
            for lp in span_logprobs(model, ids.to(dev), att.to(dev), spans):
                total += float(lp.sum())
                n += lp.numel()
    return total / max(n, 1)


def _log_likelihood_on(model, device: str, *args) -> float:
    """:func:`answer_log_likelihood` with ``model`` moved to ``device`` for the computation and back after."""
    home = next(model.parameters()).device
    model.to(device)
    try:
        return answer_log_likelihood(model, *args)
    finally:
        model.to(home)
        from simplesafe.models.load import release_memory

        release_memory()


def run_merge(base: str, adapter: str | Path, out: str | Path, mode: MergeMode = "careful",
              validation: str | Path | None = None, compare: bool = True, dtype: str = "bfloat16",
              train_dtype: str | None = None, template: str | None = None, max_rows: int = 200,
              device: str = "auto") -> dict:
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
    from simplesafe.models.load import resolve_device

    device = resolve_device(device)
    merged = merge_adapter(base, adapter, out, mode=mode, dtype=dtype, train_dtype=train_dtype, device=device)
    record_template(out, template)
    report: dict = {"base": base, "adapter": str(adapter), "mode": mode, "dtype": dtype, "out": str(out),
                    "quantized_from": merged.simplesafe_merge["quantized_from"], "device": device}
    if compare:
        other_mode = "simple" if mode == "careful" else "careful"
        rec = adapter_record(adapter)
        if other_mode == "careful" and rec is not None and rec.get("method") != "qlora":
            report["compare_skipped"] = (f"the adapter was trained with method '{rec.get('method')}': there is no "
                                         "careful merge to compare with")
            compare = False
    if compare:
        other = merge_adapter(base, adapter, None, mode=other_mode, dtype=dtype, train_dtype=train_dtype,
                              device=device)
        if other_mode == "careful":
            report["quantized_from"] = other.simplesafe_merge["quantized_from"]
        careful, simple = (merged, other) if mode == "careful" else (other, merged)
        report.update(weight_difference(careful, simple))
        if validation is not None:
            rows = read_split([Path(validation)], ("prompt", "completion"))[:max_rows]
            tok = load_tokenizer(str(out))
            tmpl = template
            ll_c = _log_likelihood_on(careful, device, tok, rows, tmpl)
            ll_s = _log_likelihood_on(simple, device, tok, rows, tmpl)
            report.update({
                "validation": str(validation), "n_validation_rows": len(rows),
                "loglik_per_token_careful": ll_c, "loglik_per_token_simple": ll_s,
                "loglik_diff_careful_minus_simple": ll_c - ll_s,
                "perplexity_careful": math.exp(-ll_c), "perplexity_simple": math.exp(-ll_s),
            })
    report["seconds"] = round(time.time() - t0, 2)
    write_json(out / "merge_report.json", report)
    return report
