"""Expert iteration: best-of-n answers become SFT data for the next round, repeated.

    simplesafe train expiter policy=runs/demo/sft data=runs/demo/data/rl out=runs/demo/expiter rounds=2 n=4

AlpacaFarm (Dubois et al., 2023) calls this "expert iteration": sample n answers from the
current model for each prompt, keep the best by the reward, fine-tune on the kept
answers, repeat (a simple relative of ReST / rejection-sampling fine-tuning). Each round
uses a fresh slice of the RL prompts. Sampling and choosing are
:func:`simplesafe.train.bon.best_of_n`; the fine-tuning is the SFT trainer's own
:func:`simplesafe.train.sft.train_sft` (answer-only loss), configured by ``sft``.

Outputs in ``out``: ``round_<r>/bon/`` (the chosen answers with their scores) and
``round_<r>/`` (the model after round r), ``rounds.jsonl`` (per round: mean reward of the
best answer and of all samples, per source), ``metrics.json``, and the final model
copied into ``out`` itself. Each finished round is marked done, so an interrupted run
restarts at the round it was in.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

from pydantic import Field, field_validator

from simplesafe.atomic import write_json
from simplesafe.config import StageConfig
from simplesafe.errors import ConfigError
from simplesafe.train.bon import BestOfNStageConfig
from simplesafe.train.common import REPORT_TEMPLATE, DataConfigMixin
from simplesafe.train.rewards import RewardSource, default_sources
from simplesafe.train.sft import SFTStageConfig

log = logging.getLogger(__name__)


def _default_sft() -> SFTStageConfig:
    # one short epoch per round on a few dozen answers: keep the model near its start
    return SFTStageConfig(method="full", lr=1e-4, epochs=1, batch_size=8, grad_accum=1, warmup_ratio=0.0,
                          early_stopping_patience=None)


class ExpertIterationStageConfig(DataConfigMixin, StageConfig):
    """Expert iteration (AlpacaFarm): best-of-n -> SFT, ``rounds`` times."""

    policy: str = Field("embedded:tiny", description="starting model (the SFT model folder)")
    out: str | None = Field(None, description="output folder (the CLI's default: runs/expiter)")
    rounds: int = Field(2, ge=1, description="best-of-n + SFT rounds")
    prompts_per_round: int = Field(64, ge=1, description="RL training prompts sampled in each round (a fresh slice)")
    n: int = Field(8, ge=2, description="samples per prompt")
    template: str = Field(REPORT_TEMPLATE, description="prompt with {question}, or 'chat'")
    prompt_field: str = Field("prompt", description="row field holding the question")
    max_prompt_tokens: int = Field(256, ge=4)
    max_new_tokens: int = Field(128, ge=1)
    temperature: float = Field(0.7, gt=0)
    batch_size: int = Field(8, ge=1, description="prompts per generate call")
    min_reward: float | None = Field(None, description="drop chosen answers whose reward is below this")
    rewards: list[RewardSource] = Field(default_factory=default_sources, description="composite reward sources")
    sft: SFTStageConfig = Field(default_factory=_default_sft, description="fine-tuning of each round "
                                "(its model/data/out are set by the loop)")
    seed: int = 0

    @field_validator("sft", mode="before")
    @classmethod
    def _sft_over_round_defaults(cls, v):
        """Keys given for ``sft`` override this stage's per-round defaults, not SFT's standalone ones."""
        if isinstance(v, dict):
            return {**_default_sft().model_dump(), **v}
        return v


def expert_iteration(cfg: ExpertIterationStageConfig, out_dir: str | Path, progress: bool = True, reward=None) -> dict:
    """Run the rounds into ``out_dir`` (skipping finished ones); returns the metrics."""
    from simplesafe.io import append_jsonl, read_jsonl_tolerant, write_rows
    from simplesafe.runs import stage
    from simplesafe.train.bon import best_of_n
    from simplesafe.train.rewards import CompositeReward
    from simplesafe.train.rollout import load_prompts
    from simplesafe.train.sft import train_sft

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    prompts = load_prompts(cfg)  # its data and prompt_field
    reward = reward or CompositeReward(cfg.rewards)
    bon_cfg = BestOfNStageConfig(policy=cfg.policy, template=cfg.template, n=cfg.n, max_new_tokens=cfg.max_new_tokens,
                                 temperature=cfg.temperature, batch_size=cfg.batch_size,
                                 max_prompt_tokens=cfg.max_prompt_tokens, rewards=cfg.rewards)
    current = cfg.policy
    rounds_path = out_dir / "rounds.jsonl"
    finished = {r["round"]: r for r in read_jsonl_tolerant(rounds_path)}
    for r in range(cfg.rounds):
        rdir = out_dir / f"round_{r}"
        with stage(out_dir, f"round_{r}", {"round": r, **cfg.model_dump(mode="json")}, seed=cfg.seed + r) as st:
            if not st.skipped:
                start = (r * cfg.prompts_per_round) % len(prompts)
                chunk = [prompts[(start + i) % len(prompts)] for i in range(min(cfg.prompts_per_round, len(prompts)))]
                bon = best_of_n(bon_cfg.model_copy(update={"seed": cfg.seed + r}), rdir / "bon", progress=progress,
                                reward=reward, policy=current, questions=chunk)
                chosen = [row for row in read_jsonl_tolerant(rdir / "bon" / "outputs.jsonl")
                          if row["response"].strip() and (cfg.min_reward is None or row["reward"] >= cfg.min_reward)]
                if not chosen:
                    raise ConfigError(f"round {r}: no best-of-{cfg.n} answer passed (empty answers or min_reward="
                                      f"{cfg.min_reward}); lower min_reward or raise max_new_tokens")
                sft_rows = [{"prompt": row["question"], "completion": row["response"], "id": row["id"]} for row in chosen]
                write_rows(rdir / "sft_rows.jsonl", sft_rows)
                sft_cfg = cfg.sft.model_copy(update={"template": cfg.template, "seed": cfg.seed + r, "model": current})
                sft_metrics = train_sft(current, sft_rows, None, rdir, sft_cfg, progress=progress)
                row = {"round": r, "policy_in": str(current), "prompts": len(chunk), "kept": len(chosen),
                       "best_reward": bon["best_reward"], "mean_sample_reward": bon["mean_sample_reward"],
                       **{k: v for k, v in bon.items() if k.startswith(("best_reward/", "mean_sample_reward/"))},
                       "sft_train_loss_last": sft_metrics.get("train_loss_last")}
                append_jsonl(rounds_path, row)
                finished[r] = row
        current = str(rdir)
    for f in Path(current).iterdir():
        if f.is_file() and f.suffix in (".json", ".safetensors", ".jinja", ".txt", ".model") \
                and f.name not in ("metrics.json", "manifest.json", "log.txt"):
            shutil.copy2(f, out_dir / f.name)
    rows = [finished[r] for r in sorted(finished)]
    metrics = {"rounds": len(rows), "n": cfg.n, "prompts_per_round": cfg.prompts_per_round,
               "seconds": round(time.time() - t0, 1), "final_model": str(out_dir),
               "best_reward_per_round": [x["best_reward"] for x in rows],
               "mean_sample_reward_per_round": [x["mean_sample_reward"] for x in rows]}
    write_json(out_dir / "metrics.json", metrics)
    return metrics


def run_expert_iteration(cfg: ExpertIterationStageConfig, out_dir: str | Path, force: bool = False,
                         progress: bool = True) -> dict:
    """The ``train expiter`` stage: skipped when done; an interrupted run restarts at its unfinished round."""
    from simplesafe.runs import stage
    from simplesafe.train.common import split_paths

    out_dir = Path(out_dir)
    if force:
        for p in out_dir.glob("round_*"):
            shutil.rmtree(p, ignore_errors=True)
        (out_dir / "rounds.jsonl").unlink(missing_ok=True)
    inputs = split_paths(cfg.data, "train") if cfg.data else []
    with stage(out_dir.parent, out_dir.name, cfg, inputs=inputs, seed=cfg.seed, force=force) as st:
        if st.skipped:
            return json.loads((out_dir / "metrics.json").read_text())
        return expert_iteration(cfg, out_dir, progress=progress)
