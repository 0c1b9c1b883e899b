"""run_eval end to end on the tiny model: generations, metrics, pairwise vs the reference, then the report."""

import json

import pytest

from simplesafe.eval.run import EvalConfig, run_eval
from simplesafe.report.html import render_report


@pytest.mark.slow
def test_run_eval_and_report(tiny_model_dir, tmp_path, monkeypatch):
    import simplesafe.text.toxicity as toxicity

    monkeypatch.setattr(toxicity, "DEFAULT_BACKEND", "profanity-check")  # the light scorer keeps this test fast
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"q{i}", "prompt": q, "reference": "Light scatters in the air."}) + "\n"
                               for i, q in enumerate(["Why is the sky blue?", "What is rain?", "Why do we sleep?"])))
    cfg = EvalConfig(max_new_tokens=8, batch_size=4, n_boot=50)
    run = tmp_path / "run"
    models = {"base": str(tiny_model_dir), "sft": str(tiny_model_dir)}
    headline = run_eval(cfg, run, models, prompts)
    assert set(headline) == {"base", "sft"}
    gen = [json.loads(x) for x in (run / "eval" / "generations" / "base.jsonl").read_text().splitlines()]
    assert len(gen) == 9 and {r["seed"] for r in gen} == {0, 1, 2}
    m = json.loads((run / "eval" / "metrics" / "sft.json").read_text())
    assert m["metrics"]["bertscore_f1"]["n"] == 9 and "per_seed" in m["metrics"]["fre"]
    s = json.loads((run / "eval" / "pairwise" / "base_vs_sft" / "summary.json").read_text())
    assert s["n"] == 9 and 0 <= s["win_rate"] <= 1
    assert headline["base"]["win_rate_vs_ref"] == s["win_rate"]
    # done: a second call is a no-op returning the same headline
    assert run_eval(cfg, run, models, prompts) == headline
    html = render_report(run).read_text()
    assert "base vs sft" in html and "BERTScore F1" in html and html.count("<details") == 3
