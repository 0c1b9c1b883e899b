"""Every shipped recipe: it validates, it plans (the 7B QLoRA targets hold), every recipe path a docstring or
doc names exists with the section it uses, and one step of each of its training stages runs on the micro model
in bf16 on the CPU (the GPU code path minus CUDA) with the recipe's own method, checkpointing and optimizer."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from simplesafe.plan.estimate import GiB

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "recipes").glob("*.yaml"))
STAGE_FILES = sorted((REPO / "recipes" / "gpu").glob("*.yaml"))
LLAMA_7B = REPO / "recipes" / "eli5-wiki-llama2-7b-qlora.yaml"
SMALL_GPU = REPO / "recipes" / "small-gpu-qwen2.5-0.5b.yaml"


def _stage_config(path: Path, section: str):
    from simplesafe.config import load_config
    from simplesafe.plan import STAGE_FILE_SECTIONS

    import importlib

    module, cls = STAGE_FILE_SECTIONS[section].split(":")
    return load_config(getattr(importlib.import_module(module), cls), path, [], section=section)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_validates(recipe):
    from simplesafe.recipe.runner import validate_recipe

    ctx = validate_recipe(recipe)
    assert ctx.recipe.stages


@pytest.mark.parametrize("path", STAGE_FILES, ids=lambda p: p.name)
def test_stage_file_validates(path):
    from simplesafe.config import read_yaml

    sections = [s for s in read_yaml(path) if s != "base_model"]
    assert sections
    for section in sections:
        _stage_config(path, section)


@pytest.fixture(scope="module")
def plans():
    from simplesafe.plan import plan_recipe

    return {p.name: plan_recipe(p, device="cuda", dtype="bf16") for p in RECIPES + STAGE_FILES}


def test_every_recipe_has_a_plan_for_every_stage(plans):
    from simplesafe.config import read_yaml

    for recipe in RECIPES:
        stages = read_yaml(recipe)["stages"]
        got = plans[recipe.name]
        assert [p.stage for p in got] == stages
        for p in got:
            if p.stage in ("sft", "rm", "dpo", "ppo", "grpo", "backward"):
                assert p.peak > 0 and p.peak_phase.largest.bytes > 0, (recipe.name, p.stage)


def test_llama2_7b_qlora_recipe_meets_the_memory_targets(plans):
    peak = {p.stage: p.peak for p in plans[LLAMA_7B.name]}
    assert peak["sft"] <= 24 * GiB and peak["rm"] <= 24 * GiB and peak["dpo"] <= 24 * GiB
    assert peak["ppo"] <= 40 * GiB and peak["grpo"] <= 40 * GiB
    from simplesafe.recipe.runner import validate_recipe
    from simplesafe.recipe.stages import grpo_config, ppo_config, rm_configs

    ctx = validate_recipe(LLAMA_7B)
    assert ppo_config(ctx).memory_mode == "shared" and grpo_config(ctx).num_generations == 4
    assert rm_configs(ctx)["helpfulness"].method == "qlora"  # the 7B reward model is no longer trained in full
    for name in ("sft.yaml", "rm.yaml", "dpo.yaml"):
        assert all(p.peak <= 24 * GiB for p in plans[name])


def test_small_gpu_recipe_fits_the_8_gb_it_asks_for(plans):
    assert "one GPU with >= 8 GB" in SMALL_GPU.read_text()
    assert all(p.peak <= 8 * GiB for p in plans[SMALL_GPU.name])


def test_full_fine_tuning_a_7b_reward_model_is_what_the_plan_refuses(plans):
    """The defect the recipe had: the helpfulness RM trained the whole 7B in fp32 with AdamW (~107 GB)."""
    from simplesafe.plan import plan_recipe

    full = plan_recipe(LLAMA_7B, ["rm.helpfulness.method=full", "rm.helpfulness.gradient_checkpointing=false"])
    rm = next(p for p in full if p.stage == "rm")
    held = sum(i.bytes for i in rm.peak_phase.items if any(w in i.name for w in ("weights", "optimizer", "gradients")))
    assert held > 100e9 and rm.peak > 80 * GiB  # the "about 107 GB before activations"


def test_plan_cli_marks_stages_and_exits_2_when_one_does_not_fit(tmp_path):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "simplesafe.cli", "plan", str(LLAMA_7B)]
    ok = subprocess.run(cmd + ["--device-memory", "24GiB"], capture_output=True, text=True, timeout=600)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "fits" in ok.stdout and "NO" not in ok.stdout and "largest item" in ok.stdout
    small = subprocess.run(cmd + ["--device-memory", "16GiB", "--markdown"], capture_output=True, text=True,
                           timeout=600)
    assert small.returncode == 2 and "cannot fit 16GiB" in small.stderr and "rm" in small.stderr
    assert small.stdout.startswith("| stage | peak |") and re.search(r"^\| rm \|.*\| NO \|$", small.stdout, re.M)


def test_readme_hardware_table_is_the_plan(plans, monkeypatch):
    """README's table is generated (scripts/hardware_table.py --write), so it cannot drift from the plan."""
    import importlib.util

    monkeypatch.chdir(REPO)  # the table names recipes by their paths in the repository
    from simplesafe.plan import README_END, README_START, hardware_table

    spec = importlib.util.spec_from_file_location("hardware_table", REPO / "scripts" / "hardware_table.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    readme = (REPO / "README.md").read_text()
    block = readme.split(README_START, 1)[1].split(README_END, 1)[0].strip()
    by_name = {name: got for name, got in plans.items()}
    assert block == hardware_table([Path(r) for r in script.RECIPES], by_name)
    assert "40 GB for PPO" not in readme  # the old guess


# ----------------------------------------------------------------------------- recipe paths in docs

DOC_FILES = sorted([*(REPO / "simplesafe").rglob("*.py"), *(REPO / "bench").glob("*.py"), REPO / "README.md",
                    *(REPO / "docs").glob("*.md"), *(REPO / "recipes").rglob("*.yaml"), *(REPO / "scripts").glob("*")])
COMMAND = re.compile(r"simplesafe (train \w+|run|plan|data build) (recipes/[\w./-]+\.yaml)([^\n#`]*)")


def test_every_recipe_path_named_in_the_code_and_docs_exists():
    missing = []
    for f in DOC_FILES:
        if f.is_file():
            for m in re.finditer(r"recipes/[\w./-]+\.yaml", f.read_text(errors="replace")):
                if not (REPO / m.group(0)).exists():
                    missing.append(f"{f.relative_to(REPO)}: {m.group(0)}")
    assert not missing, missing


def test_every_documented_command_on_a_recipe_loads_its_section():
    from simplesafe.config import load_config
    from simplesafe.recipe.runner import validate_recipe

    checked = 0
    for f in DOC_FILES:
        if not f.is_file():
            continue
        for m in COMMAND.finditer(f.read_text(errors="replace")):
            command, path = m.group(1), REPO / m.group(2)
            overrides = [a for a in shlex.split(m.group(3).replace("\\", " ")) if "=" in a and not a.startswith("-")]
            where = f"{f.relative_to(REPO)}: {m.group(0).strip()}"
            if command in ("run", "plan"):
                from simplesafe.config import read_yaml

                if "stages" in read_yaml(path):
                    validate_recipe(path, overrides)
            elif command == "data build":
                from simplesafe.data.config import DataBuildConfig

                load_config(DataBuildConfig, path, overrides, section="data")
            else:
                trainer = command.split()[1]
                section = {"rloo": "grpo"}.get(trainer, trainer)
                from simplesafe.config import read_yaml

                assert section in read_yaml(path), f"{where}: {path.name} has no '{section}' section"
                if trainer == "rm" and "stages" in read_yaml(path):
                    continue  # a recipe's rm section names several reward models
                cls = {"sft": "simplesafe.train.sft:SFTStageConfig", "rm": "simplesafe.train.reward:RewardStageConfig",
                       "dpo": "simplesafe.train.dpo:DPOStageConfig", "ppo": "simplesafe.train.ppo_config:PPOStageConfig",
                       "grpo": "simplesafe.train.grpo:GRPOStageConfig", "rloo": "simplesafe.train.grpo:GRPOStageConfig"}
                import importlib

                module, name = cls[trainer].split(":")
                load_config(getattr(importlib.import_module(module), name), path, overrides, section=section)
            checked += 1
    assert checked >= 8


# ----------------------------------------------------------------------------- one step of each stage

QUESTIONS = ["Why is the sky blue?", "How do birds fly?", "What is a volcano?", "Why do we sleep?"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from simplesafe.io import write_rows

    d = tmp_path_factory.mktemp("recipe-data")
    sft = [{"prompt": q, "completion": f"It is simple: {q.lower()} Because it is."} for q in QUESTIONS]
    pairs = [{"prompt": q, "chosen": "A short kind answer.", "rejected": "Go away, I will not say.", "weight": 1.0}
             for q in QUESTIONS]
    for split in ("train", "validation", "test"):
        write_rows(d / "sft" / f"{split}.jsonl", sft)
        write_rows(d / "rm" / f"{split}.jsonl", pairs)
        write_rows(d / "rl" / f"{split}.jsonl", [{"id": f"{split}{i}", "prompt": q} for i, q in enumerate(QUESTIONS)])
    return d


def _stage_runs() -> list[tuple[str, str, dict]]:
    """(id, stage, config dump) for every training stage of every shipped recipe and stage file, deduplicated by
    what changes the code path (method, adapters, checkpointing, optimizer, modes); sizes are shrunk later."""
    from simplesafe.config import read_yaml
    from simplesafe.recipe.runner import validate_recipe
    from simplesafe.recipe.stages import (backward_configs, dpo_config, grpo_config, merge_config, ppo_config,
                                          rm_configs, sft_config)

    found: dict[tuple, tuple[str, str, dict]] = {}

    def add(recipe: str, stage: str, cfg, extra: dict | None = None):
        d = cfg.model_dump(mode="json")
        if extra:
            d["_extra"] = extra
        lora = d.get("lora") or {}
        key = (stage, d.get("method"), lora.get("r"), lora.get("dropout", 0) > 0, d.get("gradient_checkpointing"),
               d.get("optim"), d.get("memory_mode"), d.get("value_model"), bool(d.get("generation_batch_size")),
               d.get("precompute_ref_log_probs"), str(d.get("loss_type")), d.get("train_layers") is not None,
               "minilm" in str(d.get("backbone", "")), json.dumps(extra, sort_keys=True))
        found.setdefault(key, (f"{recipe}:{stage}", stage, d))

    for recipe in RECIPES:
        ctx = validate_recipe(recipe)
        stages = ctx.recipe.stages
        if "backward" in stages:
            add(recipe.stem, "sft", backward_configs(ctx)[1])
        if "sft" in stages:
            add(recipe.stem, "sft", sft_config(ctx))
        if "rm" in stages:
            for cfg in rm_configs(ctx).values():
                add(recipe.stem, "rm", cfg)
        if "dpo" in stages:
            merge = merge_config(ctx).model_dump() if "merge" in stages else None
            add(recipe.stem, "dpo", dpo_config(ctx), {"merge": merge})
        if "ppo" in stages:
            add(recipe.stem, "ppo", ppo_config(ctx))
        if "grpo" in stages:
            add(recipe.stem, "grpo", grpo_config(ctx))
    for path in STAGE_FILES:
        for section in read_yaml(path):
            if section != "base_model":
                add(path.stem, section, _stage_config(path, section))
    return list(found.values())


STAGE_RUNS = _stage_runs()


def _shrunk(stage: str, d: dict, tiny: Path, data: Path) -> dict:
    """The recipe's stage config with the micro model, four rows, one step, bf16; everything else kept."""
    from simplesafe.train.common import REPORT_TEMPLATE

    d = {k: v for k, v in d.items() if k not in ("_extra", "out")}
    if "template" in d:
        # the micro model has no chat template and 128 positions (the backward model's prompt is longer)
        d["template"] = REPORT_TEMPLATE
    d.update(precision="bf16", seed=0)
    if "lora" in d:
        d["lora"] = {**d["lora"], "r": min(d["lora"]["r"], 8)}
    if stage == "sft":
        d.update(model=str(tiny), data=[str(data / "sft")], validation=[], max_steps=1, epochs=1, batch_size=2,
                 grad_accum=1, max_length=48, max_eval_rows=2, max_train_rows=4, system=None,
                 early_stopping_patience=None)
    elif stage == "rm":
        encoder = "minilm" in str(d.get("backbone"))
        d.update(backbone="embedded:minilm" if encoder else str(tiny), pairs="rm_rows", data=[str(data / "rm")],
                 validation=[], test=[], simple_file=None, english_file=None, max_train_rows=4, max_eval_rows=2,
                 batch_size=2, eval_batch_size=2, grad_accum=1, max_length=32, epochs=1, early_stopping_patience=None)
        if d.get("train_layers") is not None:
            d["train_layers"] = 1
    elif stage == "dpo":
        d.update(model=str(tiny), ref_model=None, data=[str(data / "rm")], validation=[], max_steps=1, epochs=1,
                 batch_size=2, grad_accum=1, max_length=48, max_eval_rows=2, max_train_rows=4)
    elif stage in ("ppo", "grpo"):
        rewards = []
        for r in d["rewards"]:
            if r["kind"] == "rm":
                continue  # a reward model trained by the recipe's rm stage: covered by the rm runs
            if r["kind"] == "safety":
                r = {**{k: v for k, v in r.items() if k != "toxicity_backend"}, "toxicity": {"backend": "profanity-check"}}
            rewards.append(r)
        d.update(policy=str(tiny), data=[str(data / "rl")], rewards=rewards or [{"kind": "simplicity"}],
                 max_new_tokens=8, max_prompt_tokens=32)
        if stage == "ppo":
            d.update(steps=1, batch_size=2, mini_batch_size=2, ppo_epochs=1, probe={"prompts": None},
                     generation_batch_size=1 if d.get("generation_batch_size") else None,
                     forward_batch_size=1 if d.get("forward_batch_size") else None)
        else:
            d.update(steps=1, batch_size=d["num_generations"], logging_steps=1, save_steps=10)
    return d


@pytest.mark.parametrize("run_id,stage,dumped", STAGE_RUNS, ids=[r[0] for r in STAGE_RUNS])
def test_one_step_of_the_recipe_stage_in_bf16(run_id, stage, dumped, tiny_model_dir, tiny_data, tmp_path):
    cfg_dict = _shrunk(stage, dumped, tiny_model_dir, tiny_data)
    out = tmp_path / stage
    if stage == "sft":
        from simplesafe.train.sft import SFTStageConfig, load_sft_rows, train_sft

        cfg = SFTStageConfig(**cfg_dict)
        train, val = load_sft_rows(cfg)
        m = train_sft(cfg.model, train, val, out, cfg, progress=False)
        assert m["steps"] == 1 and m["precision"] == "bf16"
    elif stage == "rm":
        from simplesafe.train.reward import RewardStageConfig, train_reward_model

        m = train_reward_model(RewardStageConfig(**cfg_dict), out, progress=False)
        assert m["precision"] == "bf16" and m["method"] == cfg_dict["method"]
    elif stage == "dpo":
        from simplesafe.train.dpo import DPOStageConfig, load_dpo_rows, train_dpo

        cfg = DPOStageConfig(**cfg_dict)
        train, val = load_dpo_rows(cfg)
        m = train_dpo(cfg, train, val, out, progress=False)
        assert m["steps"] == 1 and m["precision"] == "bf16"
        merge = (dumped.get("_extra") or {}).get("merge")
        if merge and cfg.method != "full":
            from simplesafe.train.merge import run_merge

            rep = run_merge(str(tiny_model_dir), out / "adapter", tmp_path / "merged", mode=merge["mode"],
                            compare=merge["compare"], validation=tiny_data / "sft" / "validation.jsonl", max_rows=2)
            assert (tmp_path / "merged" / "model.safetensors").exists()
            if merge["mode"] == "careful":
                assert rep["quantized_from"] == "bfloat16"
    elif stage == "ppo":
        from simplesafe.train.ppo import train_ppo
        from simplesafe.train.ppo_config import PPOStageConfig

        m = train_ppo(PPOStageConfig(**cfg_dict), out, progress=False)
        assert m["steps"] == 1 and m["precision"] == "bf16"
    else:
        from simplesafe.train.grpo import GRPOStageConfig, train_grpo

        m = train_grpo(GRPOStageConfig(**cfg_dict), out, progress=False)
        assert m["steps"] == 1
    assert (out / "config.json").exists() or (out / "model.safetensors").exists()
