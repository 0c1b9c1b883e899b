"""``simplesafe synth``: Synthesise instruction data: backtranslation, Self-Instruct, Humpback self-curation, LIMA-style selection."""

from __future__ import annotations

import typer

app = typer.Typer(help="Synthesise instruction data: backtranslation, Self-Instruct, Humpback self-curation, LIMA-style selection.", no_args_is_help=True)
