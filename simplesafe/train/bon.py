"""Best-of-n: sample n answers per prompt and keep the one the reward likes best.

    simplesafe train bon policy=runs/demo/sft data=runs/demo/data/rl split=test n=8 out=runs/demo/bon

AlpacaFarm (Dubois et al., 2023) uses best-of-n against the reward model as a strong,
training-free baseline for learning from feedback (their best-of-16 beat several trained
methods); it is also the data engine of expert iteration (:mod:`simplesafe.train.online`).
The reward is the same composite reward as PPO's (:mod:`simplesafe.train.rewards`).

Outputs in ``out``: ``outputs.jsonl`` (one row per prompt: the best response, its reward
and every source, its rank and the scores of all n candidates), ``metrics.json`` with the
mean reward of the best answer next to the mean of all samples (what n = 1 would give on
average), per source. Rows are appended as prompts finish, so an interrupted run skips
the prompts it already did.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from simplesafe.atomic import write_json
from simplesafe.config import StageConfig
from simplesafe.errors import ConfigError
from simplesafe.train.common import REPORT_TEMPLATE, DataConfigMixin
from simplesafe.train.rewards import RewardSource, default_sources

log = logging.getLogger(__name__)


class BestOfNStageConfig(DataConfigMixin, StageConfig):
    """Best-of-n sampling against the composite reward (AlpacaFarm's baseline)."""

    policy: str = Field("embedded:tiny", description="model folder (full model or LoRA adapter folder)")
    out: str | None = Field(None, description="output folder (the CLI's default: runs/bon)")
    split: Literal["train", "validation", "test"] = Field("test", description="which split of the RL dataset")
    template: str = Field(REPORT_TEMPLATE, description="prompt with {question}, or 'chat' for the tokenizer's template")
    prompt_field: str = Field("prompt", description="row field holding the question")
    max_prompts: int | None = Field(None, ge=1, description="use only the first N prompts")
    max_prompt_tokens: int = Field(256, ge=4, description="longer questions are cut at the end to fit")
    n: int = Field(16, ge=1, description="samples per prompt")
    max_new_tokens: int = Field(128, ge=1)
    temperature: float = Field(0.7, gt=0, description="AlpacaFarm samples at 0.7")
    top_p: float = Field(1.0, gt=0, le=1)
    batch_size: int = Field(8, ge=1, description="prompts per generate call (each with n samples)")
    rewards: list[RewardSource] = Field(default_factory=default_sources, description="composite reward sources")
    seed: int = 0


def sample_responses(model, tokenizer, prompts: list[str], n: int, max_new_tokens: int, temperature: float,
                     top_p: float = 1.0, batch_size: int = 8, add_special_tokens: bool = True,
                     progress: bool = False) -> list[list[str]]:
    """``n`` sampled answers per prompt (left-padded batches; each answer stops at EOS)."""
    import torch
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    out: list[list[str]] = []
    for start in tqdm(range(0, len(prompts), batch_size), disable=not progress, desc="sample", unit="batch"):
        chunk = prompts[start: start + batch_size]
        enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=add_special_tokens).to(device)
        with torch.no_grad():
            seqs = model.generate(**enc, do_sample=True, num_return_sequences=n, max_new_tokens=max_new_tokens,
                                  temperature=temperature, top_p=top_p, top_k=0,
                                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        texts = tokenizer.batch_decode(seqs[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        for i in range(len(chunk)):
            out.append([t.strip() for t in texts[i * n: (i + 1) * n]])
    return out


def pick_best(questions: list[str], candidates: list[list[str]], reward) -> list[dict]:
    """For each question the candidate with the highest total reward (first one on ties), with all scores."""
    flat_q = [q for q, cands in zip(questions, candidates) for _ in cands]
    flat_a = [a for cands in candidates for a in cands]
    scored = reward.score(flat_q, flat_a)
    rows, k = [], 0
    for cands in candidates:
        totals = scored.total[k: k + len(cands)]
        best = int(np.argmax(totals))
        rows.append({
            "response": cands[best], "reward": float(totals[best]),
            **{f"reward/{name}": float(v[k + best]) for name, v in scored.parts.items()},
            "mean_sample_reward": float(np.mean(totals)),
            **{f"mean_sample_reward/{name}": float(np.mean(v[k: k + len(cands)])) for name, v in scored.parts.items()},
            "candidate_rewards": [float(x) for x in totals],
            "n": len(cands),
        })
        k += len(cands)
    return rows


def best_of_n(cfg: BestOfNStageConfig, out_dir: str | Path, progress: bool = True, reward=None,
              policy: str | None = None, questions: list[dict] | None = None) -> dict:
    """Run best-of-n into ``out_dir/outputs.jsonl`` (resuming), write ``metrics.json``; returns the metrics.

    ``policy`` and ``questions`` (``{id, question}`` rows) override the config (expert iteration uses them).
    """
    from simplesafe.io import append_jsonl, read_jsonl_tolerant
    from simplesafe.runs import set_seed
    from simplesafe.train.common import read_split, split_paths
    from simplesafe.train.rewards import CompositeReward
    from simplesafe.train.rollout import fit_prompt, load_ppo_tokenizer, load_sft_policy, prompt_token_budget

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    policy = policy or cfg.policy
    if questions is None:
        if not cfg.data:
            raise ConfigError("best-of-n needs data: an RL dataset folder or prompt files")
        paths = split_paths(cfg.data, cfg.split)
        if not paths:
            raise ConfigError(f"no '{cfg.split}' split in {', '.join(cfg.data)}")
        rows = read_split(paths, (cfg.prompt_field,), optional={"id": None})
        questions = [{"id": r["id"] if r["id"] is not None else r["_where"], "question": r[cfg.prompt_field]}
                     for r in rows]
    if cfg.max_prompts:
        questions = questions[: cfg.max_prompts]
    reward = reward or CompositeReward(cfg.rewards)
    outputs_path = out_dir / "outputs.jsonl"
    done = {str(r["id"]) for r in read_jsonl_tolerant(outputs_path)}
    todo = [q for q in questions if str(q["id"]) not in done]
    if todo:
        set_seed(cfg.seed + len(done))  # a resumed run does not replay the samples of the finished prompts
        tokenizer = load_ppo_tokenizer(policy)
        from simplesafe.models.load import inference_dtype, resolve_device

        device = resolve_device("auto")
        model = load_sft_policy(policy, inference_dtype("auto", device)).eval().to(device)
        budget = prompt_token_budget(cfg, model.config)
        for start in range(0, len(todo), cfg.batch_size):
            chunk = todo[start: start + cfg.batch_size]
            prompts = [fit_prompt(q["question"], cfg.template, tokenizer, budget) for q in chunk]
            cands = sample_responses(model, tokenizer, prompts, cfg.n, cfg.max_new_tokens, cfg.temperature, cfg.top_p,
                                     batch_size=cfg.batch_size, add_special_tokens=cfg.template != "chat")
            for q, row in zip(chunk, pick_best([q["question"] for q in chunk], cands, reward)):
                append_jsonl(outputs_path, {"id": q["id"], "question": q["question"], "policy": str(policy), **row})
            if progress:
                log.info("best-of-%d: %d/%d prompts", cfg.n, min(start + cfg.batch_size, len(todo)), len(todo))
    results = read_jsonl_tolerant(outputs_path)
    metrics = {"n": cfg.n, "prompts": len(results), "seconds": round(time.time() - t0, 1),
               "best_reward": float(np.mean([r["reward"] for r in results])) if results else None,
               "mean_sample_reward": float(np.mean([r["mean_sample_reward"] for r in results])) if results else None}
    for key in sorted({k for r in results for k in r if k.startswith("reward/")}):
        metrics[f"best_{key}"] = float(np.mean([r[key] for r in results]))
        metrics[f"mean_sample_{key}"] = float(np.mean([r["mean_sample_" + key] for r in results]))
    write_json(out_dir / "metrics.json", metrics)
    return metrics


def run_bon(cfg: BestOfNStageConfig, out_dir: str | Path, force: bool = False, progress: bool = True) -> dict:
    """The ``train bon`` stage: skipped when done; an interrupted one continues with the prompts not yet done."""
    from simplesafe.runs import stage
    from simplesafe.train.common import split_paths

    out_dir = Path(out_dir)
    if force:
        (out_dir / "outputs.jsonl").unlink(missing_ok=True)
    inputs = split_paths(cfg.data, cfg.split) if cfg.data else []
    with stage(out_dir.parent, out_dir.name, cfg, inputs=inputs, seed=cfg.seed, force=force) as st:
        if st.skipped:
            return json.loads((out_dir / "metrics.json").read_text())
        return best_of_n(cfg, out_dir, progress=progress)
