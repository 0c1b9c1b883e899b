"""The ``data`` section of a recipe (``simplesafe data build``): its sources, the report's thresholds, and the
stable hashes that give every question its split and route.

The curation itself: :mod:`simplesafe.data.qa` (questions and answers -> SFT / RM / RL),
:mod:`simplesafe.data.wiki` (Simple Wikipedia leads), :mod:`simplesafe.data.build` (the
stage that runs both and writes the datasets).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from simplesafe.config import StageConfig
from simplesafe.errors import ConfigError
from simplesafe.text.toxicity_section import ToxicitySettings

SPLITS = ("train", "validation", "test")


class SourceConfig(StageConfig):
    """One input file."""

    path: str = Field(description="file path; relative paths are tried against the working directory, then the repository root (for the bundled data/)")
    kind: Literal["qa", "pairs", "wiki"] = Field(description="qa: ELI5-style questions with scored answers; pairs: preference pairs; wiki: Simple Wikipedia articles")
    format: str = Field("auto", description="qa: auto|eli5|eli5_category|generic; pairs: auto|pairs|hh-rlhf|haluquestqa; wiki: auto|lines|rows")
    name: str | None = Field(None, description="provenance name written to every row's 'source' (default: the file name)")
    split: Literal["train", "validation", "test"] | None = Field(None, description="put every question of this file in one split")
    limit: int | None = Field(None, ge=1, description="read at most this many records")
    text_field: str = Field("text", description="wiki rows: the field holding the (simple) text")
    contrast_field: str | None = Field(None, description="wiki rows: a field with the aligned ordinary-English "
                                       "text (Wiki-Auto's 'normal'); kept as 'contrast' for simplicity pairs")


def _demo_sources() -> list[SourceConfig]:
    return [
        SourceConfig(path="data/eli5/lfqa_preferences.tsv", kind="pairs", name="lfqa_preferences"),
        SourceConfig(path="data/simplewiki/simple_articles.txt", kind="wiki", name="simplewiki"),
    ]


class DataBuildConfig(ToxicitySettings, StageConfig):
    """The ``data`` section of a recipe. Defaults are the report's thresholds."""

    sources: list[SourceConfig] = Field(default_factory=_demo_sources, description="input files (default: the bundled demo data)")
    out: str | None = Field(None, description="output folder for `simplesafe data build` (the recipe runner uses RUN/data)")
    seed: int = Field(0, description="seed for splits, pair sampling and routing fractions")
    on_error: Literal["raise", "skip"] = Field("raise", description="a malformed row: raise an error naming file/line/field, or skip it as a reject")
    min_answer_words: int = Field(20, ge=0, description="answers under this many words are dropped")
    min_article_words: int = Field(50, ge=0, description="Wikipedia articles under this many words are dropped")
    lead_min_words: int = Field(300, ge=1, description="concatenate paragraphs until the lead has at least this many words")
    lead_max_words: int = Field(500, ge=1, description="leads over this many words are dropped")
    min_fre: float = Field(60.0, description="keep text with Flesch reading ease >= this")
    max_fkg: float = Field(9.0, description="keep text with Flesch-Kincaid grade < this")
    max_toxicity: float = Field(0.1, ge=0, le=1, description="toxicity (max over labels) above this: not in SFT, only 'rejected' in RM "
                                                           "(toxicity.threshold, when set, is used instead)")
    min_score: float = Field(4, description="Reddit score under this: not in SFT, only 'rejected' in RM (sources with votes only)")
    rm_readability: Literal["filter", "rejected_only"] = Field(
        "filter", description="filter: not-simple answers are dropped everywhere (the report); rejected_only: kept in RM as 'rejected' only")
    pair_strategy: Literal["all", "top2", "best_worst", "random"] = Field("all", description="which RM pairs to keep per question")
    max_pairs_per_question: int = Field(10, ge=1, description="at most this many RM pairs per question")
    pairs_to_sft_fraction: float = Field(0.4, ge=0, le=1, description="share of preference-pair questions sent to SFT (their preferred answer)")
    pairs_to_rl_fraction: float = Field(0.15, ge=0, le=1, description="share of preference-pair questions sent to RL prompts")
    validation_fraction: float = Field(0.1, ge=0, lt=1, description="QA questions without a source split: share for validation")
    test_fraction: float = Field(0.1, ge=0, lt=1, description="QA questions without a source split: share for test")
    wiki_validation_size: int = Field(5000, ge=0, description="Simple Wikipedia validation articles")
    wiki_test_size: int = Field(5000, ge=0, description="Simple Wikipedia test articles")
    wiki_small_fraction: float = Field(0.1, ge=0, lt=0.5, description="for small inputs each eval split is at most this share of the kept articles")
    leakage: bool = Field(True, description="remove cross-split leakage between questions")
    leakage_threshold: float = Field(0.6, ge=-1, le=1, description="cosine at or above which two questions leak")
    encoder: str = Field("embedded:minilm", description="sentence encoder for leakage (the report used all-mpnet-base-v2)")
    search: Literal["auto", "exact", "faiss"] = Field("auto", description="nearest-neighbour search for leakage")
    num_proc: int = Field(1, ge=1, description="worker processes for cleaning/scoring large inputs (datasets.map)")
    parallel_min_rows: int = Field(20_000, ge=1, description="use datasets.map with num_proc only from this many answers")
    batch_size: int = Field(256, ge=1, description="texts per scoring batch")
    executor: Literal["local", "ray"] = Field(
        "local", description="local: in-process / datasets.map; ray: clean and score on Ray Data (pip install 'simplesafe[ray]')")
    ray_address: str | None = Field(None, description="executor ray: cluster address ('auto' on a head node, 'ray://HOST:10001'); unset = local mode with num_proc CPUs")
    plots: bool = Field(True, description="write PNG histograms of FRE, FKG, toxicity and length")

    @model_validator(mode="after")
    def _check(self):
        if self.pairs_to_sft_fraction + self.pairs_to_rl_fraction > 1:
            raise ValueError("pairs_to_sft_fraction + pairs_to_rl_fraction must be <= 1")
        if self.validation_fraction + self.test_fraction >= 1:
            raise ValueError("validation_fraction + test_fraction must be < 1")
        if self.lead_max_words < self.min_article_words:
            raise ValueError("lead_max_words must be >= min_article_words")
        return self.check_threshold("max_toxicity")


def resolve_path(path: str) -> Path | str:
    from simplesafe.io import is_hub_path
    from simplesafe.paths import REPO_DIR

    if is_hub_path(path):
        return path  # a hub dataset, read by simplesafe.io.read_rows
    p = Path(path).expanduser()
    if p.exists():
        return p
    if not p.is_absolute() and (REPO_DIR / p).exists():
        return REPO_DIR / p
    raise ConfigError(f"source file {path!r} not found (looked in {Path.cwd()} and {REPO_DIR})")


def unit_hash(*parts) -> float:
    """A stable uniform number in [0, 1) from ``parts`` (independent of row order)."""
    h = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def assign_split(qid: str, seed: int, validation_fraction: float, test_fraction: float) -> str:
    u = unit_hash(seed, "split", qid)
    if u < validation_fraction:
        return "validation"
    if u < validation_fraction + test_fraction:
        return "test"
    return "train"
