"""``simplesafe train``: SFT, reward models, DPO, PPO, GRPO, RLOO, best-of-n, expert iteration."""

from __future__ import annotations

import typer

app = typer.Typer(help="Train: SFT, reward models, DPO, PPO, GRPO, RLOO, best-of-n, expert iteration.",
                  no_args_is_help=True)


def merge() -> None:
    """Merge a LoRA/QLoRA adapter into its base (--mode simple | careful)."""
    raise typer.Exit(2)


# The RL commands (ppo, grpo, rloo, bon, expiter) live in their own module; importing it registers them.
from simplesafe.commands import train_rl as _train_rl  # noqa: E402,F401
