"""Plots for the HTML report, returned as base64 PNG strings so the page is one file.

Each function takes plain Python data and returns ``None`` when there is nothing to
draw; matplotlib runs with the non-interactive Agg backend (no display needed).
"""

from __future__ import annotations

import base64
import io
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _finite(values):
    return [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]


def readability_hist(per_model: dict[str, dict[str, list[float]]]) -> str | None:
    """FRE and FKG histograms per model, with the report's thresholds (FRE 60, FKG 9) marked."""
    if not any(_finite(v.get("fre", [])) for v in per_model.values()):
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for key, ax, line, title in (("fre", axes[0], 60, "Flesch reading ease (higher = simpler)"),
                                 ("fkg", axes[1], 9, "Flesch-Kincaid grade (lower = simpler)")):
        for i, (name, vals) in enumerate(per_model.items()):
            v = [min(max(x, -50), 150) if key == "fre" else min(max(x, -5), 30) for x in _finite(vals.get(key, []))]
            if v:
                ax.hist(v, bins=20, alpha=0.45, label=name, color=COLOURS[i % len(COLOURS)])
        ax.axvline(line, color="black", linestyle="--", linewidth=1)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("answers")
    axes[0].legend(fontsize=8)
    return _png(fig)


def win_rate_bars(rows: list[dict]) -> str | None:
    """Bars of win rate with 95% CI whiskers; rows have label, win_rate, ci_low, ci_high."""
    rows = [r for r in rows if r.get("win_rate") is not None]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(max(4, 1.3 * len(rows) + 2), 3.2))
    xs = range(len(rows))
    wr = [r["win_rate"] for r in rows]
    lo = [r["win_rate"] - (r.get("ci_low") if r.get("ci_low") is not None else r["win_rate"]) for r in rows]
    hi = [(r.get("ci_high") if r.get("ci_high") is not None else r["win_rate"]) - r["win_rate"] for r in rows]
    ax.bar(xs, wr, yerr=[lo, hi], capsize=5, color=[COLOURS[i % len(COLOURS)] for i in xs])
    ax.axhline(0.5, color="black", linestyle="--", linewidth=1)
    ax.set_xticks(list(xs))
    ax.set_xticklabels([r["label"] for r in rows], rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("win rate (95% CI)")
    return _png(fig)


def training_curves(series: dict[str, list[tuple[float, float]]], title: str) -> str | None:
    """One panel per series name (e.g. reward, kl), x = step."""
    series = {k: v for k, v in series.items() if v}
    if not series:
        return None
    ncols = min(3, len(series))
    nrows = math.ceil(len(series) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 2.8 * nrows), squeeze=False)
    for ax in axes.flat[len(series):]:
        ax.axis("off")
    for i, (name, pts) in enumerate(series.items()):
        ax = axes.flat[i]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], color=COLOURS[i % len(COLOURS)], linewidth=1.2)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step")
    fig.suptitle(title, fontsize=10)
    return _png(fig)
