"""run_eval end to end on the micro model: generations, judges, intervals over prompts, then the report."""

import json

import pytest

from simplesafe.eval.judges import JudgeSpec
from simplesafe.eval.run import EvalConfig, degenerate_reason, run_eval
from simplesafe.report.html import render_report


def test_degenerate_reasons():
    assert degenerate_reason("   ") == "empty"
    assert degenerate_reason("the cat sat on the mat " * 4) == "repeated"
    assert degenerate_reason("A fine answer that simply ran out of room", "length") == "cut"
    assert degenerate_reason("The sky is blue because air scatters blue light more than red light.", "eos") is None


@pytest.mark.slow
def test_run_eval_and_report(tiny_model_dir, tmp_path, monkeypatch):
    import simplesafe.text.toxicity as toxicity

    monkeypatch.setattr(toxicity, "DEFAULT_BACKEND", "profanity-check")  # the light scorer keeps this test fast
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"q{i}", "prompt": q, "reference": "Light scatters in the air."}) + "\n"
                               for i, q in enumerate(["Why is the sky blue?", "What is rain?", "Why do we sleep?"])))
    cfg = EvalConfig(max_new_tokens=8, batch_size=4, n_boot=50, compare_to=["sft", "base-prompted"],
                     judges=[JudgeSpec(name="simplicity", axis="simplicity", kind="dale_chall"),
                             JudgeSpec(name="length", axis="length", kind="length", baseline=True)],
                     kl_reference={"sft": "base"},
                     training_signals=[{"name": "ppo reward: simplicity", "axis": "simplicity", "used_by": "ppo"}])
    run = tmp_path / "run"
    models = {"base": str(tiny_model_dir), "sft": str(tiny_model_dir),
              "base-prompted": {"model": str(tiny_model_dir), "prefix": "Explain like I'm five: "}}
    headline = run_eval(cfg, run, models, prompts)
    assert set(headline) == {"base", "sft", "base-prompted"}
    gen = [json.loads(x) for x in (run / "eval" / "generations" / "base.jsonl").read_text().splitlines()]
    assert len(gen) == 9 and {r["seed"] for r in gen} == {0, 1, 2} and {r["stop"] for r in gen} <= {"eos", "length"}
    prompted = [json.loads(x) for x in (run / "eval" / "generations" / "base-prompted.jsonl").read_text().splitlines()]
    assert prompted[0]["instruction"] == "Why is the sky blue?"  # the prefix is not part of the question
    meta = json.loads((run / "eval" / "generations" / "base-prompted.jsonl.meta.json").read_text())
    assert meta["params"]["prefix"] == "Explain like I'm five: "
    m = json.loads((run / "eval" / "metrics" / "sft.json").read_text())
    assert m["metrics"]["bertscore_f1"]["n"] == 9 and "per_seed" in m["metrics"]["fre"]
    assert m["nested"]["fre"]["n"] <= 9 and m["n_prompts"] == 3
    answers = [json.loads(x) for x in (run / "eval" / "metrics" / "sft.answers.jsonl").read_text().splitlines()]
    assert all("judge/simplicity" in r and "degenerate" in r for r in answers)
    summary = json.loads((run / "eval" / "summary.json").read_text())
    fre = summary["models"]["base"]["fre"]
    assert set(fre) == {"mean", "ci"} and (fre["mean"] is None or fre["ci"][0] <= fre["mean"] <= fre["ci"][1])
    wr = summary["win_rates"]["base_vs_sft"]["simplicity"]
    assert 0 <= wr["win_rate"] <= 1 and wr["n"] == 9 and wr["n_prompts"] == 3
    assert summary["win_rates"]["sft_vs_base-prompted"]["length"]["n"] == 9
    assert "sft-base" in summary["differences"] and "fre" in summary["differences"]["sft-base"]
    assert summary["kl"]["sft"]["reference"] == "base" and abs(summary["kl"]["sft"]["mean"]) < 1e-4  # same model
    roles = {j["name"]: (j["role"], j["held_out"]) for j in summary["judges"]}
    assert roles == {"simplicity": ("judge", True), "length": ("baseline", False),
                     "ppo reward: simplicity": ("training signal", False)}
    # done: a second call is a no-op returning the same headline
    assert run_eval(cfg, run, models, prompts) == headline
    html = render_report(run).read_text()
    assert "Findings" in html and "Does SFT simplify" in html and "held out" in html
    assert "BERTScore F1" in html and html.count("<details") == 3
