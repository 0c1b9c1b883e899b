"""``simplesafe data``: Curate data: score text, remove leakage, build SFT / reward-model / RL datasets.

    simplesafe data score answers.jsonl --text-field answer --out scored.parquet
    simplesafe data leakage --split train=tr.jsonl --split validation=va.jsonl --split test=te.jsonl \\
        --field question --threshold 0.6 --out clean/
    simplesafe data build recipes/demo.yaml out=runs/data
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from simplesafe.commands.common import FORCE, OVERRIDES, split_config_and_overrides, stage_config
from simplesafe.tables import print_table
from simplesafe.errors import ConfigError

app = typer.Typer(help="Curate data: score text, remove leakage, build SFT / reward-model / RL datasets.", no_args_is_help=True)


@app.command("score")
def score(
    input: Path = typer.Argument(..., help="rows to score (.jsonl, .csv, .tsv, .parquet)"),
    text_field: str = typer.Option(..., "--text-field", help="column holding the text"),
    out: Path = typer.Option(..., "--out", help="output file (.jsonl, .csv, .tsv, .parquet)"),
    backend: Optional[str] = typer.Option(None, "--backend", help="toxicity backend (default: the library default)"),
    batch_size: int = typer.Option(256, "--batch-size", help="texts per batch"),
    num_proc: int = typer.Option(1, "--num-proc", help="worker processes for large inputs"),
) -> None:
    """Add n_words, fre, fkg, toxicity and one column per toxicity label to every row."""
    from simplesafe.data.scoring import score_file

    summary = score_file(input, text_field, out, backend=backend, batch_size=batch_size, num_proc=num_proc)
    typer.echo(f"scored {summary['rows']} rows -> {summary['out']} (labels: {', '.join(summary['labels'])}; "
               f"{summary['toxic_over_0.1']} with toxicity > 0.1)")


@app.command("leakage")
def leakage(
    split: List[str] = typer.Option(..., "--split", help="NAME=PATH, NAME in train/validation/test (repeat)"),
    field: str = typer.Option(..., "--field", help="text column to compare (e.g. question)"),
    out: Path = typer.Option(..., "--out", help="output folder"),
    threshold: float = typer.Option(0.6, "--threshold", help="cosine at or above which two rows leak"),
    encoder: str = typer.Option("embedded:minilm", "--encoder", help="sentence encoder: embedded:minilm, a local path or hub id"),
    method: str = typer.Option("auto", "--method", help="nearest-neighbour search: auto, exact or faiss"),
) -> None:
    """Remove cross-split near-duplicates: train loses to validation/test, test to validation."""
    from simplesafe.data.leakage import leakage_files

    if method not in ("auto", "exact", "faiss"):
        raise ConfigError(f"--method {method!r}: use auto, exact or faiss")
    paths = {}
    for item in split:
        if "=" not in item:
            raise ConfigError(f"--split {item!r} is not NAME=PATH")
        name, path = item.split("=", 1)
        name = name.strip()
        if name in paths:
            raise ConfigError(f"--split {name} given twice")
        paths[name] = Path(path)
    summary = leakage_files(paths, field, out, threshold=threshold, encoder=encoder, method=method)
    rows = [{"split": s, **v} for s, v in summary["splits"].items()]
    print_table(rows, title=f"Leakage removal (cosine >= {threshold:g}, {summary['seconds']:.1f}s)")
    typer.echo(f"wrote {out}/<split>.jsonl and {out}/removed.jsonl")


def default_out_dir(config: Path | None) -> Path:
    """Where `simplesafe run` would put this stage: RUN/data for a recipe, else runs/data."""
    from simplesafe.config import read_yaml

    if config is not None:
        raw = read_yaml(config)
        if isinstance(raw.get("data"), dict):
            run_dir = raw.get("run_dir") or Path("runs") / str(raw.get("name") or config.stem)
            return Path(run_dir) / "data"
    return Path("runs/data")


@app.command("build")
def build(
    args: Optional[List[str]] = OVERRIDES,
    out: Optional[Path] = typer.Option(None, "--out", help="output folder (default: the config's 'out', else RUN/data of the recipe, else runs/data)"),
    force: bool = FORCE,
) -> None:
    """Build SFT / RM / RL datasets: RECIPE.yaml (its `data` section) and/or key=value overrides."""
    from simplesafe.data.build import build_datasets, print_funnel
    from simplesafe.data.config import DataBuildConfig

    config, overrides = split_config_and_overrides(args)
    cfg = stage_config(DataBuildConfig, config, overrides, section="data")
    out_dir = out or (Path(cfg.out) if cfg.out else default_out_dir(config))
    headline = build_datasets(cfg, out_dir, force=force)
    import json

    stats = json.loads((out_dir / "stats.json").read_text())
    print_funnel(stats)
    typer.echo(f"\n{headline['sft_rows']} SFT rows, {headline['rm_pairs']} RM pairs, {headline['rl_prompts']} RL prompts, "
               f"{headline['wiki_leads']} Wikipedia leads, {headline['rejects']} rejects -> {out_dir}")
