"""Shared CLI plumbing: global state, config loading, printing tables."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Type, TypeVar

import typer
from pydantic import BaseModel

from simplesafe.config import load_config

T = TypeVar("T", bound=BaseModel)


@dataclass
class _State:
    debug: bool = False


STATE = _State()

# Reused argument/option declarations.
OVERRIDES = typer.Argument(None, help="key=value overrides (dotted keys for nested sections)", show_default=False)
FORCE = typer.Option(False, "--force", help="Redo a stage that is already done.")


def stage_config(model: Type[T], config: Path | None, overrides: list[str] | None, section: str | None = None) -> T:
    """Load a stage config; a recipe file may hold it under ``section``."""
    return load_config(model, config, overrides or [], section=section)


def split_config_and_overrides(args: list[str] | None) -> tuple[Path | None, list[str]]:
    """Allow ``CMD [CONFIG.yaml] [key=value ...]``: the first arg is a config file if it has no '='."""
    args = list(args or [])
    if args and "=" not in args[0]:
        return Path(args[0]), args[1:]
    return None, args


