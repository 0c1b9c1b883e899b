"""Memory plan vs measured peak: SFT, reward model, DPO and PPO on SmolLM2-135M, a few steps each.

    python bench/memory_plan.py                      # the default cases (about 5 minutes on 2 cores)
    python bench/memory_plan.py --case sft-lora      # one case
    python bench/memory_plan.py --json out.json      # also write the rows
    python bench/memory_plan.py --device cuda        # on a GPU: torch.cuda.max_memory_allocated, GPU plan

Each case runs the real trainer (:func:`simplesafe.train.sft.train_sft`,
:func:`~simplesafe.train.reward.train_reward_model`, :func:`~simplesafe.train.dpo.train_dpo`,
:func:`~simplesafe.train.ppo.train_ppo`) for two optimiser steps in a fresh subprocess, inside
:class:`simplesafe.plan.measure.TensorMemoryTracker`: the measured peak is the largest number of
bytes held by tensor storages at any op (weights, gradients, optimizer state, activations,
logits, KV cache), not the process's RSS. The plan is :mod:`simplesafe.plan.stages` for the same
config on the CPU target (bf16 where the CPU has native bf16, else fp32). Sequences are made to
fill ``max_length`` and PPO answers to run to ``max_new_tokens`` (``min_new_tokens`` is set for
the measurement), so the run reaches the worst case the plan describes.

With ``--device cuda`` the same cases run on the GPU and the measured peak is
``torch.cuda.max_memory_allocated`` (``scripts/gpu_check.sh`` runs this, then a whole recipe).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODEL = "embedded:smollm2"
CASES = {
    "sft-lora": {"stage": "sft", "method": "lora", "batch_size": 4, "max_length": 128},
    "sft-full": {"stage": "sft", "method": "full", "batch_size": 2, "max_length": 128},
    "rm-lora": {"stage": "rm", "method": "lora", "batch_size": 4, "max_length": 128},
    "dpo-lora": {"stage": "dpo", "method": "lora", "batch_size": 2, "max_length": 128},
    "ppo-shared": {"stage": "ppo", "batch_size": 4, "mini_batch_size": 2, "max_prompt_tokens": 64, "max_new_tokens": 48},
}
DEFAULT_CASES = ["sft-lora", "rm-lora", "dpo-lora", "ppo-shared"]
WORDS = " ".join(f"the answer has word {i} in it." for i in range(300))


def _context(tmp: Path):
    from simplesafe.recipe.config import Context, RecipeConfig

    return Context(RecipeConfig(base_model=MODEL, name="bench"), tmp / "run", False)


def _configs(case: dict, tmp: Path):
    """(stage config, rows) for one case."""
    from simplesafe.io import write_rows

    stage, bs = case["stage"], case["batch_size"]
    lora = {"r": 16, "alpha": 32, "dropout": 0.0}
    if stage == "sft":
        from simplesafe.train.sft import SFTStageConfig

        rows = [{"prompt": f"Question {i}: tell me about it?", "completion": WORDS} for i in range(max(2 * bs, 8))]
        return SFTStageConfig(model=MODEL, method=case["method"], lora=lora, max_length=case["max_length"],
                              batch_size=bs, grad_accum=1, max_steps=2, merge=False, max_eval_rows=max(bs, 8)), rows
    if stage == "rm":
        from simplesafe.train.reward import RewardStageConfig

        rows = [{"prompt": f"Question {i}?", "chosen": WORDS, "rejected": "No. " + WORDS, "weight": 1.0}
                for i in range(2 * bs)]
        return RewardStageConfig(name="helpfulness", backbone=MODEL, method=case["method"], lora=lora,
                                 max_length=case["max_length"], batch_size=bs, epochs=1, eval_batch_size=bs,
                                 early_stopping_patience=None), {"train": rows, "validation": rows[:bs]}
    if stage == "dpo":
        from simplesafe.train.dpo import DPOStageConfig

        rows = [{"prompt": f"Question {i}?", "chosen": WORDS, "rejected": "No. " + WORDS} for i in range(max(2 * bs, 8))]
        return DPOStageConfig(model=MODEL, method=case["method"], lora=lora, max_length=case["max_length"],
                              batch_size=bs, grad_accum=1, max_steps=2, merge=False, max_eval_rows=max(bs, 8)), rows
    from simplesafe.train.ppo_config import PPOStageConfig

    rl = tmp / "rl"
    # questions longer than max_prompt_tokens: every prompt is cut to the cap, as the plan assumes
    write_rows(rl / "train.jsonl", [{"id": str(i), "prompt": f"Question number {i}: " + WORDS[:600]} for i in range(8)])
    return PPOStageConfig(policy=MODEL, data=[str(rl)], steps=2, batch_size=bs, mini_batch_size=case["mini_batch_size"],
                          max_prompt_tokens=case["max_prompt_tokens"],
                          ppo_epochs=1, max_new_tokens=case["max_new_tokens"], lora=lora, template="chat",
                          rewards=[{"kind": "simplicity"}, {"kind": "safety"}]), None


def plan_case(case: dict, tmp: Path, device: str = "cpu") -> dict:
    """The plan's peak for a case on this machine's ``device``."""
    from simplesafe.plan import target_for
    from simplesafe.plan import stages as S

    cfg, _ = _configs(case, tmp)
    ctx = _context(tmp)
    target = target_for(device)
    plan = {"sft": S.plan_sft, "rm": S.plan_rm, "dpo": S.plan_dpo, "ppo": S.plan_ppo}[case["stage"]](ctx, cfg, target)
    return {"planned": plan.peak, "planned_phase": plan.peak_phase.name, "precision": target.auto_precision,
            "planned_items": {i.name: i.bytes for i in plan.peak_phase.items}}


def run_case(case: dict, tmp: Path, device: str = "cpu") -> dict:
    """Run the case's trainer under the tracker (CPU) or with CUDA's allocator statistics; returns the peak."""
    import contextlib

    import torch

    from simplesafe.plan.measure import TensorMemoryTracker

    cfg, rows = _configs(case, tmp)
    stage = case["stage"]
    tracker = TensorMemoryTracker(record_where=bool(os.environ.get("MEMPLAN_WHERE")))
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    if stage == "ppo":
        # build what the safety reward loads from disk (the ONNX export of the classifier, cached) before
        # tracking: torch.onnx.export does not run under the tracker's dispatch mode, and a one-off export
        # is not part of a PPO step's memory
        from simplesafe.text.toxicity_section import scorer_from_config

        for src in cfg.rewards:
            if src.kind == "safety":
                scorer_from_config(src.toxicity).score(["warm up"])
    t0 = time.time()
    with tracker if device == "cpu" else contextlib.nullcontext():
        if stage == "sft":
            from simplesafe.train.sft import train_sft

            train_sft(MODEL, rows[: 2 * case["batch_size"]], rows[:8], tmp / "sft", cfg, progress=False)
        elif stage == "rm":
            from simplesafe.train.reward import train_reward_model

            train_reward_model(cfg, tmp / "rm", rows, progress=False)
        elif stage == "dpo":
            from simplesafe.train.dpo import train_dpo

            train_dpo(cfg, rows[: 2 * case["batch_size"]], rows[:8], tmp / "dpo", progress=False)
        else:
            import dataclasses

            import simplesafe.train.ppo as ppo

            from simplesafe.llm import sampling

            real = sampling.SamplingParams

            def full_length(**kw):  # answers run to max_new_tokens: the plan's worst case
                return dataclasses.replace(real(**kw), min_new_tokens=kw.get("max_new_tokens", 0))

            sampling.SamplingParams = full_length
            try:
                ppo.train_ppo(cfg, tmp / "ppo", progress=False)
            finally:
                sampling.SamplingParams = real
    if device == "cuda":
        return {"measured": torch.cuda.max_memory_allocated(), "seconds": round(time.time() - t0, 1)}
    return {"measured": tracker.peak_bytes, "measured_weights": tracker.peak_breakdown["weights"],
            "seconds": round(time.time() - t0, 1), "where": tracker.peak_where,
            "largest": tracker.peak_largest}


def child(name: str, device: str = "cpu") -> None:
    case = CASES[name]
    with tempfile.TemporaryDirectory(prefix=f"memplan-{name}-") as tmp:
        tmp = Path(tmp)
        row = {"case": name, "device": device, **case, **plan_case(case, tmp, device), **run_case(case, tmp, device)}
    row["ratio"] = row["planned"] / row["measured"]
    print("RESULT " + json.dumps(row))


def measure(names: list[str], device: str = "cpu") -> list[dict]:
    rows = []
    for name in names:
        env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
        proc = subprocess.run([sys.executable, __file__, "--child", name, "--device", device], capture_output=True,
                              text=True, env=env)
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode != 0 or not line:
            raise RuntimeError(f"{name} failed:\n{proc.stderr[-4000:]}")
        rows.append(json.loads(line[0][len("RESULT "):]))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--case", action="append", choices=sorted(CASES), help="run only these cases")
    ap.add_argument("--json", type=Path, help="write the rows here")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cpu: tensor tracker; cuda: "
                    "torch.cuda.max_memory_allocated")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.device)
        return
    rows = measure(args.case or DEFAULT_CASES, args.device)
    print(f"{'case':<12}{'precision':>10}{'planned MiB':>13}{'measured MiB':>14}{'plan/measured':>15}  peak phase")
    for r in rows:
        print(f"{r['case']:<12}{r['precision']:>10}{r['planned'] / 2**20:>13.0f}{r['measured'] / 2**20:>14.0f}"
              f"{r['ratio']:>15.2f}  {r['planned_phase']}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
