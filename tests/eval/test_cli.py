"""The eval and report CLI commands (in-process through Typer's runner)."""

import json

import pytest
from typer.testing import CliRunner

from simplesafe.cli import app

runner = CliRunner()


def test_metrics_and_rubric_commands(tmp_path):
    gen = tmp_path / "gen.jsonl"
    gen.write_text(json.dumps({"id": "1", "instruction": "Say hi.", "output": "Hi there. How are you?", "generator": "m",
                               "reference": "Hello there."}) + "\n")
    res = runner.invoke(app, ["eval", "metrics", str(gen), "--out", str(tmp_path / "m.json"), "bertscore=false",
                              "toxicity_backend=profanity-check", "n_boot=20"])
    assert res.exit_code == 0, res.output
    assert "rougeL" in res.output and json.loads((tmp_path / "m.json").read_text())["n"] == 1

    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps([{"match": ".*", "response": "Good.\nRating: [[8]]"}]))
    res = runner.invoke(app, ["eval", "rubric", f"answers={gen}", f"out={tmp_path / 'rub'}", "backend.backend=scripted",
                              f"backend.script={rules}"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "rub" / "summary.json").read_text())["mean"] == 8


@pytest.mark.slow
def test_generate_with_lora_adapter(tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    from simplesafe.models.load import load_causal_lm

    model = get_peft_model(load_causal_lm(str(tiny_model_dir)),
                           LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    model.save_pretrained(tmp_path / "adapter")
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"instruction": "Why is the sky blue?"}) + "\n")
    for extra in ([f"model={tiny_model_dir}", f"adapter={tmp_path / 'adapter'}"], [f"model={tmp_path / 'adapter'}"]):
        out = tmp_path / f"gen{len(extra)}.json"
        res = runner.invoke(app, ["eval", "generate", *extra, f"prompts={prompts}", f"out={out}", "seeds=[0]",
                                  "max_new_tokens=4", "temperature=0"])
        assert res.exit_code == 0, res.output
        rows = json.loads(out.read_text())
        assert len(rows) == 1 and rows[0]["generator"] == "adapter" and rows[0]["seed"] == 0


def test_report_command(tmp_path):
    (tmp_path / "run").mkdir()
    res = runner.invoke(app, ["report", str(tmp_path / "run"), "--out", str(tmp_path / "r.html")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")
