"""``simplesafe eval``: Evaluate: generate answers, metrics, pairwise win rates, rubric judges, leaderboard tasks.

    simplesafe eval pairwise --a A.json --b B.json --annotators offline --out cmp/   # A (output_1) against B
    simplesafe eval winrate annotations.json --out wr/                               # output_2 against output_1
"""

from __future__ import annotations

from pathlib import Path

import typer

from simplesafe.commands.common import OVERRIDES, split_config_and_overrides, stage_config
from simplesafe.tables import print_table

app = typer.Typer(help="Evaluate: generate answers, metrics, pairwise win rates, rubric judges, leaderboard tasks.", no_args_is_help=True)


def _fmt(x):
    return None if x is None else round(float(x), 4)


@app.command("pairwise")
def pairwise(
    a: Path = typer.Option(..., "--a", help="outputs of model A (AlpacaEval JSON list or JSONL)"),
    b: Path = typer.Option(..., "--b", help="outputs of model B (AlpacaEval JSON list or JSONL)"),
    annotators: str = typer.Option("offline", "--annotators", help="shipped pool (length, offline) or a pool YAML file"),
    out: Path = typer.Option(..., "--out", help="output folder: annotations.jsonl and summary.json"),
    seed: int = typer.Option(None, "--seed", help="seed for the shown order and noise (default: the pool's)"),
    reward_model: list[str] = typer.Option(None, "--reward-model", help="add a reward-model annotator (folder); repeatable"),
    n_boot: int = typer.Option(2000, "--n-boot", help="bootstrap resamples for the CI"),
) -> None:
    """Win rate of A over B judged by a pool of annotators (AlpacaFarm-style)."""
    from simplesafe.eval.pairwise import run_pairwise

    s = run_pairwise(a, b, annotators, out, seed=seed, n_boot=n_boot, reward_models=reward_model or None)
    print_table([{"a": s["generator_a"], "b": s["generator_b"], "n": s["n"], "win_rate": _fmt(s["win_rate"]),
                  "ci": f"[{_fmt(s['ci_low'])}, {_fmt(s['ci_high'])}]", "lc_win_rate": _fmt(s["lc_win_rate"]),
                  "length_bias": _fmt(s["length_bias"]), "position_bias": _fmt(s["position_bias"])}])
    typer.echo(f"wrote {out / 'annotations.jsonl'} and {out / 'summary.json'}")


@app.command("winrate")
def winrate(
    annotations: Path = typer.Argument(..., help="AlpacaEval annotations (JSON list or JSONL: instruction, output_1, "
                                                 "output_2, preference; 1 = output_1 wins, 2 = output_2 wins, 0/1.5 tie)"),
    out: Path = typer.Option(..., "--out", help="output folder: summary.json"),
    difficulty: Path = typer.Option(None, "--difficulty", help="rows with instruction + instruction_difficulty for the "
                                                               "GLM's difficulty term (default: none, or the rows' own field)"),
) -> None:
    """Win rate of output_2 over output_1, its standard error and AlpacaEval's length-controlled win rate (fractions)."""
    from simplesafe.eval.winrate import run_winrate

    s = run_winrate(annotations, out, difficulty=difficulty)
    print_table([{"model": s["generator_2"], "baseline": s["generator_1"], "n": s["n"], "win_rate": _fmt(s["win_rate"]),
                  "standard_error": _fmt(s["standard_error"]), "lc_win_rate": _fmt(s["lc_win_rate"])}])
    typer.echo(f"wrote {out / 'summary.json'}")


@app.command("generate", context_settings={"allow_extra_args": True})
def generate(args: list[str] = OVERRIDES) -> None:
    """Generate answers (AlpacaEval format) for a prompt set: [CONFIG.yaml] model=... prompts=... out=... [seeds=[0,1,2]]."""
    from simplesafe.eval.generate import GenerateConfig, generate_answers

    config, overrides = split_config_and_overrides(args)
    cfg = stage_config(GenerateConfig, config, overrides, section="generate")
    res = generate_answers(cfg)
    print_table([res])


@app.command("metrics")
def metrics(
    generations: Path = typer.Argument(..., help="generations file (AlpacaEval format, `output` field)"),
    out: Path = typer.Option(..., "--out", help="aggregate metrics JSON; per-answer rows go next to it"),
    references: Path = typer.Option(None, "--references", help="references file (matched by id or instruction)"),
    args: list[str] = OVERRIDES,
) -> None:
    """Readability, toxicity, length, ROUGE and BERTScore with bootstrap 95% CIs."""
    from simplesafe.eval.metrics import MetricsConfig, compute_metrics

    config, overrides = split_config_and_overrides(args)
    if references is not None:
        overrides = [*overrides, f"references={references}"]
    cfg = stage_config(MetricsConfig, config, overrides, section="metrics")
    s = compute_metrics(generations, cfg, out)
    rows = [{"metric": k, "mean": _fmt(v["mean"]), "ci_low": _fmt(v["ci_low"]), "ci_high": _fmt(v["ci_high"]),
             "seed_std": _fmt(v.get("seed_std"))} for k, v in s["metrics"].items()]
    print_table(rows, title=f"{s['generator']}: {s['n']} answers")


@app.command("rubric", context_settings={"allow_extra_args": True})
def rubric(args: list[str] = OVERRIDES) -> None:
    """Single-answer grades by an LLM judge: [CONFIG.yaml] answers=... out=... rubric=mtbench|lima backend=..."""
    from simplesafe.eval.rubric import RubricConfig, run_rubric

    config, overrides = split_config_and_overrides(args)
    cfg = stage_config(RubricConfig, config, overrides, section="rubric")
    s = run_rubric(cfg)
    print_table([{k: s[k] for k in ("rubric", "n", "n_parsed", "mean", "ci_low", "ci_high")}])


@app.command("harness", context_settings={"allow_extra_args": True})
def harness(args: list[str] = OVERRIDES) -> None:
    """Open LLM Leaderboard tasks with lm-evaluation-harness (optional extra `harness`): model=... out=..."""
    from simplesafe.eval.harness import HarnessConfig, run_harness

    config, overrides = split_config_and_overrides(args)
    cfg = stage_config(HarnessConfig, config, overrides, section="harness")
    res = run_harness(cfg)
    print_table([{"task": k, **v} for k, v in res["tasks"].items()])
