"""``simplesafe train``: SFT, reward models, DPO, PPO, GRPO, RLOO, best-of-n, expert iteration.

    simplesafe train sft recipes/gpu/sft.yaml out=runs/x/sft
    simplesafe train sft data=runs/demo/data/sft model=embedded:tiny out=runs/demo/sft epochs=3
    simplesafe train rm name=safety out=runs/demo/rm-safety
    simplesafe train dpo data=runs/demo/data/rm model=runs/demo/sft out=runs/demo/dpo beta=0.1
    simplesafe merge --base embedded:tiny --adapter runs/demo/sft/adapter --out runs/demo/merged --mode careful

Each command takes an optional YAML config (a recipe may hold it under a section,
``--section``) plus ``key=value`` overrides, and calls one library function.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from simplesafe.commands.common import FORCE, OVERRIDES, split_config_and_overrides, stage_config
from simplesafe.tables import print_table

app = typer.Typer(help="Train: SFT, reward models, DPO, PPO, GRPO, RLOO, best-of-n, expert iteration.",
                  no_args_is_help=True)

SECTION = typer.Option(None, "--section", help="read the config from this section of the YAML file "
                       "(default: the command's name when the file has that section)")


def _out(cfg, default: str) -> Path:
    return Path(cfg.out or default)


def _summary(metrics: dict, keys: list[str], title: str) -> None:
    row = {k: metrics.get(k) for k in keys if k in metrics}
    print_table([row], title=title)


@app.command("sft")
def sft(args: Optional[List[str]] = OVERRIDES, section: Optional[str] = SECTION, force: bool = FORCE) -> None:
    """Supervised fine-tuning with the loss on answers only (full, lora or qlora)."""
    from simplesafe.train.sft import SFTStageConfig, run_sft

    path, overrides = split_config_and_overrides(args)
    cfg = stage_config(SFTStageConfig, path, overrides, section=section or "sft")
    out = _out(cfg, "runs/sft")
    metrics = run_sft(cfg, out, force=force)
    _summary(metrics, ["method", "n_train", "n_eval", "epochs_run", "train_loss_first", "train_loss_last",
                       "best_eval_loss", "seconds"], f"SFT -> {out}")


@app.command("rm")
def rm(args: Optional[List[str]] = OVERRIDES, section: Optional[str] = SECTION, force: bool = FORCE) -> None:
    """Reward model with the weighted Bradley-Terry loss (name: helpfulness | safety | simplicity)."""
    from simplesafe.train.reward import RewardStageConfig, run_reward

    path, overrides = split_config_and_overrides(args)
    cfg = stage_config(RewardStageConfig, path, overrides, section=section or "rm")
    out = _out(cfg, f"runs/rm-{cfg.name}")
    metrics = run_reward(cfg, out, force=force)
    _summary(metrics, ["name", "n_train", "n_validation", "n_test", "validation_accuracy", "test_accuracy",
                       "validation_loss", "seconds"], f"reward model -> {out}")


@app.command("dpo")
def dpo(args: Optional[List[str]] = OVERRIDES, section: Optional[str] = SECTION, force: bool = FORCE) -> None:
    """Direct Preference Optimization through TRL's DPOTrainer (beta, loss_type, LoRA reference)."""
    from simplesafe.train.dpo import DPOStageConfig, run_dpo

    path, overrides = split_config_and_overrides(args)
    cfg = stage_config(DPOStageConfig, path, overrides, section=section or "dpo")
    out = _out(cfg, "runs/dpo")
    metrics = run_dpo(cfg, out, force=force)
    _summary(metrics, ["method", "n_train", "n_eval", "train_loss_first", "train_loss_last",
                       "eval_rewards_margins", "eval_rewards_accuracies", "seconds"], f"DPO -> {out}")


def merge(
    base: str = typer.Option(..., "--base", help="base model the adapter was trained on (hub id, folder, embedded:tiny)"),
    adapter: Path = typer.Option(..., "--adapter", help="peft adapter folder (has adapter_config.json)"),
    out: Path = typer.Option(..., "--out", help="output folder for the merged model"),
    mode: str = typer.Option("careful", "--mode", help="simple: bf16 base + adapter; careful: NF4 round-trip base + adapter"),
    validation: Optional[Path] = typer.Option(None, "--validation", help="SFT rows (prompt, completion) for the "
                                              "log-likelihood comparison"),
    compare: bool = typer.Option(True, "--compare/--no-compare", help="also build the other merge and report differences"),
    dtype: str = typer.Option("bfloat16", "--dtype", help="dtype of the merged weights"),
    train_dtype: Optional[str] = typer.Option(None, "--train-dtype", help="careful: dtype the QLoRA base was quantised "
                                              "from (default: recorded in the adapter folder; bfloat16 when not)"),
    template: Optional[str] = typer.Option(None, "--template", help="prompt template for the log-likelihood (default: the report's)"),
) -> None:
    """Merge a LoRA/QLoRA adapter into its base (--mode simple | careful)."""
    from simplesafe.errors import ConfigError
    from simplesafe.train.merge import run_merge

    if mode not in ("simple", "careful"):
        raise ConfigError(f"--mode {mode!r}: use simple or careful")
    report = run_merge(base, adapter, out, mode=mode, validation=validation, compare=compare, dtype=dtype,
                       train_dtype=train_dtype, template=template)
    keys = ["mode", "max_abs_weight_diff", "mean_abs_weight_diff", "loglik_per_token_careful",
            "loglik_per_token_simple", "loglik_diff_careful_minus_simple", "seconds"]
    _summary(report, keys, f"merged ({mode}) -> {out}")


# The RL commands (ppo, grpo, rloo, bon, expiter) live in their own module; importing it registers them.
from simplesafe.commands import train_rl as _train_rl  # noqa: E402,F401
