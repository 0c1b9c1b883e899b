"""LIMA-style selection: N high-quality examples under a diversity constraint.

LIMA (Zhou et al., 2023, Sec. 2) fine-tunes on 1,000 examples chosen for quality *and*
diversity: community answers were sampled per Stack Exchange site and wikiHow category,
then the best answers kept. This module does the automatic analogue on any
prompt/completion rows that carry a quality score (a Humpback judge score, a reward
model score, ...):

1. put every row in a group: k-means clusters of the prompts' embeddings (the embedded
   all-MiniLM-L6-v2 by default; ``diversity: clusters``) or its ``source`` column
   (``diversity: source``);
2. sort each group by quality and take rows round-robin, the group whose next row is
   best going first in each round, until N are chosen.

So group sizes differ by at most one unless a group runs out (its slots go to the
others), and within that balance the total quality is as high as it can be, because
each group contributes its best rows. ``mix.json`` reports the mix: rows available and
selected per group, mean quality selected vs available, and per source.

    simplesafe synth select input=runs/humpback/round_2/scored.jsonl n=1000 quality_field=score --out runs/lima
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Literal

from pydantic import Field

from simplesafe.atomic import write_json
from simplesafe.config import StageConfig
from simplesafe.errors import ConfigError, DataError
from simplesafe.io import read_rows, write_rows
from simplesafe.runs import stage


class SelectConfig(StageConfig):
    """LIMA-style selection; N = 1,000 as in Zhou et al. (2023)."""

    input: list[str] | str | None = Field(None, description="row file(s) with a quality column")
    n: int = Field(1000, ge=1, description="examples to select")
    quality_field: str = Field("score", description="numeric column to maximise (judge score, reward score...)")
    diversity: Literal["clusters", "source"] = Field("clusters", description="groups: embedding k-means clusters, or a category column")
    num_clusters: int = Field(20, ge=1, description="k for k-means (capped at the number of rows)")
    category_field: str = Field("source", description="column naming each row's category (diversity: source)")
    text_field: str = Field("prompt", description="column embedded for the clusters")
    encoder: str = Field("embedded:minilm", description="sentence-transformers model for the embeddings")
    seed: int = 0


def read_scored(paths: list[Path], quality_field: str) -> list[dict]:
    rows = []
    for path in paths:
        for line, row in read_rows(path):
            q = row.get(quality_field)
            if isinstance(q, bool) or not isinstance(q, (int, float)) or (isinstance(q, float) and math.isnan(q)):
                raise DataError(path, line, quality_field, f"expected a number, got {q!r}")
            rows.append(row)
    return rows


def cluster_groups(texts: list[str], k: int, encoder: str, seed: int) -> list[int]:
    from sklearn.cluster import KMeans

    from simplesafe.models.load import load_sentence_encoder

    k = max(1, min(k, len(texts)))
    emb = load_sentence_encoder(encoder).encode(texts, batch_size=64, normalize_embeddings=True,
                                                show_progress_bar=len(texts) > 2000)
    if k == 1:
        return [0] * len(texts)
    return KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(emb).tolist()


def balanced_top(quality: list[float], groups: list, n: int) -> list[int]:
    """Indices chosen round-robin over groups, best-first within and across groups."""
    by_group: dict = defaultdict(list)
    for i, g in enumerate(groups):
        by_group[g].append(i)
    queues = {g: sorted(ix, key=lambda i: (-quality[i], i)) for g, ix in by_group.items()}
    pos = {g: 0 for g in queues}
    chosen: list[int] = []
    while len(chosen) < n:
        live = [g for g in queues if pos[g] < len(queues[g])]
        if not live:
            break
        live.sort(key=lambda g: (-quality[queues[g][pos[g]]], str(g)))
        for g in live:
            if len(chosen) >= n:
                break
            chosen.append(queues[g][pos[g]])
            pos[g] += 1
    return chosen


def select_rows(rows: list[dict], cfg: SelectConfig) -> tuple[list[dict], dict]:
    quality = [float(r[cfg.quality_field]) for r in rows]
    if cfg.diversity == "clusters":
        texts = []
        for r in rows:
            t = r.get(cfg.text_field)
            if not isinstance(t, str):
                raise ConfigError(f"diversity: clusters embeds '{cfg.text_field}', which a row lacks (id {r.get('id')!r})")
            texts.append(t)
        groups = [f"cluster-{g}" for g in cluster_groups(texts, cfg.num_clusters, cfg.encoder, cfg.seed)]
    else:
        groups = [str(r.get(cfg.category_field, "unknown")) for r in rows]
    chosen = balanced_top(quality, groups, cfg.n)
    selected = []
    for rank, i in enumerate(chosen):
        selected.append({**rows[i], "group": groups[i], "selection_rank": rank})
    avail = Counter(groups)
    sel = Counter(groups[i] for i in chosen)
    per_group = []
    for g in sorted(avail, key=lambda g: (-sel.get(g, 0), g)):
        qa = [quality[i] for i in range(len(rows)) if groups[i] == g]
        qs = [quality[i] for i in chosen if groups[i] == g]
        per_group.append({"group": g, "available": avail[g], "selected": sel.get(g, 0),
                          "mean_quality_available": round(sum(qa) / len(qa), 4),
                          "mean_quality_selected": round(sum(qs) / len(qs), 4) if qs else None})
    src = Counter(str(rows[i].get(cfg.category_field, "unknown")) for i in chosen)
    mix = {
        "requested": cfg.n,
        "selected": len(chosen),
        "available": len(rows),
        "diversity": cfg.diversity,
        "groups": len(avail),
        "mean_quality_all": round(sum(quality) / len(quality), 4) if quality else None,
        "mean_quality_selected": round(sum(quality[i] for i in chosen) / len(chosen), 4) if chosen else None,
        "per_group": per_group,
        "by_" + cfg.category_field: dict(src.most_common()),
    }
    return selected, mix


def run_select(cfg: SelectConfig, out_dir: str | Path, force: bool = False) -> dict:
    """Select into the stage folder ``out_dir``: ``selected.jsonl`` and ``mix.json``."""
    out_dir = Path(out_dir)
    if not cfg.input:
        raise ConfigError("select needs input=PATH (rows with a quality column)")
    paths = [Path(p) for p in ([cfg.input] if isinstance(cfg.input, str) else cfg.input)]
    with stage(out_dir.parent, out_dir.name, cfg, inputs=paths, seed=cfg.seed, force=force) as st:
        if st.skipped:
            return json.loads((out_dir / "mix.json").read_text())
        t0 = time.time()
        rows = read_scored(paths, cfg.quality_field)
        if not rows:
            raise DataError(paths[0], None, None, "no rows to select from")
        selected, mix = select_rows(rows, cfg)
        mix["seconds"] = round(time.time() - t0, 2)
        write_rows(out_dir / "selected.jsonl", selected)
        write_json(out_dir / "mix.json", mix)
        return mix
