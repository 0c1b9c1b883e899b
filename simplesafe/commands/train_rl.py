"""``simplesafe train {ppo,grpo,rloo,bon,expiter}``: the reinforcement-learning and sampling trainers.

    simplesafe train ppo policy=runs/demo/sft data=runs/demo/data/rl out=runs/demo/ppo steps=12 max_new_tokens=48
    simplesafe train ppo recipes/demo.yaml policy=runs/demo/sft data=runs/demo/data/rl memory_mode=separate
    simplesafe train grpo policy=runs/demo/sft data=runs/demo/data/rl out=runs/demo/grpo steps=10
    simplesafe train rloo policy=runs/demo/sft data=runs/demo/data/rl out=runs/demo/rloo steps=10
    simplesafe train bon policy=runs/demo/sft data=runs/demo/data/rl split=test n=8 out=runs/demo/bon
    simplesafe train expiter policy=runs/demo/sft data=runs/demo/data/rl rounds=2 n=4 out=runs/demo/expiter

Reward sources are a list in YAML (or one override):
``'rewards=[{kind: simplicity}, {kind: safety}, {kind: rm, path: runs/demo/rm-helpfulness, weight: 0.5}]'``.
"""

from __future__ import annotations

from typing import List, Optional

from simplesafe.commands.common import FORCE, OVERRIDES, split_config_and_overrides, stage_config
from simplesafe.commands.train import SECTION, _out, _summary, app


@app.command("ppo")
def ppo(args: Optional[List[str]] = OVERRIDES, section: Optional[str] = SECTION, force: bool = FORCE) -> None:
    """PPO with a composite reward, KL penalty, value head and GAE (memory_mode: shared | separate)."""
    from simplesafe.train.ppo import run_ppo
    from simplesafe.train.ppo_config import PPOStageConfig

    path, overrides = split_config_and_overrides(args)
    cfg = stage_config(PPOStageConfig, path, overrides, section=section or "ppo")
    out = _out(cfg, "runs/ppo")
    metrics = run_ppo(cfg, out, force=force)
    _summary(metrics, ["steps", "memory_mode", "reward_first", "reward_last", "kl_last", "response_length_first",
                       "response_length_last", "seconds"], f"PPO -> {out}")


def _grpo_like(algorithm: str, args, section, force) -> None:
    from simplesafe.train.grpo import GRPOStageConfig, run_grpo

    path, overrides = split_config_and_overrides(args)
    cfg = stage_config(GRPOStageConfig, path, [*overrides, f"algorithm={algorithm}"], section=section or algorithm)
    out = _out(cfg, f"runs/{algorithm}")
    metrics = run_grpo(cfg, out, force=force)
    _summary(metrics, ["algorithm", "steps", "reward_first", "reward_last", "kl_last", "seconds"],
             f"{algorithm.upper()} -> {out}")


@app.command("grpo")
def grpo(args: Optional[List[str]] = OVERRIDES, section: Optional[str] = SECTION, force: bool = FORCE) -> None:
    """GRPO through TRL's GRPOTrainer with the composite reward (group-normalised advantages)."""
    _grpo_like("grpo", args, section, force)


@app.command("rloo")
def rloo(args: Optional[List[str]] = OVERRIDES, section: Optional[str] = SECTION, force: bool = FORCE) -> None:
    """RLOO through TRL's RLOOTrainer with the composite reward (leave-one-out baseline)."""
    _grpo_like("rloo", args, section, force)


@app.command("bon")
def bon(args: Optional[List[str]] = OVERRIDES, section: Optional[str] = SECTION, force: bool = FORCE) -> None:
    """Best-of-n: sample n answers per prompt, keep the best by the composite reward."""
    from simplesafe.train.bon import BestOfNStageConfig, run_bon

    path, overrides = split_config_and_overrides(args)
    cfg = stage_config(BestOfNStageConfig, path, overrides, section=section or "bon")
    out = _out(cfg, "runs/bon")
    metrics = run_bon(cfg, out, force=force)
    _summary(metrics, ["n", "prompts", "best_reward", "mean_sample_reward", "seconds"], f"best-of-{cfg.n} -> {out}")


@app.command("expiter")
def expiter(args: Optional[List[str]] = OVERRIDES, section: Optional[str] = SECTION, force: bool = FORCE) -> None:
    """Expert iteration (AlpacaFarm): best-of-n answers -> SFT, repeated for some rounds."""
    from simplesafe.train.online import ExpertIterationStageConfig, run_expert_iteration

    path, overrides = split_config_and_overrides(args)
    cfg = stage_config(ExpertIterationStageConfig, path, overrides, section=section or "expiter")
    out = _out(cfg, "runs/expiter")
    metrics = run_expert_iteration(cfg, out, force=force)
    _summary(metrics, ["rounds", "n", "best_reward_per_round", "mean_sample_reward_per_round", "seconds"],
             f"expert iteration -> {out}")
