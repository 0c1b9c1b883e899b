"""``simplesafe plan RECIPE``: peak accelerator memory per stage, before anything runs (exit 2 if one cannot fit)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from simplesafe.commands.common import OVERRIDES


def plan_recipe_command(
    recipe: Path = typer.Argument(..., help="recipe YAML, e.g. recipes/eli5-wiki-llama2-7b-qlora.yaml"),
    overrides: Optional[List[str]] = OVERRIDES,
    device_memory: Optional[str] = typer.Option(None, "--device-memory", help="memory of the device, e.g. 24GiB: "
                                                "mark each stage fits / does not fit, exit 2 if one does not"),
    device: str = typer.Option("cuda", "--device", help="cuda (a GPU; the recipes' target) or cpu (this machine)"),
    dtype: str = typer.Option("auto", "--dtype", help="compute precision of precision: auto stages: auto (bf16 on a GPU), bf16, "
                              "fp16 (a GPU without bf16, e.g. a T4) or fp32"),
    markdown: bool = typer.Option(False, "--markdown", help="print a Markdown table (the README's hardware table)"),
    detail: bool = typer.Option(False, "--detail", help="also list every item of every phase"),
    run_dir: Path = typer.Option(None, "--run-dir", help="the run directory (finished stages' outputs are planned "
                                 "from their real architecture)"),
) -> None:
    """Plan the peak accelerator memory of every stage of a recipe: weights, adapters, gradients, optimizer
    state, activations, logits, KV cache, reference/reward/value models; the largest item named."""
    from simplesafe.errors import ConfigError
    from simplesafe.plan import format_markdown, format_table, parse_memory, plan_recipe, target_for

    limit = parse_memory(device_memory) if device_memory else None
    plans = plan_recipe(recipe, overrides or [], device=device, dtype=dtype, run_dir=run_dir)
    target = target_for(device, dtype)
    if markdown:
        typer.echo(format_markdown(plans, limit))
    else:
        typer.echo(format_table(plans, limit, detail=detail,
                                title=f"Memory plan for {recipe} on {target.device} ({target.auto_precision})"
                                + (f", device memory {device_memory}" if device_memory else "")))
    if limit is not None:
        bad = [p.stage for p in plans if p.peak > limit]
        if bad:
            raise ConfigError(f"{recipe}: {', '.join(bad)} cannot fit {device_memory} (see the table above)")
