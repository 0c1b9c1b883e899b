"""``simplesafe eval``: Evaluate: generate answers, metrics, pairwise win rates, rubric judges, leaderboard tasks."""

from __future__ import annotations

import typer

app = typer.Typer(help="Evaluate: generate answers, metrics, pairwise win rates, rubric judges, leaderboard tasks.", no_args_is_help=True)
