"""``simplesafe report``: Render a run directory into one self-contained HTML report."""

from __future__ import annotations

import typer

app = typer.Typer(help="Render a run directory into one self-contained HTML report.", no_args_is_help=True)
