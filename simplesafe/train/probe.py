"""PPO's over-optimisation probe (:mod:`simplesafe.train.ppo`): held-out judges on fixed prompts.

Every ``probe.every`` steps (and before the first and after the last) the policy answers a fixed
set of held-out questions (the same seed each time) and the answers are scored by the training
reward and by the evaluation's held-out judges, into ``probe.jsonl``. The report plots them side
by side per step: a training reward that keeps rising while held-out judges stall or fall is
reward over-optimisation (Gao et al., 2022; AlpacaFarm, Dubois et al., 2023, Fig. 12). Settings:
``probe``, :class:`~simplesafe.train.ppo_config.ProbeConfig`.
"""

from __future__ import annotations

from pathlib import Path

from simplesafe.errors import DataError
from simplesafe.train.ppo_config import PPOStageConfig
from simplesafe.train.rollout import fit_prompt


class Probe:
    """Fixed held-out prompts answered by the policy every few steps, scored by the training reward and by
    held-out judges; one row per (step, source) in ``probe.jsonl``."""

    def __init__(self, cfg: PPOStageConfig, tokenizer, reward, budget: int, path: Path, device, batch_size: int = 64):
        from simplesafe.eval.judges import JudgeSpec, build_judge
        from simplesafe.io import read_rows

        rows = []
        for _, row in read_rows(cfg.probe.prompts):
            if isinstance(row.get("prompt"), str) and row["prompt"].strip():
                rows.append(row["prompt"])
            if len(rows) >= cfg.probe.n:
                break
        if not rows:
            raise DataError(cfg.probe.prompts, None, "prompt", "no probe prompts")
        self.questions = rows
        self.texts = [fit_prompt(q, cfg.template, tokenizer, budget) for q in rows]
        self.cfg, self.tok, self.reward, self.path, self.device = cfg, tokenizer, reward, path, device
        self.batch_size = batch_size
        self.judges = [build_judge(JudgeSpec(**j)) for j in cfg.probe.judges]

    def truncate(self, start_step: int) -> None:
        from simplesafe.io import read_jsonl_tolerant, write_rows

        if self.path.exists():
            write_rows(self.path, [r for r in read_jsonl_tolerant(self.path) if r.get("step", 0) < start_step])

    def run(self, policy, step: int) -> None:
        import numpy as np
        import torch

        from simplesafe.io import append_jsonl
        from simplesafe.llm.sampling import SamplingParams, sample

        enc = self.tok(self.texts, return_tensors="pt", padding=True,
                       add_special_tokens=self.cfg.template != "chat").to(self.device)
        params = SamplingParams(max_new_tokens=self.cfg.probe.max_new_tokens or self.cfg.max_new_tokens,
                                temperature=self.cfg.probe.temperature, top_p=0.9 if self.cfg.probe.temperature else 1.0,
                                top_k=50)
        answers = []
        with torch.no_grad():
            for c in range(0, len(self.texts), self.batch_size):
                out = sample(policy, enc["input_ids"][c: c + self.batch_size], enc["attention_mask"][c: c + self.batch_size],
                             params, [self.tok.eos_token_id], self.tok.pad_token_id,
                             row_seeds=[self.cfg.seed * 7919 + c + i for i in range(len(self.texts[c: c + self.batch_size]))])
                answers += [t.strip() for t in self.tok.batch_decode(out.tokens, skip_special_tokens=True)]
        scored = self.reward.score(self.questions, answers)
        row = {"step": step, "training_reward": float(np.mean(scored.total)),
               **{f"training/{k}": float(np.mean(v)) for k, v in scored.parts.items()},
               "words": float(np.mean([len(a.split()) for a in answers]))}
        for judge in self.judges:
            values = judge.values(self.questions, answers)
            row[f"judge/{judge.spec.name}"] = float(np.nanmean(values)) if np.isfinite(values).any() else None
        append_jsonl(self.path, row)
