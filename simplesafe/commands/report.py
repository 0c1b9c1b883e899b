"""``simplesafe report``: Render a run directory into one self-contained HTML report.

    simplesafe report runs/demo [--out report.html]
"""

from __future__ import annotations

from pathlib import Path

import typer

# `report` is a group in the CLI (cli.py adds every area as a sub-app); its callback does the work, and
# interspersed args let the options follow RUN_DIR as in `simplesafe report RUN_DIR --out FILE`.
app = typer.Typer(help="Render a run directory into one self-contained HTML report.", no_args_is_help=True,
                  invoke_without_command=True, context_settings={"allow_interspersed_args": True})


@app.callback(invoke_without_command=True)
def report(
    run_dir: Path = typer.Argument(..., help="run directory (e.g. runs/demo)"),
    out: Path = typer.Option(None, "--out", help="HTML file to write (default RUN_DIR/report.html)"),
    max_prompts: int = typer.Option(40, "--max-prompts", help="prompts in the side-by-side answer view"),
) -> None:
    """Render RUN_DIR into one HTML file with tables, plots and sample answers."""
    from simplesafe.report.html import render_report

    path = render_report(run_dir, out, max_prompts=max_prompts)
    typer.echo(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
