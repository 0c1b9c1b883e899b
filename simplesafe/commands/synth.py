"""``simplesafe synth``: Synthesise instruction data: backtranslation, Self-Instruct, Humpback self-curation, LIMA-style selection."""

from __future__ import annotations

from pathlib import Path

import typer

from simplesafe.commands.common import FORCE, OVERRIDES, split_config_and_overrides, stage_config
from simplesafe.tables import print_table

app = typer.Typer(help="Synthesise instruction data: backtranslation, Self-Instruct, Humpback self-curation, LIMA-style selection.", no_args_is_help=True)

BACKEND_HELP = "hf (local transformers model), openai (any OpenAI-compatible server), vllm, scripted (rules file)"


def _backend_overrides(backend, model, base_url, api_key_env, max_workers, timeout, max_retries, script, batch_size,
                       prefix: str = "backend") -> list[str]:
    pairs = {"backend": backend, "model": model, "base_url": base_url, "api_key_env": api_key_env,
             "max_workers": max_workers, "timeout_s": timeout, "max_retries": max_retries, "script": script,
             "batch_size": batch_size}
    return [f"{prefix}.{k}={v}" for k, v in pairs.items() if v is not None]


@app.command("self-instruct")
def self_instruct(
    args: list[str] = OVERRIDES,
    seed_tasks: Path = typer.Option(Path("data/self-instruct/seed_tasks.jsonl"), "--seed-tasks", help="seed tasks JSONL (175 in the paper)"),
    backend: str = typer.Option("openai", "--backend", help=BACKEND_HELP),
    base_url: str = typer.Option(None, "--base-url", help="openai: server URL, e.g. http://localhost:8000/v1"),
    model: str = typer.Option(None, "--model", help="model name (openai) or path / hub id (hf, vllm)"),
    num_instructions: int = typer.Option(100, "--num-instructions", help="instructions to keep"),
    out: Path = typer.Option(..., "--out", help="output folder"),
    api_key_env: str = typer.Option("OPENAI_API_KEY", "--api-key-env", help="NAME of the env var holding the API key (may be unset for local servers)"),
    cache: Path = typer.Option(None, "--cache", help="SQLite generation cache (default OUT/cache.sqlite)"),
    max_workers: int = typer.Option(8, "--max-workers", help="openai: concurrent requests"),
    seed: int = typer.Option(0, "--seed", help="sampling seed"),
    timeout: float = typer.Option(None, "--timeout", help="openai: seconds per request (default 60)"),
    max_retries: int = typer.Option(None, "--max-retries", help="openai: retries on 429/5xx (default 5)"),
    script: Path = typer.Option(None, "--script", help="scripted: JSON rules file"),
    batch_size: int = typer.Option(None, "--batch-size", help="hf: prompts per batch"),
) -> None:
    """Self-Instruct (Wang et al., 2023): new instructions + instances from seed tasks.

    Writes OUT/instructions.jsonl, OUT/rejected.jsonl (with reasons), OUT/sft.jsonl and OUT/stats.json.
    ARGS: an optional YAML config, then key=value overrides (e.g. patience=5 rouge_threshold=0.7).
    """
    from simplesafe.synth.self_instruct import SelfInstructConfig, run_self_instruct

    config, overrides = split_config_and_overrides(args)
    overrides = [f"seed_tasks={seed_tasks}", f"num_instructions={num_instructions}", f"seed={seed}",
                 *_backend_overrides(backend, model, base_url, api_key_env, max_workers, timeout, max_retries,
                                     script, batch_size), *overrides]
    if cache is not None:
        overrides.append(f"cache={cache}")
    cfg = stage_config(SelfInstructConfig, config, overrides, section="self_instruct")
    stats = run_self_instruct(cfg, out)
    typer.echo(f"kept {stats['kept']} instructions ({stats['classification']} classification, "
               f"{stats['instances']} instances) in {out / 'instructions.jsonl'}; rejected {stats['rejected']} "
               f"-> {out / 'rejected.jsonl'}")
    if stats["reject_reasons"]:
        print_table([{"reason": k, "count": v} for k, v in stats["reject_reasons"].items()], title="rejects")
    typer.echo(f"model calls {stats['model_calls']}, cache hits {stats['cache_hits']}, stopped: {stats['stopped_because']}")


@app.command("backtranslate")
def backtranslate(
    args: list[str] = OVERRIDES,
    out: Path = typer.Option(..., "--out", help="output (stage) folder"),
    input: Path = typer.Option(None, "--input", help="folder with {train,validation,test}.jsonl leads {id, source, text}, or one file"),
    backend: str = typer.Option(None, "--backend", help=BACKEND_HELP),
    model: str = typer.Option(None, "--model", help="model name / path"),
    base_url: str = typer.Option(None, "--base-url", help="openai: server URL"),
    api_key_env: str = typer.Option(None, "--api-key-env", help="NAME of the env var holding the API key"),
    max_workers: int = typer.Option(None, "--max-workers", help="openai: concurrent requests"),
    batch_size: int = typer.Option(None, "--batch-size", help="hf: prompts per batch"),
    force: bool = FORCE,
) -> None:
    """Backtranslate Simple Wikipedia leads into (question, lead) SFT pairs with the report's prompt.

    ARGS: an optional YAML config (section 'backtranslate' of a recipe), then key=value overrides,
    e.g. limit_per_split=300 params.max_new_tokens=32.
    """
    from simplesafe.synth.backtranslate import BacktranslateConfig, run_backtranslation

    config, overrides = split_config_and_overrides(args)
    extra = _backend_overrides(backend, model, base_url, api_key_env, max_workers, None, None, None, batch_size)
    if input is not None:
        extra.append(f"input={input}")
    cfg = stage_config(BacktranslateConfig, config, extra + overrides, section="backtranslate")
    stats = run_backtranslation(cfg, out, force=force)
    print_table([{"split": k, **v} for k, v in stats["splits"].items()], title=f"backtranslation ({stats['generator']})")
    if stats["reject_reasons"]:
        print_table([{"reason": k, "count": v} for k, v in stats["reject_reasons"].items()], title="rejects")
    typer.echo(f"kept {stats['kept']} of {stats['leads']} leads -> {out}; model calls {stats['model_calls']}, "
               f"cache hits {stats['cache_hits']}, {stats['seconds']}s")


@app.command("humpback")
def humpback(
    args: list[str] = OVERRIDES,
    out: Path = typer.Option(..., "--out", help="output (stage) folder"),
    force: bool = FORCE,
) -> None:
    """Humpback (Li et al., 2023): backward model labels passages, the model self-curates them.

    ARGS: an optional YAML config (section 'humpback'), then key=value overrides, e.g.
    seed_data=runs/demo/data/sft unlabelled=runs/demo/data/wiki/train.jsonl rounds=2 k=4 max_unlabelled=200.
    """
    from simplesafe.synth.curate import HumpbackConfig, run_humpback

    config, overrides = split_config_and_overrides(args)
    cfg = stage_config(HumpbackConfig, config, overrides, section="humpback")
    stats = run_humpback(cfg, out, force=force)
    print_table([{k: v for k, v in r.items() if k != "score_histogram"} | r["score_histogram"] for r in stats["rounds"]],
                title=f"self-curation (k={stats['k']}; score histogram per round)")
    typer.echo(f"{stats['seed']} seed + {stats['curated']} curated of {stats['candidates']} candidates "
               f"({stats['passages']} passages) -> {out / 'train.jsonl'}; rejects: {stats['reject_reasons']}")


@app.command("select")
def select(
    args: list[str] = OVERRIDES,
    out: Path = typer.Option(..., "--out", help="output (stage) folder"),
    force: bool = FORCE,
) -> None:
    """LIMA-style selection: the N best rows by a quality column, balanced over clusters or sources.

    ARGS: an optional YAML config (section 'select'), then key=value overrides, e.g.
    input=runs/hb/round_2/scored.jsonl n=1000 quality_field=score diversity=clusters num_clusters=20.
    """
    from simplesafe.synth.select import SelectConfig, run_select

    config, overrides = split_config_and_overrides(args)
    cfg = stage_config(SelectConfig, config, overrides, section="select")
    mix = run_select(cfg, out, force=force)
    print_table(mix["per_group"], title=f"selected {mix['selected']} of {mix['available']} ({mix['diversity']})")
    typer.echo(f"mean {cfg.quality_field}: selected {mix['mean_quality_selected']} vs all {mix['mean_quality_all']} "
               f"-> {out / 'selected.jsonl'}")
