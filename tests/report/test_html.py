"""The HTML report: every section filled from a synthetic run, "not run" when parts are missing,
escaped answers, and a headless-Chromium screenshot of the page."""

import base64
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from simplesafe.eval.metrics import MetricsConfig, compute_metrics
from simplesafe.eval.pairwise import run_pairwise
from simplesafe.report.html import render_report

CHROMIUM = Path("/usr/bin/chromium")
ANSWERS = {
    "base": ["The the the sky sky.", "Photosynthesis constitutes a biochemical transformation pathway.", "<script>alert(1)</script> idk"],
    "sft": ["The sky looks blue because air scatters blue light.", "Plants use sunlight to make food.", "Drink water and rest."],
    "ppo": ["Air bends blue light most. So the sky looks blue.", "Plants make food from light.", "Rest. Drink water."],
}
PROMPTS = ["Why is the sky blue?", "What is photosynthesis?", "How do I get over a cold?"]


SUMMARY = {
    "n_prompts": 3, "seeds": [0, 1, 2], "statistics": "95% intervals by bootstrap over prompts",
    "judges": [{"name": "helpfulness", "axis": "helpfulness", "kind": "reward_model", "role": "judge",
                "model": "/x/rm_judge"},
               {"name": "simplicity", "axis": "simplicity", "kind": "reward_model", "role": "training signal",
                "used_by": "ppo", "model": "/x/rm_simplicity"}],
    "models": {m: {"fre": {"mean": f, "ci": [f - 3, f + 3]}, "fkg": {"mean": 20 - f / 5, "ci": [1, 9]},
                   "judge/helpfulness": {"mean": 0.1, "ci": [0.0, 0.2]}, "degenerate": {"mean": 0.0, "ci": [0, 0]}}
               for m, f in (("base", 50.0), ("sft", 70.0), ("ppo", 75.0))},
    "differences": {"sft-base": {"fre": {"mean": 20.0, "ci": [15.0, 25.0]}, "fkg": {"mean": -4.0, "ci": [-5.0, -3.0]}},
                    "ppo-sft": {"fre": {"mean": 5.0, "ci": [-1.0, 11.0]}}},
    "win_rates": {"ppo_vs_sft": {"helpfulness": {"win_rate": 0.48, "ci": [0.4, 0.56], "lc_win_rate": 0.47}}},
    "redteam": {"judge": "safety", "threshold": 0.0, "models": {
        "base": {"unsafe": {"mean": 0.3, "ci": [0.2, 0.4]}}, "ppo": {"unsafe": {"mean": 0.1, "ci": [0.05, 0.2]}}}},
}


def make_run(root: Path) -> Path:
    run = root / "run"
    gen_dir = run / "eval" / "generations"
    gen_dir.mkdir(parents=True)
    for model, outs in ANSWERS.items():
        rows = [{"instruction": q, "output": o + (" Really." * seed), "generator": model, "id": f"p{i}", "seed": seed,
                 "reference": "A simple reference answer."} for seed in (0, 1, 2) for i, (q, o) in enumerate(zip(PROMPTS, outs))]
        (gen_dir / f"{model}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        compute_metrics(gen_dir / f"{model}.jsonl", MetricsConfig(bertscore=False, toxicity_backend="profanity-check", n_boot=50),
                        run / "eval" / "metrics" / f"{model}.json")
    for model in ("base", "ppo"):
        run_pairwise(gen_dir / f"{model}.jsonl", gen_dir / "sft.jsonl", "length", run / "eval" / "pairwise" / f"{model}_vs_sft",
                     n_boot=100)
    (run / "eval" / "rubric" / "sft").mkdir(parents=True)
    (run / "eval" / "rubric" / "sft" / "summary.json").write_text(json.dumps(
        {"rubric": "mtbench", "n": 9, "n_parsed": 9, "mean": 6.2, "ci_low": 5.1, "ci_high": 7.0, "judge": "scripted/rules"}))
    (run / "eval" / "rubric" / "sft" / "grades.jsonl").write_text(
        json.dumps({"id": "p1", "seed": 0, "rubric": "mtbench", "score": 9}) + "\n")
    (run / "rm_pref").mkdir()
    (run / "rm_pref" / "metrics.json").write_text(json.dumps({"eval_accuracy": 0.71, "test_accuracy": 0.69,
                                                              "test_length_baseline_accuracy": 0.62}))
    (run / "sft").mkdir()
    (run / "sft" / "metrics.json").write_text(json.dumps({"eval_loss": 2.31, "epochs": 2}))
    (run / "ppo").mkdir()
    (run / "ppo" / "log.jsonl").write_text("".join(
        json.dumps({"step": s, "reward": 0.1 * s, "reward/simplicity": 0.5, "kl": 0.01 * s * s, "kl_coef": 0.05,
                    "policy_loss": 1.0}) + "\n" for s in range(20)))
    (run / "ppo" / "probe.jsonl").write_text("".join(
        json.dumps({"step": s, "source": "probe", "training_reward": 0.1 * s, "judge/helpfulness": 0.2 - 0.01 * s,
                    "words": 40 - s}) + "\n" for s in (0, 4, 8)))
    (run / "eval" / "summary.json").write_text(json.dumps(SUMMARY))
    (run / "data").mkdir()
    (run / "data" / "stats.json").write_text(json.dumps({"by_source": {"sft": {"eli5": 12, "simplewiki": 30}}}))
    (run / "timings.json").write_text(json.dumps([{"stage": "sft", "status": "done", "seconds": 41.2},
                                                  {"stage": "ppo", "status": "done", "seconds": 80.0},
                                                  {"stage": "eval", "status": "done", "seconds": 30.5}]))
    return run


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("report"))
    return run, render_report(run)


def test_every_section_filled(report):
    run, path = report
    html = path.read_text()
    for heading in ("Answer metrics", "Readability distributions", "Pairwise win rates", "Rubric grades",
                    "Reward models", "Training curves", "Timings", "Sample answers"):
        assert heading in html
    # only the leaderboard section was not run
    assert html.count("not run") == 1
    assert "eval_accuracy" in html and "0.71" in html
    assert "win rate vs sft" in html and "rubric (mtbench)" in html  # in the per-model metrics table
    assert "base vs sft" in html and "ppo vs sft" in html
    assert html.count("data:image/png;base64,") == 4  # readability, win rates, PPO curves, PPO probe
    assert "held out (judge)" in html and "used in training" in html
    assert "FRE +20 [15, 25] (simpler)" in html and "(inside noise)" in html
    from simplesafe.report.html import collect_curves

    (stage, _), = collect_curves(run)
    assert stage == "ppo"
    for b64 in re.findall(r"base64,([A-Za-z0-9+/=]+)", html):
        assert base64.b64decode(b64)[:8] == b"\x89PNG\r\n\x1a\n"
    # the side-by-side view shows each prompt once with every model's answer
    assert html.count("<details") == 3
    assert "Plants make food from light." in html and "Plants use sunlight to make food." in html
    assert "rubric_mtbench 9" in html
    # no external resources: one self-contained file
    assert not re.search(r"""(src|href)=["']https?://""", html)


def test_answers_are_escaped(report):
    _, path = report
    html = path.read_text()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_missing_sections_render_not_run(tmp_path):
    (tmp_path / "empty").mkdir()
    html = render_report(tmp_path / "empty").read_text()
    assert html.count("not run") >= 9
    broken = tmp_path / "broken"
    (broken / "eval" / "metrics").mkdir(parents=True)
    (broken / "eval" / "metrics" / "x.json").write_text("{not json")
    assert "not run" in render_report(broken, tmp_path / "b.html").read_text()


def test_screenshot_in_headless_chromium(report, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed at /usr/bin/chromium (apt-get install -y chromium)")
    _, path = report
    shot = tmp_path / "report.png"
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1280,2000",
           path.resolve().as_uri()]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    pixels = matplotlib.image.imread(str(shot))[..., :3]
    assert pixels.shape[:2] == (2000, 1280)
    assert (pixels.min(axis=-1) < 0.9).mean() > 0.02  # a rendered page with text and plots, not a blank one
    keep = os.environ.get("SIMPLESAFE_KEEP_SCREENSHOTS")
    if keep:
        dest = Path(__file__).parent / "artifacts"
        dest.mkdir(exist_ok=True)
        shutil.copy(shot, dest / "report.png")


def test_notes_are_shown_escaped_at_the_top(tmp_path):
    (tmp_path / "run").mkdir()
    html = render_report(tmp_path / "run", notes=["What a tiny model <cannot> show."]).read_text()
    assert "What a tiny model &lt;cannot&gt; show." in html
    assert html.index("What a tiny model") < html.index('id="metrics"')


def test_table1_from_eval_harness_result_files(tmp_path):
    """`simplesafe eval harness out=RUN/eval/harness/<model>.json` files make Table 1 without the stage."""
    run = tmp_path / "run"
    (run / "eval" / "harness").mkdir(parents=True)
    for model, score in (("sft", 0.36), ("base", 0.43)):
        (run / "eval" / "harness" / f"{model}.json").write_text(json.dumps({
            "preset": "fast", "limit": 1000, "data_dir": "data/harness", "lm_eval_version": "0.4.13",
            "skipped": {"mmlu": "no local data: data/harness/mmlu"},
            "tasks": {"hellaswag": {"score": score, "stderr": 0.015, "n": 1000, "shots": 0, "metric": "acc_norm",
                                    "n_available": 1000, "scored_split": "validation", "fewshot_from": None}}}))
    html = render_report(run).read_text()
    section = html[html.index('<h2 id="harness">'):html.index('<h2 id="rm">')]
    assert section.index("<td>base</td>") < section.index("<td>sft</td>")  # the base row first
    assert "43.0 ± 1.5" in section and "-7.0 [-11.2, -2.8] (lower)" in section
    assert "mmlu: not run, no local data: data/harness/mmlu" in section
    assert "Did simplicity cost capability? Yes, measurably: sft scores below the base on hellaswag" in section
