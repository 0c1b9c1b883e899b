"""``simplesafe plan RECIPE``: the peak accelerator memory of every stage, before anything runs.

    simplesafe plan recipes/eli5-wiki-llama2-7b-qlora.yaml --device-memory 24GiB
    simplesafe plan recipes/small-gpu-qwen2.5-0.5b.yaml --markdown          # the README's table
    simplesafe plan recipes/demo.yaml --device cpu --detail                  # every item of every phase

For each stage of the recipe, :mod:`simplesafe.plan.stages` lists the phases (a training step, the
optimizer step, evaluation, a rollout ...) and what each holds on the device at its peak: weights by
dtype and quantisation, adapters, gradients, optimizer states, activations with or without
checkpointing, logits, KV cache for generation, reference, reward and value models
(:mod:`simplesafe.plan.estimate` has the formulas). The table gives each stage's peak, its phase and
its largest item; with ``--device-memory`` it says whether the stage fits and the command exits 2
when one does not. ``simplesafe run`` makes the same check before it starts
(:func:`check_recipe_fits`), against the memory it is told (``--device-memory``) or finds.

The estimates are checked against measured peaks on SmolLM2-135M on a CPU (bytes held by tensors,
:mod:`simplesafe.plan.measure`; ``bench/memory_plan.py`` prints the comparison) and, when a GPU is
lent, against ``torch.cuda.max_memory_allocated`` (``scripts/gpu_check.sh``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from simplesafe.errors import ConfigError
from simplesafe.plan.estimate import GiB, gib, parse_memory
from simplesafe.plan.stages import StagePlan, Target

log = logging.getLogger(__name__)

__all__ = ["StagePlan", "Target", "plan_recipe", "plan_context", "plan_rows", "format_table", "format_markdown",
           "check_recipe_fits", "parse_memory", "target_for", "hardware_table"]


def target_for(device: str = "cuda", dtype: str = "auto") -> Target:
    """``cuda``: a GPU with bf16 unless ``dtype`` says fp16 (a T4); ``cpu``: this machine's rule."""
    from simplesafe.models.load import resolve_precision

    device = "cuda" if str(device).startswith("cuda") or device == "gpu" else "cpu"
    if dtype not in (None, "auto"):
        return Target(device, resolve_precision(dtype))
    if device == "cuda":
        import torch

        if torch.cuda.is_available():
            return Target("cuda", resolve_precision("auto", "cuda"))
        return Target("cuda", "bf16")
    return Target("cpu", resolve_precision("auto", "cpu"))


def plan_context(ctx, target: Target, stages: list[str] | None = None) -> list[StagePlan]:
    """One :class:`StagePlan` per stage of the (validated) recipe context ``ctx``."""
    from simplesafe.plan import stages as S
    from simplesafe.recipe.evaluation import eval_config
    from simplesafe.recipe.stages import (backward_configs, data_config, dpo_config, grpo_config, merge_config,
                                          ppo_config, rm_configs, sft_config, synth_config)

    out: list[StagePlan] = []
    for name in stages or ctx.recipe.stages:
        if name == "sft":
            out.append(S.plan_sft(ctx, sft_config(ctx), target))
        elif name == "backward":
            out.append(S.plan_sft(ctx, backward_configs(ctx)[1], target, stage="backward"))
        elif name == "rm":
            plans = [S.plan_rm(ctx, cfg, target) for cfg in rm_configs(ctx).values()]
            worst = max(plans, key=lambda p: p.peak)
            worst.notes = worst.notes + [f"the largest of {len(plans)} reward models (they train one after another): "
                                         + ", ".join(f"{p.stage[3:]} {gib(p.peak)}" for p in plans)]
            worst.stage = "rm"
            out.append(worst)
        elif name == "dpo":
            out.append(S.plan_dpo(ctx, dpo_config(ctx), target))
        elif name == "merge":
            out.append(S.plan_merge(ctx, merge_config(ctx), dpo_config(ctx), target))
        elif name == "ppo":
            out.append(S.plan_ppo(ctx, ppo_config(ctx), target))
        elif name == "grpo":
            out.append(S.plan_grpo(ctx, grpo_config(ctx), target))
        elif name == "eval":
            cfg, settings, models = eval_config(ctx)
            out.append(S.plan_eval(ctx, cfg, settings, models, target))
        elif name == "synth":
            out.append(S.plan_synth(ctx, synth_config(ctx), target))
        elif name == "data":
            out.append(S.plan_data(ctx, data_config(ctx), target))
        elif name == "tiny_model":
            out.append(S.plan_tiny(ctx, target))
        else:
            out.append(StagePlan(name, [], ["no model on the device"]))
    return out


STAGE_FILE_SECTIONS = {"sft": "simplesafe.train.sft:SFTStageConfig", "rm": "simplesafe.train.reward:RewardStageConfig",
                       "dpo": "simplesafe.train.dpo:DPOStageConfig", "ppo": "simplesafe.train.ppo_config:PPOStageConfig",
                       "grpo": "simplesafe.train.grpo:GRPOStageConfig"}


def plan_stage_file(path: Path, overrides: list[str], target: Target) -> list[StagePlan]:
    """A per-stage config file (``recipes/gpu/*.yaml``: one section per trainer, and ``base_model``, the model the
    stage's inputs come from), planned section by section."""
    import importlib

    from simplesafe.config import load_config, read_yaml
    from simplesafe.plan import stages as S
    from simplesafe.recipe.config import Context, RecipeConfig

    raw = read_yaml(path)
    ctx = Context(RecipeConfig(base_model=raw.get("base_model", "embedded:tiny"), name=path.stem),
                  Path("runs") / path.stem, False)
    out = []
    for section, where in STAGE_FILE_SECTIONS.items():
        if section not in raw:
            continue
        module, cls = where.split(":")
        cfg = load_config(getattr(importlib.import_module(module), cls), path, list(overrides), section=section)
        planner = {"sft": S.plan_sft, "rm": S.plan_rm, "dpo": S.plan_dpo, "ppo": S.plan_ppo, "grpo": S.plan_grpo}
        out.append(planner[section](ctx, cfg, target))
    return out


def plan_recipe(recipe: str | Path, overrides: list[str] = (), device: str = "cuda", dtype: str = "auto",
                run_dir: Path | None = None) -> list[StagePlan]:
    """Validate ``recipe`` (plus overrides) and plan every stage for ``device``; a per-stage config file
    (``recipes/gpu/sft.yaml``) is planned section by section."""
    from simplesafe.config import read_yaml
    from simplesafe.recipe.runner import validate_recipe

    target = target_for(device, dtype)
    raw = read_yaml(recipe)
    if "stages" not in raw and "name" not in raw and set(raw) & set(STAGE_FILE_SECTIONS):
        return plan_stage_file(Path(recipe), list(overrides), target)
    ctx = validate_recipe(Path(recipe), list(overrides), run_dir)
    return plan_context(ctx, target)


def plan_rows(plans: list[StagePlan], device_memory: float | None = None) -> list[dict]:
    rows = []
    for p in plans:
        phase = p.peak_phase
        largest = phase.largest if phase else None
        row = {"stage": p.stage, "peak": gib(p.peak) if phase else "-",
               "peak phase": phase.name if phase else "-",
               "largest item": f"{largest.name}: {gib(largest.bytes)}" if largest else "-",
               "setting": p.notes[0] if p.notes else ""}
        if device_memory is not None:
            row["fits"] = ("yes" if p.peak <= device_memory else "NO") if phase else "yes"
        rows.append(row)
    return rows


def format_table(plans: list[StagePlan], device_memory: float | None = None, detail: bool = False,
                 title: str = "") -> str:
    rows = plan_rows(plans, device_memory)
    cols = list(rows[0].keys()) if rows else []
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols}
    lines = [title] if title else []
    lines.append("  ".join(c.ljust(widths[c]) for c in cols))
    lines.append("  ".join("-" * widths[c] for c in cols))
    for r in rows:
        lines.append("  ".join(str(r.get(c, "")).ljust(widths[c]) for c in cols))
    if detail:
        for p in plans:
            for phase in p.phases:
                lines.append(f"\n{p.stage} / {phase.name}: {gib(phase.total)}")
                for item in sorted(phase.items, key=lambda i: -i.bytes):
                    lines.append(f"    {gib(item.bytes):>10}  {item.name}" + (f"  ({item.note})" if item.note else ""))
    return "\n".join(lines)


def format_markdown(plans: list[StagePlan], device_memory: float | None = None) -> str:
    rows = plan_rows(plans, device_memory)
    cols = [c for c in (rows[0].keys() if rows else []) if c != "setting"]
    out = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
    return "\n".join(out)


def device_memory_found(device: str) -> float | None:
    """Free memory of the GPU (``torch.cuda.mem_get_info``), or the CPU's available RAM (``/proc/meminfo``)."""
    if device == "cuda":
        import torch

        if torch.cuda.is_available():
            return float(torch.cuda.mem_get_info()[0])
        return None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_recipe_fits(ctx, stages: list[str], device_memory: str | float | None = None) -> list[StagePlan]:
    """Plan ``stages`` for this machine and raise :class:`ConfigError` (exit 2) when one cannot fit.

    ``device_memory``: what the user said (``--device-memory``), else what the device has free.
    """
    from simplesafe.models.load import resolve_device

    device = resolve_device("auto")
    target = target_for(device)
    plans = plan_context(ctx, target, stages)
    limit = parse_memory(device_memory) if isinstance(device_memory, str) else device_memory
    source = "--device-memory"
    if limit is None:
        limit, source = device_memory_found(target.device), ("free GPU memory" if target.device == "cuda"
                                                             else "available RAM")
    if limit is None:
        return plans
    bad = [p for p in plans if p.peak > limit]
    if bad:
        lines = [f"memory plan: {len(bad)} stage(s) cannot fit the {gib(limit)} of {source} on {target.device} "
                 f"({target.auto_precision}):"]
        for p in bad:
            largest = p.peak_phase.largest
            lines.append(f"  {p.stage}: needs {gib(p.peak)} at its {p.peak_phase.name}; largest item: {largest.name} "
                         f"({gib(largest.bytes)})")
        lines.append("Lower the micro-batch (batch_size, with grad_accum to keep the effective batch), the sequence "
                     "length (max_length, max_new_tokens), turn on gradient_checkpointing, or use method: qlora; "
                     "`simplesafe plan RECIPE --detail` shows every item.")
        raise ConfigError("\n".join(lines))
    return plans


HARDWARE_STAGES = ["sft", "rm", "dpo", "merge", "ppo", "grpo", "eval"]
GPU_SIZES = [8, 12, 16, 24, 40, 48, 80]
README_START = "<!-- hardware-table: generated by scripts/hardware_table.py from `simplesafe plan`; do not edit -->"
README_END = "<!-- /hardware-table -->"


def hardware_table(recipes: list[Path], plans: dict[str, list[StagePlan]] | None = None) -> str:
    """The README's table: per recipe, each stage's planned peak on a bf16 GPU and the smallest GPU it fits."""
    from simplesafe.config import read_yaml

    rows = ["| recipe | base model | " + " | ".join(HARDWARE_STAGES) + " | largest stage | fits a GPU of |",
            "|---|---|" + "---|" * len(HARDWARE_STAGES) + "---|---|"]
    for recipe in recipes:
        recipe = Path(recipe)
        got = (plans or {}).get(recipe.name) or plan_recipe(recipe, device="cuda", dtype="bf16")
        by_stage = {p.stage: p for p in got}
        cells = [f"{by_stage[s].peak / GiB:.1f}" if s in by_stage and by_stage[s].phases else "-"
                 for s in HARDWARE_STAGES]
        worst = max((p for p in got if p.stage != "tiny_model"), key=lambda p: p.peak)  # tiny_model: CPU only
        fits = next((f"{g} GB" for g in GPU_SIZES if worst.peak <= g * GiB), "> 80 GB")
        rows.append(f"| `{recipe.as_posix()}` | {read_yaml(recipe).get('base_model', '-')} | " + " | ".join(cells)
                    + f" | {worst.stage} ({worst.peak / GiB:.1f} GiB) | {fits} |")
    return "\n".join(rows)


def format_gib(nbytes: float) -> str:
    return f"{nbytes / GiB:.1f}"
