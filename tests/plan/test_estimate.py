"""The plan's formulas against what torch actually keeps: a census of the tensors saved for backward."""

from __future__ import annotations

import pytest
import torch

from simplesafe.plan.estimate import BYTES, NF4_BYTES, layer_activation_bytes, parse_memory, weight_bytes
from simplesafe.plan.shapes import model_shape


def _saved_bytes(fn) -> int:
    """Bytes of the distinct storages autograd saves while ``fn`` runs (parameters excluded)."""
    seen: dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        if not isinstance(t, torch.nn.Parameter):
            seen.setdefault(st._cdata, st.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return seen


def _trainable_model(path: str, method: str, precision: str):
    from peft import LoraConfig, get_peft_model

    from simplesafe.train.common import load_policy

    model = load_policy(path, method, precision=precision)
    if method != "full":
        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear"))
    return model.train()


@pytest.mark.parametrize("method,precision", [("lora", "bf16"), ("full", "bf16"), ("qlora", "bf16"),
                                              ("lora", "fp32"), ("full", "fp32")])
def test_layer_activations_match_the_tensors_autograd_saves(tiny_model_dir, method, precision):
    shape = model_shape(str(tiny_model_dir))
    model = _trainable_model(str(tiny_model_dir), method, precision)
    params = {p.untyped_storage()._cdata for p in model.parameters()}
    hf = model.get_base_model() if hasattr(model, "get_base_model") else model
    trunk = hf.base_model
    ids = torch.randint(0, shape.vocab, (4, 32))

    def forward():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            trunk(input_ids=ids, use_cache=False)

    saved = _saved_bytes(forward)
    measured = sum(v for k, v in saved.items() if k not in params)
    tokens = ids.numel()
    final_norm = (2 if method == "full" else 1) * 4 * shape.hidden * tokens
    planned = shape.layers * layer_activation_bytes(shape, method, precision, lora_r=8 if method != "full" else 0) \
        * tokens + final_norm
    # autocast's cached weight copies are counted as their own plan item, not as activations
    cast_weights = shape.quantizable * BYTES[precision] if method == "full" and precision == "bf16" else 0
    assert planned == pytest.approx(measured - cast_weights, rel=0.10), (method, precision, planned, measured)


def test_nf4_weight_bytes_match_a_quantised_model(tiny_model_dir):
    import bitsandbytes as bnb

    from simplesafe.models.load import load_causal_lm

    shape = model_shape(str(tiny_model_dir))
    q = load_causal_lm(str(tiny_model_dir), dtype="bfloat16", quantization="nf4")
    storages = {p.untyped_storage()._cdata: p.untyped_storage().nbytes() for p in q.parameters()}  # tied: once
    held = sum(storages.values())
    for m in q.modules():
        if isinstance(m, bnb.nn.Linear4bit):
            qs = m.weight.quant_state
            held += qs.absmax.nbytes + qs.state2.absmax.nbytes + qs.state2.code.nbytes + qs.code.nbytes
    assert weight_bytes(shape, "nf4", compute="bf16") == pytest.approx(held, rel=0.01)
    assert NF4_BYTES == pytest.approx(0.5159, abs=1e-4)


def test_parse_memory():
    assert parse_memory("24GiB") == parse_memory("24 GB") == parse_memory("24G") == parse_memory("24") == 24 * 2**30
    assert parse_memory("512MiB") == 512 * 2**20
    with pytest.raises(Exception, match="24GiB"):
        parse_memory("lots")
