"""``simplesafe run RECIPE.yaml``: the whole pipeline, skipping stages already done (:mod:`simplesafe.recipe`)."""

from __future__ import annotations

from pathlib import Path

import typer

from simplesafe.commands.common import OVERRIDES


def run_recipe(
    recipe: Path = typer.Argument(..., help="recipe YAML, e.g. recipes/demo.yaml"),
    overrides: list[str] = OVERRIDES,
    run_dir: Path = typer.Option(None, "--run-dir", help="where to write the run (default: runs/<recipe name>)"),
    force: bool = typer.Option(False, "--force", help="Redo every stage."),
    device_memory: str = typer.Option(None, "--device-memory", help="memory the stages may use, e.g. 24GiB "
                                      "(default: what the GPU has free, or the available RAM); a stage whose "
                                      "memory plan exceeds it stops the run before it starts"),
) -> None:
    """Run a recipe from raw data to report: build the base model, curate, synthesise, train, evaluate, report.
    The memory plan of the stages still to run is checked first (``simplesafe plan``)."""
    from simplesafe.recipe.runner import run_pipeline

    run_pipeline(recipe, overrides or [], run_dir=run_dir, force=force, device_memory=device_memory)
