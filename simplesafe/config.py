"""Configs: pydantic models per stage, loaded from YAML plus ``key=value`` overrides.

Every stage has a config class derived from :class:`StageConfig` (unknown keys are
errors). ``load_config(SFTConfig, "recipe.yaml", ["lr=1e-4", "lora.r=8"])`` merges the
overrides (dotted keys reach nested sections; values are parsed as YAML) and validates.
A bad key or value becomes a :class:`~simplesafe.errors.ConfigError` that names the
key and what is allowed.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any, Type, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from simplesafe.errors import ConfigError

T = TypeVar("T", bound=BaseModel)


class StageConfig(BaseModel):
    """Base for all configs: unknown keys are rejected, values validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid UTF-8 (byte {exc.start})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level, got {type(data).__name__}")
    return data


def parse_overrides(overrides: list[str] | None) -> dict:
    """``["a.b=1", "name=x"]`` -> ``{"a": {"b": 1}, "name": "x"}`` (values parsed as YAML)."""
    result: dict = {}
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override '{item}' has an empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        if isinstance(value, str):
            value = _number_or_str(value)
        node = result
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}': '{part}' is not a section")
        node[parts[-1]] = value
    return result


def _number_or_str(text: str):
    """YAML 1.1 reads ``2e-5`` as a string; users mean the number."""
    try:
        return float(text) if any(c in text.lower() for c in ".e") else int(text)
    except ValueError:
        return text


def deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _allowed_keys(model: Type[BaseModel], loc: tuple) -> list[str]:
    """Walk ``loc`` through nested models to list the keys allowed at that level."""
    cls: Any = model
    for part in loc[:-1]:
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)):
            return []
        field = cls.model_fields.get(str(part))
        if field is None:
            return []
        cls = _model_in(field.annotation)
        if cls is None:
            return []
    if isinstance(cls, type) and issubclass(cls, BaseModel):
        return sorted(cls.model_fields)
    return []


def _model_in(annotation) -> type | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def format_validation_error(model: Type[BaseModel], exc: ValidationError, source: str = "", prefix: str = "") -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        key = prefix + ".".join(str(p) for p in loc)
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, loc)
            msg = f"unknown key '{key}'"
            if allowed:
                msg += f"; allowed keys here: {', '.join(allowed)}"
        elif err["type"] == "missing":
            msg = f"missing required key '{key}'"
        else:
            msg = f"bad value for '{key}': {err['msg']}"
            if "input" in err and not isinstance(err["input"], (dict, list)):
                msg += f" (got {err['input']!r})"
        lines.append(msg)
    prefix = f"{source}: " if source else ""
    return prefix + "invalid config\n  " + "\n  ".join(lines)


def validate(model: Type[T], data: dict, source: str = "", prefix: str = "") -> T:
    """Validate ``data``; errors name keys as ``prefix + key`` (e.g. ``sft.lr``)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(model, exc, source, prefix)) from None


def load_config(
    model: Type[T],
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    section: str | None = None,
    defaults: dict | None = None,
    source: str | None = None,
) -> T:
    """Load ``model`` from a YAML file (optionally one ``section`` of it) plus overrides."""
    data: dict = dict(defaults or {})
    if path is not None:
        raw = read_yaml(path)
        source = source or str(path)
        if section is not None:
            raw = raw.get(section, {}) if section in raw else raw
        data = deep_merge(data, raw)
    data = deep_merge(data, parse_overrides(overrides))
    prefix = f"{section}." if section and path is not None else ""
    return validate(model, data, source or "config", prefix)


def dump_config(cfg: BaseModel) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
