"""``simplesafe data``: Curate data: score text, remove leakage, build SFT / reward-model / RL datasets."""

from __future__ import annotations

import typer

app = typer.Typer(help="Curate data: score text, remove leakage, build SFT / reward-model / RL datasets.", no_args_is_help=True)
