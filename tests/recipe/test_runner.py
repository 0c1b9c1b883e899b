"""The recipe runner end to end on the micro model: every stage, resume after a kill, re-run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from simplesafe.errors import ConfigError
from simplesafe.recipe.runner import run_pipeline

REPO = Path(__file__).resolve().parents[2]


def micro_recipe(tmp_path: Path, base: Path, stages: list[str]) -> Path:
    recipe = {
        "name": "micro",
        "seed": 0,
        "base_model": str(base),
        "stages": stages,
        "data": {
            "sources": [
                {"path": str(REPO / "data/eli5/lfqa_preferences.tsv"), "kind": "pairs", "limit": 300},
                {"path": str(REPO / "data/simplewiki/simple_articles.txt"), "kind": "wiki", "limit": 400},
            ],
            "lead_min_words": 60, "lead_max_words": 250, "rm_readability": "rejected_only",
            "toxicity_backend": "profanity-check",
        },
        "backward": {"answer_words": 30, "max_pairs": 60, "sft": {"epochs": 1, "batch_size": 8, "max_length": 256}},
        "synth": {"limit_per_split": 8, "max_answer_words": 30, "params": {"max_new_tokens": 16, "seed": 0}},
        "sft": {"epochs": 1, "batch_size": 8, "grad_accum": 1, "max_length": 256, "max_train_rows": 48},
        "rm": {"helpfulness": {"epochs": 1, "max_train_rows": 16, "batch_size": 8},
               "simplicity": {"epochs": 1, "max_train_rows": 32, "max_eval_rows": 16, "batch_size": 8}},
        "dpo": {"method": "lora", "max_steps": 2, "batch_size": 2, "grad_accum": 1, "max_length": 128,
                "lora": {"r": 4, "alpha": 8}},
        "ppo": {"steps": 2, "batch_size": 4, "mini_batch_size": 2, "ppo_epochs": 1, "max_new_tokens": 8,
                "max_prompts": 8, "lora": {"r": 4, "alpha": 8},
                "rewards": [{"kind": "simplicity"}, {"kind": "safety", "toxicity_backend": "profanity-check"}]},
        "merge": {"max_rows": 8, "mode": "simple"},  # the careful merge is for QLoRA adapters (tests/train/test_merge.py)
        "eval": {"prompts_per_file": 3, "settings": {"seeds": [0], "max_new_tokens": 8, "n_boot": 50,
                                                      "bertscore": False, "toxicity_backend": "profanity-check",
                                                      "pool": "length"}},
        "report": {"max_prompts": 3},
    }
    p = tmp_path / "micro.yaml"
    p.write_text(yaml.safe_dump(recipe))
    return p


@pytest.mark.slow
def test_every_stage_runs_and_rerun_is_cached(tmp_path, tiny_model_dir, capsys):
    stages = ["data", "backward", "synth", "sft", "rm", "dpo", "merge", "ppo", "eval", "report"]
    recipe = micro_recipe(tmp_path, tiny_model_dir, stages)
    run = tmp_path / "run"
    results = run_pipeline(recipe, [], run_dir=run)
    for s in stages:
        assert s in results
    for d in ["data", "backward", "synth", "sft", "rm_helpfulness", "rm_simplicity", "dpo", "merge", "ppo", "eval"]:
        assert (run / d / "DONE").exists(), d
    html = Path(results["report"]["path"]).read_text()
    for model in ("base", "sft", "dpo", "ppo"):
        assert model in html
    timings = json.loads((run / "timings.json").read_text())
    assert [t["stage"] for t in timings][:len(stages)] == stages
    t0 = time.time()
    run_pipeline(recipe, [], run_dir=run)
    out = capsys.readouterr().out
    assert out.count("(done, skipping)") >= len(stages) - 1  # report always re-renders
    assert time.time() - t0 < 60


def test_bad_section_fails_before_any_stage_runs(tmp_path, tiny_model_dir):
    recipe = micro_recipe(tmp_path, tiny_model_dir, ["data", "sft"])
    data = yaml.safe_load(recipe.read_text())
    data["sft"]["lr"] = "fast"
    recipe.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="sft.lr"):
        run_pipeline(recipe, [], run_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "data").exists()


def test_unknown_stage(tmp_path, tiny_model_dir):
    recipe = micro_recipe(tmp_path, tiny_model_dir, ["data", "sfft"])
    with pytest.raises(ConfigError, match="unknown stage"):
        run_pipeline(recipe, [], run_dir=tmp_path / "run")


@pytest.mark.slow
def test_killed_run_resumes_from_last_finished_stage(tmp_path, tiny_model_dir):
    recipe = micro_recipe(tmp_path, tiny_model_dir, ["data", "backward", "sft"])
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "simplesafe.cli", "run", str(recipe), "--run-dir", str(run)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=True)
    # kill the whole process group as soon as the first stage has finished
    deadline = time.time() + 600
    while time.time() < deadline and not (run / "data" / "DONE").exists():
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    stages = ["data", "backward", "sft"]
    done_before = [s for s in stages if (run / s / "DONE").exists()]
    assert "data" in done_before and "sft" not in done_before  # killed mid-run
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    for s in done_before:
        assert f"stage {s} (done, skipping)" in res.stdout
    assert all((run / s / "DONE").exists() for s in stages)
    assert not list(run.rglob("*.tmp"))


@pytest.mark.parametrize("name", ["demo", "smoke", "leaderboard"])
def test_shipped_recipes_validate(name, tmp_path):
    from simplesafe.recipe.evaluation import training_signals
    from simplesafe.recipe.runner import validate_recipe

    ctx = validate_recipe(REPO / "recipes" / f"{name}.yaml", run_dir=tmp_path / "run")
    if name == "leaderboard":  # Table 1 on the demo's models: the harness stage and the report, nothing trained
        assert ctx.recipe.stages == ["harness", "report"] and ctx.recipe.harness["from_run"] == "runs/demo"
        assert ctx.recipe.harness["preset"] == "fast" and "mmlu" in ctx.recipe.harness["tasks"]
        return
    signals = training_signals(ctx)
    assert any(s["used_by"].startswith("ppo") for s in signals)
    if name == "demo":
        assert ctx.recipe.base_model == "embedded:smollm2" and ctx.recipe.template == "chat"
        used = {k for s in signals for k in s["keys"]}
        assert "preferences:simple_vs_english" in used  # DPO learns from the simplicity pairs


def test_a_judge_used_in_training_is_refused(tmp_path, tiny_model_dir):
    from simplesafe.recipe.runner import validate_recipe

    recipe = micro_recipe(tmp_path, tiny_model_dir, ["data", "rm", "ppo", "eval"])
    data = yaml.safe_load(recipe.read_text())
    # PPO is trained on the Flesch simplicity reward: Flesch-Kincaid cannot also be the held-out judge
    data["eval"]["settings"]["judges"] = [{"name": "fkg", "axis": "simplicity", "kind": "fkg"}]
    recipe.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="judge 'fkg' cannot be held out: ppo"):
        validate_recipe(recipe, run_dir=tmp_path / "run")
    # a reward model that PPO uses as a reward term cannot judge either
    data["ppo"]["rewards"].append({"kind": "rm", "path": str(tmp_path / "run" / "rm_simplicity")})
    data["eval"]["settings"]["judges"] = [{"name": "simple-rm", "axis": "simplicity", "kind": "reward",
                                           "model": "rm_simplicity"}]
    recipe.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="judge 'simple-rm' cannot be held out"):
        validate_recipe(recipe, run_dir=tmp_path / "run")
    # marked as a baseline it is reported, as used in training
    data["eval"]["settings"]["judges"][0]["baseline"] = True
    recipe.write_text(yaml.safe_dump(data))
    validate_recipe(recipe, run_dir=tmp_path / "run")


def _demo_like_run(root: Path, base: Path) -> Path:
    """A run as the demo leaves it: sft/, dpo/adapter (QLoRA-style), merge/model (careful merge)."""
    import shutil

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from simplesafe.models.load import load_tokenizer
    from simplesafe.train.merge import run_merge

    run = root / "demo"
    run.mkdir(parents=True)
    (run / "recipe.yaml").write_text(yaml.safe_dump({"name": "demo", "base_model": str(base),
                                                     "stages": ["sft", "dpo", "merge", "ppo"]}))
    shutil.copytree(base, run / "sft")
    model = AutoModelForCausalLM.from_pretrained(str(run / "sft"))
    torch.manual_seed(0)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                  init_lora_weights=False))  # non-zero B: a stand-in for DPO
    peft_model.save_pretrained(str(run / "dpo" / "adapter"))
    load_tokenizer(str(base)).save_pretrained(str(run / "dpo" / "adapter"))
    run_merge(str(run / "sft"), run / "dpo" / "adapter", run / "merge" / "model", mode="careful", compare=False)
    for stage_name in ("sft", "dpo", "merge"):
        (run / stage_name / "DONE").write_text("done\n")
    return run


@pytest.mark.slow
def test_harness_stage_scores_every_model_of_a_finished_run_and_the_report_has_table1(tmp_path, tiny_model_dir):
    from simplesafe.runs import path_digest

    import shutil

    src = _demo_like_run(tmp_path, tiny_model_dir)
    shutil.copytree(tiny_model_dir, src / "ppo")  # a PPO stage that has not finished: no DONE marker
    before = path_digest(src)
    recipe = tmp_path / "lb.yaml"
    recipe.write_text(yaml.safe_dump({"name": "lb", "stages": ["harness", "report"], "harness": {
        "from_run": str(src), "tasks": ["arc_challenge", "mmlu"], "limit": 2, "batch_size": 4}}))
    run = tmp_path / "lb"
    results = run_pipeline(recipe, [], run_dir=run)
    t = json.loads((run / "harness" / "table1.json").read_text())
    assert t == results["harness"]
    assert [r["model"] for r in t["rows"]] == ["base", "sft", "dpo", "dpo-simple-merge"]
    assert t["not_run"] == {"ppo": f"stage ppo of {src} has not finished"}
    assert t["skipped_tasks"]["mmlu"].startswith("no local data")  # recorded, not silent
    assert t["tasks"] == ["arc_challenge"] and t["settings"]["limit"] == 2
    for r in t["rows"]:
        assert r["tasks"]["arc_challenge"]["n"] == 2
    # sft is a copy of the base: the same answers, a difference of exactly 0 inside its interval
    d = t["differences"]["sft"]["arc_challenge"]
    assert d["diff"] == 0 and d["verdict"] == "no clear difference"
    assert t["merge"]["careful"] == "dpo" and t["merge"]["simple"] == "dpo-simple-merge"
    assert t["merge"]["merge_report"]["mode"] == "careful"
    simple = json.loads((run / "harness" / "results" / "dpo-simple-merge.json").read_text())
    assert simple["model"].startswith("simple merge of") and simple["tasks"]["arc_challenge"]["score"] is not None
    assert path_digest(src) == before  # the scored run is read, never written
    html = (run / "report.html").read_text()
    assert "Table 1: Open LLM Leaderboard tasks" in html and "mmlu: not run, no local data" in html
    assert "careful − simple [95% CI]" in html and "Did simplicity cost capability?" in html
    assert "Preset fast" in html
    # a finished stage is not re-run
    t0 = time.time()
    run_pipeline(recipe, [], run_dir=run)
    assert time.time() - t0 < 60


def test_harness_section_errors_name_the_key(tmp_path):
    from simplesafe.recipe.runner import validate_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"stages": ["harness"], "harness": {"tasks": ["gsm8k"]}}))
    with pytest.raises(ConfigError, match="unknown harness task"):
        validate_recipe(recipe, run_dir=tmp_path / "run")
    recipe.write_text(yaml.safe_dump({"stages": ["harness"], "harness": {"limitt": 3}}))
    with pytest.raises(ConfigError, match="harness.limitt"):
        validate_recipe(recipe, run_dir=tmp_path / "run")
    recipe.write_text(yaml.safe_dump({"stages": ["harness"], "harness": {"models": [{"name": "x", "path": "y"}]}}))
    with pytest.raises(ConfigError, match="harness.models"):
        validate_recipe(recipe, run_dir=tmp_path / "run")
    recipe.write_text(yaml.safe_dump({"stages": ["harness"], "harness": {"from_run": str(tmp_path / "none")}}))
    with pytest.raises(ConfigError, match="not a run directory"):
        run_pipeline(recipe, [], run_dir=tmp_path / "run")
