"""``simplesafe train``: Train: SFT, reward models, DPO, PPO, GRPO, RLOO, best-of-n, expert iteration."""

from __future__ import annotations

import typer

app = typer.Typer(help="Train: SFT, reward models, DPO, PPO, GRPO, RLOO, best-of-n, expert iteration.", no_args_is_help=True)


def merge() -> None:
    """Merge a LoRA/QLoRA adapter into its base (--mode simple | careful)."""
    raise typer.Exit(2)
