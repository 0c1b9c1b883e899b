"""The ``toxicity:`` section: how a recipe picks the toxicity scorer of every stage that scores text.

The ``data`` build and ``data score``, the ``safety`` reward of PPO/GRPO, eval metrics and
the ``safety``/``composite`` annotators all take this one section (:class:`ToxicityConfig`;
stage configs get it by deriving from :class:`ToxicitySettings`) and build their scorer
with :func:`scorer_from_config` (backends: :mod:`simplesafe.text.toxicity`):

    toxicity: {backend: detoxify, checkpoint: toxic_debiased-c7548aa0.ckpt, config_path: roberta-base}
    toxicity: {backend: hf, model_path: /models/my-classifier}
    toxicity: profanity-check             # a plain name: {backend: profanity-check}
    toxicity_backend: profanity-check     # the older key, read the same way

Detoxify's ``model_type`` defaults to ``unbiased``, the report's choice. An option of another
backend (``checkpoint`` with ``backend: ensemble``) is an error, and so is a ``threshold``
that disagrees with a stage's own (``max_toxicity``, ``toxicity_max``). See docs/safety.md.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from simplesafe.config import StageConfig
from simplesafe.text.toxicity import (
    BACKENDS,
    DEFAULT_BACKEND,
    ToxicityScorer,
    get_toxicity_scorer,
    resolve_threshold,
)

_BACKEND_OPTIONS = {  # options that only one backend reads: setting them for another is a mistake
    "model_path": ("hf",), "benign_labels": ("hf",), "max_length": ("hf",),
    "checkpoint": ("detoxify",), "config_path": ("detoxify",), "model_type": ("detoxify",),
    "artifact": ("ensemble", "hate-classifier"), "runtime": ("ensemble", "hate-classifier"),
    "long_texts": ("ensemble", "hate-classifier"), "cascade": ("ensemble", "hate-classifier"),
    "calibrate_profanity": ("ensemble",),
}


@functools.lru_cache(maxsize=16)
def _resolve_threshold_once(threshold: float | str, artifact: str | None) -> float:
    return resolve_threshold(threshold, artifact)  # a named point reads the classifier's metadata: once per run


class ToxicityConfig(StageConfig):
    """The ``toxicity:`` section every stage that scores text accepts (see the module docstring)."""

    backend: str = Field(DEFAULT_BACKEND, description=f"One of: {', '.join(BACKENDS)}.")
    threshold: float | str | None = Field(
        None, description="Flag texts whose toxicity is above this: a number (the report's 0.1) or a stored operating "
                          "point (recall_90, recall_95, fpr_05, fpr_01). Used by stages that flag texts (data build: "
                          "instead of max_toxicity; eval metrics: instead of toxicity_max); unset: the stage's own (0.1).")
    artifact: str | None = Field(None, description="ensemble/hate-classifier: classifier folder (default: cache build, "
                                                   "else the shipped one).")
    model_path: str | None = Field(None, description="hf backend: local sequence-classifier folder.")
    benign_labels: list[str] | None = Field(None, description="hf backend: labels that mean 'safe'.")
    max_length: int = Field(256, ge=8, description="hf backend: tokens per text.")
    checkpoint: str | None = Field(None, description="detoxify backend: local .ckpt file.")
    config_path: str | None = Field(None, description="detoxify backend: local Hugging Face folder of its base model.")
    model_type: Literal["original", "unbiased", "multilingual"] = Field(
        "unbiased", description="detoxify backend: original, unbiased (the report's choice) or multilingual.")
    device: str = Field("cpu", description="torch device: detoxify/hf backends, and ensemble/hate-classifier "
                                           "with runtime: torch.")
    runtime: Literal["onnx", "torch"] = Field(
        "onnx", description="ensemble/hate-classifier: run the encoder in ONNX Runtime (CPU) or PyTorch.")
    long_texts: Literal["windows", "truncate"] = Field(
        "windows", description="ensemble/hate-classifier: score every part of a long text (max over parts) or only "
                               "its first window.")
    cascade: bool = Field(True, description="ensemble/hate-classifier: let the static student settle clear cases.")
    calibrate_profanity: bool = Field(True, description="ensemble: apply the artifact's profanity calibration "
                                                        "(false: alt-profanity-check's raw probability).")
    batch_size: int = Field(64, ge=1, description="Texts per batch.")

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        if v not in BACKENDS:
            raise ValueError(f"unknown toxicity backend '{v}'; allowed: {', '.join(BACKENDS)}")
        return v

    @model_validator(mode="after")
    def _options_fit_backend(self):
        for key, backends in _BACKEND_OPTIONS.items():
            # a non-default value, so that a full dump of a section (all keys at defaults) validates again
            if getattr(self, key) != type(self).model_fields[key].default and self.backend not in backends:
                raise ValueError(f"'{key}' is an option of the {' / '.join(backends)} backend, not of "
                                 f"'{self.backend}' (set backend: {backends[0]})")
        return self


def section_dict(value) -> dict:
    """A ``toxicity:`` value as a mapping: None -> {}, a name -> {backend: name}."""
    if value is None:
        return {}
    if isinstance(value, str):
        return {"backend": value}
    if isinstance(value, ToxicityConfig):
        return value.model_dump(exclude_unset=True)
    if isinstance(value, Mapping):
        return dict(value)
    raise ValueError(f"toxicity must be a backend name or a mapping of options, got {type(value).__name__}")


def with_backend_name(section, backend_name: str | None) -> dict:
    """Fold the older ``toxicity_backend: NAME`` into a section; the two must not disagree."""
    d = section_dict(section)
    if backend_name is not None:
        if d.get("backend", backend_name) != backend_name:
            raise ValueError(f"toxicity_backend: {backend_name} and toxicity.backend: {d['backend']} disagree; "
                             "give only toxicity.backend")
        d["backend"] = backend_name
    return d


def toxicity_config(section=None, backend_name: str | None = None, where: str = "toxicity") -> ToxicityConfig:
    """A validated :class:`ToxicityConfig` from a name, mapping, config or None; a bad one is a ConfigError."""
    from pydantic import ValidationError

    from simplesafe.errors import ConfigError

    if isinstance(section, ToxicityConfig) and backend_name is None:
        return section
    try:
        return ToxicityConfig.model_validate(with_backend_name(section, backend_name))
    except (ValueError, ValidationError) as exc:
        if isinstance(exc, ValidationError):
            err = exc.errors()[0]
            loc = ".".join(str(x) for x in err["loc"])
            msg = f"{where}{'.' + loc if loc else ''}: {err['msg'].removeprefix('Value error, ')}"
        else:
            msg = f"{where}: {exc}"
        raise ConfigError(msg) from None


ToxicitySection = Annotated[ToxicityConfig, BeforeValidator(section_dict)]


class ToxicitySettings(StageConfig):
    """Mixin: the ``toxicity:`` section (and the older ``toxicity_backend``) of a stage config."""

    toxicity: ToxicitySection = Field(
        default_factory=ToxicityConfig,
        description="toxicity scorer: backend and its options (simplesafe.text.toxicity.ToxicityConfig); "
                    "a plain backend name also works")
    toxicity_backend: str | None = Field(None, description="older spelling of toxicity.backend (kept for compatibility)")

    @model_validator(mode="before")
    @classmethod
    def _fold_toxicity_backend(cls, data):
        if isinstance(data, Mapping) and data.get("toxicity_backend") is not None:
            data = {**data, "toxicity": with_backend_name(data.get("toxicity"), data["toxicity_backend"])}
        return data

    def toxicity_threshold(self, own: float) -> float:
        """``toxicity.threshold`` resolved (names too) when set, else the stage's own threshold ``own``."""
        if self.toxicity.threshold is None:
            return own
        return _resolve_threshold_once(self.toxicity.threshold, self.toxicity.artifact)

    def check_threshold(self, own_field: str):
        """Error when the stage's own threshold field and ``toxicity.threshold`` are both set and differ."""
        t = self.toxicity.threshold
        if t is None or own_field not in self.model_fields_set:
            return self
        try:
            same = float(t) == float(getattr(self, own_field))
        except ValueError:  # a named operating point
            same = False
        if not same:
            raise ValueError(f"{own_field}: {getattr(self, own_field)} and toxicity.threshold: {t} disagree; give one")
        return self


def scorer_from_config(cfg: ToxicityConfig | str | Mapping | None = None) -> ToxicityScorer:
    """Build the scorer a ``toxicity:`` section describes (a name or mapping is validated first)."""
    cfg = toxicity_config(cfg)
    kw: dict = {"batch_size": cfg.batch_size}
    if cfg.backend in ("ensemble", "hate-classifier"):
        kw.update(artifact=cfg.artifact, runtime=cfg.runtime, long_texts=cfg.long_texts, cascade=cfg.cascade,
                  device=cfg.device)
        if cfg.backend == "ensemble":
            kw["calibrate_profanity"] = cfg.calibrate_profanity
    elif cfg.backend == "hf":
        kw.update(model_path=cfg.model_path, benign_labels=cfg.benign_labels, max_length=cfg.max_length,
                  device=cfg.device)
    elif cfg.backend == "detoxify":
        kw.update(checkpoint=cfg.checkpoint, config_path=cfg.config_path, model_type=cfg.model_type, device=cfg.device)
    return get_toxicity_scorer(cfg.backend, **kw)


def config_key(cfg: ToxicityConfig) -> str:
    """A stable key for caching one scorer per distinct section."""
    return json.dumps(cfg.model_dump(mode="json", exclude={"threshold"}), sort_keys=True)
