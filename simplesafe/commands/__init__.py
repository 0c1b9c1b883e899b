"""CLI command groups; each module is a thin Typer sub-app over library functions."""
